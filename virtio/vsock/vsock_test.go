package vsock_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmmgo/vmm/memory"
	"github.com/vmmgo/vmm/virtio/virtiotest"
	"github.com/vmmgo/vmm/virtio/vsock"
)

const (
	cid  = 42
	wait = 5 * time.Second
)

// guest plays the guest driver's side of the transport.
type guest struct {
	t    *testing.T
	d    *vsock.Device
	h    *virtiotest.Harness
	path string
	rx   map[uint32]memory.GPA
}

func newGuest(t *testing.T) *guest {
	t.Helper()
	path := filepath.Join(t.TempDir(), "v.sock")
	d, err := vsock.Open(vsock.Config{GuestCID: cid, Path: path})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	h, err := virtiotest.NewHarness(d, ^uint64(0), 8<<20, 2<<20, 64)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Activate(); err != nil {
		t.Fatal(err)
	}
	g := &guest{t: t, d: d, h: h, path: path, rx: map[uint32]memory.GPA{}}
	for range 16 {
		g.postRx()
	}
	return g
}

func (g *guest) postRx() {
	head, addrs, err := g.h.Drivers[0].Post(virtiotest.Buf{Len: vsock.HeaderSize + 4096, Write: true})
	if err != nil {
		g.t.Fatal(err)
	}
	g.rx[uint32(head)] = addrs[0]
}

func (g *guest) send(h vsock.Header, data []byte) {
	g.t.Helper()
	h.SrcCID, h.DstCID, h.Type, h.Len = cid, vsock.HostCID, vsock.TypeStream, uint32(len(data))
	if h.BufAlloc == 0 {
		h.BufAlloc = 64 << 10
	}
	b := make([]byte, vsock.HeaderSize)
	h.Marshal(b)
	g.sendRaw(append(b, data...))
}

func (g *guest) sendRaw(b []byte) {
	g.t.Helper()
	if _, _, err := g.h.Drivers[1].Post(virtiotest.Buf{Data: b}); err != nil {
		g.t.Fatal(err)
	}
	if _, err := g.h.WaitUsed(1, wait); err != nil {
		g.t.Fatal(err)
	}
}

// recv returns the next packet the device put in the rx queue.
func (g *guest) recv() (vsock.Header, []byte) {
	g.t.Helper()
	e, err := g.h.WaitUsed(0, wait)
	if err != nil {
		g.t.Fatal(err)
	}
	b := make([]byte, e.Len)
	_ = g.h.Mem.Read(g.rx[e.ID], b)
	delete(g.rx, e.ID)
	g.postRx()
	if len(b) < vsock.HeaderSize {
		g.t.Fatalf("short rx packet %d", len(b))
	}
	// Parse as if it came from the guest by swapping the CIDs' roles.
	var h vsock.Header
	le := func(o, n int) uint64 {
		var v uint64
		for i := n - 1; i >= 0; i-- {
			v = v<<8 | uint64(b[o+i])
		}
		return v
	}
	h.SrcCID, h.DstCID = le(0, 8), le(8, 8)
	h.SrcPort, h.DstPort, h.Len = uint32(le(16, 4)), uint32(le(20, 4)), uint32(le(24, 4))
	h.Type, h.Op, h.Flags = uint16(le(28, 2)), uint16(le(30, 2)), uint32(le(32, 4))
	h.BufAlloc, h.FwdCnt = uint32(le(36, 4)), uint32(le(40, 4))
	if h.SrcCID != vsock.HostCID || h.DstCID != cid || int(h.Len) != len(b)-vsock.HeaderSize {
		g.t.Fatalf("bad rx header %+v (packet %d bytes)", h, len(b))
	}
	return h, b[vsock.HeaderSize:]
}

func (g *guest) expect(op uint16) (vsock.Header, []byte) {
	g.t.Helper()
	h, d := g.recv()
	if h.Op != op {
		g.t.Fatalf("got op %d (%+v), want %d", h.Op, h, op)
	}
	return h, d
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []vsock.Config{
		{GuestCID: 42, Path: filepath.Join(dir, "missing", "v.sock")},
		{GuestCID: 2, Path: filepath.Join(dir, "v.sock")},
		{GuestCID: 42},
	} {
		if d, err := vsock.Open(c); err == nil {
			d.Close()
			t.Errorf("%+v accepted", c)
		}
	}
	p := filepath.Join(dir, "busy.sock")
	d, err := vsock.Open(vsock.Config{GuestCID: 3, Path: p})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if _, err := vsock.Open(vsock.Config{GuestCID: 3, Path: p}); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second device on a live socket: %v", err)
	}
}

func TestGuestToHost(t *testing.T) {
	g := newGuest(t)
	ln, err := net.Listen("unix", g.path+"_5000")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	g.send(vsock.Header{SrcPort: 1234, DstPort: 5000, Op: vsock.OpRequest}, nil)
	h, _ := g.expect(vsock.OpResponse)
	if h.SrcPort != 5000 || h.DstPort != 1234 || h.BufAlloc == 0 {
		t.Fatalf("response %+v", h)
	}
	hc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer hc.Close()
	g.send(vsock.Header{SrcPort: 1234, DstPort: 5000, Op: vsock.OpRW}, []byte("hello"))
	buf := make([]byte, 5)
	_ = hc.SetReadDeadline(time.Now().Add(wait))
	if _, err := io.ReadFull(hc, buf); err != nil || string(buf) != "hello" {
		t.Fatalf("host read %q %v", buf, err)
	}
	if _, err := hc.Write([]byte("world")); err != nil {
		t.Fatal(err)
	}
	g.h.Dev.Notify(0)
	var got []byte
	for len(got) < 5 {
		h, d := g.recv()
		if h.Op == vsock.OpRW {
			got = append(got, d...)
		} else if h.Op != vsock.OpCreditUpdate {
			t.Fatalf("unexpected op %d", h.Op)
		}
	}
	if string(got) != "world" {
		t.Fatalf("guest got %q", got)
	}
	// Guest closes: device flushes and answers RST; host sees EOF.
	g.send(vsock.Header{SrcPort: 1234, DstPort: 5000, Op: vsock.OpShutdown, Flags: vsock.ShutdownRcv | vsock.ShutdownSend}, nil)
	g.expect(vsock.OpRST)
	if _, err := hc.Read(buf); err != io.EOF {
		t.Fatalf("host read after guest close: %v", err)
	}
	// Connection to a port nobody listens on: RST.
	g.send(vsock.Header{SrcPort: 1235, DstPort: 5001, Op: vsock.OpRequest}, nil)
	if h, _ := g.expect(vsock.OpRST); h.SrcPort != 5001 || h.DstPort != 1235 {
		t.Fatalf("rst %+v", h)
	}
	// Data for an unknown stream: RST.
	g.send(vsock.Header{SrcPort: 7, DstPort: 8, Op: vsock.OpRW}, []byte("x"))
	g.expect(vsock.OpRST)
}

func TestHostToGuest(t *testing.T) {
	g := newGuest(t)
	hc, err := net.Dial("unix", g.path)
	if err != nil {
		t.Fatal(err)
	}
	defer hc.Close()
	if _, err := hc.Write([]byte("CONNECT 80\n")); err != nil {
		t.Fatal(err)
	}
	g.h.Dev.Notify(0)
	h, _ := g.expect(vsock.OpRequest)
	if h.DstPort != 80 || h.SrcPort < 1<<30 {
		t.Fatalf("request %+v", h)
	}
	hostPort := h.SrcPort
	g.send(vsock.Header{SrcPort: 80, DstPort: hostPort, Op: vsock.OpResponse}, nil)
	r := bufio.NewReader(hc)
	_ = hc.SetReadDeadline(time.Now().Add(wait))
	line, err := r.ReadString('\n')
	if err != nil || line != fmt.Sprintf("OK %d\n", hostPort) {
		t.Fatalf("handshake reply %q %v", line, err)
	}
	g.send(vsock.Header{SrcPort: 80, DstPort: hostPort, Op: vsock.OpRW}, []byte("GET /"))
	buf := make([]byte, 5)
	if _, err := io.ReadFull(r, buf); err != nil || string(buf) != "GET /" {
		t.Fatalf("host read %q %v", buf, err)
	}
	// Host closes: guest gets SHUTDOWN(both), answers RST.
	hc.Close()
	g.h.Dev.Notify(0)
	if h, _ := g.expect(vsock.OpShutdown); h.Flags != vsock.ShutdownRcv|vsock.ShutdownSend {
		t.Fatalf("shutdown flags %d", h.Flags)
	}
	g.send(vsock.Header{SrcPort: 80, DstPort: hostPort, Op: vsock.OpRST}, nil)
	// A bad handshake is refused without bothering the guest.
	bad, err := net.Dial("unix", g.path)
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	_, _ = bad.Write([]byte("HELLO\n"))
	_ = bad.SetReadDeadline(time.Now().Add(wait))
	if _, err := bad.Read(buf); err != io.EOF {
		t.Fatalf("bad handshake: %v", err)
	}
}

func TestCreditFlowControl(t *testing.T) {
	g := newGuest(t)
	ln, err := net.Listen("unix", g.path+"_6000")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	g.send(vsock.Header{SrcPort: 1, DstPort: 6000, Op: vsock.OpRequest, BufAlloc: 100}, nil)
	g.expect(vsock.OpResponse)
	hc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer hc.Close()
	payload := bytes.Repeat([]byte("0123456789"), 30)
	if _, err := hc.Write(payload); err != nil {
		t.Fatal(err)
	}
	g.h.Dev.Notify(0)
	var got []byte
	for len(got) < 100 {
		h, d := g.expect(vsock.OpRW)
		_ = h
		got = append(got, d...)
	}
	if len(got) != 100 {
		t.Fatalf("sent %d bytes with 100 bytes of credit", len(got))
	}
	g.expect(vsock.OpCreditRequest)
	// Guest consumed everything: new credit.
	g.send(vsock.Header{SrcPort: 1, DstPort: 6000, Op: vsock.OpCreditUpdate, BufAlloc: 100, FwdCnt: 100}, nil)
	for len(got) < 200 {
		_, d := g.expect(vsock.OpRW)
		got = append(got, d...)
	}
	if len(got) != 200 || !bytes.Equal(got, payload[:200]) {
		t.Fatalf("after credit update: %d bytes", len(got))
	}
	// Credit request from the guest gets an update with our fwd_cnt.
	g.send(vsock.Header{SrcPort: 1, DstPort: 6000, Op: vsock.OpRW, BufAlloc: 100, FwdCnt: 200}, []byte("abc"))
	buf := make([]byte, 3)
	_ = hc.SetReadDeadline(time.Now().Add(wait))
	if _, err := io.ReadFull(hc, buf); err != nil {
		t.Fatal(err)
	}
	// Remaining 100 bytes now fit.
	for len(got) < 300 {
		h, d := g.recv()
		if h.Op == vsock.OpRW {
			got = append(got, d...)
		}
	}
	time.Sleep(20 * time.Millisecond)
	g.send(vsock.Header{SrcPort: 1, DstPort: 6000, Op: vsock.OpCreditRequest, BufAlloc: 100, FwdCnt: 300}, nil)
	h, _ := g.expect(vsock.OpCreditUpdate)
	if h.FwdCnt != 3 || h.BufAlloc == 0 {
		t.Fatalf("credit update %+v", h)
	}
}

func TestMalformedAndPrivate(t *testing.T) {
	g := newGuest(t)
	m := g.d.Stats.Malformed.Load()
	b := make([]byte, vsock.HeaderSize)
	vsock.Header{SrcCID: 7, DstCID: 2, Op: vsock.OpRequest, Type: 1}.Marshal(b) // wrong source CID
	g.sendRaw(b)
	g.sendRaw(b[:20]) // short header
	vsock.Header{SrcCID: cid, DstCID: 2, Op: vsock.OpRW, Type: 1, Len: 100}.Marshal(b)
	g.sendRaw(append(b, 1, 2, 3)) // len beyond payload: RST
	g.expect(vsock.OpRST)
	if g.d.Stats.Malformed.Load() != m+3 {
		t.Fatalf("malformed %d", g.d.Stats.Malformed.Load()-m)
	}
	priv := memory.GPA(0x700000)
	g.h.Mem.SetPrivate(priv, 4096, true)
	if _, _, err := g.h.Drivers[1].Post(virtiotest.Buf{Addr: priv, Len: 44}); err != nil {
		t.Fatal(err)
	}
	if _, err := g.h.WaitUsed(1, wait); err != nil {
		t.Fatal(err)
	}
	if g.d.Stats.Private.Load() != 1 {
		t.Fatal("private packet not counted")
	}
	// Transport reset event.
	ev, addrs, err := g.h.Drivers[2].Post(virtiotest.Buf{Data: []byte{0xff, 0xff, 0xff, 0xff}, Write: true})
	if err != nil {
		t.Fatal(err)
	}
	g.d.SendTransportReset()
	e, err := g.h.WaitUsed(2, wait)
	if err != nil || e.ID != uint32(ev) || e.Len != 4 {
		t.Fatalf("event %+v %v", e, err)
	}
	id := make([]byte, 4)
	_ = g.h.Mem.Read(addrs[0], id)
	if !bytes.Equal(id, []byte{0, 0, 0, 0}) {
		t.Fatalf("event id %v", id)
	}
	// Reset closes host streams.
	ln, _ := net.Listen("unix", g.path+"_9")
	defer ln.Close()
	g.send(vsock.Header{SrcPort: 3, DstPort: 9, Op: vsock.OpRequest}, nil)
	g.expect(vsock.OpResponse)
	hc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	g.d.Reset()
	_ = hc.SetReadDeadline(time.Now().Add(wait))
	if _, err := hc.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("host stream after reset: %v", err)
	}
}

func FuzzHeader(f *testing.F) {
	b := make([]byte, vsock.HeaderSize)
	vsock.Header{SrcCID: cid, DstCID: 2, Op: vsock.OpRW, Type: 1, Len: 3}.Marshal(b)
	f.Add(b, uint32(3))
	f.Fuzz(func(t *testing.T, b []byte, payload uint32) {
		h, err := vsock.ParseHeader(b, payload, cid)
		if err != nil {
			return
		}
		if h.Len > payload || h.Len > vsock.MaxPayload || h.SrcCID != cid || h.DstCID != 2 || h.Op == 0 || h.Op > 7 {
			t.Fatalf("accepted %+v with payload %d", h, payload)
		}
		out := make([]byte, vsock.HeaderSize)
		h.Marshal(out)
		if !bytes.Equal(out, b[:vsock.HeaderSize]) {
			t.Fatal("round trip")
		}
	})
}

// TestHostConnectRefused: when the guest answers the host's REQUEST with a
// reset (nobody listens on that port), the host's connection is closed
// without an "OK" line. (It used to stay open for ever: the stream had no
// writer goroutine yet to close it.)
func TestHostConnectRefused(t *testing.T) {
	g := newGuest(t)
	hc, err := net.Dial("unix", g.path)
	if err != nil {
		t.Fatal(err)
	}
	defer hc.Close()
	if _, err := hc.Write([]byte("CONNECT 1234\n")); err != nil {
		t.Fatal(err)
	}
	g.h.Dev.Notify(0)
	h, _ := g.expect(vsock.OpRequest)
	g.send(vsock.Header{SrcPort: 1234, DstPort: h.SrcPort, Op: vsock.OpRST}, nil)
	_ = hc.SetReadDeadline(time.Now().Add(wait))
	b, err := io.ReadAll(hc)
	if err != nil || len(b) != 0 {
		t.Fatalf("host connection after the guest's reset: read %q, %v; want EOF", b, err)
	}
}
