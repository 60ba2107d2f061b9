package pci

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/sirupsen/logrus"

	"github.com/vmmgo/vmm/internal/guestlog"
	"github.com/vmmgo/vmm/memory"
	"github.com/vmmgo/vmm/virtio"
)

// Device status bits (virtio 1.2 §2.1).
const (
	StatusAcknowledge      = 1
	StatusDriver           = 2
	StatusDriverOK         = 4
	StatusFeaturesOK       = 8
	StatusDeviceNeedsReset = 0x40
	StatusFailed           = 0x80
)

// NoVector is VIRTIO_MSI_NO_VECTOR (§4.1.4.3).
const NoVector = 0xffff

// BAR0 layout. Every structure sits where a capability says it is.
const (
	barSize        = 0x4000
	offCommon      = 0x0000
	lenCommon      = 0x40
	offISR         = 0x0100
	lenISR         = 0x4
	offDevCfg      = 0x0200
	lenDevCfg      = 0x100
	offNotify      = 0x1000
	notifyMultiple = 4 // notify_off_multiplier: a doorbell per queue
	offMSIXTable   = 0x2000
	offMSIXPBA     = 0x3000
	maxVectors     = 256 // table fits in 0x1000 bytes
)

// Capability IDs and virtio cfg_type values (§4.1.4).
const (
	capIDVendor = 0x09
	capIDMSIX   = 0x11

	cfgTypeCommon = 1
	cfgTypeNotify = 2
	cfgTypeISR    = 3
	cfgTypeDevice = 4

	capCommon = 0x40 // 16 bytes
	capNotify = 0x50 // 20 bytes
	capISR    = 0x64 // 16 bytes
	capDevice = 0x74 // 16 bytes
	capMSIX   = 0x84 // 12 bytes
	capPCICfg = 0x90 // 20 bytes: VIRTIO_PCI_CAP_PCI_CFG window (§4.1.4.9)

	cfgTypePCICfg = 5
)

// PCI command register bits.
const (
	cmdMemory    = 1 << 1
	cmdMaster    = 1 << 2
	cmdINTxOff   = 1 << 10
	cmdWritable  = 1<<0 | cmdMemory | cmdMaster | 1<<6 | 1<<8 | cmdINTxOff
	msixEnable   = 1 << 15
	msixMaskAll  = 1 << 14
	msixCtrlMask = msixEnable | msixMaskAll
)

type queueRegs struct {
	size, maxSize uint16
	vector        uint16
	enable        bool
	desc, driver  uint64
	device        uint64
}

type msixEntry struct {
	addr   uint64
	data   uint32
	masked bool
}

// Stats counts transport-level events.
type Stats struct {
	Notifies       atomic.Uint64
	Interrupts     atomic.Uint64
	MSIErrors      atomic.Uint64
	FeatureRejects atomic.Uint64
	BadAccesses    atomic.Uint64
	// Panics counts panics of the device model's Notify, contained here
	// (the vCPU thread or the VMM's ioeventfd reader called it): the
	// device is marked DEVICE_NEEDS_RESET and the caller goes on.
	Panics atomic.Uint64
	// Unprotected counts drivers refused for lacking protected-guest
	// support (DeviceOptions.AccessPlatform).
	Unprotected atomic.Uint64
}

// Device is one virtio PCI function.
type Device struct {
	bus  *Bus
	slot int
	name string
	dev  virtio.Device
	mem  virtio.GuestMemory
	opt  DeviceOptions
	log  *logrus.Entry
	rl   guestlog.Limiter

	offered uint64
	nvec    int

	mu sync.Mutex // everything below
	// PCI header
	command uint16
	intLine uint8
	barAddr uint64 // as programmed (may be a sizing pattern)
	mapped  uint64 // address the VMM routes
	msixCtl uint16
	// VIRTIO_PCI_CAP_PCI_CFG window: bar, offset, length (§4.1.4.9)
	winBar  uint8
	winOff  uint32
	winLen  uint32
	table   []msixEntry
	pending []uint64

	// virtio common configuration
	status       uint8
	devFeatSel   uint32
	drvFeatSel   uint32
	drvFeatures  uint64
	msixConfig   uint16
	queueSel     uint16
	queues       []queueRegs
	configGen    uint8
	isr          uint8
	intxLevel    bool
	active       bool
	notifyActive atomic.Bool

	Stats Stats
}

func newDevice(b *Bus, slot int, dev virtio.Device, mem virtio.GuestMemory, opt DeviceOptions, addr uint64) (*Device, error) {
	sizes := dev.QueueMaxSizes()
	if len(sizes) == 0 || len(sizes) > 64 {
		return nil, fmt.Errorf("add %s: %d queues (want 1..64)", dev.Type(), len(sizes))
	}
	for i, s := range sizes {
		if s == 0 || s > virtio.MaxQueueSize || s&(s-1) != 0 {
			return nil, fmt.Errorf("add %s: queue %d max size %d is not a power of two", dev.Type(), i, s)
		}
	}
	nvec := opt.Vectors
	if nvec == 0 {
		nvec = len(sizes) + 1
	}
	if nvec < 1 || nvec > maxVectors {
		return nil, fmt.Errorf("add %s: %d MSI-X vectors (want 1..%d)", dev.Type(), nvec, maxVectors)
	}
	name := opt.Name
	if name == "" {
		name = fmt.Sprintf("virtio-%s@%02x", dev.Type(), slot)
	}
	offered := dev.Features() | virtio.FVersion1
	if opt.AccessPlatform {
		offered |= virtio.FAccessPlatform
	}
	d := &Device{
		bus: b, slot: slot, name: name, dev: dev, mem: mem, opt: opt,
		log:     b.log.WithField("device", name),
		offered: offered,
		nvec:    nvec,
		barAddr: addr, mapped: addr,
		intLine: opt.IRQ,
		table:   make([]msixEntry, nvec),
		pending: make([]uint64, (nvec+63)/64),
		queues:  make([]queueRegs, len(sizes)),
	}
	for i := range d.table {
		d.table[i].masked = true // PCI spec: entries reset masked
	}
	d.resetLocked()
	return d, nil
}

// Name returns the device name used in logs.
func (d *Device) Name() string { return d.name }

// Slot returns the PCI device number on bus 0.
func (d *Device) Slot() int { return d.slot }

// Virtio returns the device model.
func (d *Device) Virtio() virtio.Device { return d.dev }

// Region returns BAR0 at its current address.
func (d *Device) Region() Region {
	return Region{Name: d.name, Addr: d.mapped, Size: barSize, Dev: barDevice{d}}
}

// NumQueues returns the number of virtqueues.
func (d *Device) NumQueues() int { return len(d.queues) }

// NotifyAddr returns the guest-physical doorbell address of queue q (for an
// ioeventfd); writes there of any size mean "kick queue q".
func (d *Device) NotifyAddr(q int) uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.mapped + offNotify + uint64(q)*notifyMultiple
}

// Status returns the device status byte.
func (d *Device) Status() uint8 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.status
}

// Notify is the queue doorbell: called by the notify region on an MMIO
// write, or by the VMM when its ioeventfd for NotifyAddr(q) fires. It never
// blocks, and a panic of the device model's Notify is the device's failure
// (virtio.Fail), not its caller's.
func (d *Device) Notify(q int) {
	if q < 0 || q >= len(d.queues) || !d.notifyActive.Load() {
		return
	}
	d.Stats.Notifies.Add(1)
	defer d.recoverNotify()
	d.dev.Notify(q)
}

func (d *Device) recoverNotify() {
	if v := recover(); v != nil {
		virtio.Fail(interrupter{d}, &d.Stats.Panics, d.log, "notify", v)
	}
}

// Close stops the device and releases its host resources.
func (d *Device) Close() error {
	d.mu.Lock()
	wasActive := d.active
	d.active = false
	d.notifyActive.Store(false)
	d.mu.Unlock()
	if wasActive {
		d.dev.Reset()
	}
	if err := d.dev.Close(); err != nil {
		return fmt.Errorf("close %s: %w", d.name, err)
	}
	return nil
}

// ---- configuration space (type 0 header, §4.1.2, §4.1.4) ----

func (d *Device) classCode() uint32 {
	switch d.dev.Type() {
	case virtio.TypeNet:
		return 0x020000 // network controller, ethernet
	case virtio.TypeBlock:
		return 0x018000 // mass storage, other
	case virtio.TypeConsole:
		return 0x078000 // communication controller, other
	default:
		return 0xff0000 // unclassified
	}
}

func (d *Device) readConfig(reg uint16) uint32 {
	if reg == capPCICfg+16 {
		return d.windowAccess(0, false)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	devID := uint32(DeviceIDBase + uint16(d.dev.Type()))
	switch reg {
	case 0x00:
		return devID<<16 | VendorVirtio
	case 0x04:
		return uint32(d.command) | 1<<4<<16 // status: capabilities list
	case 0x08:
		return d.classCode()<<8 | 1 // revision 1 (§4.1.2.1)
	case 0x0c:
		return 0 // header type 0, single function
	case 0x10:
		return uint32(d.barAddr)&^(barSize-1) | 0x4 // 64-bit memory BAR, not prefetchable
	case 0x14:
		return uint32(d.barAddr >> 32)
	case 0x2c:
		return 0x40<<16 | VendorVirtio // subsystem id ≥ 0x40 (§4.1.2.1)
	case 0x34:
		return capCommon
	case 0x3c:
		return 1<<8 | uint32(d.intLine) // INTA#
	case capCommon:
		return capHeader(capNotify, 16, cfgTypeCommon)
	case capCommon + 4:
		return 0 // bar 0, id 0
	case capCommon + 8:
		return offCommon
	case capCommon + 12:
		return lenCommon
	case capNotify:
		return capHeader(capISR, 20, cfgTypeNotify)
	case capNotify + 4:
		return 0
	case capNotify + 8:
		return offNotify
	case capNotify + 12:
		return uint32(len(d.queues)) * notifyMultiple
	case capNotify + 16:
		return notifyMultiple
	case capISR:
		return capHeader(capDevice, 16, cfgTypeISR)
	case capISR + 4:
		return 0
	case capISR + 8:
		return offISR
	case capISR + 12:
		return lenISR
	case capDevice:
		return capHeader(capMSIX, 16, cfgTypeDevice)
	case capDevice + 4:
		return 0
	case capDevice + 8:
		return offDevCfg
	case capDevice + 12:
		return lenDevCfg
	case capMSIX:
		return uint32(d.msixCtl|uint16(d.nvec-1))<<16 | capPCICfg<<8 | capIDMSIX
	case capMSIX + 4:
		return offMSIXTable // BIR 0
	case capMSIX + 8:
		return offMSIXPBA // BIR 0
	case capPCICfg:
		return capHeader(0, 20, cfgTypePCICfg)
	case capPCICfg + 4:
		return uint32(d.winBar)
	case capPCICfg + 8:
		return d.winOff
	case capPCICfg + 12:
		return d.winLen
	}
	return 0
}

// windowAccess reads or writes pci_cfg_data: cap.length (1, 2 or 4) bytes
// at cap.offset of BAR cap.bar (§4.1.4.9.1; other lengths or BARs: no
// access, reads zero).
func (d *Device) windowAccess(val uint32, write bool) uint32 {
	d.mu.Lock()
	bar, off, n := d.winBar, d.winOff, d.winLen
	d.mu.Unlock()
	if bar != 0 || (n != 1 && n != 2 && n != 4) || uint64(off)+uint64(n) > barSize {
		return 0
	}
	var b [4]byte
	if write {
		binary.LittleEndian.PutUint32(b[:], val)
		d.barWrite(uint64(off), b[:n])
		return 0
	}
	d.barRead(uint64(off), b[:n])
	return binary.LittleEndian.Uint32(b[:])
}

// capHeader builds the first dword of a virtio vendor capability:
// cap_vndr, cap_next, cap_len, cfg_type (§4.1.4 struct virtio_pci_cap).
func capHeader(next, length, cfgType uint32) uint32 {
	return capIDVendor | next<<8 | length<<16 | cfgType<<24
}

func (d *Device) writeConfig(reg uint16, val, mask uint32) {
	if reg == capPCICfg+16 {
		d.windowAccess(val, true)
		return
	}
	d.mu.Lock()
	var moved *[2]Region
	switch reg {
	case 0x04:
		old := d.command
		d.command = uint16((uint32(d.command)&^mask | val&mask) & cmdWritable)
		if d.command&cmdINTxOff != 0 && old&cmdINTxOff == 0 && d.intxLevel {
			d.setINTxLocked(false)
		}
		moved = d.checkBARLocked()
	case 0x10:
		lo := uint32(d.barAddr)&^mask | val&mask
		d.barAddr = d.barAddr&^0xffffffff | uint64(lo&^(barSize-1)&0xfffffff0)
		moved = d.checkBARLocked()
	case 0x14:
		hi := uint32(d.barAddr>>32)&^mask | val&mask
		d.barAddr = d.barAddr&0xffffffff | uint64(hi)<<32
		moved = d.checkBARLocked()
	case 0x3c:
		if mask&0xff != 0 {
			d.intLine = uint8(val)
		}
	case capPCICfg + 4:
		if mask&0xff != 0 {
			d.winBar = uint8(val)
		}
	case capPCICfg + 8:
		d.winOff = d.winOff&^mask | val&mask
	case capPCICfg + 12:
		d.winLen = d.winLen&^mask | val&mask
	case capMSIX:
		ctl := uint16((uint32(d.msixCtl)<<16&^mask | val&mask) >> 16)
		d.msixCtl = ctl & msixCtrlMask
		d.deliverPendingLocked()
	}
	d.mu.Unlock()
	if moved != nil {
		d.log.WithFields(logrus.Fields{"from": fmt.Sprintf("%#x", moved[0].Addr), "to": fmt.Sprintf("%#x", moved[1].Addr)}).Debug("BAR moved")
		if cb := d.bus.opt.OnBARMove; cb != nil {
			if err := cb(moved[0], moved[1]); err != nil {
				d.log.WithError(err).Warn("re-register moved BAR")
			}
		}
	}
}

// checkBARLocked decides whether the programmed BAR is a real new address:
// memory decoding on, not a sizing pattern (all ones in the size bits), and
// different from what the VMM routes now.
func (d *Device) checkBARLocked() *[2]Region {
	if d.command&cmdMemory == 0 || d.barAddr == d.mapped {
		return nil
	}
	if d.barAddr == 0 || d.barAddr+barSize < d.barAddr || d.barAddr>>32 == 0xffffffff || uint32(d.barAddr) == 0xffffffff&^(barSize-1) {
		return nil
	}
	old := d.Region()
	d.mapped = d.barAddr
	return &[2]Region{old, d.Region()}
}

// ---- BAR0 ----

type barDevice struct{ d *Device }

func (b barDevice) BusRead(_ int, off uint64, data []byte) { b.d.barRead(off, data) }

func (b barDevice) BusWrite(_ int, off uint64, data []byte) { b.d.barWrite(off, data) }

func (d *Device) barRead(off uint64, data []byte) {
	fill(data, 0)
	n := uint64(len(data))
	switch {
	case off >= offCommon && off+n <= offCommon+lenCommon:
		d.mu.Lock()
		var buf [lenCommon]byte
		d.commonSnapshotLocked(&buf)
		d.mu.Unlock()
		copy(data, buf[off-offCommon:])
	case off >= offISR && off+n <= offISR+lenISR:
		d.mu.Lock()
		if off == offISR {
			// §4.1.4.5: reading the ISR clears it and de-asserts INTx.
			data[0] = d.isr
			d.isr = 0
			d.setINTxLocked(false)
		}
		d.mu.Unlock()
	case off >= offDevCfg && off+n <= offDevCfg+lenDevCfg:
		d.dev.ReadConfig(off-offDevCfg, data)
	case off >= offNotify && off+n <= offNotify+uint64(len(d.queues))*notifyMultiple:
		// doorbells read as zero
	case off >= offMSIXTable && off+n <= offMSIXTable+uint64(d.nvec)*16:
		d.mu.Lock()
		d.msixTableReadLocked(off-offMSIXTable, data)
		d.mu.Unlock()
	case off >= offMSIXPBA && off+n <= offMSIXPBA+uint64(len(d.pending))*8:
		d.mu.Lock()
		var b [8]byte
		i := (off - offMSIXPBA) / 8
		binary.LittleEndian.PutUint64(b[:], d.pending[i])
		copy(data, b[(off-offMSIXPBA)%8:])
		d.mu.Unlock()
	default:
		d.badAccess(off, len(data), false)
	}
}

func (d *Device) barWrite(off uint64, data []byte) {
	n := uint64(len(data))
	switch {
	case off >= offNotify && off+n <= offNotify+uint64(len(d.queues))*notifyMultiple:
		d.Notify(int((off - offNotify) / notifyMultiple))
	case off >= offCommon && off+n <= offCommon+lenCommon:
		d.commonWrite(off-offCommon, data)
	case off >= offDevCfg && off+n <= offDevCfg+lenDevCfg:
		d.dev.WriteConfig(off-offDevCfg, data)
	case off >= offMSIXTable && off+n <= offMSIXTable+uint64(d.nvec)*16:
		d.mu.Lock()
		d.msixTableWriteLocked(off-offMSIXTable, data)
		d.mu.Unlock()
	case off >= offISR && off+n <= offISR+lenISR, off >= offMSIXPBA && off+n <= offMSIXPBA+uint64(len(d.pending))*8:
		// read-only
	default:
		d.badAccess(off, len(data), true)
	}
}

func (d *Device) badAccess(off uint64, n int, write bool) {
	d.Stats.BadAccesses.Add(1)
	if ok, s := d.rl.Allow(); ok {
		guestlog.Suppressed(d.log, s).WithFields(logrus.Fields{"off": fmt.Sprintf("%#x", off), "len": n, "write": write}).
			Warn("access to an unused part of the virtio BAR")
	}
}

// ---- common configuration (§4.1.4.3) ----

// Field offsets of struct virtio_pci_common_cfg.
const (
	ccDeviceFeatureSelect = 0
	ccDeviceFeature       = 4
	ccDriverFeatureSelect = 8
	ccDriverFeature       = 12
	ccMSIXConfig          = 16
	ccNumQueues           = 18
	ccDeviceStatus        = 20
	ccConfigGeneration    = 21
	ccQueueSelect         = 22
	ccQueueSize           = 24
	ccQueueMSIXVector     = 26
	ccQueueEnable         = 28
	ccQueueNotifyOff      = 30
	ccQueueDesc           = 32
	ccQueueDriver         = 40
	ccQueueDevice         = 48
	ccQueueNotifData      = 56
	ccQueueReset          = 58
)

var ccFields = [...]struct{ off, size int }{
	{ccDeviceFeatureSelect, 4}, {ccDeviceFeature, 4}, {ccDriverFeatureSelect, 4}, {ccDriverFeature, 4},
	{ccMSIXConfig, 2}, {ccNumQueues, 2}, {ccDeviceStatus, 1}, {ccConfigGeneration, 1},
	{ccQueueSelect, 2}, {ccQueueSize, 2}, {ccQueueMSIXVector, 2}, {ccQueueEnable, 2},
	{ccQueueNotifyOff, 2}, {ccQueueDesc, 8}, {ccQueueDriver, 8}, {ccQueueDevice, 8},
	{ccQueueNotifData, 2}, {ccQueueReset, 2},
}

func (d *Device) selQueue() *queueRegs {
	if int(d.queueSel) < len(d.queues) {
		return &d.queues[d.queueSel]
	}
	return nil
}

func (d *Device) commonSnapshotLocked(b *[lenCommon]byte) {
	le := binary.LittleEndian
	le.PutUint32(b[ccDeviceFeatureSelect:], d.devFeatSel)
	if d.devFeatSel < 2 {
		le.PutUint32(b[ccDeviceFeature:], uint32(d.offered>>(32*d.devFeatSel)))
	}
	le.PutUint32(b[ccDriverFeatureSelect:], d.drvFeatSel)
	if d.drvFeatSel < 2 {
		le.PutUint32(b[ccDriverFeature:], uint32(d.drvFeatures>>(32*d.drvFeatSel)))
	}
	le.PutUint16(b[ccMSIXConfig:], d.msixConfig)
	le.PutUint16(b[ccNumQueues:], uint16(len(d.queues)))
	b[ccDeviceStatus] = d.status
	b[ccConfigGeneration] = d.configGen
	le.PutUint16(b[ccQueueSelect:], d.queueSel)
	if q := d.selQueue(); q != nil {
		le.PutUint16(b[ccQueueSize:], q.size)
		le.PutUint16(b[ccQueueMSIXVector:], q.vector)
		if q.enable {
			le.PutUint16(b[ccQueueEnable:], 1)
		}
		le.PutUint16(b[ccQueueNotifyOff:], d.queueSel)
		le.PutUint64(b[ccQueueDesc:], q.desc)
		le.PutUint64(b[ccQueueDriver:], q.driver)
		le.PutUint64(b[ccQueueDevice:], q.device)
		le.PutUint16(b[ccQueueNotifData:], d.queueSel)
	}
}

// commonWrite merges the access into a snapshot and applies every field it
// touched, so any access width works the same way.
func (d *Device) commonWrite(off uint64, data []byte) {
	d.mu.Lock()
	var buf [lenCommon]byte
	d.commonSnapshotLocked(&buf)
	copy(buf[off:], data)
	end := int(off) + len(data)
	var activate, reset bool
	le := binary.LittleEndian
	for _, f := range ccFields {
		if f.off >= end || f.off+f.size <= int(off) {
			continue
		}
		v := buf[f.off : f.off+f.size]
		switch f.off {
		case ccDeviceFeatureSelect:
			d.devFeatSel = le.Uint32(v)
		case ccDriverFeatureSelect:
			d.drvFeatSel = le.Uint32(v)
		case ccDriverFeature:
			// §2.2.2: features are frozen once FEATURES_OK is set.
			if d.drvFeatSel < 2 && d.status&StatusFeaturesOK == 0 {
				sh := 32 * d.drvFeatSel
				d.drvFeatures = d.drvFeatures&^(0xffffffff<<sh) | uint64(le.Uint32(v))<<sh
			}
		case ccMSIXConfig:
			d.msixConfig = d.checkVector(le.Uint16(v))
		case ccDeviceStatus:
			activate, reset = d.setStatusLocked(v[0])
		case ccQueueSelect:
			d.queueSel = le.Uint16(v)
		case ccQueueSize:
			if q := d.selQueue(); q != nil && !q.enable {
				// §4.1.4.3.2: the driver may only shrink; keep it a power of two.
				if s := le.Uint16(v); s != 0 && s <= q.maxSize && s&(s-1) == 0 {
					q.size = s
				} else {
					d.Stats.BadAccesses.Add(1)
				}
			}
		case ccQueueMSIXVector:
			if q := d.selQueue(); q != nil {
				q.vector = d.checkVector(le.Uint16(v))
			}
		case ccQueueEnable:
			if q := d.selQueue(); q != nil && le.Uint16(v) == 1 && d.status&StatusDriverOK == 0 {
				q.enable = true
			}
		case ccQueueDesc, ccQueueDriver, ccQueueDevice:
			if q := d.selQueue(); q != nil && !q.enable {
				a := le.Uint64(v)
				switch f.off {
				case ccQueueDesc:
					q.desc = a
				case ccQueueDriver:
					q.driver = a
				default:
					q.device = a
				}
			}
		}
	}
	d.mu.Unlock()
	if reset {
		d.reset()
	}
	if activate {
		d.activate()
	}
}

// checkVector maps an out-of-table MSI-X vector to NO_VECTOR so that the
// driver, reading it back, learns the mapping failed (§4.1.5.1.2).
func (d *Device) checkVector(v uint16) uint16 {
	if v != NoVector && int(v) >= d.nvec {
		return NoVector
	}
	return v
}

// unprotected reports a driver without protected-guest support. Called with
// d.mu held.
func (d *Device) unprotected(why string) {
	d.Stats.Unprotected.Add(1)
	d.log.WithField("reason", why).Debug("driver without protected-guest support")
	if d.opt.OnUnprotected != nil {
		d.opt.OnUnprotected(d.name, why)
	}
}

// setStatusLocked applies a driver write of the status byte (§2.1, §3.1.1).
func (d *Device) setStatusLocked(v uint8) (activate, reset bool) {
	if v == 0 {
		return false, true
	}
	if v&^d.status&StatusFeaturesOK != 0 {
		// §2.2 / §6: only accept the features we offered, and VERSION_1.
		if d.drvFeatures&^d.offered != 0 || d.drvFeatures&virtio.FVersion1 == 0 {
			d.Stats.FeatureRejects.Add(1)
			d.log.WithField("features", fmt.Sprintf("%#x", d.drvFeatures)).Debug("rejecting FEATURES_OK")
			v &^= StatusFeaturesOK
		} else if d.opt.AccessPlatform && d.drvFeatures&virtio.FAccessPlatform == 0 {
			// A protected guest's driver must go through the DMA API.
			d.Stats.FeatureRejects.Add(1)
			d.unprotected(fmt.Sprintf("driver did not accept VIRTIO_F_ACCESS_PLATFORM (features %#x); FEATURES_OK refused", d.drvFeatures))
			v &^= StatusFeaturesOK
		} else if d.opt.AccessPlatform && d.opt.GuestShares != nil && !d.opt.GuestShares() {
			// No shared memory at all: nowhere to put a DMA buffer. Refusing
			// now makes the guest's probe fail cleanly (Linux: "device
			// refused features", -ENODEV) instead of hanging on I/O later.
			d.Stats.FeatureRejects.Add(1)
			d.unprotected("FEATURES_OK while the guest has shared no memory at all (no swiotlb pool); FEATURES_OK refused")
			v &^= StatusFeaturesOK
		}
	}
	if v&^d.status&StatusDriverOK != 0 && d.status&StatusFeaturesOK == 0 && v&StatusFeaturesOK == 0 {
		v &^= StatusDriverOK // DRIVER_OK without FEATURES_OK: ignore
	}
	// Bits are only ever set by the driver; keep DEVICE_NEEDS_RESET.
	newStatus := d.status | v&^StatusDeviceNeedsReset
	if newStatus&StatusDriverOK != 0 && d.status&StatusDriverOK == 0 {
		activate = true
	}
	d.status = newStatus
	return activate, false
}

func (d *Device) activate() {
	d.mu.Lock()
	if d.active || d.status&StatusDriverOK == 0 {
		d.mu.Unlock()
		return
	}
	queues := make([]*virtio.Queue, len(d.queues))
	var err error
	for i, r := range d.queues {
		if !r.enable {
			continue
		}
		cfg := virtio.QueueConfig{Size: r.size, Desc: memory.GPA(r.desc), Avail: memory.GPA(r.driver), Used: memory.GPA(r.device)}
		queues[i], err = virtio.NewQueue(d.mem, cfg, d.drvFeatures)
		if err != nil {
			err = fmt.Errorf("queue %d: %w", i, err)
			break
		}
		if d.opt.AccessPlatform {
			if err = queues[i].CheckRings(); err != nil {
				err = fmt.Errorf("queue %d: %w", i, err)
				if errors.Is(err, memory.ErrPrivate) {
					d.unprotected("DRIVER_OK with a virtqueue in private memory: " + err.Error())
				}
				break
			}
		}
	}
	features := d.drvFeatures
	d.active = err == nil
	d.mu.Unlock()
	if err == nil {
		err = d.dev.Activate(virtio.Activation{
			Mem: d.mem, Features: features, Queues: queues, Interrupt: interrupter{d}, Log: d.log,
		})
	}
	if err != nil {
		d.log.WithError(err).Warn("activate failed; device needs reset")
		d.mu.Lock()
		d.active = false
		d.mu.Unlock()
		interrupter{d}.NeedsReset()
		return
	}
	d.notifyActive.Store(true)
}

// reset implements a driver write of 0 to device_status (§2.4): the device
// stops touching guest memory before the status reads back 0.
func (d *Device) reset() {
	d.notifyActive.Store(false)
	d.mu.Lock()
	wasActive := d.active
	d.active = false
	d.mu.Unlock()
	if wasActive {
		d.dev.Reset()
	}
	d.mu.Lock()
	d.resetLocked()
	d.mu.Unlock()
}

func (d *Device) resetLocked() {
	sizes := d.dev.QueueMaxSizes()
	for i := range d.queues {
		d.queues[i] = queueRegs{size: sizes[i], maxSize: sizes[i], vector: NoVector}
	}
	d.status = 0
	d.devFeatSel, d.drvFeatSel, d.drvFeatures = 0, 0, 0
	d.msixConfig = NoVector
	d.queueSel = 0
	d.isr = 0
	d.setINTxLocked(false)
}

// ---- interrupts (§4.1.4.5, §4.1.5.1) ----

type interrupter struct{ d *Device }

func (i interrupter) Used(q int) {
	d := i.d
	d.mu.Lock()
	v := uint16(NoVector)
	if q >= 0 && q < len(d.queues) {
		v = d.queues[q].vector
	}
	addr, data, send := d.raiseLocked(v, 1)
	d.mu.Unlock()
	d.sendMSI(addr, data, send)
}

func (i interrupter) ConfigChanged() {
	d := i.d
	d.mu.Lock()
	d.configGen++
	addr, data, send := d.raiseLocked(d.msixConfig, 2)
	d.mu.Unlock()
	d.sendMSI(addr, data, send)
}

func (i interrupter) NeedsReset() {
	d := i.d
	d.mu.Lock()
	if d.status&StatusDriverOK == 0 && d.status&StatusFeaturesOK == 0 {
		d.mu.Unlock()
		return
	}
	d.status |= StatusDeviceNeedsReset
	addr, data, send := d.raiseLocked(d.msixConfig, 2)
	d.mu.Unlock()
	d.sendMSI(addr, data, send)
}

// raiseLocked routes an interrupt: through the MSI-X vector when MSI-X is
// enabled (pending if masked), else the ISR bit and INTx.
func (d *Device) raiseLocked(vector uint16, isrBit uint8) (uint64, uint32, bool) {
	d.Stats.Interrupts.Add(1)
	if d.msixCtl&msixEnable != 0 {
		if vector == NoVector || int(vector) >= d.nvec {
			return 0, 0, false
		}
		e := d.table[vector]
		if e.masked || d.msixCtl&msixMaskAll != 0 {
			d.pending[vector/64] |= 1 << (vector % 64)
			return 0, 0, false
		}
		return e.addr, e.data, true
	}
	d.isr |= isrBit
	d.setINTxLocked(true)
	return 0, 0, false
}

func (d *Device) setINTxLocked(level bool) {
	if level && d.command&cmdINTxOff != 0 {
		level = false
	}
	if level == d.intxLevel && !level {
		return
	}
	d.intxLevel = level
	if d.opt.INTx != nil {
		d.opt.INTx(level)
	}
}

func (d *Device) sendMSI(addr uint64, data uint32, send bool) {
	if !send {
		return
	}
	if d.bus.opt.MSI == nil {
		d.Stats.MSIErrors.Add(1)
		return
	}
	if err := d.bus.opt.MSI.SignalMSI(addr, data); err != nil {
		d.Stats.MSIErrors.Add(1)
		d.rl.Warn(d.log, err, "signal MSI")
	}
}

// deliverPendingLocked sends pending vectors that are now unmasked (PCI
// 3.0 §6.8.3.4: a pending message is sent when its mask is cleared).
func (d *Device) deliverPendingLocked() {
	if d.msixCtl&msixEnable == 0 || d.msixCtl&msixMaskAll != 0 {
		return
	}
	for v := 0; v < d.nvec; v++ {
		if d.pending[v/64]&(1<<(v%64)) != 0 && !d.table[v].masked {
			d.pending[v/64] &^= 1 << (v % 64)
			e := d.table[v]
			// Sending under the lock keeps ordering with later raises; the
			// sender is a single ioctl.
			d.sendMSI(e.addr, e.data, true)
		}
	}
}

func (d *Device) msixTableReadLocked(off uint64, data []byte) {
	var b [16]byte
	for i := range data {
		o := off + uint64(i)
		e := d.table[o/16]
		binary.LittleEndian.PutUint64(b[0:], e.addr)
		binary.LittleEndian.PutUint32(b[8:], e.data)
		var ctl uint32
		if e.masked {
			ctl = 1
		}
		binary.LittleEndian.PutUint32(b[12:], ctl)
		data[i] = b[o%16]
	}
}

func (d *Device) msixTableWriteLocked(off uint64, data []byte) {
	// Apply byte by byte through a 16-byte image of each touched entry.
	for i := 0; i < len(data); {
		v := off + uint64(i) // byte offset in table
		idx := v / 16
		e := &d.table[idx]
		var b [16]byte
		binary.LittleEndian.PutUint64(b[0:], e.addr)
		binary.LittleEndian.PutUint32(b[8:], e.data)
		if e.masked {
			b[12] = 1
		}
		for ; i < len(data) && (off+uint64(i))/16 == idx; i++ {
			b[(off+uint64(i))%16] = data[i]
		}
		e.addr = binary.LittleEndian.Uint64(b[0:])
		e.data = binary.LittleEndian.Uint32(b[8:])
		e.masked = b[12]&1 != 0
	}
	d.deliverPendingLocked()
}
