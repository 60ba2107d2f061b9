package vmm

import (
	"fmt"
	"runtime"
	"testing"
)

type nopDevice struct{ writes int }

func (d *nopDevice) BusRead(_ int, _ uint64, data []byte) { clear(data) }
func (d *nopDevice) BusWrite(_ int, _ uint64, _ []byte)   { d.writes++ }

// TestBusDispatchDoesNotAllocate: the PIO/MMIO dispatch of one exit
// allocates nothing, hit or miss.
func TestBusDispatchDoesNotAllocate(t *testing.T) {
	b := NewBus("pio")
	d := &nopDevice{}
	for i := uint64(0); i < 16; i++ { // a realistic number of ranges
		if err := b.Register(fmt.Sprint("dev", i), 0x100+i*0x10, 8, d); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, 4)
	if n := testing.AllocsPerRun(1000, func() {
		b.Write(0, 0x1a3, buf[:1])
		b.Read(0, 0x1a4, buf[:2])
		b.Write(0, 0x9000, buf[:4]) // miss
	}); n != 0 {
		t.Fatalf("%.1f allocations per dispatch, want 0", n)
	}
}

// TestExitLoopDoesNotAllocate runs a guest that does exitLoopN port
// writes and counts heap allocations over the whole run: what Run itself
// allocates (goroutines, timers) is a constant, so the budget is far below
// one allocation per exit.
func TestExitLoopDoesNotAllocate(t *testing.T) {
	const exitLoopN = 20000
	cfg := smallConfig("anon")
	m := newRawMachine(t, cfg, fmt.Sprintf(`
		mov $%d, %%ecx
		mov $0x3ff, %%dx
	1:	out %%al, %%dx
		dec %%ecx
		jnz 1b
		xor %%eax, %%eax
		out %%al, $0xf4`, exitLoopN))
	d := &nopDevice{}
	if err := m.PIO().Register("loop", 0x3ff, 1, d); err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	runMachine(t, m, OutcomePowerOff)
	runtime.ReadMemStats(&after)
	if d.writes != exitLoopN {
		t.Fatalf("device saw %d writes, want %d", d.writes, exitLoopN)
	}
	allocs := after.Mallocs - before.Mallocs
	if allocs > exitLoopN/100 {
		t.Fatalf("%d heap allocations for %d exits: the exit path allocates", allocs, exitLoopN)
	}
	t.Logf("%d heap allocations in a run of %d exits", allocs, exitLoopN)
}
