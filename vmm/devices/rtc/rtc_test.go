package rtc

import (
	"sync"
	"testing"
	"time"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newFake(t testing.TB, at time.Time, opt Options) (*RTC, *fakeClock) {
	c := &fakeClock{t: at}
	opt.Now = c.now
	r := New(opt)
	t.Cleanup(r.Close)
	return r, c
}

func rd(r *RTC, reg uint8) uint8 {
	r.BusWrite(0, 0, []byte{reg})
	var b [1]byte
	r.BusRead(0, 1, b[:])
	return b[0]
}

func wr(r *RTC, reg, v uint8) {
	// outw(0x70): index then data in one access.
	r.BusWrite(0, 0, []byte{reg, v})
}

var march = time.Date(2026, time.March, 14, 15, 9, 26, 500_000_000, time.UTC) // a Saturday

func TestTimeBCD24(t *testing.T) {
	r, _ := newFake(t, march, Options{})
	want := map[uint8]uint8{
		regSeconds: 0x26, regMinutes: 0x09, regHours: 0x15, regDayOfWeek: 0x07,
		regDayOfMonth: 0x14, regMonth: 0x03, regYear: 0x26, regCentury: 0x20,
	}
	for reg, w := range want {
		if got := rd(r, reg); got != w {
			t.Errorf("register %#x = %#x, want %#x", reg, got, w)
		}
	}
	if b := rd(r, regB); b&b24H == 0 || b&bDM != 0 {
		t.Errorf("register B = %#x, want 24h BCD", b)
	}
	if d := rd(r, regD); d != dVRT {
		t.Errorf("register D = %#x", d)
	}
}

func TestTimeBinary12h(t *testing.T) {
	r, _ := newFake(t, march, Options{})
	wr(r, regB, bDM) // binary, 12-hour
	if h := rd(r, regHours); h != 0x80|3 {
		t.Errorf("hours = %#x, want PM|3", h)
	}
	if s := rd(r, regSeconds); s != 26 {
		t.Errorf("seconds = %d", s)
	}
	if y := rd(r, regYear); y != 26 {
		t.Errorf("year = %d", y)
	}
	r2, _ := newFake(t, time.Date(2026, 1, 1, 0, 30, 0, 0, time.UTC), Options{})
	wr(r2, regB, 0) // BCD, 12-hour
	if h := rd(r2, regHours); h != 0x12 {
		t.Errorf("00:30 in 12h BCD = %#x, want 0x12 (12 AM)", h)
	}
}

// TestLinuxGetTime replays mc146818_avoid_UIP + mc146818_get_time.
func TestLinuxGetTime(t *testing.T) {
	r, c := newFake(t, time.Date(2026, 3, 14, 23, 59, 59, 999_900_000, time.UTC), Options{})
	readTime := func() (time.Time, bool) {
		for range 10 {
			sec := rd(r, regSeconds)
			if rd(r, regA)&aUIP != 0 {
				c.add(100 * time.Microsecond) // udelay
				continue
			}
			if sec != rd(r, regSeconds) {
				continue
			}
			b := rd(r, regB)
			if b&bDM != 0 || b&b24H == 0 {
				t.Fatalf("unexpected mode %#x", b)
			}
			get := func(reg uint8) int { v := rd(r, reg); return int(v>>4)*10 + int(v&0xF) }
			tm := time.Date(get(regCentury)*100+get(regYear), time.Month(get(regMonth)), get(regDayOfMonth),
				get(regHours), get(regMinutes), get(regSeconds), 0, time.UTC)
			if rd(r, regA)&aUIP != 0 || sec != rd(r, regSeconds) {
				continue
			}
			return tm, true
		}
		return time.Time{}, false
	}
	tm, ok := readTime()
	if !ok {
		t.Fatal("UIP never cleared")
	}
	if want := time.Date(2026, 3, 15, 0, 0, 0, 0, time.UTC); !tm.Equal(want) {
		t.Fatalf("read %v, want %v (UIP was set 100us before midnight)", tm, want)
	}
	c.add(500 * time.Millisecond)
	if rd(r, regA)&aUIP != 0 {
		t.Fatal("UIP set mid-second")
	}
}

func TestSetTime(t *testing.T) {
	r, c := newFake(t, march, Options{})
	// mc146818_set_time: SET, write fields, clear SET.
	wr(r, regB, rd(r, regB)|bSET)
	before := rd(r, regSeconds)
	c.add(3 * time.Second)
	if rd(r, regSeconds) != before {
		t.Fatal("time registers run while SET")
	}
	for reg, v := range map[uint8]uint8{regSeconds: 0x00, regMinutes: 0x30, regHours: 0x08,
		regDayOfMonth: 0x29, regMonth: 0x02, regYear: 0x28, regCentury: 0x20} {
		wr(r, reg, v)
	}
	wr(r, regB, rd(r, regB)&^bSET)
	want := time.Date(2028, 2, 29, 8, 30, 0, 0, time.UTC)
	if g := r.GuestTime(); !g.Truncate(time.Second).Equal(want) {
		t.Fatalf("guest time %v, want %v", g, want)
	}
	c.add(61 * time.Second)
	if m, s := rd(r, regMinutes), rd(r, regSeconds); m != 0x31 || s != 0x01 {
		t.Fatalf("clock did not run after SET: %x:%x", m, s)
	}
	// A single register written while running.
	wr(r, regHours, 0x22)
	if h := rd(r, regHours); h != 0x22 {
		t.Fatalf("hours = %#x after writing 0x22", h)
	}
	// Invalid values are ignored.
	wr(r, regMinutes, 0x7A)
	wr(r, regB, bSET|b24H)
	wr(r, regDayOfMonth, 0x31) // 31 February
	wr(r, regB, b24H)
	if st := r.Stats(); st.BadWrites != 2 || st.TimeSets != 2 {
		t.Fatalf("stats %+v", st)
	}
	if h := rd(r, regHours); h != 0x22 {
		t.Fatalf("clock changed by invalid writes: hours %#x", h)
	}
}

func TestRegisterCFlags(t *testing.T) {
	r, c := newFake(t, march, Options{})
	rd(r, regC) // clear
	if v := rd(r, regC); v != 0 {
		t.Fatalf("C = %#x right after a read", v)
	}
	c.add(time.Second)
	if v := rd(r, regC); v&cUF == 0 || v&cIRQF != 0 {
		t.Fatalf("C = %#x after a second with UIE off, want UF without IRQF", v)
	}
	// Alarm at 15:09:30 (BCD), checked across the seconds crossed.
	wr(r, regSecondsAlrm, 0x30)
	wr(r, regMinutesAlrm, 0x09)
	wr(r, regHoursAlrm, 0xC0) // any hour
	wr(r, regB, b24H|bAIE)
	rd(r, regC)
	c.add(5 * time.Second) // 15:09:27.5 -> 15:09:32.5 crosses :30
	if v := rd(r, regC); v&(cAF|cIRQF) != cAF|cIRQF {
		t.Fatalf("C = %#x, want AF|IRQF", v)
	}
	c.add(5 * time.Second)
	if v := rd(r, regC); v&cAF != 0 {
		t.Fatalf("C = %#x, alarm matched again", v)
	}
	// Periodic: rate 6 = 1024 Hz.
	wr(r, regB, b24H|bPIE)
	rd(r, regC)
	c.add(2 * time.Millisecond)
	if v := rd(r, regC); v&(cPF|cIRQF) != cPF|cIRQF {
		t.Fatalf("C = %#x, want PF|IRQF", v)
	}
}

func TestUpdateInterruptLine(t *testing.T) {
	var mu sync.Mutex
	var levels []bool
	r := New(Options{IRQ: func(l bool) { mu.Lock(); levels = append(levels, l); mu.Unlock() }})
	defer r.Close()
	rd(r, regC)
	wr(r, regB, b24H|bUIE)
	deadline := time.Now().Add(3 * time.Second)
	for {
		mu.Lock()
		n := len(levels)
		mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no update-ended interrupt within 3 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if v := rd(r, regC); v&(cUF|cIRQF) != cUF|cIRQF {
		t.Fatalf("C = %#x, want UF|IRQF", v)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(levels) != 2 || !levels[0] || levels[1] {
		t.Fatalf("levels %v, want [true false]", levels)
	}
}

func TestCMOSMemory(t *testing.T) {
	const mib = 1 << 20
	r, _ := newFake(t, march, Options{MemoryBelow4G: 3 * 1024 * mib, MemoryAbove4G: 5 * 1024 * mib, CPUs: 4})
	w16 := func(i uint8) int { return int(rd(r, i)) | int(rd(r, i+1))<<8 }
	if v := w16(0x15); v != 640 {
		t.Errorf("base memory %d", v)
	}
	if v := w16(0x30); v != 0xFFFF || w16(0x17) != 0xFFFF {
		t.Errorf("extended memory %#x, want capped 0xffff", v)
	}
	if v := w16(0x34); v != (3*1024-16)*16 {
		t.Errorf("memory above 16M = %#x 64K units", v)
	}
	high := int(rd(r, 0x5B)) | int(rd(r, 0x5C))<<8 | int(rd(r, 0x5D))<<16
	if high != 5*1024*16 {
		t.Errorf("memory above 4G = %#x 64K units", high)
	}
	if v := rd(r, 0x5F); v != 3 {
		t.Errorf("CPUs-1 = %d", v)
	}
	var sum int
	for i := uint8(0x10); i <= 0x2D; i++ {
		sum += int(rd(r, i))
	}
	if got := int(rd(r, 0x2E))<<8 | int(rd(r, 0x2F)); got != sum {
		t.Errorf("checksum %#x, want %#x", got, sum)
	}
	r2, _ := newFake(t, march, Options{MemoryBelow4G: 32 * mib})
	if v := int(rd(r2, 0x30)) | int(rd(r2, 0x31))<<8; v != 31*1024 {
		t.Errorf("32 MiB guest: extended = %d KiB", v)
	}
	// NVRAM is writable; index port reads all ones; NMI bit recorded.
	wr(r, 0x40, 0x5A)
	if rd(r, 0x40) != 0x5A {
		t.Error("NVRAM not writable")
	}
	r.BusWrite(0, 0, []byte{0x80 | 0x40})
	if !r.NMIDisabled() {
		t.Error("NMI bit not recorded")
	}
	var b [1]byte
	r.BusRead(0, 0, b[:])
	if b[0] != 0xFF {
		t.Errorf("index port read %#x", b[0])
	}
	wr(r, regC, 0xFF)
	wr(r, regD, 0x00)
	if rd(r, regD) != dVRT {
		t.Error("register D writable")
	}
}
