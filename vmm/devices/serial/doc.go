// Package serial emulates a National Semiconductor 16550A UART, the PC's
// COM port, well enough for Linux's 8250 driver to detect it as a 16550A
// (drivers/tty/serial/8250/8250_port.c: autoconfig) and to use it as the
// console at COM1 (I/O port 0x3F8, ISA IRQ 4).
//
// The package owns the register file (RBR/THR, IER, IIR/FCR, LCR, MCR, LSR,
// MSR, SCR and the DLAB-selected divisor latch DLL/DLM), a bounded receive
// buffer fed by the host (Input, InputWait), the interrupt logic (one
// level-triggered line, driven through a func(level bool) callback that is
// called exactly when the line changes) and the transmit path to an
// io.Writer (the console) with an optional copy to a log file.
//
// Register behaviour follows the PC16550D datasheet (National
// Semiconductor, 1995), section 8 "Registers". Where the datasheet leaves a
// choice open, the choice Linux relies on is documented at the code:
//
//   - Transmission is instantaneous: LSR.THRE and LSR.TEMT read 1 except
//     inside a THR write, so the THR-empty interrupt is re-raised after every
//     THR write (what a very fast line does). Linux writes up to 16 bytes per
//     THRE interrupt (tx_loadsz of PORT_16550A).
//   - Setting IER.ETBEI while THR is empty raises the THRE interrupt even if
//     it was acknowledged before; Linux's startup test for UART_BUG_THRE
//     (serial8250_do_startup) expects a real 16550A to do so.
//   - Loopback (MCR bit 4) connects THR to RBR and the modem outputs to the
//     modem inputs (RTS->CTS, DTR->DSR, OUT1->RI, OUT2->DCD), as the
//     autoconfig probe checks (MSR & 0xF0 == 0x90 after MCR = 0x1A). While in
//     loopback, host input is discarded: the serial input pin is
//     disconnected on real hardware.
//   - The receive buffer is larger than the chip's 16-byte FIFO (1 KiB by
//     default) so a burst of host input, such as a paste, is not lost while
//     the emulated guest is slow; the guest cannot tell the difference
//     because Linux drains RBR while LSR.DR is set. When it is full, further
//     input is dropped and LSR.OE is set, as a real overrun does.
//   - The character-timeout interrupt (IIR = 0xC) is reported as soon as the
//     FIFO holds fewer bytes than the trigger level, without waiting four
//     character times.
//   - MCR.OUT2 does not gate the interrupt line (QEMU, Firecracker and Cloud
//     Hypervisor behave the same; Linux sets OUT2 anyway).
//
// Wider accesses (2 or 4 bytes) are split into byte accesses to consecutive
// registers, as the ISA bus does for an 8-bit device. Accesses past the 8
// registers read all ones and are ignored on write, counted and logged
// rate-limited.
//
// Concurrency: every method may be called from any goroutine (vCPU threads
// and the input goroutine). The IRQ callback and the output writers are
// called with the UART's lock held, so output keeps the order of THR writes
// and interrupt levels are reported in the order they happen; they must not
// call back into the UART.
package serial
