package gdbstub

import (
	"encoding/binary"
	"fmt"
	"strings"
)

// Registers is one vCPU's register file as GDB's amd64 target description
// (regs.go: regTable, target.xml) presents it. General registers are in
// GDB's order, which differs from KVM's struct kvm_regs order.
type Registers struct {
	RAX, RBX, RCX, RDX, RSI, RDI, RBP, RSP uint64
	R8, R9, R10, R11, R12, R13, R14, R15   uint64
	RIP                                    uint64
	EFLAGS                                 uint32 // GDB's eflags is 32 bits
	CS, SS, DS, ES, FS, GS                 uint32 // selectors

	// x87 state as FXSAVE keeps it (SDM Vol. 1 §10.5.1); ST[i] are the
	// 80-bit registers in stack order. FTAG is the full 16-bit tag word;
	// KVM keeps the abridged one (see FullTagWord/AbridgedTagWord).
	ST                                      [8][10]byte
	FCTRL, FSTAT, FTAG, FISEG, FIOFF, FOSEG uint32
	FOOFF, FOP                              uint32
	XMM                                     [16][16]byte
	MXCSR                                   uint32
	FSBase, GSBase, KernelGSBase            uint64
	CR0, CR2, CR3, CR4, CR8, EFER           uint64
}

// regDef describes one register of the target description. The index in
// regTable is GDB's register number, used by p/P and the g layout.
type regDef struct {
	name    string
	bits    int
	typ     string // target description type
	group   string
	feature int // index in features
	field   func(r *Registers) any
}

var features = []string{
	"org.gnu.gdb.i386.core",
	"org.gnu.gdb.i386.sse",
	"org.gnu.gdb.i386.segments",
	"org.gnu.gdb.i386.sys", // not a GDB-defined feature: shown as extra registers
}

const (
	fCore = iota
	fSSE
	fSeg
	fSys
)

func u64(name, typ string, f func(r *Registers) *uint64) regDef {
	return regDef{name: name, bits: 64, typ: typ, group: "general", field: func(r *Registers) any { return f(r) }}
}

func u32(name, typ, group string, feature int, f func(r *Registers) *uint32) regDef {
	return regDef{name: name, bits: 32, typ: typ, group: group, feature: feature, field: func(r *Registers) any { return f(r) }}
}

// regTable is the register numbering shared by g/G, p/P and target.xml.
// The core and sse features follow GDB's features/i386/64bit-core.xml and
// 64bit-sse.xml, which GDB's amd64 support requires (i386_validate_tdesc_p).
var regTable = buildRegTable()

func buildRegTable() []regDef {
	t := []regDef{
		u64("rax", "int64", func(r *Registers) *uint64 { return &r.RAX }),
		u64("rbx", "int64", func(r *Registers) *uint64 { return &r.RBX }),
		u64("rcx", "int64", func(r *Registers) *uint64 { return &r.RCX }),
		u64("rdx", "int64", func(r *Registers) *uint64 { return &r.RDX }),
		u64("rsi", "int64", func(r *Registers) *uint64 { return &r.RSI }),
		u64("rdi", "int64", func(r *Registers) *uint64 { return &r.RDI }),
		u64("rbp", "data_ptr", func(r *Registers) *uint64 { return &r.RBP }),
		u64("rsp", "data_ptr", func(r *Registers) *uint64 { return &r.RSP }),
		u64("r8", "int64", func(r *Registers) *uint64 { return &r.R8 }),
		u64("r9", "int64", func(r *Registers) *uint64 { return &r.R9 }),
		u64("r10", "int64", func(r *Registers) *uint64 { return &r.R10 }),
		u64("r11", "int64", func(r *Registers) *uint64 { return &r.R11 }),
		u64("r12", "int64", func(r *Registers) *uint64 { return &r.R12 }),
		u64("r13", "int64", func(r *Registers) *uint64 { return &r.R13 }),
		u64("r14", "int64", func(r *Registers) *uint64 { return &r.R14 }),
		u64("r15", "int64", func(r *Registers) *uint64 { return &r.R15 }),
		u64("rip", "code_ptr", func(r *Registers) *uint64 { return &r.RIP }),
		u32("eflags", "i386_eflags", "general", fCore, func(r *Registers) *uint32 { return &r.EFLAGS }),
		u32("cs", "int32", "general", fCore, func(r *Registers) *uint32 { return &r.CS }),
		u32("ss", "int32", "general", fCore, func(r *Registers) *uint32 { return &r.SS }),
		u32("ds", "int32", "general", fCore, func(r *Registers) *uint32 { return &r.DS }),
		u32("es", "int32", "general", fCore, func(r *Registers) *uint32 { return &r.ES }),
		u32("fs", "int32", "general", fCore, func(r *Registers) *uint32 { return &r.FS }),
		u32("gs", "int32", "general", fCore, func(r *Registers) *uint32 { return &r.GS }),
	}
	for i := range 8 {
		t = append(t, regDef{name: fmt.Sprintf("st%d", i), bits: 80, typ: "i387_ext", group: "float", feature: fCore,
			field: func(r *Registers) any { return r.ST[i][:] }})
	}
	t = append(t,
		u32("fctrl", "int", "float", fCore, func(r *Registers) *uint32 { return &r.FCTRL }),
		u32("fstat", "int", "float", fCore, func(r *Registers) *uint32 { return &r.FSTAT }),
		u32("ftag", "int", "float", fCore, func(r *Registers) *uint32 { return &r.FTAG }),
		u32("fiseg", "int", "float", fCore, func(r *Registers) *uint32 { return &r.FISEG }),
		u32("fioff", "int", "float", fCore, func(r *Registers) *uint32 { return &r.FIOFF }),
		u32("foseg", "int", "float", fCore, func(r *Registers) *uint32 { return &r.FOSEG }),
		u32("fooff", "int", "float", fCore, func(r *Registers) *uint32 { return &r.FOOFF }),
		u32("fop", "int", "float", fCore, func(r *Registers) *uint32 { return &r.FOP }),
	)
	for i := range 16 {
		t = append(t, regDef{name: fmt.Sprintf("xmm%d", i), bits: 128, typ: "vec128", group: "vector", feature: fSSE,
			field: func(r *Registers) any { return r.XMM[i][:] }})
	}
	t = append(t, u32("mxcsr", "i386_mxcsr", "vector", fSSE, func(r *Registers) *uint32 { return &r.MXCSR }))
	sys := []regDef{
		u64("fs_base", "int", func(r *Registers) *uint64 { return &r.FSBase }),
		u64("gs_base", "int", func(r *Registers) *uint64 { return &r.GSBase }),
		u64("k_gs_base", "int", func(r *Registers) *uint64 { return &r.KernelGSBase }),
		u64("cr0", "int", func(r *Registers) *uint64 { return &r.CR0 }),
		u64("cr2", "int", func(r *Registers) *uint64 { return &r.CR2 }),
		u64("cr3", "int", func(r *Registers) *uint64 { return &r.CR3 }),
		u64("cr4", "int", func(r *Registers) *uint64 { return &r.CR4 }),
		u64("cr8", "int", func(r *Registers) *uint64 { return &r.CR8 }),
		u64("efer", "int", func(r *Registers) *uint64 { return &r.EFER }),
	}
	for i := range sys {
		sys[i].group = "system"
		sys[i].feature = fSys
		if i < 2 {
			sys[i].feature = fSeg // GDB's 64bit-segments.xml
		}
	}
	return append(t, sys...)
}

// regsSize is the size in bytes of the g packet's register block.
var regsSize = func() int {
	n := 0
	for _, d := range regTable {
		n += d.bits / 8
	}
	return n
}()

// put appends register n of r, little-endian, to b.
func putReg(b []byte, r *Registers, n int) []byte {
	switch v := regTable[n].field(r).(type) {
	case *uint64:
		return binary.LittleEndian.AppendUint64(b, *v)
	case *uint32:
		return binary.LittleEndian.AppendUint32(b, *v)
	case []byte:
		return append(b, v...)
	}
	panic("gdbstub: register table: unhandled field type for " + regTable[n].name)
}

// setReg sets register n of r from exactly its size of little-endian bytes.
func setReg(r *Registers, n int, p []byte) error {
	d := regTable[n]
	if len(p) != d.bits/8 {
		return fmt.Errorf("register %s: %d bytes, want %d", d.name, len(p), d.bits/8)
	}
	switch v := d.field(r).(type) {
	case *uint64:
		*v = binary.LittleEndian.Uint64(p)
	case *uint32:
		*v = binary.LittleEndian.Uint32(p)
	case []byte:
		copy(v, p)
	default:
		panic("gdbstub: register table: unhandled field type for " + d.name)
	}
	return nil
}

// marshalRegs returns the g packet register block.
func marshalRegs(r *Registers) []byte {
	b := make([]byte, 0, regsSize)
	for n := range regTable {
		b = putReg(b, r, n)
	}
	return b
}

// unmarshalRegs sets registers from a G packet block. A block shorter than
// the whole file updates the registers it covers completely (GDB may send
// fewer registers), a partial register is an error.
func unmarshalRegs(r *Registers, p []byte) error {
	for n, d := range regTable {
		size := d.bits / 8
		if len(p) == 0 {
			return nil
		}
		if len(p) < size {
			return fmt.Errorf("register block ends inside %s", d.name)
		}
		if err := setReg(r, n, p[:size]); err != nil {
			return err
		}
		p = p[size:]
	}
	if len(p) != 0 {
		return fmt.Errorf("register block %d bytes too long", len(p))
	}
	return nil
}

// targetXML is the target description served by qXfer:features:read
// (GDB manual, "Target Descriptions" and "i386 Features").
var targetXML = buildTargetXML()

func buildTargetXML() string {
	var b strings.Builder
	b.WriteString(`<?xml version="1.0"?>` + "\n")
	b.WriteString(`<!DOCTYPE target SYSTEM "gdb-target.dtd">` + "\n")
	b.WriteString("<target version=\"1.0\">\n<architecture>i386:x86-64</architecture>\n")
	for f, name := range features {
		fmt.Fprintf(&b, "<feature name=%q>\n", name)
		switch f {
		case fCore:
			b.WriteString(eflagsType)
		case fSSE:
			b.WriteString(sseTypes)
		}
		for n, d := range regTable {
			if d.feature != f {
				continue
			}
			fmt.Fprintf(&b, "<reg name=%q bitsize=\"%d\" type=%q group=%q regnum=\"%d\"/>\n", d.name, d.bits, d.typ, d.group, n)
		}
		b.WriteString("</feature>\n")
	}
	b.WriteString("</target>\n")
	return b.String()
}

// eflagsType and sseTypes are the flag and vector types GDB's own
// 64bit-core.xml and 64bit-sse.xml define.
const eflagsType = `<flags id="i386_eflags" size="4">
<field name="CF" start="0" end="0"/><field name="" start="1" end="1"/>
<field name="PF" start="2" end="2"/><field name="AF" start="4" end="4"/>
<field name="ZF" start="6" end="6"/><field name="SF" start="7" end="7"/>
<field name="TF" start="8" end="8"/><field name="IF" start="9" end="9"/>
<field name="DF" start="10" end="10"/><field name="OF" start="11" end="11"/>
<field name="NT" start="14" end="14"/><field name="RF" start="16" end="16"/>
<field name="VM" start="17" end="17"/><field name="AC" start="18" end="18"/>
<field name="VIF" start="19" end="19"/><field name="VIP" start="20" end="20"/>
<field name="ID" start="21" end="21"/>
</flags>
`

const sseTypes = `<vector id="v4f" type="ieee_single" count="4"/>
<vector id="v2d" type="ieee_double" count="2"/>
<vector id="v16i8" type="int8" count="16"/>
<vector id="v8i16" type="int16" count="8"/>
<vector id="v4i32" type="int32" count="4"/>
<vector id="v2i64" type="int64" count="2"/>
<union id="vec128">
<field name="v4_float" type="v4f"/>
<field name="v2_double" type="v2d"/><field name="v16_int8" type="v16i8"/>
<field name="v8_int16" type="v8i16"/><field name="v4_int32" type="v4i32"/>
<field name="v2_int64" type="v2i64"/><field name="uint128" type="uint128"/>
</union>
<flags id="i386_mxcsr" size="4">
<field name="IE" start="0" end="0"/><field name="DE" start="1" end="1"/>
<field name="ZE" start="2" end="2"/><field name="OE" start="3" end="3"/>
<field name="UE" start="4" end="4"/><field name="PE" start="5" end="5"/>
<field name="DAZ" start="6" end="6"/><field name="IM" start="7" end="7"/>
<field name="DM" start="8" end="8"/><field name="ZM" start="9" end="9"/>
<field name="OM" start="10" end="10"/><field name="UM" start="11" end="11"/>
<field name="PM" start="12" end="12"/><field name="FZ" start="15" end="15"/>
</flags>
`

// AbridgedTagWord converts the x87 full tag word (2 bits per register,
// 11 = empty) to the FXSAVE abridged form KVM's struct kvm_fpu.ftwx keeps
// (1 bit per register, 1 = valid) (SDM Vol. 1 §10.5.1.1).
func AbridgedTagWord(full uint16) uint8 {
	var a uint8
	for i := range 8 {
		if (full>>(2*i))&3 != 3 {
			a |= 1 << i
		}
	}
	return a
}

// FullTagWord expands an abridged tag byte to the full tag word, deriving
// each valid register's class (00 valid, 01 zero, 10 special) from its
// contents as FSAVE would. st[i] is ST(i), the register i below the top
// of stack, as FXSAVE and struct kvm_fpu.fpr store them; tag bits are per
// physical register R0..R7, with ST(i) = R((TOP+i) mod 8), TOP being
// fsw bits 13:11 (SDM Vol. 1 §8.1.2, §8.1.7).
func FullTagWord(abridged uint8, fsw uint16, st [8][10]byte) uint16 {
	top := int(fsw>>11) & 7
	var full uint16
	for phys := range 8 {
		var tag uint16 = 3 // empty
		if abridged&(1<<phys) != 0 {
			r := st[(phys-top+8)&7]
			mant := binary.LittleEndian.Uint64(r[:8])
			exp := binary.LittleEndian.Uint16(r[8:]) & 0x7fff
			switch {
			case exp == 0x7fff:
				tag = 2 // NaN or infinity
			case exp == 0 && mant == 0:
				tag = 1 // zero
			case exp == 0 || mant>>63 == 0:
				tag = 2 // denormal or unnormal
			default:
				tag = 0
			}
		}
		full |= tag << (2 * phys)
	}
	return full
}
