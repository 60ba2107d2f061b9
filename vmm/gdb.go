package vmm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/vmmgo/vmm/kvm"
	"github.com/vmmgo/vmm/memory"
	"github.com/vmmgo/vmm/vmm/gdbstub"
	"github.com/vmmgo/vmm/vmm/paging"
)

// The GDB stub wiring: gdbTarget implements gdbstub.Target over the
// machine's vCPUs (vCPU i is GDB thread i+1) with the KVM debugging
// interface (api.rst §4.58 KVM_SET_GUEST_DEBUG, §5 KVM_EXIT_DEBUG):
//
//   - stopping is parking (pause.go): a vCPU that stops by itself (debug
//     exit, planted int3) sets its own hold and parks at the top of its
//     loop, then tells the server; Stop parks the rest;
//   - hardware breakpoints, watchpoints and single steps are
//     KVM_GUESTDBG_USE_HW_BP / SINGLESTEP, reported as KVM_EXIT_DEBUG and
//     decoded by gdbstub.DebugRegs.StopEvent;
//   - software breakpoints are int3 bytes in guest memory
//     (gdbstub.SWBreakpoints) plus KVM_GUESTDBG_USE_SW_BP. On hosts whose
//     KVM emulates guest kernel mode (docs/host-kvm.md) an int3 at CPL0 is
//     not executed at all: KVM_RUN fails with an emulation failure on the
//     0xcc byte, which handleInternalError hands to onInt3.
//
// Register and memory access happen from the server goroutine while the
// vCPU is parked, that is out of KVM_RUN (pause.go).

// debugStopTimeout bounds how long Stop waits for every vCPU to park. A
// vCPU leaves KVM_RUN within microseconds of a kick, even mid-emulation.
const debugStopTimeout = 5 * time.Second

// exitReportGrace is how long the stop function returned by ServeGDB waits
// for an attached gdb to receive the exit report ("W" packet) and hang up
// before the server is torn down.
const exitReportGrace = 2 * time.Second

// ServeGDB starts the GDB remote-protocol stub on addr (tcp:HOST:PORT or
// unix:PATH) for this machine. Call it after the machine is loaded (LoadRaw,
// LoadLinux) and before Run. With wait, the vCPUs stay parked before their
// first instruction until the debugger continues; without it the guest runs
// and is stopped when gdb attaches. gdb's kill stops the machine (Outcome
// stopped); when the machine ends, an attached gdb is told the process
// exited. The returned function stops the server; call it before Close.
func (m *Machine) ServeGDB(ctx context.Context, addr string, wait bool) (func(), error) {
	if len(m.vcpus) == 0 {
		return nil, errors.New("gdb stub: nothing loaded (call ServeGDB after LoadRaw or LoadLinux)")
	}
	if m.ran.Load() {
		return nil, errors.New("gdb stub: the machine is already running (call ServeGDB before Run)")
	}
	if m.debug != nil {
		return nil, errors.New("gdb stub: already serving")
	}
	ln, err := gdbstub.Listen(addr)
	if err != nil {
		return nil, err
	}
	t := &gdbTarget{m: m, log: m.log.WithField("component", "gdb")}
	t.emulatedHost, _ = HostEmulatesKernelMode(m.cfg.KVMPath)
	if flags, err := m.sys.CheckExtension(kvm.CapSetGuestDebug2); err == nil && uint32(flags)&kvm.GuestDbgBlockIRQ != 0 {
		// Steps do not wander into interrupt handlers (what gdb users
		// expect of stepi in a kernel; QEMU does the same).
		t.blockIRQ = true
	}
	if wait {
		// Run starts the vCPU loops; each parks before its first KVM_RUN.
		if err := m.PauseVCPUs(nil, time.Second); err != nil {
			ln.Close()
			return nil, fmt.Errorf("gdb stub: hold vCPUs: %w", err)
		}
	}
	t.srv = gdbstub.New(t, gdbstub.Config{
		Log:          t.log,
		StartStopped: wait,
		OnKill:       func() { m.Stop("killed from gdb") },
	})
	m.debug = t

	sctx, cancel := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- t.srv.Serve(sctx, &trackedListener{Listener: ln, t: t}) }()
	go t.reportExit(sctx)

	var once sync.Once
	stop := func() {
		once.Do(func() {
			t.awaitExitReport()
			cancel()
			select {
			case err := <-served:
				if err != nil && !errors.Is(err, context.Canceled) {
					t.log.WithError(err).Warn("gdb: server ended")
				}
			case <-time.After(2 * debugStopTimeout):
				t.log.Warn("gdb: server did not shut down in time")
			}
			t.detach()
		})
	}
	return stop, nil
}

// gdbTarget is gdbstub.Target over a Machine.
type gdbTarget struct {
	m        *Machine
	srv      *gdbstub.Server
	log      *logrus.Entry
	sw       gdbstub.SWBreakpoints
	blockIRQ bool
	// emulatedHost: this host's KVM emulates guest kernel mode and runs
	// user mode natively, where it applies no guest debugging at all.
	emulatedHost bool

	mu sync.Mutex
	hw gdbstub.DebugRegs // installed on every vCPU at its next resume

	closed   atomic.Bool  // the server is gone: debug exits no longer stop
	conns    atomic.Int32 // client connections open
	exitSent atomic.Bool  // a "W" stop reply went out
}

var _ gdbstub.Target = (*gdbTarget)(nil)

func (t *gdbTarget) vcpu(id int) (*vcpu, error) {
	if id < 0 || id >= len(t.m.vcpus) {
		return nil, fmt.Errorf("gdb: no vCPU %d", id)
	}
	return t.m.vcpus[id], nil
}

// NumVCPUs implements gdbstub.Target.
func (t *gdbTarget) NumVCPUs() int { return len(t.m.vcpus) }

// ReadRegisters implements gdbstub.Target: KVM_GET_REGS, KVM_GET_SREGS,
// KVM_GET_FPU and MSR_KERNEL_GS_BASE. KVM_GET_FPU does not carry MXCSR
// (it reads as 0).
func (t *gdbTarget) ReadRegisters(id int) (gdbstub.Registers, error) {
	v, err := t.vcpu(id)
	if err != nil {
		return gdbstub.Registers{}, err
	}
	regs, err := v.cpu.Regs()
	if err != nil {
		return gdbstub.Registers{}, fmt.Errorf("vcpu %d: %w", id, err)
	}
	sregs, err := v.cpu.Sregs()
	if err != nil {
		return gdbstub.Registers{}, fmt.Errorf("vcpu %d: %w", id, err)
	}
	fpu, err := v.cpu.FPU()
	if err != nil {
		return gdbstub.Registers{}, fmt.Errorf("vcpu %d: %w", id, err)
	}
	var kgs uint64
	if msrs, err := v.cpu.MSRs([]uint32{msrKernelGSBase}); err == nil && len(msrs) == 1 {
		kgs = msrs[0].Data
	}
	r := gdbstub.Registers{
		RAX: regs.RAX, RBX: regs.RBX, RCX: regs.RCX, RDX: regs.RDX,
		RSI: regs.RSI, RDI: regs.RDI, RBP: regs.RBP, RSP: regs.RSP,
		R8: regs.R8, R9: regs.R9, R10: regs.R10, R11: regs.R11,
		R12: regs.R12, R13: regs.R13, R14: regs.R14, R15: regs.R15,
		RIP: regs.RIP, EFLAGS: uint32(regs.RFLAGS),
		CS: uint32(sregs.CS.Selector), SS: uint32(sregs.SS.Selector), DS: uint32(sregs.DS.Selector),
		ES: uint32(sregs.ES.Selector), FS: uint32(sregs.FS.Selector), GS: uint32(sregs.GS.Selector),
		FSBase: sregs.FS.Base, GSBase: sregs.GS.Base, KernelGSBase: kgs,
		CR0: sregs.CR0, CR2: sregs.CR2, CR3: sregs.CR3, CR4: sregs.CR4, CR8: sregs.CR8, EFER: sregs.EFER,
	}
	fpuToRegs(&fpu, &r)
	return r, nil
}

// fpuToRegs copies the FXSAVE-format state of kvm_fpu into GDB's x87/SSE
// registers (SDM Vol. 1 §10.5.1, table 10-2: in 64-bit format FIP and FDP
// are 64 bits; GDB shows their high halves as fiseg/foseg).
func fpuToRegs(f *kvm.FPU, r *gdbstub.Registers) {
	for i := range r.ST {
		copy(r.ST[i][:], f.FPR[i][:10])
	}
	r.FCTRL, r.FSTAT = uint32(f.FCW), uint32(f.FSW)
	r.FTAG = uint32(gdbstub.FullTagWord(f.FTWX, f.FSW, r.ST))
	r.FIOFF, r.FISEG = uint32(f.LastIP), uint32(f.LastIP>>32)
	r.FOOFF, r.FOSEG = uint32(f.LastDP), uint32(f.LastDP>>32)
	r.FOP = uint32(f.LastOpcode)
	r.XMM = f.XMM
	r.MXCSR = f.MXCSR
}

func regsToFPU(r *gdbstub.Registers, f *kvm.FPU) {
	for i := range r.ST {
		copy(f.FPR[i][:10], r.ST[i][:])
	}
	f.FCW, f.FSW = uint16(r.FCTRL), uint16(r.FSTAT)
	f.FTWX = gdbstub.AbridgedTagWord(uint16(r.FTAG))
	f.LastIP = uint64(r.FISEG)<<32 | uint64(r.FIOFF)
	f.LastDP = uint64(r.FOSEG)<<32 | uint64(r.FOOFF)
	f.LastOpcode = uint16(r.FOP)
	f.XMM = r.XMM
	f.MXCSR = r.MXCSR
}

// WriteRegisters implements gdbstub.Target. General registers, RIP and
// RFLAGS always go to KVM_SET_REGS; the special registers (FS/GS bases,
// CR0/2/3/4/8, EFER), the x87/SSE state and MSR_KERNEL_GS_BASE are written
// only when they changed. Segment selectors cannot be written (a selector
// means nothing without its descriptor): a changed selector is ignored, as
// the Target contract allows.
func (t *gdbTarget) WriteRegisters(id int, r gdbstub.Registers) error {
	v, err := t.vcpu(id)
	if err != nil {
		return err
	}
	old, err := t.ReadRegisters(id)
	if err != nil {
		return err
	}
	regs, err := v.cpu.Regs()
	if err != nil {
		return fmt.Errorf("vcpu %d: %w", id, err)
	}
	regs.RAX, regs.RBX, regs.RCX, regs.RDX = r.RAX, r.RBX, r.RCX, r.RDX
	regs.RSI, regs.RDI, regs.RBP, regs.RSP = r.RSI, r.RDI, r.RBP, r.RSP
	regs.R8, regs.R9, regs.R10, regs.R11 = r.R8, r.R9, r.R10, r.R11
	regs.R12, regs.R13, regs.R14, regs.R15 = r.R12, r.R13, r.R14, r.R15
	regs.RIP = r.RIP
	regs.RFLAGS = regs.RFLAGS&^0xffffffff | uint64(r.EFLAGS)
	if err := v.cpu.SetRegs(regs); err != nil {
		return fmt.Errorf("vcpu %d: %w", id, err)
	}
	if r.FSBase != old.FSBase || r.GSBase != old.GSBase || r.CR0 != old.CR0 || r.CR2 != old.CR2 ||
		r.CR3 != old.CR3 || r.CR4 != old.CR4 || r.CR8 != old.CR8 || r.EFER != old.EFER {
		sregs, err := v.cpu.Sregs()
		if err != nil {
			return fmt.Errorf("vcpu %d: %w", id, err)
		}
		sregs.FS.Base, sregs.GS.Base = r.FSBase, r.GSBase
		sregs.CR0, sregs.CR2, sregs.CR3, sregs.CR4, sregs.CR8, sregs.EFER = r.CR0, r.CR2, r.CR3, r.CR4, r.CR8, r.EFER
		if err := v.cpu.SetSregs(sregs); err != nil {
			return fmt.Errorf("vcpu %d: %w", id, err)
		}
	}
	if r.ST != old.ST || r.XMM != old.XMM || r.FCTRL != old.FCTRL || r.FSTAT != old.FSTAT || r.FTAG != old.FTAG ||
		r.FISEG != old.FISEG || r.FIOFF != old.FIOFF || r.FOSEG != old.FOSEG || r.FOOFF != old.FOOFF ||
		r.FOP != old.FOP || r.MXCSR != old.MXCSR {
		fpu, err := v.cpu.FPU()
		if err != nil {
			return fmt.Errorf("vcpu %d: %w", id, err)
		}
		regsToFPU(&r, &fpu)
		if err := v.cpu.SetFPU(fpu); err != nil {
			return fmt.Errorf("vcpu %d: %w", id, err)
		}
	}
	if r.KernelGSBase != old.KernelGSBase {
		if err := v.cpu.SetMSRs([]kvm.MSREntry{{Index: msrKernelGSBase, Data: r.KernelGSBase}}); err != nil {
			return fmt.Errorf("vcpu %d: %w", id, err)
		}
	}
	return nil
}

// pagingCPU is the paging state of vCPU id, for software page walks.
func (t *gdbTarget) pagingCPU(id int) (paging.CPU, error) {
	v, err := t.vcpu(id)
	if err != nil {
		return paging.CPU{}, err
	}
	s, err := v.cpu.Sregs()
	if err != nil {
		return paging.CPU{}, fmt.Errorf("vcpu %d: %w", id, err)
	}
	return paging.CPU{CR0: s.CR0, CR3: s.CR3, CR4: s.CR4, EFER: s.EFER}, nil
}

func (t *gdbTarget) readGPA(gpa uint64, p []byte) error  { return t.m.mem.Read(memory.GPA(gpa), p) }
func (t *gdbTarget) writeGPA(gpa uint64, p []byte) error { return t.m.mem.Write(memory.GPA(gpa), p) }

// rawRead and rawWrite access guest-virtual memory as vCPU id sees it,
// without hiding planted breakpoints.
func (t *gdbTarget) rawRead(id int) gdbstub.MemFunc {
	return func(gva uint64, p []byte) error {
		cpu, err := t.pagingCPU(id)
		if err != nil {
			return err
		}
		return paging.ReadVirtual(t.readGPA, cpu, gva, p)
	}
}

func (t *gdbTarget) rawWrite(id int) gdbstub.MemFunc {
	return func(gva uint64, p []byte) error {
		cpu, err := t.pagingCPU(id)
		if err != nil {
			return err
		}
		return paging.WriteVirtual(t.readGPA, t.writeGPA, cpu, gva, p)
	}
}

// ReadMemory implements gdbstub.Target: a software walk of the vCPU's page
// tables (package paging), then guest RAM; planted int3 bytes read as the
// original instructions.
func (t *gdbTarget) ReadMemory(id int, gva uint64, p []byte) error {
	if err := t.rawRead(id)(gva, p); err != nil {
		return err
	}
	t.sw.Shadow(gva, p)
	return nil
}

// WriteMemory implements gdbstub.Target, ignoring page protections; a write
// over a planted breakpoint updates the saved byte and keeps the int3.
func (t *gdbTarget) WriteMemory(id int, gva uint64, p []byte) error {
	return t.rawWrite(id)(gva, t.sw.Patch(gva, p))
}

// InsertSWBreakpoint implements gdbstub.Target.
func (t *gdbTarget) InsertSWBreakpoint(id int, gva uint64) error {
	return t.sw.Insert(gva, t.rawRead(id), t.rawWrite(id))
}

// RemoveSWBreakpoint implements gdbstub.Target.
func (t *gdbTarget) RemoveSWBreakpoint(id int, gva uint64) error {
	return t.sw.Remove(gva, t.rawWrite(id))
}

// SetHWBreakpoints implements gdbstub.Target: the image is installed on
// every vCPU when it is next resumed (Resume).
func (t *gdbTarget) SetHWBreakpoints(d gdbstub.DebugRegs) error {
	t.mu.Lock()
	t.hw = d
	t.mu.Unlock()
	return nil
}

func (t *gdbTarget) hwRegs() gdbstub.DebugRegs {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.hw
}

// guestDebug is the KVM_SET_GUEST_DEBUG argument for a vCPU about to run
// (api.rst §4.58): breakpoints in use, and single-stepping when step. With
// nothing in use debugging is switched off, so the guest runs as without a
// debugger (its own #DB/#BP go to its own handlers).
func (t *gdbTarget) guestDebug(step bool) kvm.GuestDebug {
	hw := t.hwRegs()
	var g kvm.GuestDebug
	if hw.Enabled() {
		g.Control |= kvm.GuestDbgEnable | kvm.GuestDbgUseHWBP
		copy(g.DebugReg[:4], hw.DR[:])
		g.DebugReg[7] = hw.DR7
	}
	if len(t.sw.Addrs()) > 0 {
		g.Control |= kvm.GuestDbgEnable | kvm.GuestDbgUseSWBP
	}
	if step {
		g.Control |= kvm.GuestDbgEnable | kvm.GuestDbgSingleStep
		if t.blockIRQ {
			g.Control |= kvm.GuestDbgBlockIRQ
		}
	}
	return g
}

// Resume implements gdbstub.Target: install the debug state on each vCPU
// to run (they are parked, so their ioctls may be issued from here), then
// release them.
func (t *gdbTarget) Resume(actions []gdbstub.Action) error {
	if len(actions) != len(t.m.vcpus) {
		return fmt.Errorf("gdb: %d actions for %d vCPUs", len(actions), len(t.m.vcpus))
	}
	if t.emulatedHost {
		for i, a := range actions {
			if a == gdbstub.ActionStep {
				if err := t.checkStep(i); err != nil {
					return err
				}
			}
		}
	}
	var ids []int
	for i, a := range actions {
		if a == gdbstub.ActionNone {
			continue
		}
		if err := t.m.vcpus[i].cpu.SetGuestDebug(t.guestDebug(a == gdbstub.ActionStep)); err != nil {
			return fmt.Errorf("vcpu %d: %w", i, err)
		}
		ids = append(ids, i)
	}
	t.m.ResumeVCPUs(ids)
	return nil
}

// errUserStep refuses a single step in guest user mode on hosts that
// emulate kernel mode: they run CPL3 natively and implement
// KVM_GUESTDBG_SINGLESTEP by setting RFLAGS.TF without intercepting the
// resulting #DB, so the guest would take a debug exception it never asked
// for (measured: a tiny guest without an IDT triple-faults; Linux would
// send SIGTRAP to the process). Hardware and software breakpoints at CPL3
// are likewise not seen there (docs/debugging.md).
var errUserStep = errors.New("single-stepping guest user mode (CPL3) is not possible on this host: its KVM runs user mode natively and does not intercept the debug trap")

// checkStep refuses a step of vCPU id when it is at CPL3 (see errUserStep).
func (t *gdbTarget) checkStep(id int) error {
	s, err := t.m.vcpus[id].cpu.Sregs()
	if err != nil {
		return fmt.Errorf("vcpu %d: %w", id, err)
	}
	// CPL is SS.DPL in protected mode (SDM Vol. 3A §5.5); 0 in real mode.
	if s.CR0&1 != 0 && s.SS.DPL == 3 {
		t.log.WithField("vcpu", id).Warn("gdb: " + errUserStep.Error())
		return fmt.Errorf("vcpu %d: %w", id, errUserStep)
	}
	return nil
}

// Stop implements gdbstub.Target: park every vCPU.
func (t *gdbTarget) Stop() error {
	return t.m.Pause(debugStopTimeout)
}

// holdSelf asks vCPU v, from its own thread, to park at the top of its
// loop (pause.go) without waiting for it: the thread parks as soon as the
// exit handler returns.
func (v *vcpu) holdSelf() { v.request(reqHold, false) }

// stopped parks v and reports ev to the server. It runs on v's thread.
func (t *gdbTarget) stopped(v *vcpu, ev gdbstub.StopEvent) {
	v.holdSelf()
	t.srv.Notify(ev)
}

// onDebugExit handles KVM_EXIT_DEBUG on v's thread (api.rst §5,
// kvm_debug_exit_arch): #DB (exception 1) for a hardware breakpoint,
// watchpoint or completed step, #BP (exception 3) for an int3 when
// KVM_GUESTDBG_USE_SW_BP is on. An int3 the debugger did not plant is the
// guest's own: it is re-injected, as QEMU does, so the guest's handler
// runs (KVM supplies the instruction length of the soft exception).
func (t *gdbTarget) onDebugExit(v *vcpu) bool {
	d := v.run.Debug()
	if t.closed.Load() {
		return true
	}
	if d.Exception == 3 && !t.sw.Has(d.PC) {
		if err := reinjectBP(v); err != nil {
			v.m.stop(Result{Outcome: OutcomeError, Detail: fmt.Sprintf("vcpu %d: cannot re-inject the guest's #BP at %#x: %v", v.id, d.PC, err), Dump: v.dump()})
			return false
		}
		return true
	}
	t.stopped(v, t.hwRegs().StopEvent(v.id, d.Exception, d.DR6))
	return true
}

func reinjectBP(v *vcpu) error {
	ev, err := v.cpu.Events()
	if err != nil {
		return err
	}
	if ev.Exception.Injected != 0 || ev.Exception.Pending != 0 {
		return errors.New("an exception is already pending")
	}
	ev.Exception.Injected, ev.Exception.Nr, ev.Exception.HasErrorCode = 1, 3, 0
	ev.Flags = 0
	return v.cpu.SetEvents(ev)
}

// onInt3 handles an int3 that KVM could not emulate (an emulation failure
// with RIP on the 0xcc byte, docs/host-kvm.md). If the debugger planted it, the
// vCPU stops with RIP on the breakpoint (GDB's swbreak semantics) and true
// is returned; otherwise the caller injects #BP for the guest.
func (t *gdbTarget) onInt3(v *vcpu) bool {
	if t.closed.Load() {
		return false
	}
	regs, err := v.cpu.Regs()
	if err != nil {
		return false
	}
	sregs, err := v.cpu.Sregs()
	if err != nil {
		return false
	}
	if !t.sw.Has(linearRIP(regs, sregs)) {
		return false
	}
	t.stopped(v, gdbstub.StopEvent{VCPU: v.id, Reason: gdbstub.ReasonSWBreak})
	return true
}

// linearRIP is CS.base + RIP outside 64-bit mode, RIP in it (SDM Vol. 3A
// §3.4.4: segment bases other than FS/GS are ignored in 64-bit mode).
func linearRIP(regs kvm.Regs, sregs kvm.Sregs) uint64 {
	if sregs.CS.L != 0 && sregs.EFER&(1<<10) != 0 { // EFER.LMA
		return regs.RIP
	}
	return (sregs.CS.Base + regs.RIP) & 0xffff_ffff
}

// reportExit tells the server when the machine ends (power-off, panic,
// watchdog, kill), so an attached gdb sees the process exit.
func (t *gdbTarget) reportExit(ctx context.Context) {
	select {
	case <-t.m.done:
	case <-ctx.Done():
		return
	}
	if t.conns.Load() == 0 {
		// Nobody to tell; the server would only log that the guest
		// stopped with no debugger attached.
		return
	}
	t.srv.Notify(gdbstub.StopEvent{Reason: gdbstub.ReasonExited, ExitCode: exitStatus(t.m.result)})
}

// exitStatus is the exit status gdb is shown: a tiny guest's exit-port
// code, otherwise the VMM's own exit code for the outcome.
func exitStatus(r Result) uint8 {
	if r.Outcome == OutcomePowerOff && r.Code != 0 {
		return uint8(r.Code)
	}
	return uint8(r.Outcome.ExitCode())
}

// awaitExitReport gives an attached gdb a moment to receive the exit report
// and hang up (gdb closes a plain `target remote` connection when the
// process exits) before the server goes away with the machine.
func (t *gdbTarget) awaitExitReport() {
	select {
	case <-t.m.done:
	default:
		return
	}
	start := time.Now()
	for t.conns.Load() > 0 && time.Since(start) < exitReportGrace {
		if !t.exitSent.Load() && time.Since(start) > 300*time.Millisecond {
			return // gdb has the guest stopped: no report is coming
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// detach runs once the server is gone: debug exits stop nothing any more
// and, if the machine is still running, its vCPUs run on without debugging.
func (t *gdbTarget) detach() {
	t.closed.Store(true)
	select {
	case <-t.m.done:
		return
	default:
	}
	if err := t.m.Pause(debugStopTimeout); err != nil {
		t.log.WithError(err).Warn("gdb: stop vCPUs to detach")
	}
	for _, v := range t.m.vcpus {
		if err := v.cpu.SetGuestDebug(kvm.GuestDebug{}); err != nil {
			t.log.WithError(err).WithField("vcpu", v.id).Warn("gdb: clear guest debug")
		}
	}
	t.m.Resume()
}

// trackedListener counts the server's client connections and notices exit
// reports, so that reportExit and the stop function know whether a gdb is
// there to be told.
type trackedListener struct {
	net.Listener
	t *gdbTarget
}

func (l *trackedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.t.conns.Add(1)
	return &trackedConn{Conn: c, t: l.t}, nil
}

type trackedConn struct {
	net.Conn
	t    *gdbTarget
	once sync.Once
}

func (c *trackedConn) Write(p []byte) (int, error) {
	if bytes.HasPrefix(p, []byte("$W")) {
		c.t.exitSent.Store(true)
	}
	return c.Conn.Write(p)
}

func (c *trackedConn) Close() error {
	c.once.Do(func() { c.t.conns.Add(-1) })
	return c.Conn.Close()
}
