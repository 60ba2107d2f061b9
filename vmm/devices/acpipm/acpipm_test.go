package acpipm

import (
	"encoding/binary"
	"testing"
)

type rig struct {
	t        testing.TB
	pm       *PM
	evt, cnt *Block
	offs     int
	level    bool
	changes  int
}

func newRig(t testing.TB) *rig {
	r := &rig{t: t}
	r.pm = New(Options{
		PowerOff: func() { r.offs++ },
		SCI: func(l bool) {
			if l == r.level {
				t.Errorf("SCI callback with unchanged level %v", l)
			}
			r.level = l
			r.changes++
		},
	})
	r.evt, r.cnt = r.pm.EventBlock(), r.pm.ControlBlock()
	return r
}

func read16(b *Block, off uint64) uint16 {
	var d [2]byte
	b.BusRead(0, off, d[:])
	return binary.LittleEndian.Uint16(d[:])
}

func write16(b *Block, off uint64, v uint16) {
	var d [2]byte
	binary.LittleEndian.PutUint16(d[:], v)
	b.BusWrite(0, off, d[:])
}

// TestLinuxPowerOff replays ACPICA's acpi_hw_legacy_sleep for S5 with the
// \_S5 = {5, 5} package.
func TestLinuxPowerOff(t *testing.T) {
	r := newRig(t)
	if read16(r.cnt, 0)&cntSCIEn == 0 {
		t.Fatal("SCI_EN clear: Linux would try to switch to ACPI mode")
	}
	write16(r.evt, 0, StsWake) // clear WAK_STS
	cnt := read16(r.cnt, 0)
	cnt &^= cntSlpTypMsk | cntSlpEn
	cnt |= 5 << cntSlpTypSh
	write16(r.cnt, 0, cnt) // SLP_TYP first
	if r.offs != 0 {
		t.Fatal("powered off before SLP_EN")
	}
	write16(r.cnt, 0, cnt|cntSlpEn)
	if r.offs != 1 {
		t.Fatalf("PowerOff called %d times, want 1", r.offs)
	}
	if read16(r.cnt, 0)&cntSlpEn != 0 {
		t.Fatal("SLP_EN reads back")
	}
	if got := r.pm.Stats().PowerOffs; got != 1 {
		t.Fatalf("PowerOffs = %d", got)
	}
}

func TestPowerOffByteWrites(t *testing.T) {
	r := newRig(t)
	// High byte alone: SLP_TYP=5 (bits 12:10 -> byte bits 4:2), SLP_EN (bit 5).
	r.cnt.BusWrite(0, 1, []byte{5<<2 | 1<<5})
	if r.offs != 1 {
		t.Fatalf("byte write of SLP_EN|SLP_TYP=5: %d power-offs", r.offs)
	}
	// A 32-bit write covering the block plus one byte past it.
	r.cnt.BusWrite(0, 0, []byte{1, 3<<2 | 1<<5, 0, 0})
	if r.offs != 1 {
		t.Fatal("S3 request powered off")
	}
	if st := r.pm.Stats(); st.SleepIgnored != 1 || st.BadAccesses != 2 {
		t.Fatalf("stats %+v", st)
	}
}

func TestPowerButtonSCI(t *testing.T) {
	r := newRig(t)
	r.pm.PowerButton()
	if r.level {
		t.Fatal("SCI raised with PWRBTN_EN clear")
	}
	if read16(r.evt, 0)&StsPowerBtn == 0 {
		t.Fatal("PWRBTN_STS not latched")
	}
	write16(r.evt, 2, StsPowerBtn|0x8000) // reserved bit 15 must not stick
	if !r.level {
		t.Fatal("SCI not raised after enabling PWRBTN_EN")
	}
	if en := read16(r.evt, 2); en != StsPowerBtn {
		t.Fatalf("PM1_EN = %#x", en)
	}
	write16(r.evt, 0, 0) // writing 0 clears nothing
	if !r.level {
		t.Fatal("SCI dropped by writing 0 to PM1_STS")
	}
	// A 32-bit write: clear PWRBTN_STS and keep PM1_EN.
	r.evt.BusWrite(0, 0, []byte{0x00, 0x01, 0x00, 0x01})
	if r.level || read16(r.evt, 0) != 0 {
		t.Fatal("write-1-to-clear did not clear PWRBTN_STS")
	}
	if r.changes != 2 {
		t.Fatalf("%d SCI changes, want 2", r.changes)
	}
}

func TestResetControl(t *testing.T) {
	n := 0
	rc := NewResetControl(func() { n++ }, nil)
	// Linux reboot=pci: cf9 = inb(0xcf9) & ~6; outb(cf9|2); udelay; outb(cf9|6).
	var b [1]byte
	rc.BusRead(0, 0, b[:])
	cf9 := b[0] &^ 6
	rc.BusWrite(0, 0, []byte{cf9 | 2})
	if n != 0 {
		t.Fatal("SYS_RST alone reset")
	}
	rc.BusRead(0, 0, b[:])
	if b[0] != 2 {
		t.Fatalf("read back %#x", b[0])
	}
	rc.BusWrite(0, 0, []byte{cf9 | 6})
	if n != 1 {
		t.Fatalf("%d resets after writing 6", n)
	}
	rc.BusWrite(0, 0, []byte{0x0E})
	if n != 2 || rc.Resets() != 2 {
		t.Fatalf("%d resets after writing 0xE", n)
	}
	rc.BusRead(0, 0, b[:])
	if b[0] != 0x0A {
		t.Fatalf("RST_CPU reads back: %#x", b[0])
	}
	rc.BusWrite(0, 1, []byte{6})
	if n != 2 || rc.BadAccesses() != 1 {
		t.Fatal("write at offset 1 handled")
	}
}
