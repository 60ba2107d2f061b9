package kvm

import (
	"sync/atomic"
	"unsafe"
)

// The first word of struct kvm_run holds request_interrupt_window (byte 0)
// and immediate_exit (byte 1), both written by userspace and read by KVM at
// KVM_RUN entry. immediate_exit is written by the kicking goroutine while
// the vCPU thread may write request_interrupt_window, so both go through a
// compare-and-swap on the aligned 32-bit word that contains them (Go has no
// 8-bit atomics); the other two bytes of the word are padding1[0:2].

// word0 returns the first 32-bit word of the run area when it can be
// accessed atomically: the buffer has it and it is 4-byte aligned (always
// true for the mmapped page and for Go allocations of that size).
func (r *Run) word0() *uint32 {
	if len(r.b) < 4 {
		return nil
	}
	p := unsafe.Pointer(&r.b[0])
	if uintptr(p)%4 != 0 {
		return nil
	}
	return (*uint32)(p)
}

// storeByte atomically stores v at byte off (0..3) of the first word.
func (r *Run) storeByte(off int, v uint8) {
	w := r.word0()
	if w == nil {
		r.put8(off, v) // synthetic, unaligned or short buffer: not shared
		return
	}
	shift := 8 * uint(off)
	for {
		old := atomic.LoadUint32(w)
		nw := old&^(0xff<<shift) | uint32(v)<<shift
		if atomic.CompareAndSwapUint32(w, old, nw) {
			return
		}
	}
}

// loadByte atomically loads byte off (0..3) of the first word.
func (r *Run) loadByte(off int) uint8 {
	w := r.word0()
	if w == nil {
		return r.u8(off)
	}
	return uint8(atomic.LoadUint32(w) >> (8 * uint(off)))
}
