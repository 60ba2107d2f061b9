package hostspeed

import (
	"context"
	"testing"
	"time"
)

// LinuxBoot is the cost of booting the project's guest kernel
// (scripts/guest-kernel, PVH vmlinux, 2 vCPUs, 256 MiB) to `Run /init` on
// the quiet reference host. Guest-boot tests pass it, plus what they do
// beyond the boot, to BootSlot or Deadline. A quiet development host
// booted the periodic-tick HZ=250 kernel in 43-44 s and an earlier, smaller
// configuration in 16 s (docs/benchmarks.md, "Boot time under emulation");
// the tickless HZ=100 kernel does less work per second of boot than the
// first, so 30 s, which Margin turns into a 90 s bound on such a host, is
// on the safe side of both.
const LinuxBoot = 30 * time.Second

// reportTime is kept free at the end of a test binary's -timeout for the
// failure report (console, vCPU dump) of a guest stopped by its deadline.
const reportTime = 30 * time.Second

// HoldBootSlot waits for a guest boot slot (AcquireBoot) and holds it until
// t's cleanup; a wait that would outlast the test binary's -timeout fails
// t. It logs the wait and the host's speed. Call it right before creating
// a machine that boots Linux, and compute the deadline afterwards.
func HoldBootSlot(t testing.TB) {
	t.Helper()
	ctx := context.Background()
	if end, ok := testDeadline(t); ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, end.Add(-reportTime))
		defer cancel()
	}
	b, err := AcquireBoot(ctx)
	if err != nil {
		t.Fatalf("hostspeed: %v", err)
	}
	t.Cleanup(b.Release)
	t.Logf("hostspeed: guest boot slot %d of %d after %v; %s", b.Slot, Slots(), b.Waited.Round(time.Millisecond), Measure())
}

// BootSlot is HoldBootSlot followed by the deadline for a boot that costs
// cost on the quiet reference host (Deadline), shortened to end reportTime
// before the test binary's -timeout, and logged.
func BootSlot(t testing.TB, cost time.Duration) time.Duration {
	t.Helper()
	HoldBootSlot(t)
	s := Measure()
	load, err := LoadAverage()
	if err != nil {
		load = s.Load1
	}
	d := s.deadline(cost, load, scaleFromEnv())
	if end, ok := testDeadline(t); ok {
		if left := time.Until(end) - reportTime; left < d {
			d = max(left, time.Second)
		}
	}
	t.Logf("hostspeed: load now %.2f, slowdown %.1fx: deadline %v for a boot of %v on the reference host",
		load, s.Slowdown(load), d.Round(time.Second), cost)
	return d
}

func testDeadline(t testing.TB) (time.Time, bool) {
	d, ok := t.(interface{ Deadline() (time.Time, bool) })
	if !ok {
		return time.Time{}, false
	}
	return d.Deadline()
}
