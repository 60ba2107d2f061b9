package firmware

import (
	"encoding/binary"
	"fmt"
)

// boot_params layout (Documentation/arch/x86/zero-page.rst).
const (
	BootParamsSize    = 4096
	bpACPIRSDPAddr    = 0x070
	bpExtRamdiskImage = 0x0C0
	bpExtRamdiskSize  = 0x0C4
	bpExtCmdLinePtr   = 0x0C8
	bpE820Entries     = 0x1E8
	bpSentinel        = 0x1EF
	bpE820Table       = 0x2D0
	e820EntrySize     = 20
	typeOfLoaderUndef = 0xFF // "undefined" boot loader (boot.rst type_of_loader)
	heapEndPtr        = 0xFE00
)

// fillBootParams sets the loader-owned fields of boot_params bp, whose
// setup header is already in place.
func fillBootParams(bp []byte, bi *BootInfo, cfg Config) error {
	le := binary.LittleEndian
	if len(cfg.E820) > MaxE820ZeroPage {
		return fmt.Errorf("boot_params: %d e820 entries, the zero page holds %d", len(cfg.E820), MaxE820ZeroPage)
	}
	bp[offTypeOfLoader] = typeOfLoaderUndef
	bp[offLoadflags] |= LoadflagLoadedHigh | LoadflagCanUseHeap
	le.PutUint16(bp[offHeapEndPtr:], heapEndPtr)
	le.PutUint32(bp[offCmdLinePtr:], uint32(bi.CmdlineAddr))
	le.PutUint32(bp[bpExtCmdLinePtr:], uint32(bi.CmdlineAddr>>32))
	le.PutUint32(bp[offRamdiskImage:], uint32(bi.InitrdAddr))
	le.PutUint32(bp[bpExtRamdiskImage:], uint32(bi.InitrdAddr>>32))
	le.PutUint32(bp[offRamdiskSize:], uint32(bi.InitrdSize))
	le.PutUint32(bp[bpExtRamdiskSize:], uint32(bi.InitrdSize>>32))
	le.PutUint64(bp[bpACPIRSDPAddr:], uint64(cfg.RSDPAddr))
	bp[bpSentinel] = 0 // nonzero makes the kernel wipe "uninitialized" fields
	bp[bpE820Entries] = uint8(len(cfg.E820))
	for i, e := range cfg.E820 {
		o := bpE820Table + i*e820EntrySize
		le.PutUint64(bp[o:], e.Addr)
		le.PutUint64(bp[o+8:], e.Size)
		le.PutUint32(bp[o+16:], uint32(e.Type))
	}
	return nil
}

// BootParams is a decoded view of the boot_params fields the loader sets,
// for tests and for the VMM's diagnostics.
type BootParams struct {
	BootFlag     uint16
	Version      uint16
	TypeOfLoader uint8
	Loadflags    uint8
	CmdLinePtr   uint64
	RamdiskImage uint64
	RamdiskSize  uint64
	ACPIRSDPAddr uint64
	CmdlineSize  uint32
	E820         []E820Entry
}

// DecodeBootParams decodes a 4096-byte zero page.
func DecodeBootParams(bp []byte) (*BootParams, error) {
	if len(bp) < BootParamsSize {
		return nil, fmt.Errorf("boot_params: %d bytes, want %d", len(bp), BootParamsSize)
	}
	le := binary.LittleEndian
	n := int(bp[bpE820Entries])
	if n > MaxE820ZeroPage {
		return nil, fmt.Errorf("boot_params: e820_entries %d exceeds %d", n, MaxE820ZeroPage)
	}
	p := &BootParams{
		BootFlag:     le.Uint16(bp[offBootFlag:]),
		Version:      le.Uint16(bp[offVersion:]),
		TypeOfLoader: bp[offTypeOfLoader],
		Loadflags:    bp[offLoadflags],
		CmdLinePtr:   uint64(le.Uint32(bp[offCmdLinePtr:])) | uint64(le.Uint32(bp[bpExtCmdLinePtr:]))<<32,
		RamdiskImage: uint64(le.Uint32(bp[offRamdiskImage:])) | uint64(le.Uint32(bp[bpExtRamdiskImage:]))<<32,
		RamdiskSize:  uint64(le.Uint32(bp[offRamdiskSize:])) | uint64(le.Uint32(bp[bpExtRamdiskSize:]))<<32,
		ACPIRSDPAddr: le.Uint64(bp[bpACPIRSDPAddr:]),
		CmdlineSize:  le.Uint32(bp[offCmdlineSize:]),
	}
	for i := 0; i < n; i++ {
		o := bpE820Table + i*e820EntrySize
		p.E820 = append(p.E820, E820Entry{le.Uint64(bp[o:]), le.Uint64(bp[o+8:]), E820Type(le.Uint32(bp[o+16:]))})
	}
	return p, nil
}
