package vmm

import (
	"fmt"
	"sync"
	"time"
)

// Parking: a vCPU whose hold flag is set leaves KVM_RUN at its next exit (or
// when kicked), completes any in-flight PIO/MMIO read, and waits on the
// machine's condition variable until its hold is cleared or the machine
// stops. While parked, its registers may be read and written from other
// goroutines (the GDB stub, state dumps): the vCPU thread is not in KVM_RUN.
type parking struct {
	mu   sync.Mutex
	cond *sync.Cond
}

func (p *parking) init() { p.cond = sync.NewCond(&p.mu) }

// holdLocked reports whether v must stay parked. Caller holds p.mu.
func (v *vcpu) holdLocked() bool { return v.hold && !v.stopReq.Load() }

// park blocks the vCPU thread while it is held.
func (v *vcpu) park() {
	p := &v.m.parking
	p.mu.Lock()
	if !v.holdLocked() {
		p.mu.Unlock()
		return
	}
	v.completeIO()
	v.parked = true
	p.cond.Broadcast()
	for v.holdLocked() {
		p.cond.Wait()
	}
	v.parked = false
	p.mu.Unlock()
}

// held reports (racily, for the hot path) whether a park was requested.
func (v *vcpu) held() bool { return v.holdFlag.Load() }

// Pause parks every vCPU and returns when all are parked (or have ended),
// or an error after timeout.
func (m *Machine) Pause(timeout time.Duration) error {
	return m.PauseVCPUs(nil, timeout)
}

// PauseVCPUs parks the listed vCPUs (all when ids is nil).
func (m *Machine) PauseVCPUs(ids []int, timeout time.Duration) error {
	vs := m.selectVCPUs(ids)
	p := &m.parking
	p.mu.Lock()
	for _, v := range vs {
		v.hold = true
		v.holdFlag.Store(true)
	}
	p.mu.Unlock()
	for _, v := range vs {
		if v.alive.Load() {
			_ = v.cpu.Kick()
		}
	}
	deadline := time.Now().Add(timeout)
	for {
		p.mu.Lock()
		var waiting []*vcpu // v.parked is read under p.mu only
		for _, v := range vs {
			if !v.parked && v.alive.Load() && !v.stopReq.Load() && v.started.Load() {
				waiting = append(waiting, v)
			}
		}
		p.mu.Unlock()
		if len(waiting) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pause: %d vCPU(s) did not park within %v", len(waiting), timeout)
		}
		for _, v := range waiting {
			_ = v.cpu.Kick() // a kick can be lost before BindThread; repeat
		}
		time.Sleep(time.Millisecond)
	}
}

// Resume lets every parked vCPU run again.
func (m *Machine) Resume() { m.ResumeVCPUs(nil) }

// ResumeVCPUs releases the listed vCPUs (all when ids is nil).
func (m *Machine) ResumeVCPUs(ids []int) {
	p := &m.parking
	p.mu.Lock()
	for _, v := range m.selectVCPUs(ids) {
		v.hold = false
		v.holdFlag.Store(false)
	}
	p.cond.Broadcast()
	p.mu.Unlock()
}

// Parked reports whether vCPU id is parked now.
func (m *Machine) Parked(id int) bool {
	p := &m.parking
	p.mu.Lock()
	defer p.mu.Unlock()
	return id >= 0 && id < len(m.vcpus) && m.vcpus[id].parked
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

// wakeParked releases every parked vCPU so it sees a stop request.
func (m *Machine) wakeParked() {
	p := &m.parking
	p.mu.Lock()
	p.cond.Broadcast()
	p.mu.Unlock()
}
