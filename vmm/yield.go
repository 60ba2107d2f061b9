package vmm

import (
	"runtime"
	"time"
)

// yielder makes a vCPU goroutine reschedule about every yieldPeriod of
// busy exits.
//
// Why: a vCPU goroutine spends its life in KVM_RUN and never gives up its
// P, so the Go scheduler's tick for it never advances. Once that tick is
// 10 ms old (the runtime's forcePreemptNS), sysmon treats the goroutine as
// one that runs too long: every sysmon round it tries to preempt it
// (SIGURG, which also interrupts KVM_RUN with EINTR) and takes its P while
// the thread is in KVM_RUN, and sysmon itself keeps polling every 20 µs
// instead of backing off to 10 ms. Measured with the CPL3 benchmark loop
// (50,000 exits, perf stat): 8,600-15,900 context switches and 1.30 s of
// CPU for ours against 170 and 1.03 s for the C floor. A Gosched every
// yieldPeriod advances the tick, so sysmon leaves the P alone and backs
// off. The clock is read every yieldCheck exits only (a vDSO read costs
// about 45 ns here, an exit 5-100 µs).
type yielder struct {
	n    uint32
	last time.Time
}

const (
	yieldCheck  = 16
	yieldPeriod = 5 * time.Millisecond
)

func (y *yielder) exited() {
	y.n++
	if y.n%yieldCheck != 0 {
		return
	}
	if now := time.Now(); now.Sub(y.last) >= yieldPeriod {
		y.last = now
		runtime.Gosched()
	}
}
