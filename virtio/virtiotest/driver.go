package virtiotest

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/vmmgo/vmm/memory"
	"github.com/vmmgo/vmm/virtio"
)

// Buf is one buffer of a chain to post. A readable buffer carries Data; a
// writable one has Len bytes (or len(Data) if Len is 0). If Addr is non-zero
// the buffer is placed there instead of in the driver's arena (to aim at a
// private page or outside RAM).
type Buf struct {
	Data  []byte
	Len   uint32
	Write bool
	Addr  memory.GPA
}

// RawDesc is a descriptor exactly as written to the table.
type RawDesc struct {
	Addr  uint64
	Len   uint32
	Flags uint16
	Next  uint16
}

// UsedElem is one used ring entry.
type UsedElem struct {
	ID  uint32
	Len uint32
}

// Driver is the driver side of one split virtqueue in a fake Memory. It is
// not safe for concurrent use (one goroutine plays the driver).
type Driver struct {
	Mem *Memory
	Cfg virtio.QueueConfig

	arenaStart, arenaNext, arenaEnd uint64
	free                            []uint16
	chains                          map[uint16][]uint16
	availIdx                        uint16
	lastUsed                        uint16
}

// ErrFull is returned when the driver has no free descriptors or arena.
var ErrFull = errors.New("fake driver: out of descriptors or arena")

// NewDriver lays out a queue of size entries at base (desc table, avail
// ring, used ring) followed by arena bytes for buffers.
func NewDriver(mem *Memory, base memory.GPA, size uint16, arena uint64) (*Driver, error) {
	base = (base + 15) &^ 15
	n := uint64(size)
	desc := uint64(base)
	avail := desc + 16*n
	used := (avail + 6 + 2*n + 3) &^ 3
	start := (used + 6 + 8*n + 15) &^ 15
	d := &Driver{
		Mem:        mem,
		Cfg:        virtio.QueueConfig{Size: size, Desc: memory.GPA(desc), Avail: memory.GPA(avail), Used: memory.GPA(used)},
		arenaStart: start, arenaNext: start, arenaEnd: start + arena,
		chains: map[uint16][]uint16{},
	}
	if err := d.Cfg.Validate(); err != nil {
		return nil, err
	}
	if d.arenaEnd > mem.Size() {
		return nil, fmt.Errorf("fake driver: rings+arena end %#x beyond memory %#x", d.arenaEnd, mem.Size())
	}
	for i := range size {
		d.free = append(d.free, size-1-i)
	}
	return d, nil
}

// End returns the first address after the driver's arena.
func (d *Driver) End() memory.GPA { return memory.GPA(d.arenaEnd) }

// Alloc reserves n bytes of arena (16-byte aligned). The arena is a ring:
// when it runs out, allocation restarts at its beginning, so tests that keep
// far less than the arena in flight can post forever.
func (d *Driver) Alloc(n uint64) (memory.GPA, error) {
	a := (d.arenaNext + 15) &^ 15
	if a+n > d.arenaEnd {
		a = d.arenaStart
	}
	if a+n > d.arenaEnd {
		return 0, ErrFull
	}
	d.arenaNext = a + n
	return memory.GPA(a), nil
}

// ResetArena forgets every arena allocation.
func (d *Driver) ResetArena() { d.arenaNext = d.arenaStart }

// WriteDesc writes a raw descriptor into slot i of the main table.
func (d *Driver) WriteDesc(i uint16, r RawDesc) {
	d.writeDescAt(d.Cfg.Desc+memory.GPA(16*uint64(i)), r)
}

func (d *Driver) writeDescAt(gpa memory.GPA, r RawDesc) {
	var b [16]byte
	binary.LittleEndian.PutUint64(b[0:], r.Addr)
	binary.LittleEndian.PutUint32(b[8:], r.Len)
	binary.LittleEndian.PutUint16(b[12:], r.Flags)
	binary.LittleEndian.PutUint16(b[14:], r.Next)
	if err := d.Mem.Write(gpa, b[:]); err != nil {
		panic("virtiotest: descriptor outside fake memory: " + err.Error())
	}
}

// Publish puts head in the next avail slot and then advances avail.idx with
// an atomic store (the driver half of §2.7.13).
func (d *Driver) Publish(head uint16) {
	var b [2]byte
	binary.LittleEndian.PutUint16(b[:], head)
	slot := d.Cfg.Avail + 4 + memory.GPA(2*uint64(d.availIdx%d.Cfg.Size))
	_ = d.Mem.Write(slot, b[:])
	d.availIdx++
	d.Mem.store16(d.Cfg.Avail+2, d.availIdx)
}

// SetAvailIdx stores avail.idx directly (to fake a runaway driver).
func (d *Driver) SetAvailIdx(v uint16) { d.availIdx = v; d.Mem.store16(d.Cfg.Avail+2, v) }

func (d *Driver) place(b Buf) (memory.GPA, uint32, error) {
	n := b.Len
	if n == 0 {
		n = uint32(len(b.Data))
	}
	addr := b.Addr
	if addr == 0 {
		a, err := d.Alloc(uint64(n))
		if err != nil {
			return 0, 0, err
		}
		addr = a
	}
	if len(b.Data) > 0 {
		if err := d.Mem.Write(addr, b.Data); err != nil {
			return 0, 0, err
		}
	}
	return addr, n, nil
}

func flagsOf(b Buf) uint16 {
	if b.Write {
		return virtio.DescFWrite
	}
	return 0
}

// Post makes a direct chain of bufs available and returns its head and the
// guest address of each buffer.
func (d *Driver) Post(bufs ...Buf) (uint16, []memory.GPA, error) {
	if len(bufs) == 0 || len(bufs) > len(d.free) {
		return 0, nil, ErrFull
	}
	idx := d.free[len(d.free)-len(bufs):]
	d.free = d.free[:len(d.free)-len(bufs)]
	addrs := make([]memory.GPA, len(bufs))
	for i, b := range bufs {
		a, n, err := d.place(b)
		if err != nil {
			d.free = append(d.free, idx...)
			return 0, nil, err
		}
		addrs[i] = a
		r := RawDesc{Addr: uint64(a), Len: n, Flags: flagsOf(b)}
		if i+1 < len(bufs) {
			r.Flags |= virtio.DescFNext
			r.Next = idx[i+1]
		}
		d.WriteDesc(idx[i], r)
	}
	d.chains[idx[0]] = append([]uint16(nil), idx...)
	d.Publish(idx[0])
	return idx[0], addrs, nil
}

// PostIndirect makes bufs available through one indirect table (§2.7.5.3).
func (d *Driver) PostIndirect(bufs ...Buf) (uint16, []memory.GPA, error) {
	if len(d.free) == 0 || len(bufs) == 0 {
		return 0, nil, ErrFull
	}
	table, err := d.Alloc(16 * uint64(len(bufs)))
	if err != nil {
		return 0, nil, err
	}
	addrs := make([]memory.GPA, len(bufs))
	for i, b := range bufs {
		a, n, err := d.place(b)
		if err != nil {
			return 0, nil, err
		}
		addrs[i] = a
		r := RawDesc{Addr: uint64(a), Len: n, Flags: flagsOf(b)}
		if i+1 < len(bufs) {
			r.Flags |= virtio.DescFNext
			r.Next = uint16(i + 1)
		}
		d.writeDescAt(table+memory.GPA(16*i), r)
	}
	head := d.free[len(d.free)-1]
	d.free = d.free[:len(d.free)-1]
	d.WriteDesc(head, RawDesc{Addr: uint64(table), Len: uint32(16 * len(bufs)), Flags: virtio.DescFIndirect})
	d.chains[head] = []uint16{head}
	d.Publish(head)
	return head, addrs, nil
}

// WriteIndirectTable writes raw descriptors as an indirect table in the
// arena and returns its address (for malformed-table tests).
func (d *Driver) WriteIndirectTable(descs []RawDesc) (memory.GPA, error) {
	t, err := d.Alloc(16 * uint64(len(descs)))
	if err != nil {
		return 0, err
	}
	for i, r := range descs {
		d.writeDescAt(t+memory.GPA(16*i), r)
	}
	return t, nil
}

// Used returns the next used element, if the device published one. It reads
// used.idx atomically before the element it covers.
func (d *Driver) Used() (UsedElem, bool) {
	idx := d.Mem.load16(d.Cfg.Used + 2)
	if idx == d.lastUsed {
		return UsedElem{}, false
	}
	var b [8]byte
	_ = d.Mem.Read(d.Cfg.Used+4+memory.GPA(8*uint64(d.lastUsed%d.Cfg.Size)), b[:])
	d.lastUsed++
	e := UsedElem{ID: binary.LittleEndian.Uint32(b[0:]), Len: binary.LittleEndian.Uint32(b[4:])}
	if ids, ok := d.chains[uint16(e.ID)]; ok {
		d.free = append(d.free, ids...)
		delete(d.chains, uint16(e.ID))
	}
	return e, true
}

// UsedIdx returns used.idx as the device last published it.
func (d *Driver) UsedIdx() uint16 { return d.Mem.load16(d.Cfg.Used + 2) }

// UsedFlags returns used.flags (VIRTQ_USED_F_NO_NOTIFY).
func (d *Driver) UsedFlags() uint16 { return d.Mem.load16(d.Cfg.Used) }

// AvailEvent returns avail_event (event index, §2.7.8).
func (d *Driver) AvailEvent() uint16 {
	return d.Mem.load16(d.Cfg.Used + 4 + memory.GPA(8*uint64(d.Cfg.Size)))
}

// SetNoInterrupt sets or clears VIRTQ_AVAIL_F_NO_INTERRUPT.
func (d *Driver) SetNoInterrupt(on bool) {
	var v uint16
	if on {
		v = virtio.AvailFNoInterrupt
	}
	d.Mem.store16(d.Cfg.Avail, v)
}

// SetUsedEvent writes used_event (event index, §2.7.7.2).
func (d *Driver) SetUsedEvent(v uint16) {
	d.Mem.store16(d.Cfg.Avail+4+memory.GPA(2*uint64(d.Cfg.Size)), v)
}

// FreeDescs returns how many descriptors the driver has free.
func (d *Driver) FreeDescs() int { return len(d.free) }
