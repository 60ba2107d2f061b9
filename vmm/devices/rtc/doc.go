// Package rtc emulates the PC's Motorola MC146818 real-time clock and its
// 128 bytes of CMOS memory at I/O ports 0x70 (index, bit 7 = NMI disable)
// and 0x71 (data), interrupt on ISA IRQ 8.
//
// It owns:
//   - the time registers (seconds, minutes, hours, day of week, day of
//     month, month, year, and the century byte at 0x32 that the ACPI FADT
//     CENTURY field usually names), computed from the host clock (UTC) plus
//     a whole-second offset the guest changes by setting the clock. They
//     are encoded in BCD or binary and in 12- or 24-hour form as register B
//     says (MC146818 datasheet, "Time, Calendar and Alarm Locations").
//   - register A (UIP is set during the last 244 us of every second, as on
//     the chip, so Linux's mc146818_avoid_UIP sees a real update cycle;
//     divider and rate bits are stored), register B (SET freezes the time
//     registers so the guest can write a new time; PIE/AIE/UIE, DM, 24/12,
//     DSE), register C (IRQF/PF/AF/UF, cleared on read) and register D
//     (VRT: the battery is always good).
//   - update-ended, alarm and periodic interrupts, driven by a host timer
//     while one of them is enabled, through a func(level bool) called
//     only on change; IRQF stays set, and the line high, until register C
//     is read.
//   - CMOS memory, with the memory-size bytes a PC BIOS writes and that
//     firmware and old loaders read: 0x15/0x16 base memory (640 KiB),
//     0x17/0x18 and 0x30/0x31 extended memory above 1 MiB in KiB (capped at
//     0xFFFF), 0x34/0x35 memory between 16 MiB and 4 GiB in 64 KiB units,
//     0x5B-0x5D memory above 4 GiB in 64 KiB units, 0x5F the CPU count
//     minus one (SeaBIOS/QEMU convention), and the checksum of
//     0x10-0x2D at 0x2E/0x2F.
//
// The day-of-week register is derived from the date; guest writes to it are
// ignored. Daylight-saving (DSE) is stored but never applied: the clock
// runs in UTC, which is what Linux on x86 assumes.
//
// Linux reads the time at boot through mach_get_cmos_time ->
// mc146818_get_time (arch/x86/kernel/rtc.c, drivers/rtc/rtc-mc146818-lib.c)
// and later through the rtc_cmos driver; both poll UIP, read the time
// registers, and check seconds did not change meanwhile.
package rtc
