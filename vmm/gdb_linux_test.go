package vmm

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vmmgo/vmm/internal/guestimage"
	"github.com/vmmgo/vmm/internal/hostspeed"
	"github.com/vmmgo/vmm/kvm/kvmtest"
)

// symbolAddr looks up a text symbol in a System.map.
func symbolAddr(t *testing.T, systemMap, name string) uint64 {
	t.Helper()
	f, err := os.Open(systemMap)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) == 3 && fields[2] == name && (fields[1] == "T" || fields[1] == "t") {
			a, err := strconv.ParseUint(fields[0], 16, 64)
			if err != nil {
				t.Fatal(err)
			}
			return a
		}
	}
	t.Fatalf("%s: no text symbol %s", systemMap, name)
	return 0
}

// TestGDBLinuxStartKernel boots the project's kernel (uncompressed vmlinux
// with DWARF, PVH entry, no KASLR) on two vCPUs held at their first
// instruction, and has gdb with the vmlinux symbols stop it at
// start_kernel with a hardware breakpoint, show the backtrace, RIP and both
// vCPUs, stop at setup_arch with a software breakpoint (an int3 the
// emulator cannot execute on hosts that emulate kernel mode), step a line,
// read kernel variables, and kill it; the VMM then ends the machine as
// stopped by gdb.
func TestGDBLinuxStartKernel(t *testing.T) {
	if testing.Short() {
		t.Skip("boots Linux (kernel code is emulated here: tens of seconds); not run with -short")
	}
	gdb := gdbPath(t)
	kvmtest.Open(t)
	var buildLog bytes.Buffer
	bctx, bcancel := context.WithTimeout(context.Background(), 30*time.Minute)
	k, err := guestimage.Kernel(bctx, &buildLog)
	bcancel()
	if err != nil {
		t.Fatalf("guest kernel: %v\n%s", err, buildLog.String())
	}
	kernel, err := os.ReadFile(k.VMLinux)
	if err != nil {
		t.Fatal(err)
	}
	startKernel := symbolAddr(t, k.SystemMap, "start_kernel")

	// The guest runs only from its first instruction to setup_arch, a few
	// seconds of emulated kernel code, plus gdb's round trips.
	deadline := hostspeed.BootSlot(t, 10*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), deadline+10*time.Second)
	defer cancel()
	cfg := DefaultConfig()
	cfg.CPUs = 2
	cfg.Memory = 256 << 20
	cfg.Timeout = deadline
	con := &syncBuffer{}
	cfg.Console = con
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	if _, err := m.LoadLinux(LinuxConfig{Kernel: kernel, Cmdline: "nokaslr"}); err != nil {
		t.Fatal(err)
	}
	sock := t.TempDir() + "/gdb.sock"
	stop, err := m.ServeGDB(ctx, "unix:"+sock, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	done := make(chan Result, 1)
	start := time.Now()
	go func() {
		res, err := m.Run(ctx)
		if err != nil {
			res.Detail = err.Error()
		}
		done <- res
	}()

	out := runGDB(t, ctx, gdb,
		"file "+k.VMLinux,
		"target remote "+sock,
		"info threads",
		"hbreak start_kernel",
		"continue",
		"bt",
		"info registers rip",
		"info threads",
		"break setup_arch",
		"continue",
		"bt 2",
		"next",
		"x/s linux_banner",
		"print boot_command_line",
		"kill",
	)
	t.Logf("gdb session took %v (boot to start_kernel included)", time.Since(start).Round(time.Millisecond))
	expectOutput(t, out,
		`Thread 2`,
		`Hardware assisted breakpoint 1 at 0x[0-9a-f]+: file init/main.c`,
		`Breakpoint 1, start_kernel \(\) at init/main.c:\d+`,
		`#0\s+start_kernel \(\) at init/main.c`,
		`rip\s+0x[0-9a-f]+\s+0x[0-9a-f]+ <start_kernel(\+\d+)?>`,
		`Breakpoint 2 at 0x[0-9a-f]+: file arch/x86/kernel/setup.c`,
		`Breakpoint 2, setup_arch \(cmdline_p=.*\) at arch/x86/kernel/setup.c:\d+`,
		`#1\s+0x[0-9a-f]+ in start_kernel \(\) at init/main.c`,
		`<linux_banner>:\s+"Linux version 6\.1`,
		`\$1 = "console=ttyS0 .*nokaslr`,
		`\[Inferior 1 \(Remote target\) killed\]`,
	)
	// gdb may place the breakpoint after the prologue: RIP must be inside
	// start_kernel, within its first instructions.
	if m := regexp.MustCompile(`rip\s+(0x[0-9a-f]+)`).FindStringSubmatch(out); m != nil {
		rip, _ := strconv.ParseUint(m[1][2:], 16, 64)
		if rip < startKernel || rip > startKernel+64 {
			t.Errorf("stopped at rip %#x, start_kernel is at %#x (System.map)", rip, startKernel)
		}
	} else {
		t.Error("no rip in gdb's output")
	}
	res := waitResult(t, done, 20*time.Second)
	if res.Outcome != OutcomeStopped || !strings.Contains(res.Detail, "gdb") {
		t.Fatalf("after gdb's kill the machine ended with %v (%s), want stopped by gdb\nconsole:\n%s\n%s", res.Outcome, res.Detail, con.String(), res.Dump)
	}
	if strings.Contains(con.String(), "Linux version") {
		// start_kernel prints the banner: the breakpoint stopped it before.
		t.Errorf("the kernel ran past the start of start_kernel:\n%s", con.String())
	}
}
