package gdbstub

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
)

const ioTimeout = 10 * time.Second

// client is a hand-written GDB client.
type client struct {
	t     *testing.T
	conn  net.Conn
	r     *bufio.Reader
	noAck bool
}

func newClient(t *testing.T, conn net.Conn) *client {
	return &client{t: t, conn: conn, r: bufio.NewReader(conn)}
}

func (c *client) raw(s string) {
	c.t.Helper()
	c.conn.SetDeadline(time.Now().Add(ioTimeout))
	if _, err := io.WriteString(c.conn, s); err != nil {
		c.t.Fatalf("write %q: %v", s, err)
	}
}

func (c *client) readByte() byte {
	c.t.Helper()
	c.conn.SetDeadline(time.Now().Add(ioTimeout))
	b, err := c.r.ReadByte()
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	return b
}

// send sends a packet and, in ack mode, expects '+'.
func (c *client) send(payload string) {
	c.t.Helper()
	c.raw(string(frame([]byte(payload))))
	if !c.noAck {
		if b := c.readByte(); b != '+' {
			c.t.Fatalf("after %q: got %q, want +", payload, b)
		}
	}
}

// recv reads one packet, checks its checksum and acknowledges it.
func (c *client) recv() string {
	c.t.Helper()
	for {
		if b := c.readByte(); b == '$' {
			break
		} else if b != '+' {
			c.t.Fatalf("unexpected byte %q before packet", b)
		}
	}
	var p []byte
	for {
		b := c.readByte()
		if b == '#' {
			break
		}
		p = append(p, b)
	}
	cs := string([]byte{c.readByte(), c.readByte()})
	if want := fmt.Sprintf("%02x", checksum(p)); cs != want {
		c.t.Fatalf("packet %q: checksum %s, want %s", p, cs, want)
	}
	if !c.noAck {
		// The server may close right after its last reply (D, k).
		c.conn.Write([]byte{'+'})
	}
	return string(p)
}

func (c *client) cmd(payload string) string {
	c.t.Helper()
	c.send(payload)
	return c.recv()
}

func (c *client) expect(payload, want string) {
	c.t.Helper()
	if got := c.cmd(payload); got != want {
		c.t.Fatalf("%.40q: got %.80q, want %.80q", payload, got, want)
	}
}

func testLog(t *testing.T) *logrus.Entry {
	l := logrus.New()
	l.Out = io.Discard
	if testing.Verbose() {
		l.Out = testWriter{t}
		l.Level = logrus.TraceLevel
	}
	return logrus.NewEntry(l)
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

type rig struct {
	f    *fakeTarget
	srv  *Server
	c    *client
	done chan error
}

// start serves one session over net.Pipe.
func start(t *testing.T, n int, cfg Config) *rig {
	t.Helper()
	f := newFake(n)
	if cfg.Log == nil {
		cfg.Log = testLog(t)
	}
	srv := New(f, cfg)
	f.srv = srv
	return attachPipe(t, f, srv)
}

func attachPipe(t *testing.T, f *fakeTarget, srv *Server) *rig {
	t.Helper()
	a, b := net.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.ServeConn(ctx, a) }()
	r := &rig{f: f, srv: srv, c: newClient(t, b), done: done}
	t.Cleanup(func() {
		cancel()
		b.Close()
		select {
		case <-done:
		case <-time.After(ioTimeout):
			t.Error("session did not end")
		}
		f.Stop()
	})
	return r
}

func (r *rig) waitDone(t *testing.T) error {
	t.Helper()
	select {
	case err := <-r.done:
		r.done <- err // for Cleanup
		return err
	case <-time.After(ioTimeout):
		t.Fatal("session did not end")
	}
	return nil
}

func hexU64(v uint64) string {
	return hex.EncodeToString(binary.LittleEndian.AppendUint64(nil, v))
}

func TestSessionQueries(t *testing.T) {
	r := start(t, 3, Config{StartStopped: true})
	c := r.c
	sup := c.cmd("qSupported:multiprocess+;swbreak+;hwbreak+;xmlRegisters=i386")
	for _, f := range []string{"PacketSize=4000", "qXfer:features:read+", "swbreak+", "hwbreak+", "vContSupported+", "QStartNoAckMode+"} {
		if !strings.Contains(sup, f) {
			t.Errorf("qSupported reply %q lacks %s", sup, f)
		}
	}
	c.expect("vMustReplyEmpty", "")
	c.expect("qOffsets", "")
	c.expect("Hg0", "OK")
	c.expect("?", "T05thread:1;")
	c.expect("qfThreadInfo", "m1,2,3")
	c.expect("qsThreadInfo", "l")
	c.expect("qC", "QC1")
	c.expect("qAttached", "1")
	c.expect("T3", "OK")
	c.expect("T4", errInval)
	c.expect("T0", errInval)
	c.expect("Hg4", errInval)
	c.expect("Hgzz", errParse)
	c.expect("vCont?", "vCont;c;C;s;S")
	c.expect("qThreadExtraInfo,2", hex.EncodeToString([]byte("vCPU 1")))

	// The target description, read in small chunks as GDB may.
	var xml strings.Builder
	for off := 0; ; {
		got := c.cmd(fmt.Sprintf("qXfer:features:read:target.xml:%x,%x", off, 200))
		data, err := unescape([]byte(got[1:]))
		if err != nil {
			t.Fatal(err)
		}
		xml.Write(data)
		off += len(data)
		if got[0] == 'l' {
			break
		}
		if got[0] != 'm' || len(data) == 0 {
			t.Fatalf("bad chunk %q", got)
		}
	}
	if xml.String() != targetXML {
		t.Fatal("reassembled target.xml differs")
	}
	c.expect("qXfer:features:read:other.xml:0,100", errInval)
	c.expect(fmt.Sprintf("qXfer:features:read:target.xml:%x,10", len(targetXML)+5), "l")
}

func TestSessionRegisters(t *testing.T) {
	r := start(t, 2, Config{StartStopped: true})
	c := r.c
	r.f.setReg(1, func(r *Registers) { r.RAX = 0x1122334455667788; r.CR3 = 0xabc000 })
	c.expect("Hg2", "OK")
	g := c.cmd("g")
	if len(g) != 2*regsSize {
		t.Fatalf("g is %d hex digits, want %d", len(g), 2*regsSize)
	}
	if g[:16] != hexU64(0x1122334455667788) {
		t.Fatalf("rax in g: %s", g[:16])
	}
	c.expect("p10", hexU64(0x1100))   // rip of vCPU 1
	c.expect("p3e", hexU64(0xabc000)) // cr3
	c.expect("p42", errInval)
	c.expect("pxyz", errParse)
	c.expect("P0="+hexU64(5), "OK")
	if got := r.f.reg(1).RAX; got != 5 {
		t.Fatalf("rax after P: %#x", got)
	}
	c.expect("P11=00", errInval) // eflags is 4 bytes
	c.expect("P11=4602000", errParse)
	// G writes back what g read, modified.
	b, _ := hex.DecodeString(g)
	binary.LittleEndian.PutUint64(b[16*8:], 0x2000) // rip
	c.expect("G"+hex.EncodeToString(b), "OK")
	if got := r.f.reg(1); got.RIP != 0x2000 || got.CR3 != 0xabc000 {
		t.Fatalf("after G: rip %#x cr3 %#x", got.RIP, got.CR3)
	}
	if r.f.reg(0).RIP != 0x1000 {
		t.Fatal("G changed the wrong vCPU")
	}
	c.expect("G"+hex.EncodeToString(b)+"00", errParse)
	c.expect("G0", errParse)
}

func TestSessionMemory(t *testing.T) {
	r := start(t, 1, Config{StartStopped: true})
	c := r.c
	r.f.load(0x2000, 0xde, 0xad, 0xbe, 0xef)
	c.expect("m2000,4", "deadbeef")
	c.expect("M2001,2:0102", "OK")
	c.expect("m2000,4", "de0102ef")
	// X with every byte that needs escaping.
	data := []byte{'#', '$', '}', '*', 0x03, 0}
	c.expect(fmt.Sprintf("X3000,%x:%s", len(data), escape(nil, data)), "OK")
	c.expect("m3000,6", hex.EncodeToString(data))
	c.expect("X3000,0:", "OK")
	// Unmapped, partially mapped and absurd ranges.
	c.expect("m10000,4", errFault)
	c.expect(fmt.Sprintf("m%x,8", fakeMem-2), "9090")
	got := c.cmd("m0,ffffffffffffffff")
	if len(got) != 2*maxMemRead {
		t.Fatalf("huge m returned %d digits", len(got))
	}
	c.expect("mffffffffffffffff,ffffffffffffffff", errFault)
	c.expect("m1ffffffffffffffff,1", errParse)
	c.expect("M10000,1:00", errFault)
	c.expect("M2000,2:00", errParse)
	c.expect("M2000,1:0g", errParse)
	c.expect("X2000,2:}", errParse)
	c.expect("Mffffffffffffffff,2:0000", errInval)
}

func TestBreakpointStepContinue(t *testing.T) {
	r := start(t, 1, Config{StartStopped: true})
	c := r.c
	c.cmd("qSupported:swbreak+;hwbreak+")
	c.expect("Z0,1010,1", "OK")
	c.expect("Z0,1010,1", "OK") // idempotent
	if r.f.mem[0x1010] != Int3 {
		t.Fatal("int3 not planted")
	}
	c.expect("m1010,1", "90") // shadowed
	c.expect("Z0,20000,1", errFault)
	c.expect("vCont;c", "T05thread:1;swbreak:;")
	if rip := r.f.reg(0).RIP; rip != 0x1010 {
		t.Fatalf("rip %#x at breakpoint", rip)
	}
	// Step over it the way GDB does: remove, step, reinsert, continue.
	c.expect("z0,1010,1", "OK")
	if r.f.mem[0x1010] != 0x90 {
		t.Fatal("original byte not restored")
	}
	c.expect("vCont;s:1", "T05thread:1;")
	if rip := r.f.reg(0).RIP; rip != 0x1011 {
		t.Fatalf("rip %#x after step", rip)
	}
	c.expect("s", "T05thread:1;")
	c.expect("Z0,1010,1", "OK")
	r.f.load(0x1020, opHalt)
	c.send("c")
	// The guest halts at 0x1020; Ctrl-C stops it.
	time.Sleep(20 * time.Millisecond)
	c.raw("\x03")
	if got := c.recv(); got != "T02thread:1;" {
		t.Fatalf("after ^C: %q", got)
	}
	if rip := r.f.reg(0).RIP; rip != 0x1020 {
		t.Fatalf("rip %#x after ^C", rip)
	}
	// c ADDR resumes elsewhere: from 0x1000 to the breakpoint again.
	c.expect("c1000", "T05thread:1;swbreak:;")
	resumes, stops, _ := r.f.counts()
	if resumes != 5 || stops < 5 {
		t.Fatalf("resumes %d stops %d", resumes, stops)
	}
}

func TestHardwareBreakAndWatch(t *testing.T) {
	r := start(t, 1, Config{StartStopped: true})
	c := r.c
	c.cmd("qSupported:swbreak+;hwbreak+")
	// 0x1000: nop; 0x1001: store al to [rbx]; 0x1002: load; 0x1003: halt
	r.f.load(0x1000, 0x90, opStore, opLoad, opHalt)
	r.f.setReg(0, func(r *Registers) { r.RBX = 0x2006; r.RAX = 0x55 })
	c.expect("Z1,1001,1", "OK")
	c.expect("c", "T05thread:1;hwbreak:;")
	if rip := r.f.reg(0).RIP; rip != 0x1001 {
		t.Fatalf("hw break at %#x", rip)
	}
	if d := r.f.dregs; d.DR[0] != 0x1001 || d.DR7 != 1<<1 {
		t.Fatalf("debug regs %+v", d)
	}
	c.expect("z1,1001,1", "OK")
	// Watch 0x2005..0x200c: split over 3 slots (1 @2005, 2 @2006, 4 @2008... ).
	c.expect("Z2,2005,8", "OK")
	c.expect("c", "T05thread:1;watch:2005;")
	if rip := r.f.reg(0).RIP; rip != 0x1002 || r.f.mem[0x2006] != 0x55 {
		t.Fatalf("write watch: rip %#x mem %#x", rip, r.f.mem[0x2006])
	}
	c.expect("z2,2005,8", "OK")
	c.expect("Z3,2006,1", "OK")
	c.expect("c", "T05thread:1;rwatch:2006;")
	c.expect("z3,2006,1", "OK")
	if r.f.dregs.Enabled() {
		t.Fatal("debug registers still enabled")
	}
	// Slot exhaustion: 4 fit, the fifth does not; a failed insert changes
	// nothing.
	for i := range 4 {
		c.expect(fmt.Sprintf("Z4,%x,8", 0x3000+8*i), "OK")
	}
	c.expect("Z1,1000,1", errNoSpace)
	c.expect("Z2,4000,3", errNoSpace)
	c.expect("Z2,4000,0", errInval)
	c.expect("Z2,4000,100", errInval)
	c.expect("z4,3008,8", "OK")
	c.expect("Z1,1000,1", "OK")
	if d := r.f.dregs; d.DR != [4]uint64{0x3000, 0x3010, 0x3018, 0x1000} {
		t.Fatalf("slots %+v", d.DR)
	}
	c.expect("Z5,1000,1", "")
	c.expect("Z1,zz,1", errParse)
	c.expect("Z1", errParse)
}

func TestAllStopAndPending(t *testing.T) {
	r := start(t, 2, Config{StartStopped: true})
	c := r.c
	c.cmd("qSupported:swbreak+")
	// vCPU 0 runs from 0x1000, vCPU 1 from 0x1100: both hit breakpoints.
	r.f.load(0x1008, opHalt)
	r.f.load(0x1108, opHalt)
	c.expect("Z0,1004,1", "OK")
	c.expect("Z0,1104,1", "OK")
	first := c.cmd("vCont;c")
	var other, firstAddr string
	switch first {
	case "T05thread:1;swbreak:;":
		other, firstAddr = "T05thread:2;swbreak:;", "1004"
	case "T05thread:2;swbreak:;":
		other, firstAddr = "T05thread:1;swbreak:;", "1104"
	default:
		t.Fatalf("first stop %q", first)
	}
	resumes, stops, _ := r.f.counts()
	if resumes != 1 || stops != 1 {
		t.Fatalf("resumes %d stops %d", resumes, stops)
	}
	// Either the other vCPU also hit its breakpoint (reported now without
	// resuming) or it was stopped before it and runs into it now. The
	// first one's breakpoint is removed as GDB would to step over it.
	c.expect("z0,"+firstAddr+",1", "OK")
	if got := c.cmd("vCont;c"); got != other {
		t.Fatalf("second stop %q, want %q", got, other)
	}
	// Thread-specific actions: step vCPU 1 only; vCPU 0 stays.
	c.expect("z0,1104,1", "OK")
	c.expect("Hc2", "OK")
	r.f.setReg(1, func(r *Registers) { r.RIP = 0x1104 })
	before := r.f.reg(0).RIP
	c.expect("vCont;s:2", "T05thread:2;")
	if r.f.reg(0).RIP != before || r.f.reg(1).RIP != 0x1105 {
		t.Fatalf("step of vCPU 1 moved: %#x %#x", r.f.reg(0).RIP, r.f.reg(1).RIP)
	}
	_, _, last := r.f.counts()
	if last[0] != ActionNone || last[1] != ActionStep {
		t.Fatalf("actions %v", last)
	}
	// Leftmost action wins: s:2 then c for the rest.
	r.f.load(0x1200, opHalt)
	c.expect("z0,1004,1", "OK")
	r.f.setReg(0, func(r *Registers) { r.RIP = 0x1200 })
	c.expect("vCont;s:2;c", "T05thread:2;")
	_, _, last = r.f.counts()
	if last[0] != ActionContinue || last[1] != ActionStep {
		t.Fatalf("actions %v", last)
	}
	c.expect("vCont;x", errParse)
	c.expect("vCont;c:9", errParse)
	c.expect("vCont;", errParse)
	c.expect("vCont;C0g", errParse)
}

func TestNoAckMode(t *testing.T) {
	r := start(t, 1, Config{StartStopped: true})
	c := r.c
	c.expect("QStartNoAckMode", "OK")
	c.noAck = true
	c.expect("qC", "QC1")
	// Garbage in no-ack mode gets an error reply, not a NAK.
	c.raw("$qC#00")
	if got := c.recv(); got != errParse {
		t.Fatalf("bad checksum in no-ack mode: %q", got)
	}
	c.expect("?", "T05thread:1;")
}

func TestGarbage(t *testing.T) {
	r := start(t, 1, Config{StartStopped: true})
	c := r.c
	c.raw("$qC#00")
	if b := c.readByte(); b != '-' {
		t.Fatalf("bad checksum: %q", b)
	}
	c.raw("$" + strings.Repeat("M", 3*maxPacket) + "#00")
	if b := c.readByte(); b != '-' {
		t.Fatalf("oversized: %q", b)
	}
	c.raw("noise\x00\xff}}##")
	// NAK of our reply makes the server resend it.
	c.send("qC")
	c.noAck = true // read without acknowledging, then NAK
	if got := c.recv(); got != "QC1" {
		t.Fatalf("qC: %q", got)
	}
	c.noAck = false
	c.raw("-")
	if got := c.recv(); got != "QC1" {
		t.Fatalf("resent: %q", got)
	}
	for _, p := range []string{"", "Hx1", "H", "qXfer:features:read:target.xml:zz,1", "qXfer:features:read:target.xml:0",
		"p", "P", "P0", "m", "m1", "m,", "M1,1", "X", "z", "Z0,", "C", "Szz", "c zz", "T", "Tfffffffffffffffff",
		"qThreadExtraInfo,0", "qThreadExtraInfo,zz", "vCont;c:", "vCont;s:-2", "\x00\x01"} {
		got := c.cmd(p)
		if got != "" && !strings.HasPrefix(got, "E") {
			t.Errorf("%q: reply %q", p, got)
		}
	}
	c.expect("qC", "QC1")
}

func TestDetachResumes(t *testing.T) {
	r := start(t, 2, Config{StartStopped: true})
	c := r.c
	r.f.load(0x1000, opHalt)
	r.f.load(0x1100, opHalt)
	c.expect("Z0,1050,1", "OK")
	c.expect("Z2,2000,4", "OK")
	waited := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
		defer cancel()
		waited <- r.srv.WaitContinue(ctx)
	}()
	select {
	case <-waited:
		t.Fatal("WaitContinue returned before the guest was resumed")
	case <-time.After(20 * time.Millisecond):
	}
	c.expect("D", "OK")
	if err := r.waitDone(t); err != nil {
		t.Fatalf("session: %v", err)
	}
	if err := <-waited; err != nil {
		t.Fatalf("WaitContinue: %v", err)
	}
	resumes, _, last := r.f.counts()
	if resumes != 1 || last[0] != ActionContinue || last[1] != ActionContinue {
		t.Fatalf("after detach: resumes %d actions %v", resumes, last)
	}
	if r.f.mem[0x1050] != 0x90 || r.f.sw.Has(0x1050) || r.f.dregs.Enabled() {
		t.Fatal("breakpoints survived detach")
	}
}

func TestKill(t *testing.T) {
	killed := make(chan struct{})
	r := start(t, 1, Config{StartStopped: true, OnKill: func() { close(killed) }})
	r.c.send("k")
	select {
	case <-killed:
	case <-time.After(ioTimeout):
		t.Fatal("OnKill not called")
	}
	r.waitDone(t)
}

func TestExit(t *testing.T) {
	r := start(t, 1, Config{StartStopped: true})
	c := r.c
	r.f.setReg(0, func(r *Registers) { r.RAX = 3 })
	r.f.load(0x1002, opExit)
	c.expect("c", "W03")
	c.expect("?", "W03")
	c.expect("c", "W03")
}

func TestGuestFaultSignal(t *testing.T) {
	r := start(t, 1, Config{StartStopped: true})
	c := r.c
	r.f.setReg(0, func(r *Registers) { r.RBX = 1 << 40 })
	r.f.load(0x1000, opStore)
	c.expect("c", "T0bthread:1;")
}

// TestAttachToRunningGuest: without --gdb-wait the guest runs; a client
// attaching stops it, and a dropped connection leaves it stopped.
func TestAttachToRunningGuest(t *testing.T) {
	f := newFake(2)
	srv := New(f, Config{Log: testLog(t)})
	f.srv = srv
	f.load(0x1000, opHalt)
	f.load(0x1100, opHalt)
	if err := f.Resume([]Action{ActionContinue, ActionContinue}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := srv.WaitContinue(ctx); err != nil {
		t.Fatalf("WaitContinue on a running guest: %v", err)
	}
	r := attachPipe(t, f, srv)
	r.c.expect("?", "T05thread:1;")
	if _, stops, _ := f.counts(); stops != 1 {
		t.Fatalf("attach did not stop the guest (%d stops)", stops)
	}
	r.c.expect("Z0,1050,1", "OK")
	r.c.conn.Close()
	if err := r.waitDone(t); err != nil {
		t.Fatalf("session: %v", err)
	}
	if resumes, _, _ := f.counts(); resumes != 1 || f.sw.Has(0x1050) {
		t.Fatalf("disconnect: resumes %d, breakpoint kept %v", resumes, f.sw.Has(0x1050))
	}
}

// TestServeReconnect drives Serve over a real TCP socket: a client
// disconnects abruptly, the next one finds the guest as it was; a second
// concurrent client is turned away.
func TestServeReconnect(t *testing.T) {
	f := newFake(1)
	srv := New(f, Config{StartStopped: true, Log: testLog(t)})
	f.srv = srv
	ln, err := Listen("tcp:127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln) }()
	defer func() {
		cancel()
		select {
		case err := <-served:
			if err != context.Canceled {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(ioTimeout):
			t.Error("Serve did not return")
		}
		f.Stop()
	}()
	dial := func() *client {
		conn, err := net.DialTimeout("tcp", ln.Addr().String(), ioTimeout)
		if err != nil {
			t.Fatal(err)
		}
		return newClient(t, conn)
	}
	c1 := dial()
	c1.cmd("qSupported:swbreak+")
	c1.expect("Z0,1004,1", "OK")
	c1.expect("c", "T05thread:1;swbreak:;")
	c1.expect("P0="+hexU64(7), "OK")

	// A second client while the first is attached is closed after the
	// grace period.
	c2 := dial()
	c2.conn.SetDeadline(time.Now().Add(busyGrace + ioTimeout))
	if _, err := c2.r.ReadByte(); err == nil {
		t.Fatal("second client was served concurrently")
	}
	c2.conn.Close()

	c1.conn.Close()
	c3 := dial()
	c3.expect("?", "T05thread:1;")
	c3.expect("p0", hexU64(7))
	if f.sw.Has(0x1004) {
		t.Fatal("breakpoint survived the disconnect")
	}
	if resumes, _, _ := f.counts(); resumes != 1 {
		t.Fatalf("guest resumed on disconnect (%d resumes)", resumes)
	}
	// With no client, a guest stop is recorded and shown to the next one.
	f.load(0x1005, opExit)
	c3.expect("D", "OK")
	c3.conn.Close()
	time.Sleep(100 * time.Millisecond)
	c4 := dial()
	c4.expect("?", "W07")
	c4.conn.Close()
}

// TestDisconnectWhileRunning: a client that vanishes while the guest runs
// leaves no breakpoint behind and the guest running.
func TestDisconnectWhileRunning(t *testing.T) {
	r := start(t, 1, Config{StartStopped: true})
	r.f.load(0x1000, opHalt)
	r.c.expect("Z0,1050,1", "OK")
	r.c.expect("Z2,2000,4", "OK")
	r.c.send("c")
	r.c.conn.Close()
	if err := r.waitDone(t); err != nil {
		t.Fatalf("session: %v", err)
	}
	resumes, stops, last := r.f.counts()
	if resumes != 2 || stops != 1 || last[0] != ActionContinue {
		t.Fatalf("resumes %d stops %d actions %v", resumes, stops, last)
	}
	if r.f.sw.Has(0x1050) || r.f.mem[0x1050] != 0x90 || r.f.dregs.Enabled() {
		t.Fatal("breakpoints left behind")
	}
}
