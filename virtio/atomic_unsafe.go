package virtio

import (
	"fmt"
	"sync/atomic"
	"unsafe"

	"github.com/vmmgo/vmm/memory"
)

// HostMapper is optionally implemented by guest memory that can hand out
// its host mapping and check page state (*memory.Guest does: Slice and
// CheckShared). The queue then performs its ring-index atomics itself on
// the mapping, after checking that the page is shared.
type HostMapper interface {
	GuestMemory
	Slice(gpa memory.GPA, n uint64) ([]byte, error)
	CheckShared(gpa memory.GPA, n uint64) error
}

// mappedAtomics adapts a HostMapper to AtomicMemory.
type mappedAtomics struct{ HostMapper }

func (m mappedAtomics) word(gpa memory.GPA) (*uint32, error) {
	if gpa%4 != 0 {
		return nil, fmt.Errorf("ring index word %v: %w", gpa, memory.ErrInvalid)
	}
	// CheckShared first: Slice ignores page state, and a device must never
	// touch a private page (the check is advisory against a concurrent
	// conversion, exactly like DeviceRead's own check).
	if err := m.CheckShared(gpa, 4); err != nil {
		return nil, err
	}
	b, err := m.Slice(gpa, 4)
	if err != nil {
		return nil, err
	}
	// The mapping is page aligned and gpa is 4-aligned: a valid *uint32.
	return (*uint32)(unsafe.Pointer(&b[0])), nil
}

func (m mappedAtomics) DeviceLoad32(gpa memory.GPA) (uint32, error) {
	p, err := m.word(gpa)
	if err != nil {
		return 0, err
	}
	return atomic.LoadUint32(p), nil
}

func (m mappedAtomics) DeviceCompareAndSwap32(gpa memory.GPA, old, new uint32) (bool, error) {
	p, err := m.word(gpa)
	if err != nil {
		return false, err
	}
	return atomic.CompareAndSwapUint32(p, old, new), nil
}
