package x86emu

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/vmmgo/vmm/kvm"
	"golang.org/x/arch/x86/x86asm"
)

// fakeEnv is a vCPU's MXCSR and a small guest physical memory.
type fakeEnv struct {
	mxcsr, mask uint32
	mem         []byte
	sets        int
	writes      int // WritePhys calls outside page tables
	ptLimit     uint64
}

func (e *fakeEnv) MXCSR() (uint32, uint32, error) { return e.mxcsr, e.mask, nil }
func (e *fakeEnv) SetMXCSR(v uint32) error        { e.mxcsr = v; e.sets++; return nil }
func (e *fakeEnv) ReadPhys(gpa uint64, p []byte) error {
	if gpa+uint64(len(p)) > uint64(len(e.mem)) {
		return fmt.Errorf("gpa %#x outside RAM", gpa)
	}
	copy(p, e.mem[gpa:])
	return nil
}
func (e *fakeEnv) WritePhys(gpa uint64, p []byte) error {
	if gpa+uint64(len(p)) > uint64(len(e.mem)) {
		return fmt.Errorf("gpa %#x outside RAM", gpa)
	}
	if gpa >= e.ptLimit {
		e.writes++
	}
	copy(e.mem[gpa:], p)
	return nil
}

func (e *fakeEnv) u32(gpa uint64) uint32 { return binary.LittleEndian.Uint32(e.mem[gpa:]) }
func (e *fakeEnv) u64(gpa uint64) uint64 { return binary.LittleEndian.Uint64(e.mem[gpa:]) }
func (e *fakeEnv) put64(gpa, v uint64)   { binary.LittleEndian.PutUint64(e.mem[gpa:], v) }

// Page tables of the fake long-mode guest: PML4 0x1000, PDPT 0x2000, PD
// 0x3000, PT 0x4000 mapping linear 0..2 MiB with 4 KiB pages onto the same
// physical addresses, except: page 0x50000 not present, page 0x51000
// read-only, page 0x52000 a user page. Everything below 0x10000 is tables.
const (
	pml4, pdpt, pd, pt = 0x1000, 0x2000, 0x3000, 0x4000
	pageAbsent         = 0x50000
	pageRO             = 0x51000
	pageUser           = 0x52000
	pte                = 0x3 // P | RW (supervisor, not yet accessed/dirty)
)

func newLongMode(t *testing.T) (*CPU, *fakeEnv) {
	t.Helper()
	env := &fakeEnv{mxcsr: 0x1f80, mask: 0xffff, mem: make([]byte, 4<<20), ptLimit: 0x10000}
	env.put64(pml4, pdpt|0x7)
	env.put64(pdpt, pd|0x7)
	env.put64(pd, pt|0x7)
	for i := uint64(0); i < 512; i++ {
		v := i<<12 | pte
		switch i << 12 {
		case pageAbsent:
			v = 0
		case pageRO:
			v = i<<12 | 0x1
		case pageUser:
			v = i<<12 | 0x7
		}
		env.put64(pt+i*8, v)
	}
	cpu := &CPU{}
	cpu.Regs.RIP = 0x100000
	cpu.Regs.RFLAGS = 2
	cpu.Sregs.CR0 = 0x80050033 // PG WP NE ET MP PE
	cpu.Sregs.CR3 = pml4
	cpu.Sregs.CR4 = 0x6a0 // OSXMMEXCPT OSFXSR PGE PAE
	cpu.Sregs.EFER = 0xd00
	cpu.Sregs.CS = kvm.Segment{Selector: 0x10, Type: 0xb, Present: 1, S: 1, L: 1, G: 1, Limit: 0xffffffff}
	data := kvm.Segment{Selector: 0x18, Type: 0x3, Present: 1, S: 1, DB: 1, G: 1, Limit: 0xffffffff}
	cpu.Sregs.DS, cpu.Sregs.ES, cpu.Sregs.SS = data, data, data
	return cpu, env
}

// TestDecodeMatchesX86asm: the memory operand and length of every
// addressing form agree with golang.org/x/arch's decoder.
func TestDecodeMatchesX86asm(t *testing.T) {
	regName := map[Reg]string{RegRIP: "rip"}
	for i, n := range []string{"ax", "cx", "dx", "bx", "sp", "bp", "si", "di"} {
		regName[Reg(i)] = n
	}
	cases := []struct {
		mode  int
		bytes string
	}{
		{64, "0f ae 54 24 04"},          // [rsp+4]
		{64, "0f ae 5c 24 04"},          // stmxcsr [rsp+4]
		{64, "0f ae 10"},                // [rax]
		{64, "41 0f ae 10"},             // [r8]
		{64, "41 0f ae 55 00"},          // [r13+0] (mod 1: r13 needs a disp)
		{64, "0f ae 15 78 56 34 12"},    // [rip+0x12345678]
		{64, "0f ae 14 25 00 10 00 00"}, // [0x1000] (SIB, no base, no index)
		{64, "42 0f ae 14 a5 f0 ff ff ff"},
		{64, "43 0f ae 94 8c 00 01 00 00"}, // [r12+r9*4+0x100]
		{64, "67 0f ae 10"},                // [eax]
		{64, "65 0f ae 14 25 08 00 00 00"}, // gs:[8]
		{64, "48 0f ae 54 24 fc"},          // REX.W is ignored
		{32, "0f ae 55 f8"},                // [ebp-8]
		{32, "0f ae 15 00 20 00 00"},       // [0x2000]
		{32, "0f ae 14 4b"},                // [ebx+ecx*2]
		{32, "67 0f ae 17"},                // [bx]
		{16, "0f ae 56 02"},                // [bp+2]
		{16, "0f ae 16 34 12"},             // [0x1234]
		{16, "0f ae 90 00 80"},             // [bx+si-0x8000]
		{16, "67 0f ae 14 24"},             // [esp]
	}
	for _, c := range cases {
		b := hexBytes(t, c.bytes)
		in, err := Decode(b, c.mode)
		if err != nil {
			t.Errorf("%d-bit % x: %v", c.mode, b, err)
			continue
		}
		want, err := x86asm.Decode(b, c.mode)
		if err != nil {
			t.Fatalf("x86asm: % x: %v", b, err)
		}
		if in.Len != want.Len || in.Len != len(b) {
			t.Errorf("%d-bit % x: length %d, x86asm %d", c.mode, b, in.Len, want.Len)
		}
		wantOp := map[x86asm.Op]Op{x86asm.LDMXCSR: OpLDMXCSR, x86asm.STMXCSR: OpSTMXCSR}[want.Op]
		if in.Op != wantOp {
			t.Errorf("%d-bit % x: op %v, x86asm %v", c.mode, b, in.Op, want.Op)
		}
		m, ok := want.Args[0].(x86asm.Mem)
		if !ok {
			t.Fatalf("x86asm: % x: operand %v", b, want.Args[0])
		}
		// x86asm leaves a SIB disp32 without base and a 16-bit disp16
		// zero-extended; the processor sign-extends them (checked below),
		// so compare them within the displacement's width.
		mask := uint64(0xffff_ffff)
		if c.mode == 16 && in.Mem.AddrSize == 16 {
			mask = 0xffff
		}
		if uint64(in.Mem.Disp)&mask != uint64(m.Disp)&mask {
			t.Errorf("%d-bit % x: disp %#x, x86asm %#x", c.mode, b, in.Mem.Disp, m.Disp)
		}
		if got, want := regString(in.Mem.Base, in.Mem.AddrSize), strings.ToLower(regOrNone(m.Base)); got != want {
			t.Errorf("%d-bit % x: base %s, x86asm %s", c.mode, b, got, want)
		}
		if got, want := regString(in.Mem.Index, in.Mem.AddrSize), strings.ToLower(regOrNone(m.Index)); got != want {
			t.Errorf("%d-bit % x: index %s, x86asm %s", c.mode, b, got, want)
		}
		if m.Index != 0 && in.Mem.Scale != m.Scale {
			t.Errorf("%d-bit % x: scale %d, x86asm %d", c.mode, b, in.Mem.Scale, m.Scale)
		}
		if want.AddrSize != in.Mem.AddrSize {
			t.Errorf("%d-bit % x: address size %d, x86asm %d", c.mode, b, in.Mem.AddrSize, want.AddrSize)
		}
	}
}

// TestDisplacementsAreSignExtended: disp8/disp16/disp32 are signed.
func TestDisplacementsAreSignExtended(t *testing.T) {
	for _, c := range []struct {
		mode  int
		bytes string
		disp  int64
	}{
		{64, "42 0f ae 14 a5 f0 ff ff ff", -0x10},
		{64, "0f ae 50 80", -0x80},
		{16, "0f ae 90 00 80", -0x8000},
		{32, "0f ae 90 00 00 00 80", -0x8000_0000},
	} {
		in, err := Decode(hexBytes(t, c.bytes), c.mode)
		if err != nil || in.Mem.Disp != c.disp {
			t.Errorf("%s: disp %#x err %v, want %#x", c.bytes, in.Mem.Disp, err, c.disp)
		}
	}
	// [r12*4-0x10] with r12 = 8: effective address 0x10.
	cpu := &CPU{}
	cpu.Regs.R12 = 8
	in, _ := Decode(hexBytes(t, "42 0f ae 14 a5 f0 ff ff ff"), 64)
	if ea := EffectiveAddress(cpu, in); ea != 0x10 {
		t.Errorf("effective address %#x, want 0x10", ea)
	}
}

func regOrNone(r x86asm.Reg) string {
	if r == 0 {
		return "none"
	}
	return r.String()
}

// regString names r as x86asm does for the address size.
func regString(r Reg, asize int) string {
	switch {
	case r == RegNone:
		return "none"
	case r == RegRIP:
		if asize == 32 {
			return "eip"
		}
		return "rip"
	}
	legacy := []string{"ax", "cx", "dx", "bx", "sp", "bp", "si", "di"}
	switch asize {
	case 16:
		return legacy[r]
	case 32:
		if r >= 8 {
			return fmt.Sprintf("r%dl", r) // x86asm spells r8d as R8L
		}
		return "e" + legacy[r]
	}
	if r >= 8 {
		return fmt.Sprintf("r%d", r)
	}
	return "r" + legacy[r]
}

func hexBytes(t *testing.T, s string) []byte {
	t.Helper()
	var b []byte
	for _, f := range strings.Fields(s) {
		var v byte
		if _, err := fmt.Sscanf(f, "%02x", &v); err != nil {
			t.Fatalf("bad hex %q", f)
		}
		b = append(b, v)
	}
	return b
}

func TestDecodeRejects(t *testing.T) {
	for _, c := range []struct {
		mode  int
		bytes string
		want  error
	}{
		{64, "0f ae d0", ErrUnsupported},              // mod 3: not a memory form
		{64, "66 0f ae 10", ErrUnsupported},           // 66 prefix: another instruction
		{64, "f3 0f ae 10", ErrUnsupported},           // F3 prefix
		{64, "0f ae 00", ErrUnsupported},              // fxsave (the host emulates it)
		{64, "0f ae 38", ErrUnsupported},              // clflush
		{64, "c5 f8 ae 10", ErrUnsupported},           // vldmxcsr (VEX): not handled
		{64, "f3 48 0f b8 c3", ErrUnsupported},        // popcnt
		{64, "0f ae", ErrTruncated},                   // no ModRM
		{64, "0f ae 14", ErrTruncated},                // no SIB
		{64, "0f ae 54 24", ErrTruncated},             // no disp8
		{64, "0f ae 15 00 00", ErrTruncated},          // short disp32
		{16, "0f ae 16 34", ErrTruncated},             // short disp16
		{64, "66 66 66 66 66 66 66 66", ErrTruncated}, // prefixes only
	} {
		_, err := Decode(hexBytes(t, c.bytes), c.mode)
		if !errors.Is(err, c.want) {
			t.Errorf("%d-bit %s: %v, want %v", c.mode, c.bytes, err, c.want)
		}
	}
}

func TestLDMXCSRLoadsAndAdvances(t *testing.T) {
	cpu, env := newLongMode(t)
	cpu.Regs.RSP = 0x8000_0 + 0xff0
	binary.LittleEndian.PutUint32(env.mem[0x80ff4:], 0x9fc0)
	cpu.Regs.RFLAGS |= flagRF
	in, exc, err := Execute(cpu, env, hexBytes(t, "0f ae 54 24 04 90 90"))
	if err != nil || exc != nil {
		t.Fatalf("err %v exc %v", err, exc)
	}
	if in.Op != OpLDMXCSR || env.mxcsr != 0x9fc0 || env.sets != 1 {
		t.Fatalf("op %v mxcsr %#x sets %d", in.Op, env.mxcsr, env.sets)
	}
	if cpu.Regs.RIP != 0x100005 {
		t.Fatalf("rip %#x, want 0x100005", cpu.Regs.RIP)
	}
	if cpu.Regs.RFLAGS&flagRF != 0 {
		t.Fatal("RF not cleared")
	}
	if leaf := env.u64(pt + 0x80*8); leaf&pteAccessed == 0 || leaf&pteDirty != 0 {
		t.Fatalf("leaf PTE %#x: a read sets A only", leaf)
	}
	for _, a := range []uint64{pml4, pdpt, pd} {
		if env.u64(a)&pteAccessed == 0 {
			t.Fatalf("entry at %#x not marked accessed", a)
		}
	}
}

func TestLDMXCSRReservedBitsRaiseGP(t *testing.T) {
	for _, c := range []struct {
		mask, value uint32
		gp          bool
	}{
		{0xffff, 0x1_0000, true}, // bit 16
		{0xffff, 0xffff, false},  // DAZ allowed by this mask
		{0, 0x40, true},          // mask 0 = 0xffbf: DAZ reserved
		{0, 0xffbf, false},
		{0xffbf, 0x8000_1f80, true},
	} {
		cpu, env := newLongMode(t)
		env.mask = c.mask
		cpu.Regs.RAX = 0x9000
		binary.LittleEndian.PutUint32(env.mem[0x9000:], c.value)
		_, exc, err := Execute(cpu, env, hexBytes(t, "0f ae 10"))
		if err != nil {
			t.Fatal(err)
		}
		if !c.gp {
			if exc != nil || env.mxcsr != c.value {
				t.Errorf("mask %#x value %#x: exc %v mxcsr %#x", c.mask, c.value, exc, env.mxcsr)
			}
			continue
		}
		if exc == nil || exc.Vector != VectorGP || !exc.HasErrorCode || exc.ErrorCode != 0 {
			t.Errorf("mask %#x value %#x: exc %v, want #GP(0)", c.mask, c.value, exc)
		}
		if env.sets != 0 || cpu.Regs.RIP != 0x100000 {
			t.Errorf("a faulting ldmxcsr changed state: sets %d rip %#x", env.sets, cpu.Regs.RIP)
		}
	}
}

func TestSTMXCSRStores(t *testing.T) {
	cpu, env := newLongMode(t)
	env.mxcsr = 0x1fa0
	cpu.Regs.RBP = 0x9010
	if _, exc, err := Execute(cpu, env, hexBytes(t, "0f ae 5d f0")); err != nil || exc != nil { // [rbp-0x10]
		t.Fatalf("err %v exc %v", err, exc)
	}
	if got := env.u32(0x9000); got != 0x1fa0 {
		t.Fatalf("stored %#x", got)
	}
	if cpu.Regs.RIP != 0x100004 {
		t.Fatalf("rip %#x", cpu.Regs.RIP)
	}
	if leaf := env.u64(pt + 9*8); leaf&(pteAccessed|pteDirty) != pteAccessed|pteDirty {
		t.Fatalf("leaf %#x: a write sets A and D", leaf)
	}
}

func TestRIPRelativeAndSegmentBase(t *testing.T) {
	cpu, env := newLongMode(t)
	// stmxcsr [rip+0x100]: next instruction at 0x100007.
	env.mxcsr = 0x1234
	if _, exc, err := Execute(cpu, env, hexBytes(t, "0f ae 1d 00 01 00 00")); err != nil || exc != nil {
		t.Fatal(err, exc)
	}
	if got := env.u32(0x100107); got != 0x1234 {
		t.Fatalf("rip-relative store landed elsewhere (%#x at 0x100107)", got)
	}
	// gs:[0x10] with GS.base 0x20000 (how Linux reaches per-CPU data).
	cpu.Sregs.GS.Base = 0x20000
	env.mxcsr = 0x5678
	if _, exc, err := Execute(cpu, env, hexBytes(t, "65 0f ae 1c 25 10 00 00 00")); err != nil || exc != nil {
		t.Fatal(err, exc)
	}
	if got := env.u32(0x20010); got != 0x5678 {
		t.Fatalf("gs-relative store: %#x at 0x20010", got)
	}
	// ds: override is ignored in 64-bit mode even with a (stale) base.
	cpu.Sregs.DS.Base = 0x1000_0000
	cpu.Regs.RBX = 0x30000
	if _, exc, err := Execute(cpu, env, hexBytes(t, "3e 0f ae 1b")); err != nil || exc != nil {
		t.Fatal(err, exc)
	}
	if got := env.u32(0x30000); got != 0x5678 {
		t.Fatalf("ds base applied in long mode: %#x", got)
	}
}

func TestFaults(t *testing.T) {
	type setup func(*CPU, *fakeEnv)
	cases := []struct {
		name   string
		code   string
		set    setup
		vector uint8
		ecode  uint32
		addr   uint64
	}{
		{"lock", "f0 0f ae 10", nil, VectorUD, 0, 0},
		{"CR0.EM", "0f ae 10", func(c *CPU, _ *fakeEnv) { c.Sregs.CR0 |= cr0EM }, VectorUD, 0, 0},
		{"no OSFXSR", "0f ae 10", func(c *CPU, _ *fakeEnv) { c.Sregs.CR4 &^= cr4OSFXSR }, VectorUD, 0, 0},
		{"CR0.TS", "0f ae 18", func(c *CPU, _ *fakeEnv) { c.Sregs.CR0 |= cr0TS }, VectorNM, 0, 0},
		{"not present read", "0f ae 10", func(c *CPU, _ *fakeEnv) { c.Regs.RAX = pageAbsent + 8 }, VectorPF, 0, pageAbsent + 8},
		{"not present write", "0f ae 18", func(c *CPU, _ *fakeEnv) { c.Regs.RAX = pageAbsent }, VectorPF, pfWrite, pageAbsent},
		{"read-only write WP", "0f ae 18", func(c *CPU, _ *fakeEnv) { c.Regs.RAX = pageRO }, VectorPF, pfWrite | pfPresent, pageRO},
		{"crosses into absent page", "0f ae 18", func(c *CPU, _ *fakeEnv) { c.Regs.RAX = pageAbsent - 2 }, VectorPF, pfWrite, pageAbsent},
		{"SMAP", "0f ae 10", func(c *CPU, _ *fakeEnv) { c.Sregs.CR4 |= cr4SMAP; c.Regs.RAX = pageUser }, VectorPF, pfPresent, pageUser},
		{"CPL3 supervisor page", "0f ae 10", func(c *CPU, _ *fakeEnv) { c.Sregs.SS.DPL = 3; c.Regs.RAX = 0x9000 }, VectorPF, pfPresent | pfUser, 0x9000},
		{"CPL3 unaligned AC", "0f ae 10", func(c *CPU, _ *fakeEnv) {
			c.Sregs.SS.DPL = 3
			c.Sregs.CR0 |= cr0AM
			c.Regs.RFLAGS |= flagAC
			c.Regs.RAX = pageUser + 1
		}, VectorAC, 0, 0},
		{"non-canonical", "0f ae 10", func(c *CPU, _ *fakeEnv) { c.Regs.RAX = 0x0000_8000_0000_0000 }, VectorGP, 0, 0},
		{"non-canonical stack", "0f ae 14 24", func(c *CPU, _ *fakeEnv) { c.Regs.RSP = 0x0000_8000_0000_0000 }, VectorSS, 0, 0},
		{"reserved PTE bit", "0f ae 10", func(c *CPU, e *fakeEnv) {
			e.put64(pml4+8, 1<<7|3) // PS is reserved in a PML4E
			c.Regs.RAX = 0x80_0000_0000
		}, VectorPF, pfPresent | pfRsvd, 0x80_0000_0000},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cpu, env := newLongMode(t)
			if c.set != nil {
				c.set(cpu, env)
			}
			before := *cpu
			_, exc, err := Execute(cpu, env, hexBytes(t, c.code))
			if err != nil {
				t.Fatal(err)
			}
			if exc == nil {
				t.Fatal("no exception")
			}
			if exc.Vector != c.vector || exc.ErrorCode != c.ecode || (c.vector == VectorPF && exc.Addr != c.addr) {
				t.Fatalf("got %v (vector %d code %#x addr %#x), want vector %d code %#x addr %#x", exc, exc.Vector, exc.ErrorCode, exc.Addr, c.vector, c.ecode, c.addr)
			}
			if *cpu != before || env.sets != 0 || env.writes != 0 {
				t.Fatalf("state changed on a fault (sets %d, writes %d)", env.sets, env.writes)
			}
		})
	}
}

// A supervisor write to a read-only page without CR0.WP succeeds.
func TestReadOnlyPageWithoutWP(t *testing.T) {
	cpu, env := newLongMode(t)
	cpu.Sregs.CR0 &^= cr0WP
	cpu.Regs.RAX = pageRO
	env.mxcsr = 0x1f80
	if _, exc, err := Execute(cpu, env, hexBytes(t, "0f ae 18")); err != nil || exc != nil {
		t.Fatal(err, exc)
	}
	if env.u32(pageRO) != 0x1f80 {
		t.Fatal("not stored")
	}
}

// A store crossing a page boundary lands in both pages.
func TestAcrossPages(t *testing.T) {
	cpu, env := newLongMode(t)
	cpu.Regs.RAX = 0x9ffe
	env.mxcsr = 0xa1b2c3d4
	if _, exc, err := Execute(cpu, env, hexBytes(t, "0f ae 18")); err != nil || exc != nil {
		t.Fatal(err, exc)
	}
	if got := env.u32(0x9ffe); got != 0xa1b2c3d4 {
		t.Fatalf("%#x", got)
	}
	for _, p := range []uint64{9, 10} {
		if env.u64(pt+p*8)&pteDirty == 0 {
			t.Fatalf("page %#x not dirty", p<<12)
		}
	}
}

func TestProtectedAndRealMode(t *testing.T) {
	// 32-bit protected mode without paging: DS base 0x10000, limit 0xffff.
	cpu, env := newLongMode(t)
	cpu.Sregs.CR0 = 0x11 // PE ET
	cpu.Sregs.EFER = 0
	cpu.Sregs.CS = kvm.Segment{Type: 0xb, Present: 1, S: 1, DB: 1, Limit: 0xffffffff}
	cpu.Sregs.DS = kvm.Segment{Base: 0x10000, Type: 0x3, Present: 1, S: 1, DB: 1, Limit: 0xffff}
	cpu.Regs.RIP = 0x2000
	cpu.Regs.RBX = 0x100
	env.mxcsr = 0x1f81
	if _, exc, err := Execute(cpu, env, hexBytes(t, "0f ae 1b")); err != nil || exc != nil { // [ebx]
		t.Fatal(err, exc)
	}
	if env.u32(0x10100) != 0x1f81 || cpu.Regs.RIP != 0x2003 {
		t.Fatalf("store %#x rip %#x", env.u32(0x10100), cpu.Regs.RIP)
	}
	cpu.Regs.RBX = 0xfffe // the last byte is past the limit
	if _, exc, _ := Execute(cpu, env, hexBytes(t, "0f ae 1b")); exc == nil || exc.Vector != VectorGP {
		t.Fatalf("past the limit: %v, want #GP", exc)
	}
	cpu.Sregs.DS.Type = 0x1 // read-only data
	cpu.Regs.RBX = 0
	if _, exc, _ := Execute(cpu, env, hexBytes(t, "0f ae 1b")); exc == nil || exc.Vector != VectorGP {
		t.Fatalf("store to read-only segment: %v, want #GP", exc)
	}
	cpu.Sregs.DS.Type = 0x3
	cpu.Sregs.SS = kvm.Segment{Base: 0, Type: 0x7, Present: 1, S: 1, DB: 1, Limit: 0xfff} // expand-down: 0x1000..0xffffffff
	cpu.Regs.RBP = 0x800
	if _, exc, _ := Execute(cpu, env, hexBytes(t, "0f ae 5d 00")); exc == nil || exc.Vector != VectorSS { // [ebp]
		t.Fatalf("below an expand-down limit: %v, want #SS", exc)
	}
	cpu.Regs.RBP = 0x3000
	if _, exc, err := Execute(cpu, env, hexBytes(t, "0f ae 5d 00")); err != nil || exc != nil {
		t.Fatalf("inside expand-down: %v %v", err, exc)
	}

	// Real mode: [bp+si] uses SS; linear = SS.base + ((bp+si) & 0xffff).
	cpu, env = newLongMode(t)
	cpu.Sregs.CR0 = 0x10
	cpu.Sregs.EFER = 0
	cpu.Sregs.CR4 = cr4OSFXSR
	cpu.Sregs.CS = kvm.Segment{Base: 0xf0000, Selector: 0xf000, Type: 0xb, Present: 1, S: 1, Limit: 0xffff}
	seg := kvm.Segment{Type: 0x3, Present: 1, S: 1, Limit: 0xffff}
	cpu.Sregs.DS, cpu.Sregs.SS = seg, seg
	cpu.Sregs.SS.Base = 0x20000
	cpu.Regs.RIP = 0xfff0
	cpu.Regs.RBP, cpu.Regs.RSI = 0xfff0, 0x20 // wraps to 0x10
	binary.LittleEndian.PutUint32(env.mem[0x20010:], 0x1f80)
	env.mxcsr = 0
	if _, exc, err := Execute(cpu, env, hexBytes(t, "0f ae 12")); err != nil || exc != nil { // ldmxcsr [bp+si]
		t.Fatal(err, exc)
	}
	if env.mxcsr != 0x1f80 || cpu.Regs.RIP != 0xfff3 {
		t.Fatalf("mxcsr %#x rip %#x", env.mxcsr, cpu.Regs.RIP)
	}
}

func TestUnsupportedLeavesStateAlone(t *testing.T) {
	cpu, env := newLongMode(t)
	before := *cpu
	_, exc, err := Execute(cpu, env, hexBytes(t, "66 0f 38 00 c1")) // pshufb
	if !errors.Is(err, ErrUnsupported) || exc != nil {
		t.Fatalf("err %v exc %v", err, exc)
	}
	if *cpu != before {
		t.Fatal("state changed")
	}
}

func TestOutsideRAMIsAnError(t *testing.T) {
	cpu, env := newLongMode(t)
	env.put64(pt+0x60*8, 0x7fff_0000|pte) // maps past the fake RAM
	cpu.Regs.RAX = 0x60000
	_, exc, err := Execute(cpu, env, hexBytes(t, "0f ae 10"))
	if err == nil || exc != nil {
		t.Fatalf("err %v exc %v", err, exc)
	}
}
