package rtc

import (
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/vmmgo/vmm/internal/guestlog"
)

// Standard resources.
const (
	Port = 0x70 // index port; data at Port+1
	Size = 2
	IRQ  = 8
)

// Register indices.
const (
	regSeconds     = 0x00
	regSecondsAlrm = 0x01
	regMinutes     = 0x02
	regMinutesAlrm = 0x03
	regHours       = 0x04
	regHoursAlrm   = 0x05
	regDayOfWeek   = 0x06
	regDayOfMonth  = 0x07
	regMonth       = 0x08
	regYear        = 0x09
	regA           = 0x0A
	regB           = 0x0B
	regC           = 0x0C
	regD           = 0x0D
	regCentury     = 0x32
)

// Register A.
const (
	aUIP      = 0x80
	aDVMask   = 0x70
	aDVNormal = 0x20 // 32.768 kHz time base, oscillator on
	aRSMask   = 0x0F
)

// Register B.
const (
	bSET = 0x80
	bPIE = 0x40
	bAIE = 0x20
	bUIE = 0x10
	bDM  = 0x04 // 1 = binary, 0 = BCD
	b24H = 0x02
)

// Register C.
const (
	cIRQF = 0x80
	cPF   = 0x40
	cAF   = 0x20
	cUF   = 0x10
)

const dVRT = 0x80

// uipWindow is how long before each second boundary UIP reads 1
// (MC146818 datasheet: "UIP ... set 244 us before the update cycle").
const uipWindow = 244 * time.Microsecond

// minTimerPeriod bounds how often the host timer fires for the periodic
// interrupt; faster rates still set PF, in bursts.
const minTimerPeriod = time.Millisecond

// Options configure the RTC.
type Options struct {
	// MemoryBelow4G and MemoryAbove4G are the guest RAM sizes in bytes
	// below and above the 4 GiB boundary, for the CMOS memory-size bytes.
	MemoryBelow4G uint64
	MemoryAbove4G uint64
	// CPUs is the number of vCPUs (CMOS 0x5F holds CPUs-1); 0 means 1.
	CPUs int
	// IRQ drives IRQ 8, only on change. May be nil.
	IRQ func(level bool)
	// Now is the host clock (default time.Now).
	Now func() time.Time
	// Log receives rate-limited reports of guest misbehaviour.
	Log *logrus.Entry
}

// Stats are the RTC's counters.
type Stats struct {
	TimeSets    uint64 // times the guest changed the clock
	BadWrites   uint64 // invalid time values written (ignored)
	BadAccesses uint64 // accesses past the two ports
	Interrupts  uint64 // rising edges of IRQ 8
}

// RTC is the clock and CMOS memory. Create it with New; Close stops its
// timer.
type RTC struct {
	mu sync.Mutex

	index  uint8
	nmiOff bool
	cmos   [128]uint8 // NVRAM, registers A, B, alarms; time bytes while SET

	offset int64     // guest time = host time + offset seconds
	flags  uint8     // register C flags (PF, AF, UF) not yet read
	last   time.Time // host time flags were last brought up to date
	epoch  time.Time // origin of the periodic interrupt's phase

	now    func() time.Time
	irq    func(bool)
	level  bool
	timer  *time.Timer
	gen    uint64 // identifies the current timer; stale ticks do nothing
	closed bool

	stats Stats
	glog  *guestlog.Logger
}

// New returns an RTC whose clock is the host's (UTC), in BCD 24-hour mode,
// with CMOS memory sizes filled in from opt.
func New(opt Options) *RTC {
	r := &RTC{now: opt.Now, irq: opt.IRQ, glog: guestlog.New(opt.Log, "rtc")}
	if r.now == nil {
		r.now = time.Now
	}
	r.cmos[regA] = aDVNormal | 0x06 // 1024 Hz periodic rate, as a PC BIOS sets it
	r.cmos[regB] = b24H
	r.cmos[regD] = dVRT
	r.fillMemory(opt)
	r.last = r.now()
	r.epoch = r.last
	return r
}

func (r *RTC) fillMemory(opt Options) {
	const kib, mib = 1 << 10, 1 << 20
	put16 := func(i int, v uint64) {
		v = min(v, 0xFFFF)
		r.cmos[i] = uint8(v)
		r.cmos[i+1] = uint8(v >> 8)
	}
	put16(0x15, 640) // base memory in KiB
	var ext uint64
	if opt.MemoryBelow4G > mib {
		ext = (opt.MemoryBelow4G - mib) / kib
	}
	put16(0x17, ext)
	put16(0x30, ext)
	var above16 uint64
	if opt.MemoryBelow4G > 16*mib {
		above16 = (opt.MemoryBelow4G - 16*mib) / (64 * kib)
	}
	put16(0x34, above16)
	high := min(opt.MemoryAbove4G/(64*kib), 0xFFFFFF)
	r.cmos[0x5B] = uint8(high)
	r.cmos[0x5C] = uint8(high >> 8)
	r.cmos[0x5D] = uint8(high >> 16)
	cpus := max(opt.CPUs, 1)
	r.cmos[0x5F] = uint8(min(cpus-1, 0xFF))
	r.cmos[0x14] = 0x02 // equipment: math coprocessor present, no floppy
	var sum uint16
	for i := 0x10; i <= 0x2D; i++ {
		sum += uint16(r.cmos[i])
	}
	r.cmos[0x2E] = uint8(sum >> 8)
	r.cmos[0x2F] = uint8(sum)
}

// Close stops the interrupt timer. The device keeps answering accesses.
func (r *RTC) Close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	if r.timer != nil {
		r.timer.Stop()
		r.timer = nil
	}
}

// NMIDisabled reports the NMI-disable bit (bit 7 of the last index write).
func (r *RTC) NMIDisabled() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.nmiOff
}

// Stats returns a snapshot of the counters.
func (r *RTC) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stats
}

// GuestTime returns the time the guest's clock shows now.
func (r *RTC) GuestTime() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.guestNow(r.now())
}

// BusRead reads the index port (offset 0, write-only on the chip: all
// ones) or the selected register (offset 1), one byte at a time.
func (r *RTC) BusRead(vcpu int, off uint64, data []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	for i := range data {
		switch off + uint64(i) {
		case 0:
			data[i] = 0xFF
		case 1:
			data[i] = r.readReg(now)
		default:
			r.stats.BadAccesses++
			r.glog.Warnf("read at offset %#x", off+uint64(i))
			data[i] = 0xFF
		}
	}
	r.updateIRQ()
}

// BusWrite writes the index port (offset 0) or the selected register
// (offset 1), one byte at a time.
func (r *RTC) BusWrite(vcpu int, off uint64, data []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	for i, v := range data {
		switch off + uint64(i) {
		case 0:
			r.index = v & 0x7F
			r.nmiOff = v&0x80 != 0
		case 1:
			r.writeReg(now, v)
		default:
			r.stats.BadAccesses++
			r.glog.Warnf("write %#x at offset %#x", v, off+uint64(i))
		}
	}
	r.updateIRQ()
	r.armTimer(now)
}

func (r *RTC) frozen() bool { return r.cmos[regB]&bSET != 0 }

func (r *RTC) guestNow(host time.Time) time.Time {
	return host.UTC().Add(time.Duration(r.offset) * time.Second)
}

func isTimeReg(i uint8) bool {
	switch i {
	case regSeconds, regMinutes, regHours, regDayOfWeek, regDayOfMonth, regMonth, regYear, regCentury:
		return true
	}
	return false
}

func (r *RTC) readReg(now time.Time) uint8 {
	i := r.index
	switch {
	case isTimeReg(i) && !r.frozen():
		return r.encodeTime(r.guestNow(now), i)
	case i == regA:
		v := r.cmos[regA] &^ aUIP
		if r.updateInProgress(now) {
			v |= aUIP
		}
		return v
	case i == regC:
		r.catchUp(now)
		v := r.flags
		if r.irqf() {
			v |= cIRQF
		}
		r.flags = 0
		return v
	case i == regD:
		return dVRT
	}
	return r.cmos[i]
}

func (r *RTC) writeReg(now time.Time, v uint8) {
	i := r.index
	switch {
	case isTimeReg(i) && !r.frozen():
		r.setTimeReg(now, i, v)
	case i == regA:
		r.cmos[regA] = v &^ aUIP
	case i == regB:
		r.catchUp(now)
		was := r.frozen()
		if v&bSET != 0 && !was {
			// Freeze: the time registers become plain memory the
			// guest can rewrite.
			g := r.guestNow(now)
			for _, t := range []uint8{regSeconds, regMinutes, regHours, regDayOfWeek, regDayOfMonth, regMonth, regYear, regCentury} {
				r.cmos[t] = r.encodeTime(g, t)
			}
		}
		// Setting SET clears UIE (datasheet: "UIE is cleared when SET
		// is written to 1").
		if v&bSET != 0 {
			v &^= bUIE
		}
		r.cmos[regB] = v
		if was && v&bSET == 0 {
			r.thaw(now)
		}
	case i == regC, i == regD:
		// Read-only.
	default:
		r.cmos[i] = v
	}
}

// thaw restarts the clock from the frozen registers.
func (r *RTC) thaw(now time.Time) {
	t, ok := r.decodeTime(func(i uint8) uint8 { return r.cmos[i] })
	if !ok {
		r.stats.BadWrites++
		r.glog.Warnf("invalid time set: % x, clock unchanged", r.cmos[:10])
		return
	}
	r.setOffset(now, t)
}

func (r *RTC) setOffset(now, t time.Time) {
	r.offset = t.Unix() - now.Unix()
	r.stats.TimeSets++
}

// setTimeReg changes one time field of the running clock.
func (r *RTC) setTimeReg(now time.Time, i uint8, v uint8) {
	if i == regDayOfWeek {
		return // derived from the date
	}
	g := r.guestNow(now)
	t, ok := r.decodeTime(func(j uint8) uint8 {
		if j == i {
			return v
		}
		return r.encodeTime(g, j)
	})
	if !ok {
		r.stats.BadWrites++
		r.glog.Warnf("invalid value %#x for time register %#x ignored", v, i)
		return
	}
	r.setOffset(now, t)
}

func (r *RTC) binary() bool { return r.cmos[regB]&bDM != 0 }

func (r *RTC) enc(v int) uint8 {
	if r.binary() {
		return uint8(v)
	}
	return uint8(v/10<<4 | v%10)
}

// dec decodes a register value, reporting whether it is valid.
func (r *RTC) dec(b uint8) (int, bool) {
	if r.binary() {
		return int(b), true
	}
	hi, lo := int(b>>4), int(b&0xF)
	if hi > 9 || lo > 9 {
		return 0, false
	}
	return hi*10 + lo, true
}

func (r *RTC) encodeHour(h int) uint8 {
	if r.cmos[regB]&b24H != 0 {
		return r.enc(h)
	}
	h12 := h % 12
	if h12 == 0 {
		h12 = 12
	}
	v := r.enc(h12)
	if h >= 12 {
		v |= 0x80 // PM
	}
	return v
}

func (r *RTC) decodeHour(b uint8) (int, bool) {
	if r.cmos[regB]&b24H != 0 {
		h, ok := r.dec(b)
		return h, ok && h < 24
	}
	h, ok := r.dec(b & 0x7F)
	if !ok || h < 1 || h > 12 {
		return 0, false
	}
	h %= 12
	if b&0x80 != 0 {
		h += 12
	}
	return h, true
}

func (r *RTC) encodeTime(t time.Time, i uint8) uint8 {
	switch i {
	case regSeconds:
		return r.enc(t.Second())
	case regMinutes:
		return r.enc(t.Minute())
	case regHours:
		return r.encodeHour(t.Hour())
	case regDayOfWeek:
		return r.enc(int(t.Weekday()) + 1) // 1 = Sunday
	case regDayOfMonth:
		return r.enc(t.Day())
	case regMonth:
		return r.enc(int(t.Month()))
	case regYear:
		return r.enc(t.Year() % 100)
	case regCentury:
		return r.enc(t.Year() / 100 % 100)
	}
	return 0
}

// decodeTime builds a time from register values, rejecting out-of-range
// fields (including days past the end of the month).
func (r *RTC) decodeTime(get func(uint8) uint8) (time.Time, bool) {
	sec, ok1 := r.dec(get(regSeconds))
	minute, ok2 := r.dec(get(regMinutes))
	hour, ok3 := r.decodeHour(get(regHours))
	day, ok4 := r.dec(get(regDayOfMonth))
	mon, ok5 := r.dec(get(regMonth))
	yy, ok6 := r.dec(get(regYear))
	cc, ok7 := r.dec(get(regCentury))
	if !(ok1 && ok2 && ok3 && ok4 && ok5 && ok6 && ok7) ||
		sec > 59 || minute > 59 || day < 1 || day > 31 || mon < 1 || mon > 12 || yy > 99 || cc > 99 {
		return time.Time{}, false
	}
	t := time.Date(cc*100+yy, time.Month(mon), day, hour, minute, sec, 0, time.UTC)
	if t.Day() != day {
		return time.Time{}, false // e.g. 31 February
	}
	return t, true
}

func (r *RTC) running() bool {
	return !r.frozen() && r.cmos[regA]&aDVMask == aDVNormal
}

func (r *RTC) updateInProgress(now time.Time) bool {
	if !r.running() {
		return false
	}
	frac := time.Duration(now.Nanosecond())
	return frac >= time.Second-uipWindow
}

// periodicRate returns the periodic interrupt period for register A's rate
// bits (datasheet table 5), or 0 when disabled.
func (r *RTC) periodicPeriod() time.Duration {
	rs := r.cmos[regA] & aRSMask
	switch rs {
	case 0:
		return 0
	case 1, 2:
		rs += 7 // 256 Hz and 128 Hz with a 32.768 kHz time base
	}
	return time.Second / time.Duration(uint32(32768)>>(rs-1))
}

// catchUp sets the register C flags for every event between r.last and
// now: UF at each second boundary, AF when the guest time crossed matches
// the alarm, PF at each periodic boundary.
func (r *RTC) catchUp(now time.Time) {
	if !now.After(r.last) {
		return
	}
	last := r.last
	r.last = now
	if p := r.periodicPeriod(); p > 0 && r.cmos[regA]&aDVMask == aDVNormal {
		if now.Sub(r.epoch)/p != last.Sub(r.epoch)/p {
			r.flags |= cPF
		}
	}
	if !r.running() {
		return
	}
	from, to := last.Unix(), now.Unix()
	if to == from {
		return
	}
	r.flags |= cUF
	// Check the alarm at each second boundary crossed, at most a day's worth.
	start := max(from+1, to-86400)
	for s := start; s <= to; s++ {
		if r.alarmMatches(s + r.offset) {
			r.flags |= cAF
			break
		}
	}
}

// alarmMatches reports whether the guest time (Unix seconds) matches the
// alarm registers; values with the two top bits set match anything.
func (r *RTC) alarmMatches(unix int64) bool {
	sod := unix % 86400
	if sod < 0 {
		sod += 86400
	}
	h, m, s := int(sod/3600), int(sod/60%60), int(sod%60)
	match := func(reg uint8, want int, hour bool) bool {
		v := r.cmos[reg]
		if v&0xC0 == 0xC0 {
			return true
		}
		var got int
		var ok bool
		if hour {
			got, ok = r.decodeHour(v)
		} else {
			got, ok = r.dec(v)
		}
		return ok && got == want
	}
	return match(regSecondsAlrm, s, false) && match(regMinutesAlrm, m, false) && match(regHoursAlrm, h, true)
}

func (r *RTC) irqf() bool {
	b := r.cmos[regB]
	return (r.flags&cPF != 0 && b&bPIE != 0) ||
		(r.flags&cAF != 0 && b&bAIE != 0) ||
		(r.flags&cUF != 0 && b&bUIE != 0)
}

func (r *RTC) updateIRQ() {
	level := r.irqf()
	if level == r.level {
		return
	}
	r.level = level
	if level {
		r.stats.Interrupts++
	}
	if r.irq != nil {
		r.irq(level)
	}
}

// armTimer keeps a host timer running while an interrupt is enabled, so
// the line rises without the guest polling.
func (r *RTC) armTimer(now time.Time) {
	if r.timer != nil {
		r.timer.Stop()
		r.timer = nil
	}
	b := r.cmos[regB]
	if r.closed || r.irq == nil || b&(bPIE|bAIE|bUIE) == 0 {
		return
	}
	var next time.Duration
	if b&(bAIE|bUIE) != 0 {
		next = time.Second - time.Duration(now.Nanosecond())
	}
	if p := r.periodicPeriod(); b&bPIE != 0 && p > 0 {
		p = max(p, minTimerPeriod)
		d := p - now.Sub(r.epoch)%p
		if next == 0 || d < next {
			next = d
		}
	}
	if next == 0 {
		return
	}
	r.gen++
	gen := r.gen
	r.timer = time.AfterFunc(next+time.Microsecond, func() { r.tick(gen) })
}

func (r *RTC) tick(gen uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed || gen != r.gen {
		return
	}
	now := r.now()
	r.catchUp(now)
	r.updateIRQ()
	r.armTimer(now)
}
