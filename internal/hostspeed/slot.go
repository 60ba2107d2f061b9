package hostspeed

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// SlotsEnv, when set to a positive number, is how many guest Linux boots
// may run at once on this machine (default: Slots()).
const SlotsEnv = "VMM_TEST_GUEST_SLOTS"

// SlotDirEnv, when set, is the directory of the slot lock files (default
// $TMPDIR/vmm-guest-slots). Processes share slots only through the same
// directory.
const SlotDirEnv = "VMM_TEST_SLOT_DIR"

// Slots is the number of guest Linux boots that may run at once: one per
// two CPUs, at least one. A boot of the test kernel on two vCPUs keeps
// about one core busy in the emulator (the second vCPU idles tickless most
// of the time) and spikes to two during SMP bring-up and parallel
// initcalls; on the 2-core development hosts, boots run one at a time.
func Slots() int {
	if v, err := strconv.Atoi(os.Getenv(SlotsEnv)); err == nil && v > 0 {
		return v
	}
	return max(1, runtime.NumCPU()/2)
}

func slotDir() string {
	if d := os.Getenv(SlotDirEnv); d != "" {
		return d
	}
	return filepath.Join(os.TempDir(), "vmm-guest-slots")
}

// Boot is a held guest-boot slot.
type Boot struct {
	f *os.File
	// Slot is the slot's index, Waited how long AcquireBoot waited for it.
	Slot   int
	Waited time.Duration
}

// Release gives the slot back. It is safe to call more than once.
func (b *Boot) Release() {
	if b == nil || b.f == nil {
		return
	}
	// Closing the file drops the flock.
	b.f.Close()
	b.f = nil
}

// AcquireBoot waits until one of the Slots() boot slots of this machine
// is free and takes it: an exclusive flock on a file in the slot
// directory, shared by every process (go test runs packages as parallel
// processes), released by Release or when the process dies. Call it before
// creating a guest that boots Linux and compute the guest's deadline after
// it returns, so that waiting is not counted against the boot. It returns
// ctx's error if ctx ends first.
func AcquireBoot(ctx context.Context) (*Boot, error) {
	return acquire(ctx, slotDir(), Slots())
}

// pollInterval is the longest wait between two attempts; each wait is
// random below it so that waiting processes do not move in step.
const pollInterval = 200 * time.Millisecond

func acquire(ctx context.Context, dir string, n int) (*Boot, error) {
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return nil, fmt.Errorf("guest boot slots: %w", err)
	}
	// Another user's directory under a shared /tmp must still be usable.
	_ = os.Chmod(dir, 0o777|os.ModeSticky)
	files := make([]*os.File, n)
	defer func() {
		for _, f := range files {
			if f != nil {
				f.Close()
			}
		}
	}()
	for i := range files {
		p := filepath.Join(dir, fmt.Sprintf("slot-%d.lock", i))
		f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o666)
		if errors.Is(err, os.ErrPermission) {
			f, err = os.Open(p) // flock works on a read-only descriptor too
		}
		if err != nil {
			return nil, fmt.Errorf("guest boot slots: %w", err)
		}
		files[i] = f
	}
	start := time.Now()
	// Start at a random slot so that processes spread over them.
	first := rand.IntN(n)
	for {
		for k := 0; k < n; k++ {
			i := (first + k) % n
			err := unix.Flock(int(files[i].Fd()), unix.LOCK_EX|unix.LOCK_NB)
			if err == nil {
				b := &Boot{f: files[i], Slot: i, Waited: time.Since(start)}
				files[i] = nil // kept open: it holds the lock
				return b, nil
			}
			if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
				return nil, fmt.Errorf("guest boot slots: flock %s: %w", files[i].Name(), err)
			}
		}
		t := time.NewTimer(time.Duration(rand.Int64N(int64(pollInterval))) + time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("waited %v for one of %d guest boot slots in %s: %w",
				time.Since(start).Round(time.Millisecond), n, dir, ctx.Err())
		case <-t.C:
		}
	}
}
