package i8042

import "testing"

// FuzzPorts drives both ports with random accesses and checks: no panic,
// IBF never set, the output queue stays bounded, and IRQ 1 matches the
// status register and CTR after every access.
func FuzzPorts(f *testing.F) {
	f.Add([]byte{1, 0x20, 0, 0x00, 0, 1, 0x60, 0, 0x00, 0x47})
	f.Add([]byte{0, 0xF2, 2, 0, 0, 2, 0, 0, 1, 0xD1, 0, 0x00, 0x00})
	f.Add([]byte{1, 0xD3, 0, 0x5A, 1, 0xA9, 3, 0, 3, 0})
	f.Fuzz(func(t *testing.T, ops []byte) {
		r := newRig(t)
		for len(ops) >= 2 {
			op, v := ops[0], ops[1]
			ops = ops[2:]
			port := r.data
			if op&1 != 0 {
				port = r.cmd
			}
			size := 1 + int(op>>4)%4
			off := uint64(op>>2) & 1
			d := make([]byte, size)
			if op&2 != 0 {
				port.BusRead(0, off, d)
			} else {
				d[0] = v
				port.BusWrite(0, off, d)
			}
			c := r.c
			c.mu.Lock()
			st := c.status()
			qlen := len(c.queue)
			ctr := c.ctr()
			level := c.level
			c.mu.Unlock()
			if st&strIBF != 0 || qlen > queueSize {
				t.Fatalf("status %#x, queue %d", st, qlen)
			}
			want := st&strOBF != 0 && st&strAUXDATA == 0 && ctr&ctrKBDINT != 0
			if level != want || r.level != want {
				t.Fatalf("IRQ1 %v (callback %v), want %v", level, r.level, want)
			}
		}
	})
}
