package vmtest

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmmgo/vmm/vmm"
)

// fakeT records what the code under test reports, so failures it must
// report can be checked without failing the real test. Methods the code
// should not call panic through the nil embedded TB.
type fakeT struct {
	testing.TB
	name string

	mu       sync.Mutex
	logs     []string
	errs     []string
	failed   bool
	skipped  bool
	cleanups []func()
}

func (f *fakeT) Cleanup(fn func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cleanups = append(f.cleanups, fn)
}

func (f *fakeT) Helper()      {}
func (f *fakeT) Name() string { return f.name }
func (f *fakeT) Failed() bool { f.mu.Lock(); defer f.mu.Unlock(); return f.failed }
func (f *fakeT) Log(args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.logs = append(f.logs, fmt.Sprint(args...))
}
func (f *fakeT) Logf(format string, args ...any) { f.Log(fmt.Sprintf(format, args...)) }
func (f *fakeT) Error(args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failed = true
	f.errs = append(f.errs, fmt.Sprint(args...))
}
func (f *fakeT) Errorf(format string, args ...any) { f.Error(fmt.Sprintf(format, args...)) }
func (f *fakeT) Fatalf(format string, args ...any) {
	f.Errorf(format, args...)
	runtime.Goexit()
}
func (f *fakeT) Skip(args ...any) {
	f.mu.Lock()
	f.skipped = true
	f.mu.Unlock()
	runtime.Goexit()
}
func (f *fakeT) Skipf(format string, args ...any) { f.Skip(fmt.Sprintf(format, args...)) }

// errText is every reported error, joined.
func (f *fakeT) errText() string { return strings.Join(f.errs, "\n") }

// call runs fn(ft) on its own goroutine (Fatal/Skip end it) and waits.
func call[R any](ft *fakeT, fn func(testing.TB) R) R {
	var r R
	done := make(chan struct{})
	go func() {
		defer close(done)
		r = fn(ft)
	}()
	<-done
	for i := len(ft.cleanups) - 1; i >= 0; i-- {
		ft.cleanups[i]()
	}
	return r
}

// script is a stand-in guest: it writes console to the machine's console in
// small pieces, as a UART does, then stops with outcome. An outcome of
// vmm.OutcomeTimeout makes it hang until the watchdog (o.Timeout) fires.
func script(console io.Reader, outcome vmm.Outcome, stats map[string]uint64) bootFunc {
	return func(ctx context.Context, o *Options, w io.Writer) (vmm.Result, map[string]uint64, error) {
		buf := make([]byte, 7)
		for {
			n, err := console.Read(buf)
			if n > 0 {
				w.Write(buf[:n])
			}
			if err != nil {
				break
			}
		}
		switch outcome {
		case vmm.OutcomeTimeout:
			select {
			case <-time.After(o.Timeout):
				return vmm.Result{Outcome: vmm.OutcomeTimeout, Detail: fmt.Sprintf("watchdog: guest still running after %v", o.Timeout),
					Dump: "vcpu 0 state:\n  rip=ffffffff81000000 (fake)"}, stats, nil
			case <-ctx.Done():
				return vmm.Result{Outcome: vmm.OutcomeStopped, Detail: "context done"}, stats, nil
			}
		case vmm.OutcomePanic:
			return vmm.Result{Outcome: vmm.OutcomePanic, Detail: "guest reported a panic (pvpanic)"}, stats, nil
		}
		return vmm.Result{Outcome: outcome, Detail: "fake " + outcome.String()}, stats, nil
	}
}

func fakeOptions(t *testing.T, b bootFunc) Options {
	t.Setenv(ArtifactsEnv, t.TempDir())
	return Options{boot: b, Timeout: 300 * time.Millisecond}
}

func TestRunPassLogsConsole(t *testing.T) {
	o := fakeOptions(t, script(strings.NewReader("[ 0.1] booting\r\nhello from the guest\nlast line without newline"), vmm.OutcomePowerOff,
		map[string]uint64{"KVM_EXIT_IO": 42}))
	ft := &fakeT{name: "TestX"}
	r := call(ft, func(tb testing.TB) *Result { return Run(tb, o) })
	if ft.Failed() {
		t.Fatalf("passing guest reported as failed: %s", ft.errText())
	}
	want := []string{"console: [ 0.1] booting", "console: hello from the guest", "console: last line without newline"}
	if strings.Join(ft.logs, "|") != strings.Join(want, "|") {
		t.Errorf("test log %q, want %q", ft.logs, want)
	}
	if r.Outcome != vmm.OutcomePowerOff || r.Stats["KVM_EXIT_IO"] != 42 || !strings.Contains(r.Console, "hello from the guest") {
		t.Errorf("result %+v", r)
	}
	if r.ArtifactDir != "" {
		t.Errorf("artifacts kept for a passing run: %s", r.ArtifactDir)
	}
	if entries, _ := os.ReadDir(os.Getenv(ArtifactsEnv)); len(entries) != 0 {
		t.Errorf("artifact directory written for a passing run: %v", entries)
	}
}

func TestRunFailureKeepsArtifacts(t *testing.T) {
	o := fakeOptions(t, script(strings.NewReader("Kernel panic - not syncing: Attempted to kill init!\n"), vmm.OutcomePanic,
		map[string]uint64{"KVM_EXIT_IO": 7, "KVM_EXIT_HLT": 1}))
	o.QuietConsole = true
	ft := &fakeT{name: "TestPanics/sub case"}
	r := call(ft, func(tb testing.TB) *Result { return Run(tb, o) })
	if !ft.Failed() {
		t.Fatal("panicking guest not reported as a failure")
	}
	msg := ft.errText()
	for _, w := range []string{"guest ended with panic, want power-off", "pvpanic", r.ArtifactDir} {
		if !strings.Contains(msg, w) {
			t.Errorf("failure message lacks %q:\n%s", w, msg)
		}
	}
	if !strings.HasPrefix(filepath.Base(r.ArtifactDir), "vmtest-TestPanics_sub_case-") {
		t.Errorf("artifact dir %s not named after the test", r.ArtifactDir)
	}
	for name, want := range map[string]string{
		"console.log": "Attempted to kill init",
		"result.txt":  "outcome: panic",
		"stats.txt":   "KVM_EXIT_IO",
	} {
		b, err := os.ReadFile(filepath.Join(r.ArtifactDir, name))
		if err != nil || !strings.Contains(string(b), want) {
			t.Errorf("%s: %v, content %q lacks %q", name, err, b, want)
		}
	}
	// QuietConsole: the console reaches the log only because the run failed.
	if len(ft.logs) != 1 || !strings.Contains(ft.logs[0], "Attempted to kill init") {
		t.Errorf("quiet console log %q", ft.logs)
	}
}

func TestRunTimeoutDumps(t *testing.T) {
	o := fakeOptions(t, script(strings.NewReader("still booting\n"), vmm.OutcomeTimeout, nil))
	ft := &fakeT{name: "TestHang"}
	start := time.Now()
	r := call(ft, func(tb testing.TB) *Result { return Run(tb, o) })
	if time.Since(start) > 10*time.Second {
		t.Errorf("timeout took %v", time.Since(start))
	}
	if r.Outcome != vmm.OutcomeTimeout || !ft.Failed() {
		t.Fatalf("outcome %v failed %v", r.Outcome, ft.Failed())
	}
	if msg := ft.errText(); !strings.Contains(msg, "vCPU state") || !strings.Contains(msg, "rip=ffffffff81000000") {
		t.Errorf("failure lacks the vCPU dump:\n%s", msg)
	}
	if b, _ := os.ReadFile(filepath.Join(r.ArtifactDir, "result.txt")); !strings.Contains(string(b), "rip=ffffffff81000000") {
		t.Errorf("result.txt lacks the dump: %q", b)
	}
}

func TestRunHostError(t *testing.T) {
	o := fakeOptions(t, func(context.Context, *Options, io.Writer) (vmm.Result, map[string]uint64, error) {
		return vmm.Result{}, nil, fmt.Errorf("load kernel: %w", os.ErrNotExist)
	})
	ft := &fakeT{name: "TestHostErr"}
	r := call(ft, func(tb testing.TB) *Result { return Run(tb, o) })
	if !ft.Failed() || !strings.Contains(ft.errText(), "load kernel: file does not exist") || r.Outcome != vmm.OutcomeError {
		t.Errorf("host error: failed=%v outcome=%v msg=%s", ft.Failed(), r.Outcome, ft.errText())
	}
}

func TestRunWantOutcome(t *testing.T) {
	o := fakeOptions(t, script(strings.NewReader("reboot: Restarting system\n"), vmm.OutcomeReboot, nil))
	o.Want = vmm.OutcomeReboot
	ft := &fakeT{name: "TestReboot"}
	call(ft, func(tb testing.TB) *Result { return Run(tb, o) })
	if ft.Failed() {
		t.Errorf("expected reboot reported as failure: %s", ft.errText())
	}
}

// TestParallelRuns runs many stand-in guests at once: each run's console
// must reach only its own test and result.
func TestParallelRuns(t *testing.T) {
	t.Setenv(ArtifactsEnv, t.TempDir())
	const n = 16
	var wg sync.WaitGroup
	fts := make([]*fakeT, n)
	rs := make([]*Result, n)
	for i := range n {
		var sb strings.Builder
		for j := range 200 {
			fmt.Fprintf(&sb, "guest %d line %d\n", i, j)
		}
		o := Options{boot: script(strings.NewReader(sb.String()), vmm.OutcomePowerOff, nil), Timeout: time.Second}
		fts[i] = &fakeT{name: fmt.Sprintf("TestP/%d", i)}
		wg.Add(1)
		go func() {
			defer wg.Done()
			rs[i] = call(fts[i], func(tb testing.TB) *Result { return Run(tb, o) })
		}()
	}
	wg.Wait()
	for i := range n {
		if fts[i].Failed() || len(fts[i].logs) != 200 {
			t.Errorf("guest %d: failed=%v, %d log lines", i, fts[i].Failed(), len(fts[i].logs))
			continue
		}
		for j, l := range fts[i].logs {
			if want := fmt.Sprintf("console: guest %d line %d", i, j); l != want {
				t.Errorf("guest %d log line %d = %q, want %q", i, j, l, want)
				break
			}
		}
		if strings.Count(rs[i].Console, fmt.Sprintf("guest %d ", i)) != 200 {
			t.Errorf("guest %d console mixed with others", i)
		}
	}
}

func TestConsoleSinkBounds(t *testing.T) {
	var lines int
	s := &consoleSink{onLine: func(string) { lines++ }}
	chunk := strings.Repeat("x", 1<<20)
	for range 40 {
		s.Write([]byte(chunk))
	}
	s.flush()
	if len(s.String()) != maxConsole || s.dropped == 0 {
		t.Errorf("kept %d bytes, dropped %d; want the first %d kept", len(s.String()), s.dropped, maxConsole)
	}
	if lines == 0 {
		t.Error("an endless line was never delivered")
	}
}

func TestKUnitCmdline(t *testing.T) {
	if got := KUnitCmdline(""); got != "kunit.enable=1 kunit_shutdown=poweroff" {
		t.Errorf("KUnitCmdline(\"\") = %q", got)
	}
	o := KUnitOptions{Options: Options{Cmdline: "quiet"}, Filter: "vmm_*"}.options()
	if o.Cmdline != "kunit.enable=1 kunit_shutdown=poweroff kunit.filter_glob=vmm_* quiet" {
		t.Errorf("cmdline %q", o.Cmdline)
	}
}

// TestKUnitFromCapturedConsole replays a real KUnit console through the
// harness: every case becomes a subtest; the deliberate failure is
// declared expected, so this test passes only if it is reported failed.
func TestKUnitFromCapturedConsole(t *testing.T) {
	f, err := os.Open("../../testdata/ktap/linux-6.1-kunit-all.log")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	o := fakeOptions(t, script(f, vmm.OutcomePowerOff, nil))
	o.QuietConsole = true
	kr := KUnit(t, KUnitOptions{Options: o, ExpectFail: []string{"vmm_selftest.vmm_selftest_deliberate_failure"}})
	if kr.KTAP.Summary.Total() != 72 || kr.KTAP.Summary.Failed != 1 {
		t.Errorf("summary %s", kr.KTAP.Summary)
	}
}

func TestKUnitRunProblems(t *testing.T) {
	stopped, err := os.ReadFile("../../testdata/ktap/linux-6.1-kunit-stopped.log")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		console string
		outcome vmm.Outcome
		filter  string
		want    string
	}{
		{"emulation failure mid-run", string(stopped), vmm.OutcomeError, "", "KUnit guest ended with error"},
		{"powered off mid-run", string(stopped), vmm.OutcomePowerOff, "", "KTAP output incomplete: CRASHED"},
		{"no KTAP", "[ 1.0] kunit: disabled\n", vmm.OutcomePowerOff, "", "no KTAP output"},
		{"filter matched nothing", "KTAP version 1\n1..0\n", vmm.OutcomePowerOff, "nosuch", `no suite matched kunit.filter_glob="nosuch"`},
		{"hang", "KTAP version 1\n1..1\n", vmm.OutcomeTimeout, "", "rip=ffffffff81000000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := fakeOptions(t, script(strings.NewReader(tc.console), tc.outcome, nil))
			o.QuietConsole = true
			ft := &fakeT{name: t.Name()}
			kr := call(ft, func(tb testing.TB) *KUnitResult {
				return kunitBoot(tb, KUnitOptions{Options: o, Filter: tc.filter, ResultsOnly: true})
			})
			if !ft.Failed() || !strings.Contains(ft.errText(), tc.want) {
				t.Errorf("failed=%v, message lacks %q:\n%s", ft.Failed(), tc.want, ft.errText())
			}
			if _, err := os.Stat(filepath.Join(kr.ArtifactDir, "ktap.json")); err != nil {
				t.Errorf("no ktap.json artifact: %v", err)
			}
		})
	}
}

// TestRunKVMRule: no device → skip; a device that exists but is not KVM →
// failure, never a skip.
func TestRunKVMRule(t *testing.T) {
	ft := &fakeT{name: "TestAbsent"}
	call(ft, func(tb testing.TB) *Result { return Run(tb, Options{KVMPath: filepath.Join(t.TempDir(), "no-kvm")}) })
	if !ft.skipped || ft.Failed() {
		t.Errorf("absent device: skipped=%v failed=%v %s", ft.skipped, ft.Failed(), ft.errText())
	}
	bogus := filepath.Join(t.TempDir(), "kvm")
	if err := os.WriteFile(bogus, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	ft = &fakeT{name: "TestBroken"}
	call(ft, func(tb testing.TB) *Result { return Run(tb, Options{KVMPath: bogus}) })
	if ft.skipped || !ft.Failed() {
		t.Errorf("broken device: skipped=%v failed=%v", ft.skipped, ft.Failed())
	}
}
