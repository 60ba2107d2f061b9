package vmm

import (
	"testing"

	"github.com/vmmgo/vmm/kvm"
	"github.com/vmmgo/vmm/kvm/kvmtest"
)

// TestLegacyGSIRoutesTable: the table says what the MADT says (ISA IRQ0 on
// IOAPIC pin 2, every other pin identity, the PICs for 0..15 without the
// cascade) and has no GSI routed twice to the same chip.
func TestLegacyGSIRoutesTable(t *testing.T) {
	type route struct{ chip, pin uint32 }
	got := map[uint32][]route{}
	for _, e := range legacyGSIRoutes() {
		if e.Type != kvm.IRQRoutingTypeIRQChip {
			t.Fatalf("GSI %d: route type %d, want irqchip", e.GSI, e.Type)
		}
		got[e.GSI] = append(got[e.GSI], route{e.U[0], e.U[1]})
	}
	for gsi := uint32(0); gsi < ioapicPins; gsi++ {
		var want []route
		switch {
		case gsi == 2:
		case gsi < 8:
			want = append(want, route{kvm.IRQChipPICMaster, gsi})
		case gsi < 16:
			want = append(want, route{kvm.IRQChipPICSlave, gsi - 8})
		}
		switch gsi {
		case 0:
			want = append(want, route{kvm.IRQChipIOAPIC, 2})
		case 2:
		default:
			want = append(want, route{kvm.IRQChipIOAPIC, gsi})
		}
		if len(got[gsi]) != len(want) {
			t.Errorf("GSI %d: routes %v, want %v", gsi, got[gsi], want)
			continue
		}
		for i := range want {
			if got[gsi][i] != want[i] {
				t.Errorf("GSI %d: routes %v, want %v", gsi, got[gsi], want)
			}
		}
	}
	if len(got) != ioapicPins-1 {
		t.Errorf("%d GSIs routed, want %d", len(got), ioapicPins-1)
	}
}

// TestLegacyGSIRoutesInKernel raises GSI 0 (what the in-kernel PIT does) on
// a real in-kernel irqchip and reads the IOAPIC back: with KVM's default
// table the request lands on pin 0, with the VMM's table on pin 2, the pin
// the MADT's override gives the timer. The IOAPIC's pins are masked after
// reset, so the request stays visible in IRR.
func TestLegacyGSIRoutesInKernel(t *testing.T) {
	for _, tc := range []struct {
		name    string
		routes  []kvm.IRQRoutingEntry
		wantPin uint
	}{
		{"KVM default", nil, 0},
		{"legacyGSIRoutes", legacyGSIRoutes(), 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, vm := kvmtest.NewVM(t)
			if err := vm.CreateIRQChip(); err != nil {
				t.Fatal(err)
			}
			if tc.routes != nil {
				if err := vm.SetGSIRouting(tc.routes); err != nil {
					t.Fatal(err)
				}
			}
			if err := vm.IRQLine(0, true); err != nil {
				t.Fatal(err)
			}
			st, err := vm.IOAPIC()
			if err != nil {
				t.Fatal(err)
			}
			if st.IRR != 1<<tc.wantPin {
				t.Errorf("IOAPIC IRR after raising GSI 0: %#x, want %#x (pin %d)", st.IRR, 1<<tc.wantPin, tc.wantPin)
			}
			if st.BaseAddress != LayoutIOAPIC {
				t.Errorf("IOAPIC base %#x, want %#x", st.BaseAddress, uint64(LayoutIOAPIC))
			}
		})
	}
}
