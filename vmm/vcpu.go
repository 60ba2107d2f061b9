package vmm

import (
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/vmmgo/vmm/kvm"
	"golang.org/x/sys/unix"
)

// vcpu is one virtual CPU and the goroutine that runs it. The goroutine is
// locked to its OS thread for its whole life (KVM wants every vCPU ioctl from
// one thread, and the kick signals that thread), and is the only one that
// issues ioctls on the vCPU while it runs; other goroutines ask it for things
// (stop, pause, state dump) by setting a request in its state word and
// kicking it (pause.go).
type vcpu struct {
	m   *Machine
	id  int
	cpu *kvm.VCPU
	run *kvm.Run
	log *logrus.Entry

	state   atomic.Uint32    // a vcpuState: phase, requests, halted (pause.go)
	dumpReq chan chan string // the replies of reqDump, answered by the vCPU thread

	counters [64]*atomic.Uint64 // per exit reason
	other    *atomic.Uint64

	// memory faults on the same GPA in a row (guards against a fault that
	// conversion does not resolve).
	lastFaultGPA uint64
	faultRepeat  int
}

func (m *Machine) newVCPU(id int) (*vcpu, error) {
	c, err := m.vm.CreateVCPU(id)
	if err != nil {
		return nil, fmt.Errorf("create vcpu %d: %w", id, err)
	}
	v := &vcpu{m: m, id: id, cpu: c, run: c.RunData(), dumpReq: make(chan chan string, 4),
		log: m.log.WithField("vcpu", id)}
	for i := range v.counters {
		v.counters[i] = m.stats.counter(kvm.ExitReason(i).String())
	}
	v.other = m.stats.counter("other")
	return v, nil
}

// requestStop asks the vCPU to leave its loop, kicking it out of KVM_RUN
// (or out of park).
func (v *vcpu) requestStop() { v.request(reqStop, true) }

// requestDump returns the vCPU's state. A running vCPU is kicked and answers
// from its own thread; a vCPU whose loop has ended is read directly.
func (v *vcpu) requestDump(wait time.Duration) string {
	if s := v.stateOf(); s.phase() != phaseRunning {
		return v.dump() // not started, parked or ended: not in KVM_RUN
	}
	reply := make(chan string, 1)
	select {
	case v.dumpReq <- reply:
	default:
		return fmt.Sprintf("vcpu %d: dump request queue full\n", v.id)
	}
	v.request(reqDump, true) // after the reply is queued: see serveRequests
	select {
	case s := <-reply:
		return s
	case <-time.After(wait):
		if !v.stateOf().alive() {
			return v.dump()
		}
		return fmt.Sprintf("vcpu %d: did not answer a state dump within %v (stuck in KVM_RUN?)\n", v.id, wait)
	}
}

// serveRequests answers the queued dump requests. The bit is cleared
// before the queue is drained, so a request queued after the drain leaves
// the bit set for the next round.
func (v *vcpu) serveRequests() {
	v.state.And(^uint32(reqDump))
	for {
		select {
		case reply := <-v.dumpReq:
			reply <- v.dump()
		default:
			return
		}
	}
}

// loop is the vCPU thread.
func (v *vcpu) loop() {
	runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
	v.cpu.BindThread()
	v.setPhase(phaseRunning)
	defer func() {
		v.setPhase(phaseExited)
		v.serveRequests()
	}()
	defer func() {
		// A bug in an exit handler must not take the whole process down
		// silently: stop the machine with the panic as its error.
		if r := recover(); r != nil {
			buf := make([]byte, 8192)
			buf = buf[:runtime.Stack(buf, false)]
			v.m.stop(Result{Outcome: OutcomeError, Detail: fmt.Sprintf("vcpu %d: internal error: %v\n%s", v.id, r, buf)})
		}
	}()
	for {
		if s := v.stateOf(); s&reqAny != 0 {
			if s&reqDump != 0 {
				v.serveRequests()
			}
			if s.mustPark() {
				v.park()
			}
			if v.stateOf()&reqStop != 0 {
				v.completeIO()
				return
			}
		}
		err := v.cpu.Run()
		if err != nil {
			if errors.Is(err, kvm.ErrInterrupted) {
				v.cpu.SetImmediateExit(false)
				// A locked read-modify-write (a full barrier) before the
				// state is read again: the request a kicker stored before
				// it set immediate_exit is seen now that we cleared it.
				v.state.Add(0)
				continue
			}
			if errors.Is(err, unix.EAGAIN) {
				// An application processor waiting for INIT/SIPI woke up
				// (KVM_MP_STATE_UNINITIALIZED): KVM asks to be called again.
				continue
			}
			var mf *kvm.MemoryFaultError
			if errors.As(err, &mf) {
				if v.handleMemoryFault(mf) {
					continue
				}
				return
			}
			v.m.stop(Result{Outcome: OutcomeError, Detail: fmt.Sprintf("vcpu %d: KVM_RUN: %v", v.id, err), Dump: v.dump()})
			return
		}
		if !v.handleExit() {
			return
		}
	}
}

// completeIO re-enters the guest once with immediate_exit set, so that KVM
// finishes an in-flight PIO/MMIO read (copies the data into the guest's
// registers) before the vCPU is left for good or its state is read.
func (v *vcpu) completeIO() {
	switch v.run.ExitReason() {
	case kvm.ExitIO, kvm.ExitMMIO:
		v.cpu.SetImmediateExit(true)
		_ = v.cpu.Run()
		v.cpu.SetImmediateExit(false)
	}
}

// handleExit dispatches one exit. It returns false when this vCPU is done.
func (v *vcpu) handleExit() bool {
	reason := v.run.ExitReason()
	if int(reason) < len(v.counters) {
		v.counters[reason].Add(1)
	} else {
		v.other.Add(1)
	}
	trace := v.m.cfg.TraceExits && v.log.Logger.IsLevelEnabled(logrus.TraceLevel)
	switch reason {
	case kvm.ExitIO:
		io, err := v.run.IO()
		if err != nil {
			v.m.stop(Result{Outcome: OutcomeError, Detail: fmt.Sprintf("vcpu %d: bad IO exit: %v", v.id, err), Dump: v.dump()})
			return false
		}
		size := int(io.Size)
		for i := 0; i < int(io.Count); i++ {
			chunk := io.Data[i*size : (i+1)*size]
			if io.Direction == kvm.IOOut {
				v.m.pio.Write(v.id, uint64(io.Port), chunk)
			} else {
				v.m.pio.Read(v.id, uint64(io.Port), chunk)
			}
		}
		if trace {
			v.log.WithFields(logrus.Fields{"exit": "io", "port": fmt.Sprintf("%#x", io.Port), "size": io.Size,
				"count": io.Count, "out": io.Direction == kvm.IOOut, "data": fmt.Sprintf("%x", io.Data)}).Trace("exit")
		}
	case kvm.ExitMMIO:
		mm, err := v.run.MMIO()
		if err != nil {
			v.m.stop(Result{Outcome: OutcomeError, Detail: fmt.Sprintf("vcpu %d: bad MMIO exit: %v", v.id, err), Dump: v.dump()})
			return false
		}
		if mm.IsWrite {
			v.m.mmio.Write(v.id, mm.PhysAddr, mm.Data)
		} else {
			v.m.mmio.Read(v.id, mm.PhysAddr, mm.Data)
		}
		if trace {
			v.log.WithFields(logrus.Fields{"exit": "mmio", "gpa": fmt.Sprintf("%#x", mm.PhysAddr), "size": len(mm.Data),
				"write": mm.IsWrite, "data": fmt.Sprintf("%x", mm.Data)}).Trace("exit")
		}
	case kvm.ExitHLT:
		// Only without an in-kernel irqchip: nothing can wake this vCPU.
		v.state.Or(uint32(flagHalted))
		if trace {
			v.log.WithField("exit", "hlt").Trace("exit")
		}
		for _, o := range v.m.vcpus {
			if o.stateOf()&flagHalted == 0 {
				return false
			}
		}
		v.m.stop(Result{Outcome: OutcomeHalted, Detail: "all vCPUs halted"})
		return false
	case kvm.ExitShutdown:
		v.m.stop(Result{Outcome: OutcomePanic, Detail: fmt.Sprintf("vcpu %d: triple fault (KVM_EXIT_SHUTDOWN)", v.id), Dump: v.dump()})
		return false
	case kvm.ExitHypercall:
		v.handleHypercall()
	case kvm.ExitInternalError:
		return v.handleInternalError()
	case kvm.ExitFailEntry:
		fe := v.run.FailEntry()
		v.m.stop(Result{Outcome: OutcomeError, Detail: fmt.Sprintf("vcpu %d: VM entry failed: hardware reason %#x on cpu %d", v.id, fe.HardwareReason, fe.CPU), Dump: v.dump()})
		return false
	case kvm.ExitSystemEvent:
		ev := v.run.SystemEvent()
		switch ev.Type {
		case kvm.SystemEventShutdown:
			v.m.PowerOff(fmt.Sprintf("vcpu %d: system event shutdown", v.id))
		case kvm.SystemEventReset:
			v.m.Reboot(fmt.Sprintf("vcpu %d: system event reset", v.id))
		default:
			v.m.stop(Result{Outcome: OutcomePanic, Detail: fmt.Sprintf("vcpu %d: system event %d (crash)", v.id, ev.Type), Dump: v.dump()})
		}
		return false
	case kvm.ExitDebug:
		return v.handleDebug()
	case kvm.ExitIRQWindowOpen, kvm.ExitIntr:
	default:
		v.m.stop(Result{Outcome: OutcomeError, Detail: fmt.Sprintf("vcpu %d: unexpected exit %v", v.id, reason), Dump: v.dump()})
		return false
	}
	return true
}

// debugger is the GDB stub's side of the vCPU loop.
type debugger interface {
	// onDebugExit handles KVM_EXIT_DEBUG on v; false ends the vCPU.
	onDebugExit(v *vcpu) bool
	// onInt3 is offered an int3 KVM could not emulate (RIP on the 0xcc);
	// true means it was the debugger's breakpoint and v stops there.
	onInt3(v *vcpu) bool
}
