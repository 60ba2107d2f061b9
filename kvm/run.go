package kvm

import "fmt"

// RunSize is sizeof(struct kvm_run) on x86_64: the header, the 256-byte
// exit union, kvm_valid_regs/kvm_dirty_regs and the 2048-byte sync-regs
// area. The vCPU mapping is larger (the PIO data page follows at 4096).
const RunSize = 2352

// Offsets in struct kvm_run (x86_64), pinned against the C header by
// layout_test.go. The exit union starts at RunOffUnion; its members are
// listed with absolute offsets.
const (
	RunOffRequestInterruptWindow = 0  // __u8 request_interrupt_window
	RunOffImmediateExit          = 1  // __u8 immediate_exit
	RunOffExitReason             = 8  // __u32 exit_reason
	RunOffReadyForInjection      = 12 // __u8 ready_for_interrupt_injection
	RunOffIFFlag                 = 13 // __u8 if_flag
	RunOffFlags                  = 14 // __u16 flags
	RunOffCR8                    = 16 // __u64 cr8
	RunOffApicBase               = 24 // __u64 apic_base
	RunOffUnion                  = 32 // exit union, 256 bytes
	RunUnionSize                 = 256

	// KVM_EXIT_FAIL_ENTRY
	RunOffFailEntryReason = 32 // __u64 hardware_entry_failure_reason
	RunOffFailEntryCPU    = 40 // __u32 cpu
	// KVM_EXIT_IO
	RunOffIODirection  = 32 // __u8 direction
	RunOffIOSize       = 33 // __u8 size (bytes per element)
	RunOffIOPort       = 34 // __u16 port
	RunOffIOCount      = 36 // __u32 count (elements, > 1 for string I/O)
	RunOffIODataOffset = 40 // __u64 data_offset, from the start of the mapping
	// KVM_EXIT_DEBUG (struct kvm_debug_exit_arch)
	RunOffDebugException = 32 // __u32 exception
	RunOffDebugPC        = 40 // __u64 pc
	RunOffDebugDR6       = 48 // __u64 dr6
	RunOffDebugDR7       = 56 // __u64 dr7
	// KVM_EXIT_MMIO
	RunOffMMIOPhysAddr = 32 // __u64 phys_addr
	RunOffMMIOData     = 40 // __u8 data[8]
	RunOffMMIOLen      = 48 // __u32 len
	RunOffMMIOIsWrite  = 52 // __u8 is_write
	// KVM_EXIT_HYPERCALL
	RunOffHypercallNr    = 32 // __u64 nr
	RunOffHypercallArgs  = 40 // __u64 args[6]
	RunOffHypercallRet   = 88 // __u64 ret (written by userspace)
	RunOffHypercallFlags = 96 // __u64 flags (union with __u32 longmode)
	// KVM_EXIT_INTERNAL_ERROR (internal and its emulation_failure overlay)
	RunOffInternalSuberror = 32 // __u32 suberror
	RunOffInternalNData    = 36 // __u32 ndata
	RunOffInternalData     = 40 // __u64 data[16]
	RunOffEmulationFlags   = 40 // __u64 flags (= data[0])
	RunOffEmulationInsnLen = 48 // __u8 insn_size (low byte of data[1])
	RunOffEmulationInsn    = 49 // __u8 insn_bytes[15] (rest of data[1], data[2])
	// KVM_EXIT_SYSTEM_EVENT
	RunOffSystemEventType  = 32 // __u32 type
	RunOffSystemEventNData = 36 // __u32 ndata
	RunOffSystemEventData  = 40 // __u64 data[16] (data[0] is the legacy flags)
	// KVM_EXIT_MEMORY_FAULT
	RunOffMemFaultFlags = 32 // __u64 flags
	RunOffMemFaultGPA   = 40 // __u64 gpa
	RunOffMemFaultSize  = 48 // __u64 size

	// internalMaxData is the length of internal.data / system_event.data.
	internalMaxData = 16
	// emulationInsnMax is sizeof(emulation_failure.insn_bytes).
	emulationInsnMax = 15
)

// Run is a view of a kvm_run area: the mmapped page of a vCPU, or caller
// bytes (NewRun) for synthetic exits in tests. Every accessor is bounds
// checked: reads beyond the buffer yield zero, and the decoders that
// return slices of the buffer (IO, MMIO) return ErrCorruptExit instead of
// reaching outside it. A Run never panics on any content.
//
// Only the vCPU thread should decode exits; SetImmediateExit and
// SetRequestInterruptWindow may be called from any goroutine.
type Run struct {
	b []byte
}

// NewRun returns a Run over b. For a realistic synthetic exit, b should be
// at least 4096+N bytes so that port-I/O data can sit at data_offset 4096
// as KVM places it (KVM_PIO_PAGE_OFFSET).
func NewRun(b []byte) *Run { return &Run{b: b} }

// Bytes returns the underlying buffer (the whole vCPU mapping for a real
// vCPU).
func (r *Run) Bytes() []byte { return r.b }

func (r *Run) u8(off int) uint8 {
	if off < 0 || off >= len(r.b) {
		return 0
	}
	return r.b[off]
}

func (r *Run) u16(off int) uint16 {
	if off < 0 || off+2 > len(r.b) {
		return 0
	}
	return le.Uint16(r.b[off:])
}

func (r *Run) u32(off int) uint32 {
	if off < 0 || off+4 > len(r.b) {
		return 0
	}
	return le.Uint32(r.b[off:])
}

func (r *Run) u64(off int) uint64 {
	if off < 0 || off+8 > len(r.b) {
		return 0
	}
	return le.Uint64(r.b[off:])
}

func (r *Run) put8(off int, v uint8) {
	if off >= 0 && off < len(r.b) {
		r.b[off] = v
	}
}

func (r *Run) put16(off int, v uint16) {
	if off >= 0 && off+2 <= len(r.b) {
		le.PutUint16(r.b[off:], v)
	}
}

func (r *Run) put32(off int, v uint32) {
	if off >= 0 && off+4 <= len(r.b) {
		le.PutUint32(r.b[off:], v)
	}
}

func (r *Run) put64(off int, v uint64) {
	if off >= 0 && off+8 <= len(r.b) {
		le.PutUint64(r.b[off:], v)
	}
}

// ExitReason returns kvm_run.exit_reason.
func (r *Run) ExitReason() ExitReason { return ExitReason(r.u32(RunOffExitReason)) }

// ReadyForInterruptInjection reports kvm_run.ready_for_interrupt_injection:
// without an in-kernel irqchip, KVM_INTERRUPT may be used now.
func (r *Run) ReadyForInterruptInjection() bool { return r.u8(RunOffReadyForInjection) != 0 }

// IFFlag reports kvm_run.if_flag, the guest's RFLAGS.IF at the exit.
func (r *Run) IFFlag() bool { return r.u8(RunOffIFFlag) != 0 }

// Flags returns kvm_run.flags (KVM_RUN_X86_SMM, KVM_RUN_X86_BUS_LOCK, ...).
func (r *Run) Flags() uint16 { return r.u16(RunOffFlags) }

// CR8 returns kvm_run.cr8 (the TPR, without an in-kernel local APIC).
func (r *Run) CR8() uint64 { return r.u64(RunOffCR8) }

// ApicBase returns kvm_run.apic_base.
func (r *Run) ApicBase() uint64 { return r.u64(RunOffApicBase) }

// ImmediateExit reports kvm_run.immediate_exit.
func (r *Run) ImmediateExit() bool { return r.loadByte(RunOffImmediateExit) != 0 }

// SetImmediateExit sets or clears kvm_run.immediate_exit (see VCPU.Kick).
func (r *Run) SetImmediateExit(v bool) { r.storeByte(RunOffImmediateExit, b2u8(v)) }

// RequestInterruptWindow reports kvm_run.request_interrupt_window.
func (r *Run) RequestInterruptWindow() bool { return r.loadByte(RunOffRequestInterruptWindow) != 0 }

// SetRequestInterruptWindow asks KVM to exit with KVM_EXIT_IRQ_WINDOW_OPEN
// as soon as the guest can take an interrupt (no in-kernel irqchip).
func (r *Run) SetRequestInterruptWindow(v bool) {
	r.storeByte(RunOffRequestInterruptWindow, b2u8(v))
}

func b2u8(v bool) uint8 {
	if v {
		return 1
	}
	return 0
}

// IOExit is the decoded KVM_EXIT_IO. Data is a slice of the run area of
// Size*Count bytes at DataOffset: for IOOut it holds what the guest wrote;
// for IOIn the VMM fills it before the next Run. For string I/O (rep
// ins/outs) Count > 1 and the elements are consecutive.
type IOExit struct {
	Direction  uint8 // IOIn or IOOut
	Size       uint8 // 1, 2 or 4
	Port       uint16
	Count      uint32
	DataOffset uint64
	Data       []byte
}

// IO decodes a KVM_EXIT_IO. It checks direction, size and count and that
// the data lies inside the run area after struct kvm_run.
func (r *Run) IO() (IOExit, error) {
	e := IOExit{
		Direction:  r.u8(RunOffIODirection),
		Size:       r.u8(RunOffIOSize),
		Port:       r.u16(RunOffIOPort),
		Count:      r.u32(RunOffIOCount),
		DataOffset: r.u64(RunOffIODataOffset),
	}
	if len(r.b) < RunOffIODataOffset+8 {
		return IOExit{}, fmt.Errorf("%w: io: run area of %d bytes", ErrCorruptExit, len(r.b))
	}
	if e.Direction != IOIn && e.Direction != IOOut {
		return IOExit{}, fmt.Errorf("%w: io: direction %d", ErrCorruptExit, e.Direction)
	}
	if e.Size != 1 && e.Size != 2 && e.Size != 4 {
		return IOExit{}, fmt.Errorf("%w: io: size %d", ErrCorruptExit, e.Size)
	}
	if e.Count == 0 {
		return IOExit{}, fmt.Errorf("%w: io: count 0", ErrCorruptExit)
	}
	n := uint64(e.Size) * uint64(e.Count) // at most 4 * 2^32: no overflow
	if e.DataOffset < RunSize || e.DataOffset > uint64(len(r.b)) || n > uint64(len(r.b))-e.DataOffset {
		return IOExit{}, fmt.Errorf("%w: io: %d bytes at data_offset %#x outside the %d-byte run area",
			ErrCorruptExit, n, e.DataOffset, len(r.b))
	}
	e.Data = r.b[e.DataOffset : e.DataOffset+n : e.DataOffset+n]
	return e, nil
}

// MMIOExit is the decoded KVM_EXIT_MMIO. Data is a slice of the run area
// (kvm_run.mmio.data) of Len bytes: what the guest wrote, or where the VMM
// puts what it reads before the next Run.
type MMIOExit struct {
	PhysAddr uint64
	IsWrite  bool
	Len      uint32
	Data     []byte
}

// MMIO decodes a KVM_EXIT_MMIO, checking that Len is 1..8.
func (r *Run) MMIO() (MMIOExit, error) {
	e := MMIOExit{
		PhysAddr: r.u64(RunOffMMIOPhysAddr),
		IsWrite:  r.u8(RunOffMMIOIsWrite) != 0,
		Len:      r.u32(RunOffMMIOLen),
	}
	if len(r.b) < RunOffMMIOIsWrite+1 {
		return MMIOExit{}, fmt.Errorf("%w: mmio: run area of %d bytes", ErrCorruptExit, len(r.b))
	}
	if e.Len == 0 || e.Len > 8 {
		return MMIOExit{}, fmt.Errorf("%w: mmio: len %d", ErrCorruptExit, e.Len)
	}
	end := RunOffMMIOData + int(e.Len)
	e.Data = r.b[RunOffMMIOData:end:end]
	return e, nil
}

// HypercallExit is the decoded KVM_EXIT_HYPERCALL (api.rst §5; for
// KVM_HC_MAP_GPA_RANGE: Args[0] gpa, Args[1] npages, Args[2] attrs).
type HypercallExit struct {
	Nr    uint64
	Args  [6]uint64
	Ret   uint64
	Flags uint64 // HypercallExitLongMode
}

// LongMode reports whether the hypercall was made from 64-bit mode.
func (h HypercallExit) LongMode() bool { return h.Flags&HypercallExitLongMode != 0 }

// Hypercall decodes a KVM_EXIT_HYPERCALL.
func (r *Run) Hypercall() HypercallExit {
	h := HypercallExit{
		Nr:    r.u64(RunOffHypercallNr),
		Ret:   r.u64(RunOffHypercallRet),
		Flags: r.u64(RunOffHypercallFlags),
	}
	for i := range h.Args {
		h.Args[i] = r.u64(RunOffHypercallArgs + 8*i)
	}
	return h
}

// SetHypercallRet writes kvm_run.hypercall.ret, which KVM copies to the
// guest's RAX when the vCPU re-enters: 0 for success or a negative KVM
// error, e.g. HypercallErrno(KVMEINVAL) (docs/kvm-api.md §3.2).
func (r *Run) SetHypercallRet(v uint64) { r.put64(RunOffHypercallRet, v) }

// HypercallErrno returns the hypercall.ret value for KVM error code code
// (KVMEINVAL, KVMENOSYS, ...): the two's-complement of -code, which the
// guest sees in RAX as a negative number.
func HypercallErrno(code int64) uint64 { return uint64(-code) }

// MemoryFaultExit is the decoded KVM_EXIT_MEMORY_FAULT (api.rst §5).
type MemoryFaultExit struct {
	Flags uint64 // MemoryExitFlagPrivate
	GPA   uint64
	Size  uint64
}

// Private reports whether the faulting access was a private access.
func (m MemoryFaultExit) Private() bool { return m.Flags&MemoryExitFlagPrivate != 0 }

// MemoryFault decodes a KVM_EXIT_MEMORY_FAULT.
func (r *Run) MemoryFault() MemoryFaultExit {
	return MemoryFaultExit{
		Flags: r.u64(RunOffMemFaultFlags),
		GPA:   r.u64(RunOffMemFaultGPA),
		Size:  r.u64(RunOffMemFaultSize),
	}
}

// InternalErrorExit is the decoded KVM_EXIT_INTERNAL_ERROR. Data holds
// internal.data[0:NData]. For Suberror == InternalErrorEmulation, Flags is
// emulation_failure.flags (data[0]) and, when it has
// InternalErrorEmulationFlagInsnBytes, InsnBytes holds the insn_size bytes
// of the instruction that failed (emulation_failure.insn_bytes, which
// overlays data[1] from its second byte and data[2]; include/uapi/linux/kvm.h).
type InternalErrorExit struct {
	Suberror  uint32
	NData     uint32
	Data      []uint64
	Flags     uint64
	InsnBytes []byte
}

// InternalError decodes a KVM_EXIT_INTERNAL_ERROR. ndata > 16 and an
// instruction length > 15 are reported as ErrCorruptExit.
func (r *Run) InternalError() (InternalErrorExit, error) {
	e := InternalErrorExit{
		Suberror: r.u32(RunOffInternalSuberror),
		NData:    r.u32(RunOffInternalNData),
	}
	if e.NData > internalMaxData {
		return e, fmt.Errorf("%w: internal error: ndata %d > %d", ErrCorruptExit, e.NData, internalMaxData)
	}
	if e.NData > 0 {
		e.Data = make([]uint64, e.NData)
		for i := range e.Data {
			e.Data[i] = r.u64(RunOffInternalData + 8*i)
		}
	}
	if e.Suberror != InternalErrorEmulation || e.NData == 0 {
		return e, nil
	}
	e.Flags = e.Data[0]
	if e.Flags&InternalErrorEmulationFlagInsnBytes == 0 {
		return e, nil
	}
	// insn_size and insn_bytes occupy data[1] and data[2]; the kernel
	// counts them in ndata (prepare_emulation_failure_exit).
	if e.NData < 3 {
		return e, fmt.Errorf("%w: emulation failure: instruction bytes flagged but ndata %d < 3", ErrCorruptExit, e.NData)
	}
	n := int(r.u8(RunOffEmulationInsnLen))
	if n > emulationInsnMax {
		return e, fmt.Errorf("%w: emulation failure: insn_size %d > %d", ErrCorruptExit, n, emulationInsnMax)
	}
	if RunOffEmulationInsn+n > len(r.b) {
		return e, fmt.Errorf("%w: emulation failure: run area of %d bytes", ErrCorruptExit, len(r.b))
	}
	e.InsnBytes = append([]byte(nil), r.b[RunOffEmulationInsn:RunOffEmulationInsn+n]...)
	return e, nil
}

// FailEntryExit is the decoded KVM_EXIT_FAIL_ENTRY: the hardware refused
// VM entry (e.g. invalid guest state on VMX).
type FailEntryExit struct {
	HardwareReason uint64
	CPU            uint32
}

// FailEntry decodes a KVM_EXIT_FAIL_ENTRY.
func (r *Run) FailEntry() FailEntryExit {
	return FailEntryExit{
		HardwareReason: r.u64(RunOffFailEntryReason),
		CPU:            r.u32(RunOffFailEntryCPU),
	}
}

// SystemEventExit is the decoded KVM_EXIT_SYSTEM_EVENT (api.rst §5). Flags
// is data[0] (the pre-5.18 flags field it overlays). Data holds
// data[0:NData], at most 16 entries even if NData claims more.
type SystemEventExit struct {
	Type  uint32 // SystemEvent*
	NData uint32
	Flags uint64
	Data  []uint64
}

// SystemEvent decodes a KVM_EXIT_SYSTEM_EVENT.
func (r *Run) SystemEvent() SystemEventExit {
	e := SystemEventExit{
		Type:  r.u32(RunOffSystemEventType),
		NData: r.u32(RunOffSystemEventNData),
		Flags: r.u64(RunOffSystemEventData),
	}
	n := min(e.NData, internalMaxData)
	if n > 0 {
		e.Data = make([]uint64, n)
		for i := range e.Data {
			e.Data[i] = r.u64(RunOffSystemEventData + 8*i)
		}
	}
	return e
}

// DebugExit is the decoded KVM_EXIT_DEBUG (struct kvm_debug_exit_arch):
// Exception is 1 (#DB: single step, hardware breakpoint) or 3 (#BP).
type DebugExit struct {
	Exception uint32
	PC        uint64
	DR6       uint64
	DR7       uint64
}

// Debug decodes a KVM_EXIT_DEBUG.
func (r *Run) Debug() DebugExit {
	return DebugExit{
		Exception: r.u32(RunOffDebugException),
		PC:        r.u64(RunOffDebugPC),
		DR6:       r.u64(RunOffDebugDR6),
		DR7:       r.u64(RunOffDebugDR7),
	}
}

// String summarises the exit for logs and test failures.
func (r *Run) String() string {
	switch reason := r.ExitReason(); reason {
	case ExitIO:
		io, err := r.IO()
		if err != nil {
			return fmt.Sprintf("%v (%v)", reason, err)
		}
		dir := "in"
		if io.Direction == IOOut {
			dir = "out"
		}
		return fmt.Sprintf("%v %s port %#x size %d count %d data % x", reason, dir, io.Port, io.Size, io.Count, io.Data)
	case ExitMMIO:
		m, err := r.MMIO()
		if err != nil {
			return fmt.Sprintf("%v (%v)", reason, err)
		}
		return fmt.Sprintf("%v write=%v gpa %#x len %d data % x", reason, m.IsWrite, m.PhysAddr, m.Len, m.Data)
	case ExitHypercall:
		h := r.Hypercall()
		return fmt.Sprintf("%v nr %d args %#x", reason, h.Nr, h.Args)
	case ExitMemoryFault:
		m := r.MemoryFault()
		return fmt.Sprintf("%v flags %#x gpa %#x size %#x", reason, m.Flags, m.GPA, m.Size)
	case ExitInternalError:
		e, err := r.InternalError()
		if err != nil {
			return fmt.Sprintf("%v suberror %d (%v)", reason, e.Suberror, err)
		}
		return fmt.Sprintf("%v suberror %d data %#x insn % x", reason, e.Suberror, e.Data, e.InsnBytes)
	case ExitFailEntry:
		f := r.FailEntry()
		return fmt.Sprintf("%v hardware reason %#x cpu %d", reason, f.HardwareReason, f.CPU)
	case ExitSystemEvent:
		s := r.SystemEvent()
		return fmt.Sprintf("%v type %d data %#x", reason, s.Type, s.Data)
	case ExitDebug:
		d := r.Debug()
		return fmt.Sprintf("%v exception %d pc %#x dr6 %#x dr7 %#x", reason, d.Exception, d.PC, d.DR6, d.DR7)
	default:
		return reason.String()
	}
}
