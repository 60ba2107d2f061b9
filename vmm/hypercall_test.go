package vmm

import (
	"strings"
	"testing"

	"github.com/vmmgo/vmm/kvm"
	"github.com/vmmgo/vmm/kvm/kvmtest"
	"github.com/vmmgo/vmm/memory"
)

// The KVM_HC_MAP_GPA_RANGE transport (Documentation/virt/kvm/x86/hypercalls.rst
// §8, api.rst §5 KVM_EXIT_HYPERCALL). On the development hosts vmcall never
// exits (docs/host-kvm.md), so these tests feed the VMM's exit handler synthetic
// kvm_run pages built with kvm.NewRun + PutHypercall / PutMemoryFault.

// hypercallMachine is a machine with more than 3 GiB of lazily populated
// memfd RAM (so RAM is split around the MMIO hole at 3 GiB: [0, 3G) and
// [4G, 5G)) and one vCPU whose kvm_run is a synthetic page.
func hypercallMachine(t testing.TB) (*Machine, *vcpu) {
	t.Helper()
	kvmtest.Open(t)
	cfg := DefaultConfig()
	cfg.Memory = 4 << 30
	cfg.MemoryBackend = memory.KindMemfd
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	v, err := m.newVCPU(0)
	if err != nil {
		t.Fatal(err)
	}
	m.vcpus = append(m.vcpus, v) // closed with the machine
	v.run = kvm.NewRun(make([]byte, 4096+kvm.RunSize))
	return m, v
}

var (
	retEINVAL = kvm.HypercallErrno(kvm.KVMEINVAL)
	retENOSYS = kvm.HypercallErrno(kvm.KVMENOSYS)
)

func TestMapGPARangeHypercall(t *testing.T) {
	m, v := hypercallMachine(t)
	mem := m.Memory()
	const P = memory.AttrPrivate
	cases := []struct {
		name              string
		nr                uint64
		gpa, npages, attr uint64
		want              uint64
		// state after: the pages [probe, probe+probeN) hold wantPrivate
		// private pages (checked for every case, so refusals prove they
		// changed nothing).
		probe, probeN, wantPrivate uint64
	}{
		{"to private", 12, 0x200000, 16, P, 0, 0x200000, 32, 16},
		{"to private again (idempotent)", 12, 0x200000, 16, P, 0, 0x200000, 32, 16},
		{"to shared", 12, 0x200000, 8, 0, 0, 0x200000, 32, 8},
		{"to private, 2M hint, unaligned start", 12, 0x201000, 512, P | memory.AttrPageSize2M, 0, 0x200000, 0x400, 512},
		{"to shared, 1G hint", 12, 0x200000, 0x400, memory.AttrPageSize1G, 0, 0x200000, 0x400, 0},
		{"above the hole", 12, 4 << 30, 4, P, 0, 4 << 30, 8, 4},
		{"last page of RAM", 12, 5<<30 - 4096, 1, P, 0, 5<<30 - 4096, 1, 1},
		{"misaligned gpa", 12, 0x300800, 1, P, retEINVAL, 0x300000, 2, 0},
		{"zero pages", 12, 0x300000, 0, P, retEINVAL, 0x300000, 2, 0},
		{"wraps around 2^64", 12, 0xffff_ffff_ffff_f000, 2, P, retEINVAL, 0x300000, 2, 0},
		{"npages wraps the byte count", 12, 0x300000, 1 << 52, P, retEINVAL, 0x300000, 2, 0},
		{"beyond the end of RAM", 12, 5 << 30, 1, P, retEINVAL, 5<<30 - 4096, 1, 1},
		{"crossing the end of RAM", 12, 5<<30 - 4096, 2, 0, retEINVAL, 5<<30 - 4096, 1, 1},
		{"overlapping the MMIO hole", 12, 3<<30 - 4096, 2, P, retEINVAL, 3<<30 - 8192, 2, 0},
		{"inside the MMIO hole", 12, LayoutIOAPIC, 1, P, retEINVAL, 3<<30 - 8192, 2, 0},
		{"across the hole into high RAM", 12, 3<<30 - 4096, 0x40001, 0, retEINVAL, 4 << 30, 8, 4},
		{"unknown attribute bit 5", 12, 0x300000, 1, P | 1<<5, retEINVAL, 0x300000, 2, 0},
		{"unknown attribute bit 63", 12, 0x300000, 1, P | 1<<63, retEINVAL, 0x300000, 2, 0},
		{"unknown page-size hint 3", 12, 0x300000, 1, P | 3, retEINVAL, 0x300000, 2, 0},
		{"unknown page-size hint 0xf", 12, 0x300000, 1, P | 0xf, retEINVAL, 0x300000, 2, 0},
		{"hypercall 1 (not forwarded)", 1, 0x300000, 1, P, retENOSYS, 0x300000, 2, 0},
		{"hypercall 13", 13, 0x300000, 1, P, retENOSYS, 0x300000, 2, 0},
		{"hypercall 2^64-1", ^uint64(0), 0x300000, 1, P, retENOSYS, 0x300000, 2, 0},
	}
	var wantReq, wantRefused uint64
	for _, c := range cases {
		if c.want != retENOSYS {
			wantReq++
		}
		if c.want == retEINVAL {
			wantRefused++
		}
		before := mem.Stats()
		v.run.PutHypercall(kvm.HypercallExit{Nr: c.nr, Args: [6]uint64{c.gpa, c.npages, c.attr}, Ret: 0x5555, Flags: kvm.HypercallExitLongMode})
		if !v.handleExit() {
			t.Fatalf("%s: the vCPU loop would stop on a hypercall exit", c.name)
		}
		if got := v.run.Hypercall().Ret; got != c.want {
			t.Errorf("%s: hypercall.ret %#x (%d), want %#x (%d)", c.name, got, int64(got), c.want, int64(c.want))
		}
		n, err := mem.PrivatePagesIn(memory.GPA(c.probe), c.probeN*memory.PageSize)
		if err != nil || n != c.wantPrivate {
			t.Errorf("%s: %d private pages in [%#x, +%d pages) (err %v), want %d", c.name, n, c.probe, c.probeN, err, c.wantPrivate)
		}
		after := mem.Stats()
		switch {
		case c.want == retEINVAL && after.Refused != before.Refused+1:
			t.Errorf("%s: refused counter %d -> %d, want +1", c.name, before.Refused, after.Refused)
		case c.want == retENOSYS && (after.Refused != before.Refused || after.ToPrivate+after.ToShared != before.ToPrivate+before.ToShared):
			t.Errorf("%s: an unknown hypercall reached the conversion routine: %+v -> %+v", c.name, before, after)
		case c.want == 0 && after.ToPrivate+after.ToShared != before.ToPrivate+before.ToShared+1:
			t.Errorf("%s: conversions %d -> %d, want +1", c.name, before.ToPrivate+before.ToShared, after.ToPrivate+after.ToShared)
		}
		if after.PrivatePages != before.PrivatePages && c.want != 0 {
			t.Errorf("%s: refused hypercall changed the private page count %d -> %d", c.name, before.PrivatePages, after.PrivatePages)
		}
	}
	if c := m.Conversions(); c.Hypercall.Requests != wantReq || c.Hypercall.Refused != wantRefused || c.PVMemRegister.Requests+c.MemoryFault.Requests != 0 {
		t.Errorf("hypercall transport counted %+v, want %d requests, %d refused", c.Hypercall, wantReq, wantRefused)
	}
	select {
	case <-m.Done():
		t.Fatalf("a guest's hypercalls stopped the machine: %+v", m.result)
	default:
	}
	if got := m.Stats()[kvm.ExitHypercall.String()]; got != uint64(len(cases)) {
		t.Errorf("hypercall exit counter %d, want %d (exit counters %v)", got, len(cases), m.Stats())
	}
	// The pvmem port and the hypercall answer the same request alike:
	// mapGPARange is the transport-level entry.
	if got := m.mapGPARange(0, 0x300000, 1, P); got != 0 {
		t.Errorf("mapGPARange to private: %#x", got)
	}
	if got := m.mapGPARange(0, 0x300000, 1, 0); got != 0 {
		t.Errorf("mapGPARange to shared: %#x", got)
	}
	if got := m.mapGPARange(0, 0x300001, 1, 0); got != retEINVAL {
		t.Errorf("mapGPARange misaligned: %#x", got)
	}
}

// FuzzMapGPARangeHypercall: any hypercall exit gets 0, -KVM_EINVAL or
// -KVM_ENOSYS, never a panic, and a 0 means exactly the requested pages now
// have the requested state.
func FuzzMapGPARangeHypercall(f *testing.F) {
	f.Add(uint64(12), uint64(0x200000), uint64(4), uint64(0x10))
	f.Add(uint64(12), uint64(3<<30-4096), uint64(2), uint64(0))
	f.Add(uint64(12), ^uint64(0)&^0xfff, uint64(1), uint64(0x11))
	f.Add(uint64(12), uint64(0), ^uint64(0), uint64(0x12))
	f.Add(uint64(11), uint64(0), uint64(1), uint64(0))
	m, v := hypercallMachine(f)
	mem := m.Memory()
	f.Fuzz(func(t *testing.T, nr, gpa, npages, attrs uint64) {
		if npages > 1<<20 {
			npages %= 1 << 20 // keep each conversion cheap; wrap-around stays reachable through gpa
		}
		v.run.PutHypercall(kvm.HypercallExit{Nr: nr, Args: [6]uint64{gpa, npages, attrs}})
		if !v.handleExit() {
			t.Fatal("vCPU loop would stop")
		}
		ret := v.run.Hypercall().Ret
		switch {
		case nr != kvm.HCMapGPARange:
			if ret != retENOSYS {
				t.Fatalf("nr %d: ret %#x, want -KVM_ENOSYS", nr, ret)
			}
		case ret == 0:
			n, err := mem.PrivatePagesIn(memory.GPA(gpa), npages*memory.PageSize)
			want := uint64(0)
			if attrs&memory.AttrPrivate != 0 {
				want = npages
			}
			if err != nil || n != want {
				t.Fatalf("accepted [%#x, +%d) attrs %#x: %d private pages (err %v), want %d", gpa, npages, attrs, n, err, want)
			}
		case ret != retEINVAL:
			t.Fatalf("ret %#x, want 0 or -KVM_EINVAL", ret)
		}
	})
}

func TestMemoryFaultExitConverts(t *testing.T) {
	m, v := hypercallMachine(t)
	mem := m.Memory()
	fault := func(flags, gpa, size uint64) bool {
		v.run.PutMemoryFault(kvm.MemoryFaultExit{Flags: flags, GPA: gpa, Size: size})
		return v.handleMemoryFault(&kvm.MemoryFaultError{Exit: v.run.MemoryFault()})
	}
	// A private access to a shared page: the page becomes private.
	if !fault(kvm.MemoryExitFlagPrivate, 0x300010, 8) {
		t.Fatal("private fault in RAM stopped the vCPU")
	}
	if n, _ := mem.PrivatePagesIn(0x2ff000, 3*memory.PageSize); n != 1 {
		t.Fatalf("%d private pages around 0x300000 after a private fault, want 1", n)
	}
	if p, _ := mem.IsPrivate(0x300000); !p {
		t.Fatal("faulting page not private")
	}
	// An access straddling two pages converts both.
	if !fault(kvm.MemoryExitFlagPrivate, 0x400ff8, 16) {
		t.Fatal("straddling fault stopped the vCPU")
	}
	if n, _ := mem.PrivatePagesIn(0x400000, 2*memory.PageSize); n != 2 {
		t.Fatalf("%d private pages after a straddling fault, want 2", n)
	}
	// A shared access to a private page (flag clear): back to shared.
	if !fault(0, 0x300010, 8) {
		t.Fatal("shared fault stopped the vCPU")
	}
	if p, _ := mem.IsPrivate(0x300000); p {
		t.Fatal("page still private after a shared fault")
	}
	// Size 0 still converts the page holding gpa; high RAM works.
	if !fault(kvm.MemoryExitFlagPrivate, 4<<30, 0) {
		t.Fatal("zero-size fault stopped the vCPU")
	}
	if p, _ := mem.IsPrivate(4 << 30); !p {
		t.Fatal("high page not private")
	}
	select {
	case <-m.Done():
		t.Fatalf("machine stopped: %+v", m.result)
	default:
	}
	// Implicit conversions go through the same entry point as the guest's
	// requests: counted under their own transport, and in the Guest's stats.
	c := m.Conversions()
	if c.MemoryFault.Requests != 4 || c.MemoryFault.Refused != 0 || c.MemoryFault.Pages != 5 || c.MemoryFault.TimeNS == 0 {
		t.Errorf("memory-fault conversions counted %+v, want 4 requests changing 5 pages", c.MemoryFault)
	}
	if c.Hypercall.Requests != 0 || c.PVMemRegister.Requests != 0 || c.PVMemList.Requests != 0 {
		t.Errorf("memory faults counted under another transport: %+v", c)
	}
	if s := mem.Stats(); s.ToPrivate != 3 || s.ToShared != 1 || s.PagesConverted != 5 {
		t.Errorf("guest stats %+v", s)
	}
}

func TestMemoryFaultExitOutsideRAMStops(t *testing.T) {
	for _, c := range []struct {
		name      string
		gpa, size uint64
	}{
		{"MMIO hole", LayoutIOAPIC, 4},
		{"beyond RAM", 5 << 30, 8},
		{"wraps around", ^uint64(0) - 2, 8},
	} {
		t.Run(c.name, func(t *testing.T) {
			m, v := hypercallMachine(t)
			before := m.Memory().Stats()
			v.run.PutMemoryFault(kvm.MemoryFaultExit{Flags: kvm.MemoryExitFlagPrivate, GPA: c.gpa, Size: c.size})
			if v.handleMemoryFault(&kvm.MemoryFaultError{Exit: v.run.MemoryFault()}) {
				t.Fatal("a fault outside guest RAM let the vCPU run on")
			}
			select {
			case <-m.Done():
			default:
				t.Fatal("machine not stopped")
			}
			if m.result.Outcome != OutcomeError || !strings.Contains(m.result.Detail, "memory fault") {
				t.Fatalf("result %v %q", m.result.Outcome, m.result.Detail)
			}
			if after := m.Memory().Stats(); after.PrivatePages != before.PrivatePages {
				t.Fatalf("private pages %d -> %d", before.PrivatePages, after.PrivatePages)
			}
		})
	}
}

func TestMemoryFaultExitRepeatingStops(t *testing.T) {
	m, v := hypercallMachine(t)
	stopped := -1
	for i := 0; i < 10; i++ {
		v.run.PutMemoryFault(kvm.MemoryFaultExit{Flags: kvm.MemoryExitFlagPrivate, GPA: 0x500000, Size: 8})
		if !v.handleMemoryFault(&kvm.MemoryFaultError{Exit: v.run.MemoryFault()}) {
			stopped = i
			break
		}
	}
	if stopped < 1 || stopped > 5 {
		t.Fatalf("the same fault repeating stopped the vCPU after %d tries, want a few", stopped)
	}
	if !strings.Contains(m.result.Detail, "repeats") {
		t.Fatalf("detail %q", m.result.Detail)
	}
}
