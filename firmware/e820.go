package firmware

import (
	"fmt"
	"sort"

	"github.com/vmmgo/vmm/memory"
)

// E820Type is the type of an e820 entry (ACPI 6.5 §15, "Address Range Types").
type E820Type uint32

// e820 types. The PVH memmap uses the same values (XEN_HVM_MEMMAP_TYPE_*).
const (
	E820RAM      E820Type = 1
	E820Reserved E820Type = 2
	E820ACPI     E820Type = 3
	E820NVS      E820Type = 4
	E820Unusable E820Type = 5
)

func (t E820Type) String() string {
	switch t {
	case E820RAM:
		return "usable"
	case E820Reserved:
		return "reserved"
	case E820ACPI:
		return "ACPI data"
	case E820NVS:
		return "ACPI NVS"
	case E820Unusable:
		return "unusable"
	}
	return fmt.Sprintf("type %d", uint32(t))
}

// E820Entry is one range of the physical memory map.
type E820Entry struct {
	Addr uint64
	Size uint64
	Type E820Type
}

// End is the first address after the entry.
func (e E820Entry) End() uint64 { return e.Addr + e.Size }

// MaxE820ZeroPage is the number of e820 slots in boot_params
// (E820_MAX_ENTRIES_ZEROPAGE, zero-page.rst offset 0x2D0).
const MaxE820ZeroPage = 128

// DefaultE820 returns the project's memory map for ramSize bytes of RAM
// mapped from GPA 0 (RAM at or above 0xC0000000 continues at 4 GiB):
// usable [0, 0x9FC00), reserved EBDA [0x9FC00, 0xA0000), reserved
// [0xE0000, 0x100000) (ACPI/MP tables), usable [0x100000, min(RAM, 3 GiB)),
// usable [4 GiB, 4 GiB + the rest).
func DefaultE820(ramSize uint64) ([]E820Entry, error) {
	if ramSize < uint64(HighMemStart)+1<<20 {
		return nil, fmt.Errorf("e820: RAM size %#x below the 2 MiB minimum", ramSize)
	}
	low := ramSize
	if low > uint64(MMIOHoleStart) {
		low = uint64(MMIOHoleStart)
	}
	m := []E820Entry{
		{0, uint64(EBDAStart), E820RAM},
		{uint64(EBDAStart), uint64(EBDAEnd - EBDAStart), E820Reserved},
		{uint64(BIOSROMStart), uint64(HighMemStart - BIOSROMStart), E820Reserved},
		{uint64(HighMemStart), low - uint64(HighMemStart), E820RAM},
	}
	if ramSize > low {
		m = append(m, E820Entry{uint64(HighRAMStart), ramSize - low, E820RAM})
	}
	return m, nil
}

// CheckE820 verifies that a map is sorted, non-empty, without zero-sized,
// wrapping or overlapping entries. Linux sanitizes the map itself, but an
// overlap here is always a VMM bug worth reporting.
func CheckE820(m []E820Entry) error {
	if len(m) == 0 {
		return fmt.Errorf("e820: empty map")
	}
	for i, e := range m {
		if e.Size == 0 {
			return fmt.Errorf("e820: entry %d at %#x has size 0", i, e.Addr)
		}
		if e.Addr+e.Size < e.Addr {
			return fmt.Errorf("e820: entry %d [%#x +%#x) wraps around", i, e.Addr, e.Size)
		}
		if i > 0 && e.Addr < m[i-1].End() {
			return fmt.Errorf("e820: entry %d [%#x, %#x) overlaps or precedes entry %d [%#x, %#x)",
				i, e.Addr, e.End(), i-1, m[i-1].Addr, m[i-1].End())
		}
	}
	return nil
}

// SortE820 returns a copy of m sorted by address.
func SortE820(m []E820Entry) []E820Entry {
	s := append([]E820Entry(nil), m...)
	sort.SliceStable(s, func(i, j int) bool { return s[i].Addr < s[j].Addr })
	return s
}

// highestFit returns the highest page-aligned address a such that
// [a, a+size) lies inside one usable entry, a >= floor and a+size <= limit.
func highestFit(m []E820Entry, size, floor, limit uint64) (memory.GPA, bool) {
	best, ok := uint64(0), false
	for _, e := range m {
		if e.Type != E820RAM {
			continue
		}
		top := e.End()
		if top > limit {
			top = limit
		}
		if top < size {
			continue
		}
		a := alignDown(top-size, memory.PageSize)
		if a < e.Addr || a < floor {
			continue
		}
		if !ok || a > best {
			best, ok = a, true
		}
	}
	return memory.GPA(best), ok
}

// inUsable reports whether [addr, addr+size) lies inside one usable entry.
func inUsable(m []E820Entry, addr, size uint64) bool {
	end := addr + size
	if end < addr {
		return false
	}
	for _, e := range m {
		if e.Type == E820RAM && addr >= e.Addr && end <= e.End() {
			return true
		}
	}
	return false
}
