package debugport

import (
	"io"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/vmmgo/vmm/internal/guestlog"
)

// Standard ports.
const (
	ConsolePort = 0xE9
	POSTPort    = 0x80
	// MaxLine is the longest line Console buffers before writing it out.
	MaxLine = 4096
	// ReadbackValue is what a read of the debug console returns.
	ReadbackValue = 0xE9
)

// Console is the port 0xE9 debug console. Create it with NewConsole.
type Console struct {
	mu     sync.Mutex
	w      io.Writer
	line   []byte
	bytes  uint64
	errors uint64
	glog   *guestlog.Logger
}

// NewConsole returns a debug console writing complete lines to w (nil:
// discarded).
func NewConsole(w io.Writer, log *logrus.Entry) *Console {
	return &Console{w: w, line: make([]byte, 0, 128), glog: guestlog.New(log, "debugcon")}
}

// BusRead returns ReadbackValue in every byte.
func (c *Console) BusRead(vcpu int, off uint64, data []byte) {
	for i := range data {
		data[i] = ReadbackValue
	}
}

// BusWrite appends the bytes written (all of them, for a wide access) to
// the current line.
func (c *Console) BusWrite(vcpu int, off uint64, data []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, b := range data {
		c.bytes++
		c.line = append(c.line, b)
		if b == '\n' || len(c.line) >= MaxLine {
			c.flush()
		}
	}
}

func (c *Console) flush() {
	if len(c.line) == 0 {
		return
	}
	if c.w != nil {
		if _, err := c.w.Write(c.line); err != nil {
			c.errors++
			c.glog.Warnf("debug console write: %v", err)
		}
	}
	c.line = c.line[:0]
}

// Flush writes out a pending partial line (call it when the VM stops).
func (c *Console) Flush() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.flush()
}

// Bytes returns how many bytes the guest wrote; Errors how many line writes
// failed.
func (c *Console) Bytes() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bytes
}

// Errors returns how many line writes to the io.Writer failed.
func (c *Console) Errors() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.errors
}

// POST is the port 0x80 POST-code register and boot timer. Create it with
// NewPOST.
type POST struct {
	mu     sync.Mutex
	now    func() time.Time
	last   uint8
	writes uint64
	first  time.Time
	firstN [256]time.Time
	log    *logrus.Entry
}

// NewPOST returns the POST-code port. now is the host clock (nil:
// time.Now); log, when set, gets a debug line for each code.
func NewPOST(now func() time.Time, log *logrus.Entry) *POST {
	if now == nil {
		now = time.Now
	}
	return &POST{now: now, log: log}
}

// BusRead returns all ones.
func (p *POST) BusRead(vcpu int, off uint64, data []byte) {
	for i := range data {
		data[i] = 0xFF
	}
}

// BusWrite records the first byte written (a POST code is one byte; wider
// writes to port 0x80 put their low byte there).
func (p *POST) BusWrite(vcpu int, off uint64, data []byte) {
	if len(data) == 0 || off != 0 {
		return
	}
	now := p.now()
	v := data[0]
	p.mu.Lock()
	p.last = v
	p.writes++
	if p.first.IsZero() {
		p.first = now
	}
	if p.firstN[v].IsZero() {
		p.firstN[v] = now
	}
	p.mu.Unlock()
	if p.log != nil && p.log.Logger.IsLevelEnabled(logrus.DebugLevel) {
		p.log.WithFields(logrus.Fields{"device": "post", "vcpu": vcpu}).Debugf("POST code %#02x", v)
	}
}

// FirstWrite returns the host time of the first write, and whether there
// was one.
func (p *POST) FirstWrite() (time.Time, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.first, !p.first.IsZero()
}

// FirstWriteOf returns the host time of the first write of code.
func (p *POST) FirstWriteOf(code uint8) (time.Time, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	t := p.firstN[code]
	return t, !t.IsZero()
}

// Last returns the last code written, and whether any was.
func (p *POST) Last() (uint8, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.last, p.writes > 0
}

// Writes returns the number of writes.
func (p *POST) Writes() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.writes
}
