package net_test

import (
	"bytes"
	"encoding/binary"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/vmmgo/vmm/memory"
	"github.com/vmmgo/vmm/virtio"
	vnet "github.com/vmmgo/vmm/virtio/net"
	"github.com/vmmgo/vmm/virtio/virtiotest"
)

const wait = 5 * time.Second

// fakeBackend stands in for a TAP: frames to the guest come from in,
// frames from the guest are recorded.
type fakeBackend struct {
	in   chan []byte
	mu   sync.Mutex
	out  [][]byte
	wake chan struct{}
}

func newFake() *fakeBackend {
	return &fakeBackend{in: make(chan []byte, 16), wake: make(chan struct{}, 1)}
}

func (f *fakeBackend) Read(p []byte) (int, error) {
	select {
	case b := <-f.in:
		return copy(p, b), nil
	case <-f.wake:
		return 0, os.ErrDeadlineExceeded
	}
}

func (f *fakeBackend) Write(p []byte) (int, error) {
	f.mu.Lock()
	f.out = append(f.out, append([]byte(nil), p...))
	f.mu.Unlock()
	return len(p), nil
}

func (f *fakeBackend) SetReadDeadline(t time.Time) error {
	if !t.IsZero() && t.Before(time.Now()) {
		select {
		case f.wake <- struct{}{}:
		default:
		}
	}
	return nil
}

func (f *fakeBackend) Close() error { return nil }

func (f *fakeBackend) sent() [][]byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([][]byte(nil), f.out...)
}

func hdr(h vnet.Header) []byte {
	b := make([]byte, vnet.HeaderSize)
	h.Marshal(b)
	return b
}

func frame(n int) []byte {
	b := make([]byte, n)
	copy(b, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 1, 0x08, 0x06})
	for i := 14; i < n; i++ {
		b[i] = byte(i)
	}
	return b
}

func setup(t testing.TB) (*vnet.Device, *fakeBackend, *virtiotest.Harness) {
	be := newFake()
	d, err := vnet.New(be, vnet.FCsum|vnet.FGuestCsum|vnet.FHostTSO4, []byte{2, 0, 0, 0, 0, 9}, nil)
	if err != nil {
		t.Fatal(err)
	}
	h, err := virtiotest.NewHarness(d, ^uint64(0), 4<<20, 1<<20, 64)
	if err != nil {
		t.Fatal(err)
	}
	return d, be, h
}

func TestTxRx(t *testing.T) {
	d, be, h := setup(t)
	defer d.Close()
	if err := h.Activate(); err != nil {
		t.Fatal(err)
	}
	cfg := make([]byte, 10)
	d.ReadConfig(0, cfg)
	if !bytes.Equal(cfg[:6], []byte{2, 0, 0, 0, 0, 9}) || cfg[6] != 1 {
		t.Fatalf("config %v", cfg)
	}
	// TX: header and frame split across descriptors.
	f := frame(100)
	if _, _, err := h.Drivers[1].Post(virtiotest.Buf{Data: hdr(vnet.Header{})}, virtiotest.Buf{Data: f[:30]}, virtiotest.Buf{Data: f[30:]}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.WaitUsed(1, wait); err != nil {
		t.Fatal(err)
	}
	out := be.sent()
	if len(out) != 1 || !bytes.Equal(out[0][vnet.HeaderSize:], f) {
		t.Fatalf("backend got %d frames", len(out))
	}
	// Bad headers are dropped before the backend.
	for _, h2 := range []vnet.Header{
		{Flags: 0x80},
		{GSOType: vnet.GSOTCPv6, GSOSize: 1400, Flags: vnet.HdrFNeedsCsum}, // TSO6 not offered
		{Flags: vnet.HdrFNeedsCsum, CsumStart: 90, CsumOffset: 16},         // beyond frame
		{GSOType: vnet.GSOTCPv4, Flags: vnet.HdrFNeedsCsum},                // gso_size 0
	} {
		if _, _, err := h.Drivers[1].Post(virtiotest.Buf{Data: append(hdr(h2), f...)}); err != nil {
			t.Fatal(err)
		}
		if _, err := h.WaitUsed(1, wait); err != nil {
			t.Fatal(err)
		}
	}
	if len(be.sent()) != 1 || d.TxDropped.Load() != 4 {
		t.Fatalf("bad headers: sent %d dropped %d", len(be.sent()), d.TxDropped.Load())
	}
	// RX: a frame waits for a buffer, then arrives with num_buffers = 1.
	in := append(hdr(vnet.Header{Flags: vnet.HdrFDataValid}), frame(60)...)
	be.in <- in
	time.Sleep(10 * time.Millisecond)
	_, addrs, err := h.Drivers[0].Post(virtiotest.Buf{Len: 1526, Write: true})
	if err != nil {
		t.Fatal(err)
	}
	e, err := h.WaitUsed(0, wait)
	if err != nil || e.Len != uint32(len(in)) {
		t.Fatalf("rx used %+v %v", e, err)
	}
	got := make([]byte, e.Len)
	_ = h.Mem.Read(addrs[0], got)
	if binary.LittleEndian.Uint16(got[10:]) != 1 || !bytes.Equal(got[vnet.HeaderSize:], in[vnet.HeaderSize:]) || got[0] != vnet.HdrFDataValid {
		t.Fatalf("rx frame %v", got[:16])
	}
	// RX buffer too small: completed empty, frame dropped.
	if _, _, err := h.Drivers[0].Post(virtiotest.Buf{Len: 20, Write: true}); err != nil {
		t.Fatal(err)
	}
	be.in <- in
	if e, err := h.WaitUsed(0, wait); err != nil || e.Len != 0 {
		t.Fatalf("small rx buffer: %+v %v", e, err)
	}
	if d.RxDropped.Load() != 1 {
		t.Fatal("drop not counted")
	}
}

func TestPrivatePages(t *testing.T) {
	d, be, h := setup(t)
	defer d.Close()
	if err := h.Activate(); err != nil {
		t.Fatal(err)
	}
	priv := memory.GPA(0x300000)
	_ = h.Mem.Write(priv, append(hdr(vnet.Header{}), frame(64)...))
	h.Mem.SetPrivate(priv, 4096, true)
	if _, _, err := h.Drivers[1].Post(virtiotest.Buf{Addr: priv, Len: 76}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.WaitUsed(1, wait); err != nil {
		t.Fatal(err)
	}
	if len(be.sent()) != 0 || d.Stats.Private.Load() != 1 {
		t.Fatal("private tx frame reached the host")
	}
	marker := bytes.Repeat([]byte{0x77}, 2048)
	_ = h.Mem.Write(priv+2048, marker)
	if _, _, err := h.Drivers[0].Post(virtiotest.Buf{Addr: priv + 2048, Len: 2048, Write: true}); err != nil {
		t.Fatal(err)
	}
	be.in <- append(hdr(vnet.Header{}), frame(64)...)
	if e, err := h.WaitUsed(0, wait); err != nil || e.Len != 0 {
		t.Fatalf("private rx: %+v %v", e, err)
	}
	got := make([]byte, 2048)
	_ = h.Mem.Read(priv+2048, got)
	if !bytes.Equal(got, marker) || d.Stats.Private.Load() != 2 {
		t.Fatal("wrote a frame into a private page")
	}
	// Reset with the rx goroutine blocked in Read returns promptly.
	done := make(chan struct{})
	go func() { d.Reset(); close(done) }()
	select {
	case <-done:
	case <-time.After(wait):
		t.Fatal("reset hung")
	}
}

func FuzzHeader(f *testing.F) {
	f.Add(hdr(vnet.Header{}), uint16(60))
	f.Add(hdr(vnet.Header{Flags: 1, GSOType: 1, GSOSize: 1448, CsumStart: 34, CsumOffset: 16}), uint16(3000))
	f.Fuzz(func(t *testing.T, b []byte, n uint16) {
		feat := uint64(vnet.FCsum | vnet.FHostTSO4)
		h, err := vnet.ParseHeader(b, int(n), feat)
		if err != nil {
			return
		}
		if h.Flags&vnet.HdrFNeedsCsum != 0 && int(h.CsumStart)+int(h.CsumOffset)+2 > int(n) {
			t.Fatal("accepted out-of-frame checksum")
		}
		if h.GSOType != vnet.GSONone && h.GSOType != vnet.GSOTCPv4 {
			t.Fatalf("accepted gso type %#x", h.GSOType)
		}
		out := make([]byte, vnet.HeaderSize)
		h.Marshal(out)
		if !bytes.Equal(out, b[:vnet.HeaderSize]) {
			t.Fatal("round trip")
		}
	})
}

// BenchmarkTx measures frames/s through the transmit path (queue pop,
// header validation, copy) into a discarding backend.
func BenchmarkTx(b *testing.B) {
	_, _, h := setup(b)
	act := h.Activation()
	drv := h.Drivers[1]
	hb, _ := drv.Alloc(vnet.HeaderSize)
	fb, _ := drv.Alloc(1500)
	_ = h.Mem.Write(hb, hdr(vnet.Header{}))
	_ = h.Mem.Write(fb, frame(1500))
	bufs := []virtiotest.Buf{{Addr: hb, Len: vnet.HeaderSize}, {Addr: fb, Len: 1500}}
	d2, _ := vnet.New(discard{}, 0, nil, nil)
	b.SetBytes(1500)
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; {
		n := min(32, b.N-done)
		for i := 0; i < n; i++ {
			if _, _, err := drv.Post(bufs...); err != nil {
				b.Fatal(err)
			}
		}
		if err := d2.DrainTx(act); err != nil {
			b.Fatal(err)
		}
		for i := 0; i < n; i++ {
			if _, ok := drv.Used(); !ok {
				b.Fatal("missing completion")
			}
		}
		done += n
	}
	b.StopTimer()
	if d2.TxDropped.Load() != 0 {
		b.Fatalf("%d dropped", d2.TxDropped.Load())
	}
}

type discard struct{}

func (discard) Read([]byte) (int, error)        { select {} }
func (discard) Write(p []byte) (int, error)     { return len(p), nil }
func (discard) SetReadDeadline(time.Time) error { return nil }
func (discard) Close() error                    { return nil }

var _ = virtio.FVersion1
