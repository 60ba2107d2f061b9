package vmm

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/vmmgo/vmm/internal/tinyguest"
	"github.com/vmmgo/vmm/kvm"
	"github.com/vmmgo/vmm/kvm/kvmtest"
)

func TestProbeGuestMatchesSource(t *testing.T) {
	src, err := os.ReadFile("../testdata/guests/probe.S")
	if err != nil {
		t.Fatal(err)
	}
	b, err := tinyguest.Assemble(string(src), 0x100000)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, probeGuest) {
		var lit strings.Builder
		for i, c := range b {
			fmt.Fprintf(&lit, "0x%02x, ", c)
			if i%12 == 11 {
				lit.WriteString("\n")
			}
		}
		t.Fatalf("probeGuest is stale; testdata/guests/probe.S assembles to:\n%s", lit.String())
	}
}

func TestProbe(t *testing.T) {
	kvmtest.Open(t)
	r, err := Probe(context.Background(), "/dev/kvm")
	if err != nil {
		t.Fatal(err)
	}
	if r.APIVersion != 12 {
		t.Errorf("API version %d", r.APIVersion)
	}
	if r.MeasureErr != nil {
		t.Fatalf("emulation measurement failed: %v", r.MeasureErr)
	}
	if r.KernelLoop <= 0 || r.UserLoop <= 0 {
		t.Fatalf("loop times %v / %v", r.KernelLoop, r.UserLoop)
	}
	var out strings.Builder
	r.WriteTo(&out)
	for _, want := range []string{"KVM_CAP_GUEST_MEMFD_FLAGS (244)", "KVM_CAP_EXIT_HYPERCALL (201)", "guest_memfd flags:", "hugetlb pools:", "guest kernel mode:"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
	if r.Host != HostAuto && (r.Host == HostEmulated) != r.Emulated {
		t.Errorf("host signals say %s (%s), the measurement emulated=%v", r.Host, r.HostReason, r.Emulated)
	}
	if !strings.Contains(out.String(), "host kind:") || !strings.Contains(out.String(), "host signals:") {
		t.Errorf("report lacks the host decision:\n%s", out.String())
	}
	// On this project's machines (kvm_pvm loaded) the facts are known: the
	// report must show them.
	if r.PVMModule {
		if !r.Emulated {
			t.Errorf("kvm_pvm host not detected as emulating kernel mode: kernel %v, user %v", r.KernelLoop, r.UserLoop)
		}
		if r.GuestMemfdFlags != int(kvm.GuestMemfdFlagMMAP|kvm.GuestMemfdFlagInitShared) {
			t.Errorf("guest_memfd flags %d, want 3", r.GuestMemfdFlags)
		}
		if !strings.Contains(out.String(), "MMAP|INIT_SHARED") || !strings.Contains(out.String(), "EMULATED") {
			t.Errorf("report does not say MMAP|INIT_SHARED and EMULATED:\n%s", out.String())
		}
	}
	t.Logf("\n%s", out.String())
}

func TestProbeMissingDevice(t *testing.T) {
	_, err := Probe(context.Background(), "/nonexistent/kvm")
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/kvm") {
		t.Fatalf("err = %v, want an error naming the missing device", err)
	}
}
