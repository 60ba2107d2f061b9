package rtc

import (
	"sync/atomic"
	"testing"
	"time"
)

// FuzzRegisters drives the RTC with random accesses while its clock moves,
// and checks: no panic, while running the BCD time registers hold valid
// BCD digits and a decodable time, and the IRQ line matches IRQF.
func FuzzRegisters(f *testing.F) {
	f.Add([]byte{0, 0x0B, 0x80, 0, 0x00, 0x59, 0, 0x0B, 0x02, 2, 5, 0})
	f.Add([]byte{0, 0x0B, 0x70, 2, 100, 0, 1, 0x0C, 0, 0, 0x0A, 0x23})
	f.Fuzz(func(t *testing.T, ops []byte) {
		var level atomic.Bool
		c := &fakeClock{t: march}
		r := New(Options{Now: c.now, IRQ: func(l bool) { level.Store(l) }, MemoryBelow4G: 1 << 30})
		defer r.Close()
		for len(ops) >= 3 {
			op, a, v := ops[0], ops[1], ops[2]
			ops = ops[3:]
			switch op % 4 {
			case 0:
				wr(r, a&0x7F, v)
			case 1:
				rd(r, a)
			case 2:
				c.add(time.Duration(a) * 37 * time.Millisecond)
			case 3:
				d := make([]byte, 1+int(v)%4)
				if a&1 == 0 {
					r.BusRead(0, uint64(a>>1)%4, d)
				} else {
					r.BusWrite(0, uint64(a>>1)%4, d)
				}
			}
			r.mu.Lock()
			frozen, binary := r.frozen(), r.binary()
			var got time.Time
			var ok bool
			if !frozen {
				g := r.guestNow(r.now())
				got, ok = r.decodeTime(func(i uint8) uint8 { return r.encodeTime(g, i) })
				if !ok && g.Year() >= 0 && g.Year() <= 9999 {
					r.mu.Unlock()
					t.Fatalf("running clock %v does not round-trip (binary %v)", g, binary)
				}
			}
			// The callback runs under r.mu, so this snapshot is consistent
			// even when the timer goroutine ticks.
			irqf, rl, cb := r.irqf(), r.level, level.Load()
			r.mu.Unlock()
			if ok && !got.Equal(r.GuestTime().Truncate(time.Second)) {
				t.Fatalf("decoded %v, guest time %v", got, r.GuestTime())
			}
			if irqf != rl || rl != cb {
				t.Fatalf("IRQF %v, line %v, callback %v", irqf, rl, cb)
			}
		}
	})
}
