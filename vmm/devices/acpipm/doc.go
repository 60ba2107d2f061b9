// Package acpipm emulates the fixed ACPI power-management hardware the
// VMM's FADT declares, and the PC reset-control register:
//
//   - the PM1a event block at I/O port 0x600 (4 bytes): PM1_STS (16 bits,
//     write 1 to clear) and PM1_EN (16 bits) (ACPI 6.5, section 4.8.3.1);
//   - the PM1a control block at 0x604 (2 bytes): SCI_EN (bit 0), SLP_TYP
//     (bits 12:10) and SLP_EN (bit 13, write-only) (section 4.8.3.2.1).
//     Writing SLP_EN with SLP_TYP = 5, the value of the DSDT's \_S5 package
//     ({5, 5}), enters S5: the PowerOff callback runs. Other sleep types
//     are not supported and are ignored (logged);
//   - the reset control register at 0xCF9 (1 byte, Intel PIIX/ICH
//     "Reset Control Register"): writing it with RST_CPU (bit 2) set
//     resets the machine, as the FADT RESET_REG (value 6) and Linux's
//     reboot=pci (writes 0x02 then 0x06) use it.
//
// SCI_EN starts set: the VMM has no SMI_CMD port, so the machine is in ACPI
// mode from power-on, and Linux (acpi_hw_get_mode) sees it that way.
// PM1_STS bits latched by PowerButton raise the SCI (ISA IRQ 9) while the
// matching PM1_EN bit is set, through a func(level bool) callback called
// only on change, so the host can ask the guest to shut down cleanly.
//
// Registers are byte-addressable: an access of any width is applied byte by
// byte, so 8-, 16- and 32-bit accesses all work as ACPI's generic register
// access rules allow.
package acpipm
