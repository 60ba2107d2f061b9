// Package hostspeed tells guest-boot tests how long a boot may take on this
// host right now, and keeps them from all booting at once.
//
// On the development and CI hosts guest kernel code is emulated
// (docs/host-kvm.md): a Linux boot is bound by how fast the host's
// instruction emulator runs, and that speed changes with whatever else runs
// on the machine. A fixed timeout is either too short on a busy machine or
// useless on a quiet one. Instead:
//
//   - Measure runs a calibrated loop of guest kernel-mode (real-mode, CPL0)
//     code in a throw-away VM, once per process, and compares it with the
//     speed of a quiet development host (ReferenceIteration);
//   - Deadline turns a boot's cost on that quiet reference host into a bound
//     for this host now: cost × slowdown (the calibration loop against the
//     reference, or the load average read at each call if that says worse)
//     × Margin;
//   - AcquireBoot (slot.go) is a cross-process semaphore so that at most a
//     few guest Linux boots run at once on the whole machine, whatever
//     go test runs in parallel; the wait for a slot is not part of a boot's
//     deadline because the deadline is computed after the slot is held.
package hostspeed

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/vmmgo/vmm/kvm"
	"github.com/vmmgo/vmm/kvm/kvmtest"
)

// ReferenceIteration is the time one iteration of the calibration loop
// (`dec ecx; jnz`, guest real mode) takes on a development host (2 cores,
// kvm_pvm, docs/host-kvm.md) when nothing else competes for the vCPU
// thread's core: 1.20-1.24 µs, measured with the loop's thread at real-time
// priority (chrt -f) on a loaded machine, which is what a quiet machine
// gives (about 1.6 million emulated instructions a second). Costs given to
// Deadline are boot times on such a quiet host.
const ReferenceIteration = 1200 * time.Nanosecond

// Margin multiplies the scaled cost: boot times of the same kernel on the
// same quiet host spread by up to about 1.5×, and the load can grow while a
// boot runs (the factor is taken when the boot starts); a bound 3× above
// the expected time absorbs both and still stops a livelocked guest within
// minutes.
const Margin = 3

// Bounds of every deadline: MinDeadline covers hosts with hardware
// virtualization, where the loop runs natively and the scaled cost is tiny
// but a boot still pays fixed costs (device set-up, exits, the console);
// MaxDeadline is where a boot is hung, whatever the load.
const (
	MinDeadline = 90 * time.Second
	MaxDeadline = 25 * time.Minute
)

// ScaleEnv, when set to a number, multiplies every deadline (a slower CI
// host kind, a debugging session).
const ScaleEnv = "VMM_TEST_DEADLINE_SCALE"

// Loop parameters: each run is about 15 ms quiet where emulated; the median
// of the runs is what a vCPU thread gets from the machine right now, the
// best one the emulator's speed with the least interference (logged).
const (
	loopIterations = 25000
	loopRuns       = 5
)

// Speed is one measurement of this host.
type Speed struct {
	// Best and Median are the per-iteration times of the calibration loop
	// over loopRuns runs.
	Best, Median time.Duration
	// Load1 is the one-minute load average and CPUs the usable CPUs when
	// the loop ran.
	Load1 float64
	CPUs  int
	// Err is why the loop could not run (no KVM): the Speed is then the
	// reference one, so deadlines stay usable.
	Err error
}

var (
	measureOnce sync.Once
	measured    Speed
)

// Measure returns this process's measurement of the host, running the
// calibration loop on the first call (tens of milliseconds on an
// emulating host, microseconds elsewhere).
func Measure() Speed {
	measureOnce.Do(func() { measured = measure(kvmtest.Path()) })
	return measured
}

func measure(path string) Speed {
	s := Speed{CPUs: runtime.NumCPU()}
	s.Load1, _ = LoadAverage()
	var runs []time.Duration
	for i := 0; i < loopRuns; i++ {
		d, err := loopOnce(path, loopIterations)
		if err != nil {
			s.Err = err
			s.Best, s.Median = ReferenceIteration, ReferenceIteration
			return s
		}
		runs = append(runs, d/loopIterations)
	}
	slices.Sort(runs)
	s.Best, s.Median = runs[0], runs[len(runs)/2]
	return s
}

// String is the measurement as tests log it.
func (s Speed) String() string {
	if s.Err != nil {
		return fmt.Sprintf("host speed not measured (%v); load %.2f on %d CPUs", s.Err, s.Load1, s.CPUs)
	}
	return fmt.Sprintf("emulated loop %v/iteration best, %v median (reference %v); load %.2f on %d CPUs",
		s.Best, s.Median, ReferenceIteration, s.Load1, s.CPUs)
}

// Slowdown is how many times longer than on the quiet reference host a
// boot is expected to take with the given one-minute load average: the
// larger of what the calibration loop saw (its median run against
// ReferenceIteration: the emulator's speed here and the share of a core a
// vCPU thread got while it ran) and what the load says a long-running
// vCPU thread will get (among load1 other runnable threads on CPUs cores,
// about CPUs/(load1+1) of one). The two are not multiplied: the loop's
// time already includes the contention, and a short loop underestimates
// it (a thread that just woke up is favoured by the scheduler), which is
// what the load term is for. On hosts with hardware virtualization the
// loop term is tiny and the load term rules; Deadline's floor covers the
// boot's fixed costs there.
func (s Speed) Slowdown(load1 float64) float64 {
	sd := float64(s.Median) / float64(ReferenceIteration)
	if s.CPUs > 0 {
		sd = max(sd, (load1+1)/float64(s.CPUs))
	}
	return sd
}

// Deadline is the bound for a guest boot that takes cost on the quiet
// reference host: cost × Slowdown(current load) × Margin (× $VMM_TEST_DEADLINE_SCALE),
// within [MinDeadline, MaxDeadline]. Call it when the boot starts (after
// AcquireBoot), so the load is current.
func Deadline(cost time.Duration) time.Duration {
	load, err := LoadAverage()
	s := Measure()
	if err != nil {
		load = s.Load1
	}
	return s.deadline(cost, load, scaleFromEnv())
}

// DeadlineUpTo is Deadline with ceiling in place of MaxDeadline, for the
// rare guest whose boot is known to take longer than MaxDeadline allows on
// a busy host (a distribution kernel under emulation). A ceiling below
// MinDeadline is raised to it.
func DeadlineUpTo(cost, ceiling time.Duration) time.Duration {
	load, err := LoadAverage()
	s := Measure()
	if err != nil {
		load = s.Load1
	}
	return s.deadlineUpTo(cost, load, scaleFromEnv(), ceiling)
}

func (s Speed) deadline(cost time.Duration, load1, scale float64) time.Duration {
	return s.deadlineUpTo(cost, load1, scale, MaxDeadline)
}

func (s Speed) deadlineUpTo(cost time.Duration, load1, scale float64, ceiling time.Duration) time.Duration {
	d := time.Duration(float64(cost) * s.Slowdown(load1) * Margin * scale)
	return min(max(d, MinDeadline), max(ceiling, MinDeadline))
}

func scaleFromEnv() float64 {
	v := os.Getenv(ScaleEnv)
	if v == "" {
		return 1
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f <= 0 {
		return 1
	}
	return f
}

// LoadAverage returns the one-minute load average (/proc/loadavg).
func LoadAverage() (float64, error) {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0, err
	}
	return parseLoadAverage(string(b))
}

func parseLoadAverage(s string) (float64, error) {
	f := strings.Fields(s)
	if len(f) == 0 {
		return 0, fmt.Errorf("/proc/loadavg: empty")
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return 0, fmt.Errorf("/proc/loadavg: %w", err)
	}
	return v, nil
}

// The calibration guest, 16-bit real mode at 0:codeAddr:
//
//	mov  ecx, N        66 b9 NN NN NN NN
//	out  0xf8, al      e6 f8             mark: loop starts
//	1: dec ecx         66 49
//	jnz  1b            75 fc
//	out  0xf8, al      e6 f8             mark: loop done
//	hlt                f4
const (
	loopMem  = 0x10000
	codeAddr = 0x1000
	markPort = 0xf8
	tssAddr  = 0xfffbd000
)

func loopCode(n uint32) []byte {
	return []byte{
		0x66, 0xb9, byte(n), byte(n >> 8), byte(n >> 16), byte(n >> 24),
		0xe6, markPort,
		0x66, 0x49,
		0x75, 0xfc,
		0xe6, markPort,
		0xf4,
	}
}

// loopOnce runs the calibration guest once and returns the host time
// between its two marks.
func loopOnce(path string, n uint32) (time.Duration, error) {
	if _, err := os.Stat(path); err != nil {
		return 0, err
	}
	sys, err := kvm.Open(path)
	if err != nil {
		return 0, err
	}
	defer sys.Close()
	vm, err := sys.CreateVM(kvm.VMTypeDefault)
	if err != nil {
		return 0, err
	}
	defer vm.Close()
	// Intel's real-mode support needs a TSS area; elsewhere it is harmless.
	if err := vm.SetTSSAddr(tssAddr); err != nil {
		return 0, err
	}
	mem, err := unix.Mmap(-1, 0, loopMem, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_ANONYMOUS)
	if err != nil {
		return 0, err
	}
	defer unix.Munmap(mem)
	copy(mem[codeAddr:], loopCode(n))
	if err := vm.SetUserMemoryRegion(kvm.UserspaceMemoryRegion{
		MemorySize: loopMem, UserspaceAddr: uint64(uintptr(unsafe.Pointer(&mem[0]))),
	}); err != nil {
		return 0, err
	}
	c, err := vm.CreateVCPU(0)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	sr, err := c.Sregs()
	if err != nil {
		return 0, err
	}
	for _, seg := range []*kvm.Segment{&sr.CS, &sr.DS, &sr.ES, &sr.SS, &sr.FS, &sr.GS} {
		seg.Base, seg.Selector = 0, 0
	}
	if err := c.SetSregs(sr); err != nil {
		return 0, err
	}
	if err := c.SetRegs(kvm.Regs{RIP: codeAddr, RFLAGS: 2, RSP: 0x8000}); err != nil {
		return 0, err
	}

	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	c.BindThread()
	// A loop that never ends (a broken emulator) must not hang the caller.
	timer := time.AfterFunc(time.Minute, func() { c.Kick() })
	defer timer.Stop()
	var marks []time.Time
	for {
		err := c.Run()
		if errors.Is(err, kvm.ErrInterrupted) {
			if c.RunData().ImmediateExit() {
				return 0, fmt.Errorf("calibration loop of %d iterations did not finish within a minute", n)
			}
			continue // another signal: re-enter
		}
		if err != nil {
			return 0, err
		}
		now := time.Now()
		r := c.RunData()
		switch r.ExitReason() {
		case kvm.ExitIO:
			io, err := r.IO()
			if err != nil {
				return 0, err
			}
			if io.Port != markPort {
				return 0, fmt.Errorf("calibration guest: I/O on port %#x", io.Port)
			}
			marks = append(marks, now)
		case kvm.ExitHLT:
			if len(marks) != 2 {
				return 0, fmt.Errorf("calibration guest wrote %d marks, want 2", len(marks))
			}
			return marks[1].Sub(marks[0]), nil
		default:
			return 0, fmt.Errorf("calibration guest: unexpected exit %v", r.ExitReason())
		}
	}
}
