package pci_test

import (
	"testing"
)

// FuzzConfigWrites drives random config-space (ECAM and CF8) and BAR
// accesses of every width: nothing may panic, the vendor ID must survive,
// and the BAR must stay naturally aligned.
func FuzzConfigWrites(f *testing.F) {
	f.Add([]byte{0, 0x10, 4, 0xff, 0xff, 0xff, 0xff, 1, 20, 1, 0x0f})
	f.Add([]byte{0, 0x86, 2, 0x00, 0xc0, 2, 0x00, 0x20, 8, 1, 2, 3, 4, 5, 6, 7, 8})
	f.Fuzz(func(t *testing.T, in []byte) {
		e := newEnv(t)
		s := e.dev.Slot()
		for len(in) >= 3 {
			kind, off, size := in[0]%4, uint64(in[1]), []int{1, 2, 4, 8}[in[2]%4]
			in = in[3:]
			if len(in) < size {
				return
			}
			val := in[:size]
			in = in[size:]
			switch kind {
			case 0: // ECAM config write, any function-0 register
				e.bus.ECAM().BusWrite(0, uint64(s)<<15|off|uint64(val[0]&0x3)<<8, val)
			case 1: // BAR write across the whole BAR
				e.dev.Region().Dev.BusWrite(0, off<<6|uint64(val[0]), val)
			case 2: // CF8 data port
				e.bus.PIO().BusWrite(0, 0, []byte{byte(off &^ 3), byte(s << 3), 0, 0x80})
				e.bus.PIO().BusWrite(0, 4+off%4, val[:min(size, 4-int(off%4))])
			case 3: // BAR reads (ISR has side effects)
				b := make([]byte, size)
				e.dev.Region().Dev.BusRead(0, off<<6|uint64(val[0]), b)
			}
		}
		if v := e.cfgRead(s, 0, 2); v != 0x1af4 {
			t.Fatalf("vendor id became %#x", v)
		}
		if r := e.dev.Region(); r.Addr%r.Size != 0 {
			t.Fatalf("BAR misaligned %#x", r.Addr)
		}
		_ = e.bus.Close()
	})
}
