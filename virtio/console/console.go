package console

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"

	"github.com/sirupsen/logrus"

	"github.com/vmmgo/vmm/internal/guestlog"
	"github.com/vmmgo/vmm/virtio"
)

// Feature bits (§5.3.3).
const (
	FSize       = 1 << 0
	FMultiport  = 1 << 1
	FEmergWrite = 1 << 2
)

// Control events (§5.3.6.2).
const (
	EventDeviceReady  = 0
	EventDeviceAdd    = 1
	EventDeviceRemove = 2
	EventPortReady    = 3
	EventConsolePort  = 4
	EventResize       = 5
	EventPortOpen     = 6
	EventPortName     = 7
)

// QueueSize is the maximum size of every queue.
const QueueSize = 128

const (
	controlSize = 8        // struct virtio_console_control: le32 id, le16 event, le16 value
	maxPending  = 64 << 10 // host input buffered per port before backpressure
	maxNameLen  = 255
)

// Control is one control message.
type Control struct {
	ID    uint32
	Event uint16
	Value uint16
	Name  string // PORT_NAME only (device → driver)
}

// ErrControl reports a malformed control message.
var ErrControl = errors.New("malformed virtio-console control message")

// ParseControl decodes a driver → device control message (§5.3.6.2).
func ParseControl(b []byte) (Control, error) {
	if len(b) < controlSize {
		return Control{}, fmt.Errorf("%w: %d bytes", ErrControl, len(b))
	}
	c := Control{
		ID:    binary.LittleEndian.Uint32(b[0:]),
		Event: binary.LittleEndian.Uint16(b[4:]),
		Value: binary.LittleEndian.Uint16(b[6:]),
	}
	switch c.Event {
	case EventDeviceReady, EventPortReady, EventPortOpen:
	default:
		return c, fmt.Errorf("%w: event %d is not sent by drivers", ErrControl, c.Event)
	}
	if c.Value > 1 {
		return c, fmt.Errorf("%w: value %d", ErrControl, c.Value)
	}
	return c, nil
}

// Marshal encodes a device → driver control message.
func (c Control) Marshal() []byte {
	b := make([]byte, controlSize+len(c.Name))
	binary.LittleEndian.PutUint32(b[0:], c.ID)
	binary.LittleEndian.PutUint16(b[4:], c.Event)
	binary.LittleEndian.PutUint16(b[6:], c.Value)
	copy(b[controlSize:], c.Name)
	return b
}

// Port is a named port's configuration.
type Port struct {
	Name string
	// Host is the host side; nil makes a net.Pipe whose other end
	// HostConn returns.
	Host io.ReadWriteCloser
}

// Config configures the console.
type Config struct {
	In    io.Reader // console input (nil: none)
	Out   io.Writer // console output (nil: discarded)
	Ports []Port    // named ports 1..n (enables MULTIPORT)
	Log   *logrus.Entry
}

type port struct {
	id        uint32
	name      string
	console   bool
	host      io.ReadWriteCloser // named ports
	hostEnd   net.Conn           // the other end of our pipe, for HostConn
	out       chan []byte        // to the writer goroutine
	pending   []byte             // host input not yet delivered
	guestOpen bool
	ready     bool
}

type chunk struct {
	port int
	data []byte
}

// Device is a virtio console.
type Device struct {
	log   *logrus.Entry
	rl    guestlog.Limiter
	ports []*port
	in    chan chunk
	quit  chan struct{}  // closed by Close: readers stop handing over input
	wg    sync.WaitGroup // writer goroutines

	w      virtio.Worker
	mu     sync.Mutex // guards closed and the ports' guest-side state
	closed bool

	Stats virtio.Stats
}

// New creates the console. Reader goroutines start at once and live until
// Close (one reading cfg.In cannot be interrupted; it ends at EOF).
func New(cfg Config) (*Device, error) {
	log := guestlog.OrDiscard(cfg.Log)
	d := &Device{log: log.WithField("device", "virtio-console"), in: make(chan chunk, 16), quit: make(chan struct{})}
	out := cfg.Out
	if out == nil {
		out = io.Discard
	}
	d.ports = append(d.ports, &port{id: 0, console: true, out: make(chan []byte, 64)})
	d.startWriter(d.ports[0], out)
	if cfg.In != nil {
		go d.reader(0, cfg.In)
	}
	seen := map[string]bool{}
	for i, pc := range cfg.Ports {
		if pc.Name == "" || len(pc.Name) > maxNameLen || seen[pc.Name] {
			d.Close()
			return nil, fmt.Errorf("virtio-console: port %d: invalid or duplicate name %q", i+1, pc.Name)
		}
		seen[pc.Name] = true
		p := &port{id: uint32(i + 1), name: pc.Name, host: pc.Host, out: make(chan []byte, 64)}
		if p.host == nil {
			a, b := net.Pipe()
			p.host, p.hostEnd = a, b
		}
		d.ports = append(d.ports, p)
		d.startWriter(p, p.host)
		go d.reader(len(d.ports)-1, p.host)
	}
	return d, nil
}

// HostConn returns the host end of a named port created without Host.
func (d *Device) HostConn(name string) (net.Conn, bool) {
	for _, p := range d.ports {
		if p.name == name && p.hostEnd != nil {
			return p.hostEnd, true
		}
	}
	return nil, false
}

func (d *Device) startWriter(p *port, w io.Writer) {
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		for b := range p.out {
			if _, err := w.Write(b); err != nil {
				d.rl.Warn(d.log.WithField("port", p.id), err, "host side of port")
			}
		}
	}()
}

func (d *Device) reader(idx int, r io.Reader) {
	for {
		b := make([]byte, 4096)
		n, err := r.Read(b)
		if n > 0 {
			select {
			case d.in <- chunk{idx, b[:n]}:
			case <-d.quit:
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (d *Device) multiport() bool { return len(d.ports) > 1 }

// Type implements virtio.Device.
func (d *Device) Type() virtio.DeviceType { return virtio.TypeConsole }

// Features implements virtio.Device.
func (d *Device) Features() uint64 {
	f := virtio.CommonFeatures | FEmergWrite
	if d.multiport() {
		f |= FMultiport
	}
	return f
}

// QueueMaxSizes implements virtio.Device: port 0 rx/tx, then (multiport)
// control rx/tx and rx/tx of every further port (§5.3.2).
func (d *Device) QueueMaxSizes() []uint16 {
	n := 2
	if d.multiport() {
		n = 2 * (len(d.ports) + 1)
	}
	s := make([]uint16, n)
	for i := range s {
		s[i] = QueueSize
	}
	return s
}

// ReadConfig implements virtio.Device (struct virtio_console_config, §5.3.4).
func (d *Device) ReadConfig(off uint64, p []byte) {
	clear(p)
	var c [12]byte
	binary.LittleEndian.PutUint32(c[4:], uint32(len(d.ports)))
	if off < uint64(len(c)) {
		copy(p, c[off:])
	}
}

// WriteConfig implements virtio.Device: emerg_wr (offset 8) writes one
// character to the console (§5.3.4, VIRTIO_CONSOLE_F_EMERG_WRITE).
func (d *Device) WriteConfig(off uint64, p []byte) {
	if off == 8 && len(p) > 0 {
		select {
		case d.ports[0].out <- []byte{p[0]}:
		default: // emergency path: never block a vCPU
		}
	}
}

func rxQueue(id uint32) int {
	if id == 0 {
		return 0
	}
	return 2 * (int(id) + 1)
}

// Activate implements virtio.Device.
func (d *Device) Activate(a virtio.Activation) error {
	if len(a.Queues) < 2 || a.Queues[0] == nil || a.Queues[1] == nil {
		return errors.New("virtio-console: port 0 queues not enabled")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.w.Running() || d.closed {
		return errors.New("virtio-console: already active or closed")
	}
	for _, p := range d.ports {
		p.guestOpen, p.ready = p.console, false
	}
	w := &worker{d: d, a: a, multi: a.Features&FMultiport != 0 && len(a.Queues) > 3}
	d.w.Start(a, &d.Stats, w.run)
	return nil
}

// Notify implements virtio.Device.
func (d *Device) Notify(q int) { d.w.Kick(q) }

// Reset implements virtio.Device.
func (d *Device) Reset() { d.w.Stop() }

// Close implements virtio.Device: stops the device and closes host ends.
func (d *Device) Close() error {
	d.Reset()
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	close(d.quit)
	d.mu.Unlock()
	var errs []error
	for _, p := range d.ports {
		close(p.out)
	}
	d.wg.Wait()
	for _, p := range d.ports {
		if p.host != nil {
			if err := p.host.Close(); err != nil {
				errs = append(errs, err)
			}
		}
		if p.hostEnd != nil {
			p.hostEnd.Close()
		}
	}
	return errors.Join(errs...)
}

// worker owns the queues of one activation.
type worker struct {
	d      *Device
	a      virtio.Activation
	multi  bool
	ctrl   [][]byte // control messages waiting for control-rx buffers
	used   uint64   // queues that got used entries this round
	stop   <-chan struct{}
	chain  virtio.Chain
	broken bool
}

func (w *worker) run(k *virtio.Kicker, stop <-chan struct{}) {
	w.stop = stop
	d := w.d
	for !w.broken {
		w.service()
		var in chan chunk
		if w.canAccept() {
			in = d.in
		}
		select {
		case <-stop:
			return
		case <-k.C:
			k.Take()
		case c := <-in:
			d.ports[c.port].pending = append(d.ports[c.port].pending, c.data...)
		}
	}
	<-stop
}

func (w *worker) canAccept() bool {
	for _, p := range w.d.ports {
		if len(p.pending) > maxPending {
			return false
		}
	}
	return true
}

func (w *worker) queue(i int) *virtio.Queue {
	if i < len(w.a.Queues) {
		return w.a.Queues[i]
	}
	return nil
}

// service runs every queue once: guest output, control messages, then
// host input and pending control messages into the receive queues.
func (w *worker) service() {
	d := w.d
	if w.multi {
		w.drainControl()
	}
	for _, p := range d.ports {
		if p.id != 0 && !w.multi {
			break
		}
		w.drainTx(p)
	}
	if w.multi {
		w.fillControl()
	}
	for _, p := range d.ports {
		if p.id != 0 && !w.multi {
			break
		}
		if len(p.pending) > 0 && (p.console || p.guestOpen) {
			w.fillRx(p)
		}
	}
	for i := range w.a.Queues {
		if w.used&(1<<uint(i)) != 0 {
			if q := w.queue(i); q != nil && q.ShouldNotify() {
				d.Stats.Notifies.Add(1)
				w.a.Interrupt.Used(i)
			}
		}
	}
	w.used = 0
}

// pop takes the next chain, re-arming notifications when the ring is empty.
func (w *worker) pop(q *virtio.Queue) bool {
	ok, broken := virtio.PopNext(q, &w.chain, w.a, &w.d.Stats, &w.d.rl, w.d.log)
	if broken {
		w.broken = true
	}
	return ok
}

func (w *worker) push(qi int, q *virtio.Queue, n uint32) {
	if err := q.PushUsed(w.chain.Head, n); err != nil {
		w.broken = true
		w.a.Interrupt.NeedsReset()
		return
	}
	w.used |= 1 << uint(qi)
	w.d.Stats.Requests.Add(1)
}

// readChain copies the chain's readable bytes (bounded) or reports why not.
func (w *worker) readChain() ([]byte, bool) {
	c := &w.chain
	if c.Err != nil {
		w.d.Stats.Private.Add(1)
		w.d.rl.Warn(w.d.log, c.Err, "buffer on a private page")
		return nil, false
	}
	b := make([]byte, c.ReadableLen)
	if _, err := c.ReadAt(w.a.Mem, b, 0); err != nil {
		w.d.Stats.Errors.Add(1)
		return nil, false
	}
	return b, true
}

func (w *worker) drainTx(p *port) {
	qi := rxQueue(p.id) + 1
	q := w.queue(qi)
	if q == nil {
		return
	}
	for w.pop(q) {
		b, ok := w.readChain()
		w.push(qi, q, 0)
		if !ok || len(b) == 0 {
			continue
		}
		w.d.Stats.Bytes.Add(uint64(len(b)))
		// Whatever the driver put on a transmitq is the port's output,
		// whether or not its PORT_OPEN 0 has been read yet: a guest
		// program that writes and closes at once has both pending in
		// one round, control first, and its last write must not be
		// lost (guestOpen gates only what the device sends to it).
		select {
		case p.out <- b:
		case <-w.stop:
			return
		}
	}
}

func (w *worker) drainControl() {
	q := w.queue(3)
	if q == nil {
		return
	}
	for w.pop(q) {
		b, ok := w.readChain()
		w.push(3, q, 0)
		if !ok {
			continue
		}
		c, err := ParseControl(b)
		if err != nil {
			w.d.Stats.Malformed.Add(1)
			w.d.rl.Warn(w.d.log, err, "control message")
			continue
		}
		w.handleControl(c)
	}
}

func (w *worker) send(c Control) { w.ctrl = append(w.ctrl, c.Marshal()) }

func (w *worker) handleControl(c Control) {
	d := w.d
	if c.Event == EventDeviceReady {
		if c.Value != 1 {
			d.rl.Warn(d.log, fmt.Errorf("value %d", c.Value), "driver failed to initialise")
			return
		}
		for _, p := range d.ports {
			w.send(Control{ID: p.id, Event: EventDeviceAdd})
		}
		return
	}
	if int(c.ID) >= len(d.ports) {
		d.Stats.Malformed.Add(1)
		d.rl.Warn(d.log, fmt.Errorf("port %d", c.ID), "control message for an unknown port")
		return
	}
	p := d.ports[c.ID]
	switch c.Event {
	case EventPortReady:
		if c.Value != 1 || p.ready {
			return
		}
		p.ready = true
		if p.console {
			w.send(Control{ID: p.id, Event: EventConsolePort, Value: 1})
		}
		if p.name != "" {
			w.send(Control{ID: p.id, Event: EventPortName, Name: p.name})
		}
		w.send(Control{ID: p.id, Event: EventPortOpen, Value: 1}) // host side connected
	case EventPortOpen:
		p.guestOpen = c.Value == 1 || p.console
	}
}

func (w *worker) fillControl() {
	q := w.queue(2)
	if q == nil {
		return
	}
	for len(w.ctrl) > 0 && w.pop(q) {
		m := w.ctrl[0]
		c := &w.chain
		if c.Err != nil || c.WritableLen < uint32(len(m)) {
			if c.Err != nil {
				w.d.Stats.Private.Add(1)
			} else {
				w.d.Stats.Malformed.Add(1)
			}
			w.push(2, q, 0)
			continue
		}
		if _, err := c.WriteAt(w.a.Mem, m, 0); err != nil {
			w.push(2, q, 0)
			continue
		}
		w.ctrl = w.ctrl[1:]
		w.push(2, q, uint32(len(m)))
	}
}

func (w *worker) fillRx(p *port) {
	qi := rxQueue(p.id)
	q := w.queue(qi)
	if q == nil {
		return
	}
	for len(p.pending) > 0 && w.pop(q) {
		c := &w.chain
		if c.Err != nil {
			w.d.Stats.Private.Add(1)
			w.d.rl.Warn(w.d.log, c.Err, "receive buffer on a private page")
			w.push(qi, q, 0)
			continue
		}
		n := min(uint32(len(p.pending)), c.WritableLen)
		if _, err := c.WriteAt(w.a.Mem, p.pending[:n], 0); err != nil {
			w.d.Stats.Errors.Add(1)
			w.push(qi, q, 0)
			continue
		}
		p.pending = p.pending[n:]
		if len(p.pending) == 0 {
			p.pending = nil
		}
		w.d.Stats.Bytes.Add(uint64(n))
		w.push(qi, q, n)
	}
}
