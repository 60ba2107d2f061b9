package vmtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmmgo/vmm/internal/guestimage"
	"github.com/vmmgo/vmm/kvm/kvmtest"
	"github.com/vmmgo/vmm/vmm"
	"github.com/vmmgo/vmm/vmm/vmtest/proto"
)

// GoTestOptions describe a Go test binary to run in guest userspace.
type GoTestOptions struct {
	Options
	// Package is the package to build with `go test -c` (default ".",
	// relative to the test's working directory, i.e. its own package).
	Package string
	// Binary is a prebuilt linux/amd64 test binary; Package is then unused.
	Binary string
	// BuildFlags are extra `go test -c` flags (e.g. -tags, -race is not
	// available: the binary is static, CGO_ENABLED=0).
	BuildFlags []string
	// Args are the test binary's arguments, e.g. -test.run=TestInGuest -test.v.
	Args []string
}

// GoTestResult is a guest test run.
type GoTestResult struct {
	*Result
	// Reported is true when the agent's RESULT frame arrived.
	Reported bool
	// ExitCode is the test binary's exit code (valid when Reported).
	ExitCode int
	// Output is the test binary's output, line by line.
	Output []string
	// ProtocolErrors are malformed frames seen on the console.
	ProtocolErrors []string
}

// InGuest reports whether this process is a test binary started by
// GoTest's guest agent.
func InGuest() bool { return os.Getenv(proto.InGuestEnv) == "1" }

// SkipIfNotInGuest skips t unless it runs inside a GoTest guest: the
// guest-side half of a test is written as an ordinary test that starts with
// this call.
func SkipIfNotInGuest(t testing.TB) {
	t.Helper()
	if !InGuest() {
		t.Skip("vmtest: runs only inside a guest started by vmtest.GoTest")
	}
}

// agentState decodes the agent's frames from console lines.
type agentState struct {
	begun    bool
	reported bool
	code     int
	output   []string
	errs     []string
}

func (a *agentState) line(l string) {
	f, err := proto.Decode(l)
	if err != nil {
		if len(a.errs) < 100 {
			a.errs = append(a.errs, err.Error())
		}
		return
	}
	switch f.Kind {
	case proto.KindBegin:
		a.begun = true
	case proto.KindOut:
		if len(a.output) < 1<<20 {
			a.output = append(a.output, f.Text)
		}
	case proto.KindResult:
		if a.reported {
			a.errs = append(a.errs, fmt.Sprintf("second result frame (exit=%d) ignored", f.Code))
			return
		}
		a.reported = true
		a.code = f.Code
	}
}

// goVerdict says whether a guest test run passed; nil means it did.
func goVerdict(r *Result, a *agentState, hostErr error) error {
	if hostErr != nil {
		return fmt.Errorf("guest did not run: %w", hostErr)
	}
	tail := ""
	if len(a.errs) > 0 {
		tail = fmt.Sprintf(" (%d malformed frames, first: %s)", len(a.errs), a.errs[0])
	}
	if !a.reported {
		switch r.Outcome {
		case vmm.OutcomeTimeout:
			return fmt.Errorf("guest never reported a result before the deadline (%s)%s", r.Detail, tail)
		case vmm.OutcomePanic, vmm.OutcomeReboot:
			return fmt.Errorf("guest crashed (%v: %s) before reporting a result%s", r.Outcome, r.Detail, tail)
		case vmm.OutcomePowerOff:
			if !a.begun {
				return fmt.Errorf("guest powered off without the agent ever starting (wrong rdinit?)%s", tail)
			}
			return fmt.Errorf("guest powered off without reporting a result%s", tail)
		}
		return fmt.Errorf("guest stopped (%v: %s) without reporting a result%s", r.Outcome, r.Detail, tail)
	}
	if r.Outcome != vmm.OutcomePowerOff {
		return fmt.Errorf("test binary exited %d, then the guest ended with %v instead of powering off (%s)", a.code, r.Outcome, r.Detail)
	}
	if a.code != 0 {
		return fmt.Errorf("test binary exited with status %d%s", a.code, tail)
	}
	return nil
}

// runGoTest boots a guest whose agent runs the test binary and judges it.
// It is GoTest without the build and the host check, so this package's
// tests can drive it with a stand-in guest.
func runGoTest(t testing.TB, o Options) *GoTestResult {
	t.Helper()
	a := &agentState{}
	r, err := boot(t, o, a.line)
	if r == nil {
		return nil
	}
	gr := &GoTestResult{Result: r, Reported: a.reported, ExitCode: a.code, Output: a.output, ProtocolErrors: a.errs}
	for _, l := range a.output {
		t.Log("guest test: " + l)
	}
	if v := goVerdict(r, a, err); v != nil {
		out := []byte(strings.Join(a.output, "\n") + "\n")
		fail(t, o, r, nil, v.Error(), artifact{"test-output.txt", out})
	}
	return gr
}

// GoTest builds a Go test binary (`go test -c`, static linux/amd64), puts
// it in an initramfs with the vmtest agent as init, boots it, and fails t
// unless the binary exits 0. The binary's output is logged to t; the agent
// sets VMTEST_IN_GUEST=1 (see InGuest, SkipIfNotInGuest).
//
// Guest user mode must be able to make system calls, which needs hardware
// virtualization: on hosts whose KVM emulates guest kernel mode (no VMX/SVM,
// see vmm.DetectHost) GoTest skips t with that reason.
func GoTest(t *testing.T, opts GoTestOptions) *GoTestResult {
	t.Helper()
	o := opts.Options.withDefaults()
	kvmtest.OpenPath(t, o.KVMPath)
	if host, err := vmm.DetectHost(context.Background(), o.KVMPath); err != nil {
		t.Fatalf("vmtest: cannot tell whether this host's KVM can run guest userspace: %v", err)
	} else if host.Kind == vmm.HostEmulated {
		t.Skip("vmtest: this host's KVM emulates guest kernel mode (no VMX/SVM): guest user mode cannot make system calls here, so a Go test binary cannot run in the guest; run on a host with hardware virtualization")
	}
	o, err := prepareGoTest(context.Background(), t.TempDir(), opts, o)
	if err != nil {
		t.Fatalf("vmtest: %v", err)
	}
	return runGoTest(t, o)
}

// prepareGoTest builds the test binary and the agent into dir and returns
// o set up to boot them: the files in the initramfs and rdinit= on the
// command line.
func prepareGoTest(ctx context.Context, dir string, opts GoTestOptions, o Options) (Options, error) {
	bin := opts.Binary
	if bin == "" {
		bin = filepath.Join(dir, "test")
		if err := buildTest(ctx, opts.Package, opts.BuildFlags, bin); err != nil {
			return o, err
		}
	}
	agent := filepath.Join(dir, "agent")
	if err := buildAgent(ctx, agent); err != nil {
		return o, err
	}
	args := filepath.Join(dir, "args")
	if err := os.WriteFile(args, []byte(strings.Join(opts.Args, "\n")+"\n"), 0o644); err != nil {
		return o, fmt.Errorf("args file: %w", err)
	}
	files := map[string]string{agent: proto.AgentPath, bin: proto.TestBinary, args: proto.ArgsFile}
	for h, g := range opts.Files {
		files[h] = g
	}
	o.Files = files
	o.Cmdline = strings.TrimSpace("rdinit=" + proto.AgentPath + " " + o.Cmdline)
	return o, nil
}

// goCmd runs the go tool.
func goCmd(ctx context.Context, dir string, args ...string) error {
	gobin, err := exec.LookPath("go")
	if err != nil {
		gobin = filepath.Join(os.Getenv("GOROOT"), "bin", "go")
		if _, serr := os.Stat(gobin); serr != nil {
			return errors.New("go toolchain not found in PATH or $GOROOT/bin")
		}
	}
	cmd := exec.CommandContext(ctx, gobin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// buildTest compiles pkg's tests into a static binary at out.
func buildTest(ctx context.Context, pkg string, flags []string, out string) error {
	if pkg == "" {
		pkg = "."
	}
	args := append([]string{"test", "-c", "-o", out}, flags...)
	return goCmd(ctx, "", append(args, pkg)...)
}

// AgentEnv names a prebuilt scripts/guest-agent binary that GoTest uses
// instead of building one (for hosts without a Go toolchain or the source
// tree, such as the L1 guest of scripts/nested-kvm.sh).
const AgentEnv = "VMTEST_AGENT"

// buildAgent compiles scripts/guest-agent from the vmm source tree, or
// copies $VMTEST_AGENT to out.
func buildAgent(ctx context.Context, out string) error {
	if p := os.Getenv(AgentEnv); p != "" {
		b, err := os.ReadFile(p)
		if err != nil {
			return fmt.Errorf("guest agent: %s: %w", AgentEnv, err)
		}
		return os.WriteFile(out, b, 0o755)
	}
	root, err := guestimage.SourceDir()
	if err != nil {
		return fmt.Errorf("guest agent: %w", err)
	}
	return goCmd(ctx, root, "build", "-trimpath", "-ldflags=-s -w", "-o", out, "./scripts/guest-agent")
}
