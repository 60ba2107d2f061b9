package acpipm

import (
	"sync"

	"github.com/sirupsen/logrus"
	"github.com/vmmgo/vmm/internal/guestlog"
)

// The ports the VMM's ACPI tables declare; do not change them without the
// FADT.
const (
	EventPort   = 0x600 // PM1a_EVT_BLK
	EventLen    = 4
	ControlPort = 0x604 // PM1a_CNT_BLK
	ControlLen  = 2
	ResetPort   = 0xCF9 // FADT RESET_REG
	ResetLen    = 1
	// ResetValue is the FADT RESET_VALUE: SYS_RST | RST_CPU.
	ResetValue = 0x06
	// SleepTypeS5 is SLP_TYP for soft-off, as \_S5 declares.
	SleepTypeS5 = 5
	SCIIRQ      = 9
)

// PM1 status and enable bits (ACPI 6.5, tables 4.13 and 4.14).
const (
	StsTimer    = 1 << 0
	StsBusMstr  = 1 << 4
	StsGlobal   = 1 << 5
	StsPowerBtn = 1 << 8
	StsSleepBtn = 1 << 9
	StsRTC      = 1 << 10
	StsWake     = 1 << 15
	// enMask are the PM1_EN bits that exist (TMR, GBL, PWRBTN, SLPBTN,
	// RTC); the rest are reserved and read 0.
	enMask = StsTimer | StsGlobal | StsPowerBtn | StsSleepBtn | StsRTC
)

// PM1 control bits (ACPI 6.5, table 4.16).
const (
	cntSCIEn     = 1 << 0
	cntBMRld     = 1 << 1
	cntGblRls    = 1 << 2
	cntSlpTypSh  = 10
	cntSlpTypMsk = 7 << cntSlpTypSh
	cntSlpEn     = 1 << 13
	cntMask      = cntSCIEn | cntBMRld | cntSlpTypMsk // what reads back
)

// Options configure the PM block.
type Options struct {
	// PowerOff runs when the guest enters S5. Called without locks held.
	PowerOff func()
	// SCI drives the SCI line, only on change. May be nil.
	SCI func(level bool)
	// Log receives rate-limited reports of unsupported requests.
	Log *logrus.Entry
}

// Stats are the PM block's counters.
type Stats struct {
	PowerOffs    uint64 // S5 entries
	SleepIgnored uint64 // SLP_EN with an unsupported SLP_TYP
	BadAccesses  uint64 // accesses past a block's end
}

// PM holds the PM1a event and control registers. Create it with New and
// register EventBlock() at EventPort and ControlBlock() at ControlPort.
type PM struct {
	mu      sync.Mutex
	sts, en uint16
	cnt     uint16
	level   bool

	powerOff func()
	sci      func(bool)
	stats    Stats
	glog     *guestlog.Logger
}

// New returns the PM block with SCI_EN set (see doc.go).
func New(opt Options) *PM {
	return &PM{cnt: cntSCIEn, powerOff: opt.PowerOff, sci: opt.SCI, glog: guestlog.New(opt.Log, "acpipm")}
}

// Block is one register block of the PM device, a bus device.
type Block struct {
	pm      *PM
	control bool
}

// EventBlock returns the PM1a_EVT_BLK bus device (EventLen bytes).
func (p *PM) EventBlock() *Block { return &Block{pm: p} }

// ControlBlock returns the PM1a_CNT_BLK bus device (ControlLen bytes).
func (p *PM) ControlBlock() *Block { return &Block{pm: p, control: true} }

// BusRead reads the block byte by byte; bytes past its end read all ones.
func (b *Block) BusRead(vcpu int, off uint64, data []byte) {
	p := b.pm
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := range data {
		data[i] = p.readByte(b.control, off+uint64(i))
	}
}

// BusWrite writes the block byte by byte.
func (b *Block) BusWrite(vcpu int, off uint64, data []byte) {
	p := b.pm
	p.mu.Lock()
	off2 := false
	for i, v := range data {
		if p.writeByte(b.control, off+uint64(i), v) {
			off2 = true
		}
	}
	p.updateSCI()
	fn := p.powerOff
	p.mu.Unlock()
	if off2 && fn != nil {
		fn()
	}
}

func byteOf(v uint16, hi bool) uint8 {
	if hi {
		return uint8(v >> 8)
	}
	return uint8(v)
}

func setByte(v *uint16, hi bool, b uint8) {
	if hi {
		*v = *v&0x00FF | uint16(b)<<8
	} else {
		*v = *v&0xFF00 | uint16(b)
	}
}

func (p *PM) readByte(control bool, off uint64) uint8 {
	switch {
	case !control && off < 2:
		return byteOf(p.sts, off == 1)
	case !control && off < 4:
		return byteOf(p.en, off == 3)
	case control && off < 2:
		return byteOf(p.cnt&cntMask, off == 1)
	}
	p.stats.BadAccesses++
	p.glog.Warnf("read at offset %#x of the PM1 %s block", off, blockName(control))
	return 0xFF
}

func blockName(control bool) string {
	if control {
		return "control"
	}
	return "event"
}

// writeByte applies one byte and reports whether the guest entered S5.
func (p *PM) writeByte(control bool, off uint64, v uint8) bool {
	switch {
	case !control && off < 2:
		// PM1_STS: write 1 to clear.
		var clr uint16
		setByte(&clr, off == 1, v)
		p.sts &^= clr
	case !control && off < 4:
		setByte(&p.en, off == 3, v)
		p.en &= enMask
	case control && off < 2:
		setByte(&p.cnt, off == 1, v)
		if p.cnt&cntSlpEn != 0 {
			p.cnt &^= cntSlpEn // write-only, self-clearing
			typ := (p.cnt & cntSlpTypMsk) >> cntSlpTypSh
			if typ == SleepTypeS5 {
				p.stats.PowerOffs++
				return true
			}
			p.stats.SleepIgnored++
			p.glog.Warnf("sleep type %d requested; only S5 (%d) is supported", typ, SleepTypeS5)
		}
		p.cnt &^= cntGblRls // GBL_RLS is write-only too
	default:
		p.stats.BadAccesses++
		p.glog.Warnf("write %#x at offset %#x of the PM1 %s block", v, off, blockName(control))
	}
	return false
}

func (p *PM) updateSCI() {
	level := p.cnt&cntSCIEn != 0 && p.sts&p.en != 0
	if level == p.level {
		return
	}
	p.level = level
	if p.sci != nil {
		p.sci(level)
	}
}

// PowerButton latches PWRBTN_STS, as pressing the power button does; the
// guest's ACPI driver sees it on the SCI (if it enabled PWRBTN_EN) and
// shuts down.
func (p *PM) PowerButton() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sts |= StsPowerBtn
	p.updateSCI()
}

// Stats returns a snapshot of the counters.
func (p *PM) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stats
}

// ResetControl is the reset control register at 0xCF9.
type ResetControl struct {
	mu     sync.Mutex
	val    uint8
	reset  func()
	resets uint64
	bad    uint64
	glog   *guestlog.Logger
}

// Reset control register bits.
const (
	rcSysRst  = 0x02 // SYS_RST: full (not CPU-only) reset when RST_CPU fires
	rcRstCPU  = 0x04 // RST_CPU: a write with this bit set resets
	rcFullRst = 0x08 // FULL_RST
)

// NewResetControl returns the 0xCF9 device; reset runs (without locks
// held) when the guest requests a reset.
func NewResetControl(reset func(), log *logrus.Entry) *ResetControl {
	return &ResetControl{reset: reset, glog: guestlog.New(log, "resetctl")}
}

// BusRead returns SYS_RST and FULL_RST as last written.
func (r *ResetControl) BusRead(vcpu int, off uint64, data []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range data {
		if off+uint64(i) == 0 {
			data[i] = r.val
		} else {
			data[i] = 0xFF
			r.bad++
		}
	}
}

// BusWrite stores SYS_RST and FULL_RST; RST_CPU set triggers the reset.
func (r *ResetControl) BusWrite(vcpu int, off uint64, data []byte) {
	r.mu.Lock()
	if off != 0 || len(data) != 1 {
		r.bad++
		r.glog.Warnf("write of %d bytes at offset %#x", len(data), off)
	}
	fire := false
	if off == 0 && len(data) > 0 {
		v := data[0]
		r.val = v & (rcSysRst | rcFullRst)
		if v&rcRstCPU != 0 {
			fire = true
			r.resets++
		}
	}
	fn := r.reset
	r.mu.Unlock()
	if fire && fn != nil {
		fn()
	}
}

// BadAccesses returns how many accesses missed the one-byte register or
// were wider than it.
func (r *ResetControl) BadAccesses() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.bad
}

// Resets returns how many resets the guest requested.
func (r *ResetControl) Resets() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.resets
}
