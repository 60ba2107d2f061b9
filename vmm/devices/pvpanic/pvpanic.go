// Package pvpanic is QEMU's pvpanic ISA device (docs/specs/pvpanic.txt in
// QEMU): one I/O port; the guest reads the events the device supports and
// writes the event that happened. Linux's pvpanic driver (ACPI HID
// QEMU0001, which the VMM declares in its DSDT) writes PANICKED from its
// panic notifier, before panic=-1 reboots, so the VMM can report a panic
// rather than a reboot.
package pvpanic

// Port is the I/O port QEMU and the VMM use.
const Port = 0x505

// Events (bits of the byte read and written).
const (
	Panicked  = 1 << 0 // the guest kernel panicked
	CrashLoad = 1 << 1 // the guest kernel crashed and is loading a crash kernel
)

// Device is the pvpanic port. Create it with New.
type Device struct{ report func(detail string) }

// New returns the device; report is called with a description of each
// event the guest writes (it may be called more than once, from vCPU
// threads).
func New(report func(detail string)) *Device { return &Device{report: report} }

// BusRead returns the supported events in the first byte, zero in the rest.
func (d *Device) BusRead(_ int, _ uint64, data []byte) {
	clear(data)
	if len(data) > 0 {
		data[0] = Panicked | CrashLoad
	}
}

// BusWrite reports the event written; a write without a known event bit is
// ignored.
func (d *Device) BusWrite(_ int, _ uint64, data []byte) {
	if len(data) == 0 {
		return
	}
	switch {
	case data[0]&Panicked != 0:
		d.report("guest kernel panicked (pvpanic)")
	case data[0]&CrashLoad != 0:
		d.report("guest kernel crashed and is loading a crash kernel (pvpanic)")
	}
}
