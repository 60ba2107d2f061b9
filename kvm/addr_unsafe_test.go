package kvm_test

import "unsafe"

// addrOf returns the host virtual address of b's first byte, for
// userspace_addr in memory-slot tests (b is mmapped, never Go heap).
func addrOf(b []byte) uint64 { return uint64(uintptr(unsafe.Pointer(&b[0]))) }
