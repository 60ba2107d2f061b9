package vmm

import (
	"encoding/binary"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vmmgo/vmm/internal/guestlog"
	"github.com/vmmgo/vmm/kvm"
	"github.com/vmmgo/vmm/kvm/kvmtest"
	"github.com/vmmgo/vmm/virtio"
	"github.com/vmmgo/vmm/virtio/pci"
)

func TestSharedLineWiredOR(t *testing.T) {
	type call struct {
		irq   uint32
		level bool
	}
	var calls []call
	fail := false
	l := &sharedLine{irq: 10, log: guestlog.Discard(), set: func(irq uint32, level bool) error {
		calls = append(calls, call{irq, level})
		if fail {
			return errors.New("injected")
		}
		return nil
	}}
	a, b := l.input(1), l.input(2)
	steps := []struct {
		in    func(bool)
		level bool
		want  []call
	}{
		{a, true, []call{{10, true}}},   // first input up: line up
		{b, true, nil},                  // second up: already high
		{a, true, nil},                  // repeated level: nothing
		{a, false, nil},                 // b still holds the line
		{b, false, []call{{10, false}}}, // last input down: line down
		{b, false, nil},
		{b, true, []call{{10, true}}},
	}
	for i, s := range steps {
		calls = nil
		s.in(s.level)
		if len(calls) != len(s.want) || (len(calls) > 0 && calls[0] != s.want[0]) {
			t.Fatalf("step %d: KVM_IRQ_LINE calls %v, want %v", i, calls, s.want)
		}
	}
	if n := l.assertions.Load(); n != 2 {
		t.Errorf("assertions %d, want 2", n)
	}
	// A failing ioctl is logged, not fatal, and the state stays consistent.
	fail = true
	b(false)
	fail = false
	calls = nil
	a(true)
	if len(calls) != 1 || !calls[0].level {
		t.Errorf("after a failed lowering: %v", calls)
	}
}

// fakeDevice is a two-queue device model that records what the transport
// does to it.
type fakeDevice struct {
	mu       sync.Mutex
	act      *virtio.Activation
	notified chan int
	resets   int
	closed   bool
}

func newFakeDevice() *fakeDevice { return &fakeDevice{notified: make(chan int, 64)} }

func (f *fakeDevice) Type() virtio.DeviceType       { return virtio.TypeRNG }
func (f *fakeDevice) Features() uint64              { return virtio.CommonFeatures }
func (f *fakeDevice) QueueMaxSizes() []uint16       { return []uint16{16, 16} }
func (f *fakeDevice) ReadConfig(_ uint64, p []byte) { clear(p) }
func (f *fakeDevice) WriteConfig(uint64, []byte)    {}
func (f *fakeDevice) Notify(q int)                  { f.notified <- q }
func (f *fakeDevice) Activate(a virtio.Activation) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.act = &a
	return nil
}
func (f *fakeDevice) Reset() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.resets++
	f.act = nil
}
func (f *fakeDevice) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	return nil
}

func (f *fakeDevice) state() (active bool, resets int, closed bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.act != nil, f.resets, f.closed
}

// wiredMachine is a machine with only the PCI bus attached (no kernel).
func wiredMachine(t *testing.T, devs ...virtio.Device) (*Machine, *virtioWiring, *resetRecorder) {
	t.Helper()
	kvmtest.Open(t)
	cfg := DefaultConfig()
	cfg.Memory = 64 << 20
	cfg.KVMPath = kvmtest.Path()
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	w := m.newVirtioWiring(devs)
	reset := &resetRecorder{}
	ports, err := w.attach(reset)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.pio.Register("pci", PortPCIConfig, 8, ports); err != nil {
		t.Fatal(err)
	}
	return m, w, reset
}

type resetRecorder struct {
	mu     sync.Mutex
	writes []byte
}

func (r *resetRecorder) BusRead(_ int, off uint64, data []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	data[0] = 0x5a
}
func (r *resetRecorder) BusWrite(_ int, off uint64, data []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.writes = append(r.writes, data...)
}

func pioConfigRead32(m *Machine, slot int, reg uint32) uint32 {
	var a [4]byte
	binary.LittleEndian.PutUint32(a[:], 1<<31|uint32(slot)<<11|reg)
	m.pio.Write(0, PortPCIConfig, a[:])
	m.pio.Read(0, PortPCIConfig+4, a[:])
	return binary.LittleEndian.Uint32(a[:])
}

func pioConfigWrite32(m *Machine, slot int, reg, v uint32) {
	var a [4]byte
	binary.LittleEndian.PutUint32(a[:], 1<<31|uint32(slot)<<11|reg)
	m.pio.Write(0, PortPCIConfig, a[:])
	binary.LittleEndian.PutUint32(a[:], v)
	m.pio.Write(0, PortPCIConfig+4, a[:])
}

func mmioWrite(m *Machine, addr uint64, size int, v uint64) {
	b := make([]byte, 8)
	binary.LittleEndian.PutUint64(b, v)
	m.mmio.Write(0, addr, b[:size])
}

func mmioRead(m *Machine, addr uint64, size int) uint64 {
	b := make([]byte, 8)
	m.mmio.Read(0, addr, b[:size])
	return binary.LittleEndian.Uint64(b)
}

// driverOK brings the function at bar to DRIVER_OK through its common
// configuration (virtio 1.2 §3.1.1), queues in guest RAM at 1 MiB.
func driverOK(t *testing.T, m *Machine, bar uint64, queues int) {
	t.Helper()
	mmioWrite(m, bar+20, 1, 0)
	mmioWrite(m, bar+20, 1, pci.StatusAcknowledge|pci.StatusDriver)
	mmioWrite(m, bar+8, 4, 1)
	mmioWrite(m, bar+12, 4, virtio.FVersion1>>32)
	mmioWrite(m, bar+20, 1, pci.StatusAcknowledge|pci.StatusDriver|pci.StatusFeaturesOK)
	for q := 0; q < queues; q++ {
		base := uint64(0x100000 + q*0x4000)
		mmioWrite(m, bar+22, 2, uint64(q))
		mmioWrite(m, bar+24, 2, 16)
		mmioWrite(m, bar+32, 8, base)
		mmioWrite(m, bar+40, 8, base+0x1000)
		mmioWrite(m, bar+48, 8, base+0x2000)
		mmioWrite(m, bar+28, 2, 1)
	}
	mmioWrite(m, bar+20, 1, pci.StatusAcknowledge|pci.StatusDriver|pci.StatusFeaturesOK|pci.StatusDriverOK)
	if st := mmioRead(m, bar+20, 1); st&pci.StatusDriverOK == 0 {
		t.Fatalf("device status %#x after driver init", st)
	}
}

// ioeventfdAt reports whether KVM already has an any-length ioeventfd at
// addr: assigning a second one there collides (EEXIST, virt/kvm/eventfd.c
// ioeventfd_check_collision).
func ioeventfdAt(t *testing.T, vm *kvm.VM, addr uint64, length uint32) bool {
	t.Helper()
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(efd)
	e := kvm.IOEventFD{Addr: addr, Len: length, FD: int32(efd)}
	err = vm.IOEventFD(e)
	if err == nil {
		e.Flags = kvm.IOEventFDFlagDeassign
		if err := vm.IOEventFD(e); err != nil {
			t.Fatal(err)
		}
		return false
	}
	if !errors.Is(err, unix.EEXIST) {
		t.Fatalf("probe ioeventfd at %#x: %v", addr, err)
	}
	return true
}

func waitNotify(t *testing.T, f *fakeDevice, want int) {
	t.Helper()
	select {
	case q := <-f.notified:
		if q != want {
			t.Fatalf("notified queue %d, want %d", q, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("queue %d: no notification", want)
	}
}

// TestVirtioWiring checks the wiring without a guest: configuration space
// through the ports and ECAM, BARs on the MMIO bus, doorbells through KVM
// ioeventfds (and the MMIO fallback), BAR moves, the reset byte, and close.
func TestVirtioWiring(t *testing.T) {
	f1, f2 := newFakeDevice(), newFakeDevice()
	m, w, reset := wiredMachine(t, f1, f2)
	lenAssigned := w.attached[0].notifiers[0].reg.Len

	// Config space: host bridge in slot 0, the devices in slots 1 and 2,
	// the same through mechanism #1 and ECAM; nothing in slot 3.
	if id := pioConfigRead32(m, 0, 0); id != 0x0d578086 {
		t.Errorf("slot 0 id %#x, want the host bridge", id)
	}
	for slot := 1; slot <= 2; slot++ {
		if id := pioConfigRead32(m, slot, 0); id != 0x10441af4 {
			t.Errorf("slot %d id %#x via 0xcf8", slot, id)
		}
		if id := mmioRead(m, LayoutECAM+uint64(slot)<<15, 4); id != 0x10441af4 {
			t.Errorf("slot %d id %#x via ECAM", slot, id)
		}
		if irq := pioConfigRead32(m, slot, 0x3c); irq != 1<<8|IRQPCI {
			t.Errorf("slot %d interrupt pin/line %#x, want INTA# on %d", slot, irq, IRQPCI)
		}
	}
	if id := pioConfigRead32(m, 3, 0); id != 0xffffffff {
		t.Errorf("empty slot reads %#x", id)
	}
	// BARs from the window, on the MMIO bus.
	devs := m.VirtioDevices()
	if len(devs) != 2 || devs[0].Region().Addr != LayoutPCIWindow || devs[1].Region().Addr != LayoutPCIWindow+0x4000 {
		t.Fatalf("BARs: %v", devs)
	}
	if !strings.Contains(strings.Join(m.mmio.Devices(), "\n"), devs[1].Name()) {
		t.Errorf("MMIO bus lacks %s: %v", devs[1].Name(), m.mmio.Devices())
	}
	bar := devs[0].Region().Addr
	if nq := mmioRead(m, bar+18, 2); nq != 2 {
		t.Errorf("num_queues through the BAR: %d", nq)
	}
	// Every doorbell has an ioeventfd.
	if s := m.VirtioStats(); s.IOEventFDs != 4 || s.Devices != 2 {
		t.Fatalf("stats %+v, want 4 ioeventfds on 2 devices", s)
	}
	for q := 0; q < 2; q++ {
		if !ioeventfdAt(t, m.vm, devs[0].NotifyAddr(q), lenAssigned) {
			t.Errorf("no ioeventfd at queue %d's doorbell %#x", q, devs[0].NotifyAddr(q))
		}
	}

	// Kicks before DRIVER_OK are not passed on.
	kick := func(n *queueNotifier) {
		var one [8]byte
		binary.LittleEndian.PutUint64(one[:], 1)
		if _, err := n.f.Write(one[:]); err != nil {
			t.Fatal(err)
		}
	}
	kick(w.attached[0].notifiers[1])
	driverOK(t, m, bar, 2)
	if active, _, _ := f1.state(); !active {
		t.Fatal("device not activated")
	}
	select {
	case q := <-f1.notified:
		t.Fatalf("kick before DRIVER_OK reached the device (queue %d)", q)
	default:
	}
	// What KVM does on a guest write to the doorbell: signal the eventfd.
	kick(w.attached[0].notifiers[1])
	waitNotify(t, f1, 1)
	// The MMIO exit path (no ioeventfd, or another access size) works too.
	mmioWrite(m, devs[0].NotifyAddr(0), 2, 0)
	waitNotify(t, f1, 0)
	if s := m.VirtioStats(); s.EventfdKicks < 1 || s.Notifies != 2 || s.DriverOK != 1 {
		t.Errorf("stats %+v: want 2 notifies, one through the eventfd, one device at DRIVER_OK", s)
	}

	// The guest moves BAR0 of slot 2 (memory decoding on): the MMIO bus and
	// the ioeventfds follow.
	old := devs[1].Region().Addr
	const moved = 0xd0000000
	pioConfigWrite32(m, 2, 4, 0x6) // memory + bus master
	pioConfigWrite32(m, 2, 0x10, moved)
	pioConfigWrite32(m, 2, 0x14, 0)
	if got := devs[1].Region().Addr; got != moved {
		t.Fatalf("BAR at %#x after the move, want %#x", got, moved)
	}
	if mmioRead(m, old+18, 2) != 0xffff {
		t.Error("old BAR address still decodes")
	}
	if nq := mmioRead(m, moved+18, 2); nq != 2 {
		t.Errorf("num_queues at the new BAR: %d", nq)
	}
	if ioeventfdAt(t, m.vm, old+0x1000, lenAssigned) {
		t.Error("ioeventfd left at the old doorbell")
	}
	if !ioeventfdAt(t, m.vm, moved+0x1000+4, lenAssigned) {
		t.Error("no ioeventfd at the moved doorbell of queue 1")
	}
	if s := m.VirtioStats(); s.BARMoves != 1 || s.IOEventFDs != 4 {
		t.Errorf("stats after the move %+v", s)
	}
	driverOK(t, m, moved, 2)
	kick(w.attached[1].notifiers[0])
	waitNotify(t, f2, 0)

	// 0xcf9: byte writes go to the reset control, byte reads come from it;
	// 0xcf8 stays the address latch.
	m.pio.Write(0, PortResetCtl, []byte{0x06})
	b := []byte{0}
	m.pio.Read(0, PortResetCtl, b)
	if b[0] != 0x5a {
		t.Errorf("0xcf9 read %#x, want the reset control's value", b[0])
	}
	reset.mu.Lock()
	if string(reset.writes) != "\x06" {
		t.Errorf("reset control saw %q, want the byte written to 0xcf9", reset.writes)
	}
	reset.mu.Unlock()
	if id := pioConfigRead32(m, 1, 0); id != 0x10441af4 {
		t.Errorf("config access after the reset byte: %#x", id)
	}

	// Close: eventfds gone, devices reset and closed.
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	for i, f := range []*fakeDevice{f1, f2} {
		if active, resets, closed := f.state(); active || resets == 0 || !closed {
			t.Errorf("device %d after close: active %v, resets %d, closed %v", i, active, resets, closed)
		}
	}
	if ioeventfdAt(t, m.vm, moved+0x1000, lenAssigned) {
		t.Error("ioeventfd left after close")
	}
	if err := w.Close(); err != nil {
		t.Errorf("second close: %v", err)
	}
}

// TestLoadLinuxOwnsDevices: devices handed to LoadLinux are closed with the
// machine even when loading fails before they reach the bus.
func TestLoadLinuxOwnsDevices(t *testing.T) {
	kvmtest.Open(t)
	cfg := DefaultConfig()
	cfg.Memory = 64 << 20
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f := newFakeDevice()
	if _, err := m.LoadLinux(LinuxConfig{Devices: []virtio.Device{f}}); err == nil {
		t.Fatal("LoadLinux without a kernel succeeded")
	}
	if _, _, closed := f.state(); closed {
		t.Fatal("device closed before the machine")
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, closed := f.state(); !closed {
		t.Fatal("device not closed with the machine")
	}
}

// BenchmarkMSIDelivery compares the two ways a device goroutine can raise
// an MSI: KVM_SIGNAL_MSI (what the wiring uses) and an eventfd write bound
// to an MSI route with KVM_IRQFD. Both inject into vCPU 0's LAPIC.
func BenchmarkMSIDelivery(b *testing.B) {
	kvmtest.Open(b)
	cfg := DefaultConfig()
	cfg.Memory = 16 << 20
	m, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	if err := m.vm.CreateIRQChip(); err != nil {
		b.Fatal(err)
	}
	cpu, err := m.vm.CreateVCPU(0)
	if err != nil {
		b.Fatal(err)
	}
	defer cpu.Close()
	const addr, data = 0xfee00000, 0x41 // APIC 0, vector 0x41, fixed
	b.Run("KVM_SIGNAL_MSI", func(b *testing.B) {
		for b.Loop() {
			if err := m.vm.SignalMSI(addr, data); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("irqfd", func(b *testing.B) {
		const gsi = 24
		if err := m.vm.SetGSIRouting([]kvm.IRQRoutingEntry{kvm.IRQRoutingMSI(gsi, addr, data)}); err != nil {
			b.Fatal(err)
		}
		efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
		if err != nil {
			b.Fatal(err)
		}
		defer unix.Close(efd)
		if err := m.vm.IRQFD(efd, gsi, -1, false); err != nil {
			b.Fatal(err)
		}
		var one [8]byte
		binary.LittleEndian.PutUint64(one[:], 1)
		for b.Loop() {
			if _, err := unix.Write(efd, one[:]); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestBARMoveOverAnotherDevice: a guest that moves a BAR onto the ECAM or
// onto another device's BAR gets an unreachable BAR (a decode conflict),
// and moving it away again must not take the other registration with it.
func TestBARMoveOverAnotherDevice(t *testing.T) {
	f1, f2 := newFakeDevice(), newFakeDevice()
	m, w, _ := wiredMachine(t, f1, f2)
	devs := m.VirtioDevices()
	lenAssigned := w.attached[1].notifiers[0].reg.Len
	ecamID := func() uint32 { return uint32(mmioRead(m, LayoutECAM+1<<15, 4)) }
	if id := ecamID(); id != 0x10441af4 {
		t.Fatalf("ECAM reads %#x before any move", id)
	}
	firstBAR := devs[0].Region().Addr
	pioConfigWrite32(m, 2, 4, 0x6)
	move := func(to uint64) {
		pioConfigWrite32(m, 2, 0x10, uint32(to))
		pioConfigWrite32(m, 2, 0x14, uint32(to>>32))
		if got := devs[1].Region().Addr; got != to {
			t.Fatalf("BAR at %#x, want %#x", got, to)
		}
	}
	for _, over := range []struct {
		name    string
		addr    uint64
		check   func() bool
		hasDoor bool // the address has a doorbell ioeventfd of its own
	}{
		{"ECAM", LayoutECAM, func() bool { return ecamID() == 0x10441af4 }, false},
		{"slot 1's BAR", firstBAR, func() bool { return mmioRead(m, firstBAR+18, 2) == 2 }, true},
	} {
		move(over.addr)
		if !over.check() {
			t.Errorf("%s no longer decodes after a BAR was moved onto it", over.name)
		}
		if !over.hasDoor && ioeventfdAt(t, m.vm, over.addr+0x1000, lenAssigned) {
			t.Errorf("the BAR moved onto %s put a doorbell ioeventfd there", over.name)
		}
		const away = 0xd0000000
		move(away)
		if !over.check() {
			t.Errorf("%s lost its registration when the conflicting BAR moved away", over.name)
		}
		if nq := mmioRead(m, away+18, 2); nq != 2 {
			t.Errorf("moved BAR does not decode at %#x after leaving %s: num_queues %d", uint64(away), over.name, nq)
		}
		if !ioeventfdAt(t, m.vm, away+0x1000, lenAssigned) {
			t.Errorf("no doorbell ioeventfd at %#x after leaving %s", uint64(away), over.name)
		}
		move(LayoutPCIWindow + 0x8000) // somewhere else again, for the next round
	}
}
