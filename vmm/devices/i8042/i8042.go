package i8042

import (
	"sync"

	"github.com/sirupsen/logrus"
	"github.com/vmmgo/vmm/internal/guestlog"
)

// Standard resources.
const (
	DataPortAddr    = 0x60
	CommandPortAddr = 0x64
	KeyboardIRQ     = 1
)

// Status register bits (port 0x64 read; names from Linux's i8042.h).
const (
	strOBF     = 0x01 // output buffer full
	strIBF     = 0x02 // input buffer full: never set, writes complete at once
	strSYS     = 0x04 // system flag (mirrors CTR bit 2)
	strCMDDAT  = 0x08 // last write was to the command port
	strKEYLOCK = 0x10 // 1 = keyboard not inhibited
	strAUXDATA = 0x20 // output buffer holds AUX data
)

// Controller command byte (CTR) bits.
const (
	ctrKBDINT = 0x01
	ctrAUXINT = 0x02
	ctrSYS    = 0x04
	ctrKBDDIS = 0x10
	ctrAUXDIS = 0x20
	ctrXLATE  = 0x40
	// initialCTR is what a PC BIOS leaves: keyboard interrupt on, system
	// flag set, AUX disabled, scancode translation on.
	initialCTR = ctrKBDINT | ctrSYS | ctrAUXDIS | ctrXLATE
)

// Controller commands (port 0x64 write).
const (
	cmdReadCTR    = 0x20 // 0x20-0x3F: read internal RAM (0x20 = CTR)
	cmdWriteCTR   = 0x60 // 0x60-0x7F: write internal RAM (0x60 = CTR)
	cmdAUXDisable = 0xA7
	cmdAUXEnable  = 0xA8
	cmdAUXTest    = 0xA9
	cmdSelfTest   = 0xAA
	cmdKbdTest    = 0xAB
	cmdKbdDisable = 0xAD
	cmdKbdEnable  = 0xAE
	cmdReadInput  = 0xC0
	cmdReadOutput = 0xD0
	cmdWriteOut   = 0xD1
	cmdWriteKbdOB = 0xD2
	cmdAUXLoop    = 0xD3
	cmdAUXSend    = 0xD4
	cmdA20Off     = 0xDD
	cmdA20On      = 0xDF
	cmdReadTest   = 0xE0
	cmdPulseReset = 0xFE // any of 0xF0-0xFF with bit 0 clear pulses reset
)

// Replies.
const (
	retSelfTestOK = 0x55
	retIfaceOK    = 0x00
	// retAUXClockLow is the AUX interface test result "clock line stuck
	// low": there is no AUX connector.
	retAUXClockLow = 0x01
	kbdACK         = 0xFA
	kbdResend      = 0xFE
	kbdBATOK       = 0xAA
	kbdEcho        = 0xEE
)

// Output port bits (0xD0/0xD1).
const (
	outResetLine = 0x01 // 0 = CPU held in reset
	outA20       = 0x02
)

// queueSize bounds the controller's output queue (the keyboard's own buffer
// behind the one-byte output register); Linux's I8042_BUFFER_SIZE is 16.
const queueSize = 16

// Options configure a Controller.
type Options struct {
	// Reset is called when the guest pulses the CPU reset line (command
	// 0xFE, or 0xD1 with bit 0 clear). Called without the lock held.
	Reset func()
	// IRQ1 drives the keyboard interrupt line, only on change.
	IRQ1 func(level bool)
	// Log receives rate-limited reports of unsupported commands.
	Log *logrus.Entry
}

// Stats are the controller's counters.
type Stats struct {
	Commands        uint64 // controller commands written to 0x64
	KeyboardBytes   uint64 // bytes sent to the keyboard
	Resets          uint64 // reset pulses
	Unsupported     uint64 // unsupported commands and bytes
	BadAccesses     uint64 // accesses at an offset other than 0
	QueueOverflows  uint64 // output bytes dropped because the queue was full
	OutputBytesRead uint64 // bytes the guest read from 0x60
}

type outByte struct {
	b   uint8
	aux bool
}

// Controller is the 8042 with its keyboard. Create it with New.
type Controller struct {
	mu sync.Mutex

	ram     [32]uint8 // internal RAM; ram[0] is the CTR
	outport uint8
	pending uint8 // controller command waiting for its data byte, 0 if none
	lastCmd bool  // status bit 3
	queue   []outByte
	lastOut uint8 // what a read of an empty output buffer returns

	kbd keyboard

	irq1  func(bool)
	level bool
	reset func()

	stats Stats
	glog  *guestlog.Logger
}

// New returns a controller in the state a PC BIOS leaves it.
func New(opt Options) *Controller {
	c := &Controller{
		outport: outResetLine | outA20,
		irq1:    opt.IRQ1,
		reset:   opt.Reset,
		glog:    guestlog.New(opt.Log, "i8042"),
		queue:   make([]outByte, 0, queueSize),
	}
	c.ram[0] = initialCTR
	c.kbd.init()
	return c
}

// Port is one of the controller's two I/O ports, a bus device of size 1.
type Port struct {
	c       *Controller
	command bool
}

// DataPort returns the bus device for port 0x60.
func (c *Controller) DataPort() *Port { return &Port{c: c} }

// CommandPort returns the bus device for port 0x64 (status on read).
func (c *Controller) CommandPort() *Port { return &Port{c: c, command: true} }

// BusRead reads the data register or the status register. Wider accesses
// repeat the byte access; offsets other than 0 read all ones.
func (p *Port) BusRead(vcpu int, off uint64, data []byte) {
	c := p.c
	c.mu.Lock()
	for i := range data {
		switch {
		case off != 0 || i != 0:
			c.stats.BadAccesses++
			c.glog.Warnf("read of %d bytes at offset %#x", len(data), off)
			data[i] = 0xFF
		case p.command:
			data[i] = c.status()
		default:
			data[i] = c.readData()
		}
	}
	c.updateIRQ()
	c.mu.Unlock()
}

// BusWrite writes a command (port 0x64) or a data byte (port 0x60). Only
// the first byte of a wider access is used.
func (p *Port) BusWrite(vcpu int, off uint64, data []byte) {
	c := p.c
	c.mu.Lock()
	if off != 0 || len(data) != 1 {
		c.stats.BadAccesses++
		c.glog.Warnf("write of %d bytes at offset %#x", len(data), off)
	}
	var reset bool
	if off == 0 && len(data) > 0 {
		if p.command {
			reset = c.command(data[0])
		} else {
			reset = c.writeData(data[0])
		}
	}
	c.updateIRQ()
	fn := c.reset
	c.mu.Unlock()
	if reset && fn != nil {
		fn()
	}
}

func (c *Controller) ctr() uint8 { return c.ram[0] }

func (c *Controller) status() uint8 {
	s := uint8(strKEYLOCK)
	if c.ctr()&ctrSYS != 0 {
		s |= strSYS
	}
	if c.lastCmd {
		s |= strCMDDAT
	}
	if len(c.queue) > 0 {
		s |= strOBF
		if c.queue[0].aux {
			s |= strAUXDATA
		}
	}
	return s
}

func (c *Controller) readData() uint8 {
	if len(c.queue) == 0 {
		return c.lastOut // the output register keeps its last byte
	}
	v := c.queue[0].b
	copy(c.queue, c.queue[1:])
	c.queue = c.queue[:len(c.queue)-1]
	c.lastOut = v
	c.stats.OutputBytesRead++
	return v
}

// put queues a byte for the output buffer.
func (c *Controller) put(v uint8) {
	if len(c.queue) == queueSize {
		c.stats.QueueOverflows++
		c.glog.Warnf("output queue full, dropping %#x", v)
		return
	}
	c.queue = append(c.queue, outByte{b: v})
}

func (c *Controller) updateIRQ() {
	level := len(c.queue) > 0 && !c.queue[0].aux && c.ctr()&ctrKBDINT != 0
	if level == c.level {
		return
	}
	c.level = level
	if c.irq1 != nil {
		c.irq1(level)
	}
}

// command executes a controller command; it reports whether the guest
// pulsed the reset line.
func (c *Controller) command(cmd uint8) bool {
	c.lastCmd = true
	c.pending = 0
	c.stats.Commands++
	switch {
	case cmd >= cmdReadCTR && cmd < cmdReadCTR+32:
		c.put(c.ram[cmd-cmdReadCTR])
	case cmd >= cmdWriteCTR && cmd < cmdWriteCTR+32:
		c.pending = cmd
	case cmd == cmdAUXDisable:
		c.ram[0] |= ctrAUXDIS
	case cmd == cmdAUXEnable:
		c.ram[0] &^= ctrAUXDIS
	case cmd == cmdAUXTest:
		c.put(retAUXClockLow)
	case cmd == cmdSelfTest:
		// A passed self-test sets the system flag (CTR bit 2).
		c.ram[0] |= ctrSYS
		c.put(retSelfTestOK)
	case cmd == cmdKbdTest:
		c.put(retIfaceOK)
	case cmd == cmdKbdDisable:
		c.ram[0] |= ctrKBDDIS
	case cmd == cmdKbdEnable:
		c.ram[0] &^= ctrKBDDIS
	case cmd == cmdReadInput:
		// Input port: bit 7 keyboard not inhibited, bit 5 no
		// manufacturing jumper; other bits are board-specific.
		c.put(0xA0)
	case cmd == cmdReadOutput:
		v := c.outport
		if len(c.queue) > 0 {
			v |= 0x10 // output buffer full (keyboard)
		}
		c.put(v)
	case cmd == cmdWriteOut, cmd == cmdWriteKbdOB:
		c.pending = cmd
	case cmd == cmdA20Off:
		c.outport &^= outA20
	case cmd == cmdA20On:
		c.outport |= outA20
	case cmd == cmdReadTest:
		c.put(0x00)
	case cmd >= 0xF0:
		// Pulse output lines: bit 0 clear pulses the CPU reset line.
		if cmd&1 == 0 {
			c.stats.Resets++
			return true
		}
	default:
		// Includes 0xD3 (AUX loop) and 0xD4 (send to AUX): this
		// controller has no AUX port, so, as on an AT-type 8042, the
		// command is ignored and a following data byte goes to the
		// keyboard. See doc.go for why Linux wants exactly this.
		c.stats.Unsupported++
		if cmd != cmdAUXLoop && cmd != cmdAUXSend {
			c.glog.Warnf("unsupported controller command %#x", cmd)
		}
	}
	return false
}

// writeData handles a byte written to port 0x60: a pending command's
// parameter, or a byte for the keyboard.
func (c *Controller) writeData(v uint8) bool {
	c.lastCmd = false
	cmd := c.pending
	c.pending = 0
	switch {
	case cmd >= cmdWriteCTR && cmd < cmdWriteCTR+32:
		c.ram[cmd-cmdWriteCTR] = v
	case cmd == cmdWriteOut:
		c.outport = v | outResetLine
		if v&outResetLine == 0 {
			c.stats.Resets++
			return true
		}
	case cmd == cmdWriteKbdOB:
		c.put(v)
	default:
		// Sending to the keyboard re-enables its interface, as QEMU and
		// many real controllers do.
		c.ram[0] &^= ctrKBDDIS
		c.stats.KeyboardBytes++
		c.kbd.write(v, c.ctr()&ctrXLATE != 0, c.put)
	}
	return false
}

// Stats returns a snapshot of the counters.
func (c *Controller) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stats
}

// keyboard is an AT/PS2 keyboard that answers commands (Linux's atkbd.c
// names) and never sends scancodes.
type keyboard struct {
	param   uint8 // command waiting for its parameter byte, 0 if none
	enabled bool
	set     uint8 // scancode set
	last    uint8 // last byte sent, for 0xFE (resend)
}

func (k *keyboard) init() {
	k.param = 0
	k.enabled = true
	k.set = 2
}

const (
	kbdSetLEDs   = 0xED
	kbdEchoCmd   = 0xEE
	kbdScanSet   = 0xF0
	kbdGetID     = 0xF2
	kbdSetRep    = 0xF3
	kbdEnable    = 0xF4
	kbdDisable   = 0xF5
	kbdDefaults  = 0xF6
	kbdResendCmd = 0xFE
	kbdReset     = 0xFF
)

func (k *keyboard) write(v uint8, xlate bool, put func(uint8)) {
	send := func(b uint8) {
		k.last = b
		put(b)
	}
	if p := k.param; p != 0 {
		k.param = 0
		switch p {
		case kbdScanSet:
			switch {
			case v == 0:
				send(kbdACK)
				send(k.set)
				return
			case v <= 3:
				k.set = v
			}
		}
		// LED state and typematic rate are accepted and forgotten.
		send(kbdACK)
		return
	}
	switch v {
	case kbdSetLEDs, kbdScanSet, kbdSetRep:
		k.param = v
		send(kbdACK)
	case kbdEchoCmd:
		send(kbdEcho)
	case kbdGetID:
		send(kbdACK)
		send(0xAB)
		if xlate {
			send(0x41) // 0x83 as the controller's translation delivers it
		} else {
			send(0x83)
		}
	case kbdEnable:
		k.enabled = true
		send(kbdACK)
	case kbdDisable, kbdDefaults:
		k.enabled = v == kbdDefaults
		k.set = 2
		send(kbdACK)
	case kbdResendCmd:
		put(k.last)
	case kbdReset:
		k.init()
		send(kbdACK)
		send(kbdBATOK)
	case 0xF7, 0xF8, 0xF9, 0xFA, 0xFB, 0xFC, 0xFD:
		// Scancode-set-3 key type commands: acknowledged, no effect.
		send(kbdACK)
	default:
		send(kbdResend)
	}
}
