package vmm

import "github.com/vmmgo/vmm/kvm"

// IOAPIC pins of the in-kernel irqchip (KVM_IOAPIC_NUM_PINS).
const ioapicPins = 24

// legacyGSIRoutes is the GSI routing table that matches the MADT the VMM
// writes (firmware.WriteACPI): ISA IRQ 0..15 go to the two 8259 PICs as on
// a PC (IRQ2 is the cascade and has no route), and to the IOAPIC with the
// one interrupt source override the MADT declares, ISA IRQ0 → GSI 2; every
// other IOAPIC pin 1..23 is its own GSI. KVM's default table routes GSI 0 to
// IOAPIC pin 0 instead, so without this the in-kernel PIT (which raises
// GSI 0) never reaches the pin the guest programmed for its timer: Linux
// then finds no ticks through the IOAPIC ("APIC timer disabled due to
// verification failure", then no timer at all once it switches to the PIT
// clockevent). QEMU sets up the same table (kvm_pc_setup_irq_routing).
func legacyGSIRoutes() []kvm.IRQRoutingEntry {
	var rs []kvm.IRQRoutingEntry
	for irq := uint32(0); irq < 16; irq++ {
		switch {
		case irq == 2: // the slave PIC's cascade input
		case irq < 8:
			rs = append(rs, kvm.IRQRoutingIRQChip(irq, kvm.IRQChipPICMaster, irq))
		default:
			rs = append(rs, kvm.IRQRoutingIRQChip(irq, kvm.IRQChipPICSlave, irq-8))
		}
	}
	// GSI 0 (the PIT) → pin 2, as the MADT's override says; GSI 2 itself
	// has no source on this machine.
	rs = append(rs, kvm.IRQRoutingIRQChip(0, kvm.IRQChipIOAPIC, 2))
	for gsi := uint32(1); gsi < ioapicPins; gsi++ {
		if gsi != 2 {
			rs = append(rs, kvm.IRQRoutingIRQChip(gsi, kvm.IRQChipIOAPIC, gsi))
		}
	}
	return rs
}
