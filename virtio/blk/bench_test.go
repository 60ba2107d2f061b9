package blk_test

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/vmmgo/vmm/virtio/blk"
	"github.com/vmmgo/vmm/virtio/virtiotest"
)

// benchImage makes a 256 MiB image in /dev/shm (tmpfs), so the numbers
// measure the queue and request code plus a memory copy, not a disk.
func benchImage(b *testing.B) string {
	dir := "/dev/shm"
	if _, err := os.Stat(dir); err != nil {
		dir = b.TempDir()
	}
	p := filepath.Join(dir, "vmm-blk-bench.img")
	f, err := os.Create(p)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.Remove(p) })
	if err := f.Truncate(256 << 20); err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	for i := 0; i < 256; i++ { // allocate the tmpfs pages up front
		if _, err := f.WriteAt(buf, int64(i)<<20); err != nil {
			b.Fatal(err)
		}
	}
	f.Close()
	return p
}

// bench posts batch requests of size bytes each, serves them synchronously
// and reaps the used ring. Requests/s = 1e9 / (ns/op); MB/s from SetBytes.
func bench(b *testing.B, typ uint32, size int, random bool) {
	p := benchImage(b)
	d, err := blk.Open(blk.Config{Path: p})
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	h, err := virtiotest.NewHarness(d, ^uint64(0), 64<<20, 48<<20, 256)
	if err != nil {
		b.Fatal(err)
	}
	act := h.Activation()
	drv := h.Drivers[0]
	const batch = 16
	// Pre-allocate request buffers once: header, data, status per slot.
	type slot struct{ hdr, data, st virtiotest.Buf }
	slots := make([]slot, batch)
	for i := range slots {
		ha, _ := drv.Alloc(16)
		da, _ := drv.Alloc(uint64(size))
		sa, _ := drv.Alloc(1)
		slots[i] = slot{
			hdr:  virtiotest.Buf{Addr: ha, Len: 16},
			data: virtiotest.Buf{Addr: da, Len: uint32(size), Write: typ == blk.TypeIn},
			st:   virtiotest.Buf{Addr: sa, Len: 1, Write: true},
		}
	}
	sectors := uint64(256<<20-size) / 512
	rng := rand.New(rand.NewPCG(1, 2))
	var seq uint64
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; {
		n := min(batch, b.N-done)
		for i := 0; i < n; i++ {
			var sector uint64
			if random {
				sector = rng.Uint64N(sectors) &^ 7
			} else {
				sector = seq
				seq = (seq + uint64(size)/512) % sectors
			}
			_ = h.Mem.Write(slots[i].hdr.Addr, hdr(typ, sector))
			if _, _, err := drv.Post(slots[i].hdr, slots[i].data, slots[i].st); err != nil {
				b.Fatal(err)
			}
		}
		if !blk.DrainForTest(d, act) {
			b.Fatal("queue broke")
		}
		for i := 0; i < n; i++ {
			if _, ok := drv.Used(); !ok {
				b.Fatal("missing completion")
			}
		}
		done += n
	}
	b.StopTimer()
	if s := d.Stats.Snapshot(); s.Errors != 0 {
		b.Fatalf("%d errors", s.Errors)
	}
}

func BenchmarkRead4KRandom(b *testing.B)  { bench(b, blk.TypeIn, 4096, true) }
func BenchmarkWrite4KRandom(b *testing.B) { bench(b, blk.TypeOut, 4096, true) }
func BenchmarkRead1MSeq(b *testing.B)     { bench(b, blk.TypeIn, 1<<20, false) }
func BenchmarkWrite1MSeq(b *testing.B)    { bench(b, blk.TypeOut, 1<<20, false) }
