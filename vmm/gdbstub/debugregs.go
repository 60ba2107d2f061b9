package gdbstub

import (
	"errors"
	"fmt"
)

// HWKind is what a debug-register slot triggers on.
type HWKind uint8

// Hardware breakpoint kinds. x86 has no read-only data breakpoint
// (SDM Vol. 3B §17.2.4: R/W=11 breaks on reads or writes), so HWRead is
// installed as read/write and reported to GDB as an rwatch; GDB itself
// filters out hits where the value changed.
const (
	HWExec   HWKind = iota // instruction fetch (Z1)
	HWWrite                // data write (Z2)
	HWRead                 // data read (Z3), installed as read/write
	HWAccess               // data read or write (Z4)
)

func (k HWKind) String() string {
	switch k {
	case HWExec:
		return "exec"
	case HWWrite:
		return "write"
	case HWRead:
		return "read"
	case HWAccess:
		return "access"
	}
	return fmt.Sprintf("HWKind(%d)", uint8(k))
}

// HWSlot is one of the four debug-register breakpoints DR0..DR3.
type HWSlot struct {
	Enabled bool
	Addr    uint64 // linear address loaded into DRn
	Len     uint64 // 1, 2, 4 or 8 bytes; 1 for HWExec
	Kind    HWKind
	// Report is the address given to GDB when this slot triggers: the
	// start of the watched range it is part of (a range GDB asked for may
	// be split over several aligned slots).
	Report uint64
}

// DebugRegs is the debug-register image for every vCPU: DR[i] goes to
// DRi and DR7 to DR7 (KVM_SET_GUEST_DEBUG debugreg[0..3] and [7]). Slots
// keeps what each one means, to decode DR6 on a debug exit.
type DebugRegs struct {
	DR    [4]uint64
	DR7   uint64
	Slots [4]HWSlot
}

// Enabled reports whether any slot is in use (KVM_GUESTDBG_USE_HW_BP).
func (d DebugRegs) Enabled() bool { return d.DR7&0xff != 0 }

// DR7 bit layout (SDM Vol. 3B §17.2.4, figure 17-1).
const (
	dr7G0         = 1 << 1 // global enable of slot 0; slot i at bit 2i+1
	dr7RWShift    = 16     // R/Wi at bits 16+4i..17+4i
	dr7LenShift   = 18     // LENi at bits 18+4i..19+4i
	dr7RWExec     = 0b00
	dr7RWWrite    = 0b01
	dr7RWReadWrit = 0b11

	// DR6 status bits (SDM Vol. 3B §17.2.3).
	DR6BS = 1 << 14 // single step
)

// ErrBadSlot is returned by EncodeDR7 for a slot hardware cannot do.
var ErrBadSlot = errors.New("invalid hardware breakpoint slot")

// EncodeDR7 computes DR7 for the given slots: a global-enable bit per used
// slot and its R/W and LEN fields (SDM Vol. 3B §17.2.4). Execute slots must
// be 1 byte long; data slots 1, 2, 4 or 8 bytes and naturally aligned.
// Global rather than local enables are used so a hardware task switch does
// not clear them.
func EncodeDR7(slots [4]HWSlot) (uint64, error) {
	var dr7 uint64
	for i, s := range slots {
		if !s.Enabled {
			continue
		}
		var rw, ln uint64
		switch s.Kind {
		case HWExec:
			if s.Len != 1 {
				return 0, fmt.Errorf("slot %d: execute breakpoint of length %d: %w", i, s.Len, ErrBadSlot)
			}
			rw = dr7RWExec
		case HWWrite:
			rw = dr7RWWrite
		case HWRead, HWAccess:
			rw = dr7RWReadWrit
		default:
			return 0, fmt.Errorf("slot %d: kind %v: %w", i, s.Kind, ErrBadSlot)
		}
		switch s.Len {
		case 1:
			ln = 0b00
		case 2:
			ln = 0b01
		case 4:
			ln = 0b11
		case 8:
			ln = 0b10
		default:
			return 0, fmt.Errorf("slot %d: length %d: %w", i, s.Len, ErrBadSlot)
		}
		if s.Addr&(s.Len-1) != 0 {
			return 0, fmt.Errorf("slot %d: address %#x not aligned to %d: %w", i, s.Addr, s.Len, ErrBadSlot)
		}
		dr7 |= dr7G0<<(2*i) | rw<<(dr7RWShift+4*i) | ln<<(dr7LenShift+4*i)
	}
	return dr7, nil
}

// NewDebugRegs builds the register image for slots (see EncodeDR7).
func NewDebugRegs(slots [4]HWSlot) (DebugRegs, error) {
	dr7, err := EncodeDR7(slots)
	if err != nil {
		return DebugRegs{}, err
	}
	d := DebugRegs{DR7: dr7, Slots: slots}
	for i, s := range slots {
		if s.Enabled {
			d.DR[i] = s.Addr
		}
	}
	return d, nil
}

// StopEvent turns a KVM_EXIT_DEBUG (kvm_run.debug.arch: exception, dr6)
// on vcpu into the event to Notify: exception 3 (#BP) is a software
// breakpoint; for #DB the DR6 B0..B3 bits name the slot that matched
// (reported as a hardware breakpoint or a watchpoint), otherwise DR6.BS
// means a completed single step. Anything else is a SIGTRAP.
func (d DebugRegs) StopEvent(vcpu int, exception uint32, dr6 uint64) StopEvent {
	if exception == 3 {
		return StopEvent{VCPU: vcpu, Reason: ReasonSWBreak}
	}
	for i, s := range d.Slots {
		if dr6&(1<<i) == 0 || !s.Enabled {
			continue
		}
		if s.Kind == HWExec {
			return StopEvent{VCPU: vcpu, Reason: ReasonHWBreak}
		}
		return StopEvent{VCPU: vcpu, Reason: ReasonWatch, Addr: s.Report, WatchKind: s.Kind}
	}
	if dr6&DR6BS != 0 {
		return StopEvent{VCPU: vcpu, Reason: ReasonStep}
	}
	return StopEvent{VCPU: vcpu, Reason: ReasonSignal, Signal: SIGTRAP}
}

// maxWatchLen bounds a watched range: four slots of eight bytes.
const maxWatchLen = 4 * 8

// splitRange covers [addr, addr+length) with naturally aligned pieces of 8,
// 4, 2 or 1 bytes, largest first, as debug registers need (the way
// gdbserver's x86 debug-register code does it).
func splitRange(addr, length uint64) ([][2]uint64, error) {
	if length == 0 || length > maxWatchLen {
		return nil, fmt.Errorf("watch length %d (1..%d): %w", length, maxWatchLen, ErrBadSlot)
	}
	var out [][2]uint64
	for length > 0 {
		size := uint64(8)
		for size > 1 && (addr&(size-1) != 0 || size > length) {
			size /= 2
		}
		out = append(out, [2]uint64{addr, size})
		addr += size
		length -= size
	}
	return out, nil
}
