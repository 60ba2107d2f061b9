package vmtest

import (
	"context"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmmgo/vmm/kvm/kvmtest"
	"github.com/vmmgo/vmm/vmm"
	"github.com/vmmgo/vmm/vmm/vmtest/proto"
)

// agentConsole is what the guest agent prints for a test binary with the
// given output and exit code, surrounded by kernel messages.
func agentConsole(out []string, code int) string {
	var b strings.Builder
	b.WriteString("[    0.000000] Linux version 6.1.0\n[   50.1] Run /vmtest/agent as init process\n")
	b.WriteString(proto.Begin + proto.Version + "\n")
	for i, l := range out {
		b.WriteString(proto.Out + l + "\r\n")
		if i == 1 {
			b.WriteString("[   51.2] random: crng init done\n")
		}
	}
	b.WriteString(proto.FormatResult(code) + "\n")
	b.WriteString("[   52.0] reboot: Power down\n")
	return b.String()
}

// TestGoTestProtocol drives the host side of the guest-test protocol with
// stand-in guests writing framed output to a fake console.
func TestGoTestProtocol(t *testing.T) {
	passOut := []string{"=== RUN   TestInGuest", "--- PASS: TestInGuest (0.00s)", "PASS"}
	failOut := []string{"=== RUN   TestInGuest", "    x_test.go:9: boom", "--- FAIL: TestInGuest (0.00s)", "FAIL"}
	garbage := make([]byte, 4096)
	rand.New(rand.NewSource(1)).Read(garbage)
	for _, tc := range []struct {
		name     string
		console  io.Reader
		outcome  vmm.Outcome
		pass     bool
		want     string // in the failure message
		exit     int
		reported bool
		protoErr bool
	}{
		{name: "pass", console: strings.NewReader(agentConsole(passOut, 0)), outcome: vmm.OutcomePowerOff,
			pass: true, reported: true},
		{name: "fail", console: strings.NewReader(agentConsole(failOut, 1)), outcome: vmm.OutcomePowerOff,
			want: "test binary exited with status 1", exit: 1, reported: true},
		{name: "never answers", console: strings.NewReader("[ 50.0] Run /vmtest/agent as init process\n" + proto.Begin + proto.Version + "\n"),
			outcome: vmm.OutcomeTimeout, want: "never reported a result before the deadline"},
		{name: "crashes", console: strings.NewReader("[ 50.0] Run /vmtest/agent as init process\n[ 50.1] Kernel panic - not syncing: Attempted to kill init! exitcode=0x0000000b\n"),
			outcome: vmm.OutcomePanic, want: "guest crashed (panic"},
		{name: "garbage then a valid run", console: io.MultiReader(strings.NewReader(string(garbage)+"\nVMTEST-RESULT: exit=zero\n"),
			strings.NewReader(agentConsole(passOut, 0))),
			outcome: vmm.OutcomePowerOff, want: "", exit: 0, reported: true, protoErr: true},
		{name: "only garbage", console: strings.NewReader(string(garbage) + "\nVMTEST-BEGIN: v9\n"), outcome: vmm.OutcomePowerOff,
			want: "without the agent ever starting", protoErr: true},
		{name: "powers off without a result", console: strings.NewReader(proto.Begin + proto.Version + "\n" + proto.Out + "half\n"),
			outcome: vmm.OutcomePowerOff, want: "powered off without reporting a result"},
		{name: "result then panic", console: strings.NewReader(agentConsole(passOut, 0)), outcome: vmm.OutcomePanic,
			want: "instead of powering off", reported: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := fakeOptions(t, script(tc.console, tc.outcome, nil)).withDefaults()
			o.QuietConsole = true
			ft := &fakeT{name: t.Name()}
			gr := call(ft, func(tb testing.TB) *GoTestResult { return runGoTest(tb, o) })
			if tc.want == "" {
				tc.pass = true
			}
			if ft.Failed() == tc.pass {
				t.Fatalf("failed=%v, want pass=%v: %s", ft.Failed(), tc.pass, ft.errText())
			}
			if !tc.pass && !strings.Contains(ft.errText(), tc.want) {
				t.Errorf("failure message lacks %q:\n%s", tc.want, ft.errText())
			}
			if gr.Reported != tc.reported || (tc.reported && gr.ExitCode != tc.exit) {
				t.Errorf("Reported=%v ExitCode=%d, want %v %d", gr.Reported, gr.ExitCode, tc.reported, tc.exit)
			}
			if (len(gr.ProtocolErrors) > 0) != tc.protoErr {
				t.Errorf("protocol errors %q, want some: %v", gr.ProtocolErrors, tc.protoErr)
			}
			if tc.name == "pass" || tc.name == "fail" {
				want := passOut
				if tc.name == "fail" {
					want = failOut
				}
				if strings.Join(gr.Output, "|") != strings.Join(want, "|") {
					t.Errorf("Output %q, want %q", gr.Output, want)
				}
			}
			if !tc.pass {
				if b, err := os.ReadFile(filepath.Join(gr.ArtifactDir, "test-output.txt")); err != nil {
					t.Errorf("no test-output.txt artifact: %v", err)
				} else if tc.name == "fail" && !strings.Contains(string(b), "boom") {
					t.Errorf("test-output.txt = %q", b)
				}
			}
		})
	}
}

func TestInGuest(t *testing.T) {
	t.Setenv(proto.InGuestEnv, "")
	if InGuest() {
		t.Error("InGuest true on the host")
	}
	ft := &fakeT{name: "TestX"}
	call(ft, func(tb testing.TB) bool { SkipIfNotInGuest(tb); return true })
	if !ft.skipped {
		t.Error("SkipIfNotInGuest did not skip on the host")
	}
	t.Setenv(proto.InGuestEnv, "1")
	if !InGuest() {
		t.Error("InGuest false with VMTEST_IN_GUEST=1")
	}
}

// TestGoTestEndToEnd runs TestGuestHalf in a guest. It checks the host check:
// on a host whose KVM emulates kernel mode, GoTest must skip (and say why)
// before building anything; elsewhere it must get as far as the boot.
func TestGoTestEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a guest")
	}
	if InGuest() {
		t.Skip("this is the guest half")
	}
	r := GoTest(t, GoTestOptions{Args: []string{"-test.run=^TestGuestHalf$", "-test.v"}})
	if r != nil && !r.Reported {
		t.Errorf("no result reported")
	}
}

// TestGuestHalf is what TestGoTestEndToEnd runs in the guest.
func TestGuestHalf(t *testing.T) {
	SkipIfNotInGuest(t)
	if os.Getpid() < 2 {
		t.Errorf("pid %d: the test binary should be a child of the agent", os.Getpid())
	}
	if _, err := os.Stat(proto.TestBinary); err != nil {
		t.Errorf("test binary not at %s: %v", proto.TestBinary, err)
	}
}

// TestGoTestGuestReachesAgent boots the real Go-test guest (test binary,
// agent, initramfs, rdinit=) on hosts that emulate guest kernel mode, where
// GoTest itself skips. The kernel must unpack the initramfs and start the
// agent; the agent's first system call then fails (docs/host-kvm.md), so the
// guest must be reported as crashed before any result: the host side's
// verdict on a real crash.
func TestGoTestGuestReachesAgent(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a guest")
	}
	path := kvmtest.Path()
	kvmtest.OpenPath(t, path)
	if emu, err := vmm.HostEmulatesKernelMode(path); err != nil {
		t.Fatal(err)
	} else if !emu {
		t.Skip("guest userspace works on this host: TestGoTestEndToEnd covers the path")
	}
	t.Setenv(ArtifactsEnv, t.TempDir())
	o := Options{Timeout: 8 * time.Minute, QuietConsole: true}.withDefaults()
	o, err := prepareGoTest(context.Background(), t.TempDir(), GoTestOptions{Args: []string{"-test.run=^TestGuestHalf$"}}, o)
	if err != nil {
		t.Fatal(err)
	}
	ft := &fakeT{name: t.Name()}
	gr := call(ft, func(tb testing.TB) *GoTestResult { return runGoTest(tb, o) })
	t.Logf("guest ended with %v after %v: %s", gr.Outcome, gr.Duration.Round(time.Millisecond), gr.Detail)
	if !strings.Contains(gr.Console, "Run "+proto.AgentPath+" as init process") {
		t.Errorf("the kernel did not start the agent from the initramfs; console tail:\n%s", tail(gr.Console, 20))
	}
	if !ft.Failed() || !strings.Contains(ft.errText(), "guest crashed") || gr.Reported {
		t.Errorf("verdict: failed=%v reported=%v, want a crash before the result:\n%s", ft.Failed(), gr.Reported, ft.errText())
	}
}

func tail(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(l[max(0, len(l)-n):], "\n")
}
