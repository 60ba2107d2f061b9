package vmm

// pvpanicDevice is QEMU's pvpanic ISA device (docs/specs/pvpanic.txt in
// QEMU): the guest reads the supported events and writes the event that
// happened. Linux's pvpanic driver (ACPI HID QEMU0001, declared in our DSDT)
// writes PANICKED from its panic notifier, before panic=-1 reboots, so the
// VMM can report a panic rather than a reboot.
type pvpanicDevice struct{ m *Machine }

const (
	PortPVPanic      = 0x505
	pvpanicPanicked  = 1 << 0
	pvpanicCrashLoad = 1 << 1
)

func (d pvpanicDevice) BusRead(_ int, _ uint64, data []byte) {
	for i := range data {
		data[i] = 0
	}
	data[0] = pvpanicPanicked | pvpanicCrashLoad
}

func (d pvpanicDevice) BusWrite(vcpu int, _ uint64, data []byte) {
	switch {
	case data[0]&pvpanicPanicked != 0:
		d.m.stop(Result{Outcome: OutcomePanic, Detail: "guest kernel panicked (pvpanic)"})
	case data[0]&pvpanicCrashLoad != 0:
		d.m.stop(Result{Outcome: OutcomePanic, Detail: "guest kernel crashed and is loading a crash kernel (pvpanic)"})
	}
}
