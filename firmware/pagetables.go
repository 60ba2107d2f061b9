package firmware

import (
	"encoding/binary"
	"fmt"

	"github.com/vmmgo/vmm/memory"
)

// Page-table entry bits (Intel SDM Vol. 3A §4.5, Tables 4-15..4-18).
const (
	PTEPresent  = 1 << 0
	PTEWritable = 1 << 1
	PTEUser     = 1 << 2
	PTELarge    = 1 << 7 // PS: a 2 MiB page in a PD entry
	pteAddrMask = 0x000F_FFFF_FFFF_F000

	maxIdentityMap = 512 << 30 // one PDPT
)

// BuildIdentityPageTables writes 4-level page tables identity-mapping
// [0, size) with 2 MiB pages: PML4 at pml4, one PDPT at pml4+0x1000, PDs
// from pml4+0x2000 (one per GiB). user sets the U/S bit at every level so
// CPL3 code can use the mapping. size is rounded up to 1 GiB, at most 512
// GiB. It returns the first address after the tables. The map is what
// boot.rst asks of the 64-bit entry ("identity mapped for the range of
// loaded kernel, zero page and command line buffer").
func BuildIdentityPageTables(mem Memory, pml4 memory.GPA, size uint64, user bool) (memory.GPA, error) {
	if pml4%memory.PageSize != 0 {
		return 0, fmt.Errorf("page tables: PML4 address %v not page aligned", pml4)
	}
	if size == 0 || size > maxIdentityMap {
		return 0, fmt.Errorf("page tables: identity map of %#x bytes, want 1..%#x", size, uint64(maxIdentityMap))
	}
	flags := uint64(PTEPresent | PTEWritable)
	if user {
		flags |= PTEUser
	}
	nPD := int(alignUp(size, 1<<30) >> 30)
	pdpt := pml4 + memory.PageSize
	pd0 := pdpt + memory.PageSize
	le := binary.LittleEndian
	page := make([]byte, memory.PageSize)
	le.PutUint64(page, uint64(pdpt)|flags)
	if err := write(mem, "PML4", pml4, page); err != nil {
		return 0, err
	}
	clear(page)
	for i := 0; i < nPD; i++ {
		le.PutUint64(page[8*i:], uint64(pd0)+uint64(i)*memory.PageSize|flags)
	}
	if err := write(mem, "PDPT", pdpt, page); err != nil {
		return 0, err
	}
	for i := 0; i < nPD; i++ {
		for j := 0; j < 512; j++ {
			addr := uint64(i)<<30 | uint64(j)<<21
			le.PutUint64(page[8*j:], addr|flags|PTELarge)
		}
		if err := write(mem, "PD", pd0+memory.GPA(i)*memory.PageSize, page); err != nil {
			return 0, err
		}
	}
	return pd0 + memory.GPA(nPD)*memory.PageSize, nil
}

// Translate walks 4-level page tables rooted at cr3 in guest memory and
// returns the physical address of va, like the MMU would (for tests and the
// VMM's debugger). It follows 1 GiB and 2 MiB pages.
func Translate(mem Memory, cr3 memory.GPA, va uint64) (memory.GPA, error) {
	table := uint64(cr3) & pteAddrMask
	var b [8]byte
	for level, shift := 4, uint(39); level >= 1; level, shift = level-1, shift-9 {
		idx := va >> shift & 0x1ff
		if err := mem.Read(memory.GPA(table+8*idx), b[:]); err != nil {
			return 0, fmt.Errorf("translate %#x: level %d table at %#x: %w", va, level, table, err)
		}
		e := binary.LittleEndian.Uint64(b[:])
		if e&PTEPresent == 0 {
			return 0, fmt.Errorf("translate %#x: level %d entry %d not present", va, level, idx)
		}
		if (level == 3 || level == 2) && e&PTELarge != 0 {
			pageMask := uint64(1)<<shift - 1
			return memory.GPA(e&pteAddrMask&^pageMask | va&pageMask), nil
		}
		table = e & pteAddrMask
	}
	return memory.GPA(table | va&0xfff), nil
}
