package gdbstub

import (
	"context"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestGDB runs the real gdb against the server with the fake target.
func TestGDB(t *testing.T) {
	gdb, err := exec.LookPath("gdb")
	if err != nil {
		t.Skip("gdb is not installed")
	}
	f := newFake(2)
	srv := New(f, Config{StartStopped: true, Log: testLog(t)})
	f.srv = srv
	f.load(0x1000, 0x90, 0x91, 0x92, 0x93)
	f.load(0x1012, opStore)
	f.setReg(0, func(r *Registers) { r.RAX = 0x42 })
	// The second vCPU idles so the detach leaves it running harmlessly.
	f.load(0x1100, opHalt)

	sock := t.TempDir() + "/gdb.sock"
	ln, err := Listen("unix:" + sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln) }()
	defer func() {
		cancel()
		<-served
		f.Stop()
	}()

	cmd := exec.CommandContext(ctx, gdb, "-batch", "-nx",
		"-ex", "set pagination off",
		"-ex", "target remote "+sock,
		"-ex", "info registers rip",
		"-ex", "x/4xb 0x1000",
		"-ex", "set $rax=5",
		"-ex", "p/x $rax",
		"-ex", "p/x $cr0",
		"-ex", "info threads",
		"-ex", "stepi",
		"-ex", "info registers rip",
		"-ex", "break *0x1010",
		"-ex", "continue",
		"-ex", "delete",
		"-ex", "set $rbx=0x2006",
		"-ex", "set $rax=0x55",
		"-ex", "watch *(unsigned char *)0x2006",
		"-ex", "continue",
		"-ex", "info registers rip",
		"-ex", "delete",
		"-ex", "detach",
	)
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
	out, err := cmd.CombinedOutput()
	t.Logf("gdb output:\n%s", out)
	if err != nil {
		t.Fatalf("gdb: %v", err)
	}
	s := string(out)
	for _, re := range []string{
		`rip\s+0x1000\s`,
		`0x1000:\s+0x90\s+0x91\s+0x92\s+0x93`,
		`\$1 = 0x5\b`,
		`\$2 = 0x0\b`,
		`Thread 2`,
		`rip\s+0x1001\s`,
		`Breakpoint 1, 0x0+1010 in`,
		`hit Hardware watchpoint 2: \*\(unsigned char \*\)0x2006\s+Old value = 144 .*\s+New value = 85 'U'`,
		`rip\s+0x1013\s`,
		`Detaching from program|detached`,
	} {
		if !regexp.MustCompile(re).MatchString(s) {
			t.Errorf("gdb output lacks %q", re)
		}
	}
	if strings.Contains(s, "Remote 'g' packet reply is too long") || strings.Contains(s, "Truncated register") {
		t.Error("gdb rejected the register layout")
	}
	if f.mem[0x1010] != 0x90 || f.dregs.Enabled() {
		t.Error("breakpoints left in the guest after detach")
	}
	if r := f.reg(0); r.RAX != 0x55 || r.RIP < 0x1013 {
		t.Errorf("after gdb: rax %#x rip %#x", r.RAX, r.RIP)
	}
	if err := srv.WaitContinue(ctx); err != nil {
		t.Errorf("detach did not resume: %v", err)
	}
	if _, _, last := f.counts(); last[0] != ActionContinue || last[1] != ActionContinue {
		t.Errorf("last resume %v, want all continue (detach)", last)
	}
}
