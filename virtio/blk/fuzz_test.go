package blk_test

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"github.com/vmmgo/vmm/memory"
	"github.com/vmmgo/vmm/virtio/blk"
	"github.com/vmmgo/vmm/virtio/virtiotest"
)

// FuzzRequest feeds arbitrary request headers and payload shapes to the
// device. It must not panic, must always complete the chain, must write a
// valid status, and a failed request must not change the image; a
// successful write changes only its own sectors.
func FuzzRequest(f *testing.F) {
	f.Add(hdr(blk.TypeOut, 3), uint16(512), uint16(1), uint8(0))
	f.Add(hdr(blk.TypeIn, 120), uint16(4096), uint16(1), uint8(1))
	f.Add(append(hdr(blk.TypeDiscard, 0), 1, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0), uint16(0), uint16(1), uint8(0))
	f.Add(hdr(blk.TypeGetID, 0), uint16(7), uint16(1), uint8(0))
	f.Fuzz(func(t *testing.T, head []byte, dataLen uint16, statusLen uint16, shape uint8) {
		dir := t.TempDir()
		p := filepath.Join(dir, "d.img")
		img := bytes.Repeat([]byte{0xa5}, 64<<10)
		if err := os.WriteFile(p, img, 0o644); err != nil {
			t.Fatal(err)
		}
		d, err := blk.Open(blk.Config{Path: p, Serial: "fuzz"})
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		h, err := virtiotest.NewHarness(d, ^uint64(0), 1<<20, 512<<10, 16)
		if err != nil {
			t.Fatal(err)
		}
		bufs := []virtiotest.Buf{{Data: head}}
		if shape&1 == 0 && dataLen > 0 {
			bufs = append(bufs, virtiotest.Buf{Data: bytes.Repeat([]byte{0x3c}, int(dataLen))})
		} else if dataLen > 0 {
			bufs = append(bufs, virtiotest.Buf{Len: uint32(dataLen), Write: true})
		}
		if statusLen%4 != 0 {
			bufs = append(bufs, virtiotest.Buf{Len: uint32(statusLen % 4), Write: true})
		}
		post := h.Drivers[0].Post
		if shape&2 != 0 {
			post = h.Drivers[0].PostIndirect
		}
		if len(head) == 0 {
			bufs = bufs[1:]
			if len(bufs) == 0 {
				return
			}
		}
		_, addrs, err := post(bufs...)
		if err != nil {
			return
		}
		if !blk.DrainForTest(d, h.Activation()) {
			t.Fatal("queue broke")
		}
		e, ok := h.Drivers[0].Used()
		if !ok {
			t.Fatal("request not completed")
		}
		after, _ := os.ReadFile(p)
		last := bufs[len(bufs)-1]
		if !last.Write || e.Len == 0 {
			if !bytes.Equal(after, img) {
				t.Fatal("image changed by an uncompleted request")
			}
			return
		}
		var st [1]byte
		n := last.Len
		_ = h.Mem.Read(addrs[len(addrs)-1]+memory.GPA(n-1), st[:])
		if st[0] > blk.StatusUnsupp {
			t.Fatalf("status %d", st[0])
		}
		var typ uint32
		var sector uint64
		if len(head) >= 16 {
			typ = binary.LittleEndian.Uint32(head)
			sector = binary.LittleEndian.Uint64(head[8:])
		}
		if st[0] != blk.StatusOK || typ != blk.TypeOut {
			if typ != blk.TypeDiscard && typ != blk.TypeWriteZeroes && !bytes.Equal(after, img) {
				t.Fatalf("image changed by type %d status %d", typ, st[0])
			}
			return
		}
		lo, hi := int(sector*512), int(sector*512)+int(dataLen)+len(head)-16
		if !bytes.Equal(after[:lo], img[:lo]) || !bytes.Equal(after[hi:], img[hi:]) {
			t.Fatal("write changed bytes outside its sectors")
		}
	})
}
