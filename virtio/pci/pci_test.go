package pci_test

import (
	"encoding/binary"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/vmmgo/vmm/virtio"
	"github.com/vmmgo/vmm/virtio/pci"
	"github.com/vmmgo/vmm/virtio/virtiotest"
)

// echoDevice is a minimal virtio device: queue 0 chains are completed with
// their readable bytes copied into their writable buffers.
type echoDevice struct {
	mu        sync.Mutex
	act       *virtio.Activation
	notified  []int
	resets    int
	closed    bool
	cfg       [8]byte
	failStart bool
}

func (e *echoDevice) Type() virtio.DeviceType { return virtio.TypeRNG }
func (e *echoDevice) Features() uint64        { return virtio.CommonFeatures | 1<<0 }
func (e *echoDevice) QueueMaxSizes() []uint16 { return []uint16{16, 8} }
func (e *echoDevice) ReadConfig(off uint64, p []byte) {
	if off < 8 {
		copy(p, e.cfg[off:])
	}
}
func (e *echoDevice) WriteConfig(off uint64, p []byte) {
	if off < 8 {
		copy(e.cfg[off:], p)
	}
}
func (e *echoDevice) Activate(a virtio.Activation) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.failStart {
		return errors.New("refused")
	}
	e.act = &a
	return nil
}
func (e *echoDevice) Notify(q int) {
	e.mu.Lock()
	e.notified = append(e.notified, q)
	e.mu.Unlock()
}
func (e *echoDevice) Reset() {
	e.mu.Lock()
	e.resets++
	e.act = nil
	e.mu.Unlock()
}
func (e *echoDevice) Close() error { e.closed = true; return nil }

type msiRecorder struct {
	mu   sync.Mutex
	msgs [][2]uint64
}

func (m *msiRecorder) SignalMSI(addr uint64, data uint32) error {
	m.mu.Lock()
	m.msgs = append(m.msgs, [2]uint64{addr, uint64(data)})
	m.mu.Unlock()
	return nil
}

func (m *msiRecorder) count() int { m.mu.Lock(); defer m.mu.Unlock(); return len(m.msgs) }

type env struct {
	bus   *pci.Bus
	dev   *pci.Device
	echo  *echoDevice
	msi   *msiRecorder
	mem   *virtiotest.Memory
	intx  []bool
	moves [][2]pci.Region
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{echo: &echoDevice{}, msi: &msiRecorder{}, mem: virtiotest.NewMemory(1 << 20)}
	var err error
	e.bus, err = pci.NewBus(pci.Options{
		WindowBase: 0xc0000000, WindowSize: 0x20000000, MSI: e.msi,
		OnBARMove: func(o, n pci.Region) error { e.moves = append(e.moves, [2]pci.Region{o, n}); return nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	e.dev, err = e.bus.Add(e.echo, e.mem, pci.DeviceOptions{INTx: func(l bool) { e.intx = append(e.intx, l) }, IRQ: 11})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) cfgRead(slot int, reg uint64, size int) uint32 {
	b := make([]byte, size)
	e.bus.ECAM().BusRead(0, uint64(slot)<<15|reg, b)
	var v uint32
	for i := size - 1; i >= 0; i-- {
		v = v<<8 | uint32(b[i])
	}
	return v
}

func (e *env) cfgWrite(slot int, reg uint64, size int, v uint32) {
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(v >> (8 * i))
	}
	e.bus.ECAM().BusWrite(0, uint64(slot)<<15|reg, b)
}

func (e *env) pioRead(slot int, reg uint32, size int) uint32 {
	var a [4]byte
	binary.LittleEndian.PutUint32(a[:], 1<<31|uint32(slot)<<11|reg&^3)
	e.bus.PIO().BusWrite(0, 0, a[:])
	b := make([]byte, size)
	e.bus.PIO().BusRead(0, 4+uint64(reg&3), b)
	var v uint32
	for i := size - 1; i >= 0; i-- {
		v = v<<8 | uint32(b[i])
	}
	return v
}

func (e *env) bar(off uint64, size int) uint64 {
	b := make([]byte, size)
	e.dev.Region().Dev.BusRead(0, off, b)
	var v uint64
	for i := size - 1; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	return v
}

func (e *env) barW(off uint64, size int, v uint64) {
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(v >> (8 * i))
	}
	e.dev.Region().Dev.BusWrite(0, off, b)
}

func TestConfigSpaceIDs(t *testing.T) {
	e := newEnv(t)
	slot := e.dev.Slot()
	if slot != 1 {
		t.Fatalf("slot %d", slot)
	}
	for name, read := range map[string]func(int, uint32, int) uint32{
		"ecam": func(s int, r uint32, n int) uint32 { return e.cfgRead(s, uint64(r), n) },
		"cf8":  e.pioRead,
	} {
		if v := read(slot, 0, 4); v != (0x1040+4)<<16|0x1af4 {
			t.Errorf("%s: id %#x", name, v)
		}
		if v := read(slot, 2, 2); v != 0x1044 {
			t.Errorf("%s: device id word %#x", name, v)
		}
		if v := read(slot, 8, 1); v != 1 {
			t.Errorf("%s: revision %d, want 1", name, v)
		}
		if v := read(slot, 0x2e, 2); v < 0x40 {
			t.Errorf("%s: subsystem id %#x", name, v)
		}
		if v := read(slot, 0x3c, 2); v != 0x010b {
			t.Errorf("%s: interrupt pin/line %#x", name, v)
		}
		if v := read(0, 0, 2); v != 0x8086 {
			t.Errorf("%s: host bridge vendor %#x", name, v)
		}
		if v := read(0, 0xa, 2); v != 0x0600 {
			t.Errorf("%s: host bridge class %#x", name, v)
		}
		if v := read(7, 0, 4); v != 0xffffffff {
			t.Errorf("%s: empty slot reads %#x", name, v)
		}
	}
	// CF8 with the enable bit clear reads all ones; the latch reads back.
	var a [4]byte
	binary.LittleEndian.PutUint32(a[:], uint32(slot)<<11)
	e.bus.PIO().BusWrite(0, 0, a[:])
	d := make([]byte, 4)
	e.bus.PIO().BusRead(0, 4, d)
	if binary.LittleEndian.Uint32(d) != 0xffffffff {
		t.Error("disabled CF8 cycle did not read all ones")
	}
	e.bus.PIO().BusRead(0, 0, d)
	if binary.LittleEndian.Uint32(d) != uint32(slot)<<11 {
		t.Error("CF8 latch does not read back")
	}
}

func TestCapabilityWalk(t *testing.T) {
	e := newEnv(t)
	s := e.dev.Slot()
	if e.cfgRead(s, 6, 2)&(1<<4) == 0 {
		t.Fatal("capabilities-list status bit clear")
	}
	type vcap struct{ bar, off, length, extra uint32 }
	found := map[uint32]vcap{}
	msix := false
	seen := map[uint32]bool{}
	for p := e.cfgRead(s, 0x34, 1); p != 0; p = e.cfgRead(s, uint64(p)+1, 1) {
		if seen[p] || p < 0x40 || p > 0xfc {
			t.Fatalf("bad capability pointer %#x", p)
		}
		seen[p] = true
		switch id := e.cfgRead(s, uint64(p), 1); id {
		case 0x09:
			typ := e.cfgRead(s, uint64(p)+3, 1)
			c := vcap{e.cfgRead(s, uint64(p)+4, 1), e.cfgRead(s, uint64(p)+8, 4), e.cfgRead(s, uint64(p)+12, 4), 0}
			if typ == 5 {
				found[typ] = c
				continue
			}
			if typ == 2 {
				if l := e.cfgRead(s, uint64(p)+2, 1); l != 20 {
					t.Errorf("notify cap length %d", l)
				}
				c.extra = e.cfgRead(s, uint64(p)+16, 4)
			}
			found[typ] = c
		case 0x11:
			msix = true
			ctl := e.cfgRead(s, uint64(p)+2, 2)
			if ctl&0x7ff != 2 { // 3 vectors: 2 queues + config
				t.Errorf("MSI-X table size field %d", ctl&0x7ff)
			}
			if e.cfgRead(s, uint64(p)+4, 4)&7 != 0 {
				t.Error("MSI-X table not in BAR 0")
			}
		default:
			t.Errorf("unexpected capability %#x", id)
		}
	}
	for typ := uint32(1); typ <= 4; typ++ {
		c, ok := found[typ]
		if !ok {
			t.Fatalf("virtio cap type %d missing", typ)
		}
		if c.bar != 0 || c.off+c.length > 0x4000 || c.length == 0 {
			t.Errorf("cap %d: %+v", typ, c)
		}
	}
	if found[2].extra != 4 {
		t.Errorf("notify_off_multiplier %d", found[2].extra)
	}
	if !msix {
		t.Error("no MSI-X capability")
	}
	if _, ok := found[5]; !ok {
		t.Error("no VIRTIO_PCI_CAP_PCI_CFG capability")
	}
	// The PCI_CFG window reaches the common config: num_queues (offset 18).
	e.cfgWrite(s, 0x90+4, 1, 0)
	e.cfgWrite(s, 0x90+8, 4, 18)
	e.cfgWrite(s, 0x90+12, 4, 2)
	if v := e.cfgRead(s, 0x90+16, 4); v != 2 {
		t.Errorf("num_queues through the PCI_CFG window: %d", v)
	}
	e.cfgWrite(s, 0x90+8, 4, 0x200) // device config
	e.cfgWrite(s, 0x90+12, 4, 4)
	e.cfgWrite(s, 0x90+16, 4, 0x12345678)
	if e.bar(0x200, 4) != 0x12345678 {
		t.Error("write through the PCI_CFG window did not reach the BAR")
	}
	// NotifyAddr: each queue its own doorbell, matching multiplier × queue_notify_off.
	base := e.dev.Region().Addr
	for q := 0; q < 2; q++ {
		e.barW(22, 2, uint64(q)) // queue_select
		off := e.bar(30, 2)      // queue_notify_off
		if want := base + uint64(found[2].off) + off*4; e.dev.NotifyAddr(q) != want {
			t.Errorf("queue %d notify addr %#x, want %#x", q, e.dev.NotifyAddr(q), want)
		}
	}
	if e.dev.NotifyAddr(0) == e.dev.NotifyAddr(1) {
		t.Error("queues share a doorbell")
	}
}

func TestBARSizingAndMove(t *testing.T) {
	e := newEnv(t)
	s := e.dev.Slot()
	orig := e.dev.Region()
	if orig.Addr < 0xc0000000 || orig.Addr+orig.Size > 0xe0000000 || orig.Addr%orig.Size != 0 {
		t.Fatalf("BAR %#x+%#x outside window or misaligned", orig.Addr, orig.Size)
	}
	lo, hi := e.cfgRead(s, 0x10, 4), e.cfgRead(s, 0x14, 4)
	if lo != uint32(orig.Addr)|4 || hi != 0 {
		t.Fatalf("BAR reads %#x %#x", lo, hi)
	}
	// Linux sizing: decode off, write all ones, read mask, restore.
	e.cfgWrite(s, 4, 2, 0)
	e.cfgWrite(s, 0x10, 4, 0xffffffff)
	e.cfgWrite(s, 0x14, 4, 0xffffffff)
	if v := e.cfgRead(s, 0x10, 4); v != ^uint32(orig.Size-1)|4 {
		t.Fatalf("size mask %#x", v)
	}
	if v := e.cfgRead(s, 0x14, 4); v != 0xffffffff {
		t.Fatalf("upper size mask %#x", v)
	}
	e.cfgWrite(s, 0x10, 4, lo)
	e.cfgWrite(s, 0x14, 4, hi)
	e.cfgWrite(s, 4, 2, 0x6) // memory + bus master
	if len(e.moves) != 0 {
		t.Fatalf("sizing reported moves: %+v", e.moves)
	}
	// A real move while decoding is on.
	e.cfgWrite(s, 0x10, 4, 0xd0000000)
	if len(e.moves) != 1 || e.moves[0][0].Addr != orig.Addr || e.moves[0][1].Addr != 0xd0000000 {
		t.Fatalf("moves %+v", e.moves)
	}
	if e.dev.Region().Addr != 0xd0000000 || e.dev.NotifyAddr(0) != 0xd0000000+0x1000 {
		t.Fatalf("region not updated: %#x", e.dev.Region().Addr)
	}
	rs := e.bus.Regions()
	if len(rs) != 1 || rs[0].Addr != 0xd0000000 {
		t.Fatalf("bus regions %+v", rs)
	}
}

// initDriver performs the §3.1.1 initialisation with the given features
// and returns the final status.
func (e *env) initDriver(t *testing.T, features uint64, drv []*virtiotest.Driver) uint8 {
	t.Helper()
	e.barW(20, 1, 0)
	e.barW(20, 1, pci.StatusAcknowledge)
	e.barW(20, 1, pci.StatusAcknowledge|pci.StatusDriver)
	e.barW(8, 4, 0)
	e.barW(12, 4, features&0xffffffff)
	e.barW(8, 4, 1)
	e.barW(12, 4, features>>32)
	e.barW(20, 1, pci.StatusAcknowledge|pci.StatusDriver|pci.StatusFeaturesOK)
	st := uint8(e.bar(20, 1))
	if st&pci.StatusFeaturesOK == 0 {
		return st
	}
	for i, d := range drv {
		e.barW(22, 2, uint64(i))
		e.barW(24, 2, uint64(d.Cfg.Size))
		e.barW(26, 2, uint64(i)) // vector i
		e.barW(32, 4, uint64(d.Cfg.Desc))
		e.barW(36, 4, 0)
		e.barW(40, 8, uint64(d.Cfg.Avail))
		e.barW(48, 8, uint64(d.Cfg.Used))
		e.barW(28, 2, 1)
	}
	e.barW(16, 2, 2) // config vector
	e.barW(20, 1, pci.StatusAcknowledge|pci.StatusDriver|pci.StatusFeaturesOK|pci.StatusDriverOK)
	return uint8(e.bar(20, 1))
}

func TestFeatureNegotiation(t *testing.T) {
	e := newEnv(t)
	e.barW(0, 4, 1)
	if hi := e.bar(4, 4); hi&1 == 0 {
		t.Fatal("VERSION_1 not offered")
	}
	e.barW(0, 4, 0)
	if lo := e.bar(4, 4); lo != (virtio.CommonFeatures|1)&0xffffffff {
		t.Fatalf("device features lo %#x", lo)
	}
	if st := e.initDriver(t, virtio.FVersion1|1<<40, nil); st&pci.StatusFeaturesOK != 0 {
		t.Fatal("accepted an unknown feature bit")
	}
	if st := e.initDriver(t, virtio.FRingEventIdx, nil); st&pci.StatusFeaturesOK != 0 {
		t.Fatal("accepted a driver without VERSION_1")
	}
	if e.dev.Stats.FeatureRejects.Load() != 2 {
		t.Fatalf("rejects %d", e.dev.Stats.FeatureRejects.Load())
	}
	if st := e.initDriver(t, virtio.FVersion1|virtio.FRingEventIdx, nil); st&pci.StatusFeaturesOK == 0 {
		t.Fatal("rejected a valid feature set")
	}
	// Features are frozen after FEATURES_OK.
	e.barW(8, 4, 0)
	e.barW(12, 4, 0xffffffff)
	if v := e.bar(12, 4); v != virtio.FRingEventIdx&0xffffffff {
		t.Fatalf("driver features changed after FEATURES_OK: %#x", v)
	}
}

func TestActivateNotifyInterruptReset(t *testing.T) {
	e := newEnv(t)
	s := e.dev.Slot()
	d0, _ := virtiotest.NewDriver(e.mem, 0x1000, 16, 4096)
	d1, _ := virtiotest.NewDriver(e.mem, d0.End(), 8, 4096)
	feat := virtio.FVersion1 | virtio.FRingEventIdx
	// MSI-X: program vectors 0..2 and enable.
	for v := 0; v < 3; v++ {
		e.barW(0x2000+uint64(16*v), 8, 0xfee00000+uint64(v)<<12)
		e.barW(0x2000+uint64(16*v)+8, 4, 0x40+uint64(v))
		e.barW(0x2000+uint64(16*v)+12, 4, 0) // unmask
	}
	if got := e.bar(0x2000+16, 8); got != 0xfee01000 {
		t.Fatalf("MSI-X table readback %#x", got)
	}
	e.cfgWrite(s, 0x84+2, 2, 0x8000)
	e.cfgWrite(s, 4, 2, 0x6)
	st := e.initDriver(t, feat, []*virtiotest.Driver{d0, d1})
	if st&pci.StatusDriverOK == 0 {
		t.Fatalf("status %#x", st)
	}
	e.echo.mu.Lock()
	act := e.echo.act
	e.echo.mu.Unlock()
	if act == nil || len(act.Queues) != 2 || act.Features != feat {
		t.Fatalf("activation %+v", act)
	}
	if c := act.Queues[1].Config(); c != d1.Cfg {
		t.Fatalf("queue 1 config %+v, want %+v", c, d1.Cfg)
	}
	// Doorbell for queue 1.
	e.barW(e.dev.NotifyAddr(1)-e.dev.Region().Addr, 2, 1)
	e.dev.Notify(5) // out of range: ignored
	if len(e.echo.notified) != 1 || e.echo.notified[0] != 1 {
		t.Fatalf("notified %v", e.echo.notified)
	}
	// Used interrupt on queue 1 goes to vector 1.
	act.Interrupt.Used(1)
	if e.msi.count() != 1 || e.msi.msgs[0] != [2]uint64{0xfee01000, 0x41} {
		t.Fatalf("MSI %+v", e.msi.msgs)
	}
	// Masked vector: pending, delivered on unmask.
	e.barW(0x2000+16+12, 4, 1)
	act.Interrupt.Used(1)
	if e.msi.count() != 1 || e.bar(0x3000, 8)&2 == 0 {
		t.Fatal("masked vector not pending")
	}
	e.barW(0x2000+16+12, 4, 0)
	if e.msi.count() != 2 || e.bar(0x3000, 8)&2 != 0 {
		t.Fatal("pending vector not delivered on unmask")
	}
	// Config change uses the config vector (2).
	act.Interrupt.ConfigChanged()
	if e.msi.count() != 3 || e.msi.msgs[2][1] != 0x42 {
		t.Fatalf("config MSI %+v", e.msi.msgs)
	}
	// INTx fallback when MSI-X is off: ISR set, line high, read clears.
	e.cfgWrite(s, 0x84+2, 2, 0)
	act.Interrupt.Used(0)
	if len(e.intx) == 0 || !e.intx[len(e.intx)-1] {
		t.Fatal("INTx not raised")
	}
	if isr := e.bar(0x100, 1); isr != 1 {
		t.Fatalf("ISR %#x", isr)
	}
	if e.intx[len(e.intx)-1] || e.bar(0x100, 1) != 0 {
		t.Fatal("ISR read did not clear and lower INTx")
	}
	// Reset: device reset, registers cleared, doorbells ignored.
	e.barW(20, 1, 0)
	if e.echo.resets != 1 || e.bar(20, 1) != 0 {
		t.Fatalf("resets %d status %d", e.echo.resets, e.bar(20, 1))
	}
	e.barW(22, 2, 0)
	if e.bar(28, 2) != 0 || e.bar(32, 8) != 0 || e.bar(24, 2) != 16 || e.bar(26, 2) != pci.NoVector {
		t.Fatal("queue registers not reset")
	}
	e.barW(0x1000, 2, 0)
	if len(e.echo.notified) != 1 {
		t.Fatal("doorbell reached a reset device")
	}
	// Activation failure → DEVICE_NEEDS_RESET.
	e.echo.failStart = true
	st = e.initDriver(t, feat, []*virtiotest.Driver{d0})
	if st&pci.StatusDeviceNeedsReset == 0 {
		t.Fatalf("status %#x lacks NEEDS_RESET", st)
	}
	if err := e.bus.Close(); err != nil || !e.echo.closed {
		t.Fatal("close", err)
	}
}

func TestQueueRegisterRules(t *testing.T) {
	e := newEnv(t)
	e.barW(22, 2, 0)
	e.barW(24, 2, 12) // not a power of two
	if e.bar(24, 2) != 16 {
		t.Fatal("accepted non-power-of-two size")
	}
	e.barW(24, 2, 32) // larger than max
	if e.bar(24, 2) != 16 {
		t.Fatal("accepted size above max")
	}
	e.barW(24, 2, 4)
	if e.bar(24, 2) != 4 {
		t.Fatal("smaller size refused")
	}
	e.barW(26, 2, 77) // vector out of table
	if e.bar(26, 2) != pci.NoVector {
		t.Fatal("out-of-table vector not mapped to NO_VECTOR")
	}
	e.barW(22, 2, 9) // nonexistent queue
	if e.bar(24, 2) != 0 {
		t.Fatal("nonexistent queue has a size")
	}
	if e.bar(18, 2) != 2 {
		t.Fatal("num_queues")
	}
	// Device config window.
	e.barW(0x200, 4, 0xdeadbeef)
	if e.bar(0x200, 4) != 0xdeadbeef {
		t.Fatal("device config not routed")
	}
	// Unused BAR space: reads zero, counted.
	if e.bar(0x3f00, 4) != 0 || e.dev.Stats.BadAccesses.Load() == 0 {
		t.Fatal("unused BAR access")
	}
}

func TestResetControlPort(t *testing.T) {
	var got []byte
	b, err := pci.NewBus(pci.Options{WindowBase: 0xc0000000, WindowSize: 1 << 20, OnResetControl: func(v byte) { got = append(got, v) }})
	if err != nil {
		t.Fatal(err)
	}
	b.PIO().BusWrite(0, 1, []byte{0x06})
	if len(got) != 1 || got[0] != 6 {
		t.Fatalf("reset control %v", got)
	}
	// Window exhaustion is a clear error.
	for i := 0; ; i++ {
		if _, err := b.Add(&echoDevice{}, virtiotest.NewMemory(4096), pci.DeviceOptions{}); err != nil {
			if !errors.Is(err, pci.ErrBusFull) || i != 31 {
				t.Fatalf("after %d devices: %v", i, err)
			}
			break
		}
	}
}

var _ = time.Second
