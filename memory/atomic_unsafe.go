package memory

import (
	"fmt"
	"runtime/debug"
	"sync/atomic"
	"unsafe"
)

// Device atomics: the loads and stores of the virtqueue ring indexes
// (avail.idx, used.idx, the flags and event words), which the driver and the
// device touch concurrently from different CPUs. Like the device copies they
// hold the read lock from the page-state check to the end of the access, go
// through the hardened view when it is active and survive a fault on the
// page, so a conversion can never slip between the check and the access
// (rust-vmm's vm-memory puts its atomics in the memory API for the same
// reason).
//
// Go has no 16-bit atomics: a 16-bit value is loaded or stored through the
// naturally aligned 32-bit word containing it. The word lies in the same
// 4 KiB page as the value (pages are 4-aligned), so checking the two bytes
// the caller names is checking the word.

// atomicWord returns the aligned 32-bit word containing gpa in the device
// mapping, after the device check of the n bytes at gpa. Called with mu held
// for reading.
func (g *Guest) atomicWord(op string, gpa GPA, n uint64) (*uint32, error) {
	if uint64(gpa)%n != 0 {
		return nil, fmt.Errorf("%s at %v: %w: not %d-byte aligned", op, gpa, ErrInvalid, n)
	}
	if err := g.deviceCheck(op, gpa, n); err != nil {
		return nil, err
	}
	word := gpa &^ 3
	r := g.find(word)
	if r == nil {
		return nil, fmt.Errorf("%s: %w: %v", op, ErrOutOfRange, gpa)
	}
	m := r.deviceMem()
	// Regions and mappings are page aligned and word is 4-aligned: a valid,
	// aligned *uint32 into memory the Go heap does not own.
	return (*uint32)(unsafe.Pointer(&m[uint64(word-r.GPA)])), nil
}

// atomic runs fn on the word containing gpa for a device model, with the
// device check of the n bytes at gpa, under the read lock, fault-safe.
func (g *Guest) atomic(op string, gpa GPA, n uint64, fn func(p *uint32) uint32) (v uint32, err error) {
	g.mu.RLock()
	defer g.mu.RUnlock()
	p, err := g.atomicWord(op, gpa, n)
	if err != nil {
		return 0, err
	}
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer g.recoverFault(op, gpa, &err)
	return fn(p), nil
}

func loadWord(p *uint32) uint32 { return atomic.LoadUint32(p) }

// DeviceLoad16 atomically loads the little-endian 16-bit value at gpa
// (2-byte aligned) for a device model: an acquire load of its word. It fails
// like DeviceRead (ErrOutOfRange, ErrPrivate) and with ErrInvalid when gpa
// is misaligned.
func (g *Guest) DeviceLoad16(gpa GPA) (uint16, error) {
	w, err := g.atomic("device load16", gpa, 2, loadWord)
	return uint16(w >> (uint(gpa&2) * 8)), err
}

// storeRetries bounds the compare-and-swap loop of DeviceStore16: the other
// half of the word changes only when the driver writes it, and a driver
// that rewrites it without end must not hold a device goroutine.
const storeRetries = 64

// DeviceStore16 atomically stores the little-endian 16-bit value v at gpa
// (2-byte aligned) for a device model, preserving the other half of its
// word (which may belong to the driver), with a full barrier (LOCK CMPXCHG):
// everything the device wrote before is visible to the driver before v is.
// If the other half keeps changing, the two bytes are stored on their own
// (an aligned 16-bit store does not tear on amd64) and a locked no-op on the
// word gives the barrier.
func (g *Guest) DeviceStore16(gpa GPA, v uint16) error {
	shift := uint(gpa&2) * 8
	_, err := g.atomic("device store16", gpa, 2, func(p *uint32) uint32 {
		for range storeRetries {
			old := atomic.LoadUint32(p)
			if atomic.CompareAndSwapUint32(p, old, old&^(0xffff<<shift)|uint32(v)<<shift) {
				return 0
			}
		}
		*(*uint16)(unsafe.Add(unsafe.Pointer(p), shift/8)) = v
		atomic.AddUint32(p, 0)
		return 0
	})
	return err
}

// DeviceLoad32 atomically loads the little-endian 32-bit word at gpa
// (4-byte aligned) for a device model.
func (g *Guest) DeviceLoad32(gpa GPA) (uint32, error) {
	return g.atomic("device load32", gpa, 4, loadWord)
}

// DeviceCompareAndSwap32 atomically replaces old with new at the 4-byte
// aligned gpa for a device model and reports whether it did.
func (g *Guest) DeviceCompareAndSwap32(gpa GPA, old, new uint32) (bool, error) {
	ok, err := g.atomic("device cas32", gpa, 4, func(p *uint32) uint32 {
		if atomic.CompareAndSwapUint32(p, old, new) {
			return 1
		}
		return 0
	})
	return ok == 1, err
}
