package firmware

import (
	"encoding/binary"
	"fmt"

	"github.com/vmmgo/vmm/memory"
)

// Protocol is how the VMM must enter the loaded kernel.
type Protocol int

const (
	// ProtocolLinux64: 64-bit long mode at Entry, RSI = ParamAddr
	// (boot_params), identity-mapped page tables (boot.rst "64-bit Boot Protocol").
	ProtocolLinux64 Protocol = iota + 1
	// ProtocolPVH: 32-bit protected mode, paging off, at Entry, EBX =
	// ParamAddr (hvm_start_info) (xen docs/misc/pvh.pandoc).
	ProtocolPVH
)

func (p Protocol) String() string {
	switch p {
	case ProtocolLinux64:
		return "linux64"
	case ProtocolPVH:
		return "pvh"
	}
	return fmt.Sprintf("Protocol(%d)", int(p))
}

// Config says where and how Load puts the kernel. Zero addresses take the
// Default* constants.
type Config struct {
	Cmdline string
	// E820 is the guest memory map (DefaultE820). Required: it bounds where
	// the kernel and initrd may go and is handed to the kernel.
	E820 []E820Entry
	// RSDPAddr is the ACPI RSDP (from WriteACPI); 0 = no ACPI.
	RSDPAddr memory.GPA

	KernelAddr     memory.GPA // bzImage load address (default 0x100000)
	BootParamsAddr memory.GPA // default 0x7000
	StartInfoAddr  memory.GPA // default 0x6000 (PVH)
	CmdlineAddr    memory.GPA // default 0x20000

	// NoPVH boots an ELF with a PVH note through the 64-bit boot protocol.
	NoPVH bool
	// Extract makes Load decompress a bzImage's payload on the host
	// (ExtractVmlinux) and boot the vmlinux inside as an ELF (PVH when it has
	// the note and NoPVH is false, else the 64-bit protocol on its entry).
	// It saves the guest its self-decompression, which takes minutes when
	// guest kernel mode is emulated.
	Extract bool
}

// BootInfo is what Load did, and what the VMM needs to start vCPU 0.
type BootInfo struct {
	Protocol Protocol
	Format   string // "bzImage", "ELF", "bzImage/<codec> -> ELF"
	// Entry is the guest-physical entry point.
	Entry uint64
	// ParamAddr goes in RSI (ProtocolLinux64: boot_params) or EBX
	// (ProtocolPVH: hvm_start_info).
	ParamAddr uint64
	// KernelStart/KernelEnd bound the memory the kernel occupies, including
	// what it needs to decompress and relocate itself (init_size).
	KernelStart, KernelEnd uint64
	InitrdAddr, InitrdSize uint64
	CmdlineAddr            uint64
	Cmdline                string
	CmdlineLimit           uint32
	// Header is the bzImage setup header (nil for ELF).
	Header *SetupHeader
}

func (c *Config) defaults() {
	if c.KernelAddr == 0 {
		c.KernelAddr = DefaultKernelAddr
	}
	if c.BootParamsAddr == 0 {
		c.BootParamsAddr = DefaultBootParamsAddr
	}
	if c.StartInfoAddr == 0 {
		c.StartInfoAddr = DefaultStartInfoAddr
	}
	if c.CmdlineAddr == 0 {
		c.CmdlineAddr = DefaultCmdlineAddr
	}
}

// elfInitrdMax is the initrd limit for kernels without a setup header: the
// x86_64 initrd_addr_max Linux advertises in its own header (0x7fffffff).
const elfInitrdMax = 0x7FFFFFFF

// Load detects the kernel format, loads kernel and initrd (may be nil) into
// mem and writes the boot structures for the protocol it picked:
// bzImage → 64-bit boot protocol; ELF with a PVH note → PVH; other ELF →
// 64-bit boot protocol with a synthesized setup header.
func Load(mem Memory, kernel, initrd []byte, cfg Config) (*BootInfo, error) {
	cfg.defaults()
	if err := CheckE820(cfg.E820); err != nil {
		return nil, fmt.Errorf("load: %w", err)
	}
	switch {
	case hasHdrS(kernel):
		bz, err := ParseBzImage(kernel)
		if err != nil {
			return nil, err
		}
		if cfg.Extract {
			vmlinux, codec, err := ExtractVmlinux(kernel)
			if err != nil {
				return nil, fmt.Errorf("load: extract vmlinux: %w", err)
			}
			e, err := ParseELF(vmlinux)
			if err != nil {
				return nil, fmt.Errorf("load: payload of bzImage (%s): %w", codec, err)
			}
			bi, err := loadELF(mem, e, initrd, cfg)
			if err != nil {
				return nil, err
			}
			bi.Format = "bzImage/" + codec + " -> ELF"
			return bi, nil
		}
		return loadBzImage(mem, bz, initrd, cfg)
	case hasELFMagic(kernel):
		e, err := ParseELF(kernel)
		if err != nil {
			return nil, err
		}
		return loadELF(mem, e, initrd, cfg)
	}
	return nil, fmt.Errorf("not a kernel: no HdrS magic and no ELF magic (%d bytes)", len(kernel))
}

func loadBzImage(mem Memory, bz *BzImage, initrd []byte, cfg Config) (*BootInfo, error) {
	h := &bz.Header
	limit := h.cmdlineLimit()
	if err := CheckCmdline(cfg.Cmdline, limit); err != nil {
		return nil, fmt.Errorf("bzImage: %w", err)
	}
	load := uint64(cfg.KernelAddr)
	if !h.Relocatable && h.Version >= 0x020A && h.PrefAddress != 0 {
		load = h.PrefAddress // non-relocatable: must run where it was linked
	}
	align := uint64(h.KernelAlignment)
	if align == 0 {
		align = 1
	}
	// Where the kernel decompresses itself (arch/x86/boot/compressed/head_64.S:
	// the load address aligned up to kernel_alignment, at least
	// LOAD_PHYSICAL_ADDR = pref_address), plus init_size.
	run := alignUp(load, align)
	if h.PrefAddress > run && h.Version >= 0x020A {
		run = h.PrefAddress
	}
	end := load + uint64(len(bz.Kernel))
	if run+uint64(h.InitSize) > end {
		end = run + uint64(h.InitSize)
	}
	if !inUsable(cfg.E820, load, end-load) {
		return nil, fmt.Errorf("bzImage: kernel needs usable RAM [%#x, %#x) (load %#x, init_size %#x), not in the e820 map",
			load, end, load, h.InitSize)
	}
	if err := write(mem, "bzImage kernel", memory.GPA(load), bz.Kernel); err != nil {
		return nil, err
	}
	bi := &BootInfo{
		Protocol: ProtocolLinux64, Format: "bzImage",
		Entry: load + 0x200, ParamAddr: uint64(cfg.BootParamsAddr),
		KernelStart: load, KernelEnd: end,
		CmdlineAddr: uint64(cfg.CmdlineAddr), Cmdline: cfg.Cmdline, CmdlineLimit: limit,
		Header: h,
	}
	if err := placeInitrd(mem, bi, initrd, cfg.E820, h.initrdMax()); err != nil {
		return nil, fmt.Errorf("bzImage: %w", err)
	}
	bp := make([]byte, BootParamsSize)
	copy(bp[hdrStart:], h.Raw)
	binary.LittleEndian.PutUint32(bp[offCode32Start:], uint32(load))
	if err := fillBootParams(bp, bi, cfg); err != nil {
		return nil, err
	}
	if err := write(mem, "command line", cfg.CmdlineAddr, cmdlineBytes(cfg.Cmdline)); err != nil {
		return nil, err
	}
	if err := write(mem, "boot_params", cfg.BootParamsAddr, bp); err != nil {
		return nil, err
	}
	return bi, nil
}

func loadELF(mem Memory, e *ELFImage, initrd []byte, cfg Config) (*BootInfo, error) {
	if err := CheckCmdline(cfg.Cmdline, CmdlineSizeDefault); err != nil {
		return nil, fmt.Errorf("ELF: %w", err)
	}
	for i, s := range e.Segments {
		if s.PAddr < uint64(HighMemStart) {
			return nil, fmt.Errorf("ELF: segment %d at %#x is below %#x, where the boot structures live", i, s.PAddr, uint64(HighMemStart))
		}
		if !inUsable(cfg.E820, s.PAddr, s.MemSize) {
			return nil, fmt.Errorf("ELF: segment %d [%#x, %#x) is not in usable RAM", i, s.PAddr, s.PAddr+s.MemSize)
		}
	}
	lo, hi := e.span()
	bi := &BootInfo{
		Format: "ELF", KernelStart: lo, KernelEnd: hi,
		CmdlineAddr: uint64(cfg.CmdlineAddr), Cmdline: cfg.Cmdline, CmdlineLimit: CmdlineSizeDefault,
	}
	if e.HasPVH && !cfg.NoPVH {
		if e.PVHEntry >= 1<<32 {
			return nil, fmt.Errorf("ELF: PVH entry %#x is not a 32-bit address", e.PVHEntry)
		}
		bi.Protocol, bi.Entry, bi.ParamAddr = ProtocolPVH, e.PVHEntry, uint64(cfg.StartInfoAddr)
	} else {
		entry, err := e.physEntry()
		if err != nil {
			return nil, err
		}
		bi.Protocol, bi.Entry, bi.ParamAddr = ProtocolLinux64, entry, uint64(cfg.BootParamsAddr)
	}
	for i, s := range e.Segments {
		what := fmt.Sprintf("ELF segment %d", i)
		if err := write(mem, what, memory.GPA(s.PAddr), e.file[s.Offset:s.Offset+s.FileSize]); err != nil {
			return nil, err
		}
		if err := zero(mem, what+" bss", memory.GPA(s.PAddr+s.FileSize), s.MemSize-s.FileSize); err != nil {
			return nil, err
		}
	}
	if err := placeInitrd(mem, bi, initrd, cfg.E820, elfInitrdMax); err != nil {
		return nil, fmt.Errorf("ELF: %w", err)
	}
	if err := write(mem, "command line", cfg.CmdlineAddr, cmdlineBytes(cfg.Cmdline)); err != nil {
		return nil, err
	}
	if bi.Protocol == ProtocolPVH {
		return bi, writeStartInfo(mem, bi, cfg)
	}
	bp := make([]byte, BootParamsSize)
	// A setup header as a bzImage of protocol 2.15 would carry it, so the
	// kernel's sanity checks (boot_flag, "HdrS") pass.
	binary.LittleEndian.PutUint16(bp[offBootFlag:], bootFlagMagic)
	binary.LittleEndian.PutUint32(bp[offHeaderMagic:], hdrMagic)
	binary.LittleEndian.PutUint16(bp[offVersion:], 0x020F)
	binary.LittleEndian.PutUint32(bp[offKernelAlign:], 0x1000000)
	binary.LittleEndian.PutUint32(bp[offCmdlineSize:], CmdlineSizeDefault)
	binary.LittleEndian.PutUint32(bp[offInitrdAddrMax:], elfInitrdMax)
	binary.LittleEndian.PutUint16(bp[offXLoadflags:], XLFKernel64)
	if err := fillBootParams(bp, bi, cfg); err != nil {
		return nil, err
	}
	return bi, write(mem, "boot_params", cfg.BootParamsAddr, bp)
}

// placeInitrd puts the initrd as high as allowed: page aligned, above the
// kernel, inside one usable e820 range, ending at or below maxAddr+1 and 4 GiB.
func placeInitrd(mem Memory, bi *BootInfo, initrd []byte, m []E820Entry, maxAddr uint64) error {
	if len(initrd) == 0 {
		return nil
	}
	limit := maxAddr + 1
	if limit > 1<<32 {
		limit = 1 << 32
	}
	floor := alignUp(bi.KernelEnd, memory.PageSize)
	addr, ok := highestFit(m, uint64(len(initrd)), floor, limit)
	if !ok {
		return fmt.Errorf("initrd of %d bytes does not fit in usable RAM between the kernel end %#x and the limit %#x (initrd_addr_max %#x)",
			len(initrd), floor, limit, maxAddr)
	}
	if err := write(mem, "initrd", addr, initrd); err != nil {
		return err
	}
	bi.InitrdAddr, bi.InitrdSize = uint64(addr), uint64(len(initrd))
	return nil
}
