package virtio

import (
	"encoding/binary"
	"fmt"

	"github.com/vmmgo/vmm/memory"
)

// GuestMemory is how devices reach guest RAM. *memory.Guest satisfies it.
// Both calls are bounds-checked and fail with memory.ErrPrivate when any page
// touched is private, and with memory.ErrOutOfRange outside guest RAM.
type GuestMemory interface {
	DeviceRead(gpa memory.GPA, p []byte) error
	DeviceWrite(gpa memory.GPA, p []byte) error
}

// AtomicMemory is optionally implemented by a GuestMemory that can load and
// store the 16-bit ring indexes (avail.idx, used.idx, the flags words,
// used_event, avail_event) atomically. *memory.Guest does, under the same
// page-state lock as its copies and on the hardened view when it is active:
// the queue never touches guest RAM except through the GuestMemory methods.
//
// Why it matters: the driver writes avail.idx on another CPU while the device
// reads it. A plain copy of two bytes (runtime memmove does byte moves for
// 1–2 byte copies on amd64) can tear, and a plain store carries no release
// ordering for the used elements written before it. The loads are acquire
// and the store a full barrier (LOCK CMPXCHG on amd64), which is exactly
// what §2.7.13 ("write the used element, then the index") and the
// event-index handshake (§2.7.7.2, a store-load fence between publishing
// used.idx and reading used_event) need.
//
// Without it the queue falls back to DeviceRead/DeviceWrite of the two bytes
// (for test doubles only).
type AtomicMemory interface {
	GuestMemory
	// DeviceLoad16 atomically loads the 2-byte aligned little-endian value at gpa.
	DeviceLoad16(gpa memory.GPA) (uint16, error)
	// DeviceStore16 atomically stores v at the 2-byte aligned gpa with a
	// full barrier, leaving the other bytes around it alone.
	DeviceStore16(gpa memory.GPA, v uint16) error
}

// scratch is a queue's small I/O buffer: byte slices handed to an interface
// method escape, so reusing one keeps the hot path allocation-free.
type scratch [8]byte

// load16 reads the little-endian 16-bit ring index at gpa (2-byte aligned).
func (s *scratch) load16(mem GuestMemory, am AtomicMemory, gpa memory.GPA) (uint16, error) {
	if am != nil {
		return am.DeviceLoad16(gpa)
	}
	return s.plainLoad16(mem, gpa)
}

func (s *scratch) plainLoad16(mem GuestMemory, gpa memory.GPA) (uint16, error) {
	if err := mem.DeviceRead(gpa, s[:2]); err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint16(s[:2]), nil
}

// store16 writes the little-endian 16-bit ring index v at gpa (2-byte aligned).
func (s *scratch) store16(mem GuestMemory, am AtomicMemory, gpa memory.GPA, v uint16) error {
	var err error
	if am != nil {
		err = am.DeviceStore16(gpa, v)
	} else {
		binary.LittleEndian.PutUint16(s[:2], v)
		err = mem.DeviceWrite(gpa, s[:2])
	}
	if err != nil {
		return fmt.Errorf("write ring index at %v: %w", gpa, err)
	}
	return nil
}
