package vsock

import (
	"fmt"
	"net"
	"strconv"
	"sync"

	"github.com/vmmgo/vmm/virtio"
)

type evKind int

const (
	evHostConnect evKind = iota
	evDialed
	evData
	evEOF
	evWritten
	evWriteErr
)

type event struct {
	kind evKind
	c    *conn
	uc   net.Conn
	port uint32
	data []byte
	n    int
	err  error
}

type key struct{ local, peer uint32 }

type connState int

const (
	stConnecting connState = iota // host-initiated: REQUEST sent, waiting RESPONSE
	stDialing                     // guest-initiated: dialing <Path>_<port>
	stEstablished
)

// conn is one stream. Fields without a comment are owned by the worker.
type conn struct {
	k     key
	state connState
	uc    net.Conn
	done  chan struct{} // closed at teardown: reader/writer stop

	peerBufAlloc, peerFwdCnt uint32 // guest's receive space (§5.10.6.3)
	txCnt                    uint32 // bytes sent to the guest
	rxCnt                    uint32 // bytes received from the guest
	fwdCnt                   uint32 // bytes written to the host socket
	lastFwdSent              uint32 // fwd_cnt last advertised
	askedCredit              bool
	pending                  []byte        // host data not yet sent
	resume                   chan struct{} // lets the reader read again
	hostEOF                  bool

	wmu    sync.Mutex // writer queue, shared with the writer goroutine
	wbuf   []byte
	finish bool // writer: close the socket once wbuf is flushed
	wsig   chan struct{}
}

type worker struct {
	d        *Device
	a        virtio.Activation
	conns    map[key]*conn
	ctrl     []Header // control packets waiting for rx buffers
	nextPort uint32
	used     [3]bool
	chain    virtio.Chain
	hdr      [HeaderSize]byte
	payload  []byte
	broken   bool
	stop     <-chan struct{}
}

func (w *worker) run(k *virtio.Kicker, stop <-chan struct{}) {
	w.stop = stop
	w.payload = make([]byte, MaxPayload)
	defer w.closeAll()
	for {
		if !w.broken {
			w.service()
		}
		select {
		case <-stop:
			return
		case <-k.C:
			k.Take()
		case ev := <-w.d.events:
			w.handleEvent(ev)
		}
	}
}

func (w *worker) closeAll() {
	for _, c := range w.conns {
		w.teardown(c, false, false)
	}
	for { // connections handed over but never seen
		select {
		case ev := <-w.d.events:
			if ev.kind == evHostConnect && ev.uc != nil {
				ev.uc.Close()
			}
		default:
			return
		}
	}
}

func (w *worker) service() {
	w.drainTx()
	w.fillRx()
	w.fillEvent()
	for i, u := range w.used {
		if u {
			if q := w.a.Queues[i]; q != nil && q.ShouldNotify() {
				w.d.Stats.Notifies.Add(1)
				w.a.Interrupt.Used(i)
			}
		}
		w.used[i] = false
	}
}

// pop takes the next chain, re-arming notifications when the ring is empty.
func (w *worker) pop(q *virtio.Queue) bool {
	ok, broken := virtio.PopNext(q, &w.chain, w.a, &w.d.Stats, &w.d.rl, w.d.log)
	if broken {
		w.broken = true
	}
	return ok
}

func (w *worker) push(qi int, n uint32) {
	if err := w.a.Queues[qi].PushUsed(w.chain.Head, n); err != nil {
		w.broken = true
		w.a.Interrupt.NeedsReset()
		return
	}
	w.used[qi] = true
}

// drainTx handles every packet the guest sent (§5.10.6.6).
func (w *worker) drainTx() {
	q := w.a.Queues[1]
	for !w.broken && w.pop(q) {
		c := &w.chain
		if c.Err != nil {
			w.d.Stats.Private.Add(1)
			w.d.rl.Warn(w.d.log, c.Err, "tx packet on a private page")
			w.push(1, 0)
			continue
		}
		if c.ReadableLen < HeaderSize {
			w.d.Stats.Malformed.Add(1)
			w.push(1, 0)
			continue
		}
		if _, err := c.ReadAt(w.a.Mem, w.hdr[:], 0); err != nil {
			w.push(1, 0)
			continue
		}
		h, err := ParseHeader(w.hdr[:], c.ReadableLen-HeaderSize, w.d.cfg.GuestCID)
		if err != nil {
			w.d.Stats.Malformed.Add(1)
			w.d.rl.Warn(w.d.log, err, "tx packet")
			w.push(1, 0)
			if h.Op != OpRST && h.SrcCID == w.d.cfg.GuestCID && h.DstCID == HostCID {
				w.rstFor(h)
			}
			continue
		}
		var data []byte
		if h.Op == OpRW && h.Len > 0 {
			data = w.payload[:h.Len]
			if _, err := c.ReadAt(w.a.Mem, data, HeaderSize); err != nil {
				w.push(1, 0)
				continue
			}
		}
		w.push(1, 0)
		w.d.Stats.Requests.Add(1)
		w.handlePacket(h, data)
	}
}

// rstFor queues a RST answering packet h.
func (w *worker) rstFor(h Header) {
	w.ctrl = append(w.ctrl, Header{SrcCID: HostCID, DstCID: w.d.cfg.GuestCID, SrcPort: h.DstPort, DstPort: h.SrcPort,
		Type: TypeStream, Op: OpRST})
}

func (w *worker) reply(c *conn, op uint16, flags uint32) {
	w.ctrl = append(w.ctrl, Header{SrcCID: HostCID, DstCID: w.d.cfg.GuestCID, SrcPort: c.k.local, DstPort: c.k.peer,
		Type: TypeStream, Op: op, Flags: flags})
}

func (w *worker) handlePacket(h Header, data []byte) {
	if h.Type != TypeStream {
		w.rstFor(h)
		return
	}
	k := key{local: h.DstPort, peer: h.SrcPort}
	c := w.conns[k]
	if c != nil {
		c.peerBufAlloc, c.peerFwdCnt = h.BufAlloc, h.FwdCnt
	}
	switch h.Op {
	case OpRequest:
		if c != nil {
			w.rstFor(h)
			return
		}
		c = &conn{k: k, state: stDialing, peerBufAlloc: h.BufAlloc, peerFwdCnt: h.FwdCnt, done: make(chan struct{})}
		w.conns[k] = c
		path := w.d.cfg.Path + "_" + strconv.FormatUint(uint64(h.DstPort), 10)
		go func() {
			uc, err := net.DialTimeout("unix", path, dialWait)
			select {
			case w.d.events <- event{kind: evDialed, c: c, uc: uc, err: err}:
			case <-c.done:
				if uc != nil {
					uc.Close()
				}
			}
		}()
		return
	case OpRST:
		if c != nil {
			w.teardown(c, true, false)
		}
		return
	}
	if c == nil {
		w.rstFor(h)
		return
	}
	switch h.Op {
	case OpResponse:
		if c.state != stConnecting {
			w.teardown(c, false, true)
			return
		}
		c.state = stEstablished
		c.enqueueWrite([]byte(fmt.Sprintf("OK %d\n", c.k.local)))
		w.startIO(c)
	case OpRW:
		if c.state != stEstablished {
			w.teardown(c, false, true)
			return
		}
		c.rxCnt += uint32(len(data))
		if c.queued() > bufAlloc {
			// The guest ignored our credit (§5.10.6.3.1): reset the stream.
			w.d.Stats.Malformed.Add(1)
			w.teardown(c, false, true)
			return
		}
		w.d.Stats.Bytes.Add(uint64(len(data)))
		c.enqueueWrite(append([]byte(nil), data...))
	case OpShutdown:
		if h.Flags == ShutdownRcv|ShutdownSend {
			// Guest closed: flush what it sent, then confirm with RST.
			w.teardown(c, true, true)
		}
	case OpCreditRequest:
		w.reply(c, OpCreditUpdate, 0)
	case OpCreditUpdate:
		c.askedCredit = false
	}
}

func (c *conn) queued() int {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return len(c.wbuf)
}

func (c *conn) enqueueWrite(b []byte) {
	c.wmu.Lock()
	c.wbuf = append(c.wbuf, b...)
	c.wmu.Unlock()
	select {
	case c.wsig <- struct{}{}:
	default:
	}
}

// teardown ends a stream. graceful lets the writer flush queued guest data
// before closing the socket; rst tells the guest.
func (w *worker) teardown(c *conn, graceful, rst bool) {
	if w.conns[c.k] != c {
		return
	}
	delete(w.conns, c.k)
	if rst {
		w.reply(c, OpRST, 0)
	}
	c.wmu.Lock()
	c.finish = true // before done: the writer must see it once done is closed
	c.wmu.Unlock()
	close(c.done)
	if c.uc == nil {
		return
	}
	// A graceful end lets the writer goroutine flush and close; a stream
	// the guest refused before it was established (RST answering our
	// REQUEST) has no writer yet, so its socket is closed here.
	if !graceful || c.wsig == nil || c.resume == nil {
		c.uc.Close()
	} else {
		select {
		case c.wsig <- struct{}{}:
		default:
		}
	}
}

func (w *worker) startIO(c *conn) {
	c.resume = make(chan struct{}, 1)
	if c.wsig == nil {
		c.wsig = make(chan struct{}, 1)
	}
	go w.reader(c)
	go w.writer(c)
}

func (w *worker) send(c *conn, ev event) bool {
	ev.c = c
	select {
	case w.d.events <- ev:
		return true
	case <-c.done:
		return false
	}
}

func (w *worker) reader(c *conn) {
	defer w.a.Recover(&w.d.Stats, "connection reader")
	for {
		b := make([]byte, MaxPayload)
		n, err := c.uc.Read(b)
		if n > 0 {
			if !w.send(c, event{kind: evData, data: b[:n]}) {
				return
			}
			select {
			case <-c.resume:
			case <-c.done:
				return
			}
		}
		if err != nil {
			w.send(c, event{kind: evEOF, err: err})
			return
		}
	}
}

func (w *worker) writer(c *conn) {
	defer w.a.Recover(&w.d.Stats, "connection writer")
	for {
		select {
		case <-c.wsig:
		case <-c.done:
		}
		c.wmu.Lock()
		b := c.wbuf
		c.wbuf = nil
		finish := c.finish
		c.wmu.Unlock()
		if len(b) > 0 {
			if _, err := c.uc.Write(b); err != nil {
				c.uc.Close()
				w.send(c, event{kind: evWriteErr, err: err})
				return
			}
			w.send(c, event{kind: evWritten, n: len(b)})
		}
		if finish {
			c.wmu.Lock()
			empty := len(c.wbuf) == 0
			c.wmu.Unlock()
			if empty {
				c.uc.Close()
				return
			}
		}
	}
}

func (w *worker) handleEvent(ev event) {
	switch ev.kind {
	case evHostConnect:
		port := w.allocPort(ev.port)
		c := &conn{k: key{local: port, peer: ev.port}, state: stConnecting, uc: ev.uc, done: make(chan struct{}),
			wsig: make(chan struct{}, 1)}
		w.conns[c.k] = c
		w.reply(c, OpRequest, 0)
		return
	}
	c := ev.c
	if c == nil || w.conns[c.k] != c {
		if ev.kind == evDialed && ev.uc != nil {
			ev.uc.Close()
		}
		return
	}
	switch ev.kind {
	case evDialed:
		if ev.err != nil {
			w.d.rl.Warn(w.d.log, ev.err, "guest connection to host port")
			w.teardown(c, false, true)
			return
		}
		c.uc = ev.uc
		c.state = stEstablished
		w.reply(c, OpResponse, 0)
		w.startIO(c)
	case evData:
		c.pending = ev.data
	case evEOF:
		c.hostEOF = true
		w.reply(c, OpShutdown, ShutdownRcv|ShutdownSend)
	case evWritten:
		c.fwdCnt += uint32(ev.n)
		if c.fwdCnt-c.lastFwdSent >= creditThreshold {
			w.reply(c, OpCreditUpdate, 0)
		}
	case evWriteErr:
		w.teardown(c, false, true)
	}
}

func (w *worker) allocPort(guestPort uint32) uint32 {
	for {
		p := w.nextPort
		w.nextPort++
		if w.nextPort == 0 {
			w.nextPort = firstHostPort
		}
		if _, busy := w.conns[key{local: p, peer: guestPort}]; !busy {
			return p
		}
	}
}

// fillRx sends control packets, then stream data within the guest's credit.
func (w *worker) fillRx() {
	q := w.a.Queues[0]
	for !w.broken {
		var h Header
		var data []byte
		var c *conn
		if len(w.ctrl) == 0 {
			c = w.nextData() // may queue a CREDIT_REQUEST
		}
		isCtrl := c == nil
		if isCtrl {
			if len(w.ctrl) == 0 {
				return
			}
			h = w.ctrl[0]
			c = w.conns[key{local: h.SrcPort, peer: h.DstPort}] // nil after teardown
		}
		if !w.pop(q) {
			return
		}
		ch := &w.chain
		if ch.Err != nil || ch.WritableLen < HeaderSize {
			if ch.Err != nil {
				w.d.Stats.Private.Add(1)
				w.d.rl.Warn(w.d.log, ch.Err, "rx buffer on a private page")
			} else {
				w.d.Stats.Malformed.Add(1)
			}
			w.push(0, 0)
			continue
		}
		if isCtrl {
			w.ctrl = w.ctrl[1:]
		} else {
			n := min(uint32(len(c.pending)), ch.WritableLen-HeaderSize, c.credit())
			data = c.pending[:n]
			h = Header{SrcCID: HostCID, DstCID: w.d.cfg.GuestCID, SrcPort: c.k.local, DstPort: c.k.peer,
				Type: TypeStream, Op: OpRW, Len: n}
		}
		h.BufAlloc = bufAlloc
		if c != nil {
			h.FwdCnt = c.fwdCnt
			c.lastFwdSent = c.fwdCnt
		}
		h.Marshal(w.hdr[:])
		if _, err := ch.WriteAt(w.a.Mem, w.hdr[:], 0); err != nil {
			w.push(0, 0)
			continue
		}
		if len(data) > 0 {
			if _, err := ch.WriteAt(w.a.Mem, data, HeaderSize); err != nil {
				w.push(0, 0)
				continue
			}
			c.txCnt += uint32(len(data))
			c.pending = c.pending[len(data):]
			w.d.Stats.Bytes.Add(uint64(len(data)))
			if len(c.pending) == 0 {
				c.pending = nil
				select {
				case c.resume <- struct{}{}:
				default:
				}
			}
		}
		w.push(0, uint32(HeaderSize+len(data)))
	}
}

// credit is how many more bytes the guest can take (§5.10.6.3).
func (c *conn) credit() uint32 {
	used := c.txCnt - c.peerFwdCnt
	if used >= c.peerBufAlloc {
		return 0
	}
	return c.peerBufAlloc - used
}

// nextData picks a connection with data and credit; a connection out of
// credit asks the guest for an update once.
func (w *worker) nextData() *conn {
	for _, c := range w.conns {
		if len(c.pending) == 0 || c.state != stEstablished {
			continue
		}
		if c.credit() > 0 {
			return c
		}
		if !c.askedCredit {
			c.askedCredit = true
			w.reply(c, OpCreditRequest, 0)
		}
	}
	return nil
}

// fillEvent delivers a pending TRANSPORT_RESET (§5.10.6.8).
func (w *worker) fillEvent() {
	q := w.a.Queues[2]
	if q == nil {
		return
	}
	w.d.mu.Lock()
	owed := w.d.reset
	w.d.mu.Unlock()
	if !owed || !w.pop(q) {
		return
	}
	if w.chain.Err != nil || w.chain.WritableLen < 4 {
		w.push(2, 0)
		return
	}
	var ev [4]byte // le32 id = VIRTIO_VSOCK_EVENT_TRANSPORT_RESET
	if _, err := w.chain.WriteAt(w.a.Mem, ev[:], 0); err != nil {
		w.push(2, 0)
		return
	}
	w.d.mu.Lock()
	w.d.reset = false
	w.d.mu.Unlock()
	w.push(2, 4)
}
