// Package benchguest owns the benchmark guest: one tiny PVH-bootable ELF
// (guest.S, linked by guest.ld with GNU as and ld) that QEMU (-M microvm
// -kernel), gokvm (its pvh package) and this project's VMM (vmm boot
// --kernel) all boot the same way, and the builder that assembles its
// variants (number of exits, CPL0 or CPL3 loop, idle) into a cache directory.
//
// The guest's protocol with the host (guest.S has the details):
//
//   - its first VM exit writes Marker to COM1 (port 0x3f8), which every VMM
//     copies to its stdout: the host times process start to that byte;
//   - it then writes Loops times to the 16550 scratch register (0x3ff), each
//     write one port-I/O exit to the VMM's UART model;
//   - it writes EndMarker to COM1 and powers off: port 0xf4 (QEMU's
//     isa-debug-exit; gokvm stops its vCPU on the unclaimed port) then ACPI
//     S5 on the PM1a control block at 0x604 (our VMM).
//
// Entry follows the Xen PVH boot ABI (xen/include/public/arch-x86/hvm/
// start_info.h): 32-bit protected mode, paging off, flat segments.
package benchguest
