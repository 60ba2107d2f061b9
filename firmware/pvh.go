package firmware

import (
	"encoding/binary"
	"fmt"

	"github.com/vmmgo/vmm/memory"
)

// hvm_start_info and friends (xen/include/public/arch-x86/hvm/start_info.h).
const (
	PVHStartInfoMagic   = 0x336ec578
	pvhStartInfoVersion = 1
	startInfoSize       = 56 // version 1
	modlistEntrySize    = 32 // hvm_modlist_entry
	memmapEntrySize     = 24 // hvm_memmap_table_entry
	pvhModlistOff       = 0x40
	pvhMemmapOff        = 0x80
	pvhAreaSize         = memory.PageSize // start_info, modlist and memmap share one page
)

// writeStartInfo writes hvm_start_info at cfg.StartInfoAddr with the
// module list (the initrd) at +0x40 and the memory map at +0x80.
func writeStartInfo(mem Memory, bi *BootInfo, cfg Config) error {
	if pvhMemmapOff+len(cfg.E820)*memmapEntrySize > pvhAreaSize {
		return fmt.Errorf("PVH: %d memmap entries do not fit in the start_info page", len(cfg.E820))
	}
	le := binary.LittleEndian
	b := make([]byte, pvhMemmapOff+len(cfg.E820)*memmapEntrySize)
	base := uint64(cfg.StartInfoAddr)
	le.PutUint32(b[0:], PVHStartInfoMagic)
	le.PutUint32(b[4:], pvhStartInfoVersion)
	le.PutUint64(b[24:], bi.CmdlineAddr)
	le.PutUint64(b[32:], uint64(cfg.RSDPAddr))
	if bi.InitrdSize > 0 {
		le.PutUint32(b[12:], 1)
		le.PutUint64(b[16:], base+pvhModlistOff)
		m := b[pvhModlistOff:]
		le.PutUint64(m[0:], bi.InitrdAddr)
		le.PutUint64(m[8:], bi.InitrdSize)
	}
	le.PutUint64(b[40:], base+pvhMemmapOff)
	le.PutUint32(b[48:], uint32(len(cfg.E820)))
	for i, e := range cfg.E820 {
		o := pvhMemmapOff + i*memmapEntrySize
		le.PutUint64(b[o:], e.Addr)
		le.PutUint64(b[o+8:], e.Size)
		le.PutUint32(b[o+16:], uint32(e.Type))
	}
	return write(mem, "hvm_start_info", cfg.StartInfoAddr, b)
}

// StartInfo is a decoded hvm_start_info (for tests and diagnostics).
type StartInfo struct {
	Magic, Version, Flags, NrModules uint32
	ModlistPaddr, CmdlinePaddr       uint64
	RSDPPaddr, MemmapPaddr           uint64
	MemmapEntries                    uint32
}

// ReadStartInfo reads hvm_start_info from guest memory.
func ReadStartInfo(mem Memory, addr memory.GPA) (*StartInfo, error) {
	b := make([]byte, startInfoSize)
	if err := mem.Read(addr, b); err != nil {
		return nil, fmt.Errorf("read hvm_start_info at %v: %w", addr, err)
	}
	le := binary.LittleEndian
	return &StartInfo{
		Magic: le.Uint32(b[0:]), Version: le.Uint32(b[4:]), Flags: le.Uint32(b[8:]), NrModules: le.Uint32(b[12:]),
		ModlistPaddr: le.Uint64(b[16:]), CmdlinePaddr: le.Uint64(b[24:]), RSDPPaddr: le.Uint64(b[32:]),
		MemmapPaddr: le.Uint64(b[40:]), MemmapEntries: le.Uint32(b[48:]),
	}, nil
}
