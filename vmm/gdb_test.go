package vmm

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/vmmgo/vmm/internal/tinyguest"
	"github.com/vmmgo/vmm/memory"
)

// gdbPath returns the gdb binary, skipping when it is not installed (the
// README's set-up, scripts/setup.sh, installs it).
func gdbPath(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("gdb")
	if err != nil {
		t.Skip("gdb is not installed (scripts/setup.sh installs it)")
	}
	return p
}

// runGDB runs gdb in batch mode with the given commands (each one -ex)
// and returns its output. gdb failing is not fatal here: batch mode exits
// non-zero when the last command fails, and callers check the output.
func runGDB(t *testing.T, ctx context.Context, gdb string, args ...string) string {
	t.Helper()
	full := []string{"-batch", "-nx", "-ex", "set pagination off", "-ex", "set confirm off"}
	for _, a := range args {
		if strings.HasPrefix(a, "-") {
			full = append(full, a) // a gdb option, e.g. a file to load
			continue
		}
		full = append(full, "-ex", a)
	}
	cmd := exec.CommandContext(ctx, gdb, full...)
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	t.Logf("gdb %s\n%s", strings.Join(args, " | "), out)
	if ctx.Err() != nil {
		t.Fatalf("gdb did not finish before the deadline: %v", ctx.Err())
	}
	if err != nil {
		t.Logf("gdb exited with %v", err)
	}
	return string(out)
}

// expectOutput fails for every regular expression the output lacks.
func expectOutput(t *testing.T, out string, res ...string) {
	t.Helper()
	for _, re := range res {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("gdb output lacks %q", re)
		}
	}
}

// gdbGuest is a tiny guest laid out at fixed offsets so the test knows its
// addresses: gdbBP1 (a hardware breakpoint), gdbBP2 (a software one). Its
// exit code is RAX at gdbBP2 plus 0x22, or 0xee when the word gdb writes at
// 0x200004 is not 0x12345678.
const gdbGuest = `
	mov $0x11, %eax
	mov $0x22, %ebx
	jmp bp1
	.org 0x20
bp1:
	add $1, %eax              # 3 bytes: stepi lands on bp1+3
	add $2, %eax
	jmp bp2
	.org 0x40
bp2:
	add %ebx, %eax
	mov 0x200004, %ecx        # written by gdb
	cmp $0x12345678, %ecx
	jne bad
	out %eax, $0xf4           # exit code
bad:
	mov $0xee, %eax
	out %eax, $0xf4`

const (
	gdbBP1 = rawOrg + 0x20
	gdbBP2 = rawOrg + 0x40
)

// startGDBMachine builds the tiny guest, serves the stub on a unix socket
// (with --gdb-wait semantics) and runs the machine. The result arrives on
// the returned channel; stop is the stub's stop function.
func startGDBMachine(t *testing.T, ctx context.Context, src string) (m *Machine, sock string, stop func(), done <-chan Result) {
	t.Helper()
	cfg := smallConfig(memory.KindAnon)
	cfg.Timeout = 90 * time.Second
	m = newRawMachine(t, cfg, src)
	if err := m.Memory().Write(0x200000, []byte{0xde, 0xad, 0xbe, 0xef}); err != nil {
		t.Fatal(err)
	}
	sock = t.TempDir() + "/gdb.sock"
	stop, err := m.ServeGDB(ctx, "unix:"+sock, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop) // before the machine's Close (cleanups run last-in first-out)
	ch := make(chan Result, 1)
	go func() {
		res, err := m.Run(ctx)
		if err != nil {
			res.Detail = err.Error()
		}
		ch <- res
	}()
	return m, sock, stop, ch
}

func waitResult(t *testing.T, done <-chan Result, d time.Duration) Result {
	t.Helper()
	select {
	case res := <-done:
		return res
	case <-time.After(d):
		t.Fatalf("machine did not end within %v", d)
		return Result{}
	}
}

// TestGDBTinyGuest drives a tiny guest with the real gdb: hardware and
// software breakpoints, registers, memory, a single step, a register write
// the guest then uses, and the exit report.
func TestGDBTinyGuest(t *testing.T) {
	gdb := gdbPath(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	m, sock, _, done := startGDBMachine(t, ctx, gdbGuest)

	// The vCPU must not run before gdb continues.
	time.Sleep(100 * time.Millisecond)
	if r, err := m.vcpus[0].cpu.Regs(); err != nil || r.RIP != rawOrg {
		t.Fatalf("vCPU ran before gdb continued: rip %#x (%v)", r.RIP, err)
	}

	out := runGDB(t, ctx, gdb,
		"target remote "+sock,
		"info registers rip",
		fmt.Sprintf("hbreak *%#x", gdbBP1),
		"continue",
		"info registers rip rax",
		"x/4xb 0x200000",
		"set {int}0x200004 = 0x12345678",
		"x/1xw 0x200004",
		"stepi",
		"info registers rip rax",
		"delete",
		fmt.Sprintf("break *%#x", gdbBP2),
		"continue",
		"info registers rip",
		fmt.Sprintf("x/2xb %#x", gdbBP2),
		"set $rax = 0x11",
		"continue",
	)
	expectOutput(t, out,
		`rip\s+0x100000\s`,
		`Hardware assisted breakpoint 1 at 0x100020`,
		`Breakpoint 1, 0x0+100020 in`,
		`rip\s+0x100020\s[\s\S]*rax\s+0x11\s`,
		`0x200000:\s+0xde\s+0xad\s+0xbe\s+0xef`,
		`0x200004:\s+0x12345678`,
		`rip\s+0x100023\s[\s\S]*rax\s+0x12\s`,
		`Breakpoint 2, 0x0+100040 in`,
		`rip\s+0x100040\s`,
		`0x100040:\s+0x01\s+0xd8`, // the original instruction, not the int3
		`exited with code 063\]`,  // gdb prints it in octal: 0x33
	)
	res := waitResult(t, done, 10*time.Second)
	if res.Outcome != OutcomePowerOff || res.Code != 0x33 {
		t.Fatalf("guest ended with %v code %#x (%s), want power-off 0x33 (0x11 set by gdb + 0x22)\n%s", res.Outcome, res.Code, res.Detail, res.Dump)
	}
	b := make([]byte, 4)
	if err := m.Memory().Read(gdbBP2, b[:1]); err != nil || b[0] != 0x01 {
		t.Errorf("byte at the software breakpoint after the run: %#x (%v), want the original 0x01", b[0], err)
	}
	if err := m.Memory().Read(0x200004, b); err != nil || binary.LittleEndian.Uint32(b) != 0x12345678 {
		t.Errorf("gdb's write did not reach guest RAM: % x", b)
	}
	if n := m.Stats()["int3-injected"]; n != 0 {
		t.Errorf("the debugger's int3 was injected into the guest %d times", n)
	}
}

// gdbUserGuest drops to CPL3, which this host runs natively (kernel mode
// is emulated), and does the same kind of arithmetic at fixed offsets.
const gdbUserGuest = `
	mov $0x7f000, %rax
	push $0x23
	push %rax
	push $0x3002              # IOPL 3
	push $0x1b
	lea user(%rip), %rax
	push %rax
	iretq
	.org 0x40, 0x90
user:
	mov $0x5, %eax
	mov $0x7, %ebx
	nop
	.org 0x60, 0x90          # nops
ubp:
	add %ebx, %eax
	out %eax, $0xf4`

// TestGDBUserModeHardwareBreakpoint sets hardware breakpoints in guest
// user mode (CPL3) and single-steps there. Hosts whose KVM emulates kernel
// mode run user mode natively without the debug registers of
// KVM_SET_GUEST_DEBUG (measured): there the breakpoints are not hit, the
// guest runs through, and the test says so and skips.
func TestGDBUserModeHardwareBreakpoint(t *testing.T) {
	gdb := gdbPath(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	_, sock, _, done := startGDBMachine(t, ctx, gdbUserGuest)
	out := runGDB(t, ctx, gdb,
		"target remote "+sock,
		fmt.Sprintf("hbreak *%#x", rawOrg+0x40),
		"continue",
		"info registers rip cs",
		"stepi",
		"info registers rip rax",
		"delete",
		fmt.Sprintf("hbreak *%#x", rawOrg+0x60),
		"continue",
		"info registers rip rbx",
		"set $rbx = 0x30",
		"continue",
	)
	res := waitResult(t, done, 10*time.Second)
	if emu, _ := HostEmulatesKernelMode(DefaultConfig().KVMPath); emu && !strings.Contains(out, "Breakpoint 1, ") {
		if res.Outcome != OutcomePowerOff || res.Code != 0xc {
			t.Fatalf("guest with unhit user-mode breakpoints ended with %v code %#x (%s), want power-off 0xc\n%s", res.Outcome, res.Code, res.Detail, res.Dump)
		}
		t.Skip("this host's KVM runs guest user mode natively without the KVM_SET_GUEST_DEBUG debug registers: " +
			"hardware breakpoints at CPL3 are not hit (the guest ran through to its exit); kernel-mode ones are (TestGDBTinyGuest)")
	}
	expectOutput(t, out,
		`Breakpoint 1, 0x0+100040 in`,
		`rip\s+0x100040\s[\s\S]*cs\s+0x1b\s`,
		`rip\s+0x100045\s[\s\S]*rax\s+0x5\s`,
		`Breakpoint 2, 0x0+100060 in`,
		`rip\s+0x100060\s[\s\S]*rbx\s+0x7\s`,
		`exited with code 065\]`, // 0x35 = 0x5 + 0x30
	)
	if res.Outcome != OutcomePowerOff || res.Code != 0x35 {
		t.Fatalf("guest ended with %v code %#x (%s), want power-off 0x35\n%s", res.Outcome, res.Code, res.Detail, res.Dump)
	}
}

// TestGDBUserModeStep attaches to a guest spinning in user mode and asks
// for a single step. With hardware virtualization it steps. On hosts that
// emulate kernel mode the step is refused (gdb shows an error reply)
// rather than letting KVM set TF in natively run user mode, whose #DB the
// guest would take itself; the guest survives and gdb's kill ends it.
func TestGDBUserModeStep(t *testing.T) {
	gdb := gdbPath(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cfg := smallConfig(memory.KindAnon)
	cfg.Timeout = 60 * time.Second
	m := newRawMachine(t, cfg, tinyguest.EnterUserMode(0x7f000, "user")+`
		inc %rcx                  # 3 bytes
		jmp user`)
	sock := t.TempDir() + "/gdb.sock"
	stop, err := m.ServeGDB(ctx, "unix:"+sock, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	done := make(chan Result, 1)
	go func() {
		res, _ := m.Run(ctx)
		done <- res
	}()
	time.Sleep(200 * time.Millisecond)
	out := runGDB(t, ctx, gdb,
		"target remote "+sock,
		"info registers cs",
		"stepi",
		"stepi",
		"info registers rcx",
		"kill",
	)
	expectOutput(t, out, `cs\s+0x1b\s`)
	res := waitResult(t, done, 10*time.Second)
	if res.Outcome != OutcomeStopped || !strings.Contains(res.Detail, "gdb") {
		t.Fatalf("after stepping in user mode and gdb's kill the machine ended with %v (%s), want stopped by gdb\n%s", res.Outcome, res.Detail, res.Dump)
	}
	if emu, _ := HostEmulatesKernelMode(DefaultConfig().KVMPath); emu {
		expectOutput(t, out, `Remote failure reply: E05`)
		t.Log("single-stepping at CPL3 is refused on this host, as documented (docs/debugging.md)")
		return
	}
	if strings.Contains(out, "Remote failure reply") {
		t.Error("a user-mode step was refused on a host with hardware virtualization")
	}
}

// TestGDBUserModeSoftwareBreakpoint plants an int3 in guest user mode. With
// hardware virtualization KVM_GUESTDBG_USE_SW_BP makes the #BP exit to the
// VMM (KVM_EXIT_DEBUG, exception 3). Hosts whose KVM emulates kernel mode
// and runs user mode natively (docs/host-kvm.md) do not intercept #BP at CPL3:
// the guest takes the exception itself (this guest has no IDT, so it
// triple-faults). The test says so and skips there; kernel-mode software
// breakpoints and hardware breakpoints work on such hosts (the tests above).
func TestGDBUserModeSoftwareBreakpoint(t *testing.T) {
	gdb := gdbPath(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	_, sock, _, done := startGDBMachine(t, ctx, gdbUserGuest)
	out := runGDB(t, ctx, gdb,
		"target remote "+sock,
		fmt.Sprintf("break *%#x", rawOrg+0x60),
		"continue",
		"info registers rip cs",
		"set $rbx = 0x30",
		"continue",
	)
	res := waitResult(t, done, 10*time.Second)
	if res.Outcome == OutcomePanic && strings.Contains(res.Dump, "rip=0000000000100061") && !strings.Contains(out, "Breakpoint 1, ") {
		emu, _ := HostEmulatesKernelMode(DefaultConfig().KVMPath)
		if !emu {
			t.Fatalf("int3 at CPL3 went to the guest instead of the debugger on a host with hardware virtualization\n%s", res.Dump)
		}
		t.Skip("this host's KVM does not intercept #BP at CPL3 (KVM_GUESTDBG_USE_SW_BP has no effect on natively run user mode); " +
			"the guest took its own #BP. Breakpoints in guest user mode are not available on this host (docs/debugging.md).")
	}
	expectOutput(t, out,
		`Breakpoint 1, 0x0+100060 in`,
		`rip\s+0x100060\s[\s\S]*cs\s+0x1b\s`,
		`exited with code 065\]`,
	)
	if res.Outcome != OutcomePowerOff || res.Code != 0x35 {
		t.Fatalf("guest ended with %v code %#x (%s), want power-off 0x35\n%s", res.Outcome, res.Code, res.Detail, res.Dump)
	}
}

// TestGDBWatchpoint sets a write watchpoint on a word the guest stores to
// in kernel mode. KVM's instruction emulator checks only instruction
// breakpoints, not data breakpoints, for the instructions it emulates; on
// hosts that emulate guest kernel mode the watchpoint is therefore not hit
// (measured: the guest runs through), and the test says so and skips.
func TestGDBWatchpoint(t *testing.T) {
	gdb := gdbPath(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	_, sock, _, done := startGDBMachine(t, ctx, `
		movl $0x1111, 0x200010
		nop
		movl $0x2222, 0x200010
		mov 0x200010, %eax
		out %eax, $0xf4`)
	out := runGDB(t, ctx, gdb,
		"target remote "+sock,
		"watch *(int *)0x200010",
		"continue",
		"info registers rip",
		"continue",
		"delete",
		"continue",
	)
	res := waitResult(t, done, 10*time.Second)
	if res.Outcome != OutcomePowerOff || res.Code != 0x2222 {
		t.Fatalf("guest ended with %v code %#x (%s), want power-off 0x2222\n%s", res.Outcome, res.Code, res.Detail, res.Dump)
	}
	if emu, _ := HostEmulatesKernelMode(DefaultConfig().KVMPath); emu && !strings.Contains(out, "Old value") {
		t.Skip("this host's KVM emulates guest kernel mode and its emulator does not check data breakpoints: " +
			"the write watchpoint was not hit (the guest ran through); watchpoints need hardware virtualization")
	}
	expectOutput(t, out,
		`Hardware watchpoint 1: \*\(int \*\)0x200010\s+Old value = 0\s+New value = 4369`,
		`rip\s+0x10000b\s`, // after the first store (11 bytes)
		`Old value = 4369\s+New value = 8738`,
	)
}

// TestGDBReconnectAndGarbage: the guest stays where a disconnected gdb left
// it; garbage, a bad checksum, a stray ^C and a raw session on the socket do
// not disturb it; a new gdb picks it up and runs it to the end.
func TestGDBReconnectAndGarbage(t *testing.T) {
	gdb := gdbPath(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	m, sock, _, done := startGDBMachine(t, ctx, gdbGuest)

	out := runGDB(t, ctx, gdb,
		"target remote "+sock,
		fmt.Sprintf("hbreak *%#x", gdbBP1),
		"continue",
		"disconnect",
	)
	expectOutput(t, out, `Breakpoint 1, 0x0+100020 in`)
	time.Sleep(100 * time.Millisecond)
	if !m.Parked(0) {
		t.Fatal("vCPU runs after gdb disconnected from a stopped guest")
	}

	// Garbage, then a well-formed register read in the middle of it.
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	junk := []byte("\x00\xff$$$#zz+-garbage$g#00$qSupported:" + strings.Repeat("A", 70000) + "#00\x03$m100020,4#zz")
	if _, err := c.Write(junk); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("$m100020,4#" + checksum("m100020,4"))); err != nil {
		t.Fatal(err)
	}
	got := readUntil(t, c, "83c001") // add $1,%eax at bp1: memory reads work
	if !strings.Contains(got, "-") {
		t.Errorf("bad checksums were not NAKed: %q", got)
	}
	c.Close()
	// A connection that sends half a packet and goes away.
	if c2, err := net.Dial("unix", sock); err == nil {
		c2.Write([]byte("$vCont;c"))
		c2.Close()
	}
	time.Sleep(100 * time.Millisecond)
	if r, err := m.vcpus[0].cpu.Regs(); err != nil || r.RIP != gdbBP1 || !m.Parked(0) {
		t.Fatalf("guest moved while no debugger was attached: rip %#x parked %v (%v)", r.RIP, m.Parked(0), err)
	}

	out = runGDB(t, ctx, gdb,
		"target remote "+sock,
		"info registers rip",
		"set {int}0x200004 = 0x12345678",
		"continue",
	)
	expectOutput(t, out, `rip\s+0x100020\s`, `exited with code 066\]`) // 0x36 = 0x11+1+2+0x22
	res := waitResult(t, done, 10*time.Second)
	if res.Outcome != OutcomePowerOff || res.Code != 0x36 {
		t.Fatalf("guest ended with %v code %#x (%s), want power-off 0x36\n%s", res.Outcome, res.Code, res.Detail, res.Dump)
	}
}

func checksum(payload string) string {
	var s byte
	for i := 0; i < len(payload); i++ {
		s += payload[i]
	}
	return fmt.Sprintf("%02x", s)
}

// readUntil reads from c until want appears, failing on error or deadline.
func readUntil(t *testing.T, c net.Conn, want string) string {
	t.Helper()
	var got []byte
	buf := make([]byte, 4096)
	for !bytes.Contains(got, []byte(want)) {
		n, err := c.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			t.Fatalf("reading the stub's replies: %v; got %q, want %q", err, got, want)
		}
	}
	return string(got)
}

// TestGDBAttachInterruptAndKill: without --gdb-wait the guest runs; gdb
// attaching stops it, Ctrl-C (SIGINT to gdb, which sends ^C) stops it again
// after a continue, and gdb's kill ends the machine.
func TestGDBAttachInterruptAndKill(t *testing.T) {
	gdb := gdbPath(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cfg := smallConfig(memory.KindAnon)
	cfg.Timeout = 60 * time.Second
	cfg.CPUs = 2
	m := newRawMachine(t, cfg, `
		mov $0x4242, %r12
	spin: inc %r13
		jmp spin`)
	sock := t.TempDir() + "/gdb.sock"
	stop, err := m.ServeGDB(ctx, "unix:"+sock, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	done := make(chan Result, 1)
	go func() {
		res, _ := m.Run(ctx)
		done <- res
	}()
	time.Sleep(200 * time.Millisecond)
	select {
	case res := <-done:
		t.Fatalf("guest ended before gdb attached: %v %s", res.Outcome, res.Detail)
	default:
	}
	cmd := exec.CommandContext(ctx, gdb, "-batch", "-nx", "-ex", "set pagination off", "-ex", "set confirm off",
		"-ex", "target remote "+sock,
		"-ex", "info registers r12",
		"-ex", "p $r13",
		"-ex", "continue",
		"-ex", "p $r13",
		"-ex", "info threads",
		"-ex", "kill")
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
	var outBuf syncBuffer
	cmd.Stdout, cmd.Stderr = &outBuf, &outBuf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Interrupt once gdb has continued: the vCPUs run again.
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(outBuf.String(), "$1 = ") || m.Parked(0) {
		if time.Now().After(deadline) {
			t.Fatalf("gdb did not continue the guest:\n%s", outBuf.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	err = cmd.Wait()
	out := outBuf.String()
	t.Logf("gdb output (%v):\n%s", err, out)
	expectOutput(t, out,
		`r12\s+0x4242\s`,
		`received signal SIGINT, Interrupt`,
		`\$2 = \d+`,
		`Thread 2`,
		`\[Inferior 1 \(Remote target\) killed\]`,
	)
	var r13 [2]uint64
	for i, re := range []string{`\$1 = (\d+)`, `\$2 = (\d+)`} {
		if sm := regexp.MustCompile(re).FindStringSubmatch(out); sm != nil {
			fmt.Sscan(sm[1], &r13[i])
		}
	}
	if r13[1] <= r13[0] {
		t.Errorf("r13 did not grow between the attach stop (%d) and the Ctrl-C stop (%d)", r13[0], r13[1])
	}
	res := waitResult(t, done, 10*time.Second)
	if res.Outcome != OutcomeStopped || !strings.Contains(res.Detail, "gdb") {
		t.Fatalf("after gdb's kill the machine ended with %v (%s), want stopped by gdb", res.Outcome, res.Detail)
	}
}

// TestGDBStopServerWhileGuestRuns: stopping the stub while the guest is
// held by a disconnected gdb lets it run on without debugging (no stale
// breakpoint stops it), as when the VMM shuts the stub down early.
func TestGDBStopServerWhileGuestRuns(t *testing.T) {
	gdb := gdbPath(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	m, sock, stop, done := startGDBMachine(t, ctx, `
	loop:
		incq 0x200100
		jmp loop`)
	out := runGDB(t, ctx, gdb,
		"target remote "+sock,
		fmt.Sprintf("hbreak *%#x", rawOrg),
		"continue",
		"disconnect",
	)
	expectOutput(t, out, `Breakpoint 1, 0x0+100000 in`)
	counter := func() uint64 {
		b := make([]byte, 8)
		if err := m.Memory().Read(0x200100, b); err != nil {
			t.Fatal(err)
		}
		return binary.LittleEndian.Uint64(b)
	}
	before := counter()
	time.Sleep(50 * time.Millisecond)
	if c := counter(); c != before || !m.Parked(0) {
		t.Fatalf("guest ran while held by the disconnected gdb: %d -> %d", before, c)
	}
	stop()
	deadline := time.Now().Add(10 * time.Second)
	for counter() < before+1000 {
		if time.Now().After(deadline) {
			t.Fatalf("guest did not run on after the stub stopped (counter %d -> %d)\n%s", before, counter(), m.DumpState())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if m.Parked(0) {
		t.Fatal("vCPU parked again after the stub stopped (a stale breakpoint?)")
	}
	m.Stop("test done")
	if res := waitResult(t, done, 10*time.Second); res.Outcome != OutcomeStopped {
		t.Fatalf("outcome %v (%s)", res.Outcome, res.Detail)
	}
}

// TestServeGDBErrors: the stub refuses an unloaded or running machine and a
// bad address, naming the problem.
func TestServeGDBErrors(t *testing.T) {
	m := newRawMachine(t, smallConfig(memory.KindAnon), `out %al, $0xf4`)
	if _, err := m.ServeGDB(context.Background(), "bogus", false); err == nil || !strings.Contains(err.Error(), "tcp:HOST:PORT") {
		t.Errorf("bad address: %v", err)
	}
	if m.debug != nil {
		t.Error("a failed ServeGDB left the debugger hook installed")
	}
	cfg := DefaultConfig()
	cfg.Memory = 4 << 20
	empty, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer empty.Close()
	if _, err := empty.ServeGDB(context.Background(), "unix:"+t.TempDir()+"/s", false); err == nil || !strings.Contains(err.Error(), "nothing loaded") {
		t.Errorf("unloaded machine: %v", err)
	}
}

// logCapture is a logrus hook keeping entries.
type logCapture struct {
	mu      sync.Mutex
	entries []*logrus.Entry
}

func (h *logCapture) Levels() []logrus.Level { return logrus.AllLevels }
func (h *logCapture) Fire(e *logrus.Entry) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.entries = append(h.entries, e)
	return nil
}

// TestTraceExitsLogsEveryExit: with TraceExits and a trace-level logger
// every port exit is logged at trace level with its fields; without
// TraceExits nothing is.
func TestTraceExitsLogsEveryExit(t *testing.T) {
	const src = `
		mov $0x3f0, %dx
		mov $0x41, %al
		out %al, %dx
		out %al, %dx
		mov $7, %eax
		out %eax, $0xf4`
	for _, trace := range []bool{true, false} {
		t.Run(fmt.Sprint("trace=", trace), func(t *testing.T) {
			l := logrus.New()
			l.SetOutput(ioDiscard{})
			l.SetLevel(logrus.TraceLevel)
			hook := &logCapture{}
			l.AddHook(hook)
			cfg := smallConfig(memory.KindAnon)
			cfg.TraceExits = trace
			cfg.Log = logrus.NewEntry(l)
			m := newRawMachine(t, cfg, src)
			runMachine(t, m, OutcomePowerOff)
			var ios []string
			hook.mu.Lock()
			for _, e := range hook.entries {
				if e.Level == logrus.TraceLevel && e.Message == "exit" && e.Data["exit"] == "io" {
					ios = append(ios, fmt.Sprintf("%v/%v/%v", e.Data["port"], e.Data["out"], e.Data["data"]))
				}
			}
			hook.mu.Unlock()
			want := []string{"0x3f0/true/41", "0x3f0/true/41", "0xf4/true/07000000"}
			if !trace {
				want = nil
			}
			if strings.Join(ios, ",") != strings.Join(want, ",") {
				t.Fatalf("trace-level exit log %v, want %v", ios, want)
			}
		})
	}
}

type ioDiscard struct{}

func (ioDiscard) Write(p []byte) (int, error) { return len(p), nil }
