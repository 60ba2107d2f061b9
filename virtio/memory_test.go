package virtio_test

import (
	"github.com/vmmgo/vmm/memory"
	"github.com/vmmgo/vmm/virtio"
)

// *memory.Guest is what the VMM passes: it must satisfy GuestMemory, and
// HostMapper so that ring indices use real atomics (see atomic_unsafe.go).
var (
	_ virtio.GuestMemory = (*memory.Guest)(nil)
	_ virtio.HostMapper  = (*memory.Guest)(nil)
)
