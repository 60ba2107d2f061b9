// Package pci is the virtio-over-PCI transport (virtio 1.2 §4.1): a PCI host
// bridge and a bus-0 set of modern virtio functions (device IDs 0x1040 +
// type, no legacy interface), reachable through configuration mechanism #1
// (ports 0xCF8/0xCFC, PCI Local Bus spec 3.0 §3.2.2.3.2) and through an ECAM
// window (PCI Express base spec §7.2.2).
//
// Each function has one 64-bit memory BAR holding the virtio structures the
// capabilities point at (common configuration, notifications with
// notify_off_multiplier 4 so each queue has its own doorbell address, ISR,
// device-specific configuration; VIRTIO_PCI_CAP_PCI_CFG, §4.1.4.9, reaches
// them through config space too) and the MSI-X table and PBA. BARs are
// assigned from a window the VMM passes; the guest's sizing protocol works,
// and when the guest moves a BAR a callback lets the VMM re-register it.
//
// The package owns the device status state machine, feature negotiation,
// queue registers and interrupt delivery (MSI-X through MSISender, INTx as a
// level function). Device models (virtio/blk, ...) serve the queues on their
// own goroutines; Notify wakes them and never blocks the vCPU.
package pci
