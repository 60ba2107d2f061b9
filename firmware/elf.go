package firmware

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

// ELF constants (System V gABI, "ELF Header", "Program Header", "Note Section").
const (
	elfClass64    = 2
	elfData2LSB   = 1
	elfMachineX86 = 62 // EM_X86_64
	ptLoad        = 1
	ptNote        = 4
	elfHdrSize    = 64
	elfPhdrSize   = 56
	maxPhdrs      = 256

	// XenElfnotePhys32Entry is XEN_ELFNOTE_PHYS32_ENTRY
	// (xen/include/public/elfnote.h): the 32-bit PVH entry point.
	XenElfnotePhys32Entry = 18
)

// ELFSegment is one PT_LOAD program header.
type ELFSegment struct {
	Offset, VAddr, PAddr, FileSize, MemSize uint64
}

// ELFImage is a parsed x86-64 ELF kernel.
type ELFImage struct {
	Entry    uint64 // e_entry as found (may be virtual)
	Segments []ELFSegment
	// PVHEntry is the XEN_ELFNOTE_PHYS32_ENTRY value; HasPVH says it exists.
	PVHEntry uint64
	HasPVH   bool
	file     []byte
}

func hasELFMagic(img []byte) bool { return len(img) >= 4 && bytes.Equal(img[:4], []byte("\x7fELF")) }

// ParseELF parses an ELF64 little-endian x86-64 executable: its PT_LOAD
// segments (every offset and size checked against the file) and the PVH
// entry note.
func ParseELF(img []byte) (*ELFImage, error) {
	if !hasELFMagic(img) {
		return nil, fmt.Errorf("ELF: no \\x7fELF magic")
	}
	if len(img) < elfHdrSize {
		return nil, fmt.Errorf("ELF: file of %d bytes shorter than the %d-byte ELF64 header", len(img), elfHdrSize)
	}
	if img[4] != elfClass64 {
		return nil, fmt.Errorf("ELF: class %d, only ELFCLASS64 (2) kernels are supported", img[4])
	}
	if img[5] != elfData2LSB {
		return nil, fmt.Errorf("ELF: data encoding %d, want little-endian (1)", img[5])
	}
	le := binary.LittleEndian
	if m := le.Uint16(img[18:]); m != elfMachineX86 {
		return nil, fmt.Errorf("ELF: machine %d, want EM_X86_64 (62)", m)
	}
	e := &ELFImage{Entry: le.Uint64(img[24:]), file: img}
	phoff := le.Uint64(img[32:])
	phentsize := uint64(le.Uint16(img[54:]))
	phnum := uint64(le.Uint16(img[56:]))
	if phnum == 0 {
		return nil, fmt.Errorf("ELF: no program headers")
	}
	if phnum > maxPhdrs {
		return nil, fmt.Errorf("ELF: %d program headers, more than the %d accepted", phnum, maxPhdrs)
	}
	if phentsize < elfPhdrSize {
		return nil, fmt.Errorf("ELF: e_phentsize %d smaller than %d", phentsize, elfPhdrSize)
	}
	if phoff > uint64(len(img)) || phnum*phentsize > uint64(len(img))-phoff {
		return nil, fmt.Errorf("ELF: program headers [%#x +%d*%d) beyond file size %d", phoff, phnum, phentsize, len(img))
	}
	for i := uint64(0); i < phnum; i++ {
		ph := img[phoff+i*phentsize:]
		typ := le.Uint32(ph[0:])
		off, vaddr, paddr := le.Uint64(ph[8:]), le.Uint64(ph[16:]), le.Uint64(ph[24:])
		filesz, memsz := le.Uint64(ph[32:]), le.Uint64(ph[40:])
		switch typ {
		case ptLoad:
			if filesz > memsz {
				return nil, fmt.Errorf("ELF: segment %d p_filesz %#x larger than p_memsz %#x", i, filesz, memsz)
			}
			if off > uint64(len(img)) || filesz > uint64(len(img))-off {
				return nil, fmt.Errorf("ELF: segment %d file range [%#x +%#x) beyond file size %d", i, off, filesz, len(img))
			}
			if paddr+memsz < paddr {
				return nil, fmt.Errorf("ELF: segment %d [%#x +%#x) wraps around", i, paddr, memsz)
			}
			e.Segments = append(e.Segments, ELFSegment{Offset: off, VAddr: vaddr, PAddr: paddr, FileSize: filesz, MemSize: memsz})
		case ptNote:
			if off > uint64(len(img)) || filesz > uint64(len(img))-off {
				return nil, fmt.Errorf("ELF: note segment %d [%#x +%#x) beyond file size %d", i, off, filesz, len(img))
			}
			v, ok, err := findPVHNote(img[off : off+filesz])
			if err != nil {
				return nil, fmt.Errorf("ELF: note segment %d: %w", i, err)
			}
			if ok {
				e.PVHEntry, e.HasPVH = v, true
			}
		}
	}
	if len(e.Segments) == 0 {
		return nil, fmt.Errorf("ELF: no PT_LOAD segment")
	}
	return e, nil
}

// findPVHNote walks the notes of one PT_NOTE segment (gABI "Note Section":
// namesz, descsz, type, name padded to 4, desc padded to 4) for the Xen note
// XEN_ELFNOTE_PHYS32_ENTRY, whose descriptor is a 4- or 8-byte address.
func findPVHNote(b []byte) (uint64, bool, error) {
	le := binary.LittleEndian
	for len(b) >= 12 {
		namesz, descsz, typ := uint64(le.Uint32(b[0:])), uint64(le.Uint32(b[4:])), le.Uint32(b[8:])
		b = b[12:]
		nameEnd := alignUp(namesz, 4)
		if nameEnd > uint64(len(b)) {
			return 0, false, fmt.Errorf("note name of %d bytes beyond the segment", namesz)
		}
		name := b[:namesz]
		b = b[nameEnd:]
		descEnd := alignUp(descsz, 4)
		if descEnd > uint64(len(b)) {
			return 0, false, fmt.Errorf("note descriptor of %d bytes beyond the segment", descsz)
		}
		desc := b[:descsz]
		b = b[descEnd:]
		if typ != XenElfnotePhys32Entry || string(bytes.TrimRight(name, "\x00")) != "Xen" {
			continue
		}
		switch descsz {
		case 4:
			return uint64(le.Uint32(desc)), true, nil
		case 8:
			return le.Uint64(desc), true, nil
		default:
			return 0, false, fmt.Errorf("XEN_ELFNOTE_PHYS32_ENTRY descriptor of %d bytes, want 4 or 8", descsz)
		}
	}
	return 0, false, nil
}

// physEntry translates e_entry to a physical address: Linux's vmlinux has a
// physical e_entry (phys_startup_64), but a virtual one is mapped through the
// segment that contains it.
func (e *ELFImage) physEntry() (uint64, error) {
	for _, s := range e.Segments {
		if e.Entry >= s.PAddr && e.Entry-s.PAddr < s.MemSize {
			return e.Entry, nil
		}
	}
	for _, s := range e.Segments {
		if e.Entry >= s.VAddr && e.Entry-s.VAddr < s.MemSize {
			return s.PAddr + (e.Entry - s.VAddr), nil
		}
	}
	return 0, fmt.Errorf("ELF: entry %#x is in no PT_LOAD segment", e.Entry)
}

// span returns the lowest physical address and the end of the highest
// segment.
func (e *ELFImage) span() (lo, hi uint64) {
	lo = ^uint64(0)
	for _, s := range e.Segments {
		if s.PAddr < lo {
			lo = s.PAddr
		}
		if s.PAddr+s.MemSize > hi {
			hi = s.PAddr + s.MemSize
		}
	}
	return lo, hi
}
