package serial

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// irqRecorder records every level change the UART reports and checks that
// it only reports changes.
type irqRecorder struct {
	mu     sync.Mutex
	t      testing.TB
	level  bool
	events []bool
}

func (r *irqRecorder) set(level bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if level == r.level {
		r.t.Errorf("IRQ callback called with unchanged level %v", level)
	}
	r.level = level
	r.events = append(r.events, level)
}

func (r *irqRecorder) get() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.level
}

type rig struct {
	t   testing.TB
	u   *UART
	irq *irqRecorder
	out *bytes.Buffer
}

func newRig(t testing.TB, opt Options) *rig {
	r := &rig{t: t, irq: &irqRecorder{t: t}, out: &bytes.Buffer{}}
	opt.IRQ = r.irq.set
	if opt.Console == nil {
		opt.Console = r.out
	}
	r.u = New(opt)
	return r
}

func (r *rig) in(off uint64) uint8 {
	var b [1]byte
	r.u.BusRead(0, off, b[:])
	return b[0]
}

func (r *rig) out8(off uint64, v uint8) { r.u.BusWrite(0, off, []byte{v}) }

// TestLinuxAutoconfig replays what drivers/tty/serial/8250/8250_port.c
// autoconfig() and autoconfig_16550a() do, and checks each decision comes
// out as "16550A".
func TestLinuxAutoconfig(t *testing.T) {
	r := newRig(t, Options{})

	// IER write/read test.
	scratch := r.in(regIER)
	r.out8(regIER, 0)
	scratch2 := r.in(regIER) & 0x0f
	r.out8(regIER, 0x0f)
	scratch3 := r.in(regIER) & 0x0f
	r.out8(regIER, scratch)
	if scratch2 != 0 || scratch3 != 0x0f {
		t.Fatalf("IER test failed: %#x %#x", scratch2, scratch3)
	}

	saveMCR := r.in(regMCR)
	saveLCR := r.in(regLCR)

	// Loopback test: MCR = LOOP|0x0A must read MSR & 0xF0 == 0x90.
	r.out8(regMCR, mcrLoop|0x0A)
	status1 := r.in(regMSR) & 0xF0
	r.out8(regMCR, saveMCR)
	if status1 != 0x90 {
		t.Fatalf("loopback test: MSR&0xF0 = %#x, want 0x90", status1)
	}

	// FIFO detection.
	r.out8(regLCR, 0xBF)
	r.out8(regFCR, 0) // UART_EFR on an EFR chip; FCR here
	r.out8(regLCR, 0)
	r.out8(regFCR, fcrEnable)
	if got := r.in(regIIR) >> 6; got != 3 {
		t.Fatalf("IIR>>6 = %d with FIFO enabled, want 3 (16550A)", got)
	}

	// autoconfig_16550a: EFR with DLAB (ST16C650V1) must be absent.
	r.out8(regLCR, 0x80)
	if efr := r.in(regIIR); efr == 0 {
		t.Fatalf("EFRv1 check: read 0 at offset 2 with DLAB, looks like ST16C650V1")
	}
	r.out8(regLCR, 0xBF)
	if efr := r.in(regIIR); efr == 0 {
		t.Fatalf("EFRv2 check: read 0 at offset 2 with LCR=0xBF")
	}
	// National Semiconductor SuperIO check.
	r.out8(regLCR, 0)
	s1 := r.in(regMCR)
	r.out8(regLCR, 0xE0)
	s2 := r.in(2)
	if (s2^s1)&mcrLoop == 0 {
		r.out8(regLCR, 0)
		r.out8(regMCR, s1^mcrLoop)
		r.out8(regLCR, 0xE0)
		s2 = r.in(2)
		r.out8(regLCR, 0)
		r.out8(regMCR, s1)
		if (s2^s1)&mcrLoop != 0 {
			t.Fatalf("looks like an NS16550A SuperIO (EXCR1 follows MCR.LOOP)")
		}
	}
	// TI16750 check: IIR bit 5 must never follow FCR bit 5.
	r.out8(regLCR, 0)
	r.out8(regFCR, fcrEnable|0x20)
	st1 := r.in(regIIR) & 0xE0
	r.out8(regFCR, fcrEnable)
	r.out8(regLCR, 0x80)
	r.out8(regFCR, fcrEnable|0x20)
	st2 := r.in(regIIR) & 0xE0
	r.out8(regFCR, fcrEnable)
	r.out8(regLCR, 0)
	if st1 != 0xC0 || st2 != 0xC0 {
		t.Fatalf("TI16750 check: IIR&0xE0 = %#x / %#x, want 0xC0 / 0xC0", st1, st2)
	}
	// XScale UUE check: IER bit 6 must not stick.
	iersave := r.in(regIER)
	r.out8(regIER, iersave|0x40)
	if r.in(regIER)&0x40 != 0 {
		t.Fatalf("IER bit 6 is writable: looks like an XScale UART")
	}
	r.out8(regIER, iersave)

	// Reset, as autoconfig ends.
	r.out8(regMCR, saveMCR)
	r.out8(regFCR, fcrEnable|fcrClearRX|fcrClearTX)
	r.out8(regFCR, 0)
	r.in(regRBR)
	r.out8(regIER, 0)
	r.out8(regLCR, saveLCR)

	if r.out.Len() != 0 {
		t.Fatalf("probe leaked %q to the console", r.out.Bytes())
	}
	if r.irq.get() {
		t.Fatalf("IRQ line left high after the probe")
	}
	if st := r.u.Stats(); st.BadAccesses != 0 {
		t.Fatalf("probe made %d bad accesses", st.BadAccesses)
	}
}

// TestLinuxStartupTHRETest replays the UART_BUG_THRE check of
// serial8250_do_startup: a real 16550A re-asserts THRE when ETBEI is
// toggled.
func TestLinuxStartupTHRETest(t *testing.T) {
	r := newRig(t, Options{})
	r.out8(regFCR, fcrEnable|fcrClearRX|fcrClearTX)
	if lsr := r.in(regLSR); lsr == 0xFF {
		t.Fatalf("LSR reads 0xFF: Linux's LSR safety check would reject the port")
	}
	r.in(regRBR)
	r.in(regIIR)
	r.in(regMSR)

	r.out8(regIER, ierTHRI)
	if !r.irq.get() {
		t.Fatalf("enabling ETBEI with THR empty did not raise the line")
	}
	iir1 := r.in(regIIR)
	if iir1&0x0F != iirTHRI {
		t.Fatalf("IIR = %#x after enabling ETBEI, want THRI", iir1)
	}
	if r.irq.get() {
		t.Fatalf("reading IIR (THRI) did not acknowledge the interrupt")
	}
	if iir := r.in(regIIR); iir&iirNoInt == 0 {
		t.Fatalf("THRE reported again after acknowledgement: IIR = %#x", iir)
	}
	r.out8(regIER, 0)
	r.out8(regIER, ierTHRI)
	iir := r.in(regIIR)
	r.out8(regIER, 0)
	if iir1&iirNoInt == 0 && iir&iirNoInt != 0 {
		t.Fatalf("THRE not re-asserted after toggling ETBEI: Linux would set UART_BUG_THRE")
	}
	if r.irq.get() {
		t.Fatalf("line high with IER = 0")
	}
}

func TestTransmitInterruptPerByte(t *testing.T) {
	r := newRig(t, Options{})
	r.out8(regIER, ierTHRI)
	if !r.irq.get() {
		t.Fatal("no THRE interrupt")
	}
	n := len(r.irq.events)
	// Writing THR acknowledges and immediately re-arms THRE; the line
	// stays high and the callback is not called.
	for _, c := range []byte("hello") {
		r.out8(regTHR, c)
	}
	if !r.irq.get() || len(r.irq.events) != n {
		t.Fatalf("line changes during THR writes: %v", r.irq.events[n:])
	}
	if got := r.out.String(); got != "hello" {
		t.Fatalf("console got %q", got)
	}
	if lsr := r.in(regLSR); lsr&(lsrTHRE|lsrTEMT) != lsrTHRE|lsrTEMT {
		t.Fatalf("LSR = %#x, want THRE|TEMT", lsr)
	}
}

func TestReceiveInterrupts(t *testing.T) {
	r := newRig(t, Options{})
	r.out8(regIER, ierRDI|ierRLSI)
	if r.irq.get() {
		t.Fatal("line high with nothing received")
	}
	if lsr := r.in(regLSR); lsr&lsrDR != 0 {
		t.Fatalf("DR set with empty buffer: %#x", lsr)
	}
	r.u.Input([]byte("ab"))
	if !r.irq.get() {
		t.Fatal("no RX interrupt")
	}
	if iir := r.in(regIIR); iir != iirRDI {
		t.Fatalf("IIR = %#x, want %#x (non-FIFO mode)", iir, iirRDI)
	}
	if c := r.in(regRBR); c != 'a' {
		t.Fatalf("RBR = %q", c)
	}
	if !r.irq.get() {
		t.Fatal("line dropped with data still buffered")
	}
	if c := r.in(regRBR); c != 'b' {
		t.Fatalf("RBR = %q", c)
	}
	if r.irq.get() {
		t.Fatal("line still high after draining")
	}

	// FIFO mode with trigger level 4: below it the timeout source, at it RDI.
	r.out8(regFCR, fcrEnable|0x40)
	r.u.Input([]byte("123"))
	if iir := r.in(regIIR); iir != iirFIFOs|iirRXTimeout {
		t.Fatalf("IIR = %#x, want timeout %#x", iir, iirFIFOs|iirRXTimeout)
	}
	r.u.Input([]byte("4"))
	if iir := r.in(regIIR); iir != iirFIFOs|iirRDI {
		t.Fatalf("IIR = %#x, want RDI %#x", iir, iirFIFOs|iirRDI)
	}
	// FCR clear RX empties the FIFO and drops the line.
	r.out8(regFCR, fcrEnable|fcrClearRX)
	if r.irq.get() || r.in(regLSR)&lsrDR != 0 {
		t.Fatal("FCR clear RX did not empty the FIFO")
	}
}

func TestPriorityAndModemStatus(t *testing.T) {
	r := newRig(t, Options{RXBuffer: 2})
	r.out8(regIER, ierRDI|ierTHRI|ierRLSI|ierMSI)
	if iir := r.in(regIIR); iir != iirTHRI {
		t.Fatalf("IIR = %#x, want THRI", iir)
	}
	r.u.Input([]byte("xyz")) // one byte too many: overrun
	if iir := r.in(regIIR); iir != iirRLSI {
		t.Fatalf("IIR = %#x, want RLSI (highest priority)", iir)
	}
	if lsr := r.in(regLSR); lsr&lsrOE == 0 || lsr&lsrDR == 0 {
		t.Fatalf("LSR = %#x, want OE|DR", lsr)
	}
	if lsr := r.in(regLSR); lsr&lsrOE != 0 {
		t.Fatalf("OE not cleared by reading LSR: %#x", lsr)
	}
	if iir := r.in(regIIR); iir != iirRDI {
		t.Fatalf("IIR = %#x, want RDI next", iir)
	}
	r.in(regRBR)
	r.in(regRBR)
	// THRE was acknowledged by the IIR read above; modem status is next
	// once loopback changes the modem inputs.
	r.out8(regIER, ierMSI)
	if r.irq.get() {
		t.Fatal("line high with no modem change")
	}
	r.out8(regMCR, mcrLoop|mcrRTS)
	if iir := r.in(regIIR); iir != iirMSI {
		t.Fatalf("IIR = %#x, want MSI", iir)
	}
	msr := r.in(regMSR)
	// CTS stays asserted (RTS loops to it); DSR and DCD drop.
	if msr != msrCTS|msrDDSR|msrDDCD {
		t.Fatalf("MSR = %#x after entering loopback with RTS", msr)
	}
	if r.irq.get() {
		t.Fatal("reading MSR did not clear the modem interrupt")
	}
	r.out8(regMCR, mcrLoop|mcrOUT1)
	r.out8(regMCR, mcrLoop)
	if msr := r.in(regMSR); msr&msrTERI == 0 {
		t.Fatalf("MSR = %#x, want TERI after RI trailing edge", msr)
	}
}

func TestLoopbackData(t *testing.T) {
	r := newRig(t, Options{})
	r.out8(regMCR, mcrLoop)
	r.out8(regTHR, 0x5A)
	if r.out.Len() != 0 {
		t.Fatal("loopback byte reached the console")
	}
	if lsr := r.in(regLSR); lsr&lsrDR == 0 {
		t.Fatal("loopback byte not received")
	}
	if c := r.in(regRBR); c != 0x5A {
		t.Fatalf("RBR = %#x", c)
	}
	if n := r.u.Input([]byte("host")); n != 0 {
		t.Fatalf("host input accepted in loopback: %d", n)
	}
	if st := r.u.Stats(); st.Dropped != 4 || st.RXBytes != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestDivisorLatch(t *testing.T) {
	r := newRig(t, Options{})
	r.out8(regIER, ierRDI)
	r.out8(regLCR, lcrDLAB|0x03)
	r.out8(regDLL, 0x01)
	r.out8(regDLM, 0x00)
	if r.in(regDLL) != 1 || r.in(regDLM) != 0 {
		t.Fatal("divisor latch not read back")
	}
	r.out8(regLCR, 0x03)
	if ier := r.in(regIER); ier != ierRDI {
		t.Fatalf("IER clobbered by DLM write: %#x", ier)
	}
	if r.out.Len() != 0 {
		t.Fatal("DLL write transmitted a byte")
	}
	r.out8(regSCR, 0xA5)
	if r.in(regSCR) != 0xA5 {
		t.Fatal("scratch register")
	}
}

func TestWideAndBadAccesses(t *testing.T) {
	r := newRig(t, Options{})
	// A 16-bit write at offset 3 sets LCR and MCR.
	r.u.BusWrite(0, regLCR, []byte{0x03, 0x0B})
	if r.in(regLCR) != 0x03 || r.in(regMCR) != 0x0B {
		t.Fatal("wide write not split into byte registers")
	}
	d := make([]byte, 4)
	r.u.BusRead(0, 6, d) // MSR, SCR, then two past the end
	if d[2] != 0xFF || d[3] != 0xFF {
		t.Fatalf("read past the registers = % x, want ff ff", d[2:])
	}
	r.u.BusWrite(0, 100, []byte{1})
	if st := r.u.Stats(); st.BadAccesses != 3 {
		t.Fatalf("BadAccesses = %d, want 3", st.BadAccesses)
	}
}

func TestOutputInOrderWithLogCopy(t *testing.T) {
	var logCopy bytes.Buffer
	r := newRig(t, Options{LogFile: &logCopy})
	var want bytes.Buffer
	for i := range 1000 {
		c := byte('a' + i%26)
		want.WriteByte(c)
		r.out8(regTHR, c)
	}
	if !bytes.Equal(r.out.Bytes(), want.Bytes()) || !bytes.Equal(logCopy.Bytes(), want.Bytes()) {
		t.Fatal("output bytes out of order or missing")
	}
	if st := r.u.Stats(); st.TXBytes != 1000 {
		t.Fatalf("TXBytes = %d", st.TXBytes)
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("broken pipe") }

func TestOutputErrorsCounted(t *testing.T) {
	r := newRig(t, Options{Console: failWriter{}})
	r.out8(regTHR, 'x')
	r.out8(regTHR, 'y')
	if st := r.u.Stats(); st.OutputErrors != 2 || st.TXBytes != 2 {
		t.Fatalf("stats %+v", st)
	}
}

func TestInputWait(t *testing.T) {
	r := newRig(t, Options{RXBuffer: 4})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	msg := []byte("0123456789abcdef")
	done := make(chan error, 1)
	go func() { done <- r.u.InputWait(ctx, msg) }()
	var got []byte
	deadline := time.Now().Add(10 * time.Second)
	for len(got) < len(msg) && time.Now().Before(deadline) {
		if r.in(regLSR)&lsrDR != 0 {
			got = append(got, r.in(regRBR))
		} else {
			time.Sleep(100 * time.Microsecond)
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("guest read %q, want %q", got, msg)
	}
	if st := r.u.Stats(); st.Overruns != 0 || st.Dropped != 0 {
		t.Fatalf("InputWait dropped data: %+v", st)
	}

	// With nobody reading, InputWait stops at the context's deadline.
	r.u.Input([]byte("full"))
	ctx2, cancel2 := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel2()
	if err := r.u.InputWait(ctx2, []byte("more")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("InputWait on a full buffer = %v", err)
	}
}

// TestConcurrent runs two "vCPUs" and an input goroutine against the UART;
// run with -race. Output from each writer must keep its own order, every
// input byte must be read exactly once, and the IRQ callback must only ever
// report changes (checked by irqRecorder).
func TestConcurrent(t *testing.T) {
	r := newRig(t, Options{RXBuffer: 64})
	r.out8(regIER, ierRDI|ierTHRI)
	const n = 2000
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	var wg sync.WaitGroup
	for w := range 2 {
		wg.Go(func() {
			for i := range n {
				r.u.BusWrite(w, regTHR, []byte{byte('A' + w)})
				if i%7 == 0 {
					var b [1]byte
					r.u.BusRead(w, regIIR, b[:])
				}
			}
		})
	}
	input := make([]byte, n)
	for i := range input {
		input[i] = byte(i)
	}
	inErr := make(chan error, 1)
	go func() { inErr <- r.u.InputWait(ctx, input) }()
	var got []byte
	for len(got) < n && ctx.Err() == nil {
		var b [1]byte
		r.u.BusRead(1, regLSR, b[:])
		if b[0]&lsrDR != 0 {
			r.u.BusRead(1, regRBR, b[:])
			got = append(got, b[0])
		}
	}
	wg.Wait()
	if err := <-inErr; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, input) {
		t.Fatalf("received %d bytes, mismatch", len(got))
	}
	if r.out.Len() != 2*n || bytes.Count(r.out.Bytes(), []byte("A")) != n {
		t.Fatalf("console got %d bytes", r.out.Len())
	}
}

func ExampleUART() {
	var console bytes.Buffer
	u := New(Options{Console: &console})
	for _, c := range []byte("ok\n") {
		u.BusWrite(0, 0, []byte{c}) // THR
	}
	fmt.Print(console.String())
	// Output: ok
}
