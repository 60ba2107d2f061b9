package main

// Soak and concurrency tests through the CLI: `vmm run` as a subprocess of
// a binary built from this package, many times in a row and several at once.
// The helpers here (building the binary, tiny guests with a per-run input,
// process snapshots) are shared with signals_test.go.

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"github.com/vmmgo/vmm/internal/procstat"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vmmgo/vmm/internal/tinyguest"
	"github.com/vmmgo/vmm/kvm/kvmtest"
)

// testBinDir holds the vmm binary the subprocess tests run; TestMain removes
// it when the tests end.
var testBinDir string

func TestMain(m *testing.M) {
	code := m.Run()
	if testBinDir != "" {
		os.RemoveAll(testBinDir)
	}
	os.Exit(code)
}

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
)

// vmmBinary builds ./cmd/vmm once per test process (the build cache makes
// it a link step) with a recognisable version string.
func vmmBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		testBinDir, buildErr = os.MkdirTemp("", "vmm-cli-test-")
		if buildErr != nil {
			return
		}
		buildPath = filepath.Join(testBinDir, "vmm")
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		args := []string{"build", "-ldflags", "-X main.version=" + testVersion, "-o", buildPath}
		if os.Getenv(raceEnv) != "" {
			args = append(args, "-race") // the subprocesses run under the race detector too
		}
		cmd := exec.CommandContext(ctx, goTool(), append(args, ".")...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build ./cmd/vmm: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildPath
}

const testVersion = "v0.0.0-clitest"

// raceEnv, when set, builds the subprocess binary with -race:
// VMM_CLI_TEST_RACE=1 go test -race ./cmd/vmm.
const raceEnv = "VMM_CLI_TEST_RACE"

// goTool finds the go command (go test may run with a PATH without it).
func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	for _, p := range []string{filepath.Join(os.Getenv("GOROOT"), "bin", "go"), "/usr/local/go/bin/go"} {
		if fileExists(p) {
			return p
		}
	}
	return "go"
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// Tiny guests for the CLI. answerGuestSrc loads a 64-bit input (the marker
// immediate, patched per run by withInput), runs answerRounds steps of a
// 64-bit LCG, prints the result as 16 hex digits and a newline on the debug
// console (port 0xe9: the process's stdout) and exits with 7 + result%200
// (7..206: clear of the VMM's own exit codes 0-6). Other vCPUs halt.
const (
	inputMarker    = 0x5ca1ab1e0ddba11
	answerRounds   = 1000
	cliLCGMul      = 6364136223846793005
	cliLCGAdd      = 1442695040888963407
	answerGuestSrc = `
	test %rdi, %rdi          # only vCPU 0 answers; the others halt
	jz 0f
3:	hlt
	jmp 3b
0:	movabs $0x5ca1ab1e0ddba11, %rax
	movabs $6364136223846793005, %rbx
	movabs $1442695040888963407, %rcx
	mov $1000, %edx
1:	imul %rbx, %rax
	add %rcx, %rax
	dec %edx
	jnz 1b
	mov %rax, %r8
	lea hex(%rip), %rsi
	mov $16, %ecx
2:	rol $4, %r8
	mov %r8d, %ebx
	and $0xf, %ebx
	movb (%rsi,%rbx), %al
	out %al, $0xe9
	dec %ecx
	jnz 2b
	mov $10, %al
	out %al, $0xe9
	mov %r8, %rax
	xor %edx, %edx
	mov $200, %ecx
	div %rcx
	lea 7(%rdx), %eax
	out %eax, $0xf4
hex:	.ascii "0123456789abcdef"`
)

// answer is what answerGuestSrc prints and its exit code, for input in.
func answer(in uint64) (string, int) {
	x := in
	for range answerRounds {
		x = x*cliLCGMul + cliLCGAdd
	}
	return fmt.Sprintf("%016x\n", x), int(7 + x%200)
}

// answerImage assembles answerGuestSrc once.
func answerImage(t testing.TB) []byte {
	t.Helper()
	code, err := tinyguest.Assemble(answerGuestSrc, 0x100000)
	if err != nil {
		t.Fatal(err)
	}
	var m [8]byte
	binary.LittleEndian.PutUint64(m[:], inputMarker)
	if bytes.Count(code, m[:]) != 1 {
		t.Fatalf("input marker %#x found %d times in the assembled guest", inputMarker, bytes.Count(code, m[:]))
	}
	return code
}

// withInput writes a copy of img with the input marker replaced by in to
// dir and returns its path.
func withInput(t testing.TB, dir string, img []byte, in uint64) string {
	t.Helper()
	var m, v [8]byte
	binary.LittleEndian.PutUint64(m[:], inputMarker)
	binary.LittleEndian.PutUint64(v[:], in)
	p := filepath.Join(dir, fmt.Sprintf("guest-%016x.bin", in))
	if err := os.WriteFile(p, bytes.Replace(img, m[:], v[:], 1), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// cliRun is one finished `vmm` subprocess.
type cliRun struct {
	code           int
	stdout, stderr string
	wall           time.Duration
	maxRSSKiB      int64
}

// runCLI runs the built vmm with args and a deadline, with TMPDIR pointed
// at tmp (so anything it leaves there is seen).
func runCLI(t testing.TB, tmp string, deadline time.Duration, args ...string) (cliRun, error) {
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	cmd := exec.CommandContext(ctx, vmmBinary(t), args...)
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	t0 := time.Now()
	err := cmd.Run()
	r := cliRun{stdout: out.String(), stderr: errOut.String(), wall: time.Since(t0)}
	if cmd.ProcessState != nil {
		r.code = cmd.ProcessState.ExitCode()
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			r.maxRSSKiB = ru.Maxrss
		}
	}
	if ctx.Err() != nil {
		return r, fmt.Errorf("vmm %q did not finish within %v; stderr:\n%s", args, deadline, r.stderr)
	}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		return r, fmt.Errorf("vmm %q: %w", args, err)
	}
	return r, nil
}

// checkAnswer checks one run of the answer guest for input in.
func checkAnswer(r cliRun, in uint64) error {
	wantOut, wantCode := answer(in)
	if r.code != wantCode || r.stdout != wantOut {
		return fmt.Errorf("input %#x: exit %d, stdout %q; want exit %d, stdout %q; stderr:\n%s",
			in, r.code, r.stdout, wantCode, wantOut, r.stderr)
	}
	return nil
}

// takeSelfSnapshot is procstat.Take for a test.
func takeSelfSnapshot(t testing.TB) procstat.Snapshot {
	t.Helper()
	s, err := procstat.Take()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// children lists the pids of this process's live child processes.
func children(t testing.TB) []int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	self := os.Getpid()
	var kids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so cut at the last ')'.
		i := bytes.LastIndexByte(st, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(st[i+1:]))
		if len(f) > 1 {
			if ppid, _ := strconv.Atoi(f[1]); ppid == self {
				kids = append(kids, pid)
			}
		}
	}
	return kids
}

// checkNothingLeft fails when tmp holds anything or a child process lives on.
func checkNothingLeft(t testing.TB, tmp string) {
	t.Helper()
	ents, err := os.ReadDir(tmp)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		t.Errorf("left behind in TMPDIR: %s", e.Name())
	}
	if kids := children(t); len(kids) > 0 {
		t.Errorf("child processes still alive: %v", kids)
	}
}

// TestCLISoak runs 100 `vmm run` processes one after another, each with its
// own input, and checks every answer, that the test process holds what it
// held before (fds, threads, goroutines, RSS), that the VMM processes do not
// grow from the first run to the last, and that nothing is left in TMPDIR.
func TestCLISoak(t *testing.T) {
	kvmtest.Open(t)
	n := 100
	if testing.Short() {
		n = 20
	}
	img := answerImage(t)
	vmmBinary(t)
	dir, tmp := t.TempDir(), t.TempDir()
	images := make([]string, n)
	inputs := make([]uint64, n)
	for i := range n {
		inputs[i] = uint64(i+1) * 0x9e3779b97f4a7c15
		images[i] = withInput(t, dir, img, inputs[i])
	}
	before := takeSelfSnapshot(t)
	start := time.Now()
	var rss []int64
	var wall time.Duration
	for i := range n {
		if time.Since(start) > 150*time.Second {
			t.Fatalf("run %d: the soak exceeded its 150s budget", i)
		}
		r, err := runCLI(t, tmp, 30*time.Second, "run", "--image", images[i], "--memory", "16M")
		if err != nil {
			t.Fatalf("run %d: %v", i, err)
		}
		if err := checkAnswer(r, inputs[i]); err != nil {
			t.Fatalf("run %d: %v", i, err)
		}
		rss = append(rss, r.maxRSSKiB)
		wall += r.wall
	}
	after := takeSelfSnapshot(t)
	if after.FDs != before.FDs {
		t.Errorf("test process fds: %d before, %d after %d runs", before.FDs, after.FDs, n)
	}
	if after.Goroutines != before.Goroutines {
		t.Errorf("test process goroutines: %d before, %d after", before.Goroutines, after.Goroutines)
	}
	if after.Threads > before.Threads+4 {
		t.Errorf("test process threads: %d before, %d after", before.Threads, after.Threads)
	}
	if after.RSSKiB > before.RSSKiB+16<<10 {
		t.Errorf("test process RSS: %d KiB before, %d KiB after", before.RSSKiB, after.RSSKiB)
	}
	lo, hi := rss[0], rss[0]
	for _, v := range rss {
		lo, hi = min(lo, v), max(hi, v)
	}
	// Every process does the same work: a VMM whose footprint depended on
	// how many ran before it would show here (shared state on disk, say).
	if hi > lo+8<<10 {
		t.Errorf("vmm max RSS varies from %d to %d KiB across identical runs", lo, hi)
	}
	checkNothingLeft(t, tmp)
	t.Logf("%d vmm run processes in %v (mean %v each); vmm max RSS %d..%d KiB\nbefore: %v\nafter:  %v",
		n, time.Since(start).Round(time.Millisecond), (wall / time.Duration(n)).Round(time.Millisecond), lo, hi, before, after)
}

// TestCLIConcurrent runs 8 `vmm run` processes at once, each with its own
// input, and checks each one's answer on its own stdout and exit code.
func TestCLIConcurrent(t *testing.T) {
	kvmtest.Open(t)
	const n = 8
	img := answerImage(t)
	vmmBinary(t)
	dir, tmp := t.TempDir(), t.TempDir()
	var wg sync.WaitGroup
	errs := make([]error, n)
	start := time.Now()
	for i := range n {
		in := uint64(i+1) * 0x0123456789abcdef
		p := withInput(t, dir, img, in)
		wg.Add(1)
		go func() {
			defer wg.Done()
			args := []string{"run", "--image", p, "--memory", "16M", "--cpus", strconv.Itoa(1 + i%2)}
			if i%4 == 3 {
				args = append(args, "--memory-backend", "memfd")
			}
			r, err := runCLI(t, tmp, 60*time.Second, args...)
			if err == nil {
				err = checkAnswer(r, in)
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("process %d: %v", i, err)
		}
	}
	checkNothingLeft(t, tmp)
	t.Logf("%d vmm processes in parallel in %v", n, time.Since(start).Round(time.Millisecond))
}
