package kvm

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// VCPU is a virtual CPU: its fd and the mmapped kvm_run area.
//
// Threading. KVM requires every vCPU ioctl after creation to come from one
// thread at a time, and the run loop wants one dedicated thread so that a
// signal can interrupt KVM_RUN. The vCPU goroutine therefore calls
// runtime.LockOSThread (and never unlocks), then BindThread, then loops on
// Run. Kick, SetImmediateExit and RunData may be called from any goroutine.
//
// Kick protocol (api.rst §5, kvm_run.immediate_exit; KVM_CAP_IMMEDIATE_EXIT):
//
//  1. the kicker stores immediate_exit = 1 in the run page;
//  2. then it sends SIGURG to the bound thread with tgkill.
//
// If the vCPU thread is inside KVM_RUN, the pending signal makes KVM return
// to userspace with EINTR. If it is between two KVM_RUN calls, the signal
// is handled (and ignored) by the Go runtime, which already uses SIGURG for
// goroutine preemption, but immediate_exit makes the next KVM_RUN return
// EINTR at once without entering the guest. Either way Run returns an error
// matching ErrInterrupted, and there is no window in which the kick is lost.
// The vCPU thread then does what the kick asked (pause, stop, inject) and
// calls SetImmediateExit(false) before it re-enters. A spurious EINTR
// (another signal) looks the same with immediate_exit still 0: re-enter.
type VCPU struct {
	id      int
	fd      int
	mapping []byte              // KVM_GET_VCPU_MMAP_SIZE bytes; nil once closed
	run     atomic.Pointer[Run] // view of mapping; an empty Run once closed
	pid     int
	tid     atomic.Int32 // thread bound by BindThread; 0 when none

	// mu serialises Close with the methods other goroutines may call
	// (Kick, SetImmediateExit), so that they never touch the run page
	// after it is unmapped.
	mu     sync.Mutex
	closed bool
}

func newVCPU(id, fd int, mapping []byte, pid int) *VCPU {
	c := &VCPU{id: id, fd: fd, mapping: mapping, pid: pid}
	c.run.Store(NewRun(mapping))
	return c
}

// ID returns the vCPU id it was created with.
func (c *VCPU) ID() int { return c.id }

// FD returns the vCPU file descriptor.
func (c *VCPU) FD() int { return c.fd }

// Close unmaps the run area and closes the vCPU fd. The caller must make
// sure no goroutine is inside a vCPU method. Closing twice is safe.
func (c *VCPU) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	var errs []error
	c.run.Store(NewRun(nil))
	if err := unix.Munmap(c.mapping); err != nil {
		errs = append(errs, fmt.Errorf("munmap kvm_run: %w", os.NewSyscallError("munmap", err)))
	}
	c.mapping = nil
	if err := unix.Close(c.fd); err != nil {
		errs = append(errs, fmt.Errorf("close: %w", os.NewSyscallError("close", err)))
	}
	c.fd = -1
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("kvm: close vcpu %d: %w", c.id, err)
	}
	return nil
}

// BindThread records the calling OS thread as the vCPU thread that Kick
// signals. Call it from the vCPU goroutine after runtime.LockOSThread.
func (c *VCPU) BindThread() { c.tid.Store(int32(unix.Gettid())) }

// Kick forces the vCPU out of KVM_RUN (see the protocol on VCPU): it sets
// immediate_exit, then sends SIGURG to the bound thread. Without a bound
// thread it returns ErrNotBound, but immediate_exit stays set so the next
// Run returns ErrInterrupted at once.
func (c *VCPU) Kick() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return fmt.Errorf("kvm: kick vcpu %d: %w", c.id, ErrClosed)
	}
	c.run.Load().SetImmediateExit(true)
	tid := c.tid.Load()
	if tid == 0 {
		return fmt.Errorf("kvm: kick vcpu %d: %w", c.id, ErrNotBound)
	}
	if err := unix.Tgkill(c.pid, int(tid), unix.SIGURG); err != nil {
		return fmt.Errorf("kvm: kick vcpu %d (tid %d): %w", c.id, tid, os.NewSyscallError("tgkill", err))
	}
	return nil
}

// SetImmediateExit sets or clears kvm_run.immediate_exit. The vCPU thread
// clears it after handling a kick; setting it without a signal makes the
// next KVM_RUN return EINTR immediately (e.g. to complete a pending IO
// exit before pausing: api.rst §5).
func (c *VCPU) SetImmediateExit(v bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closed {
		c.run.Load().SetImmediateExit(v)
	}
}

// RunData returns the view of the vCPU's kvm_run area. It stays valid
// until Close.
func (c *VCPU) RunData() *Run { return c.run.Load() }

// Run enters the guest once (KVM_RUN, api.rst 4.10) and returns nil when
// the guest exited to userspace: decode the exit with RunData. It returns
// an error matching ErrInterrupted and unix.EINTR when kicked or
// signalled, a *MemoryFaultError for KVM_EXIT_MEMORY_FAULT (EFAULT or
// EHWPOISON), and other errors wrapped with the vCPU id.
func (c *VCPU) Run() error {
	_, err := ioctl(c.fd, kvmRun, 0)
	if err == nil {
		return nil
	}
	return runError(c.id, err, c.run.Load())
}

// runError classifies a KVM_RUN failure (api.rst 4.10 and §5).
func runError(id int, err error, r *Run) error {
	var errno unix.Errno
	errors.As(err, &errno)
	switch errno {
	case unix.EINTR:
		return fmt.Errorf("%w: vcpu %d: %w", ErrInterrupted, id, err)
	case unix.EFAULT, unix.EHWPOISON:
		// For other errnos exit_reason is stale, so check it only for
		// these two.
		if r.ExitReason() == ExitMemoryFault {
			return &MemoryFaultError{Exit: r.MemoryFault(), Err: err}
		}
	}
	return fmt.Errorf("kvm: run vcpu %d: %w", id, err)
}

// vcpuGet issues a vCPU "get" ioctl into a fresh T.
func vcpuGet[T any](c *VCPU, req request, what string) (T, error) {
	var v T
	if _, err := ioctlPtr(c.fd, req, &v); err != nil {
		var zero T
		return zero, fmt.Errorf("kvm: vcpu %d: get %s: %w", c.id, what, err)
	}
	return v, nil
}

// vcpuSet issues a vCPU "set" ioctl from v.
func vcpuSet[T any](c *VCPU, req request, what string, v T) error {
	if _, err := ioctlPtr(c.fd, req, &v); err != nil {
		return fmt.Errorf("kvm: vcpu %d: set %s: %w", c.id, what, err)
	}
	return nil
}

// Regs returns the general-purpose registers (KVM_GET_REGS).
func (c *VCPU) Regs() (Regs, error) { return vcpuGet[Regs](c, kvmGetRegs, "regs") }

// SetRegs sets the general-purpose registers (KVM_SET_REGS).
func (c *VCPU) SetRegs(r Regs) error { return vcpuSet(c, kvmSetRegs, "regs", r) }

// Sregs returns the special registers (KVM_GET_SREGS).
func (c *VCPU) Sregs() (Sregs, error) { return vcpuGet[Sregs](c, kvmGetSregs, "sregs") }

// SetSregs sets the special registers (KVM_SET_SREGS).
func (c *VCPU) SetSregs(s Sregs) error { return vcpuSet(c, kvmSetSregs, "sregs", s) }

// FPU returns the x87/SSE state (KVM_GET_FPU).
func (c *VCPU) FPU() (FPU, error) { return vcpuGet[FPU](c, kvmGetFPU, "fpu") }

// SetFPU sets the x87/SSE state (KVM_SET_FPU).
func (c *VCPU) SetFPU(f FPU) error { return vcpuSet(c, kvmSetFPU, "fpu", f) }

// XSave returns the x87/SSE/extended state (KVM_GET_XSAVE; the only way to
// read MXCSR, which KVM_GET_FPU leaves out).
func (c *VCPU) XSave() (XSave, error) { return vcpuGet[XSave](c, kvmGetXSave, "xsave") }

// SetXSave loads the x87/SSE/extended state (KVM_SET_XSAVE).
func (c *VCPU) SetXSave(x XSave) error { return vcpuSet(c, kvmSetXSave, "xsave", x) }

// LAPIC returns the local APIC registers (KVM_GET_LAPIC; needs the
// in-kernel irqchip).
func (c *VCPU) LAPIC() (LAPICState, error) { return vcpuGet[LAPICState](c, kvmGetLAPIC, "lapic") }

// SetLAPIC sets the local APIC registers (KVM_SET_LAPIC).
func (c *VCPU) SetLAPIC(l LAPICState) error { return vcpuSet(c, kvmSetLAPIC, "lapic", l) }

// Events returns pending exceptions, interrupts and NMIs
// (KVM_GET_VCPU_EVENTS).
func (c *VCPU) Events() (VCPUEvents, error) {
	return vcpuGet[VCPUEvents](c, kvmGetVCPUEvents, "vcpu events")
}

// SetEvents sets pending events (KVM_SET_VCPU_EVENTS), e.g. to inject an
// exception: Exception.Injected = 1, Nr = vector.
func (c *VCPU) SetEvents(e VCPUEvents) error { return vcpuSet(c, kvmSetVCPUEvents, "vcpu events", e) }

// DebugRegs returns DR0-3, DR6 and DR7 (KVM_GET_DEBUGREGS).
func (c *VCPU) DebugRegs() (DebugRegs, error) {
	return vcpuGet[DebugRegs](c, kvmGetDebugRegs, "debugregs")
}

// SetDebugRegs sets DR0-3, DR6 and DR7 (KVM_SET_DEBUGREGS; Flags must be 0).
func (c *VCPU) SetDebugRegs(d DebugRegs) error { return vcpuSet(c, kvmSetDebugRegs, "debugregs", d) }

// SetGuestDebug enables single-stepping and breakpoints that exit with
// KVM_EXIT_DEBUG (KVM_SET_GUEST_DEBUG, api.rst 4.59).
func (c *VCPU) SetGuestDebug(g GuestDebug) error {
	return vcpuSet(c, kvmSetGuestDebug, "guest debug", g)
}

// Translate translates a guest virtual address through the vCPU's current
// paging mode (KVM_TRANSLATE, api.rst 4.13).
func (c *VCPU) Translate(gva uint64) (Translation, error) {
	t := Translation{LinearAddress: gva}
	if _, err := ioctlPtr(c.fd, kvmTranslate, &t); err != nil {
		return Translation{}, fmt.Errorf("kvm: vcpu %d: translate %#x: %w", c.id, gva, err)
	}
	return t, nil
}

// MPState returns the multiprocessing state (KVM_GET_MP_STATE; MPState*).
func (c *VCPU) MPState() (uint32, error) {
	s, err := vcpuGet[mpState](c, kvmGetMPState, "mp state")
	return s.State, err
}

// SetMPState sets the multiprocessing state (KVM_SET_MP_STATE).
func (c *VCPU) SetMPState(s uint32) error {
	return vcpuSet(c, kvmSetMPState, "mp state", mpState{State: s})
}

// Interrupt queues external interrupt vector irq when there is no
// in-kernel irqchip (KVM_INTERRUPT, api.rst 4.16).
func (c *VCPU) Interrupt(irq uint32) error {
	return vcpuSet(c, kvmInterrupt, "interrupt", interrupt{IRQ: irq})
}

// NMI queues an NMI (KVM_NMI, api.rst 4.53).
func (c *VCPU) NMI() error {
	if _, err := ioctl(c.fd, kvmNMI, 0); err != nil {
		return fmt.Errorf("kvm: vcpu %d: nmi: %w", c.id, err)
	}
	return nil
}

// TSCKHz returns the guest TSC frequency (KVM_GET_TSC_KHZ).
func (c *VCPU) TSCKHz() (int, error) {
	v, err := ioctl(c.fd, kvmGetTSCKHz, 0)
	if err != nil {
		return 0, fmt.Errorf("kvm: vcpu %d: get tsc khz: %w", c.id, err)
	}
	return v, nil
}

// maxMSRs bounds one KVM_GET_MSRS / KVM_SET_MSRS call (KVM_MAX_MSR_ENTRIES).
const maxMSRs = 255

// MSRs reads the MSRs idx (KVM_GET_MSRS). KVM stops at the first MSR it
// cannot read; that is reported as an error naming it.
func (c *VCPU) MSRs(idx []uint32) ([]MSREntry, error) {
	if len(idx) > maxMSRs {
		return nil, fmt.Errorf("kvm: vcpu %d: get msrs: %d indices, at most %d", c.id, len(idx), maxMSRs)
	}
	in := make([]MSREntry, len(idx))
	for i, x := range idx {
		in[i].Index = x
	}
	out, err := c.msrIoctl(kvmGetMSRs, in)
	if err != nil {
		return nil, fmt.Errorf("kvm: vcpu %d: get msrs: %w", c.id, err)
	}
	return out, nil
}

// SetMSRs writes MSRs (KVM_SET_MSRS). KVM stops at the first MSR it
// refuses; that is reported as an error naming it.
func (c *VCPU) SetMSRs(e []MSREntry) error {
	if len(e) > maxMSRs {
		return fmt.Errorf("kvm: vcpu %d: set msrs: %d entries, at most %d", c.id, len(e), maxMSRs)
	}
	if _, err := c.msrIoctl(kvmSetMSRs, e); err != nil {
		return fmt.Errorf("kvm: vcpu %d: set msrs: %w", c.id, err)
	}
	return nil
}

// msrIoctl runs KVM_GET_MSRS / KVM_SET_MSRS over a struct kvm_msrs buffer.
// Both return the number of entries processed.
func (c *VCPU) msrIoctl(req request, e []MSREntry) ([]MSREntry, error) {
	buf := make([]byte, msrsHeaderSize+len(e)*msrEntrySize)
	le.PutUint32(buf, uint32(len(e)))
	if _, err := encodeLE(buf[msrsHeaderSize:], e); err != nil {
		return nil, err
	}
	n, err := ioctlBuf(c.fd, req, buf)
	if err != nil {
		return nil, err
	}
	if n < 0 || n > len(e) {
		return nil, fmt.Errorf("%v processed %d of %d MSRs", req, n, len(e))
	}
	if n < len(e) {
		return nil, fmt.Errorf("MSR %#x not supported (%d of %d processed)", e[n].Index, n, len(e))
	}
	out := make([]MSREntry, len(e))
	if _, err := decodeLE(buf[msrsHeaderSize:], out); err != nil {
		return nil, err
	}
	return out, nil
}

// SetCPUID2 sets the CPUID the guest sees (KVM_SET_CPUID2, api.rst 4.73).
// Call before the first Run.
func (c *VCPU) SetCPUID2(entries []CPUIDEntry) error {
	if len(entries) > maxCPUIDEntries {
		return fmt.Errorf("kvm: vcpu %d: set cpuid2: %d entries, at most %d", c.id, len(entries), maxCPUIDEntries)
	}
	buf := make([]byte, cpuid2HeaderSize+len(entries)*cpuidEntrySize)
	le.PutUint32(buf, uint32(len(entries)))
	if _, err := encodeLE(buf[cpuid2HeaderSize:], entries); err != nil {
		return fmt.Errorf("kvm: vcpu %d: set cpuid2: encode: %w", c.id, err)
	}
	if _, err := ioctlBuf(c.fd, kvmSetCPUID2, buf); err != nil {
		return fmt.Errorf("kvm: vcpu %d: set cpuid2 (%d entries): %w", c.id, len(entries), err)
	}
	return nil
}

// CPUID2 returns the CPUID set on the vCPU (KVM_GET_CPUID2).
func (c *VCPU) CPUID2() ([]CPUIDEntry, error) {
	e, err := getCPUID(c.fd, kvmGetCPUID2)
	if err != nil {
		return nil, fmt.Errorf("kvm: vcpu %d: get cpuid2: %w", c.id, err)
	}
	return e, nil
}

// PreFaultMemory populates the stage-2 mappings of [gpa, gpa+size)
// (KVM_PRE_FAULT_MEMORY, api.rst 4.143; needs CapPreFaultMemory, which a
// shadow-paging host lacks). It repeats the ioctl while the kernel reports
// progress, and returns the first error.
func (c *VCPU) PreFaultMemory(gpa, size uint64) error {
	arg := preFaultMemory{GPA: gpa, Size: size}
	for arg.Size > 0 {
		before := arg.Size
		_, err := ioctlPtr(c.fd, kvmPreFaultMemory, &arg)
		if errors.Is(err, unix.EINTR) && arg.Size < before {
			continue
		}
		if err != nil {
			return fmt.Errorf("kvm: vcpu %d: pre-fault gpa %#x size %#x (left %#x at %#x): %w",
				c.id, gpa, size, arg.Size, arg.GPA, err)
		}
		if arg.Size >= before {
			return fmt.Errorf("kvm: vcpu %d: pre-fault gpa %#x size %#x made no progress", c.id, gpa, size)
		}
	}
	return nil
}
