package rng_test

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/vmmgo/vmm/memory"
	"github.com/vmmgo/vmm/virtio/rng"
	"github.com/vmmgo/vmm/virtio/virtiotest"
)

func TestEntropy(t *testing.T) {
	d := rng.New(nil)
	defer d.Close()
	h, err := virtiotest.NewHarness(d, ^uint64(0), 1<<20, 256<<10, 16)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Activate(); err != nil {
		t.Fatal(err)
	}
	drv := h.Drivers[0]
	_, addrs, err := drv.Post(virtiotest.Buf{Len: 64, Write: true}, virtiotest.Buf{Len: 100, Write: true})
	if err != nil {
		t.Fatal(err)
	}
	e, err := h.WaitUsed(0, 5*time.Second)
	if err != nil || e.Len != 164 {
		t.Fatalf("used %+v %v", e, err)
	}
	a, b := make([]byte, 64), make([]byte, 100)
	_ = h.Mem.Read(addrs[0], a)
	_ = h.Mem.Read(addrs[1], b)
	if bytes.Equal(a, make([]byte, 64)) || bytes.Equal(b[36:], make([]byte, 64)) {
		t.Fatal("buffers not filled")
	}
	// Readable-only chain: malformed, completed empty.
	if _, _, err := drv.Post(virtiotest.Buf{Data: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	if e, err := h.WaitUsed(0, 5*time.Second); err != nil || e.Len != 0 {
		t.Fatalf("readable chain: %+v %v", e, err)
	}
	// Private page: nothing written, counted, device keeps serving.
	priv := memory.GPA(0xf0000)
	h.Mem.SetPrivate(priv, 4096, true)
	if _, _, err := drv.Post(virtiotest.Buf{Addr: priv, Len: 32, Write: true}); err != nil {
		t.Fatal(err)
	}
	if e, err := h.WaitUsed(0, 5*time.Second); err != nil || e.Len != 0 {
		t.Fatalf("private: %+v %v", e, err)
	}
	got := make([]byte, 32)
	_ = h.Mem.Read(priv, got)
	if !bytes.Equal(got, make([]byte, 32)) {
		t.Fatal("wrote into a private page")
	}
	if s := d.Stats.Snapshot(); s.Private != 1 || s.Malformed != 1 || s.Requests != 3 {
		t.Fatalf("stats %+v", s)
	}
	if _, _, err := drv.Post(virtiotest.Buf{Len: 8, Write: true}); err != nil {
		t.Fatal(err)
	}
	if e, err := h.WaitUsed(0, 5*time.Second); err != nil || e.Len != 8 {
		t.Fatalf("after private: %+v %v", e, err)
	}
}

func TestSourceError(t *testing.T) {
	d := rng.New(nil)
	d.Source = func([]byte) error { return errors.New("no entropy") }
	h, err := virtiotest.NewHarness(d, ^uint64(0), 1<<20, 64<<10, 8)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := h.Drivers[0].Post(virtiotest.Buf{Len: 8, Write: true}); err != nil {
		t.Fatal(err)
	}
	if !d.Drain(h.Activation()) {
		t.Fatal("queue broke")
	}
	if e, ok := h.Drivers[0].Used(); !ok || e.Len != 0 || d.Stats.Errors.Load() != 1 {
		t.Fatalf("used %+v %v errors %d", e, ok, d.Stats.Errors.Load())
	}
}
