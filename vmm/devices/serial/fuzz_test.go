package serial

import (
	"io"
	"testing"
)

// FuzzRegisters drives the UART with random register accesses and host
// input and checks invariants after each step: no panic, the IRQ line
// matches IIR, LSR is never 0xFF, IER and MCR keep their hardwired bits,
// and the receive buffer stays bounded.
func FuzzRegisters(f *testing.F) {
	f.Add([]byte{0x01, 0x01, 0x0F, 0x02, 0x04, 'a', 0x00, 0x00, 0x00})
	f.Add([]byte{0x01, 0x03, 0x80, 0x01, 0x00, 0x01, 0x01, 0x04, 0x1A, 0x00, 0x06, 0x00})
	f.Add([]byte{0x01, 0x02, 0xC7, 0x02, 0x10, 'x', 0x00, 0x02, 0x00})
	f.Fuzz(func(t *testing.T, ops []byte) {
		r := newRig(t, Options{Console: io.Discard, RXBuffer: 8})
		for len(ops) >= 3 {
			op, a, v := ops[0], ops[1], ops[2]
			ops = ops[3:]
			switch op % 4 {
			case 0: // read, size 1..4
				d := make([]byte, 1+int(op>>2)%4)
				r.u.BusRead(0, uint64(a%10), d)
			case 1: // write
				d := make([]byte, 1+int(op>>2)%4)
				for i := range d {
					d[i] = v + byte(i)
				}
				r.u.BusWrite(0, uint64(a%10), d)
			case 2: // host input
				r.u.Input(make([]byte, int(a%12)))
			case 3:
				r.u.Stats()
			}
			u := r.u
			u.mu.Lock()
			pend := u.pending()
			lsr := u.lsr()
			ier, mcr, rxLen := u.ier, u.mcr, u.rxLen
			level := u.level
			u.mu.Unlock()
			if level != (pend != iirNoInt) || r.irq.get() != level {
				t.Fatalf("IRQ line %v (callback %v) but pending %#x", level, r.irq.get(), pend)
			}
			if lsr == 0xFF || lsr&(lsrTHRE|lsrTEMT) != lsrTHRE|lsrTEMT {
				t.Fatalf("LSR = %#x", lsr)
			}
			if ier&^ierMask != 0 || mcr&^mcrMask != 0 {
				t.Fatalf("hardwired bits set: IER %#x MCR %#x", ier, mcr)
			}
			if rxLen < 0 || rxLen > 8 {
				t.Fatalf("rxLen %d", rxLen)
			}
		}
	})
}
