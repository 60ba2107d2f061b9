package firmware

import "github.com/vmmgo/vmm/memory"

// Default addresses of the project's machine layout. The VMM owns the layout
// (vmm/layout_amd64.go) and passes addresses in; these are the values it uses.
const (
	DefaultGDTAddr        memory.GPA = 0x500   // GDT (4 entries fit before the IDT)
	DefaultIDTAddr        memory.GPA = 0x520   // IDT (empty; the kernel installs its own)
	DefaultStartInfoAddr  memory.GPA = 0x6000  // PVH hvm_start_info, modlist and memmap follow
	DefaultBootParamsAddr memory.GPA = 0x7000  // boot_params (zero page)
	DefaultStackTop       memory.GPA = 0x8FF0  // initial RSP/ESP
	DefaultPML4Addr       memory.GPA = 0x9000  // PML4; the PDPT follows at +0x1000, PDs from +0x2000
	DefaultCmdlineAddr    memory.GPA = 0x20000 // kernel command line (NUL-terminated)
	DefaultKernelAddr     memory.GPA = 0x100000

	// e820 anchors (see DefaultE820).
	EBDAStart          memory.GPA = 0x9FC00
	EBDAEnd            memory.GPA = 0xA0000
	BIOSROMStart       memory.GPA = 0xE0000 // RSDP and MP tables live in 0xE0000-0xFFFFF
	HighMemStart       memory.GPA = 0x100000
	MMIOHoleStart      memory.GPA = 0xC0000000
	HighRAMStart       memory.GPA = 0x1_0000_0000
	DefaultRSDPAddr    memory.GPA = 0xE0000 // ACPI tables start here
	DefaultMPTableAddr memory.GPA = 0xF0000

	// 32-bit MMIO hole contents.
	PCIMMIOStart      memory.GPA = 0xC0000000
	PCIMMIOEnd        memory.GPA = 0xE0000000 // exclusive
	ECAMBase          memory.GPA = 0xE0000000 // PCIe ECAM, bus 0 only (1 MiB)
	ECAMSize                     = 1 << 20
	DefaultIOAPICAddr memory.GPA = 0xFEC00000
	DefaultLAPICAddr  memory.GPA = 0xFEE00000

	// ACPI power-management ports and the serial port described in the DSDT.
	DefaultPM1aEvtPort = 0x600
	DefaultPM1aCntPort = 0x604
	DefaultSCIIRQ      = 9
	DefaultResetPort   = 0xCF9
	DefaultResetValue  = 0x6
	COM1Port           = 0x3F8
	COM1IRQ            = 4
	// SlpTypS5 is the SLP_TYP value of \_S5 in the DSDT: the PM device powers
	// off when PM1a_CNT is written with SLP_EN and SLP_TYP = SlpTypS5.
	SlpTypS5 = 5
)
