package virtiotest

import (
	"sync/atomic"
	"unsafe"
)

// newWords allocates n bytes backed by a []uint32 so that every 4-byte
// aligned offset is a properly aligned *uint32 for sync/atomic.
func newWords(n int) ([]uint32, []byte) {
	w := make([]uint32, (n+3)/4)
	if len(w) == 0 {
		return w, nil
	}
	return w, unsafe.Slice((*byte)(unsafe.Pointer(&w[0])), n)
}

func load32(w []uint32, i int) uint32 { return atomic.LoadUint32(&w[i]) }

func cas32(w []uint32, i int, old, new uint32) bool {
	return atomic.CompareAndSwapUint32(&w[i], old, new)
}
