package virtio_test

import (
	"github.com/vmmgo/vmm/memory"
	"github.com/vmmgo/vmm/virtio"
)

// *memory.Guest is what the VMM passes: it must satisfy GuestMemory, and
// AtomicMemory so that ring indexes use its checked atomics.
var (
	_ virtio.GuestMemory  = (*memory.Guest)(nil)
	_ virtio.AtomicMemory = (*memory.Guest)(nil)
)
