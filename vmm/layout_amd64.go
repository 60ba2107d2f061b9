package vmm

// The machine memory map and port map. Every fixed guest address the VMM
// uses is here, with the reason it is where it is.
//
// Guest physical memory:
//
//	0x0000_0000 - 0x0009_fbff  RAM (usable in e820)
//	  0x0000_0500                GDT (firmware.BuildGDT)
//	  0x0000_0520                IDT (empty; the kernel installs its own)
//	  0x0000_6000                PVH hvm_start_info
//	  0x0000_7000                Linux boot_params ("zero page")
//	  0x0000_8ff0                initial stack top for tiny guests / 64-bit boot
//	  0x0000_9000                PML4, then PDPT at 0xa000, PDs from 0xb000 (identity map)
//	  0x0002_0000                kernel command line
//	0x0009_fc00 - 0x0009_ffff  EBDA (reserved), MP floating pointer + table
//	0x000a_0000 - 0x000f_ffff  legacy video/BIOS area, reserved; ACPI tables at 0xe0000
//	0x0010_0000 - lowRAMEnd    RAM: the kernel is loaded at 1 MiB, the initrd at the top
//	0xc000_0000 - 0xdfff_ffff  32-bit PCI MMIO window (virtio BARs)
//	0xe000_0000 - 0xe00f_ffff  PCIe ECAM, bus 0
//	0xfec0_0000                IOAPIC (in-kernel irqchip)
//	0xfee0_0000                LAPIC (in-kernel)
//	0xfffb_c000                KVM identity-map page (KVM_SET_IDENTITY_MAP_ADDR, 1 page)
//	0xfffb_d000                KVM TSS (KVM_SET_TSS_ADDR, 3 pages)
//	0x1_0000_0000 -            RAM above the hole, when memory > lowRAMEnd
const (
	LayoutGDT         = 0x500
	LayoutIDT         = 0x520
	LayoutPVHInfo     = 0x6000
	LayoutZeroPage    = 0x7000
	LayoutStackTop    = 0x8ff0
	LayoutPML4        = 0x9000
	LayoutCmdline     = 0x20000
	LayoutEBDA        = 0x9fc00
	LayoutBIOSStart   = 0xa0000
	LayoutACPIStart   = 0xe0000
	LayoutHighMem     = 0x100000 // 1 MiB: where the kernel goes
	LayoutMMIOHole    = 0xc0000000
	LayoutPCIWindow   = 0xc0000000
	LayoutPCIWindowSz = 0x20000000
	LayoutECAM        = 0xe0000000
	LayoutECAMSize    = 0x100000
	LayoutIOAPIC      = 0xfec00000
	LayoutLAPIC       = 0xfee00000
	LayoutIdentityMap = 0xfffbc000
	LayoutTSS         = 0xfffbd000
	Layout4G          = 0x100000000
)

// Port I/O map.
const (
	PortPOST      = 0x80  // POST code / boot timer (debugport)
	PortDebugCon  = 0xe9  // Bochs debug console (debugport)
	PortI8042Data = 0x60  // PS/2 data
	PortI8042Cmd  = 0x64  // PS/2 command/status: 0xfe resets
	PortRTC       = 0x70  // CMOS index/data, 2 ports
	PortCOM1      = 0x3f8 // 16550A, 8 ports, IRQ 4
	PortACPIPMEvt = 0x600 // PM1a_EVT_BLK, 4 ports
	PortACPIPMCnt = 0x604 // PM1a_CNT_BLK, 2 ports (S5 power-off)
	PortPVMem     = 0xa50 // paravirtual share/unshare interface, 16 registers, 19 ports decoded (docs/pvmem.md)
	// pvpanic.Port (0x505, vmm/devices/pvpanic) is where Linux reports a panic.
	PortPCIConfig = 0xcf8 // PCI configuration mechanism #1, 8 ports
	PortResetCtl  = 0xcf9 // reset control (inside the PCI config range: the PCI device forwards it)
	PortTestExit  = 0xf4  // tiny-guest exit port, 4 ports (like QEMU isa-debug-exit)
)

// Interrupt lines (ISA IRQ numbers; GSIs are the same on the IOAPIC).
const (
	IRQCOM1 = 4
	IRQSCI  = 9
)

// IRQPCI is the ISA IRQ (= IOAPIC GSI) every virtio function's INTA# is
// wired to, reported in each function's Interrupt Line register. The DSDT has
// no _PRT, so Linux falls back to that register ("PCI INT A: no GSI - using
// ISA IRQ 10"; drivers/acpi/pci_irq.c) and programs the pin level-triggered.
// 10 is free on this machine (COM1 4, RTC 8, SCI 9, i8042 1) and is what
// QEMU's PC machines use for PCI links. Drivers normally use MSI-X instead.
const IRQPCI = 10

// ramRegions splits size bytes of guest RAM around the 32-bit MMIO hole.
func ramRegions(size uint64) [][2]uint64 {
	if size <= LayoutMMIOHole {
		return [][2]uint64{{0, size}}
	}
	return [][2]uint64{{0, LayoutMMIOHole}, {Layout4G, size - LayoutMMIOHole}}
}
