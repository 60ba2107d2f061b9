package gdbstub

import "fmt"

// Target is the machine being debugged, implemented by the VMM over its
// vCPUs. vCPUs are numbered 0..NumVCPUs()-1; GDB sees them as threads
// 1..N. The server calls Target methods from one goroutine at a time, and
// only while every vCPU is stopped, except Stop (which stops running ones)
// and Resume (which starts them).
//
// Stop events flow the other way: when a vCPU stops by itself (breakpoint,
// single step, watchpoint, guest exit, a fatal condition the VMM wants to
// show the debugger), the VMM parks that vCPU (does not re-enter KVM_RUN)
// and calls (*Server).Notify from any goroutine. Notify never blocks.
//
// With KVM the natural implementation is:
//   - registers: KVM_GET/SET_REGS, KVM_GET/SET_SREGS (segments, CRs, EFER,
//     CR8), KVM_GET/SET_FPU (x87, XMM, MXCSR) and MSR_KERNEL_GS_BASE;
//   - memory: translate with package paging (CR0/CR3/CR4/EFER from SREGS),
//     then access guest RAM;
//   - software breakpoints: an SWBreakpoints (0xCC in guest memory) plus
//     KVM_GUESTDBG_USE_SW_BP, so that #BP exits with KVM_EXIT_DEBUG,
//     exception 3 (on hosts whose emulator cannot execute int3 at CPL0, an
//     emulation failure at an address SWBreakpoints.Has is the same event);
//   - hardware breakpoints, watchpoints and stepping: KVM_SET_GUEST_DEBUG
//     with KVM_GUESTDBG_ENABLE | USE_HW_BP (debugreg[0..3] = DebugRegs.DR,
//     debugreg[7] = DebugRegs.DR7) and | SINGLESTEP for stepping vCPUs;
//     KVM_EXIT_DEBUG is turned into a StopEvent by DebugRegs.StopEvent;
//   - Stop: request a pause, kick every vCPU (immediate_exit + signal) and
//     wait until all are parked.
type Target interface {
	// NumVCPUs returns the number of vCPUs; it must not change.
	NumVCPUs() int
	// ReadRegisters returns the registers of a stopped vCPU.
	ReadRegisters(vcpu int) (Registers, error)
	// WriteRegisters sets all registers of a stopped vCPU. Implementations
	// may ignore registers they cannot set (e.g. a segment selector
	// without its descriptor) but should say so in their documentation.
	WriteRegisters(vcpu int, r Registers) error
	// ReadMemory reads guest memory at a virtual address as vcpu sees it
	// (its current page tables). It fails if any byte is unmapped.
	ReadMemory(vcpu int, gva uint64, p []byte) error
	// WriteMemory writes guest memory at a virtual address as vcpu sees it,
	// ignoring page protections.
	WriteMemory(vcpu int, gva uint64, p []byte) error
	// InsertSWBreakpoint plants a software breakpoint (int3) at gva in
	// vcpu's address space; RemoveSWBreakpoint restores the original byte.
	// When a vCPU executes it, Notify a ReasonSWBreak event with RIP left
	// on the breakpoint address (GDB's swbreak semantics).
	InsertSWBreakpoint(vcpu int, gva uint64) error
	RemoveSWBreakpoint(vcpu int, gva uint64) error
	// SetHWBreakpoints installs the debug registers on every vCPU (they
	// take effect from the next Resume). A zero DebugRegs removes them all.
	SetHWBreakpoints(d DebugRegs) error
	// Resume starts vCPUs: actions[i] says what vCPU i does. len(actions)
	// == NumVCPUs(). ActionNone leaves a vCPU stopped.
	Resume(actions []Action) error
	// Stop stops every running vCPU and returns once all are parked.
	// vCPUs stopped by Stop need not Notify anything.
	Stop() error
}

// Action is what one vCPU does on Resume.
type Action uint8

// Resume actions.
const (
	ActionNone     Action = iota // stay stopped
	ActionContinue               // run until a stop event
	ActionStep                   // execute one instruction, then Notify ReasonStep
)

func (a Action) String() string {
	switch a {
	case ActionNone:
		return "none"
	case ActionContinue:
		return "continue"
	case ActionStep:
		return "step"
	}
	return fmt.Sprintf("Action(%d)", uint8(a))
}

// Reason says why a vCPU stopped.
type Reason uint8

// Stop reasons.
const (
	// ReasonSignal: stopped with a POSIX signal number (Signal), e.g. the
	// VMM stopping on a guest fault it wants the debugger to see.
	ReasonSignal Reason = iota
	// ReasonStep: a single step completed.
	ReasonStep
	// ReasonSWBreak: executed a software breakpoint; RIP is on it.
	ReasonSWBreak
	// ReasonHWBreak: an instruction (execute) debug register matched.
	ReasonHWBreak
	// ReasonWatch: a data watchpoint triggered at Addr for an access of
	// WatchKind (HWWrite, HWRead or HWAccess).
	ReasonWatch
	// ReasonExited: the guest is gone (power off, reset, fatal error);
	// ExitCode is reported to GDB as the process exit status.
	ReasonExited
	// reasonInterrupt (internal): stopped by Ctrl-C.
	reasonInterrupt
	// reasonAttach (internal): stopped because a debugger attached.
	reasonAttach
)

func (r Reason) String() string {
	switch r {
	case ReasonSignal:
		return "signal"
	case ReasonStep:
		return "step"
	case ReasonSWBreak:
		return "swbreak"
	case ReasonHWBreak:
		return "hwbreak"
	case ReasonWatch:
		return "watch"
	case ReasonExited:
		return "exited"
	case reasonInterrupt:
		return "interrupt"
	case reasonAttach:
		return "attach"
	}
	return fmt.Sprintf("Reason(%d)", uint8(r))
}

// POSIX signal numbers as GDB numbers them (gdb/signals.def).
const (
	SIGINT  = 2
	SIGILL  = 4
	SIGTRAP = 5
	SIGBUS  = 7
	SIGSEGV = 11
)

// StopEvent is one vCPU stopping by itself.
type StopEvent struct {
	VCPU      int
	Reason    Reason
	Signal    int    // ReasonSignal
	Addr      uint64 // ReasonWatch: the watched address
	WatchKind HWKind // ReasonWatch
	ExitCode  uint8  // ReasonExited
}

func (e StopEvent) String() string {
	switch e.Reason {
	case ReasonSignal:
		return fmt.Sprintf("vcpu %d: signal %d", e.VCPU, e.Signal)
	case ReasonWatch:
		return fmt.Sprintf("vcpu %d: %s watchpoint %#x", e.VCPU, e.WatchKind, e.Addr)
	case ReasonExited:
		return fmt.Sprintf("exited with %d", e.ExitCode)
	}
	return fmt.Sprintf("vcpu %d: %s", e.VCPU, e.Reason)
}
