package hostspeed

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/vmmgo/vmm/kvm/kvmtest"
)

func TestParseLoadAverage(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want float64
		ok   bool
	}{
		{"2.24 1.08 0.44 3/412 19963\n", 2.24, true},
		{"17.33 8.43 3.41 20/600 1", 17.33, true},
		{"", 0, false},
		{"x 1 2", 0, false},
	} {
		got, err := parseLoadAverage(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseLoadAverage(%q) = %v, %v; want %v (ok %v)", tc.in, got, err, tc.want, tc.ok)
		}
	}
	if _, err := LoadAverage(); err != nil {
		t.Errorf("this host's load average: %v", err)
	}
}

func TestDeadline(t *testing.T) {
	ref := ReferenceIteration
	for _, tc := range []struct {
		name  string
		s     Speed
		load  float64
		cost  time.Duration
		scale float64
		want  time.Duration
	}{
		// The reference host, idle: cost × Margin.
		{"quiet reference", Speed{Best: ref, Median: ref, CPUs: 2}, 0, time.Minute, 1, 3 * time.Minute},
		// Two hogs on two cores beside the boot: (2+1)/2 = 1.5× contention.
		{"two hogs", Speed{Best: ref, Median: ref, CPUs: 2}, 2, time.Minute, 1, 270 * time.Second},
		// The loop saw more than the load average says.
		{"loop spread", Speed{Best: ref, Median: 2 * ref, CPUs: 2}, 0, time.Minute, 1, 6 * time.Minute},
		// A slow loop and a load that says worse: the load rules.
		{"load 7 beats the loop", Speed{Best: 2 * ref, Median: 3 * ref, CPUs: 2}, 7, time.Minute, 1, 12 * time.Minute},
		// Native guest kernel mode: the floor.
		{"native", Speed{Best: time.Nanosecond, Median: time.Nanosecond, CPUs: 2}, 0.5, 10 * time.Second, 1, MinDeadline},
		// Hopeless load: the ceiling.
		{"load 100", Speed{Best: ref, Median: ref, CPUs: 2}, 100, time.Minute, 1, MaxDeadline},
		{"scaled", Speed{Best: ref, Median: ref, CPUs: 2}, 0, time.Minute, 2, 6 * time.Minute},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.s.deadline(tc.cost, tc.load, tc.scale); got != tc.want {
				t.Errorf("deadline = %v (slowdown %.2f), want %v", got, tc.s.Slowdown(tc.load), tc.want)
			}
		})
	}
}

func TestDeadlineUpTo(t *testing.T) {
	ref := ReferenceIteration
	s := Speed{Best: ref, Median: ref, CPUs: 2}
	for _, tc := range []struct {
		name          string
		load          float64
		cost, ceiling time.Duration
		want          time.Duration
	}{
		// Below the ceiling it is Deadline's bound.
		{"quiet", 0, 10 * time.Minute, time.Hour, 30 * time.Minute},
		// Above MaxDeadline, within the caller's ceiling.
		{"busy", 3, 10 * time.Minute, time.Hour, time.Hour},
		{"loaded", 1, 10 * time.Minute, 2 * time.Hour, 30 * time.Minute},
		// A ceiling below the floor cannot make the bound shorter than it.
		{"tiny ceiling", 0, time.Second, time.Second, MinDeadline},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := s.deadlineUpTo(tc.cost, tc.load, 1, tc.ceiling); got != tc.want {
				t.Errorf("deadlineUpTo = %v (slowdown %.2f), want %v", got, s.Slowdown(tc.load), tc.want)
			}
		})
	}
}

func TestScaleFromEnv(t *testing.T) {
	for in, want := range map[string]float64{"": 1, "2.5": 2.5, "0": 1, "-1": 1, "fast": 1} {
		t.Setenv(ScaleEnv, in)
		if got := scaleFromEnv(); got != want {
			t.Errorf("%s=%q: scale %v, want %v", ScaleEnv, in, got, want)
		}
	}
}

// TestMeasure runs the calibration loop on this host's KVM.
func TestMeasure(t *testing.T) {
	kvmtest.Open(t)
	s := measure(kvmtest.Path())
	if s.Err != nil {
		t.Fatal(s.Err)
	}
	if s.Best <= 0 || s.Median < s.Best || s.CPUs < 1 {
		t.Fatalf("implausible measurement %+v", s)
	}
	t.Logf("%s; slowdown %.2fx at the measured load", s, s.Slowdown(s.Load1))
}

func TestMeasureWithoutKVM(t *testing.T) {
	s := measure(t.TempDir() + "/no-kvm")
	if !errors.Is(s.Err, os.ErrNotExist) || s.Best != ReferenceIteration {
		t.Fatalf("measure without KVM = %+v, want the reference speed and ErrNotExist", s)
	}
}

func TestLoopCode(t *testing.T) {
	c := loopCode(0x01020304)
	if c[2] != 4 || c[5] != 1 || c[len(c)-1] != 0xf4 {
		t.Fatalf("loop code % x", c)
	}
	// jnz must land on the dec.
	if jnz := 10; c[jnz] != 0x75 || jnz+2+int(int8(c[jnz+1])) != 8 {
		t.Fatalf("jnz target wrong in % x", c)
	}
}

func TestSlotsFromEnv(t *testing.T) {
	t.Setenv(SlotsEnv, "3")
	if Slots() != 3 {
		t.Errorf("Slots() = %d with %s=3", Slots(), SlotsEnv)
	}
	t.Setenv(SlotsEnv, "0")
	if Slots() < 1 {
		t.Errorf("Slots() = %d", Slots())
	}
}

func short(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// TestAcquireExclusive: with n slots, n holders get in, the next waits
// until one releases, and a waiter whose context ends gets a clear error.
func TestAcquireExclusive(t *testing.T) {
	dir := t.TempDir()
	a, err := acquire(context.Background(), dir, 2)
	if err != nil {
		t.Fatal(err)
	}
	b, err := acquire(context.Background(), dir, 2)
	if err != nil {
		t.Fatal(err)
	}
	if a.Slot == b.Slot {
		t.Fatalf("both holders got slot %d", a.Slot)
	}
	if _, err := acquire(short(t, 300*time.Millisecond), dir, 2); !errors.Is(err, context.DeadlineExceeded) ||
		!strings.Contains(err.Error(), "guest boot slots") {
		t.Fatalf("third acquire with both slots held: %v", err)
	}
	got := make(chan *Boot, 1)
	go func() {
		c, err := acquire(context.Background(), dir, 2)
		if err != nil {
			t.Error(err)
		}
		got <- c
	}()
	select {
	case <-got:
		t.Fatal("a waiter got a slot while both were held")
	case <-time.After(300 * time.Millisecond):
	}
	a.Release()
	a.Release() // harmless
	select {
	case c := <-got:
		if c.Slot != a.Slot || c.Waited < 300*time.Millisecond {
			t.Errorf("waiter got slot %d after %v, want slot %d after ≥300ms", c.Slot, c.Waited, a.Slot)
		}
		c.Release()
	case <-time.After(10 * time.Second):
		t.Fatal("the waiter did not get the released slot")
	}
	b.Release()
}

const helperEnv = "HOSTSPEED_TEST_HOLD_SLOT"

// TestHoldSlotHelper is the child process of TestAcquireAcrossProcesses:
// it takes the only slot of $HOSTSPEED_TEST_HOLD_SLOT, says so, and holds
// it until its stdin closes.
func TestHoldSlotHelper(t *testing.T) {
	dir := os.Getenv(helperEnv)
	if dir == "" {
		t.Skip("helper process of TestAcquireAcrossProcesses")
	}
	b, err := acquire(context.Background(), dir, 1)
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println("held")
	bufio.NewReader(os.Stdin).ReadString('\n')
	b.Release()
}

// TestAcquireAcrossProcesses: a slot held by another process is not free
// here, and it is freed when that process dies, even by SIGKILL.
func TestAcquireAcrossProcesses(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHoldSlotHelper$")
	cmd.Env = append(os.Environ(), helperEnv+"="+dir)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "held\n" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("helper said %q (%v)", line, err)
	}
	if _, err := acquire(short(t, 300*time.Millisecond), dir, 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("acquire while another process holds the slot: %v", err)
	}
	cmd.Process.Kill()
	cmd.Wait()
	b, err := acquire(short(t, 10*time.Second), dir, 1)
	if err != nil {
		t.Fatalf("slot not freed by the holder's death: %v", err)
	}
	b.Release()
}

func TestBootSlot(t *testing.T) {
	t.Setenv(SlotDirEnv, t.TempDir())
	t.Setenv(SlotsEnv, "1")
	var d time.Duration
	t.Run("holder", func(t *testing.T) {
		d = BootSlot(t, 10*time.Second)
		// Held until this subtest's cleanup.
		if _, err := AcquireBoot(short(t, 200*time.Millisecond)); err == nil {
			t.Error("the slot was free while BootSlot's test ran")
		}
	})
	if d < MinDeadline || d > MaxDeadline {
		t.Errorf("deadline %v outside [%v, %v]", d, MinDeadline, MaxDeadline)
	}
	b, err := AcquireBoot(short(t, time.Second))
	if err != nil {
		t.Fatalf("slot not released at the end of the test: %v", err)
	}
	b.Release()
}
