package gdbstub

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/vmmgo/vmm/internal/guestlog"
)

// sinkConn is a net.Conn that checks and discards what the server writes.
type sinkConn struct {
	t      *testing.T
	writes int
}

func (c *sinkConn) Write(p []byte) (int, error) {
	c.writes++
	switch {
	case len(p) == 1 && (p[0] == '+' || p[0] == '-'):
	case len(p) >= 4 && p[0] == '$' && p[len(p)-3] == '#':
		body := p[1 : len(p)-3]
		if len(body) > 2*maxPacket {
			c.t.Fatalf("reply of %d bytes", len(body))
		}
		if bytes.IndexByte(body, '#') >= 0 || bytes.IndexByte(body, '$') >= 0 {
			c.t.Fatalf("unescaped framing byte in reply %.80q", body)
		}
		if want := fmt.Sprintf("%02x", checksum(body)); string(p[len(p)-2:]) != want {
			c.t.Fatalf("bad checksum in %.80q", p)
		}
	default:
		c.t.Fatalf("malformed write %.80q", p)
	}
	return len(p), nil
}

func (c *sinkConn) Read([]byte) (int, error)         { return 0, io.EOF }
func (c *sinkConn) Close() error                     { return nil }
func (c *sinkConn) LocalAddr() net.Addr              { return nil }
func (c *sinkConn) RemoteAddr() net.Addr             { return nil }
func (c *sinkConn) SetDeadline(time.Time) error      { return nil }
func (c *sinkConn) SetReadDeadline(time.Time) error  { return nil }
func (c *sinkConn) SetWriteDeadline(time.Time) error { return nil }

// FuzzPacket feeds arbitrary bytes to the packet parser and the command
// dispatcher of a session over a fake target: no panic, well-formed and
// bounded replies, memory accesses within the fake's checks.
func FuzzPacket(f *testing.F) {
	for _, p := range []string{
		"g", "G00", "p10", "P10=0010000000000000", "m1000,10", "M1000,2:abcd", "X1000,2:}\x03a",
		"Z0,1000,1", "z0,1000,1", "Z2,2000,8", "Z4,2001,7", "z2,2000,8", "Z1,1000,1",
		"c", "s", "C05;1000", "vCont;s:1;c", "vCont;c:2", "vCont?", "Hg2", "Hc-1", "T1",
		"qSupported:swbreak+;hwbreak+", "qXfer:features:read:target.xml:0,fff", "qfThreadInfo",
		"qThreadExtraInfo,1", "QStartNoAckMode", "D", "k", "vKill;1", "?", "qC",
	} {
		f.Add(frame([]byte(p)))
		f.Add([]byte(p))
	}
	f.Add([]byte("+-\x03$m0,ffffffffffffffff#00$qC#b4"))
	log := guestlog.Discard()
	f.Fuzz(func(t *testing.T, data []byte) {
		ft := newFake(2)
		ft.inert = true
		srv := New(ft, Config{StartStopped: true, Log: log, OnKill: func() {}})
		ft.srv = srv
		sess := &session{s: srv, conn: &sinkConn{t: t}, log: log}
		step := func(it item) {
			sess.handle(it)
			if srv.running {
				// The inert fake never stops by itself: interrupt it, or
				// deliver a stop as a vCPU would.
				if len(data)%2 == 0 {
					sess.handle(item{kind: itemInterrupt})
				} else {
					srv.Notify(StopEvent{VCPU: len(data) % 3, Reason: ReasonStep})
					if ev := srv.collect(); ev != nil {
						sess.reportStop(*ev)
					}
				}
			}
			sess.closing = false
		}
		var p parser
		for _, b := range data {
			if it, ok := p.feed(b); ok {
				step(it)
			}
		}
		step(item{kind: itemPacket, payload: data})
		if sess.err != nil {
			t.Fatalf("write error %v", sess.err)
		}
		if len(srv.pending) > 4*srv.n+16 {
			t.Fatalf("%d pending events", len(srv.pending))
		}
	})
}
