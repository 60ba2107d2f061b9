package virtio

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/vmmgo/vmm/memory"
)

// Split virtqueue layout (virtio 1.2 §2.7).
const (
	MaxQueueSize = 32768 // §2.7: Queue Size is at most 32768

	descSize = 16 // struct virtq_desc: le64 addr, le32 len, le16 flags, le16 next

	DescFNext     = 1 // VIRTQ_DESC_F_NEXT
	DescFWrite    = 2 // VIRTQ_DESC_F_WRITE: device-writable
	DescFIndirect = 4 // VIRTQ_DESC_F_INDIRECT

	AvailFNoInterrupt = 1 // VIRTQ_AVAIL_F_NO_INTERRUPT (§2.7.7)
	UsedFNoNotify     = 1 // VIRTQ_USED_F_NO_NOTIFY (§2.7.10)

	// DefaultMaxChainBytes bounds the total length of one chain unless the
	// queue is told otherwise; devices apply their own, tighter limits.
	DefaultMaxChainBytes = 64 << 20
)

// Errors describing a malformed chain or ring. Pop wraps them in a *ChainError.
var (
	ErrDescIndex    = errors.New("descriptor index out of range")
	ErrChainLoop    = errors.New("descriptor chain loops")
	ErrChainTooLong = errors.New("descriptor chain longer than the queue size")
	ErrChainRange   = errors.New("descriptor buffer outside guest RAM or wraps around")
	ErrChainOrder   = errors.New("device-readable descriptor after a device-writable one")
	ErrChainTooBig  = errors.New("descriptor chain total length too large")
	ErrChainEmpty   = errors.New("descriptor chain has no buffers")
	ErrIndirect     = errors.New("invalid indirect descriptor")
	ErrAvailIndex   = errors.New("avail.idx moved more than the queue size")
	ErrQueueBroken  = errors.New("virtqueue is broken; device needs reset")
	ErrQueueConfig  = errors.New("invalid virtqueue configuration")
)

// ChainError reports a malformed descriptor chain. Pop has already returned
// the chain's head to the used ring with length 0 when Returned is true, so
// the driver does not leak it (§2.7.14 leaves the reaction to the device;
// completing it empty is what Firecracker and QEMU do).
type ChainError struct {
	Head     uint16
	Index    uint16 // descriptor being examined
	Returned bool
	Err      error
}

func (e *ChainError) Error() string {
	return fmt.Sprintf("virtqueue chain head %d at descriptor %d: %v", e.Head, e.Index, e.Err)
}

func (e *ChainError) Unwrap() error { return e.Err }

// QueueConfig is what the driver programs through the transport (§4.1.4.3
// queue_size, queue_desc, queue_driver, queue_device).
type QueueConfig struct {
	Size  uint16
	Desc  memory.GPA // descriptor table, 16-byte aligned
	Avail memory.GPA // driver area, 2-byte aligned
	Used  memory.GPA // device area, 4-byte aligned
}

// Validate checks size and alignment (§2.7 table "Virtqueue Part Alignment").
func (c QueueConfig) Validate() error {
	if c.Size == 0 || c.Size > MaxQueueSize || c.Size&(c.Size-1) != 0 {
		return fmt.Errorf("%w: size %d is not a power of two in [1, %d]", ErrQueueConfig, c.Size, MaxQueueSize)
	}
	if c.Desc%16 != 0 || c.Avail%2 != 0 || c.Used%4 != 0 {
		return fmt.Errorf("%w: misaligned rings desc=%v avail=%v used=%v", ErrQueueConfig, c.Desc, c.Avail, c.Used)
	}
	n := uint64(c.Size)
	for _, r := range [...]struct {
		a    memory.GPA
		size uint64
	}{{c.Desc, descSize * n}, {c.Avail, 6 + 2*n}, {c.Used, 6 + 8*n}} {
		if uint64(r.a)+r.size < uint64(r.a) {
			return fmt.Errorf("%w: ring at %v wraps around", ErrQueueConfig, r.a)
		}
	}
	return nil
}

// Desc is one validated guest buffer of a chain.
type Desc struct {
	Addr memory.GPA
	Len  uint32
}

// Chain is one descriptor chain popped from the avail ring, split into the
// device-readable buffers followed by the device-writable ones (§2.7.4).
// Zero-length descriptors are dropped.
type Chain struct {
	Head        uint16
	Readable    []Desc
	Writable    []Desc
	ReadableLen uint32
	WritableLen uint32
	// Err is non-nil (wrapping memory.ErrPrivate) when a buffer lies on a
	// page the device may not touch. The chain is otherwise well formed; the
	// device must fail the request with its I/O error status without reading
	// or writing any buffer except, where it is accessible, the status.
	Err error
}

// Queue is the device side of one split virtqueue. It is not safe for
// concurrent use: one goroutine serves a queue. The guest side is concurrent
// by nature and is handled with the ordering described on AtomicMemory.
type Queue struct {
	mem      GuestMemory
	am       AtomicMemory
	cfg      QueueConfig
	eventIdx bool
	indirect bool
	maxBytes uint64

	lastAvail      uint16 // next avail ring slot to consume
	usedIdx        uint16 // next used.idx value to publish
	signalledUsed  uint16 // used idx when ShouldNotify last ran (event idx)
	signalledValid bool
	broken         bool

	stamp []uint32 // loop detection: [0,size) main table, [size,2*size) indirect
	gen   uint32
	buf   [descSize]byte
	s     scratch
}

// NewQueue returns a queue over the rings in cfg. features is the negotiated
// feature set (FRingEventIdx and FIndirectDesc matter here).
func NewQueue(mem GuestMemory, cfg QueueConfig, features uint64) (*Queue, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	am, _ := mem.(AtomicMemory)
	return &Queue{
		mem:      mem,
		am:       am,
		cfg:      cfg,
		eventIdx: features&FRingEventIdx != 0,
		indirect: features&FIndirectDesc != 0,
		maxBytes: DefaultMaxChainBytes,
		stamp:    make([]uint32, 2*int(cfg.Size)),
	}, nil
}

// SetMaxChainBytes bounds the total length of a chain (readable + writable).
func (q *Queue) SetMaxChainBytes(n uint64) { q.maxBytes = n }

// Config returns the ring addresses and size.
func (q *Queue) Config() QueueConfig { return q.cfg }

// Size returns the queue size.
func (q *Queue) Size() uint16 { return q.cfg.Size }

// Broken reports whether the queue saw an unrecoverable ring error.
func (q *Queue) Broken() bool { return q.broken }

// LastAvail returns the index of the next avail entry the device will
// consume (used for avail_event and by tests).
func (q *Queue) LastAvail() uint16 { return q.lastAvail }

// UsedIdx returns the next used.idx value the device will publish.
func (q *Queue) UsedIdx() uint16 { return q.usedIdx }

func (q *Queue) availIdx() (uint16, error) {
	return q.s.load16(q.mem, q.am, q.cfg.Avail+2)
}

// HasAvailable reports whether the driver has made chains available that
// the device has not popped.
func (q *Queue) HasAvailable() (bool, error) {
	if q.broken {
		return false, ErrQueueBroken
	}
	idx, err := q.availIdx()
	if err != nil {
		return false, fmt.Errorf("read avail.idx: %w", err)
	}
	return idx != q.lastAvail, nil
}

// Pop takes the next available chain into c (reusing its slices). It returns
// false with a nil error when the ring is empty. A malformed chain yields a
// *ChainError (its head already completed with length 0 where possible); an
// impossible avail.idx breaks the queue (ErrQueueBroken from then on) and
// the device should signal DEVICE_NEEDS_RESET (§2.1.2).
func (q *Queue) Pop(c *Chain) (bool, error) {
	if q.broken {
		return false, ErrQueueBroken
	}
	// §2.7.13.3 / architecture "Virtqueue ordering": read avail.idx (an
	// acquire load) before the ring entries and descriptors it covers.
	idx, err := q.availIdx()
	if err != nil {
		q.broken = true
		return false, fmt.Errorf("%w: read avail.idx: %w", ErrQueueBroken, err)
	}
	pending := idx - q.lastAvail
	if pending == 0 {
		return false, nil
	}
	if pending > q.cfg.Size {
		q.broken = true
		return false, fmt.Errorf("%w: %w (avail.idx %d, last seen %d, size %d)",
			ErrQueueBroken, ErrAvailIndex, idx, q.lastAvail, q.cfg.Size)
	}
	slot := q.cfg.Avail + 4 + memory.GPA(2*(q.lastAvail%q.cfg.Size))
	head, err := q.s.plainLoad16(q.mem, slot)
	if err != nil {
		q.broken = true
		return false, fmt.Errorf("%w: read avail.ring: %w", ErrQueueBroken, err)
	}
	q.lastAvail++

	c.Head = head
	c.Readable = c.Readable[:0]
	c.Writable = c.Writable[:0]
	c.ReadableLen, c.WritableLen = 0, 0
	c.Err = nil
	if idx, werr := q.walk(c); werr != nil {
		ce := &ChainError{Head: head, Index: idx, Err: werr}
		if head < q.cfg.Size {
			if perr := q.PushUsed(head, 0); perr == nil {
				ce.Returned = true
			}
		}
		return true, ce
	}
	return true, nil
}

// walk follows the chain starting at c.Head (§2.7.5, §2.7.5.3). Every step is
// bounded: at most Size descriptors in total, each index visited once per
// table, every buffer range-checked page by page through the memory API.
func (q *Queue) walk(c *Chain) (uint16, error) {
	size := uint32(q.cfg.Size)
	q.gen++
	if q.gen == 0 { // wrapped: old stamps could collide
		clear(q.stamp)
		q.gen = 1
	}
	table := q.cfg.Desc
	tableLen := size
	stampBase := uint32(0)
	inIndirect := false
	idx := uint32(c.Head)
	var count uint32
	var total uint64
	sawWrite := false
	for {
		if idx >= tableLen {
			return uint16(idx), ErrDescIndex
		}
		if q.stamp[stampBase+idx] == q.gen {
			return uint16(idx), ErrChainLoop
		}
		q.stamp[stampBase+idx] = q.gen
		count++
		if count > size {
			return uint16(idx), ErrChainTooLong
		}
		if err := q.mem.DeviceRead(table+memory.GPA(idx*descSize), q.buf[:]); err != nil {
			return uint16(idx), fmt.Errorf("%w: descriptor table: %w", ErrChainRange, err)
		}
		addr := binary.LittleEndian.Uint64(q.buf[0:])
		length := binary.LittleEndian.Uint32(q.buf[8:])
		flags := binary.LittleEndian.Uint16(q.buf[12:])
		next := binary.LittleEndian.Uint16(q.buf[14:])

		if flags&DescFIndirect != 0 {
			// §2.7.5.3.1: only with the feature, not inside an indirect
			// table, not together with NEXT, length a multiple of 16.
			switch {
			case !q.indirect:
				return uint16(idx), fmt.Errorf("%w: VIRTIO_F_INDIRECT_DESC not negotiated", ErrIndirect)
			case inIndirect:
				return uint16(idx), fmt.Errorf("%w: nested indirect table", ErrIndirect)
			case flags&DescFNext != 0:
				return uint16(idx), fmt.Errorf("%w: INDIRECT with NEXT", ErrIndirect)
			case length == 0 || length%descSize != 0:
				return uint16(idx), fmt.Errorf("%w: table length %d", ErrIndirect, length)
			case length/descSize > size:
				return uint16(idx), fmt.Errorf("%w: table of %d entries exceeds queue size", ErrChainTooLong, length/descSize)
			}
			if addr+uint64(length) < addr {
				return uint16(idx), ErrChainRange
			}
			if err := q.probe(memory.GPA(addr), length); err != nil {
				// A private or missing indirect table cannot be walked.
				return uint16(idx), fmt.Errorf("%w: indirect table: %w", ErrChainRange, err)
			}
			table = memory.GPA(addr)
			tableLen = length / descSize
			stampBase = size
			inIndirect = true
			idx = 0
			continue
		}

		write := flags&DescFWrite != 0
		if !write && sawWrite {
			return uint16(idx), ErrChainOrder
		}
		if addr+uint64(length) < addr {
			return uint16(idx), ErrChainRange
		}
		total += uint64(length)
		if total > q.maxBytes {
			return uint16(idx), fmt.Errorf("%w: %d > %d bytes", ErrChainTooBig, total, q.maxBytes)
		}
		if length > 0 {
			if err := q.probe(memory.GPA(addr), length); err != nil {
				if !errors.Is(err, memory.ErrPrivate) {
					return uint16(idx), fmt.Errorf("%w: %w", ErrChainRange, err)
				}
				if c.Err == nil {
					c.Err = fmt.Errorf("buffer %#x+%#x: %w", addr, length, err)
				}
			}
			d := Desc{Addr: memory.GPA(addr), Len: length}
			if write {
				sawWrite = true
				c.Writable = append(c.Writable, d)
				c.WritableLen += length
			} else {
				c.Readable = append(c.Readable, d)
				c.ReadableLen += length
			}
		} else if write {
			sawWrite = true
		}
		if flags&DescFNext == 0 {
			break
		}
		idx = uint32(next)
	}
	if len(c.Readable)+len(c.Writable) == 0 {
		return c.Head, ErrChainEmpty
	}
	return 0, nil
}

// probe checks that every 4 KiB page of [gpa, gpa+n) is guest RAM the device
// may access, by reading one byte of each page. Checking up front is what
// lets a device fail a request touching a private page before it has read or
// written anything else (docs/conversion.md, "What a conversion does", step 5).
func (q *Queue) probe(gpa memory.GPA, n uint32) error {
	if sc, ok := q.mem.(sharedChecker); ok {
		return sc.CheckShared(gpa, uint64(n))
	}
	b := q.s[:1]
	var private error
	end := uint64(gpa) + uint64(n)
	for p := uint64(gpa); p < end; p = (p &^ (memory.PageSize - 1)) + memory.PageSize {
		if err := q.mem.DeviceRead(memory.GPA(p), b); err != nil {
			// Keep going past a private page: a range error further on
			// makes the chain malformed, which takes precedence.
			if !errors.Is(err, memory.ErrPrivate) {
				return err
			}
			if private == nil {
				private = err
			}
		}
	}
	return private
}

// CheckRings reports whether the device may access all three rings: nil,
// or an error wrapping memory.ErrPrivate or memory.ErrOutOfRange. A
// protected guest shares its rings before DRIVER_OK; rings still private
// then mean the guest kernel does not know it must.
func (q *Queue) CheckRings() error {
	n := uint32(q.cfg.Size)
	for _, r := range [...]struct {
		name string
		a    memory.GPA
		size uint32
	}{{"descriptor table", q.cfg.Desc, descSize * n}, {"avail ring", q.cfg.Avail, 6 + 2*n}, {"used ring", q.cfg.Used, 6 + 8*n}} {
		if err := q.probe(r.a, r.size); err != nil {
			return fmt.Errorf("%s at %v: %w", r.name, r.a, err)
		}
	}
	return nil
}

// sharedChecker is implemented by *memory.Guest: one call checks a whole
// buffer's range and page state.
type sharedChecker interface {
	CheckShared(gpa memory.GPA, n uint64) error
}

// PushUsed completes the chain at head having written n bytes into its
// writable buffers: the used element first, then used.idx with a release
// (CAS) store (§2.7.8, §2.7.13).
func (q *Queue) PushUsed(head uint16, n uint32) error {
	if head >= q.cfg.Size {
		return fmt.Errorf("push used head %d: %w", head, ErrDescIndex)
	}
	e := q.buf[:8]
	binary.LittleEndian.PutUint32(e[0:], uint32(head))
	binary.LittleEndian.PutUint32(e[4:], n)
	slot := q.cfg.Used + 4 + memory.GPA(8*(q.usedIdx%q.cfg.Size))
	if err := q.mem.DeviceWrite(slot, e); err != nil {
		q.broken = true
		return fmt.Errorf("%w: write used element: %w", ErrQueueBroken, err)
	}
	q.usedIdx++
	if err := q.s.store16(q.mem, q.am, q.cfg.Used+2, q.usedIdx); err != nil {
		q.broken = true
		return fmt.Errorf("%w: publish used.idx: %w", ErrQueueBroken, err)
	}
	if q.am == nil {
		fence()
	}
	return nil
}

// ShouldNotify reports whether the driver wants an interrupt for the used
// entries published since the last call: VIRTQ_AVAIL_F_NO_INTERRUPT without
// event index (§2.7.7.1), vring_need_event(used_event, new, old) with it
// (§2.7.7.2, §2.7.10).
func (q *Queue) ShouldNotify() bool {
	if q.eventIdx {
		old, valid := q.signalledUsed, q.signalledValid
		q.signalledUsed, q.signalledValid = q.usedIdx, true
		ev, err := q.s.load16(q.mem, q.am, q.cfg.Avail+4+memory.GPA(2*uint32(q.cfg.Size)))
		if err != nil {
			return true // cannot tell: interrupt rather than hang the driver
		}
		if !valid {
			return true // first completion since activation
		}
		return needEvent(ev, q.usedIdx, old)
	}
	flags, err := q.s.load16(q.mem, q.am, q.cfg.Avail)
	if err != nil {
		return true
	}
	return flags&AvailFNoInterrupt == 0
}

// needEvent is vring_need_event (§2.7.10): has new_idx moved past event_idx
// since old_idx?
func needEvent(event, newIdx, old uint16) bool {
	return newIdx-event-1 < newIdx-old
}

// DisableNotify asks the driver not to kick while the device is busy
// draining the queue (VIRTQ_USED_F_NO_NOTIFY; with event index the device
// simply does not advance avail_event).
func (q *Queue) DisableNotify() {
	if q.eventIdx || q.broken {
		return
	}
	_ = q.s.store16(q.mem, q.am, q.cfg.Used, UsedFNoNotify)
}

// EnableNotify re-enables driver kicks and then re-checks the avail ring,
// reporting whether more work arrived meanwhile (the caller must drain
// again, or it would sleep with work pending). The store is a CAS, i.e. a
// full barrier, so the re-check cannot be ordered before it.
func (q *Queue) EnableNotify() bool {
	if q.broken {
		return false
	}
	var err error
	if q.eventIdx {
		// avail_event lives after the used ring (§2.7.8).
		err = q.s.store16(q.mem, q.am, q.cfg.Used+4+memory.GPA(8*uint32(q.cfg.Size)), q.lastAvail)
	} else {
		err = q.s.store16(q.mem, q.am, q.cfg.Used, 0)
	}
	if err != nil {
		return false
	}
	fence()
	more, err := q.HasAvailable()
	return err == nil && more
}

var fenceWord atomic.Uint32

// fence is a full hardware barrier on amd64 (a LOCKed instruction) for the
// fallback path where guest memory offers no atomics.
func fence() { fenceWord.Add(1) }
