// Package x86emu executes, on a vCPU's saved state, the few x86 instructions
// that a host's in-kernel instruction emulator cannot execute but a guest
// kernel cannot avoid. On hosts whose KVM emulates guest kernel mode (no
// VMX/SVM; docs/host-kvm.md) every guest kernel instruction goes through
// KVM's emulator, which stops with KVM_EXIT_INTERNAL_ERROR on an
// instruction it lacks; the VMM then decodes that instruction here, performs
// it on the registers, the SSE control state and guest memory (through the
// guest's own page tables), and resumes the guest after it, or delivers the
// exception the architecture defines for it. docs/emulation.md lists what
// is handled.
//
// The package knows nothing of KVM ioctls: the caller supplies the
// registers and an Env for the rest, so every instruction is unit-tested on
// a fake vCPU.
package x86emu

import (
	"errors"
	"fmt"
)

// Op is an instruction this package can execute.
type Op int

// Handled instructions (docs/emulation.md).
const (
	OpNone    Op = iota
	OpLDMXCSR    // NP 0F AE /2 (memory): load MXCSR from m32
	OpSTMXCSR    // NP 0F AE /3 (memory): store MXCSR to m32
)

func (o Op) String() string {
	switch o {
	case OpLDMXCSR:
		return "ldmxcsr"
	case OpSTMXCSR:
		return "stmxcsr"
	}
	return fmt.Sprintf("Op(%d)", int(o))
}

// Reg numbers general-purpose registers in ModRM/SIB order (REX extends
// them to 0..15). RegNone marks an absent base or index; RegRIP is the base
// of a RIP-relative operand.
type Reg int

// Register numbers used in MemOperand.
const (
	RegNone Reg = -1
	RegRIP  Reg = 16
	RAX     Reg = 0
	RCX     Reg = 1
	RDX     Reg = 2
	RBX     Reg = 3
	RSP     Reg = 4
	RBP     Reg = 5
	RSI     Reg = 6
	RDI     Reg = 7
	R8      Reg = 8
	R13     Reg = 13
)

// Seg numbers segment registers in the encoding order of the sreg field.
type Seg int

// Segment registers; SegDefault means no override prefix.
const (
	SegES Seg = iota
	SegCS
	SegSS
	SegDS
	SegFS
	SegGS
	SegDefault Seg = -1
)

func (s Seg) String() string {
	if s >= SegES && s <= SegGS {
		return [...]string{"es", "cs", "ss", "ds", "fs", "gs"}[s]
	}
	return "default"
}

// MemOperand is a decoded ModRM memory operand. Its effective address is
// Base + Index*Scale + Disp, truncated to AddrSize bits; RIP-relative
// operands add the address of the next instruction instead of a register.
type MemOperand struct {
	Seg      Seg // the override prefix, or SegDefault
	Base     Reg
	Index    Reg
	Scale    uint8 // 1, 2, 4 or 8 (1 when there is no index)
	Disp     int64
	AddrSize int // 16, 32 or 64
}

// Inst is a decoded instruction.
type Inst struct {
	Op   Op
	Len  int // bytes, prefixes included
	Mem  MemOperand
	Lock bool // a LOCK prefix (0xF0) was present
}

// Decoding errors. ErrUnsupported wraps every instruction this package does
// not execute (including forms of handled opcodes it must not guess at);
// ErrTruncated means the bytes end inside the instruction.
var (
	ErrUnsupported = errors.New("instruction not handled by the VMM's fallback")
	ErrTruncated   = errors.New("instruction bytes end inside the instruction")
)

// maxInstLen is the architectural limit (SDM Vol. 2 §2.3.11).
const maxInstLen = 15

// Decode decodes one instruction from code in the given mode (16, 32 or 64:
// the default operand/address size of the code segment; 64 is long mode).
// Only instructions listed as Op are accepted; everything else returns an
// error wrapping ErrUnsupported.
func Decode(code []byte, mode int) (Inst, error) {
	if mode != 16 && mode != 32 && mode != 64 {
		return Inst{}, fmt.Errorf("x86emu: bad mode %d", mode)
	}
	if len(code) > maxInstLen {
		code = code[:maxInstLen]
	}
	var (
		i  int
		in = Inst{Mem: MemOperand{Seg: SegDefault}}
		// A REX prefix counts only right before the opcode; one followed
		// by a legacy prefix is not decoded here (ErrUnsupported).
		opSize   bool // 0x66
		addrSize bool // 0x67
		rep      byte // 0xF2 or 0xF3 (the last one wins)
		rex      byte
	)
prefixes:
	for ; i < len(code); i++ {
		b := code[i]
		switch b {
		case 0xf0:
			in.Lock = true
		case 0xf2, 0xf3:
			rep = b
		case 0x66:
			opSize = true
		case 0x67:
			addrSize = true
		case 0x26, 0x2e, 0x36, 0x3e:
			in.Mem.Seg = Seg((b >> 3) & 3) // 26 es, 2e cs, 36 ss, 3e ds
		case 0x64:
			in.Mem.Seg = SegFS
		case 0x65:
			in.Mem.Seg = SegGS
		default:
			break prefixes
		}
	}
	if mode == 64 && i < len(code) && code[i]&0xf0 == 0x40 {
		rex = code[i]
		i++
	}
	if i >= len(code) {
		return Inst{}, ErrTruncated
	}
	// In 64-bit mode ES, CS, SS and DS overrides are ignored (SDM Vol. 1
	// §3.3.7.1): every one of them has base 0.
	if mode == 64 && in.Mem.Seg >= SegES && in.Mem.Seg <= SegDS {
		in.Mem.Seg = SegDefault
	}
	if code[i] != 0x0f {
		return Inst{}, fmt.Errorf("%w: opcode %#02x", ErrUnsupported, code[i])
	}
	i++
	if i >= len(code) {
		return Inst{}, ErrTruncated
	}
	op := code[i]
	i++
	if op != 0xae {
		return Inst{}, fmt.Errorf("%w: opcode 0f %02x", ErrUnsupported, op)
	}
	if i >= len(code) {
		return Inst{}, ErrTruncated
	}
	modrm := code[i]
	mod, reg := modrm>>6, (modrm>>3)&7
	// Group 15 (SDM Vol. 2 table A-6): with a memory operand and no
	// mandatory prefix, /2 is LDMXCSR and /3 STMXCSR. A 66/F2/F3 prefix
	// selects other instructions (or none): not ours to guess at.
	switch {
	case mod != 3 && reg == 2 && !opSize && rep == 0:
		in.Op = OpLDMXCSR
	case mod != 3 && reg == 3 && !opSize && rep == 0:
		in.Op = OpSTMXCSR
	default:
		return Inst{}, fmt.Errorf("%w: 0f ae with modrm %#02x (mod %d, reg %d, prefix 66=%v f2/f3=%#x)", ErrUnsupported, modrm, mod, reg, opSize, rep)
	}
	asize := mode
	switch {
	case mode == 64 && addrSize:
		asize = 32
	case mode == 32 && addrSize:
		asize = 16
	case mode == 16 && addrSize:
		asize = 32
	}
	n, err := decodeModRM(code[i:], asize, rex, mode == 64, &in.Mem)
	if err != nil {
		return Inst{}, err
	}
	in.Len = i + n
	return in, nil
}

// decodeModRM decodes a memory-form ModRM byte and what follows it (SIB,
// displacement) into m, returning the bytes consumed (SDM Vol. 2 §2.1.5,
// tables 2-1 to 2-3; §2.2.1 for REX; §2.2.1.6 for RIP-relative).
func decodeModRM(b []byte, asize int, rex byte, long bool, m *MemOperand) (int, error) {
	if len(b) < 1 {
		return 0, ErrTruncated
	}
	mod, rm := b[0]>>6, b[0]&7
	m.AddrSize = asize
	m.Scale = 1
	m.Index = RegNone
	n := 1
	disp := func(size int) error {
		if len(b) < n+size {
			return ErrTruncated
		}
		switch size {
		case 1:
			m.Disp = int64(int8(b[n]))
		case 2:
			m.Disp = int64(int16(uint16(b[n]) | uint16(b[n+1])<<8))
		case 4:
			m.Disp = int64(int32(uint32(b[n]) | uint32(b[n+1])<<8 | uint32(b[n+2])<<16 | uint32(b[n+3])<<24))
		}
		n += size
		return nil
	}
	if asize == 16 {
		// 16-bit addressing: fixed base/index pairs, no SIB.
		bases := [8][2]Reg{{RBX, RSI}, {RBX, RDI}, {RBP, RSI}, {RBP, RDI}, {RSI, RegNone}, {RDI, RegNone}, {RBP, RegNone}, {RBX, RegNone}}
		m.Base, m.Index = bases[rm][0], bases[rm][1]
		var err error
		switch {
		case mod == 0 && rm == 6:
			m.Base = RegNone
			err = disp(2)
		case mod == 1:
			err = disp(1)
		case mod == 2:
			err = disp(2)
		}
		return n, err
	}
	rexB, rexX := Reg(rex&1)<<3, Reg(rex>>1&1)<<3
	if rm == 4 {
		// SIB follows.
		if len(b) < 2 {
			return 0, ErrTruncated
		}
		sib := b[1]
		n++
		scale, index, base := sib>>6, Reg(sib>>3&7)|rexX, Reg(sib&7)
		if index != RSP { // index 100b without REX.X means none
			m.Index = index
			m.Scale = 1 << scale
		}
		if base == RBP && mod == 0 {
			m.Base = RegNone // disp32, no base
			if err := disp(4); err != nil {
				return 0, err
			}
			return n, nil
		}
		m.Base = base | rexB
	} else if rm == 5 && mod == 0 {
		if long {
			m.Base = RegRIP
		} else {
			m.Base = RegNone
		}
		if err := disp(4); err != nil {
			return 0, err
		}
		return n, nil
	} else {
		m.Base = Reg(rm) | rexB
	}
	switch mod {
	case 1:
		if err := disp(1); err != nil {
			return 0, err
		}
	case 2:
		if err := disp(4); err != nil {
			return 0, err
		}
	}
	return n, nil
}
