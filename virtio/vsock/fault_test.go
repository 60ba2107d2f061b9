package vsock_test

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"

	"github.com/vmmgo/vmm/virtio/vsock"
)

// TestHostPeerHangsUpMidStream: the host program closes its end while the
// guest is still sending. The device completes every packet the guest
// queued (the late ones go nowhere), tells the guest the stream is gone
// (SHUTDOWN or RST), and serves the next connection on the same port.
func TestHostPeerHangsUpMidStream(t *testing.T) {
	g := newGuest(t)
	ln, err := net.Listen("unix", g.path+"_5000")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	g.send(vsock.Header{SrcPort: 1234, DstPort: 5000, Op: vsock.OpRequest}, nil)
	g.expect(vsock.OpResponse)
	hc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	g.send(vsock.Header{SrcPort: 1234, DstPort: 5000, Op: vsock.OpRW}, bytes.Repeat([]byte("a"), 4096))
	hc.Close() // the host program goes away with data in flight
	for range 8 {
		// sendRaw waits for each packet to be completed: none is stuck.
		g.send(vsock.Header{SrcPort: 1234, DstPort: 5000, Op: vsock.OpRW}, bytes.Repeat([]byte("b"), 4096))
	}
	g.h.Dev.Notify(0)
	for {
		h, _ := g.recv()
		if h.SrcPort != 5000 || h.DstPort != 1234 {
			t.Fatalf("packet for another stream: %+v", h)
		}
		if h.Op == vsock.OpShutdown || h.Op == vsock.OpRST {
			break
		}
		if h.Op != vsock.OpCreditUpdate && h.Op != vsock.OpCreditRequest {
			t.Fatalf("unexpected op %d after the host hung up", h.Op)
		}
	}
	g.send(vsock.Header{SrcPort: 1234, DstPort: 5000, Op: vsock.OpRST}, nil)

	// The device and the port still work.
	// (Late packets may still draw RSTs for the dead stream first.)
	g.send(vsock.Header{SrcPort: 1300, DstPort: 5000, Op: vsock.OpRequest}, nil)
	for {
		h, _ := g.recv()
		if h.DstPort == 1300 && h.Op == vsock.OpResponse {
			break
		}
		if h.DstPort != 1234 || (h.Op != vsock.OpRST && h.Op != vsock.OpShutdown && h.Op != vsock.OpCreditUpdate) {
			t.Fatalf("waiting for the new connection's response: got %+v", h)
		}
	}
	hc2, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer hc2.Close()
	g.send(vsock.Header{SrcPort: 1300, DstPort: 5000, Op: vsock.OpRW}, []byte("again"))
	buf := make([]byte, 5)
	_ = hc2.SetReadDeadline(time.Now().Add(wait))
	if _, err := io.ReadFull(hc2, buf); err != nil || string(buf) != "again" {
		t.Fatalf("host read %q %v on the new connection", buf, err)
	}
}
