package vmm

import (
	"bytes"
	"strings"
	"testing"
)

type recDev struct {
	reads, writes []string
	fill          byte
}

func (d *recDev) BusRead(vcpu int, off uint64, data []byte) {
	d.reads = append(d.reads, string(rune('0'+vcpu))+":"+hex(off)+"/"+hex(uint64(len(data))))
	for i := range data {
		data[i] = d.fill
	}
}

func (d *recDev) BusWrite(vcpu int, off uint64, data []byte) {
	d.writes = append(d.writes, string(rune('0'+vcpu))+":"+hex(off)+"="+string(data))
}

func hex(v uint64) string {
	const digits = "0123456789abcdef"
	if v == 0 {
		return "0"
	}
	var b []byte
	for v > 0 {
		b = append([]byte{digits[v&15]}, b...)
		v >>= 4
	}
	return string(b)
}

func TestBusDispatchAndOffsets(t *testing.T) {
	b := NewBus("pio")
	a, c := &recDev{fill: 0xaa}, &recDev{fill: 0xcc}
	if err := b.Register("a", 0x3f8, 8, a); err != nil {
		t.Fatal(err)
	}
	if err := b.Register("c", 0x60, 1, c); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2)
	b.Read(1, 0x3fa, buf)
	if !bytes.Equal(buf, []byte{0xaa, 0xaa}) || len(a.reads) != 1 || a.reads[0] != "1:2/2" {
		t.Fatalf("read routed wrong: buf=%x reads=%v", buf, a.reads)
	}
	b.Write(0, 0x60, []byte("x"))
	if len(c.writes) != 1 || c.writes[0] != "0:0=x" {
		t.Fatalf("write routed wrong: %v", c.writes)
	}
}

func TestBusUnclaimedReadsAllOnes(t *testing.T) {
	b := NewBus("mmio")
	var missed []uint64
	b.onMiss = func(_ int, addr uint64, _ int, _ bool) { missed = append(missed, addr) }
	d := &recDev{}
	if err := b.Register("d", 0x1000, 4, d); err != nil {
		t.Fatal(err)
	}
	buf := []byte{0, 0, 0, 0}
	b.Read(0, 0x2000, buf)
	if !bytes.Equal(buf, []byte{0xff, 0xff, 0xff, 0xff}) {
		t.Fatalf("unclaimed read = %x, want all ones", buf)
	}
	// An access straddling the end of a device is not given to it.
	b.Read(0, 0x1002, buf)
	if len(d.reads) != 0 || !bytes.Equal(buf, []byte{0xff, 0xff, 0xff, 0xff}) {
		t.Fatalf("straddling read reached device: %v %x", d.reads, buf)
	}
	b.Write(0, 0x5000, []byte{1})
	if b.Misses() != 3 || len(missed) != 3 {
		t.Fatalf("misses = %d (%v), want 3", b.Misses(), missed)
	}
}

func TestBusRejectsOverlap(t *testing.T) {
	b := NewBus("pio")
	if err := b.Register("serial", 0x3f8, 8, &recDev{}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		base, size uint64
	}{{0x3f8, 1}, {0x3f0, 9}, {0x3ff, 4}, {0x300, 0x200}} {
		err := b.Register("x", tc.base, tc.size, &recDev{})
		if err == nil || !strings.Contains(err.Error(), "overlaps \"serial\"") {
			t.Errorf("Register(%#x,%#x) err = %v, want overlap error", tc.base, tc.size, err)
		}
	}
	if err := b.Register("zero", 0x10, 0, &recDev{}); err == nil {
		t.Error("zero-size registration accepted")
	}
	if err := b.Register("wrap", ^uint64(0)-1, 4, &recDev{}); err == nil {
		t.Error("wrapping registration accepted")
	}
	if err := b.Register("adjacent", 0x400, 8, &recDev{}); err != nil {
		t.Errorf("adjacent registration refused: %v", err)
	}
	if !b.Unregister(0x3f8) || b.Unregister(0x3f8) {
		t.Error("Unregister did not remove exactly once")
	}
}

// sliceDev has an uncomparable dynamic type: == on it would panic.
type sliceDev []byte

func (sliceDev) BusRead(int, uint64, []byte)  {}
func (sliceDev) BusWrite(int, uint64, []byte) {}

func TestBusUnregisterDeviceOnlyOwn(t *testing.T) {
	b := NewBus("mmio")
	mine, other := &recDev{}, &recDev{}
	if err := b.Register("other", 0x1000, 0x100, other); err != nil {
		t.Fatal(err)
	}
	if err := b.Register("odd", 0x2000, 0x100, sliceDev{1}); err != nil {
		t.Fatal(err)
	}
	if b.UnregisterDevice(0x1000, mine) || b.UnregisterDevice(0x2000, mine) || b.UnregisterDevice(0x1000, nil) {
		t.Fatal("removed a registration that is not the caller's")
	}
	if b.UnregisterDevice(0x2000, sliceDev{1}) {
		t.Fatal("an uncomparable device matched")
	}
	if len(b.Devices()) != 2 {
		t.Fatalf("devices %v, want both still registered", b.Devices())
	}
	if !b.UnregisterDevice(0x1000, other) || len(b.Devices()) != 1 {
		t.Fatalf("own registration not removed: %v", b.Devices())
	}
}
