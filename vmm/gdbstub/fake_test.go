package gdbstub

import (
	"fmt"
	"slices"
	"sync"
)

// Opcodes of the fake target's toy instruction set. Every other byte is a
// one-byte no-op.
const (
	opStore = 0x01 // mem[rbx] = al; then check write/access watchpoints
	opLoad  = 0x02 // al = mem[rbx]; then check read/access watchpoints
	opExit  = 0xee // the guest powers off with exit code al
	opHalt  = 0xf4 // wait until stopped
	fakeMem = 64 << 10
)

// fakeTarget is an in-memory Target: a few vCPUs executing the toy
// instruction set over 64 KiB of memory where gva == offset. It behaves like
// the KVM implementation should: vCPUs run in goroutines, stop by
// themselves and Notify, and Stop parks them all.
type fakeTarget struct {
	srv *Server

	mu          sync.Mutex
	regs        []Registers
	mem         []byte
	dregs       DebugRegs
	rf          []bool // x86 RFLAGS.RF: skip the execute breakpoint once
	stopCh      chan struct{}
	resumes     int
	stops       int
	lastActions []Action
	inert       bool // Resume runs nothing (fuzzing)

	sw SWBreakpoints
	wg sync.WaitGroup
}

func newFake(n int) *fakeTarget {
	f := &fakeTarget{regs: make([]Registers, n), mem: make([]byte, fakeMem), rf: make([]bool, n)}
	for i := range f.regs {
		f.regs[i].RIP = 0x1000 + 0x100*uint64(i)
		f.regs[i].CS = 0x10
		f.regs[i].EFLAGS = 0x2
	}
	for i := range f.mem {
		f.mem[i] = 0x90 // nop
	}
	return f
}

func (f *fakeTarget) NumVCPUs() int { return len(f.regs) }

func (f *fakeTarget) ReadRegisters(v int) (Registers, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.regs[v], nil
}

func (f *fakeTarget) WriteRegisters(v int, r Registers) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.regs[v] = r
	return nil
}

func (f *fakeTarget) check(gva uint64, n int) error {
	if gva >= fakeMem || uint64(n) > fakeMem-gva {
		return fmt.Errorf("gva %#x+%d unmapped", gva, n)
	}
	return nil
}

func (f *fakeTarget) rawRead(gva uint64, p []byte) error {
	if err := f.check(gva, len(p)); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	copy(p, f.mem[gva:])
	return nil
}

func (f *fakeTarget) rawWrite(gva uint64, p []byte) error {
	if err := f.check(gva, len(p)); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	copy(f.mem[gva:], p)
	return nil
}

func (f *fakeTarget) ReadMemory(_ int, gva uint64, p []byte) error {
	if err := f.rawRead(gva, p); err != nil {
		return err
	}
	f.sw.Shadow(gva, p)
	return nil
}

func (f *fakeTarget) WriteMemory(_ int, gva uint64, p []byte) error {
	if err := f.check(gva, len(p)); err != nil {
		return err
	}
	return f.rawWrite(gva, f.sw.Patch(gva, p))
}

func (f *fakeTarget) InsertSWBreakpoint(_ int, gva uint64) error {
	return f.sw.Insert(gva, f.rawRead, f.rawWrite)
}

func (f *fakeTarget) RemoveSWBreakpoint(_ int, gva uint64) error {
	return f.sw.Remove(gva, f.rawWrite)
}

func (f *fakeTarget) SetHWBreakpoints(d DebugRegs) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.dregs = d
	return nil
}

func (f *fakeTarget) Resume(actions []Action) error {
	if len(actions) != len(f.regs) {
		return fmt.Errorf("%d actions for %d vCPUs", len(actions), len(f.regs))
	}
	f.mu.Lock()
	f.resumes++
	f.lastActions = slices.Clone(actions)
	stop := make(chan struct{})
	f.stopCh = stop
	inert := f.inert
	f.mu.Unlock()
	if inert {
		return nil
	}
	for v, a := range actions {
		if a != ActionNone {
			f.wg.Add(1)
			go f.run(v, a, stop)
		}
	}
	return nil
}

func (f *fakeTarget) Stop() error {
	f.mu.Lock()
	if f.stopCh != nil {
		close(f.stopCh)
		f.stopCh = nil
	}
	f.stops++
	f.mu.Unlock()
	f.wg.Wait()
	return nil
}

func (f *fakeTarget) counts() (resumes, stops int, last []Action) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.resumes, f.stops, slices.Clone(f.lastActions)
}

func (f *fakeTarget) reg(v int) Registers {
	r, _ := f.ReadRegisters(v)
	return r
}

func (f *fakeTarget) setReg(v int, fn func(r *Registers)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(&f.regs[v])
}

func (f *fakeTarget) load(gva uint64, code ...byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	copy(f.mem[gva:], code)
}

// run executes vCPU v until it stops by itself or Stop is called.
func (f *fakeTarget) run(v int, a Action, stop <-chan struct{}) {
	defer f.wg.Done()
	for {
		select {
		case <-stop:
			return
		default:
		}
		ev, halted := f.exec(v)
		switch {
		case ev != nil:
			f.srv.Notify(*ev)
			return
		case a == ActionStep:
			f.srv.Notify(StopEvent{VCPU: v, Reason: ReasonStep})
			return
		case halted:
			<-stop
			return
		}
	}
}

// exec executes one instruction of vCPU v.
func (f *fakeTarget) exec(v int) (*StopEvent, bool) {
	f.mu.Lock()
	r := &f.regs[v]
	rip := r.RIP
	if !f.rf[v] {
		for i, s := range f.dregs.Slots {
			if s.Enabled && s.Kind == HWExec && s.Addr == rip {
				f.rf[v] = true
				ev := f.dregs.StopEvent(v, 1, 1<<i)
				f.mu.Unlock()
				return &ev, false
			}
		}
	}
	f.rf[v] = false
	if rip >= fakeMem {
		f.mu.Unlock()
		return nil, true
	}
	op := f.mem[rip]
	if op == Int3 {
		f.mu.Unlock()
		if f.sw.Has(rip) {
			return &StopEvent{VCPU: v, Reason: ReasonSWBreak}, false
		}
		f.mu.Lock()
	}
	defer f.mu.Unlock()
	switch op {
	case opHalt:
		return nil, true
	case opExit:
		return &StopEvent{VCPU: v, Reason: ReasonExited, ExitCode: uint8(r.RAX)}, false
	case opStore, opLoad:
		addr := r.RBX
		if addr >= fakeMem {
			return &StopEvent{VCPU: v, Reason: ReasonSignal, Signal: SIGSEGV}, false
		}
		if op == opStore {
			f.mem[addr] = byte(r.RAX)
		} else {
			r.RAX = uint64(f.mem[addr])
		}
		r.RIP++
		for i, s := range f.dregs.Slots {
			if !s.Enabled || s.Kind == HWExec || addr < s.Addr || addr >= s.Addr+s.Len {
				continue
			}
			if s.Kind == HWWrite && op != opStore {
				continue
			}
			ev := f.dregs.StopEvent(v, 1, 1<<i)
			return &ev, false
		}
		return nil, false
	}
	r.RIP++
	return nil, false
}
