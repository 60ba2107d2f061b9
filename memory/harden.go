package memory

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Host-side hardening: a second MAP_SHARED mapping of each region's file,
// the "device view", through which DeviceRead/DeviceWrite copy. Private
// runs are mprotect(PROT_NONE) in that view, so a device model that somehow
// got past the software check faults instead of reading guest secrets.
// The same physical pages back both views: no copy, no allocation.
//
// Limits (docs/conversion.md, "Optional hardening"; docs/host-kvm.md for vm.max_map_count): every boundary between a private
// and a shared run splits the view into one more VMA, and the process may
// hold at most vm.max_map_count VMAs (65530 by default). Adjacent runs of
// the same protection are merged by the kernel (vma_merge), so the view of
// a region costs exactly 1 + (number of state boundaries) VMAs; the tracker
// counts those boundaries word-at-a-time before and after each conversion.
// When a conversion would exceed the budget, or mprotect fails, hardening
// turns itself off for the whole guest (views unmapped, one log line) and
// the software check, which is the authority anyway, carries on alone.
// hugetlb backings (mprotect cannot split a huge page mapping at 4 KiB) and
// anonymous backings (no file to map twice) are never hardened.
type hardening struct {
	active   bool
	vmas     int64 // VMAs the views use now
	budget   int64
	fallback string // why hardening is off
}

// mapCountPath and mapsPath are variables for tests.
var (
	maxMapCountPath = "/proc/sys/vm/max_map_count"
	mapsPath        = "/proc/self/maps"
)

// defaultHardenBudget leaves half of the VMAs still free in the process to
// everything else (the Go heap, other guests, thread stacks).
func defaultHardenBudget() (int64, error) {
	b, err := os.ReadFile(maxMapCountPath)
	if err != nil {
		return 0, err
	}
	limit, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", maxMapCountPath, err)
	}
	maps, err := os.ReadFile(mapsPath)
	if err != nil {
		return 0, err
	}
	used := int64(bytes.Count(maps, []byte{'\n'}))
	return (limit - used) / 2, nil
}

// setupHardening maps the device views. Called from the constructor, before
// the Guest is shared.
func (g *Guest) setupHardening(maxVMAs int) error {
	for _, r := range g.regions {
		b := r.Backend
		switch {
		case b.FD() < 0:
			g.hardenOff(fmt.Sprintf("%s backing has no file to map twice", b.Kind()))
			return nil
		case b.PageSize() != PageSize:
			g.hardenOff(fmt.Sprintf("%s backing has %d KiB pages; mprotect cannot split them at 4 KiB", b.Kind(), b.PageSize()>>10))
			return nil
		}
	}
	budget := int64(maxVMAs)
	if budget <= 0 {
		var err error
		if budget, err = defaultHardenBudget(); err != nil {
			g.hardenOff(fmt.Sprintf("cannot size the VMA budget: %v", err))
			return nil
		}
	}
	need := int64(0)
	for _, r := range g.regions {
		need += 1 + int64(r.bits.transitions(0, r.bits.n-1))
	}
	if need > budget {
		g.hardenOff(fmt.Sprintf("%d VMAs needed, budget %d", need, budget))
		return nil
	}
	g.harden.budget = budget
	for _, r := range g.regions {
		view, err := unix.Mmap(r.Backend.FD(), int64(r.Offset), int(r.Size),
			unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_NORESERVE)
		if err != nil {
			return fmt.Errorf("hardening: map device view of [%v, %v): %w", r.GPA, r.End(), os.NewSyscallError("mmap", err))
		}
		r.view = view
		// Protect existing private runs (all of them when InitialPrivate).
		var i uint64
		for i < r.bits.n {
			p := r.bits.isPrivate(i)
			j := i + 1
			for j < r.bits.n && r.bits.isPrivate(j) == p {
				j++
			}
			if p {
				if err := unix.Mprotect(view[i*PageSize:j*PageSize], unix.PROT_NONE); err != nil {
					return fmt.Errorf("hardening: protect [%v, +%d pages): %w", r.GPA+GPA(i*PageSize), j-i, os.NewSyscallError("mprotect", err))
				}
			}
			i = j
		}
	}
	g.harden.vmas = need
	g.harden.active = true
	return nil
}

// hardenUpdate mirrors a conversion of pages [first, first+count) of r into
// its view; before is boundaryTransitions of the range taken before the
// bits changed. Called with mu held for writing.
func (g *Guest) hardenUpdate(r *regionState, first, count uint64, private bool, before uint64) {
	after := r.bits.boundaryTransitions(first, count)
	vmas := g.harden.vmas + int64(after) - int64(before)
	if vmas > g.harden.budget {
		g.disableHardening(fmt.Sprintf("conversion of [%v, +%d pages) needs %d VMAs, budget %d (vm.max_map_count)",
			r.GPA+GPA(first*PageSize), count, vmas, g.harden.budget))
		return
	}
	prot := unix.PROT_READ | unix.PROT_WRITE
	if private {
		prot = unix.PROT_NONE
	}
	if err := unix.Mprotect(r.view[first*PageSize:(first+count)*PageSize], prot); err != nil {
		g.disableHardening(fmt.Sprintf("mprotect of [%v, +%d pages): %v", r.GPA+GPA(first*PageSize), count, os.NewSyscallError("mprotect", err)))
		return
	}
	g.harden.vmas = vmas
}

// disableHardening unmaps every view and falls back to the software check.
// Called with mu held for writing (or before the Guest is shared).
func (g *Guest) disableHardening(why string) {
	if err := g.closeViews(); err != nil {
		why += fmt.Sprintf("; unmapping the views: %v", err)
	}
	g.hardenOff(why)
}

func (g *Guest) hardenOff(why string) {
	g.harden.active = false
	g.harden.vmas = 0
	g.harden.fallback = why
	g.log.WithField("reason", why).Warn("host-side mprotect hardening off; the software page-state check alone guards device access")
}

func (g *Guest) closeViews() error {
	var errs []error
	for _, r := range g.regions {
		if r.view != nil {
			if err := unix.Munmap(r.view); err != nil {
				errs = append(errs, os.NewSyscallError("munmap", err))
			}
			r.view = nil
		}
	}
	g.harden.active = false
	return errors.Join(errs...)
}
