package paging

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// ReadFunc reads len(p) bytes of guest physical memory at gpa.
type ReadFunc func(gpa uint64, p []byte) error

// WriteFunc writes p to guest physical memory at gpa.
type WriteFunc func(gpa uint64, p []byte) error

// Control register and EFER bits used by the walker (Intel SDM Vol. 3A §2.5,
// §2.2.1).
const (
	CR0PG   = 1 << 31 // CR0.PG: paging enabled
	CR4PSE  = 1 << 4  // CR4.PSE: 4 MiB pages in 32-bit paging
	CR4PAE  = 1 << 5  // CR4.PAE: physical address extension
	CR4LA57 = 1 << 12 // CR4.LA57: 5-level paging
	EFERLME = 1 << 8  // EFER.LME: long mode enable
	EFERLMA = 1 << 10 // EFER.LMA: long mode active
	EFERNXE = 1 << 11 // EFER.NXE: execute-disable bit enabled
)

// Paging-structure entry bits (SDM Vol. 3A §4.3-§4.5, tables 4-4 .. 4-20).
const (
	pteP  = 1 << 0
	pteRW = 1 << 1
	pteUS = 1 << 2
	ptePS = 1 << 7
	pteXD = 1 << 63

	// physMask keeps bits 51:12 of an entry: the widest MAXPHYADDR (52).
	physMask = 0x000f_ffff_ffff_f000
)

// Errors returned (wrapped) by Translate. Use errors.Is.
var (
	ErrNotPresent   = errors.New("page not present")
	ErrNonCanonical = errors.New("non-canonical address")
	ErrReserved     = errors.New("reserved bit set in paging entry")
	ErrAddressSize  = errors.New("address outside the mode's linear address space")
)

// CPU is the part of a vCPU's state that determines how it translates
// addresses. The caller fills it from KVM_GET_SREGS (cr0, cr3, cr4, efer).
type CPU struct {
	CR0, CR3, CR4, EFER uint64
}

// Mode is the paging mode selected by CR0, CR4 and EFER (SDM Vol. 3A §4.1.1,
// table 4-1).
type Mode int

// Paging modes.
const (
	ModeNone   Mode = iota // CR0.PG=0: linear address == physical address
	Mode32                 // 32-bit paging
	ModePAE                // PAE paging
	Mode4Level             // 4-level (IA-32e) paging
	Mode5Level             // 5-level paging
)

func (m Mode) String() string {
	switch m {
	case ModeNone:
		return "no paging"
	case Mode32:
		return "32-bit"
	case ModePAE:
		return "PAE"
	case Mode4Level:
		return "4-level"
	case Mode5Level:
		return "5-level"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// Mode returns the paging mode c selects. Long mode is recognised by EFER.LMA
// or, for state captured before the processor set LMA, by EFER.LME with
// CR0.PG and CR4.PAE (SDM Vol. 3A §9.8.5).
func (c CPU) Mode() Mode {
	switch {
	case c.CR0&CR0PG == 0:
		return ModeNone
	case c.CR4&CR4PAE == 0:
		return Mode32
	case c.EFER&(EFERLMA|EFERLME) == 0:
		return ModePAE
	case c.CR4&CR4LA57 != 0:
		return Mode5Level
	default:
		return Mode4Level
	}
}

// Entry is one paging-structure entry read during a walk.
type Entry struct {
	Name  string // "PML5E", "PML4E", "PDPTE", "PDE" or "PTE"
	Level int    // 5..1; 1 is the page table
	Index uint64 // index of the entry within its table
	GPA   uint64 // guest physical address of the entry itself
	Value uint64 // raw entry (32-bit paging: zero-extended)
}

func (e Entry) String() string {
	return fmt.Sprintf("%s[%#x]@%#x=%#x", e.Name, e.Index, e.GPA, e.Value)
}

// Walk describes how one address was translated.
type Walk struct {
	Mode     Mode
	Entries  []Entry // the entries visited, top level first
	PageSize uint64  // 4 KiB, 2 MiB, 4 MiB or 1 GiB; 0 without paging
	// Effective rights: a page is writable or user-accessible only if every
	// level allows it; NX if any level sets XD (only with EFER.NXE).
	Writable, User, NX bool
}

func (w Walk) String() string {
	var b strings.Builder
	b.WriteString(w.Mode.String())
	for _, e := range w.Entries {
		b.WriteByte(' ')
		b.WriteString(e.String())
	}
	if w.PageSize != 0 {
		fmt.Fprintf(&b, " page=%s", sizeName(w.PageSize))
		if w.Writable {
			b.WriteString(" W")
		}
		if w.User {
			b.WriteString(" U")
		}
		if w.NX {
			b.WriteString(" NX")
		}
	}
	return b.String()
}

func sizeName(s uint64) string {
	switch {
	case s >= 1<<30:
		return fmt.Sprintf("%dGiB", s>>30)
	case s >= 1<<20:
		return fmt.Sprintf("%dMiB", s>>20)
	default:
		return fmt.Sprintf("%dKiB", s>>10)
	}
}

// Translate translates the guest virtual address gva with the paging mode
// and tables selected by cpu, reading tables through read. It returns the
// guest physical address and the walk (entries visited so far, also on
// error). A not-present entry yields an error wrapping ErrNotPresent that
// names the level.
func Translate(read ReadFunc, cpu CPU, gva uint64) (uint64, Walk, error) {
	w := Walk{Mode: cpu.Mode(), Writable: true, User: true}
	switch w.Mode {
	case ModeNone:
		w.Writable, w.User = true, true
		return gva, w, nil
	case Mode32:
		return walk32(read, cpu, gva, w)
	case ModePAE:
		return walkPAE(read, cpu, gva, w)
	default:
		return walkLong(read, cpu, gva, w)
	}
}

func readEntry(read ReadFunc, gpa uint64, size int) (uint64, error) {
	var b [8]byte
	if err := read(gpa, b[:size]); err != nil {
		return 0, err
	}
	if size == 4 {
		return uint64(binary.LittleEndian.Uint32(b[:4])), nil
	}
	return binary.LittleEndian.Uint64(b[:]), nil
}

// visit reads one entry, appends it to the walk and folds its rights in.
func (w *Walk) visit(read ReadFunc, name string, level int, table, index uint64, size int, nxe bool, gva uint64) (uint64, error) {
	gpa := table + index*uint64(size)
	v, err := readEntry(read, gpa, size)
	if err != nil {
		return 0, fmt.Errorf("translate %#x: read %s at gpa %#x: %w", gva, name, gpa, err)
	}
	w.Entries = append(w.Entries, Entry{Name: name, Level: level, Index: index, GPA: gpa, Value: v})
	if v&pteP == 0 {
		return v, fmt.Errorf("translate %#x: %s[%#x] at gpa %#x = %#x: %w", gva, name, index, gpa, v, ErrNotPresent)
	}
	if v&pteRW == 0 {
		w.Writable = false
	}
	if v&pteUS == 0 {
		w.User = false
	}
	if nxe && v&pteXD != 0 {
		w.NX = true
	}
	return v, nil
}

// walk32 implements 32-bit paging (SDM Vol. 3A §4.3).
func walk32(read ReadFunc, cpu CPU, gva uint64, w Walk) (uint64, Walk, error) {
	if gva > 0xffff_ffff {
		return 0, w, fmt.Errorf("translate %#x: 32-bit paging: %w", gva, ErrAddressSize)
	}
	pd := cpu.CR3 & 0xffff_f000
	pde, err := w.visit(read, "PDE", 2, pd, gva>>22, 4, false, gva)
	if err != nil {
		return 0, w, err
	}
	if pde&ptePS != 0 && cpu.CR4&CR4PSE != 0 {
		// 4 MiB page: bits 31:22 of the address from PDE[31:22], bits
		// 39:32 from PDE[20:13] (PSE-36, table 4-5).
		w.PageSize = 4 << 20
		base := pde&0xffc0_0000 | (pde>>13&0xff)<<32
		return base | gva&(w.PageSize-1), w, nil
	}
	pte, err := w.visit(read, "PTE", 1, pde&0xffff_f000, gva>>12&0x3ff, 4, false, gva)
	if err != nil {
		return 0, w, err
	}
	w.PageSize = 4 << 10
	return pte&0xffff_f000 | gva&0xfff, w, nil
}

// walkPAE implements PAE paging (SDM Vol. 3A §4.4).
func walkPAE(read ReadFunc, cpu CPU, gva uint64, w Walk) (uint64, Walk, error) {
	if gva > 0xffff_ffff {
		return 0, w, fmt.Errorf("translate %#x: PAE paging: %w", gva, ErrAddressSize)
	}
	nxe := cpu.EFER&EFERNXE != 0
	pdpt := cpu.CR3 & 0xffff_ffe0
	// PDPTEs carry no R/W or U/S bits (table 4-8); only P matters, so
	// visit() would wrongly clear the rights: read it by hand.
	pdptGPA := pdpt + (gva>>30)*8
	pdpte, err := readEntry(read, pdptGPA, 8)
	if err != nil {
		return 0, w, fmt.Errorf("translate %#x: read PDPTE at gpa %#x: %w", gva, pdptGPA, err)
	}
	w.Entries = append(w.Entries, Entry{Name: "PDPTE", Level: 3, Index: gva >> 30, GPA: pdptGPA, Value: pdpte})
	if pdpte&pteP == 0 {
		return 0, w, fmt.Errorf("translate %#x: PDPTE[%#x] at gpa %#x = %#x: %w", gva, gva>>30, pdptGPA, pdpte, ErrNotPresent)
	}
	pde, err := w.visit(read, "PDE", 2, pdpte&physMask, gva>>21&0x1ff, 8, nxe, gva)
	if err != nil {
		return 0, w, err
	}
	if pde&ptePS != 0 {
		w.PageSize = 2 << 20
		return pde&physMask&^(w.PageSize-1) | gva&(w.PageSize-1), w, nil
	}
	pte, err := w.visit(read, "PTE", 1, pde&physMask, gva>>12&0x1ff, 8, nxe, gva)
	if err != nil {
		return 0, w, err
	}
	w.PageSize = 4 << 10
	return pte&physMask | gva&0xfff, w, nil
}

var longNames = [...]string{1: "PTE", 2: "PDE", 3: "PDPTE", 4: "PML4E", 5: "PML5E"}

// Canonical reports whether gva is canonical for the given number of linear
// address bits (48 for 4-level, 57 for 5-level paging; SDM Vol. 1 §3.3.7.1):
// bits 63..bits-1 must all equal bit bits-1.
func Canonical(gva uint64, bits uint) bool {
	top := int64(gva) >> (bits - 1)
	return top == 0 || top == -1
}

// walkLong implements 4-level and 5-level paging (SDM Vol. 3A §4.5).
func walkLong(read ReadFunc, cpu CPU, gva uint64, w Walk) (uint64, Walk, error) {
	levels, bits := 4, uint(48)
	if w.Mode == Mode5Level {
		levels, bits = 5, 57
	}
	if !Canonical(gva, bits) {
		return 0, w, fmt.Errorf("translate %#x: %d-bit linear addresses: %w", gva, bits, ErrNonCanonical)
	}
	nxe := cpu.EFER&EFERNXE != 0
	table := cpu.CR3 & physMask
	for level := levels; level >= 1; level-- {
		shift := 12 + 9*uint(level-1)
		e, err := w.visit(read, longNames[level], level, table, gva>>shift&0x1ff, 8, nxe, gva)
		if err != nil {
			return 0, w, err
		}
		if e&ptePS != 0 && level > 1 {
			if level > 3 {
				// PS is reserved in PML5Es and PML4Es (tables 4-14, 4-15).
				return 0, w, fmt.Errorf("translate %#x: %s has PS set: %w", gva, longNames[level], ErrReserved)
			}
			w.PageSize = 1 << shift // 1 GiB at level 3, 2 MiB at level 2
			return e&physMask&^(w.PageSize-1) | gva&(w.PageSize-1), w, nil
		}
		table = e & physMask
	}
	w.PageSize = 4 << 10
	return table | gva&0xfff, w, nil
}

// ReadVirtual reads len(p) bytes at guest virtual address gva, translating
// each page separately (the range may span pages mapped anywhere).
func ReadVirtual(read ReadFunc, cpu CPU, gva uint64, p []byte) error {
	return eachPage(read, cpu, gva, len(p), func(gpa uint64, off, n int) error {
		return read(gpa, p[off:off+n])
	})
}

// WriteVirtual writes p at guest virtual address gva, translating each page
// separately. Page protections are not enforced (debugger semantics). Every
// page is translated before anything is written, so a failed translation
// writes nothing.
func WriteVirtual(read ReadFunc, write WriteFunc, cpu CPU, gva uint64, p []byte) error {
	type chunk struct {
		gpa    uint64
		off, n int
	}
	var chunks []chunk
	err := eachPage(read, cpu, gva, len(p), func(gpa uint64, off, n int) error {
		chunks = append(chunks, chunk{gpa, off, n})
		return nil
	})
	if err != nil {
		return err
	}
	for _, c := range chunks {
		if err := write(c.gpa, p[c.off:c.off+c.n]); err != nil {
			return err
		}
	}
	return nil
}

func eachPage(read ReadFunc, cpu CPU, gva uint64, n int, fn func(gpa uint64, off, n int) error) error {
	off := 0
	for off < n {
		addr := gva + uint64(off)
		if cpu.Mode() != ModeNone && cpu.Mode() <= ModePAE {
			addr &= 0xffff_ffff // 32-bit linear addresses wrap
		}
		gpa, _, err := Translate(read, cpu, addr)
		if err != nil {
			return err
		}
		chunk := min(n-off, int(4096-addr&0xfff))
		if err := fn(gpa, off, chunk); err != nil {
			return fmt.Errorf("access gva %#x (gpa %#x): %w", addr, gpa, err)
		}
		off += chunk
	}
	return nil
}

// Describe returns a one-line account of how gva translates under cpu, for
// crash reports ("the walk of RIP"): the entries visited and the physical
// address, or the entries up to the failure and the error.
func Describe(read ReadFunc, cpu CPU, gva uint64) string {
	gpa, w, err := Translate(read, cpu, gva)
	if err != nil {
		return fmt.Sprintf("gva %#x: %v: %v", gva, w, err)
	}
	return fmt.Sprintf("gva %#x -> gpa %#x: %v", gva, gpa, w)
}
