package blk_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmmgo/vmm/memory"
	"github.com/vmmgo/vmm/virtio"
	"github.com/vmmgo/vmm/virtio/blk"
	"github.com/vmmgo/vmm/virtio/virtiotest"
)

const wait = 10 * time.Second

func image(t testing.TB, size int) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.img")
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(i / 512)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func hdr(typ uint32, sector uint64) []byte {
	b := make([]byte, 16)
	binary.LittleEndian.PutUint32(b, typ)
	binary.LittleEndian.PutUint64(b[8:], sector)
	return b
}

type rig struct {
	t   *testing.T
	d   *blk.Device
	h   *virtiotest.Harness
	drv *virtiotest.Driver
}

func newRig(t *testing.T, cfg blk.Config) *rig {
	t.Helper()
	d, err := blk.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	h, err := virtiotest.NewHarness(d, ^uint64(0), 8<<20, 4<<20, 64)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Activate(); err != nil {
		t.Fatal(err)
	}
	return &rig{t: t, d: d, h: h, drv: h.Drivers[0]}
}

// do posts a chain and returns the used length and the status byte.
func (r *rig) do(bufs ...virtiotest.Buf) (uint32, byte, []memory.GPA) {
	r.t.Helper()
	head, addrs, err := r.drv.Post(bufs...)
	if err != nil {
		r.t.Fatal(err)
	}
	e, err := r.h.WaitUsed(0, wait)
	if err != nil {
		r.t.Fatal(err)
	}
	if e.ID != uint32(head) {
		r.t.Fatalf("used id %d, want %d", e.ID, head)
	}
	var st [1]byte
	last := bufs[len(bufs)-1]
	if last.Write {
		n := last.Len
		if n == 0 {
			n = uint32(len(last.Data))
		}
		_ = r.h.Mem.Read(addrs[len(addrs)-1]+memory.GPA(n-1), st[:])
	}
	return e.Len, st[0], addrs
}

func status() virtiotest.Buf { return virtiotest.Buf{Data: []byte{0xee}, Write: true} }

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	ro := filepath.Join(dir, "ro.img")
	if err := os.WriteFile(ro, make([]byte, 4096), 0o444); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		cfg  blk.Config
		want string
	}{
		{blk.Config{Path: filepath.Join(dir, "missing.img")}, "no such file"},
		{blk.Config{Path: dir}, "not a regular file"},
		{blk.Config{Path: ro}, "read-only"},
		{blk.Config{Path: ro, ReadOnly: true, Serial: strings.Repeat("x", 21)}, "serial"},
		{blk.Config{}, "no image path"},
	} {
		d, err := blk.Open(tc.cfg)
		if err == nil {
			d.Close()
			t.Errorf("%+v: opened", tc.cfg)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %q does not mention %q", tc.cfg, err, tc.want)
		}
	}
	if _, err := blk.Open(blk.Config{Path: filepath.Join(dir, "missing.img")}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file error %v is not ErrNotExist", err)
	}
	d, err := blk.Open(blk.Config{Path: ro, ReadOnly: true})
	if err != nil {
		t.Fatalf("read-only open: %v", err)
	}
	if d.Features()&blk.FRO == 0 || d.Features()&(blk.FDiscard|blk.FWriteZeroes) != 0 {
		t.Errorf("read-only features %#x", d.Features())
	}
	d.Close()
}

func TestConfigSpace(t *testing.T) {
	p := image(t, 1<<20+100) // a tail that is not a whole sector
	d, err := blk.Open(blk.Config{Path: p})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	c := make([]byte, 60)
	d.ReadConfig(0, c)
	le := binary.LittleEndian
	if cap := le.Uint64(c); cap != 2048 {
		t.Errorf("capacity %d sectors", cap)
	}
	if le.Uint32(c[8:]) == 0 || le.Uint32(c[12:]) == 0 || le.Uint32(c[20:]) != 512 {
		t.Errorf("size_max/seg_max/blk_size %v", c[8:24])
	}
	f := d.Features()
	for _, bit := range []uint64{virtio.FVersion1, blk.FFlush, blk.FSegMax, blk.FSizeMax, blk.FBlkSize} {
		if f&bit == 0 {
			t.Errorf("feature %#x missing", bit)
		}
	}
	// Reads past the structure are zero; writes are ignored.
	d.WriteConfig(0, []byte{1, 2, 3})
	d.ReadConfig(0, c[:8])
	if le.Uint64(c) != 2048 {
		t.Error("config write changed capacity")
	}
	d.ReadConfig(200, c[:4])
	if !bytes.Equal(c[:4], []byte{0, 0, 0, 0}) {
		t.Error("out-of-range config not zero")
	}
}

func TestReadWriteFlushGetID(t *testing.T) {
	p := image(t, 1<<20)
	{
		r := newRig(t, blk.Config{Path: p, Serial: "disk-serial-1"})
		data := bytes.Repeat([]byte("0123456789abcdef"), 512) // 8 KiB in two descriptors
		n, st, _ := r.do(virtiotest.Buf{Data: hdr(blk.TypeOut, 16)}, virtiotest.Buf{Data: data[:4096]},
			virtiotest.Buf{Data: data[4096:]}, status())
		if st != blk.StatusOK || n != 1 {
			t.Fatalf("write: status %d len %d", st, n)
		}
		file, _ := os.ReadFile(p)
		if !bytes.Equal(file[16*512:16*512+8192], data) {
			t.Fatal("write did not reach the file")
		}
		if file[16*512-1] != byte(15) || file[16*512+8192] != byte(32) {
			t.Fatal("write touched bytes outside the request")
		}
		n, st, addrs := r.do(virtiotest.Buf{Data: hdr(blk.TypeIn, 16)}, virtiotest.Buf{Len: 1024, Write: true},
			virtiotest.Buf{Len: 7168, Write: true}, status())
		if st != blk.StatusOK || n != 8193 {
			t.Fatalf("read: status %d len %d", st, n)
		}
		got := make([]byte, 8192)
		_ = r.h.Mem.Read(addrs[1], got[:1024])
		_ = r.h.Mem.Read(addrs[2], got[1024:])
		if !bytes.Equal(got, data) {
			t.Fatal("read returned wrong data")
		}
		if _, st, _ := r.do(virtiotest.Buf{Data: hdr(blk.TypeFlush, 0)}, status()); st != blk.StatusOK {
			t.Fatalf("flush status %d", st)
		}
		n, st, addrs = r.do(virtiotest.Buf{Data: hdr(blk.TypeGetID, 0)}, virtiotest.Buf{Len: 20, Write: true}, status())
		id := make([]byte, 20)
		_ = r.h.Mem.Read(addrs[1], id)
		if st != blk.StatusOK || n != 21 || string(bytes.TrimRight(id, "\x00")) != "disk-serial-1" {
			t.Fatalf("get-id: status %d len %d id %q", st, n, id)
		}
		if _, st, _ := r.do(virtiotest.Buf{Data: hdr(99, 0)}, status()); st != blk.StatusUnsupp {
			t.Fatalf("unknown type status %d", st)
		}
		if s := r.d.Stats.Snapshot(); s.Requests != 5 || s.Errors != 1 {
			t.Fatalf("stats %+v", s)
		}
		if used, _, _ := r.h.Irq.Counts(0); used == 0 {
			t.Fatal("no used interrupts")
		}
	}
}

func TestIndirectRequest(t *testing.T) {
	p := image(t, 1<<20)
	r := newRig(t, blk.Config{Path: p})
	head, addrs, err := r.drv.PostIndirect(virtiotest.Buf{Data: hdr(blk.TypeIn, 2)}, virtiotest.Buf{Len: 512, Write: true}, status())
	if err != nil {
		t.Fatal(err)
	}
	e, err := r.h.WaitUsed(0, wait)
	if err != nil || e.ID != uint32(head) || e.Len != 513 {
		t.Fatalf("used %+v %v", e, err)
	}
	b := make([]byte, 513)
	_ = r.h.Mem.Read(addrs[1], b[:512])
	_ = r.h.Mem.Read(addrs[2], b[512:])
	if b[0] != 2 || b[511] != 2 || b[512] != blk.StatusOK {
		t.Fatalf("indirect read: %v %v %v", b[0], b[511], b[512])
	}
}

func TestBadRequests(t *testing.T) {
	p := image(t, 64<<10) // 128 sectors
	r := newRig(t, blk.Config{Path: p})
	before, _ := os.ReadFile(p)
	for _, tc := range []struct {
		name string
		bufs []virtiotest.Buf
		st   byte
	}{
		{"read past end", []virtiotest.Buf{{Data: hdr(blk.TypeIn, 127)}, {Len: 1024, Write: true}, status()}, blk.StatusIOErr},
		{"write past end", []virtiotest.Buf{{Data: hdr(blk.TypeOut, 128)}, {Data: make([]byte, 512)}, status()}, blk.StatusIOErr},
		{"huge sector", []virtiotest.Buf{{Data: hdr(blk.TypeOut, 1<<60)}, {Data: make([]byte, 512)}, status()}, blk.StatusIOErr},
		{"partial sector", []virtiotest.Buf{{Data: hdr(blk.TypeOut, 0)}, {Data: make([]byte, 100)}, status()}, blk.StatusIOErr},
		{"header too short", []virtiotest.Buf{{Data: make([]byte, 8)}, status()}, blk.StatusIOErr},
		{"discard bad length", []virtiotest.Buf{{Data: hdr(blk.TypeDiscard, 0)}, {Data: make([]byte, 10)}, status()}, blk.StatusIOErr},
	} {
		n, st, _ := r.do(tc.bufs...)
		if st != tc.st || n != 1 {
			t.Errorf("%s: status %d len %d, want %d", tc.name, st, n, tc.st)
		}
	}
	// No status byte at all: completed with length 0, counted.
	m := r.d.Stats.Malformed.Load()
	if n, _, _ := r.do(virtiotest.Buf{Data: hdr(blk.TypeIn, 0)}); n != 0 {
		t.Errorf("request without status: len %d", n)
	}
	if r.d.Stats.Malformed.Load() != m+1 {
		t.Error("missing status not counted")
	}
	// Malformed chain (loop): returned empty, the device keeps serving.
	r.drv.WriteDesc(0, virtiotest.RawDesc{Addr: 0x100000, Len: 16, Flags: virtio.DescFNext, Next: 0})
	r.drv.Publish(0)
	if e, err := r.h.WaitUsed(0, wait); err != nil || e.Len != 0 {
		t.Fatalf("looping chain: %+v %v", e, err)
	}
	if _, st, _ := r.do(virtiotest.Buf{Data: hdr(blk.TypeFlush, 0)}, status()); st != blk.StatusOK {
		t.Fatal("device stopped serving after malformed chain")
	}
	after, _ := os.ReadFile(p)
	if !bytes.Equal(before, after) {
		t.Fatal("bad requests changed the image")
	}
}

func TestReadOnly(t *testing.T) {
	p := image(t, 64<<10)
	r := newRig(t, blk.Config{Path: p, ReadOnly: true})
	if r.h.Features&blk.FRO == 0 {
		t.Fatal("RO not negotiated")
	}
	if _, st, _ := r.do(virtiotest.Buf{Data: hdr(blk.TypeOut, 0)}, virtiotest.Buf{Data: make([]byte, 512)}, status()); st != blk.StatusIOErr {
		t.Fatalf("write to RO disk: status %d", st)
	}
	if _, st, _ := r.do(virtiotest.Buf{Data: hdr(blk.TypeDiscard, 0)}, virtiotest.Buf{Data: make([]byte, 16)}, status()); st != blk.StatusUnsupp {
		t.Fatalf("discard on RO disk: status %d", st)
	}
	b, _ := os.ReadFile(p)
	if b[0] != 0 || b[511] != 0 {
		t.Fatal("RO image modified")
	}
}

func TestPrivatePage(t *testing.T) {
	p := image(t, 64<<10)
	r := newRig(t, blk.Config{Path: p})
	before, _ := os.ReadFile(p)
	priv := memory.GPA(7 << 20)
	marker := bytes.Repeat([]byte{0x5a}, 4096)
	_ = r.h.Mem.Write(priv, marker)
	r.h.Mem.SetPrivate(priv, 4096, true)
	// Write whose data is private: IOERR, file untouched.
	if _, st, _ := r.do(virtiotest.Buf{Data: hdr(blk.TypeOut, 0)}, virtiotest.Buf{Addr: priv, Len: 4096}, status()); st != blk.StatusIOErr {
		t.Fatalf("write from private page: status %d", st)
	}
	// Read into a private page: IOERR, page untouched.
	if _, st, _ := r.do(virtiotest.Buf{Data: hdr(blk.TypeIn, 0)}, virtiotest.Buf{Addr: priv, Len: 4096, Write: true}, status()); st != blk.StatusIOErr {
		t.Fatalf("read into private page: status %d", st)
	}
	// Read whose first buffer is shared and second private: nothing written to the first.
	sh, _ := r.drv.Alloc(512)
	_ = r.h.Mem.Write(sh, marker[:512])
	if _, st, _ := r.do(virtiotest.Buf{Data: hdr(blk.TypeIn, 0)}, virtiotest.Buf{Addr: sh, Len: 512, Write: true},
		virtiotest.Buf{Addr: priv, Len: 512, Write: true}, status()); st != blk.StatusIOErr {
		t.Fatalf("partly private read: status %d", st)
	}
	got := make([]byte, 4096)
	_ = r.h.Mem.Read(priv, got)
	shared := make([]byte, 512)
	_ = r.h.Mem.Read(sh, shared)
	if !bytes.Equal(got, marker) || !bytes.Equal(shared, marker[:512]) {
		t.Fatal("device wrote into a request touching a private page")
	}
	// Status byte itself private: completed with length 0.
	if n, _, _ := r.do(virtiotest.Buf{Data: hdr(blk.TypeFlush, 0)}, virtiotest.Buf{Addr: priv + 100, Len: 1, Write: true}); n != 0 {
		t.Fatalf("private status: len %d", n)
	}
	if s := r.d.Stats.Snapshot(); s.Private != 4 {
		t.Fatalf("private counter %d, want 4", s.Private)
	}
	after, _ := os.ReadFile(p)
	if !bytes.Equal(before, after) {
		t.Fatal("image changed")
	}
	// Converted back to shared: the same request works.
	r.h.Mem.SetPrivate(priv, 4096, false)
	if _, st, _ := r.do(virtiotest.Buf{Data: hdr(blk.TypeIn, 1)}, virtiotest.Buf{Addr: priv, Len: 512, Write: true}, status()); st != blk.StatusOK {
		t.Fatalf("after unshare: status %d", st)
	}
}

func TestDiscardWriteZeroes(t *testing.T) {
	p := image(t, 1<<20)
	r := newRig(t, blk.Config{Path: p})
	if r.h.Features&blk.FDiscard == 0 || r.h.Features&blk.FWriteZeroes == 0 {
		t.Skipf("filesystem of %s lacks fallocate punch-hole (features %#x)", p, r.h.Features)
	}
	seg := func(sector uint64, n, flags uint32) []byte {
		b := make([]byte, 16)
		binary.LittleEndian.PutUint64(b, sector)
		binary.LittleEndian.PutUint32(b[8:], n)
		binary.LittleEndian.PutUint32(b[12:], flags)
		return b
	}
	if _, st, _ := r.do(virtiotest.Buf{Data: hdr(blk.TypeDiscard, 0)}, virtiotest.Buf{Data: append(seg(8, 8, 0), seg(64, 16, 0)...)}, status()); st != blk.StatusOK {
		t.Fatalf("discard status %d", st)
	}
	if _, st, _ := r.do(virtiotest.Buf{Data: hdr(blk.TypeWriteZeroes, 0)}, virtiotest.Buf{Data: seg(200, 8, 1)}, status()); st != blk.StatusOK {
		t.Fatalf("write-zeroes status %d", st)
	}
	if _, st, _ := r.do(virtiotest.Buf{Data: hdr(blk.TypeDiscard, 0)}, virtiotest.Buf{Data: seg(0, 8, 1)}, status()); st != blk.StatusUnsupp {
		t.Fatalf("discard with unmap flag: status %d", st)
	}
	if _, st, _ := r.do(virtiotest.Buf{Data: hdr(blk.TypeDiscard, 0)}, virtiotest.Buf{Data: append(seg(0, 8, 0), seg(2047, 8, 0)...)}, status()); st != blk.StatusIOErr {
		t.Fatalf("discard past end: status %d", st)
	}
	b, _ := os.ReadFile(p)
	for _, rg := range [][2]int{{8, 16}, {64, 80}, {200, 208}} {
		for i := rg[0] * 512; i < rg[1]*512; i++ {
			if b[i] != 0 {
				t.Fatalf("byte %d not zero after discard", i)
			}
		}
	}
	if b[7*512] != 7 || b[16*512] != 16 || b[208*512] != 208 {
		t.Fatal("discard touched neighbours")
	}
	if b[0] != 0 || b[1*512] != 1 {
		t.Fatal("failed discard (past end) was partially applied")
	}
}

// TestHostErrors makes the host file system run out of space: the write
// completes with IOERR and the device keeps serving.
func TestHostErrors(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", dir).Run() }) // after the device closes the file
	p := filepath.Join(dir, "sparse.img")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(4 << 20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	r := newRig(t, blk.Config{Path: p})
	var sawErr bool
	for i := 0; i < 40 && !sawErr; i++ {
		_, st, _ := r.do(virtiotest.Buf{Data: hdr(blk.TypeOut, uint64(i*16))}, virtiotest.Buf{Data: bytes.Repeat([]byte{1}, 8192)}, status())
		sawErr = st == blk.StatusIOErr
	}
	if !sawErr {
		t.Fatal("ENOSPC never surfaced as IOERR")
	}
	if _, st, _ := r.do(virtiotest.Buf{Data: hdr(blk.TypeIn, 0)}, virtiotest.Buf{Len: 512, Write: true}, status()); st != blk.StatusOK {
		t.Fatalf("device stopped serving after ENOSPC: %d", st)
	}
}

func TestResetAndReactivate(t *testing.T) {
	p := image(t, 64<<10)
	r := newRig(t, blk.Config{Path: p})
	if _, st, _ := r.do(virtiotest.Buf{Data: hdr(blk.TypeFlush, 0)}, status()); st != 0 {
		t.Fatal(st)
	}
	r.d.Reset()
	r.d.Notify(0) // after reset: no worker, must not block or panic
	if err := r.h.Reactivate(); err != nil {
		t.Fatal(err)
	}
	r.drv = r.h.Drivers[0]
	if _, st, _ := r.do(virtiotest.Buf{Data: hdr(blk.TypeIn, 3)}, virtiotest.Buf{Len: 512, Write: true}, status()); st != 0 {
		t.Fatalf("after reactivation: %d", st)
	}
	if err := r.h.Activate(); err == nil {
		t.Fatal("double activation accepted")
	}
}

// TestBrokenQueue: a runaway avail.idx breaks the queue; the device asks
// for a reset instead of spinning.
func TestBrokenQueue(t *testing.T) {
	r := newRig(t, blk.Config{Path: image(t, 64<<10)})
	r.drv.SetAvailIdx(1000)
	r.d.Notify(0)
	deadline := time.Now().Add(wait)
	for {
		if _, _, nr := r.h.Irq.Counts(0); nr == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no NeedsReset")
		}
		time.Sleep(time.Millisecond)
	}
}
