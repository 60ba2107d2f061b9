package console_test

import (
	"bytes"
	"encoding/binary"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/vmmgo/vmm/memory"
	"github.com/vmmgo/vmm/virtio"
	"github.com/vmmgo/vmm/virtio/console"
	"github.com/vmmgo/vmm/virtio/virtiotest"
)

const wait = 5 * time.Second

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func eventually(t *testing.T, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timeout waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// recv posts one receive buffer on queue q and returns what arrives.
func recv(t *testing.T, h *virtiotest.Harness, q int) []byte {
	t.Helper()
	_, addrs, err := h.Drivers[q].Post(virtiotest.Buf{Len: 256, Write: true})
	if err != nil {
		t.Fatal(err)
	}
	e, err := h.WaitUsed(q, wait)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, e.Len)
	_ = h.Mem.Read(addrs[0], b)
	return b
}

func sendTx(t *testing.T, h *virtiotest.Harness, q int, data []byte) {
	t.Helper()
	if _, _, err := h.Drivers[q].Post(virtiotest.Buf{Data: data}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.WaitUsed(q, wait); err != nil {
		t.Fatal(err)
	}
}

func ctl(id uint32, ev, val uint16) []byte {
	b := make([]byte, 8)
	binary.LittleEndian.PutUint32(b, id)
	binary.LittleEndian.PutUint16(b[4:], ev)
	binary.LittleEndian.PutUint16(b[6:], val)
	return b
}

func TestConsolePort0(t *testing.T) {
	inR, inW := io.Pipe()
	out := &syncBuf{}
	d, err := console.New(console.Config{In: inR, Out: out})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	defer inW.Close()
	if d.Features()&console.FMultiport != 0 || len(d.QueueMaxSizes()) != 2 {
		t.Fatal("multiport offered without named ports")
	}
	h, err := virtiotest.NewHarness(d, ^uint64(0), 1<<20, 64<<10, 16)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Activate(); err != nil {
		t.Fatal(err)
	}
	go inW.Write([]byte("hello guest"))
	if got := recv(t, h, 0); string(got) != "hello guest" {
		t.Fatalf("rx %q", got)
	}
	sendTx(t, h, 1, []byte("hello host\n"))
	eventually(t, "console output", func() bool { return out.String() == "hello host\n" })
	// Emergency write.
	d.WriteConfig(8, []byte{'!', 0, 0, 0})
	eventually(t, "emergency write", func() bool { return out.String() == "hello host\n!" })
	// Several kicks in a row keep working (avail_event re-armed).
	for i := range 5 {
		sendTx(t, h, 1, []byte{byte('a' + i)})
	}
	eventually(t, "more output", func() bool { return out.String() == "hello host\n!abcde" })
}

func TestMultiport(t *testing.T) {
	d, err := console.New(console.Config{Ports: []console.Port{{Name: "org.test.a"}, {Name: "org.test.b"}}})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if n := len(d.QueueMaxSizes()); n != 8 {
		t.Fatalf("%d queues, want 8", n)
	}
	cfg := make([]byte, 8)
	d.ReadConfig(0, cfg)
	if binary.LittleEndian.Uint32(cfg[4:]) != 3 {
		t.Fatalf("max_nr_ports %d", binary.LittleEndian.Uint32(cfg[4:]))
	}
	h, err := virtiotest.NewHarness(d, ^uint64(0), 2<<20, 64<<10, 16)
	if err != nil {
		t.Fatal(err)
	}
	if h.Features&console.FMultiport == 0 {
		t.Fatal("multiport not negotiated")
	}
	if err := h.Activate(); err != nil {
		t.Fatal(err)
	}
	readCtl := func() console.Control {
		t.Helper()
		b := recv(t, h, 2)
		if len(b) < 8 {
			t.Fatalf("short control message %v", b)
		}
		return console.Control{ID: binary.LittleEndian.Uint32(b), Event: binary.LittleEndian.Uint16(b[4:]),
			Value: binary.LittleEndian.Uint16(b[6:]), Name: string(b[8:])}
	}
	sendTx(t, h, 3, ctl(0, console.EventDeviceReady, 1))
	for id := uint32(0); id < 3; id++ {
		if c := readCtl(); c.Event != console.EventDeviceAdd || c.ID != id {
			t.Fatalf("got %+v, want DEVICE_ADD %d", c, id)
		}
	}
	sendTx(t, h, 3, ctl(0, console.EventPortReady, 1))
	if c := readCtl(); c.Event != console.EventConsolePort || c.ID != 0 || c.Value != 1 {
		t.Fatalf("got %+v, want CONSOLE_PORT 0", c)
	}
	if c := readCtl(); c.Event != console.EventPortOpen || c.ID != 0 {
		t.Fatalf("got %+v, want PORT_OPEN 0", c)
	}
	sendTx(t, h, 3, ctl(1, console.EventPortReady, 1))
	if c := readCtl(); c.Event != console.EventPortName || c.ID != 1 || c.Name != "org.test.a" {
		t.Fatalf("got %+v, want PORT_NAME 1", c)
	}
	if c := readCtl(); c.Event != console.EventPortOpen || c.ID != 1 || c.Value != 1 {
		t.Fatalf("got %+v, want PORT_OPEN 1", c)
	}
	// Guest opens port 1; data flows both ways through the host pipe.
	sendTx(t, h, 3, ctl(1, console.EventPortOpen, 1))
	conn, ok := d.HostConn("org.test.a")
	if !ok {
		t.Fatal("no host conn")
	}
	go conn.Write([]byte("to guest"))
	if got := recv(t, h, 4); string(got) != "to guest" {
		t.Fatalf("port 1 rx %q", got)
	}
	// hostReads starts one read on the host end; expect waits for it.
	done := make(chan []byte)
	hostReads := func() {
		go func() {
			b := make([]byte, 64)
			n, _ := conn.Read(b)
			done <- b[:n]
		}()
	}
	expect := func(want, what string) {
		t.Helper()
		select {
		case b := <-done:
			if string(b) != want {
				t.Fatalf("%s: host read %q, want %q", what, b, want)
			}
		case <-time.After(wait):
			t.Fatalf("%s: host did not receive %q", what, want)
		}
	}
	hostReads()
	sendTx(t, h, 5, []byte("to host"))
	expect("to host", "port 1 tx")
	// A guest program writes and closes the port at once: both wait on
	// their queues when the device runs, the close on the control queue
	// is taken first, and the write must still reach the host (the echo
	// lost on native KVM, docs/nested.md).
	hostReads()
	if _, _, err := h.Drivers[5].Post(virtiotest.Buf{Data: []byte("last words")}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := h.Drivers[3].Post(virtiotest.Buf{Data: ctl(1, console.EventPortOpen, 0)}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.WaitUsed(3, wait); err != nil {
		t.Fatal(err)
	}
	if _, err := h.WaitUsed(5, wait); err != nil {
		t.Fatal(err)
	}
	expect("last words", "write pending with the close")
	// Malformed control messages are counted, not fatal.
	m := d.Stats.Malformed.Load()
	sendTx(t, h, 3, []byte{1, 2, 3})
	sendTx(t, h, 3, ctl(9, console.EventPortReady, 1))
	sendTx(t, h, 3, ctl(1, console.EventPortName, 0))
	eventually(t, "malformed count", func() bool { return d.Stats.Malformed.Load() == m+3 })
	// Private control buffer: counted, device keeps serving.
	priv := memory.GPA(0x1f0000)
	h.Mem.SetPrivate(priv, 4096, true)
	if _, _, err := h.Drivers[3].Post(virtiotest.Buf{Addr: priv, Len: 8}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.WaitUsed(3, wait); err != nil {
		t.Fatal(err)
	}
	if d.Stats.Private.Load() != 1 {
		t.Fatal("private control buffer not counted")
	}
	// Reset and reactivate.
	if err := h.Reactivate(); err != nil {
		t.Fatal(err)
	}
	sendTx(t, h, 3, ctl(0, console.EventDeviceReady, 1))
	if c := readCtl(); c.Event != console.EventDeviceAdd {
		t.Fatalf("after reset: %+v", c)
	}
}

func TestBadPortNames(t *testing.T) {
	for _, ports := range [][]console.Port{{{Name: ""}}, {{Name: "a"}, {Name: "a"}}} {
		if _, err := console.New(console.Config{Ports: ports}); err == nil {
			t.Errorf("ports %+v accepted", ports)
		}
	}
}

func FuzzControl(f *testing.F) {
	f.Add(ctl(0, console.EventDeviceReady, 1))
	f.Add(ctl(5, console.EventPortOpen, 0))
	f.Add([]byte{1, 2})
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := console.ParseControl(b)
		if err != nil {
			return
		}
		if len(b) < 8 || c.Value > 1 {
			t.Fatalf("accepted %v as %+v", b, c)
		}
		if got := c.Marshal(); !bytes.Equal(got, b[:8]) {
			t.Fatalf("round trip %v != %v", got, b[:8])
		}
	})
}

var _ = virtio.FVersion1
