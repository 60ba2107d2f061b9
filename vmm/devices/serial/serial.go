package serial

import (
	"context"
	"io"
	"sync"

	"github.com/sirupsen/logrus"
	"github.com/vmmgo/vmm/internal/guestlog"
)

// Standard PC COM port resources.
const (
	COM1    = 0x3F8
	COM1IRQ = 4
	COM2    = 0x2F8
	COM2IRQ = 3
	// Size is the number of I/O ports the UART decodes.
	Size = 8
	// DefaultRXBuffer is the receive buffer size when Options.RXBuffer is 0.
	DefaultRXBuffer = 1024
)

// Register offsets (PC16550D datasheet, table II; names from Linux's
// include/uapi/linux/serial_reg.h).
const (
	regRBR = 0 // receive buffer (read, DLAB=0)
	regTHR = 0 // transmit holding (write, DLAB=0)
	regDLL = 0 // divisor latch LSB (DLAB=1)
	regIER = 1 // interrupt enable (DLAB=0)
	regDLM = 1 // divisor latch MSB (DLAB=1)
	regIIR = 2 // interrupt identification (read)
	regFCR = 2 // FIFO control (write)
	regLCR = 3
	regMCR = 4
	regLSR = 5
	regMSR = 6
	regSCR = 7
)

// IER bits.
const (
	ierRDI  = 0x01 // received data available (ERBFI)
	ierTHRI = 0x02 // THR empty (ETBEI)
	ierRLSI = 0x04 // receiver line status (ELSI)
	ierMSI  = 0x08 // modem status (EDSSI)
	ierMask = 0x0F // bits 7:4 are hardwired 0 on a 16550A
)

// IIR values (bits 3:0) and FIFO flags.
const (
	iirNoInt     = 0x01
	iirMSI       = 0x00
	iirTHRI      = 0x02
	iirRDI       = 0x04
	iirRLSI      = 0x06
	iirRXTimeout = 0x0C
	iirFIFOs     = 0xC0 // both bits set when FCR bit 0 is set on a 16550A
)

// FCR bits.
const (
	fcrEnable  = 0x01
	fcrClearRX = 0x02
	fcrClearTX = 0x04
)

// LCR bits.
const lcrDLAB = 0x80

// MCR bits.
const (
	mcrDTR  = 0x01
	mcrRTS  = 0x02
	mcrOUT1 = 0x04
	mcrOUT2 = 0x08
	mcrLoop = 0x10
	mcrMask = 0x1F // bits 7:5 are hardwired 0 on a 16550A (bit 5 is the 16750's AFE)
)

// LSR bits.
const (
	lsrDR   = 0x01
	lsrOE   = 0x02
	lsrPE   = 0x04
	lsrFE   = 0x08
	lsrBI   = 0x10
	lsrTHRE = 0x20
	lsrTEMT = 0x40
)

// MSR bits.
const (
	msrDCTS  = 0x01
	msrDDSR  = 0x02
	msrTERI  = 0x04
	msrDDCD  = 0x08
	msrCTS   = 0x10
	msrDSR   = 0x20
	msrRI    = 0x40
	msrDCD   = 0x80
	msrDelta = 0x0F
)

// Options configure a UART.
type Options struct {
	// Console receives every byte the guest transmits (nil: discarded).
	Console io.Writer
	// LogFile, when set, receives a copy of the guest's output.
	LogFile io.Writer
	// IRQ drives the interrupt line: called with true when an enabled
	// interrupt becomes pending and false when none is, only on change.
	IRQ func(level bool)
	// RXBuffer is the receive buffer size in bytes (DefaultRXBuffer if 0).
	RXBuffer int
	// Log receives rate-limited reports of guest misbehaviour and output
	// errors (nil: discarded).
	Log *logrus.Entry
}

// Stats are the UART's counters.
type Stats struct {
	TXBytes      uint64 // bytes the guest transmitted to the console
	RXBytes      uint64 // bytes the guest read from RBR (excluding loopback)
	InputBytes   uint64 // host bytes queued for the guest
	Dropped      uint64 // host bytes dropped (buffer full, or loopback mode)
	Overruns     uint64 // times LSR.OE was raised
	OutputErrors uint64 // failed writes to Console or LogFile
	BadAccesses  uint64 // accesses outside the 8 registers
	IRQRaised    uint64 // rising edges of the interrupt line
}

// UART is a 16550A. Create it with New.
type UART struct {
	mu sync.Mutex

	ier, lcr, mcr, scr uint8
	dll, dlm           uint8
	fifo               bool  // FCR bit 0
	trigger            int   // RX FIFO trigger level in bytes
	lsrErr             uint8 // sticky LSR error bits (OE), cleared by reading LSR
	msrDelta           uint8 // sticky MSR delta bits, cleared by reading MSR
	thrPending         bool  // THRE interrupt pending (cleared by IIR read or THR write)

	rx     []byte // ring buffer
	rxHead int
	rxLen  int
	room   chan struct{} // signalled when the guest frees receive space

	level   bool
	irq     func(bool)
	console io.Writer
	logFile io.Writer
	txByte  [1]byte

	stats Stats
	glog  *guestlog.Logger
}

// New returns a UART in its power-on state (PC16550D table III: IER=0,
// IIR=1, LCR=0, MCR=0, LSR=0x60, MSR inputs from the line). The divisor
// latch starts at 12 (9600 baud), as a PC BIOS leaves it.
func New(opt Options) *UART {
	n := opt.RXBuffer
	if n <= 0 {
		n = DefaultRXBuffer
	}
	u := &UART{
		dll:     12,
		trigger: 1,
		rx:      make([]byte, n),
		room:    make(chan struct{}, 1),
		irq:     opt.IRQ,
		console: opt.Console,
		logFile: opt.LogFile,
		glog:    guestlog.New(opt.Log, "serial"),
	}
	// THR starts empty; with IER=0 this raises nothing.
	u.thrPending = true
	return u
}

// BusRead implements the bus-device read: one register per byte of data.
func (u *UART) BusRead(vcpu int, off uint64, data []byte) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for i := range data {
		data[i] = u.readReg(off + uint64(i))
	}
	u.updateIRQ()
}

// BusWrite implements the bus-device write: one register per byte of data.
func (u *UART) BusWrite(vcpu int, off uint64, data []byte) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for i, v := range data {
		u.writeReg(off+uint64(i), v)
	}
	u.updateIRQ()
}

func (u *UART) readReg(off uint64) uint8 {
	dlab := u.lcr&lcrDLAB != 0
	switch off {
	case regRBR:
		if dlab {
			return u.dll
		}
		return u.readRBR()
	case regIER:
		if dlab {
			return u.dlm
		}
		return u.ier
	case regIIR:
		id := u.pending()
		if id == iirTHRI {
			// Reading IIR while it reports THRE acknowledges that
			// interrupt (PC16550D table IV: "reading the IIR
			// register (if source of interrupt)").
			u.thrPending = false
		}
		if u.fifo {
			id |= iirFIFOs
		}
		return id
	case regLCR:
		return u.lcr
	case regMCR:
		return u.mcr
	case regLSR:
		v := u.lsr()
		u.lsrErr = 0
		return v
	case regMSR:
		v := u.modemStatus() | u.msrDelta
		u.msrDelta = 0
		return v
	case regSCR:
		return u.scr
	}
	u.stats.BadAccesses++
	u.glog.Warnf("read of unknown register offset %#x", off)
	return 0xFF
}

func (u *UART) writeReg(off uint64, v uint8) {
	dlab := u.lcr&lcrDLAB != 0
	switch off {
	case regTHR:
		if dlab {
			u.dll = v
			return
		}
		u.writeTHR(v)
	case regIER:
		if dlab {
			u.dlm = v
			return
		}
		old := u.ier
		u.ier = v & ierMask
		// Enabling ETBEI with THR empty (re)arms the THRE interrupt;
		// disabling it forgets a pending one. Linux's UART_BUG_THRE
		// probe toggles ETBEI and expects the interrupt back.
		if (old^u.ier)&ierTHRI != 0 {
			u.thrPending = u.ier&ierTHRI != 0
		}
	case regFCR:
		on := v&fcrEnable != 0
		if on != u.fifo || v&fcrClearRX != 0 {
			// Changing FCR bit 0 resets both FIFOs (datasheet 8.5).
			u.rxHead, u.rxLen = 0, 0
		}
		u.fifo = on
		if on {
			u.trigger = [4]int{1, 4, 8, 14}[v>>6]
		} else {
			u.trigger = 1
		}
		// Bit 2 (clear TX FIFO) has nothing to clear: transmission is
		// instantaneous. Bits 5:3 (DMA mode, 16750 64-byte FIFO) are
		// ignored, so IIR bit 5 stays 0 as on a 16550A.
	case regLCR:
		u.lcr = v
	case regMCR:
		before := u.modemStatus()
		u.mcr = v & mcrMask
		u.modemChanged(before, u.modemStatus())
	case regLSR, regMSR:
		// Writable on the chip for factory test only; ignored here as
		// QEMU does. Not counted: Linux never writes them.
	case regSCR:
		u.scr = v
	default:
		u.stats.BadAccesses++
		u.glog.Warnf("write %#x to unknown register offset %#x", v, off)
	}
}

func (u *UART) readRBR() uint8 {
	if u.rxLen == 0 {
		// Reading an empty RBR returns the last byte on hardware; 0
		// is as good and keeps no extra state.
		return 0
	}
	v := u.rx[u.rxHead]
	u.rxHead = (u.rxHead + 1) % len(u.rx)
	u.rxLen--
	if u.mcr&mcrLoop == 0 {
		u.stats.RXBytes++
	}
	select {
	case u.room <- struct{}{}:
	default:
	}
	return v
}

func (u *UART) writeTHR(v uint8) {
	// Writing THR acknowledges a THRE interrupt; the byte leaves at once,
	// so THR is empty again and the interrupt is re-armed.
	u.thrPending = false
	if u.mcr&mcrLoop != 0 {
		u.push(v)
	} else {
		u.transmit(v)
	}
	u.thrPending = true
}

func (u *UART) transmit(v uint8) {
	u.stats.TXBytes++
	u.txByte[0] = v
	if u.console != nil {
		if _, err := u.console.Write(u.txByte[:]); err != nil {
			u.stats.OutputErrors++
			u.glog.Warnf("console write: %v", err)
		}
	}
	if u.logFile != nil {
		if _, err := u.logFile.Write(u.txByte[:]); err != nil {
			u.stats.OutputErrors++
			u.glog.Warnf("serial log write: %v", err)
		}
	}
}

// push queues one received byte, or records an overrun when full.
func (u *UART) push(v uint8) bool {
	if u.rxLen == len(u.rx) {
		u.overrun()
		return false
	}
	u.rx[(u.rxHead+u.rxLen)%len(u.rx)] = v
	u.rxLen++
	return true
}

func (u *UART) overrun() {
	if u.lsrErr&lsrOE == 0 {
		u.stats.Overruns++
	}
	u.lsrErr |= lsrOE
}

func (u *UART) lsr() uint8 {
	v := u.lsrErr | lsrTHRE | lsrTEMT
	if u.rxLen > 0 {
		v |= lsrDR
	}
	return v
}

// modemStatus returns MSR bits 7:4. Outside loopback the line looks like a
// connected terminal (CTS, DSR and DCD asserted); in loopback the modem
// control outputs are wired back (datasheet 8.6).
func (u *UART) modemStatus() uint8 {
	if u.mcr&mcrLoop == 0 {
		return msrCTS | msrDSR | msrDCD
	}
	var v uint8
	if u.mcr&mcrRTS != 0 {
		v |= msrCTS
	}
	if u.mcr&mcrDTR != 0 {
		v |= msrDSR
	}
	if u.mcr&mcrOUT1 != 0 {
		v |= msrRI
	}
	if u.mcr&mcrOUT2 != 0 {
		v |= msrDCD
	}
	return v
}

func (u *UART) modemChanged(before, after uint8) {
	diff := before ^ after
	if diff&msrCTS != 0 {
		u.msrDelta |= msrDCTS
	}
	if diff&msrDSR != 0 {
		u.msrDelta |= msrDDSR
	}
	if before&msrRI != 0 && after&msrRI == 0 { // trailing edge only
		u.msrDelta |= msrTERI
	}
	if diff&msrDCD != 0 {
		u.msrDelta |= msrDDCD
	}
}

// pending returns the IIR bits 3:0 of the highest-priority enabled pending
// interrupt (datasheet table IV), or iirNoInt.
func (u *UART) pending() uint8 {
	switch {
	case u.ier&ierRLSI != 0 && u.lsrErr&(lsrOE|lsrPE|lsrFE|lsrBI) != 0:
		return iirRLSI
	case u.ier&ierRDI != 0 && u.rxLen > 0:
		if u.fifo && u.rxLen < u.trigger {
			return iirRXTimeout
		}
		return iirRDI
	case u.ier&ierTHRI != 0 && u.thrPending:
		return iirTHRI
	case u.ier&ierMSI != 0 && u.msrDelta != 0:
		return iirMSI
	}
	return iirNoInt
}

// updateIRQ drives the line to match the pending state, calling the
// callback only on a change.
func (u *UART) updateIRQ() {
	level := u.pending() != iirNoInt
	if level == u.level {
		return
	}
	u.level = level
	if level {
		u.stats.IRQRaised++
	}
	if u.irq != nil {
		u.irq(level)
	}
}

// Input queues host bytes for the guest to read. Bytes that do not fit in
// the receive buffer are dropped and the guest sees an overrun (LSR.OE), as
// with a line that never waits; so are all bytes while the UART is in
// loopback mode. It returns the number of bytes queued.
func (u *UART) Input(p []byte) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.input(p)
}

func (u *UART) input(p []byte) int {
	if len(p) == 0 {
		return 0
	}
	if u.mcr&mcrLoop != 0 {
		u.stats.Dropped += uint64(len(p))
		return 0
	}
	n := min(len(p), len(u.rx)-u.rxLen)
	for _, v := range p[:n] {
		u.push(v)
	}
	if n < len(p) {
		u.overrun()
		u.stats.Dropped += uint64(len(p) - n)
	}
	u.stats.InputBytes += uint64(n)
	u.updateIRQ()
	return n
}

// InputWait queues all of p for the guest, waiting while the receive buffer
// is full instead of dropping bytes: the flow control a host input pump
// (stdin) wants. It returns early with ctx's error, having queued a prefix
// of p. Bytes sent while the guest holds the UART in loopback are dropped,
// as with Input.
func (u *UART) InputWait(ctx context.Context, p []byte) error {
	for len(p) > 0 {
		u.mu.Lock()
		free := len(u.rx) - u.rxLen
		loop := u.mcr&mcrLoop != 0
		if free > 0 || loop {
			n := min(free, len(p))
			if loop {
				n = len(p)
			}
			u.input(p[:n])
			p = p[n:]
			u.mu.Unlock()
			continue
		}
		u.mu.Unlock()
		select {
		case <-u.room:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// Stats returns a snapshot of the counters.
func (u *UART) Stats() Stats {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.stats
}

// Level reports the current state of the interrupt line.
func (u *UART) Level() bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.level
}
