package blk

import "github.com/vmmgo/vmm/virtio"

// DrainForTest serves every available request synchronously (benchmarks).
func DrainForTest(d *Device, a virtio.Activation) bool {
	return d.drain(a, a.Queues[0], &d.chain)
}
