// Package virtio owns the device side of virtio 1.x: split virtqueues
// (virtio 1.2 §2.7), feature bits (§6), the Device interface every device
// model implements, and the small interfaces through which devices reach guest
// memory and raise interrupts.
//
// Guest memory is reached only through GuestMemory, whose DeviceRead and
// DeviceWrite refuse private pages (memory.ErrPrivate). Every descriptor a
// chain names is validated (range, page state) when the chain is popped, so
// a device never touches a page the guest has made private; the request fails
// with the device's I/O error status instead.
//
// Transports live in sub-packages (virtio/pci); one sub-package per device
// (virtio/blk, virtio/rng, virtio/console, virtio/net, virtio/vsock); a fake
// driver for tests in virtio/virtiotest. Of this module it imports only
// memory and internal/guestlog, never kvm or vmm: interrupts leave through the Interrupt interface the transport
// implements.
package virtio
