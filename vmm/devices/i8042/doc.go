// Package i8042 emulates the PC keyboard controller (Intel 8042 / PS/2
// controller) at I/O ports 0x60 (data) and 0x64 (status and command), with
// an AT keyboard behind it that answers commands but never types, and no
// AUX (mouse) port. It exists so that Linux probes it quickly and quietly
// and so that the guest can reset the machine through it (command 0xFE,
// used by Linux's reboot=k and as a fallback of the default reboot path).
//
// The controller is registered as two one-port bus devices, DataPort at
// 0x60 and CommandPort at 0x64, because ports 0x61-0x63 belong to other
// devices (0x61 is the PC speaker / NMI status port).
//
// What Linux's drivers/input/serio/i8042.c does against it, in order:
//
//  1. i8042_controller_check: i8042_flush reads status (0x64) and drains the
//     data port while OBF is set; the output buffer starts empty.
//  2. i8042_controller_init: reads the command byte (CTR) with 0x20 until two
//     reads agree, clears KBDINT, sets KBDDIS and writes it back with 0x60.
//     The initial CTR is 0x65 (KBDINT, SYS, AUXDIS, XLATE), what a PC BIOS
//     leaves, so the keyboard port is "translated" (SERIO_8042_XL).
//  3. i8042_check_aux: the AUX loopback command 0xD3 is not implemented,
//     as on an AT-type controller, so its parameter byte goes to the
//     keyboard, which answers 0xFE (resend) without the AUXDATA status bit;
//     the driver gives up on the loop test at once ("auxerr") and leaves the
//     byte in the buffer. The AUX interface test 0xA9 then reads that 0xFE
//     as its answer, which fails the driver's check, so it decides there is
//     no AUX port (-ENODEV, silent) without waiting for a timeout. The real
//     0xA9 answer (0x01, "clock line stuck low") stays queued and is read
//     and dropped by i8042_interrupt when step 4 enables IRQ 1, before the
//     keyboard port exists.
//  4. i8042_setup_kbd: writes CTR with KBDINT set; the driver prints
//     "serio: i8042 KBD port at 0x60,0x64 irq 1".
//  5. atkbd (drivers/input/keyboard/atkbd.c) sends GETID (0xF2) through the
//     data port; the keyboard ACKs (0xFA) and answers 0xAB 0x41 (0x83
//     translated, as a real controller with XLATE does) through IRQ 1, then
//     0xF5 (disable), 0xED + LEDs, 0xF3 + typematic rate and 0xF4 (enable),
//     each ACKed: "input: AT Translated Set 2 keyboard".
//
// The self-test 0xAA answers 0x55 and the interface test 0xAB answers 0x00.
// Any command 0xF0-0xFF with bit 0 clear pulses the CPU reset line (0xFE is
// the usual one), and writing the output port (0xD1) with bit 0 clear does
// too; both call the reset callback.
//
// Interrupts: IRQ 1 is high while the output buffer holds a byte and CTR
// KBDINT is set (the 8042 drives IRQ 1 from OBF). Command responses go
// through the same buffer, as on real controllers. The line is reported
// through a func(level bool) called only on change.
//
// Reference: IBM PC AT Technical Reference, "Keyboard Controller"; the
// PS/2 command set as documented by Linux's i8042.h and atkbd.c.
package i8042
