package gdbstub

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
)

// session is one connected client. It runs on the goroutine that holds
// Server.drive.
type session struct {
	s    *Server
	conn net.Conn
	log  *logrus.Entry

	noAck    bool
	lastSent []byte // for retransmission on '-'
	resends  int
	err      error // write failure: the session ends
	closing  bool  // detach or kill: end after this reply

	hg, hc           int64 // thread selected by Hg / Hc (0 any, -1 all)
	swbreakOK, hwbOK bool  // client announced swbreak+ / hwbreak+
}

// Error replies. GDB only tells E from success; the numbers follow errno
// as gdbserver's do.
const (
	errParse   = "E01"
	errFault   = "E0e" // EFAULT: memory not accessible
	errInval   = "E16" // EINVAL
	errNoSpace = "E1c" // ENOSPC: no free debug register
	errTarget  = "E05" // EIO: the Target failed
)

func (c *session) write(b []byte) {
	if c.err != nil {
		return
	}
	if err := c.conn.SetWriteDeadline(time.Now().Add(writeTimeout)); err != nil {
		c.err = err
		return
	}
	if _, err := c.conn.Write(b); err != nil {
		c.err = err
	}
}

func (c *session) send(payload string) {
	pkt := frame([]byte(payload))
	if c.s.log.Logger.IsLevelEnabled(logrus.TraceLevel) {
		c.log.Tracef("gdb: -> %q", truncate(pkt))
	}
	c.lastSent, c.resends = pkt, 0
	c.write(pkt)
}

// handle processes one item from the client.
func (c *session) handle(it item) {
	switch it.kind {
	case itemAck:
		c.lastSent = nil
	case itemNak:
		if !c.noAck && c.lastSent != nil && c.resends < maxResends {
			c.resends++
			c.write(c.lastSent)
		}
	case itemInterrupt:
		if ev := c.s.interrupt(); ev != nil {
			c.reportStop(*ev)
		}
	case itemBadPacket:
		c.log.Debug("gdb: bad checksum or oversized packet")
		if c.noAck {
			c.send(errParse)
		} else {
			c.write([]byte{'-'})
		}
	case itemPacket:
		if c.s.log.Logger.IsLevelEnabled(logrus.TraceLevel) {
			c.log.Tracef("gdb: <- %q", truncate(it.payload))
		}
		if !c.noAck {
			c.write([]byte{'+'})
		}
		c.lastSent = nil // a new packet implies our last reply arrived
		if c.s.running {
			// All-stop mode: GDB sends nothing but ^C while the guest
			// runs. Answering would be mistaken for a stop reply.
			c.log.WithField("packet", string(truncate(it.payload))).Debug("gdb: packet while running ignored")
			return
		}
		reply, ok := c.dispatch(it.payload)
		if ok {
			c.send(reply)
		}
	}
}

// reportStop sends the stop reply for ev and makes its vCPU current.
func (c *session) reportStop(ev StopEvent) {
	if ev.Reason != ReasonExited {
		c.hg = int64(ev.VCPU) + 1
	}
	c.send(c.stopReply(ev))
}

// stopReply formats a stop reply (GDB manual, "Stop Reply Packets").
func (c *session) stopReply(ev StopEvent) string {
	tid := ev.VCPU + 1
	switch ev.Reason {
	case ReasonExited:
		return fmt.Sprintf("W%02x", ev.ExitCode)
	case reasonInterrupt:
		return fmt.Sprintf("T%02xthread:%x;", SIGINT, tid)
	case ReasonSignal:
		return fmt.Sprintf("T%02xthread:%x;", ev.Signal&0xff, tid)
	case ReasonSWBreak:
		if c.swbreakOK {
			return fmt.Sprintf("T05thread:%x;swbreak:;", tid)
		}
	case ReasonHWBreak:
		if c.hwbOK {
			return fmt.Sprintf("T05thread:%x;hwbreak:;", tid)
		}
	case ReasonWatch:
		name := map[HWKind]string{HWWrite: "watch", HWRead: "rwatch", HWAccess: "awatch"}[ev.WatchKind]
		if name == "" {
			name = "awatch"
		}
		return fmt.Sprintf("T05thread:%x;%s:%x;", tid, name, ev.Addr)
	}
	return fmt.Sprintf("T05thread:%x;", tid)
}

// vcpuOf maps a thread id to a vCPU: 0 (any) and -1 (all) mean the
// current one.
func (c *session) vcpuOf(tid int64) (int, bool) {
	switch {
	case tid == 0 || tid == -1:
		return c.s.last.VCPU, true
	case tid >= 1 && tid <= int64(c.s.n):
		return int(tid - 1), true
	}
	return 0, false
}

// regVCPU is the vCPU register and memory packets apply to (Hg).
func (c *session) regVCPU() int {
	v, ok := c.vcpuOf(c.hg)
	if !ok {
		return c.s.last.VCPU
	}
	return v
}

// dispatch answers one packet. ok is false when no reply is due now
// (resume: the stop reply comes later; kill).
func (c *session) dispatch(pkt []byte) (reply string, ok bool) {
	if len(pkt) == 0 {
		return "", true
	}
	s := c.s
	args := pkt[1:]
	switch pkt[0] {
	case '?':
		if s.exited {
			return fmt.Sprintf("W%02x", s.exitCode), true
		}
		return c.stopReply(s.last), true
	case 'g':
		r, err := s.t.ReadRegisters(c.regVCPU())
		if err != nil {
			return errTarget, true
		}
		return hex.EncodeToString(marshalRegs(&r)), true
	case 'G':
		return c.writeAllRegs(args), true
	case 'p':
		return c.readReg(args), true
	case 'P':
		return c.writeReg(args), true
	case 'm':
		return c.readMem(args), true
	case 'M':
		return c.writeMem(args, false), true
	case 'X':
		return c.writeMem(args, true), true
	case 'Z', 'z':
		return c.breakpoint(pkt[0] == 'Z', args), true
	case 'c', 'C', 's', 'S':
		return c.legacyResume(pkt[0], args)
	case 'v':
		return c.vPacket(pkt)
	case 'H':
		if len(args) < 2 || (args[0] != 'g' && args[0] != 'c') {
			return errParse, true
		}
		tid, err := parseThread(args[1:])
		if err != nil {
			return errParse, true
		}
		if _, ok := c.vcpuOf(tid); !ok {
			return errInval, true
		}
		if args[0] == 'g' {
			c.hg = tid
		} else {
			c.hc = tid
		}
		return "OK", true
	case 'T':
		tid, err := parseThread(args)
		if err != nil {
			return errParse, true
		}
		if tid < 1 || tid > int64(s.n) {
			return errInval, true
		}
		return "OK", true
	case 'q':
		return c.query(pkt), true
	case 'Q':
		if string(pkt) == "QStartNoAckMode" {
			// Acknowledged in ack mode; later packets are not (GDB
			// manual, "Packet Acknowledgment").
			c.send("OK")
			c.noAck = true
			return "", false
		}
		return "", true
	case 'D':
		s.release(true)
		c.closing = true
		return "OK", true
	case 'k':
		c.kill()
		return "", false
	}
	return "", true
}

func (c *session) kill() {
	c.closing = true
	if c.s.cfg.OnKill == nil {
		c.s.release(true)
		return
	}
	c.s.release(false)
	c.s.cfg.OnKill()
}

func (c *session) query(pkt []byte) string {
	s := c.s
	name, args, _ := bytes.Cut(pkt, []byte{':'})
	switch string(name) {
	case "qSupported":
		for _, f := range bytes.Split(args, []byte{';'}) {
			switch string(f) {
			case "swbreak+":
				c.swbreakOK = true
			case "hwbreak+":
				c.hwbOK = true
			}
		}
		return fmt.Sprintf("PacketSize=%x;qXfer:features:read+;swbreak+;hwbreak+;vContSupported+;QStartNoAckMode+", maxPacket)
	case "qXfer":
		return c.xfer(args)
	case "qAttached":
		return "1" // attached to an existing machine: quitting GDB detaches
	case "qC":
		return fmt.Sprintf("QC%x", c.s.last.VCPU+1)
	case "qfThreadInfo":
		var b strings.Builder
		b.WriteByte('m')
		for i := range s.n {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, "%x", i+1)
		}
		return b.String()
	case "qsThreadInfo":
		return "l"
	}
	if rest, ok := bytes.CutPrefix(pkt, []byte("qThreadExtraInfo,")); ok {
		tid, err := parseThread(rest)
		if err != nil {
			return errParse
		}
		v, ok := c.vcpuOf(tid)
		if !ok || tid <= 0 {
			return errInval
		}
		return hex.EncodeToString(fmt.Appendf(nil, "vCPU %d", v))
	}
	return ""
}

// xfer answers qXfer:features:read:target.xml:OFFSET,LENGTH.
func (c *session) xfer(args []byte) string {
	parts := bytes.SplitN(args, []byte{':'}, 4)
	if len(parts) != 4 || string(parts[0]) != "features" || string(parts[1]) != "read" {
		return ""
	}
	if string(parts[2]) != "target.xml" {
		return errInval
	}
	o, l, ok := bytes.Cut(parts[3], []byte{','})
	if !ok {
		return errParse
	}
	off, err1 := parseHex(o)
	length, err2 := parseHex(l)
	if err1 != nil || err2 != nil {
		return errParse
	}
	if off >= uint64(len(targetXML)) {
		return "l"
	}
	// Escaping can double the size: keep the reply within PacketSize.
	length = min(length, maxPacket/2-1, uint64(len(targetXML))-off)
	chunk := []byte(targetXML[off : off+length])
	kind := byte('m')
	if off+length == uint64(len(targetXML)) {
		kind = 'l'
	}
	return string(escape([]byte{kind}, chunk))
}

func (c *session) writeAllRegs(args []byte) string {
	data, err := decodeHex(args)
	if err != nil || len(data) > regsSize {
		return errParse
	}
	v := c.regVCPU()
	r, err := c.s.t.ReadRegisters(v)
	if err != nil {
		return errTarget
	}
	if err := unmarshalRegs(&r, data); err != nil {
		return errInval
	}
	if err := c.s.t.WriteRegisters(v, r); err != nil {
		return errTarget
	}
	return "OK"
}

func (c *session) readReg(args []byte) string {
	n, err := parseHex(args)
	if err != nil {
		return errParse
	}
	if n >= uint64(len(regTable)) {
		return errInval
	}
	r, err := c.s.t.ReadRegisters(c.regVCPU())
	if err != nil {
		return errTarget
	}
	return hex.EncodeToString(putReg(nil, &r, int(n)))
}

func (c *session) writeReg(args []byte) string {
	num, val, ok := bytes.Cut(args, []byte{'='})
	if !ok {
		return errParse
	}
	n, err := parseHex(num)
	if err != nil {
		return errParse
	}
	if n >= uint64(len(regTable)) {
		return errInval
	}
	data, err := decodeHex(val)
	if err != nil {
		return errParse
	}
	v := c.regVCPU()
	r, err := c.s.t.ReadRegisters(v)
	if err != nil {
		return errTarget
	}
	if err := setReg(&r, int(n), data); err != nil {
		return errInval
	}
	if err := c.s.t.WriteRegisters(v, r); err != nil {
		return errTarget
	}
	return "OK"
}

// parseAddrLen parses "ADDR,LENGTH".
func parseAddrLen(b []byte) (addr, length uint64, err error) {
	a, l, ok := bytes.Cut(b, []byte{','})
	if !ok {
		return 0, 0, fmt.Errorf("want ADDR,LENGTH")
	}
	if addr, err = parseHex(a); err != nil {
		return 0, 0, err
	}
	if length, err = parseHex(l); err != nil {
		return 0, 0, err
	}
	return addr, length, nil
}

// maxMemRead bounds one m reply (hex doubles it) to the packet size.
const maxMemRead = maxPacket/2 - 16

// readMem answers m: the reply may be shorter than asked when the range
// runs into unmapped memory (GDB manual, "m addr,length").
func (c *session) readMem(args []byte) string {
	addr, length, err := parseAddrLen(args)
	if err != nil {
		return errParse
	}
	length = min(length, maxMemRead)
	if addr != 0 {
		length = min(length, -addr) // do not wrap past 2^64
	}
	buf := make([]byte, length)
	v := c.regVCPU()
	if err := c.s.t.ReadMemory(v, addr, buf); err != nil {
		// Fall back to page by page, returning what is readable.
		n := uint64(0)
		for n < length {
			chunk := min(length-n, 4096-(addr+n)&4095)
			if c.s.t.ReadMemory(v, addr+n, buf[n:n+chunk]) != nil {
				break
			}
			n += chunk
		}
		if n == 0 {
			return errFault
		}
		buf = buf[:n]
	}
	return hex.EncodeToString(buf)
}

// writeMem answers M (hex) and X (binary).
func (c *session) writeMem(args []byte, binary bool) string {
	head, body, ok := bytes.Cut(args, []byte{':'})
	if !ok {
		return errParse
	}
	addr, length, err := parseAddrLen(head)
	if err != nil {
		return errParse
	}
	var data []byte
	if binary {
		data, err = unescape(body)
	} else {
		data, err = decodeHex(body)
	}
	if err != nil || uint64(len(data)) != length {
		return errParse
	}
	if length == 0 {
		return "OK" // X probe (GDB manual, "X addr,length:XX...")
	}
	if addr+length-1 < addr {
		return errInval
	}
	if err := c.s.t.WriteMemory(c.regVCPU(), addr, data); err != nil {
		return errFault
	}
	return "OK"
}

// breakpoint answers Z/z TYPE,ADDR,KIND (GDB manual, "Z packets").
func (c *session) breakpoint(insert bool, args []byte) string {
	if len(args) < 2 || args[1] != ',' {
		return errParse
	}
	typ := args[0]
	rest, _, _ := bytes.Cut(args[2:], []byte{';'}) // conditions: not supported, ignored
	addr, kind, err := parseAddrLen(rest)
	if err != nil {
		return errParse
	}
	s := c.s
	switch typ {
	case '0':
		if insert {
			if _, ok := s.swbps[addr]; ok {
				return "OK"
			}
			v := c.regVCPU()
			if err := s.t.InsertSWBreakpoint(v, addr); err != nil {
				return errFault
			}
			s.swbps[addr] = v
			return "OK"
		}
		if v, ok := s.swbps[addr]; ok {
			if err := s.t.RemoveSWBreakpoint(v, addr); err != nil {
				return errFault
			}
			delete(s.swbps, addr)
		}
		return "OK"
	case '1', '2', '3', '4':
		e := hwEntry{typ: typ, addr: addr, length: kind}
		if typ == '1' {
			e.length = 1 // kind is the breakpoint size; DR7 wants LEN=1
		}
		idx := -1
		for i, h := range s.hw {
			if h == e {
				idx = i
				break
			}
		}
		var next []hwEntry
		switch {
		case insert && idx >= 0:
			return "OK"
		case insert:
			next = append(append(next, s.hw...), e)
		case idx < 0:
			return "OK"
		default:
			next = append(append(next, s.hw[:idx]...), s.hw[idx+1:]...)
		}
		if err := s.setHW(next); err != nil {
			c.log.WithError(err).Debug("gdb: hardware breakpoint")
			if err == errNoSlots {
				return errNoSpace
			}
			return errInval
		}
		return "OK"
	}
	return "" // unsupported type
}

// legacyResume answers c/C/s/S [SIG;][ADDR].
func (c *session) legacyResume(cmd byte, args []byte) (string, bool) {
	if cmd == 'C' || cmd == 'S' {
		sig, rest, _ := bytes.Cut(args, []byte{';'})
		if _, err := parseHex(sig); err != nil {
			return errParse, true
		}
		args = rest
	}
	s := c.s
	v, ok := c.vcpuOf(c.hc)
	if !ok {
		v = s.last.VCPU
	}
	if len(args) > 0 {
		addr, err := parseHex(args)
		if err != nil {
			return errParse, true
		}
		r, err := s.t.ReadRegisters(v)
		if err != nil {
			return errTarget, true
		}
		r.RIP = addr
		if err := s.t.WriteRegisters(v, r); err != nil {
			return errTarget, true
		}
	}
	var actions []Action
	if cmd == 'c' || cmd == 'C' {
		actions = allActions(s.n, ActionContinue)
	} else {
		actions = make([]Action, s.n)
		actions[v] = ActionStep
	}
	return c.doResume(actions)
}

func (c *session) doResume(actions []Action) (string, bool) {
	ev, err := c.s.resume(actions)
	if err != nil {
		c.log.WithError(err).Error("gdb: resume")
		return errTarget, true
	}
	if ev != nil {
		c.hg = int64(ev.VCPU) + 1
		return c.stopReply(*ev), true
	}
	return "", false
}

// vPacket answers the v packets.
func (c *session) vPacket(pkt []byte) (string, bool) {
	switch {
	case string(pkt) == "vCont?":
		return "vCont;c;C;s;S", true
	case bytes.HasPrefix(pkt, []byte("vCont;")):
		actions, err := c.parseVCont(pkt[len("vCont;"):])
		if err != nil {
			c.log.WithError(err).Debug("gdb: vCont")
			return errParse, true
		}
		return c.doResume(actions)
	case bytes.HasPrefix(pkt, []byte("vKill")):
		c.send("OK")
		c.kill()
		return "", false
	}
	return "", true // includes vMustReplyEmpty
}

// parseVCont parses the actions of vCont;ACTION[:TID][;ACTION[:TID]]...
// For each thread the leftmost matching action applies (GDB manual,
// "vCont"); threads without one stay stopped.
func (c *session) parseVCont(b []byte) ([]Action, error) {
	n := c.s.n
	actions := make([]Action, n)
	set := make([]bool, n)
	any := false
	for _, part := range bytes.Split(b, []byte{';'}) {
		act, tidStr, hasTid := bytes.Cut(part, []byte{':'})
		if len(act) == 0 {
			return nil, fmt.Errorf("empty action")
		}
		var a Action
		switch act[0] {
		case 'c', 's':
			if len(act) != 1 {
				return nil, fmt.Errorf("bad action %q", truncate(act))
			}
		case 'C', 'S':
			if _, err := parseHex(act[1:]); err != nil || len(act) != 3 {
				return nil, fmt.Errorf("bad action %q", truncate(act))
			}
		default:
			return nil, fmt.Errorf("unsupported action %q", truncate(act))
		}
		a = ActionContinue
		if act[0] == 's' || act[0] == 'S' {
			a = ActionStep
		}
		lo, hi := 0, n // all threads
		if hasTid {
			tid, err := parseThread(tidStr)
			if err != nil {
				return nil, err
			}
			if tid != -1 {
				v, ok := c.vcpuOf(tid)
				if !ok {
					return nil, fmt.Errorf("unknown thread %d", tid)
				}
				lo, hi = v, v+1
			}
		}
		for v := lo; v < hi; v++ {
			if !set[v] {
				actions[v], set[v] = a, true
				any = true
			}
		}
	}
	if !any {
		return nil, fmt.Errorf("no thread resumed")
	}
	return actions, nil
}
