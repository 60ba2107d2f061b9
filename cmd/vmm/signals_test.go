package main

// Signals through the CLI (README "Exit codes"): SIGINT and SIGTERM stop the
// guest and exit with 6, the terminal the console put in raw mode is given
// back, a second signal exits at once, and a SIGKILLed VMM leaves nothing
// behind that the next one trips over.

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vmmgo/vmm/internal/tinyguest"
	"github.com/vmmgo/vmm/kvm/kvmtest"
	"golang.org/x/sys/unix"
)

// watchBuffer collects a subprocess's output and lets a test wait for text.
type watchBuffer struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	wake chan struct{}
}

func newWatchBuffer() *watchBuffer { return &watchBuffer{wake: make(chan struct{}, 1)} }

func (w *watchBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	select {
	case w.wake <- struct{}{}:
	default:
	}
	return len(p), nil
}

func (w *watchBuffer) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// waitFor waits until the output contains s.
func (w *watchBuffer) waitFor(s string, d time.Duration) bool {
	deadline := time.After(d)
	for {
		if strings.Contains(w.String(), s) {
			return true
		}
		select {
		case <-w.wake:
		case <-deadline:
			return strings.Contains(w.String(), s)
		}
	}
}

// proc is a vmm subprocess under test.
type proc struct {
	cmd            *exec.Cmd
	stdout, stderr *watchBuffer
	done           chan struct{}
}

func startVMM(t *testing.T, tmp string, stdin *os.File, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(vmmBinary(t), args...), stdout: newWatchBuffer(), stderr: newWatchBuffer(), done: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	if stdin != nil {
		p.cmd.Stdin = stdin
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

func (p *proc) signal(t *testing.T, s os.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(s); err != nil {
		t.Fatalf("signal %v: %v", s, err)
	}
}

// wait returns the exit code, failing the test after d.
func (p *proc) wait(t *testing.T, d time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(d):
		t.Fatalf("vmm still running %v after the signal\nstdout: %q\nstderr: %s", d, p.stdout, p.stderr)
		return -1
	}
}

func (p *proc) waitOutput(t *testing.T, w *watchBuffer, s string) {
	t.Helper()
	if !w.waitFor(s, 20*time.Second) {
		t.Fatalf("vmm did not print %q within 20s\nstdout: %q\nstderr: %s", s, p.stdout, p.stderr)
	}
}

// spinGuest prints "ready" on the debug console and spins (pause loop):
// only a host-side stop ends it.
const spinGuestSrc = `
	lea msg(%rip), %rsi
	mov $6, %ecx
	mov $0xe9, %dx
	rep outsb
1:	pause
	jmp 1b
msg:	.ascii "ready\n"`

func spinImage(t *testing.T, dir string) string {
	t.Helper()
	code, err := tinyguest.Assemble(spinGuestSrc, 0x100000)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "spin.bin")
	if err := os.WriteFile(p, code, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestSignalStopsRun: SIGINT and SIGTERM to `vmm run` stop the guest and
// exit with 6, saying why.
func TestSignalStopsRun(t *testing.T) {
	kvmtest.Open(t)
	dir := t.TempDir()
	img := spinImage(t, dir)
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			tmp := t.TempDir()
			p := startVMM(t, tmp, nil, "run", "--image", img, "--memory", "16M")
			p.waitOutput(t, p.stdout, "ready\n")
			sent := time.Now()
			p.signal(t, sig)
			if code := p.wait(t, 10*time.Second); code != 6 {
				t.Fatalf("exit %d, want 6\nstderr: %s", code, p.stderr)
			}
			if !strings.Contains(p.stderr.String(), "stopped") {
				t.Errorf("stderr does not say the guest was stopped: %s", p.stderr)
			}
			t.Logf("%v: exited 6 in %v", sig, time.Since(sent).Round(time.Millisecond))
			checkNothingLeft(t, tmp)
		})
	}
}

// openPTY returns the master and slave of a new pseudo-terminal (as the
// internal/termio tests do, without a pty library).
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatalf("unlockpt: %v", err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("ptsname: %v", err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open slave: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return m, s
}

// tinyKernel is an ELF64 "kernel" without a PVH note (so it is entered
// through the 64-bit boot protocol at e_entry 16 MiB): it writes "ready" on
// COM1 and halts with interrupts off, so it waits in KVM_RUN without using
// the CPU until the VMM kicks it.
func tinyKernel(t *testing.T, dir string) string {
	t.Helper()
	const base = 0x1000000
	code, err := tinyguest.Assemble(`
	mov $0x3f8, %dx
	lea msg(%rip), %rsi
	mov $6, %ecx
	rep outsb
	cli
1:	hlt
	jmp 1b
msg:	.ascii "ready\n"`, base)
	if err != nil {
		t.Fatal(err)
	}
	const off = 0x1000 // the segment's file offset, page aligned
	img := make([]byte, off+len(code))
	copy(img, "\x7fELF\x02\x01\x01")              // ELFCLASS64, little-endian, EV_CURRENT
	binary.LittleEndian.PutUint16(img[16:], 2)    // ET_EXEC
	binary.LittleEndian.PutUint16(img[18:], 62)   // EM_X86_64
	binary.LittleEndian.PutUint32(img[20:], 1)    // e_version
	binary.LittleEndian.PutUint64(img[24:], base) // e_entry
	binary.LittleEndian.PutUint64(img[32:], 64)   // e_phoff
	binary.LittleEndian.PutUint16(img[52:], 64)   // e_ehsize
	binary.LittleEndian.PutUint16(img[54:], 56)   // e_phentsize
	binary.LittleEndian.PutUint16(img[56:], 1)    // e_phnum
	ph := img[64:]
	binary.LittleEndian.PutUint32(ph[0:], 1)                  // PT_LOAD
	binary.LittleEndian.PutUint32(ph[4:], 5)                  // PF_R|PF_X
	binary.LittleEndian.PutUint64(ph[8:], off)                // p_offset
	binary.LittleEndian.PutUint64(ph[16:], base)              // p_vaddr
	binary.LittleEndian.PutUint64(ph[24:], base)              // p_paddr
	binary.LittleEndian.PutUint64(ph[32:], uint64(len(code))) // p_filesz
	binary.LittleEndian.PutUint64(ph[40:], uint64(len(code))) // p_memsz
	binary.LittleEndian.PutUint64(ph[48:], 0x1000)            // p_align
	copy(img[off:], code)
	p := filepath.Join(dir, "tiny-vmlinux")
	if err := os.WriteFile(p, img, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestSignalRestoresTerminal runs `vmm boot` with its console on a
// pseudo-terminal: the terminal goes raw while the guest runs, and after
// SIGINT or SIGTERM it is back exactly as it was, with exit code 6.
func TestSignalRestoresTerminal(t *testing.T) {
	kvmtest.Open(t)
	dir := t.TempDir()
	kernel := tinyKernel(t, dir)
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			_, slave := openPTY(t)
			before, err := unix.IoctlGetTermios(int(slave.Fd()), unix.TCGETS)
			if err != nil {
				t.Fatal(err)
			}
			tmp := t.TempDir()
			p := startVMM(t, tmp, slave, "boot", "--kernel", kernel, "--memory", "64M")
			p.waitOutput(t, p.stdout, "ready\n")
			raw, err := unix.IoctlGetTermios(int(slave.Fd()), unix.TCGETS)
			if err != nil {
				t.Fatal(err)
			}
			if raw.Lflag&(unix.ICANON|unix.ECHO|unix.ISIG) != 0 {
				t.Fatalf("console terminal not in raw mode while the guest runs: lflag %#x", raw.Lflag)
			}
			p.signal(t, sig)
			if code := p.wait(t, 10*time.Second); code != 6 {
				t.Fatalf("exit %d, want 6\nstderr: %s", code, p.stderr)
			}
			after, err := unix.IoctlGetTermios(int(slave.Fd()), unix.TCGETS)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(before, after) {
				t.Errorf("terminal not restored after %v:\nbefore %+v\nafter  %+v", sig, before, after)
			}
			checkNothingLeft(t, tmp)
		})
	}
}

// blockedIn reports whether some thread of pid sleeps in a kernel function
// whose name contains one of fns (from /proc/PID/task/TID/wchan).
func blockedIn(pid int, fns ...string) bool {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/wchan", pid))
	for _, f := range tasks {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, fn := range fns {
			if strings.Contains(string(b), fn) {
				return true
			}
		}
	}
	return false
}

// TestSecondSignalForcesExit: a VMM stuck where the first signal cannot end
// it (here: opening a kernel from a FIFO nobody writes) exits with 6 at the
// second signal, saying so.
func TestSecondSignalForcesExit(t *testing.T) {
	dir, tmp := t.TempDir(), t.TempDir()
	fifo := filepath.Join(dir, "kernel.fifo")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	p := startVMM(t, tmp, nil, "boot", "--kernel", fifo, "--memory", "64M")
	deadline := time.Now().Add(20 * time.Second)
	for !blockedIn(p.cmd.Process.Pid, "fifo", "pipe", "wait_for_partner") {
		if time.Now().After(deadline) {
			t.Fatalf("vmm never blocked opening the FIFO\nstderr: %s", p.stderr)
		}
		time.Sleep(10 * time.Millisecond)
	}
	p.signal(t, syscall.SIGINT)
	select {
	case <-p.done:
		t.Fatalf("vmm exited (%v) at the first signal while blocked on the FIFO; this test needs it blocked", p.cmd.ProcessState)
	case <-time.After(300 * time.Millisecond):
	}
	p.signal(t, syscall.SIGTERM)
	if code := p.wait(t, 5*time.Second); code != 6 {
		t.Fatalf("exit %d after the second signal, want 6\nstderr: %s", code, p.stderr)
	}
	if !strings.Contains(p.stderr.String(), "second terminated, exiting now") {
		t.Errorf("stderr does not explain the forced exit: %q", p.stderr)
	}
	checkNothingLeft(t, tmp)
}

// TestSIGKILLLeavesNothingBehind: a VMM serving gdb on a unix socket is
// SIGKILLed. Nothing is left in TMPDIR and no process lives on. The socket
// file itself cannot be removed by a killed process: the next VMM given the
// same path takes it over (gdbstub.Listen replaces a stale socket), serves
// on it, and removes it when it ends normally.
func TestSIGKILLLeavesNothingBehind(t *testing.T) {
	kvmtest.Open(t)
	dir, tmp := t.TempDir(), t.TempDir()
	img := spinImage(t, dir)
	sock := filepath.Join(dir, "gdb.sock")
	args := []string{"run", "--image", img, "--memory", "16M", "--gdb", "unix:" + sock, "--gdb-wait"}
	p := startVMM(t, tmp, nil, args...)
	p.waitOutput(t, p.stderr, "gdb stub listening")
	p.signal(t, syscall.SIGKILL)
	if code := p.wait(t, 5*time.Second); code != -1 {
		t.Fatalf("exit code %d after SIGKILL, want -1 (killed)", code)
	}
	checkNothingLeft(t, tmp)
	if _, err := net.Dial("unix", sock); err == nil {
		t.Fatal("the killed VMM's socket still accepts connections")
	}

	p = startVMM(t, tmp, nil, args...)
	p.waitOutput(t, p.stderr, "gdb stub listening")
	c, err := net.DialTimeout("unix", sock, 5*time.Second)
	if err != nil {
		t.Fatalf("the second VMM does not serve on the reused socket path: %v\nstderr: %s", err, p.stderr)
	}
	c.Close()
	p.signal(t, syscall.SIGTERM)
	if code := p.wait(t, 10*time.Second); code != 6 {
		t.Fatalf("exit %d, want 6\nstderr: %s", code, p.stderr)
	}
	if _, err := os.Lstat(sock); err == nil {
		t.Errorf("socket %s left behind after a normal stop", sock)
	}
	checkNothingLeft(t, tmp)
}
