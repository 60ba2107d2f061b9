package paging

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// mem is guest physical memory for tests: a byte slice at GPA 0.
type mem []byte

func (m mem) read(gpa uint64, p []byte) error {
	if gpa > uint64(len(m)) || uint64(len(p)) > uint64(len(m))-gpa {
		return fmt.Errorf("gpa %#x+%d out of range", gpa, len(p))
	}
	copy(p, m[gpa:])
	return nil
}

func (m mem) write(gpa uint64, p []byte) error {
	if gpa > uint64(len(m)) || uint64(len(p)) > uint64(len(m))-gpa {
		return fmt.Errorf("gpa %#x+%d out of range", gpa, len(p))
	}
	copy(m[gpa:], p)
	return nil
}

func (m mem) put32(gpa uint64, v uint32) { binary.LittleEndian.PutUint32(m[gpa:], v) }
func (m mem) put64(gpa uint64, v uint64) { binary.LittleEndian.PutUint64(m[gpa:], v) }

const (
	p  = pteP
	rw = pteRW
	us = pteUS
	ps = ptePS
)

func TestNoPaging(t *testing.T) {
	m := make(mem, 4096)
	for _, cpu := range []CPU{{}, {CR0: 1, CR4: CR4PAE, EFER: EFERLME}} {
		gpa, w, err := Translate(m.read, cpu, 0x1234_5678)
		if err != nil || gpa != 0x1234_5678 || w.Mode != ModeNone || len(w.Entries) != 0 {
			t.Fatalf("cpu %+v: got %#x %+v %v", cpu, gpa, w, err)
		}
	}
}

func TestModeSelection(t *testing.T) {
	for _, tc := range []struct {
		cpu  CPU
		want Mode
	}{
		{CPU{CR0: CR0PG}, Mode32},
		{CPU{CR0: CR0PG, CR4: CR4PSE}, Mode32},
		{CPU{CR0: CR0PG, CR4: CR4PAE}, ModePAE},
		{CPU{CR0: CR0PG, CR4: CR4PAE, EFER: EFERLME | EFERLMA}, Mode4Level},
		{CPU{CR0: CR0PG, CR4: CR4PAE, EFER: EFERLME}, Mode4Level},
		{CPU{CR0: CR0PG, CR4: CR4PAE | CR4LA57, EFER: EFERLMA}, Mode5Level},
	} {
		if got := tc.cpu.Mode(); got != tc.want {
			t.Errorf("%+v: mode %v, want %v", tc.cpu, got, tc.want)
		}
	}
}

func Test32Bit(t *testing.T) {
	m := make(mem, 64<<10)
	// PD at 0x1000, PT at 0x2000.
	cpu := CPU{CR0: CR0PG | 1, CR3: 0x1000 | 0x18 /* PWT|PCD ignored */}
	gva := uint64(0x0040_3abc) // PDE 1, PTE 3
	m.put32(0x1000+1*4, 0x2000|p|rw|us)
	m.put32(0x2000+3*4, 0x7000|p|us) // read-only user page
	gpa, w, err := Translate(m.read, cpu, gva)
	if err != nil {
		t.Fatal(err)
	}
	if gpa != 0x7abc {
		t.Fatalf("gpa %#x, want 0x7abc", gpa)
	}
	if w.PageSize != 4096 || w.Writable || !w.User || w.NX || len(w.Entries) != 2 {
		t.Fatalf("walk %+v", w)
	}
	if e := w.Entries[0]; e.Name != "PDE" || e.GPA != 0x1004 || e.Index != 1 {
		t.Fatalf("PDE entry %+v", e)
	}
	if e := w.Entries[1]; e.Name != "PTE" || e.GPA != 0x200c || e.Value != 0x7000|p|us {
		t.Fatalf("PTE entry %+v", e)
	}

	// A 4 MiB page with PSE-36 bits: PDE 2 maps 0x12_0080_0000.
	m.put32(0x1000+2*4, 0x0080_0000|0x12<<13|p|rw|ps)
	cpu.CR4 = CR4PSE
	gpa, w, err = Translate(m.read, cpu, 0x0081_2345)
	if err != nil || gpa != 0x12_0081_2345 || w.PageSize != 4<<20 || !w.Writable || w.User {
		t.Fatalf("4M page: gpa %#x walk %+v err %v", gpa, w, err)
	}
	// Without CR4.PSE the PS bit is ignored: the PDE points to a page table.
	cpu.CR4 = 0
	_, w, err = Translate(m.read, cpu, 0x0081_2345)
	if err == nil || w.PageSize != 0 || !strings.Contains(err.Error(), "PTE") {
		t.Fatalf("PS without PSE: walk %+v err %v", w, err)
	}
	// Not present PDE and out-of-range address.
	_, _, err = Translate(m.read, cpu, 0x4000_0000)
	if !errors.Is(err, ErrNotPresent) || !strings.Contains(err.Error(), "PDE") {
		t.Fatalf("not present: %v", err)
	}
	_, _, err = Translate(m.read, cpu, 1<<32)
	if !errors.Is(err, ErrAddressSize) {
		t.Fatalf("4 GiB: %v", err)
	}
}

func TestPAE(t *testing.T) {
	m := make(mem, 64<<10)
	// PDPT at 0x1020 (32-byte aligned), PD at 0x2000, PT at 0x3000.
	cpu := CPU{CR0: CR0PG | 1, CR3: 0x1020, CR4: CR4PAE, EFER: EFERNXE}
	m.put64(0x1020+3*8, 0x2000|p) // PDPTE 3 covers 0xc000_0000..
	m.put64(0x2000+5*8, 0x3000|p|rw|us)
	m.put64(0x3000+7*8, 0x1_2345_6000|p|rw|us|pteXD)
	m.put64(0x2000+6*8, 0x4020_0000|p|rw|ps|1<<12 /* PAT */)
	gva := uint64(0xc000_0000 | 5<<21 | 7<<12 | 0x123)
	gpa, w, err := Translate(m.read, cpu, gva)
	if err != nil || gpa != 0x1_2345_6123 {
		t.Fatalf("4K: gpa %#x err %v", gpa, err)
	}
	if !w.Writable || !w.User || !w.NX || w.PageSize != 4096 || len(w.Entries) != 3 || w.Entries[0].Name != "PDPTE" {
		t.Fatalf("4K walk %+v", w)
	}
	gpa, w, err = Translate(m.read, cpu, 0xc000_0000|6<<21|0x1_5678)
	if err != nil || gpa != 0x4021_5678 || w.PageSize != 2<<20 || w.User || w.NX {
		t.Fatalf("2M: gpa %#x walk %+v err %v", gpa, w, err)
	}
	// XD is only honoured with EFER.NXE.
	cpu.EFER = 0
	if _, w, _ = Translate(m.read, cpu, gva); w.NX {
		t.Fatalf("NX without NXE")
	}
	_, _, err = Translate(m.read, cpu, 0x4000_0000)
	if !errors.Is(err, ErrNotPresent) || !strings.Contains(err.Error(), "PDPTE") {
		t.Fatalf("not present: %v", err)
	}
}

// longTables builds 4-level (or 5-level) tables mapping:
//
//	0x0000_7f00_0000_1000 -> 0x9000 (4 KiB, user rw)
//	0x0000_7f00_0020_0000 -> 0x20_0000 (2 MiB)
//	0x0000_7f00_4000_0000 -> 0x1_4000_0000 (1 GiB, NX)
func longTables(m mem, five bool) CPU {
	cpu := CPU{CR0: CR0PG | 1, CR3: 0x1000, CR4: CR4PAE, EFER: EFERLME | EFERLMA | EFERNXE}
	top := uint64(0x1000)
	if five {
		cpu.CR4 |= CR4LA57
		cpu.CR3 = 0x6000 | 0x5 // low bits: PCID, ignored
		m.put64(0x6000+0*8, 0x1000|p|rw|us)
		top = 0x1000
	}
	const gva = 0x0000_7f00_0000_0000
	m.put64(top+(gva>>39&0x1ff)*8, 0x2000|p|rw|us) // PML4E 254
	m.put64(0x2000+0*8, 0x3000|p|rw|us)            // PDPTE 0
	m.put64(0x3000+0*8, 0x4000|p|rw|us)            // PDE 0
	m.put64(0x4000+1*8, 0x9000|p|rw|us)            // PTE 1
	m.put64(0x3000+1*8, 0x20_0000|p|rw|ps)         // PDE 1: 2 MiB
	m.put64(0x2000+1*8, 0x1_4000_0000|p|rw|us|ps|pteXD)
	return cpu
}

func TestLongMode(t *testing.T) {
	for _, five := range []bool{false, true} {
		t.Run(fmt.Sprintf("five=%v", five), func(t *testing.T) {
			m := make(mem, 64<<10)
			cpu := longTables(m, five)
			levels := 4
			if five {
				levels = 5
			}
			for _, tc := range []struct {
				gva, gpa, size uint64
				entries        int
				user, nx       bool
			}{
				{0x7f00_0000_1abc, 0x9abc, 4 << 10, levels, true, false},
				{0x7f00_0021_2345, 0x21_2345, 2 << 20, levels - 1, false, false},
				{0x7f00_7fff_fff0, 0x1_7fff_fff0, 1 << 30, levels - 2, true, true},
			} {
				gpa, w, err := Translate(m.read, cpu, tc.gva)
				if err != nil {
					t.Fatalf("%#x: %v", tc.gva, err)
				}
				if gpa != tc.gpa || w.PageSize != tc.size || len(w.Entries) != tc.entries || w.User != tc.user || w.NX != tc.nx || !w.Writable {
					t.Errorf("%#x: gpa %#x walk %v", tc.gva, gpa, w)
				}
				if w.Entries[0].Name != map[bool]string{false: "PML4E", true: "PML5E"}[five] {
					t.Errorf("first entry %v", w.Entries[0])
				}
			}
		})
	}
}

func TestLongModeErrors(t *testing.T) {
	m := make(mem, 64<<10)
	cpu := longTables(m, false)
	for _, tc := range []struct {
		gva   uint64
		err   error
		level string
	}{
		{0x0000_1000_0000_0000, ErrNotPresent, "PML4E"},
		{0x7f00_8000_0000, ErrNotPresent, "PDPTE"},
		{0x7f00_0060_0000, ErrNotPresent, "PDE"},
		{0x7f00_0000_5000, ErrNotPresent, "PTE"},
		{0x0000_8000_0000_0000, ErrNonCanonical, "canonical"},
		{0xffff_7fff_ffff_ffff, ErrNonCanonical, "canonical"},
	} {
		_, w, err := Translate(m.read, cpu, tc.gva)
		if !errors.Is(err, tc.err) || !strings.Contains(err.Error(), tc.level) {
			t.Errorf("%#x: err %v, want %v naming %s (walk %v)", tc.gva, err, tc.err, tc.level, w)
		}
	}
	// The upper half is canonical (and here not present at the PML4E).
	if _, _, err := Translate(m.read, cpu, 0xffff_8000_0000_0000); !errors.Is(err, ErrNotPresent) {
		t.Errorf("upper half: %v", err)
	}
	// A 5-level address that is only canonical with LA57.
	cpu5 := longTables(m, true)
	if _, _, err := Translate(m.read, cpu5, 0x0100_0000_0000_0000); !errors.Is(err, ErrNonCanonical) {
		t.Errorf("57-bit: %v", err)
	}
	if _, _, err := Translate(m.read, cpu5, 0x00ff_0000_0000_0000); !errors.Is(err, ErrNotPresent) {
		t.Errorf("57-bit in range: %v", err)
	}
	// PS in a PML4E is reserved.
	m.put64(0x1000+3*8, 0x5000|p|ps)
	if _, _, err := Translate(m.read, cpu, 3<<39); !errors.Is(err, ErrReserved) {
		t.Errorf("PS in PML4E: %v", err)
	}
	// Table pointing outside memory: the read error is wrapped.
	m.put64(0x1000+4*8, 0x7fff_0000|p)
	if _, _, err := Translate(m.read, cpu, 4<<39); err == nil || !strings.Contains(err.Error(), "out of range") {
		t.Errorf("bad table: %v", err)
	}
}

func TestCanonical(t *testing.T) {
	for _, tc := range []struct {
		a    uint64
		bits uint
		want bool
	}{
		{0, 48, true},
		{0x7fff_ffff_ffff, 48, true},
		{0x8000_0000_0000, 48, false},
		{0xffff_8000_0000_0000, 48, true},
		{0xfffe_8000_0000_0000, 48, false},
		{0x01ff_ffff_ffff_ffff, 57, false},
		{0x0100_0000_0000_0000, 57, false},
		{0x00ff_ffff_ffff_ffff, 57, true},
		{0xff00_0000_0000_0000, 57, true},
	} {
		if got := Canonical(tc.a, tc.bits); got != tc.want {
			t.Errorf("Canonical(%#x, %d) = %v", tc.a, tc.bits, got)
		}
	}
}

func TestWalkString(t *testing.T) {
	m := make(mem, 64<<10)
	cpu := longTables(m, false)
	_, w, err := Translate(m.read, cpu, 0x7f00_0000_1abc)
	if err != nil {
		t.Fatal(err)
	}
	s := w.String()
	for _, want := range []string{"4-level", "PML4E[0xfe]@0x17f0=0x2007", "PDPTE[0x0]@0x2000", "PTE[0x1]@0x4008=0x9007", "page=4KiB W U"} {
		if !strings.Contains(s, want) {
			t.Errorf("%q lacks %q", s, want)
		}
	}
}

func TestReadWriteVirtual(t *testing.T) {
	m := make(mem, 64<<10)
	cpu := longTables(m, false)
	// Map the page after 0x7f00_0000_1000 to 0xb000: the two virtual pages
	// are not contiguous physically.
	m.put64(0x4000+2*8, 0xb000|p|rw)
	copy(m[0x9ffe:], "ab")
	copy(m[0xb000:], "cd")
	buf := make([]byte, 4)
	if err := ReadVirtual(m.read, cpu, 0x7f00_0000_1ffe, buf); err != nil || string(buf) != "abcd" {
		t.Fatalf("read %q %v", buf, err)
	}
	if err := WriteVirtual(m.read, m.write, cpu, 0x7f00_0000_1fff, []byte("XY")); err != nil {
		t.Fatal(err)
	}
	if m[0x9fff] != 'X' || m[0xb000] != 'Y' {
		t.Fatalf("write landed wrong: %q %q", m[0x9fff], m[0xb000])
	}
	// A write crossing into an unmapped page writes nothing.
	before := bytes.Clone(m)
	err := WriteVirtual(m.read, m.write, cpu, 0x7f00_0000_2fff, []byte("ZZ"))
	if !errors.Is(err, ErrNotPresent) {
		t.Fatalf("write to unmapped: %v", err)
	}
	if !bytes.Equal(before, m) {
		t.Fatal("partial write on failed translation")
	}
	if err := ReadVirtual(m.read, cpu, 0x7f00_0000_2fff, buf); !errors.Is(err, ErrNotPresent) {
		t.Fatalf("read from unmapped: %v", err)
	}
}

// FuzzTranslate walks random tables with random control registers: it must
// never panic and must return a sane walk.
func FuzzTranslate(f *testing.F) {
	f.Add(make([]byte, 64), uint64(CR0PG), uint64(0), uint64(CR4PAE), uint64(EFERLMA), uint64(0x1234))
	f.Add([]byte{0x07, 0x10, 0, 0, 0, 0, 0, 0x80}, uint64(CR0PG), uint64(0), uint64(CR4PSE), uint64(0), uint64(0xffff_ffff))
	f.Fuzz(func(t *testing.T, data []byte, cr0, cr3, cr4, efer, gva uint64) {
		m := mem(data)
		cpu := CPU{CR0: cr0, CR3: cr3, CR4: cr4, EFER: efer}
		_, w, err := Translate(m.read, cpu, gva)
		if len(w.Entries) > 5 {
			t.Fatalf("%d entries", len(w.Entries))
		}
		if err == nil && cpu.Mode() != ModeNone && w.PageSize == 0 {
			t.Fatalf("success without a page size: %+v", w)
		}
		_ = w.String()
	})
}

func TestDescribe(t *testing.T) {
	m := make(mem, 64<<10)
	cpu := longTables(m, false)
	if got := Describe(m.read, cpu, 0x7f00_0021_2345); !strings.HasPrefix(got, "gva 0x7f0000212345 -> gpa 0x212345: 4-level PML4E") || !strings.HasSuffix(got, "page=2MiB W") {
		t.Errorf("Describe: %q", got)
	}
	if got := Describe(m.read, cpu, 0x7f00_0000_5000); !strings.Contains(got, "PTE[0x5]@0x4028=0x0") || !strings.Contains(got, "not present") {
		t.Errorf("Describe not present: %q", got)
	}
}
