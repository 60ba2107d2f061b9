package pvmem

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"
	"syscall"

	"github.com/sirupsen/logrus"
	"github.com/vmmgo/vmm/internal/guestlog"
	"github.com/vmmgo/vmm/memory"
)

// Port window (docs/pvmem.md §1).
const (
	DefaultPort = 0x0A50 // base I/O port the VMM registers the device at by default
	NumPorts    = 16     // registers: base .. base+15, one port each
	// DecodePorts is the window the VMM registers on the port bus: the 16
	// register ports plus 3, so that a 4-byte access at any register (the
	// last one starts at base+0xF and covers up to base+0x12) reaches the
	// device instead of running past the window. Accesses that start at
	// base+0x10 .. base+0x12 read all ones and are ignored when written.
	DecodePorts = NumPorts + 3
)

// Register offsets from the base port. Every register is 32 bits wide and
// has its own port (docs/pvmem.md §2).
const (
	RegMagic       = 0x0 // R: Magic
	RegVersion     = 0x1 // R: Version
	RegFeatures    = 0x2 // R: Feature* bits
	RegGPALo       = 0x3 // RW: request GPA bits 31:0
	RegGPAHi       = 0x4 // RW: request GPA bits 63:32
	RegNPages      = 0x5 // RW: request length in 4 KiB pages
	RegAttrs       = 0x6 // RW: KVM_HC_MAP_GPA_RANGE attrs (bit 4 private, bits 3:0 page-size hint)
	RegConvert     = 0x7 // W 1: convert; R: convert and return the status
	RegStatus      = 0x8 // R: status of the last CONVERT or LIST_CONVERT
	RegListLo      = 0x9 // RW: request list GPA bits 31:0
	RegListHi      = 0xA // RW: request list GPA bits 63:32
	RegListCount   = 0xB // RW: entries in the list
	RegListConvert = 0xC // W 1: process the list; R: process and return the status
	RegListDone    = 0xD // R: entries of the last list that succeeded
	RegMaxBatch    = 0xE // R: MaxBatch
	RegState       = 0xF // R: state of the 4 KiB page at GPA (FeatureState)
)

// Identification values.
const (
	Magic   = 0x434D5650 // "PVMC" in little-endian byte order
	Version = 1
)

// Feature bits (RegFeatures).
const (
	FeatureRegisters = 1 << 0 // the single-request register interface
	FeatureBatch     = 1 << 1 // the request list interface
	FeatureZero      = 1 << 2 // conversions zero the pages they change (policy "zero")
	FeatureState     = 1 << 3 // the STATE register at base+0xF
)

// STATE register values (RegState).
const (
	StateShared  = 0
	StatePrivate = 1
	StateNotRAM  = 0xFFFFFFDE // -34 (ERANGE) as a 32-bit register value
)

// Request list layout (docs/pvmem.md §4).
const (
	EntrySize = 32  // {gpa u64, npages u64, attrs u64, status u64}, little endian
	MaxBatch  = 256 // entries per list: 8 KiB
)

// Status codes: 0 or a negative Linux errno, as u32 in RegStatus and
// sign-extended u64 in list entries (docs/pvmem.md §3).
const (
	StatusOK           int64 = 0
	StatusInvalid      int64 = -int64(syscall.EINVAL)    // -22: malformed request
	StatusOutOfRange   int64 = -int64(syscall.ERANGE)    // -34: not guest RAM
	StatusBusy         int64 = -int64(syscall.EBUSY)     // -16: host could not convert now; retry
	StatusIO           int64 = -int64(syscall.EIO)       // -5: host failure
	StatusListFault    int64 = -int64(syscall.EFAULT)    // -14: list not in guest RAM
	StatusListPrivate  int64 = -int64(syscall.EACCES)    // -13: list (or its status write-back) in a private page
	StatusListTooBig   int64 = -int64(syscall.E2BIG)     // -7: count > MaxBatch
	StatusNotProcessed int64 = -int64(syscall.ECANCELED) // -125: entry after a failed one
	StatusNotKernel    int64 = -int64(syscall.EPERM)     // -1: conversion asked from guest user mode (CPL > 0)
)

// Memory is what the device needs from guest RAM; *memory.Guest has it.
// The device never converts through it: conversions go through
// Config.Convert, the VMM's counted and logged entry point.
type Memory interface {
	DeviceRead(gpa memory.GPA, p []byte) error
	DeviceWrite(gpa memory.GPA, p []byte) error
	IsPrivate(gpa memory.GPA) (bool, error)
}

// Transport says which interface of the device asked for a conversion.
type Transport int

const (
	TransportRegister Transport = iota // CONVERT
	TransportList                      // an entry of a LIST_CONVERT
)

// Config sets up a Device.
type Config struct {
	VCPUs         int           // number of vCPUs; each has its own registers
	ZeroOnConvert bool          // advertise FeatureZero (the Guest's policy is PolicyZero)
	Log           *logrus.Entry // rate-limited guest error reports; nil discards

	// Convert performs one conversion for vcpu (required). The VMM passes
	// its single entry point for this transport, which counts and logs.
	Convert func(vcpu int, t Transport, req memory.ConvertRequest) (memory.ConvertResult, error)
	// CPL returns the current privilege level of vcpu (required unless
	// AllowUser). It is called on the vCPU's own thread, only when a
	// conversion doorbell (CONVERT, LIST_CONVERT) is rung: conversions are
	// accepted from guest kernel mode (CPL 0) only, because a guest user
	// process can reach the ports when the host ignores IOPL.
	CPL func(vcpu int) (int, error)
	// AllowUser accepts conversions from any CPL. For tests and benchmarks
	// of tiny guests that convert from CPL3 only; never for a real guest.
	AllowUser bool
}

// Device is the paravirtual conversion port. It implements BusRead/BusWrite.
type Device struct {
	mem      Memory
	convert  func(vcpu int, t Transport, req memory.ConvertRequest) (memory.ConvertResult, error)
	cpl      func(vcpu int) (int, error)
	log      *logrus.Entry
	features uint32
	vcpus    []vcpuRegs // index = vCPU; only that vCPU's thread touches it
	logLimit guestlog.Limiter
	stats    counters
}

type vcpuRegs struct {
	gpa        uint64
	npages     uint32
	attrs      uint32
	status     uint32
	list       uint64
	count      uint32
	done       uint32
	snapshot   [MaxBatch * EntrySize]byte
	statusBack [8]byte
}

type counters struct {
	single, batch, entries, failed, badAccess, notKernel atomic.Uint64
}

// Stats counts the device's work.
type Stats struct {
	Single    uint64 // register-interface conversions attempted
	Batches   uint64 // lists processed
	Entries   uint64 // list entries attempted
	Failed    uint64 // conversions and lists that ended with a non-zero status
	BadAccess uint64 // accesses with a bad size or vCPU index, or past the registers
	NotKernel uint64 // conversions and lists refused because the vCPU was not at CPL 0
}

// New creates the device.
func New(mem Memory, cfg Config) (*Device, error) {
	if mem == nil {
		return nil, errors.New("pvmem: no guest memory")
	}
	if cfg.VCPUs <= 0 {
		return nil, fmt.Errorf("pvmem: %d vCPUs", cfg.VCPUs)
	}
	if cfg.Convert == nil {
		return nil, errors.New("pvmem: no conversion entry point")
	}
	if cfg.CPL == nil && !cfg.AllowUser {
		return nil, errors.New("pvmem: no way to read a vCPU's privilege level")
	}
	d := &Device{
		mem:      mem,
		convert:  cfg.Convert,
		log:      guestlog.OrDiscard(cfg.Log).WithField("device", "pvmem"),
		features: FeatureRegisters | FeatureBatch | FeatureState,
		vcpus:    make([]vcpuRegs, cfg.VCPUs),
	}
	if cfg.ZeroOnConvert {
		d.features |= FeatureZero
	}
	if !cfg.AllowUser {
		d.cpl = cfg.CPL
	}
	return d, nil
}

// Stats returns a snapshot of the counters.
func (d *Device) Stats() Stats {
	return Stats{
		Single:    d.stats.single.Load(),
		Batches:   d.stats.batch.Load(),
		Entries:   d.stats.entries.Load(),
		Failed:    d.stats.failed.Load(),
		BadAccess: d.stats.badAccess.Load(),
		NotKernel: d.stats.notKernel.Load(),
	}
}

func (d *Device) regs(vcpu int, off uint64, data []byte) *vcpuRegs {
	if vcpu < 0 || vcpu >= len(d.vcpus) || len(data) == 0 || len(data) > 4 || off >= NumPorts {
		d.stats.badAccess.Add(1)
		return nil
	}
	return &d.vcpus[vcpu]
}

// BusRead reads the register at off (the port minus the base). Accesses of
// 1, 2 or 4 bytes return the low bytes of the 32-bit register, whatever
// ports beyond off they span; other sizes, offsets past the registers and
// unknown vCPUs read all ones.
func (d *Device) BusRead(vcpu int, off uint64, data []byte) {
	r := d.regs(vcpu, off, data)
	if r == nil {
		for i := range data {
			data[i] = 0xff
		}
		return
	}
	var v uint32
	switch off {
	case RegMagic:
		v = Magic
	case RegVersion:
		v = Version
	case RegFeatures:
		v = d.features
	case RegGPALo:
		v = uint32(r.gpa)
	case RegGPAHi:
		v = uint32(r.gpa >> 32)
	case RegNPages:
		v = r.npages
	case RegAttrs:
		v = r.attrs
	case RegConvert:
		d.convertOne(vcpu, r)
		v = r.status
	case RegStatus:
		v = r.status
	case RegListLo:
		v = uint32(r.list)
	case RegListHi:
		v = uint32(r.list >> 32)
	case RegListCount:
		v = r.count
	case RegListConvert:
		d.convertList(vcpu, r)
		v = r.status
	case RegListDone:
		v = r.done
	case RegMaxBatch:
		v = MaxBatch
	case RegState:
		v = d.state(r.gpa)
	}
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], v)
	copy(data, b[:])
}

// BusWrite writes the register at off. Writes of 1 or 2 bytes are
// zero-extended to 32 bits. Writes to read-only registers are ignored.
func (d *Device) BusWrite(vcpu int, off uint64, data []byte) {
	r := d.regs(vcpu, off, data)
	if r == nil {
		return
	}
	var b [4]byte
	copy(b[:], data)
	v := binary.LittleEndian.Uint32(b[:])
	switch off {
	case RegGPALo:
		r.gpa = r.gpa&^0xffffffff | uint64(v)
	case RegGPAHi:
		r.gpa = r.gpa&0xffffffff | uint64(v)<<32
	case RegNPages:
		r.npages = v
	case RegAttrs:
		r.attrs = v
	case RegConvert:
		if v != 1 {
			r.status = statusReg(StatusInvalid)
			d.stats.failed.Add(1)
			return
		}
		d.convertOne(vcpu, r)
	case RegListLo:
		r.list = r.list&^0xffffffff | uint64(v)
	case RegListHi:
		r.list = r.list&0xffffffff | uint64(v)<<32
	case RegListCount:
		r.count = v
	case RegListConvert:
		if v != 1 {
			r.status = statusReg(StatusInvalid)
			d.stats.failed.Add(1)
			return
		}
		d.convertList(vcpu, r)
	}
}

// Status maps an error from memory.Guest.Convert (or nil) to a status code.
// The KVM_HC_MAP_GPA_RANGE handler can use it too, so both transports
// answer alike.
func Status(err error) int64 {
	switch {
	case err == nil:
		return StatusOK
	case errors.Is(err, memory.ErrInvalid):
		return StatusInvalid
	case errors.Is(err, memory.ErrOutOfRange):
		return StatusOutOfRange
	case errors.Is(err, syscall.EAGAIN), errors.Is(err, syscall.EBUSY), errors.Is(err, syscall.EINTR):
		return StatusBusy
	default:
		return StatusIO
	}
}

// statusReg is the 32-bit register form of a status (two's complement).
func statusReg(st int64) uint32 { return uint32(st) }

// state is the STATE register: the VMM's view of the page containing gpa.
func (d *Device) state(gpa uint64) uint32 {
	p, err := d.mem.IsPrivate(memory.GPA(gpa))
	switch {
	case err != nil:
		return StateNotRAM
	case p:
		return StatePrivate
	}
	return StateShared
}

// kernelMode enforces the CPL rule on a conversion doorbell: a request from
// guest user mode (or from a vCPU whose state cannot be read) is refused
// with StatusNotKernel before anything is read or converted.
func (d *Device) kernelMode(vcpu int, r *vcpuRegs) bool {
	if d.cpl == nil {
		return true
	}
	cpl, err := d.cpl(vcpu)
	if err == nil && cpl == 0 {
		return true
	}
	r.status = statusReg(StatusNotKernel)
	d.stats.notKernel.Add(1)
	d.stats.failed.Add(1)
	if err == nil {
		err = fmt.Errorf("vCPU at CPL %d", cpl)
	}
	d.logLimit.Warn(d.log.WithField("vcpu", vcpu), err, "conversion refused: not from guest kernel mode")
	return false
}

func (d *Device) convertOne(vcpu int, r *vcpuRegs) {
	if !d.kernelMode(vcpu, r) {
		return
	}
	d.stats.single.Add(1)
	req := memory.ConvertRequest{GPA: memory.GPA(r.gpa), NPages: uint64(r.npages), Attrs: uint64(r.attrs)}
	_, err := d.convert(vcpu, TransportRegister, req)
	r.status = statusReg(Status(err))
	if err != nil {
		d.stats.failed.Add(1)
	}
}

// convertList processes the request list at r.list: it snapshots the whole
// list with one checked device read (the guest cannot change it under us),
// converts the entries in order through the same routine, stops at the
// first failure (later entries get StatusNotProcessed) and writes every
// entry's status back with checked device writes.
func (d *Device) convertList(vcpu int, r *vcpuRegs) {
	r.done = 0
	if !d.kernelMode(vcpu, r) {
		return
	}
	d.stats.batch.Add(1)
	st, err := d.processList(vcpu, r)
	r.status = statusReg(st)
	if st != StatusOK {
		d.stats.failed.Add(1)
		d.logLimit.Warn(d.log.WithField("vcpu", vcpu), fmt.Errorf("list %#x, %d entries, %d done: status %d: %v", r.list, r.count, r.done, st, err), "request list failed")
	}
}

func (d *Device) processList(vcpu int, r *vcpuRegs) (int64, error) {
	n := uint64(r.count)
	switch {
	case n == 0:
		return StatusInvalid, errors.New("empty list")
	case n > MaxBatch:
		return StatusListTooBig, fmt.Errorf("%d entries > %d", n, MaxBatch)
	}
	list := r.snapshot[:n*EntrySize]
	if err := d.mem.DeviceRead(memory.GPA(r.list), list); err != nil {
		if errors.Is(err, memory.ErrPrivate) {
			return StatusListPrivate, err
		}
		return StatusListFault, err
	}
	result, firstErr := StatusOK, error(nil)
	for i := uint64(0); i < n; i++ {
		e := list[i*EntrySize : (i+1)*EntrySize]
		st := StatusNotProcessed
		if result == StatusOK {
			d.stats.entries.Add(1)
			req := memory.ConvertRequest{
				GPA:    memory.GPA(binary.LittleEndian.Uint64(e[0:])),
				NPages: binary.LittleEndian.Uint64(e[8:]),
				Attrs:  binary.LittleEndian.Uint64(e[16:]),
			}
			_, err := d.convert(vcpu, TransportList, req)
			st = Status(err)
			if err != nil {
				result, firstErr = st, fmt.Errorf("entry %d: %w", i, err)
			} else {
				r.done++
			}
		}
		binary.LittleEndian.PutUint64(e[24:], uint64(st))
	}
	// Write the statuses back. An entry may have made part of the list
	// private; that status write is refused and the list reports it.
	for i := uint64(0); i < n; i++ {
		copy(r.statusBack[:], list[i*EntrySize+24:(i+1)*EntrySize])
		if err := d.mem.DeviceWrite(memory.GPA(r.list+i*EntrySize+24), r.statusBack[:]); err != nil && result == StatusOK {
			result, firstErr = StatusListPrivate, fmt.Errorf("status write-back of entry %d: %w", i, err)
		}
	}
	return result, firstErr
}
