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
// compare-and-swap a naturally aligned 32-bit word of guest RAM with
// sync/atomic. The queue uses it for the 16-bit ring indices (avail.idx,
// used.idx, used_event, avail_event): Go has no 16-bit atomics, so the queue
// operates on the aligned 32-bit word that contains the index.
//
// Why it matters: the driver writes avail.idx on another CPU while the device
// reads it. A plain copy of two bytes (runtime memmove does byte moves for
// 1–2 byte copies on amd64) can tear, and a plain store carries no release
// ordering for the used elements written before it. sync/atomic loads are
// acquire and its CAS is a full barrier (LOCK CMPXCHG on amd64), which is
// exactly what §2.7.13 ("write the used element, then the index") and the
// event-index handshake (§2.7.7.2, a store-load fence between publishing
// used.idx and reading used_event) need.
//
// Without it the queue falls back to DeviceRead/DeviceWrite of the aligned
// word (amd64 memmove moves 4 aligned bytes with one MOVL, which does not
// tear, but the Go memory model does not promise it).
type AtomicMemory interface {
	GuestMemory
	// DeviceLoad32 atomically loads the 4-byte aligned little-endian word at gpa.
	DeviceLoad32(gpa memory.GPA) (uint32, error)
	// DeviceCompareAndSwap32 atomically replaces old with new at the 4-byte
	// aligned gpa and reports whether it did.
	DeviceCompareAndSwap32(gpa memory.GPA, old, new uint32) (bool, error)
}

// scratch is a queue's small I/O buffer: byte slices handed to an interface
// method escape, so reusing one keeps the hot path allocation-free.
type scratch [8]byte

// load16 reads the little-endian 16-bit value at gpa (2-byte aligned) through
// an atomic load of the 32-bit word containing it.
func (s *scratch) load16(mem GuestMemory, am AtomicMemory, gpa memory.GPA) (uint16, error) {
	word := gpa &^ 3
	shift := uint(gpa&2) * 8
	if am != nil {
		w, err := am.DeviceLoad32(word)
		if err != nil {
			// The word may straddle the end of RAM or a private page even
			// though the 2 bytes we need do not: fall back to the exact read.
			return s.plainLoad16(mem, gpa)
		}
		return uint16(w >> shift), nil
	}
	if err := mem.DeviceRead(word, s[:4]); err != nil {
		return s.plainLoad16(mem, gpa)
	}
	return uint16(binary.LittleEndian.Uint32(s[:4]) >> shift), nil
}

func (s *scratch) plainLoad16(mem GuestMemory, gpa memory.GPA) (uint16, error) {
	if err := mem.DeviceRead(gpa, s[:2]); err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint16(s[:2]), nil
}

// store16 writes the little-endian 16-bit value v at gpa (2-byte aligned)
// with a CAS on the containing 32-bit word, so the other half (which may be
// driver-owned) is preserved and the store is a full barrier.
func (s *scratch) store16(mem GuestMemory, am AtomicMemory, gpa memory.GPA, v uint16) error {
	word := gpa &^ 3
	shift := uint(gpa&2) * 8
	if am != nil {
		// Bounded: the other half of the word changes only when the driver
		// writes it, and it has no reason to do so repeatedly.
		for range 64 {
			old, err := am.DeviceLoad32(word)
			if err != nil {
				break
			}
			nw := old&^(0xffff<<shift) | uint32(v)<<shift
			ok, err := am.DeviceCompareAndSwap32(word, old, nw)
			if err != nil {
				break
			}
			if ok {
				return nil
			}
		}
	}
	binary.LittleEndian.PutUint16(s[:2], v)
	if err := mem.DeviceWrite(gpa, s[:2]); err != nil {
		return fmt.Errorf("write ring index at %v: %w", gpa, err)
	}
	return nil
}
