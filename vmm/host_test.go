package vmm

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmmgo/vmm/kvm/kvmtest"
)

// testHostEmulated is the host kind the tests' machines resolve to.
func testHostEmulated(t *testing.T) bool {
	t.Helper()
	d, err := DetectHost(context.Background(), DefaultConfig().KVMPath)
	if err != nil {
		t.Fatalf("DetectHost: %v", err)
	}
	return d.Kind == HostEmulated
}

// fakeHost builds a /proc and /sys tree under a temporary root.
func fakeHost(t *testing.T, flags string, modules ...string) {
	t.Helper()
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "proc"), 0o755); err != nil {
		t.Fatal(err)
	}
	cpuinfo := "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\nflags\t\t: " + flags +
		"\n\nprocessor\t: 1\nflags\t\t: fpu vmx svm hypervisor\n"
	if flags != "-" {
		if err := os.WriteFile(filepath.Join(root, "proc/cpuinfo"), []byte(cpuinfo), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range modules {
		if err := os.MkdirAll(filepath.Join(root, "sys/module", m, "parameters"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	old := hostRoot
	hostRoot = root
	t.Cleanup(func() { hostRoot = old })
}

func TestHostSignalsDecide(t *testing.T) {
	for _, c := range []struct {
		name    string
		flags   string
		modules []string
		want    HostKind
		reason  string
	}{
		{"pvm", "fpu sse2 hypervisor lm", []string{"kvm_pvm"}, HostEmulated, "kvm_pvm backs /dev/kvm"},
		{"pvm on a vmx CPU", "fpu vmx hypervisor", []string{"kvm_pvm"}, HostEmulated, "kvm_pvm"},
		{"intel", "fpu vmx lm", []string{"kvm_intel"}, HostNative, "kvm_intel backs /dev/kvm and the CPU has vmx"},
		{"amd nested", "fpu svm hypervisor", []string{"kvm_amd"}, HostNative, "kvm_amd"},
		{"intel module without vmx", "fpu lm hypervisor", []string{"kvm_intel"}, HostAuto, "ambiguous"},
		{"amd module with only vmx", "fpu vmx", []string{"kvm_amd"}, HostAuto, "ambiguous"},
		{"two backends", "fpu vmx", []string{"kvm_intel", "kvm_pvm"}, HostAuto, "KVM modules: kvm_intel kvm_pvm"},
		{"no module", "fpu vmx", nil, HostAuto, "none of kvm_intel/kvm_amd/kvm_pvm"},
		{"no cpuinfo", "-", []string{"kvm_intel"}, HostAuto, "unreadable"},
	} {
		t.Run(c.name, func(t *testing.T) {
			fakeHost(t, c.flags, c.modules...)
			s := ReadHostSignals()
			// Only the first CPU's flags line counts.
			if c.flags != "-" && s.SVM != strings.Contains(c.flags, "svm") {
				t.Errorf("SVM = %v from flags %q", s.SVM, c.flags)
			}
			k, why := s.Decide()
			if k != c.want || !strings.Contains(why, c.reason) {
				t.Errorf("Decide() = %q, %q; want %q with %q", k, why, c.want, c.reason)
			}
		})
	}
}

func TestEmulatedTimes(t *testing.T) {
	const loops = 4000
	for _, c := range []struct {
		kernel, user time.Duration
		want         bool
	}{
		{2 * time.Millisecond, 15 * time.Microsecond, true}, // kvm_pvm
		{20 * time.Microsecond, 15 * time.Microsecond, false},
		// A native KVM inside a software-emulated L1 under load: both slow.
		{2 * time.Millisecond, 1500 * time.Microsecond, false},
		// Fast user loop but a kernel loop under the threshold.
		{300 * time.Microsecond, 1 * time.Microsecond, false},
	} {
		if got := emulatedTimes(c.kernel, c.user, loops); got != c.want {
			t.Errorf("emulatedTimes(%v, %v) = %v, want %v", c.kernel, c.user, got, c.want)
		}
	}
}

// TestDetectHostAgreesWithMeasurement checks the cheap decision against
// the timing probe on the host the tests run on.
func TestDetectHostAgreesWithMeasurement(t *testing.T) {
	kvmtest.Open(t)
	d, err := DetectHost(context.Background(), "/dev/kvm")
	if err != nil {
		t.Fatal(err)
	}
	k, u, err := MeasureHost(context.Background(), "/dev/kvm", detectLoops, detectRuns)
	if err != nil {
		t.Fatal(err)
	}
	if got := emulatedTimes(k, u, detectLoops); got != (d.Kind == HostEmulated) {
		t.Errorf("DetectHost says %v but the timing probe says emulated=%v (CPL0 %v, CPL3 %v)", d, got, k, u)
	}
	t.Logf("%v; measured CPL0 %v CPL3 %v", d, k, u)
}

// TestDetectHostFallsBackToTiming makes the signals ambiguous: the
// decision must come from the measurement and say so.
func TestDetectHostFallsBackToTiming(t *testing.T) {
	kvmtest.Open(t)
	k, u, err := MeasureHost(context.Background(), "/dev/kvm", detectLoops, detectRuns)
	if err != nil {
		t.Fatal(err)
	}
	fakeHost(t, "fpu vmx", "kvm_intel", "kvm_pvm")
	d, err := DetectHost(context.Background(), "/dev/kvm")
	if err != nil {
		t.Fatal(err)
	}
	if !d.Measured || !strings.Contains(d.Reason, "measured") || d.KernelLoop <= 0 {
		t.Fatalf("decision %+v not from the measurement", d)
	}
	if want := emulatedTimes(k, u, detectLoops); (d.Kind == HostEmulated) != want {
		t.Errorf("fallback decided %v, an independent measurement says emulated=%v", d, want)
	}
}

func TestMachineHostFromConfig(t *testing.T) {
	kvmtest.Open(t)
	// Signals that would say native: the configuration must win.
	fakeHost(t, "fpu vmx", "kvm_intel")
	cfg := DefaultConfig()
	cfg.Memory = 2 << 20
	cfg.Host = HostEmulated
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if !m.hostEmulated() || m.Host().Reason != "set by the configuration" {
		t.Fatalf("Host() = %v", m.Host())
	}
	cfg.Host = HostAuto
	m2, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Close()
	if m2.hostEmulated() || !strings.Contains(m2.Host().Reason, "kvm_intel") {
		t.Fatalf("auto: Host() = %v, want native from the (fake) signals", m2.Host())
	}
}

func TestConfigHostValidate(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Host = "auto"
	if err := cfg.validate(); err != nil || cfg.Host != HostAuto {
		t.Fatalf("auto: %v, %q", err, cfg.Host)
	}
	cfg.Host = "hardware"
	if err := cfg.validate(); err == nil || !strings.Contains(err.Error(), `"hardware"`) {
		t.Fatalf("bad host kind: %v", err)
	}
}

// TestDetectHostPVMSkipsCPUInfo: kvm_pvm alone decides without reading
// /proc/cpuinfo (absent here), and nothing is measured.
func TestDetectHostPVMSkipsCPUInfo(t *testing.T) {
	fakeHost(t, "-", "kvm_pvm")
	d, err := DetectHost(context.Background(), "/nonexistent/kvm")
	if err != nil || d.Kind != HostEmulated || d.Measured {
		t.Fatalf("DetectHost = %+v, %v", d, err)
	}
	if !strings.Contains(d.Signals.String(), "not read") {
		t.Errorf("signals %q", d.Signals)
	}
	// Ambiguous signals on a host without KVM: the error says both.
	fakeHost(t, "fpu", "kvm_intel")
	if _, err := DetectHost(context.Background(), "/nonexistent/kvm"); err == nil ||
		!strings.Contains(err.Error(), "ambiguous") || !strings.Contains(err.Error(), "/nonexistent/kvm") {
		t.Fatalf("err = %v", err)
	}
}
