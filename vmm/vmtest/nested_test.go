package vmtest

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vmmgo/vmm/kvm/kvmtest"
	"github.com/vmmgo/vmm/vmm"
)

// The hardware-KVM lane (scripts/nested-kvm.sh, `make test-nested`) runs
// this package's test binary inside an L1 guest whose /dev/kvm runs guest
// user mode with system calls, which the development hosts cannot
// (docs/host-kvm.md). There the binary is its own guest test binary: it is
// static (CGO_ENABLED=0 go test -c) and its guest halves below only run
// where the agent started them.

// nestedEnv is set by scripts/nested-kvm.sh in L1.
const nestedEnv = "VMM_NESTED"

func nestedOnly(t *testing.T) {
	t.Helper()
	if os.Getenv(nestedEnv) != "1" {
		t.Skip("runs in the hardware-KVM lane only (VMM_NESTED=1 inside scripts/nested-kvm.sh): make test-nested")
	}
	if InGuest() {
		t.Skip("this is a guest half's binary")
	}
	if host, err := vmm.DetectHost(context.Background(), kvmtest.Path()); err != nil {
		t.Fatal(err)
	} else if host.Kind != vmm.HostNative {
		t.Fatalf("VMM_NESTED=1 but the host kind is %v (%s): the lane's L1 must be a native (SVM) KVM", host.Kind, host.Reason)
	}
}

// TestGuestDeliberateFail is a guest half that fails on purpose.
func TestGuestDeliberateFail(t *testing.T) {
	SkipIfNotInGuest(t)
	t.Error("deliberate failure in the guest")
}

// TestGuestDeliberateHang is a guest half that never returns.
func TestGuestDeliberateHang(t *testing.T) {
	SkipIfNotInGuest(t)
	t.Log("hanging on purpose")
	for { // not select{}: the runtime would call that a deadlock and exit
		time.Sleep(time.Second)
	}
}

// TestNestedGoTest: in guest userspace a passing Go test binary passes, a
// failing one fails with its exit status, and a hanging one is stopped at
// its deadline with a vCPU dump, each verdict reached by GoTest's own
// machinery (the failing and hanging runs report to a stand-in testing.T).
func TestNestedGoTest(t *testing.T) {
	nestedOnly(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if os.Getenv(AgentEnv) == "" {
		t.Fatalf("%s is not set: the lane puts the prebuilt agent there (no Go toolchain in L1)", AgentEnv)
	}
	t.Run("pass", func(t *testing.T) {
		start := time.Now()
		r := GoTest(t, GoTestOptions{Binary: exe, Args: []string{"-test.run=^TestGuestHalf$", "-test.v"},
			Options: Options{Timeout: 3 * time.Minute, QuietConsole: true}})
		if r == nil || !r.Reported || r.ExitCode != 0 {
			t.Fatalf("result %+v", r)
		}
		if !strings.Contains(strings.Join(r.Output, "\n"), "--- PASS: TestGuestHalf") {
			t.Errorf("guest output lacks the PASS line:\n%s", strings.Join(r.Output, "\n"))
		}
		t.Logf("L2 Go test (pass) in %v", time.Since(start).Round(time.Millisecond))
	})
	for _, tc := range []struct {
		name, run string
		timeout   time.Duration
		outcome   vmm.Outcome
		want      string
	}{
		{"fail", "^TestGuestDeliberateFail$", 3 * time.Minute, vmm.OutcomePowerOff, "test binary exited with status 1"},
		{"hang", "^TestGuestDeliberateHang$", 45 * time.Second, vmm.OutcomeTimeout, "never reported a result before the deadline"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(ArtifactsEnv, t.TempDir())
			start := time.Now()
			o := Options{Timeout: tc.timeout, QuietConsole: true}.withDefaults()
			o, err := prepareGoTest(context.Background(), t.TempDir(), GoTestOptions{Binary: exe, Args: []string{"-test.run=" + tc.run, "-test.v"}}, o)
			if err != nil {
				t.Fatal(err)
			}
			ft := &fakeT{name: t.Name()}
			gr := call(ft, func(tb testing.TB) *GoTestResult { return runGoTest(tb, o) })
			t.Logf("L2 Go test (%s) ended %v after %v: %s", tc.name, gr.Outcome, time.Since(start).Round(time.Millisecond), gr.Detail)
			if !ft.Failed() || !strings.Contains(ft.errText(), tc.want) {
				t.Errorf("verdict: failed=%v, want a failure saying %q:\n%s", ft.Failed(), tc.want, ft.errText())
			}
			if gr.Outcome != tc.outcome {
				t.Errorf("outcome %v (%s), want %v", gr.Outcome, gr.Detail, tc.outcome)
			}
			if tc.name == "hang" {
				if !strings.Contains(gr.Dump, "vcpu 0 state") || !strings.Contains(gr.Dump, "rip=") {
					t.Errorf("no vCPU dump at the deadline: %q", gr.Dump)
				}
				if !strings.Contains(strings.Join(gr.Output, "\n"), "hanging on purpose") {
					t.Errorf("the hanging test's output did not arrive before the deadline: %q", gr.Output)
				}
			}
			if t.Failed() {
				t.Logf("console:\n%s", gr.Console)
			}
		})
	}
}
