package hostspeed

import (
	"context"
	"testing"
	"time"
)

// reportTime is kept free at the end of a test binary's -timeout for the
// failure report (console, vCPU dump) of a guest stopped by its deadline.
const reportTime = 30 * time.Second

// BootSlot is what a test that boots a Linux guest calls right before
// creating the machine: it waits for a guest boot slot (AcquireBoot; held
// until t's cleanup), then returns the deadline for a boot that costs cost
// on the quiet reference host (Deadline), shortened to end reportTime
// before the test binary's own -timeout. It logs the wait, the host speed
// and the deadline. A wait that outlasts the test binary fails t.
func BootSlot(t testing.TB, cost time.Duration) time.Duration {
	t.Helper()
	ctx := context.Background()
	end, hasEnd := testDeadline(t)
	if hasEnd {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, end.Add(-reportTime))
		defer cancel()
	}
	b, err := AcquireBoot(ctx)
	if err != nil {
		t.Fatalf("hostspeed: %v", err)
	}
	t.Cleanup(b.Release)
	s := Measure()
	load, err := LoadAverage()
	if err != nil {
		load = s.Load1
	}
	d := s.deadline(cost, load, scaleFromEnv())
	if hasEnd {
		if left := time.Until(end) - reportTime; left < d {
			d = max(left, time.Second)
		}
	}
	t.Logf("hostspeed: boot slot %d of %d after %v; %s; load now %.2f: slowdown %.1fx; deadline %v for a %v reference boot",
		b.Slot, Slots(), b.Waited.Round(time.Millisecond), s, load, s.Slowdown(load), d.Round(time.Second), cost)
	return d
}

func testDeadline(t testing.TB) (time.Time, bool) {
	d, ok := t.(interface{ Deadline() (time.Time, bool) })
	if !ok {
		return time.Time{}, false
	}
	return d.Deadline()
}
