package acpipm

import "testing"

// FuzzBlocks drives the PM blocks and the reset register with random
// accesses and checks: no panic, reserved PM1_EN bits and SLP_EN never read
// back, the SCI line matches STS&EN, and PowerOff is called exactly when
// the S5 request is written.
func FuzzBlocks(f *testing.F) {
	f.Add([]byte{1, 1, 0x34, 0, 2, 0x00, 2, 0, 0x06})
	f.Add([]byte{0, 2, 0xFF, 3, 0, 0, 0, 0, 0xFF})
	f.Fuzz(func(t *testing.T, ops []byte) {
		r := newRig(t)
		resets := 0
		rc := NewResetControl(func() { resets++ }, nil)
		wantOffs, wantResets := 0, 0
		for len(ops) >= 3 {
			op, off, v := ops[0], uint64(ops[1]%6), ops[2]
			ops = ops[3:]
			size := 1 + int(op>>3)%4
			d := make([]byte, size)
			for i := range d {
				d[i] = v
			}
			switch op % 7 {
			case 0:
				r.evt.BusRead(0, off, d)
			case 1:
				r.evt.BusWrite(0, off, d)
			case 2:
				r.cnt.BusRead(0, off, d)
			case 3:
				// Predict S5 entries byte by byte: the high control
				// byte carries SLP_TYP and SLP_EN.
				for i := range d {
					if off+uint64(i) == 1 && d[i]&0x20 != 0 && (d[i]>>2)&7 == SleepTypeS5 {
						wantOffs = 1
					}
				}
				before := r.offs
				r.cnt.BusWrite(0, off, d)
				if r.offs-before != wantOffs {
					t.Fatalf("write % x at %d: %d power-offs, want %d", d, off, r.offs-before, wantOffs)
				}
				wantOffs = 0
			case 4:
				r.pm.PowerButton()
			case 5:
				// The first byte of a write at offset 0, of any
				// width, resets when RST_CPU is set.
				if off == 0 && v&4 != 0 {
					wantResets++
				}
				rc.BusWrite(0, off, d)
			case 6:
				rc.BusRead(0, off, d)
			}
			p := r.pm
			p.mu.Lock()
			sts, en, cnt, level := p.sts, p.en, p.cnt, p.level
			p.mu.Unlock()
			if en&^enMask != 0 || cnt&cntSlpEn != 0 {
				t.Fatalf("EN %#x CNT %#x", en, cnt)
			}
			if want := cnt&cntSCIEn != 0 && sts&en != 0; level != want || r.level != want {
				t.Fatalf("SCI %v (callback %v), want %v", level, r.level, want)
			}
			if resets != wantResets {
				t.Fatalf("%d resets, want %d", resets, wantResets)
			}
		}
	})
}
