package vmm

import (
	"fmt"
	"strings"
	"sync"
	"time"
)

// vCPU control state. Everything another goroutine may ask of a vCPU, and
// everything the vCPU thread answers, is one atomic word per vCPU
// (vcpu.state), read in one place (stateOf):
//
//   - the phase, written only by the vCPU thread: created (Run not yet
//     called), running (in or around KVM_RUN), parked (waiting in park,
//     out of KVM_RUN, so its registers may be read and written from other
//     goroutines: the GDB stub, state dumps), exited (the loop returned);
//   - requests, set by any goroutine and acted on by the vCPU thread at the
//     top of its loop: stop (leave the loop for good), hold (park until the
//     hold is cleared or a stop comes), dump (answer dumpReq);
//   - halted, the vCPU's answer to a HLT exit without an in-kernel irqchip.
//
// The vCPU thread's hot path is one atomic load of the word per exit.
// Changes that someone may wait for (phases, stop and hold) are made under
// vcpuControl.mu, which then closes and replaces vcpuControl.changed: a
// waiter checks its condition and takes the channel under the same lock,
// so it is woken by the next change and never polls. A request that needs
// the vCPU thread's attention kicks it out of KVM_RUN (kvm.VCPU.Kick sets
// immediate_exit before it signals, so a kick that lands outside KVM_RUN
// is not lost: the next KVM_RUN returns at once).
type vcpuState uint32

const (
	phaseCreated vcpuState = iota
	phaseRunning
	phaseParked
	phaseExited
	phaseMask vcpuState = 3

	reqStop    vcpuState = 1 << 2
	reqHold    vcpuState = 1 << 3
	reqDump    vcpuState = 1 << 4
	flagHalted vcpuState = 1 << 5

	// reqAny is what the loop looks at on every exit.
	reqAny = reqStop | reqHold | reqDump
)

func (s vcpuState) phase() vcpuState { return s & phaseMask }

// alive reports whether the vCPU loop is running (in or out of park).
func (s vcpuState) alive() bool { return s.phase() == phaseRunning || s.phase() == phaseParked }

// mustPark reports whether a vCPU in state s has to stay parked.
func (s vcpuState) mustPark() bool { return s&reqHold != 0 && s&reqStop == 0 }

func (s vcpuState) String() string {
	var b strings.Builder
	b.WriteString([...]string{"created", "running", "parked", "exited"}[s.phase()])
	for _, f := range []struct {
		bit  vcpuState
		name string
	}{{reqStop, "stop"}, {reqHold, "hold"}, {reqDump, "dump"}, {flagHalted, "halted"}} {
		if s&f.bit != 0 {
			b.WriteString("+" + f.name)
		}
	}
	return b.String()
}

// vcpuControl is the machine's side of the vCPU states: the lock that
// orders changes others wait for, and the channel that announces them.
type vcpuControl struct {
	mu      sync.Mutex
	changed chan struct{} // closed (and replaced) on every change under mu
}

func (c *vcpuControl) init() { c.changed = make(chan struct{}) }

// broadcastLocked wakes every waiter. Caller holds c.mu.
func (c *vcpuControl) broadcastLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// waitUntil blocks until done (evaluated under c.mu) holds, or until the
// deadline passes (zero: no deadline). It reports whether done held.
func (c *vcpuControl) waitUntil(deadline time.Time, done func() bool) bool {
	var timeout <-chan time.Time
	if !deadline.IsZero() {
		t := time.NewTimer(time.Until(deadline))
		defer t.Stop()
		timeout = t.C
	}
	for {
		c.mu.Lock()
		ok, ch := done(), c.changed
		c.mu.Unlock()
		if ok {
			return true
		}
		select {
		case <-ch:
		case <-timeout:
			c.mu.Lock()
			defer c.mu.Unlock()
			return done()
		}
	}
}

// stateOf is vCPU v's control state now.
func (v *vcpu) stateOf() vcpuState { return vcpuState(v.state.Load()) }

// change sets and clears bits of v's state under the control lock and
// wakes the waiters; it returns the new state.
func (v *vcpu) change(set, clear vcpuState) vcpuState {
	c := &v.m.ctl
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		old := v.stateOf()
		s := old&^clear | set
		if v.state.CompareAndSwap(uint32(old), uint32(s)) {
			c.broadcastLocked()
			return s
		}
	}
}

// setPhase moves v to phase p (vCPU thread only) and wakes the waiters.
func (v *vcpu) setPhase(p vcpuState) { v.change(p, phaseMask&^p) }

// request sets request bits and kicks a live vCPU so that it sees them
// (unless it is the caller's own thread, which sees them at the top of
// its loop).
func (v *vcpu) request(bits vcpuState, kick bool) {
	if s := v.change(bits, 0); kick && s.phase() == phaseRunning {
		_ = v.cpu.Kick()
	}
}

// park blocks the vCPU thread while it is held. A pending PIO/MMIO read is
// completed first, so that the registers others read while it is parked
// are the ones the guest will see.
func (v *vcpu) park() {
	if !v.stateOf().mustPark() {
		return
	}
	v.completeIO()
	v.setPhase(phaseParked)
	for {
		v.m.ctl.waitUntil(time.Time{}, func() bool { s := v.stateOf(); return !s.mustPark() || s&reqDump != 0 })
		if v.stateOf()&reqDump != 0 {
			v.serveRequests() // queued while it was still running
			continue
		}
		break
	}
	v.setPhase(phaseRunning)
}

// Pause parks every vCPU and returns when all are parked (or have ended),
// or an error after timeout.
func (m *Machine) Pause(timeout time.Duration) error {
	return m.PauseVCPUs(nil, timeout)
}

// PauseVCPUs parks the listed vCPUs (all when ids is nil). A vCPU that has
// not started yet parks as soon as it does; one that is stopping or has
// ended does not count.
func (m *Machine) PauseVCPUs(ids []int, timeout time.Duration) error {
	vs := m.selectVCPUs(ids)
	for _, v := range vs {
		v.request(reqHold, true)
	}
	var waiting int
	ok := m.ctl.waitUntil(time.Now().Add(timeout), func() bool {
		waiting = 0
		for _, v := range vs {
			if s := v.stateOf(); s.phase() == phaseRunning && s&reqStop == 0 {
				waiting++
			}
		}
		return waiting == 0
	})
	if !ok {
		return fmt.Errorf("pause: %d vCPU(s) did not park within %v", waiting, timeout)
	}
	return nil
}

// Resume lets every parked vCPU run again.
func (m *Machine) Resume() { m.ResumeVCPUs(nil) }

// ResumeVCPUs releases the listed vCPUs (all when ids is nil).
func (m *Machine) ResumeVCPUs(ids []int) {
	for _, v := range m.selectVCPUs(ids) {
		v.change(0, reqHold)
	}
}

// Parked reports whether vCPU id is parked now.
func (m *Machine) Parked(id int) bool {
	return id >= 0 && id < len(m.vcpus) && m.vcpus[id].stateOf().phase() == phaseParked
}

// RunState is what the vCPUs are doing, for status reports: "created"
// before Run, "paused" when every live vCPU is parked, "running"
// otherwise, and the outcome once the machine has stopped.
func (m *Machine) RunState() string {
	select {
	case <-m.done:
		return m.result.Outcome.String()
	default:
	}
	live, parked := 0, 0
	for _, v := range m.vcpus {
		switch v.stateOf().phase() {
		case phaseRunning:
			live++
		case phaseParked:
			live++
			parked++
		}
	}
	switch {
	case live == 0 && m.started.Load() == 0:
		return StateCreated
	case live > 0 && parked == live:
		return StatePaused
	}
	return StateRunning
}

func (m *Machine) selectVCPUs(ids []int) []*vcpu {
	if ids == nil {
		return m.vcpus
	}
	var out []*vcpu
	for _, id := range ids {
		if id >= 0 && id < len(m.vcpus) {
			out = append(out, m.vcpus[id])
		}
	}
	return out
}
