package virtiotest

import (
	"fmt"
	"sync/atomic"

	"github.com/vmmgo/vmm/memory"
)

// Memory is a fake guest RAM of Size bytes at GPA 0. Device accesses honour
// the private-page set like *memory.Guest does; driver accesses (Read,
// Write) ignore it, as the guest itself may touch its private pages.
type Memory struct {
	words   []uint32
	buf     []byte
	private []atomic.Bool // one per 4 KiB page

	// Counters of refused device accesses, for tests.
	PrivateHits atomic.Uint64
	RangeHits   atomic.Uint64
	// DeviceWrites counts successful device writes (to check "nothing written").
	DeviceWrites atomic.Uint64
}

// NewMemory returns size bytes (rounded up to 4 KiB) of zeroed fake RAM.
func NewMemory(size int) *Memory {
	size = (size + memory.PageSize - 1) &^ (memory.PageSize - 1)
	w, b := newWords(size)
	return &Memory{words: w, buf: b, private: make([]atomic.Bool, size/memory.PageSize)}
}

// Size returns the size in bytes.
func (m *Memory) Size() uint64 { return uint64(len(m.buf)) }

// Bytes returns the backing slice (driver view; racy if the device runs).
func (m *Memory) Bytes() []byte { return m.buf }

// SetPrivate marks the pages covering [gpa, gpa+n) private or shared.
func (m *Memory) SetPrivate(gpa memory.GPA, n uint64, private bool) {
	for p := uint64(gpa) / memory.PageSize; p*memory.PageSize < uint64(gpa)+n && p < uint64(len(m.private)); p++ {
		m.private[p].Store(private)
	}
}

func (m *Memory) check(gpa memory.GPA, n int, device bool) error {
	end := uint64(gpa) + uint64(n)
	if end < uint64(gpa) || end > uint64(len(m.buf)) {
		if device {
			m.RangeHits.Add(1)
		}
		return fmt.Errorf("access %v+%#x: %w", gpa, n, memory.ErrOutOfRange)
	}
	if device && n > 0 {
		for p := uint64(gpa) / memory.PageSize; p <= (end-1)/memory.PageSize; p++ {
			if m.private[p].Load() {
				m.PrivateHits.Add(1)
				return fmt.Errorf("access %v+%#x: %w", gpa, n, memory.ErrPrivate)
			}
		}
	}
	return nil
}

// DeviceRead implements virtio.GuestMemory.
func (m *Memory) DeviceRead(gpa memory.GPA, p []byte) error {
	if err := m.check(gpa, len(p), true); err != nil {
		return err
	}
	copy(p, m.buf[gpa:])
	return nil
}

// DeviceWrite implements virtio.GuestMemory.
func (m *Memory) DeviceWrite(gpa memory.GPA, p []byte) error {
	if err := m.check(gpa, len(p), true); err != nil {
		return err
	}
	copy(m.buf[gpa:], p)
	m.DeviceWrites.Add(1)
	return nil
}

// DeviceLoad16 implements virtio.AtomicMemory.
func (m *Memory) DeviceLoad16(gpa memory.GPA) (uint16, error) {
	if gpa%2 != 0 {
		return 0, fmt.Errorf("load16 %v: %w", gpa, memory.ErrInvalid)
	}
	if err := m.check(gpa, 2, true); err != nil {
		return 0, err
	}
	return m.load16(gpa), nil
}

// DeviceStore16 implements virtio.AtomicMemory.
func (m *Memory) DeviceStore16(gpa memory.GPA, v uint16) error {
	if gpa%2 != 0 {
		return fmt.Errorf("store16 %v: %w", gpa, memory.ErrInvalid)
	}
	if err := m.check(gpa, 2, true); err != nil {
		return err
	}
	m.store16(gpa, v)
	m.DeviceWrites.Add(1)
	return nil
}

// Read is a driver-side read (ignores page state).
func (m *Memory) Read(gpa memory.GPA, p []byte) error {
	if err := m.check(gpa, len(p), false); err != nil {
		return err
	}
	copy(p, m.buf[gpa:])
	return nil
}

// Write is a driver-side write (ignores page state).
func (m *Memory) Write(gpa memory.GPA, p []byte) error {
	if err := m.check(gpa, len(p), false); err != nil {
		return err
	}
	copy(m.buf[gpa:], p)
	return nil
}

// load16 / store16 are the driver side of the ring-index atomics.
func (m *Memory) load16(gpa memory.GPA) uint16 {
	return uint16(load32(m.words, int(gpa/4)) >> (uint(gpa&2) * 8))
}

func (m *Memory) store16(gpa memory.GPA, v uint16) {
	i := int(gpa / 4)
	shift := uint(gpa&2) * 8
	for {
		old := load32(m.words, i)
		if cas32(m.words, i, old, old&^(0xffff<<shift)|uint32(v)<<shift) {
			return
		}
	}
}

// CheckShared reports whether a device may touch [gpa, gpa+n) (like
// *memory.Guest.CheckShared).
func (m *Memory) CheckShared(gpa memory.GPA, n uint64) error {
	return m.check(gpa, int(n), true)
}
