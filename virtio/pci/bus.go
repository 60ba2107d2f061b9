package pci

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/sirupsen/logrus"

	"github.com/vmmgo/vmm/internal/guestlog"
	"github.com/vmmgo/vmm/virtio"
)

// BusDevice is a device on the VMM's PIO or MMIO bus; the same method set
// as vmm.BusDevice, declared here so that virtio never imports vmm.
type BusDevice interface {
	BusRead(vcpu int, off uint64, data []byte)
	BusWrite(vcpu int, off uint64, data []byte)
}

// MSISender delivers one MSI message (KVM_SIGNAL_MSI in the VMM).
type MSISender interface {
	SignalMSI(addr uint64, data uint32) error
}

// Region is an MMIO range the VMM must route to Dev.
type Region struct {
	Name string
	Addr uint64
	Size uint64
	Dev  BusDevice
}

// Options configure a Bus.
type Options struct {
	// WindowBase and WindowSize delimit the MMIO window BARs are assigned
	// from (the VMM's 0xC0000000–0xDFFFFFFF).
	WindowBase, WindowSize uint64
	// MSI delivers MSI-X messages; nil means MSI-X messages are dropped
	// (and counted), so drivers should fall back to INTx.
	MSI MSISender
	// OnBARMove is called (on the vCPU thread) when the guest moves a BAR
	// with memory decoding enabled; the VMM unregisters old and registers
	// new. An error is logged and the BAR keeps its new address.
	OnBARMove func(old, new Region) error
	// OnResetControl receives byte writes to port 0xCF9 (reset control
	// register), which lies inside the 0xCF8 range this bus claims.
	OnResetControl func(v byte)
	Log            *logrus.Entry
}

// PCI identifiers (PCI Code and ID Assignment spec; virtio 1.2 §4.1.2).
const (
	VendorVirtio     = 0x1af4
	DeviceIDBase     = 0x1040
	vendorIntel      = 0x8086
	deviceHostBridge = 0x0d57 // as in Cloud Hypervisor
	maxSlots         = 32
)

// ErrBusFull is returned when no slot or no window space is left.
var ErrBusFull = errors.New("pci: bus full")

// function is one PCI function's configuration space.
type function interface {
	readConfig(reg uint16) uint32
	writeConfig(reg uint16, val uint32, mask uint32)
}

// Bus is PCI bus 0: host bridge at slot 0, virtio functions from slot 1.
type Bus struct {
	opt  Options
	log  *logrus.Entry
	mu   sync.Mutex // config cycles and the 0xCF8 latch
	cf8  uint32
	fns  [maxSlots]function
	devs []*Device
	next uint64 // next free window address
}

// NewBus creates bus 0 with its host bridge.
func NewBus(opt Options) (*Bus, error) {
	if opt.WindowSize == 0 || opt.WindowBase+opt.WindowSize < opt.WindowBase {
		return nil, fmt.Errorf("pci: invalid MMIO window %#x+%#x", opt.WindowBase, opt.WindowSize)
	}
	log := guestlog.OrDiscard(opt.Log)
	b := &Bus{opt: opt, log: log, next: opt.WindowBase}
	b.fns[0] = newHostBridge()
	return b, nil
}

// PIO returns the configuration mechanism #1 device the VMM registers at
// port 0xCF8 with 8 ports (0xCF8 address latch, 0xCFC–0xCFF data).
func (b *Bus) PIO() BusDevice { return pioConfig{b} }

// ECAM returns the memory-mapped configuration device the VMM registers at
// its ECAM base with 1 MiB (bus 0: 32 devices × 8 functions × 4 KiB).
func (b *Bus) ECAM() BusDevice { return ecamConfig{b} }

// Regions returns the MMIO ranges (one BAR per virtio function) at their
// current addresses.
func (b *Bus) Regions() []Region {
	b.mu.Lock()
	defer b.mu.Unlock()
	var rs []Region
	for _, d := range b.devs {
		rs = append(rs, d.Region())
	}
	return rs
}

// Devices returns the virtio functions in slot order.
func (b *Bus) Devices() []*Device {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]*Device(nil), b.devs...)
}

// Close closes every device.
func (b *Bus) Close() error {
	var errs []error
	for _, d := range b.Devices() {
		if err := d.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// DeviceOptions configure one virtio function.
type DeviceOptions struct {
	Name string
	// INTx drives the function's INTA# line (level triggered); nil if the
	// VMM only offers MSI-X.
	INTx func(level bool)
	// IRQ is the value reported in the Interrupt Line register (the GSI the
	// VMM wired INTx to), for guests without ACPI interrupt routing.
	IRQ uint8
	// Vectors is the MSI-X table size; 0 means one per queue plus one for
	// configuration changes.
	Vectors int
	// AccessPlatform offers VIRTIO_F_ACCESS_PLATFORM and requires it: for a
	// protected guest (all RAM private at boot), whose driver must use the
	// platform's DMA API (swiotlb in shared memory). A driver that does not
	// accept it gets FEATURES_OK refused, so does any driver while
	// GuestShares reports false, and DRIVER_OK with a virtqueue in memory
	// the guest has not shared fails the activation (the device needs
	// reset); each calls OnUnprotected.
	AccessPlatform bool
	// GuestShares reports whether the guest has shared any memory yet (a
	// protected kernel shares its swiotlb pool early in boot, before any
	// driver runs). nil: not checked.
	GuestShares func() bool
	// OnUnprotected reports a driver without protected-guest support:
	// device name and what it did. Called with the device's lock held: it
	// must not call back into the device.
	OnUnprotected func(device, why string)
}

// Add places dev in the next free slot with its BAR allocated from the
// window. mem is guest memory for the queues.
func (b *Bus) Add(dev virtio.Device, mem virtio.GuestMemory, opt DeviceOptions) (*Device, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	slot := -1
	for i := 1; i < maxSlots; i++ {
		if b.fns[i] == nil {
			slot = i
			break
		}
	}
	if slot < 0 {
		return nil, fmt.Errorf("add %s: %w: no free slot", dev.Type(), ErrBusFull)
	}
	addr := (b.next + barSize - 1) &^ (barSize - 1)
	if addr+barSize > b.opt.WindowBase+b.opt.WindowSize || addr < b.opt.WindowBase {
		return nil, fmt.Errorf("add %s: %w: MMIO window exhausted", dev.Type(), ErrBusFull)
	}
	d, err := newDevice(b, slot, dev, mem, opt, addr)
	if err != nil {
		return nil, err
	}
	b.next = addr + barSize
	b.fns[slot] = d
	b.devs = append(b.devs, d)
	return d, nil
}

// configRead performs a config read of len(data) bytes at reg of slot/fn.
func (b *Bus) configRead(slot, fn int, reg uint16, data []byte) {
	b.mu.Lock()
	f := b.lookup(slot, fn)
	b.mu.Unlock()
	for i := range data {
		data[i] = 0xff
	}
	if f == nil {
		return // no device: all ones, as an empty slot reads
	}
	if int(reg)+len(data) > 4096 {
		return
	}
	for i := 0; i < len(data); {
		r := reg + uint16(i)
		w := f.readConfig(r &^ 3)
		sh := (r & 3)
		n := min(len(data)-i, 4-int(sh))
		for j := 0; j < n; j++ {
			data[i+j] = byte(w >> (8 * (uint(sh) + uint(j))))
		}
		i += n
	}
}

// configWrite performs a config write of data at reg of slot/fn, split
// into dword writes with a byte mask.
func (b *Bus) configWrite(slot, fn int, reg uint16, data []byte) {
	b.mu.Lock()
	f := b.lookup(slot, fn)
	b.mu.Unlock()
	if f == nil || int(reg)+len(data) > 4096 {
		return
	}
	for i := 0; i < len(data); {
		r := reg + uint16(i)
		sh := uint(r & 3)
		n := min(len(data)-i, 4-int(sh))
		var val, mask uint32
		for j := 0; j < n; j++ {
			val |= uint32(data[i+j]) << (8 * (sh + uint(j)))
			mask |= 0xff << (8 * (sh + uint(j)))
		}
		f.writeConfig(r&^3, val, mask)
		i += n
	}
}

func (b *Bus) lookup(slot, fn int) function {
	if slot < 0 || slot >= maxSlots || fn != 0 {
		return nil
	}
	return b.fns[slot]
}

// pioConfig is configuration mechanism #1 (PCI 3.0 §3.2.2.3.2).
type pioConfig struct{ b *Bus }

func (p pioConfig) BusRead(_ int, off uint64, data []byte) {
	b := p.b
	switch {
	case off == 0 && len(data) == 4:
		b.mu.Lock()
		binary.LittleEndian.PutUint32(data, b.cf8)
		b.mu.Unlock()
	case off >= 4 && off+uint64(len(data)) <= 8:
		b.mu.Lock()
		a := b.cf8
		b.mu.Unlock()
		if a&(1<<31) == 0 || (a>>16)&0xff != 0 {
			fill(data, 0xff)
			return
		}
		b.configRead(int(a>>11&31), int(a>>8&7), uint16(a&0xfc)+uint16(off-4), data)
	default:
		// 0xCF9 etc. read as zero
		fill(data, 0)
	}
}

func (p pioConfig) BusWrite(_ int, off uint64, data []byte) {
	b := p.b
	switch {
	case off == 0 && len(data) == 4:
		b.mu.Lock()
		b.cf8 = binary.LittleEndian.Uint32(data) &^ 3
		b.mu.Unlock()
	case off >= 4 && off+uint64(len(data)) <= 8:
		b.mu.Lock()
		a := b.cf8
		b.mu.Unlock()
		if a&(1<<31) == 0 || (a>>16)&0xff != 0 {
			return
		}
		b.configWrite(int(a>>11&31), int(a>>8&7), uint16(a&0xfc)+uint16(off-4), data)
	case off == 1 && len(data) == 1:
		if b.opt.OnResetControl != nil {
			b.opt.OnResetControl(data[0])
		}
	}
}

// ecamConfig is the enhanced configuration access mechanism for bus 0.
type ecamConfig struct{ b *Bus }

func ecamDecode(off uint64) (slot, fn int, reg uint16, ok bool) {
	if off >= 1<<20 {
		return 0, 0, 0, false
	}
	return int(off >> 15 & 31), int(off >> 12 & 7), uint16(off & 0xfff), true
}

func (e ecamConfig) BusRead(_ int, off uint64, data []byte) {
	slot, fn, reg, ok := ecamDecode(off)
	if !ok || int(reg)+len(data) > 4096 {
		fill(data, 0xff)
		return
	}
	e.b.configRead(slot, fn, reg, data)
}

func (e ecamConfig) BusWrite(_ int, off uint64, data []byte) {
	slot, fn, reg, ok := ecamDecode(off)
	if !ok {
		return
	}
	e.b.configWrite(slot, fn, reg, data)
}

func fill(b []byte, v byte) {
	for i := range b {
		b[i] = v
	}
}

// hostBridge is a minimal type-0 header for slot 0 (class 06/00).
type hostBridge struct {
	mu  sync.Mutex
	cmd uint16
}

func newHostBridge() *hostBridge { return &hostBridge{} }

func (h *hostBridge) readConfig(reg uint16) uint32 {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch reg {
	case 0x00:
		return deviceHostBridge<<16 | vendorIntel
	case 0x04:
		return uint32(h.cmd)
	case 0x08:
		return 0x06000000 // class: bridge, subclass: host, rev 0
	case 0x2c:
		return deviceHostBridge<<16 | vendorIntel
	}
	return 0
}

func (h *hostBridge) writeConfig(reg uint16, val, mask uint32) {
	if reg == 0x04 {
		h.mu.Lock()
		h.cmd = uint16((uint32(h.cmd)&^mask | val&mask) & 0x0146)
		h.mu.Unlock()
	}
}
