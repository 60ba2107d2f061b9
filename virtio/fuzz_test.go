package virtio_test

import (
	"encoding/binary"
	"testing"

	"github.com/vmmgo/vmm/memory"
	"github.com/vmmgo/vmm/virtio"
	"github.com/vmmgo/vmm/virtio/virtiotest"
)

// FuzzChain writes fuzzer bytes as the descriptor table (and a region
// indirect descriptors may point at), publishes heads taken from the input,
// and pops: the walk must never panic, never return a chain longer than the
// queue, and every buffer it returns must lie inside guest RAM.
func FuzzChain(f *testing.F) {
	seed := make([]byte, 2+16*8)
	binary.LittleEndian.PutUint64(seed[2:], 0x8000)
	binary.LittleEndian.PutUint32(seed[10:], 16)
	binary.LittleEndian.PutUint16(seed[14:], virtio.DescFNext)
	binary.LittleEndian.PutUint16(seed[16:], 1)
	f.Add(seed)
	f.Add([]byte{0xff, 3, 0, 0x80, 0, 0, 0, 0, 0, 0, 32, 0, 0, 0, 4, 0, 0, 0})
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) < 2 {
			return
		}
		const size = 8
		const memSize = 64 << 10
		mem := virtiotest.NewMemory(memSize)
		mem.SetPrivate(0xe000, 0x1000, true)
		drv, err := virtiotest.NewDriver(mem, 0x1000, size, 4096)
		if err != nil {
			t.Fatal(err)
		}
		features := virtio.FVersion1
		if in[0]&1 != 0 {
			features |= virtio.FIndirectDesc
		}
		if in[0]&2 != 0 {
			features |= virtio.FRingEventIdx
		}
		q, err := virtio.NewQueue(mem, drv.Cfg, features)
		if err != nil {
			t.Fatal(err)
		}
		body := in[2:]
		// descriptor table, then the same bytes at 0x8000 for indirect tables
		tbl := body[:min(len(body), 16*size)]
		_ = mem.Write(drv.Cfg.Desc, tbl)
		_ = mem.Write(0x8000, body[:min(len(body), 0x1000)])
		heads := in[1]
		for i := range 4 {
			drv.Publish(uint16(heads>>(2*i)) & 0xf)
		}
		var c virtio.Chain
		for range 6 {
			ok, err := q.Pop(&c)
			if !ok {
				break
			}
			if err != nil {
				continue
			}
			if len(c.Readable)+len(c.Writable) > size {
				t.Fatalf("chain of %d buffers in a queue of %d", len(c.Readable)+len(c.Writable), size)
			}
			var r, w uint64
			for _, d := range append(append([]virtio.Desc(nil), c.Readable...), c.Writable...) {
				if uint64(d.Addr)+uint64(d.Len) > memSize {
					t.Fatalf("buffer %v+%d outside RAM", d.Addr, d.Len)
				}
			}
			for _, d := range c.Readable {
				r += uint64(d.Len)
			}
			for _, d := range c.Writable {
				w += uint64(d.Len)
			}
			if r != uint64(c.ReadableLen) || w != uint64(c.WritableLen) {
				t.Fatal("length bookkeeping wrong")
			}
			if c.Err == nil {
				// every byte is accessible: reading must succeed
				p := make([]byte, min(int(r), 1<<16))
				if _, err := c.ReadAt(mem, p, 0); err != nil {
					t.Fatalf("validated chain unreadable: %v", err)
				}
			}
			_ = q.PushUsed(c.Head, 0)
			_ = memory.GPA(0)
		}
	})
}
