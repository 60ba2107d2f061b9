// Package debugport emulates two write-mostly diagnostic ports guests use
// to talk to the host without a driver:
//
//   - Console, the Bochs/QEMU debug console at I/O port 0xE9: every byte
//     written is appended to a line that is written to an io.Writer when it
//     ends ('\n'), when it reaches MaxLine bytes, or on Flush. Reading the
//     port returns 0xE9, which is how guests detect the port (Bochs
//     "port e9 hack", QEMU isa-debugcon readback).
//   - POST, the PC POST-code port 0x80: it keeps the last byte written and
//     the host time of the first write (and of the first write of each
//     value), which benchmarks use as a "guest reached here" timer. Reads
//     return all ones, like QEMU's port 0x80.
//
// Beware: Linux itself writes port 0x80 for I/O delays (native_io_delay,
// outb_p) unless the guest runs with the KVM paravirtual io_delay (CPUID
// KVM_FEATURE_NOP_IO_DELAY) or io_delay=none; benchmarks that want a clean
// mark should look for a specific code with FirstWriteOf.
package debugport
