package vmm

import "unsafe"

// sliceAddr is the host virtual address of the first byte of b, as KVM wants
// for userspace_addr. The slice is an mmap of guest RAM, off the Go heap.
func sliceAddr(b []byte) uintptr {
	if len(b) == 0 {
		return 0
	}
	return uintptr(unsafe.Pointer(&b[0]))
}
