// Package firmware prepares a guest to run a Linux kernel without a BIOS.
//
// It owns, as pure code with no ioctls:
//   - kernel image parsing and loading, treating every image as hostile:
//     bzImage (x86 boot protocol, Documentation/arch/x86/boot.rst), ELF
//     vmlinux with the 64-bit boot protocol, and ELF vmlinux with a PVH note
//     (XEN_ELFNOTE_PHYS32_ENTRY, xen/include/public/arch-x86/hvm/start_info.h);
//   - ExtractVmlinux: decompressing a bzImage payload on the host (gzip, bzip2,
//     xz, lzma, lzo, lz4, zstd) so the guest skips its own decompression;
//   - boot_params (the zero page, Documentation/arch/x86/zero-page.rst), the
//     e820 map, the kernel command line, the PVH hvm_start_info;
//   - the GDT and identity-mapped page tables a 64-bit entry needs;
//   - ACPI tables (RSDP, XSDT, RSDT, FADT, FACS, MADT, DSDT with a tiny AML
//     encoder, MCFG) and the Intel MP table (MP spec 1.4);
//   - CPUID profiles ("host", "emulated") applied per vCPU.
//
// Everything is written into guest memory through the Memory interface,
// which *memory.Guest satisfies. The VMM chooses the addresses; the defaults
// the project layout uses are exported as Default* constants.
//
// Entry: Load returns a BootInfo. For ProtocolLinux64 the VMM enters the
// kernel in 64-bit long mode at Entry with RSI = ParamAddr (boot_params),
// the identity map from BuildIdentityPageTables, CS = SelectorCode64, other
// segments SelectorData, interrupts off. For ProtocolPVH it enters at Entry
// in 32-bit protected mode with paging off, CS = SelectorCode32 of GDTPVH,
// other segments flat data and EBX = ParamAddr (hvm_start_info).
package firmware
