package memory

import (
	"errors"
	"fmt"
	"math"
	"runtime/debug"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/sirupsen/logrus"
	"github.com/vmmgo/vmm/internal/guestlog"
)

// Region maps Size bytes of guest physical memory at GPA onto Backend,
// starting Offset bytes into it.
type Region struct {
	GPA     GPA
	Size    uint64
	Backend Backend
	Offset  uint64
}

// End is the first GPA after the region.
func (r Region) End() GPA { return r.GPA + GPA(r.Size) }

// ContentPolicy says what a conversion does to the content of a page.
type ContentPolicy int

const (
	// PolicyPreserve keeps the content across share/unshare (pKVM semantics).
	PolicyPreserve ContentPolicy = iota
	// PolicyZero clears every page whose state changes, in place (memclr
	// through the VMM mapping; no hole punched, no huge page split).
	PolicyZero
)

func (p ContentPolicy) String() string {
	switch p {
	case PolicyPreserve:
		return "preserve"
	case PolicyZero:
		return "zero"
	}
	return fmt.Sprintf("ContentPolicy(%d)", int(p))
}

// GuestOptions configure a Guest beyond its regions.
type GuestOptions struct {
	// InitialPrivate starts with every page private (--private-memory);
	// the default is all shared.
	InitialPrivate bool
	// Policy is what conversions do to page contents.
	Policy ContentPolicy
	// Harden adds the host-side device view (see harden.go): a second
	// MAP_SHARED mapping of each fd-backed 4 KiB region, with private
	// ranges mprotect(PROT_NONE). The software check stays the authority.
	Harden bool
	// HardenMaxVMAs caps the VMAs the device views may use; 0 derives it
	// from vm.max_map_count and the process's current mappings.
	HardenMaxVMAs int
	// Log receives rate-limited reports of refused accesses and the one-time
	// hardening fallback notice. nil discards.
	Log *logrus.Entry
}

// regionState is a Region plus its page states and mappings.
type regionState struct {
	Region
	mem  []byte    // VMM view: Backend.Bytes()[Offset : Offset+Size]
	view []byte    // device view when hardening is active, else nil
	bits *pageBits // one bit per 4 KiB page of this region
}

// Guest is the guest physical RAM: an immutable sorted set of regions, the
// shared/private state of every 4 KiB page, and the checked accessors.
//
// Locking (the choice the package documents in doc.go): Convert holds mu
// for writing while it validates nothing more, flips bits, calls the
// attribute sink, zeroes and mprotects; DeviceRead/DeviceWrite hold mu for
// reading from the state check to the end of the copy. A device copy that
// passed the check therefore finishes before any conversion of its pages
// can start, and a conversion to private is visible to every device access
// that starts after it returns. The device atomics (memory/atomic_unsafe.go) hold
// it the same way. Read/Write (VMM side) take no lock.
type Guest struct {
	regions []*regionState
	size    uint64
	policy  ContentPolicy

	mu   sync.RWMutex
	sink func(gpa, size uint64, private bool) error

	harden hardening

	log      *logrus.Entry
	logLimit guestlog.Limiter // refused device accesses
	ctr      counters
	nPrivate atomic.Uint64

	// testSkipDeviceCheck lets a test reach the device mapping with the
	// software check bypassed, to prove the second line of defence (the
	// hardened view, the fault guard).
	testSkipDeviceCheck bool
}

type counters struct {
	toPrivate, toShared   atomic.Uint64
	pagesChanged          atomic.Uint64
	pagesRequested        atomic.Uint64
	refused               atomic.Uint64
	deviceRefused         atomic.Uint64
	deviceFaults          atomic.Uint64
	sinkCalls, sinkErrors atomic.Uint64
}

// NewGuest builds guest RAM from regions, all pages shared, content preserved.
func NewGuest(regions ...Region) (*Guest, error) {
	return NewGuestWithOptions(GuestOptions{}, regions...)
}

// NewGuestWithOptions builds guest RAM from regions. Regions must be
// 4 KiB aligned (GPA, Size, Offset), non-empty, inside their backend, not
// wrap the address space and not overlap; a hugetlb region's GPA and Offset
// must be congruent modulo the huge page size so guest huge pages land on
// host huge pages.
func NewGuestWithOptions(opt GuestOptions, regions ...Region) (*Guest, error) {
	if len(regions) == 0 {
		return nil, fmt.Errorf("new guest: %w: no regions", ErrInvalid)
	}
	g := &Guest{policy: opt.Policy, log: guestlog.OrDiscard(opt.Log)}
	switch opt.Policy {
	case PolicyPreserve, PolicyZero:
	default:
		return nil, fmt.Errorf("new guest: %w: unknown content policy %d", ErrInvalid, opt.Policy)
	}
	for i, r := range regions {
		if err := checkRegion(r); err != nil {
			return nil, fmt.Errorf("new guest: region %d: %w", i, err)
		}
		g.regions = append(g.regions, &regionState{
			Region: r,
			mem:    r.Backend.Bytes()[r.Offset : r.Offset+r.Size],
			bits:   newPageBits(r.Size/PageSize, opt.InitialPrivate),
		})
	}
	sort.Slice(g.regions, func(i, j int) bool { return g.regions[i].GPA < g.regions[j].GPA })
	for i := 1; i < len(g.regions); i++ {
		p, r := g.regions[i-1], g.regions[i]
		if r.GPA < p.End() {
			return nil, fmt.Errorf("new guest: %w: region [%v, %v) overlaps [%v, %v)", ErrInvalid, r.GPA, r.End(), p.GPA, p.End())
		}
	}
	for _, r := range g.regions {
		g.size += r.Size
	}
	if opt.InitialPrivate {
		g.nPrivate.Store(g.size / PageSize)
	}
	if opt.Harden {
		if err := g.setupHardening(opt.HardenMaxVMAs); err != nil {
			g.closeViews()
			return nil, fmt.Errorf("new guest: %w", err)
		}
	}
	return g, nil
}

func checkRegion(r Region) error {
	switch {
	case r.Backend == nil:
		return fmt.Errorf("%w: no backend", ErrInvalid)
	case r.Size == 0:
		return fmt.Errorf("%w: size is zero", ErrInvalid)
	case uint64(r.GPA)%PageSize != 0 || r.Size%PageSize != 0 || r.Offset%PageSize != 0:
		return fmt.Errorf("%w: gpa %v, size %#x and offset %#x must be multiples of %#x", ErrInvalid, r.GPA, r.Size, r.Offset, PageSize)
	case uint64(r.GPA) > math.MaxUint64-r.Size:
		return fmt.Errorf("%w: [%v, +%#x) wraps around the address space", ErrInvalid, r.GPA, r.Size)
	case r.Offset > r.Backend.Size() || r.Size > r.Backend.Size()-r.Offset:
		return fmt.Errorf("%w: offset %#x + size %#x exceeds the %#x-byte %s backend", ErrInvalid, r.Offset, r.Size, r.Backend.Size(), r.Backend.Kind())
	case uint64(len(r.Backend.Bytes())) != r.Backend.Size():
		return fmt.Errorf("%w: %s backend is not mapped", ErrInvalid, r.Backend.Kind())
	}
	if hp := r.Backend.PageSize(); hp > PageSize && uint64(r.GPA)%hp != r.Offset%hp {
		return fmt.Errorf("%w: gpa %v and offset %#x are not congruent modulo the %d KiB huge page size", ErrInvalid, r.GPA, r.Offset, hp>>10)
	}
	return nil
}

// Close removes the hardening views. It does not close the backends, which
// the caller owns.
func (g *Guest) Close() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.closeViews()
}

// Regions returns a copy of the regions, sorted by GPA.
func (g *Guest) Regions() []Region {
	out := make([]Region, len(g.regions))
	for i, r := range g.regions {
		out[i] = r.Region
	}
	return out
}

// Size is the total RAM in bytes.
func (g *Guest) Size() uint64 { return g.size }

// Policy is the content policy for conversions.
func (g *Guest) Policy() ContentPolicy { return g.policy }

// find returns the region containing gpa, or nil.
func (g *Guest) find(gpa GPA) *regionState {
	i := sort.Search(len(g.regions), func(i int) bool { return g.regions[i].End() > gpa })
	if i < len(g.regions) && g.regions[i].GPA <= gpa {
		return g.regions[i]
	}
	return nil
}

// span is one piece of an access: a region and the byte range inside it.
type span struct {
	r        *regionState
	off, len uint64
}

// walk validates that [gpa, gpa+n) is RAM (regions may be adjacent; holes
// are not RAM) and calls fn for each piece in order. fn is not called at
// all if any part is out of range. n == 0 is valid anywhere.
func (g *Guest) walk(gpa GPA, n uint64, fn func(span) error) error {
	if n == 0 {
		return nil
	}
	if uint64(gpa) > math.MaxUint64-n+1 {
		return fmt.Errorf("%w: [%v, +%#x) wraps around the address space", ErrOutOfRange, gpa, n)
	}
	var buf [4]span
	spans := buf[:0]
	cur, left := gpa, n
	for left > 0 {
		r := g.find(cur)
		if r == nil {
			return fmt.Errorf("%w: %v (access [%v, +%#x))", ErrOutOfRange, cur, gpa, n)
		}
		off := uint64(cur - r.GPA)
		l := min(left, r.Size-off)
		spans = append(spans, span{r, off, l})
		cur += GPA(l)
		left -= l
	}
	for _, s := range spans {
		if err := fn(s); err != nil {
			return err
		}
	}
	return nil
}

// Read copies guest RAM at gpa into p. VMM side (loaders, firmware tables):
// bounds-checked, may cross adjacent regions, ignores page state.
func (g *Guest) Read(gpa GPA, p []byte) error {
	done := 0
	err := g.walk(gpa, uint64(len(p)), func(s span) error {
		done += copy(p[done:], s.r.mem[s.off:s.off+s.len])
		return nil
	})
	if err != nil {
		return fmt.Errorf("guest read: %w", err)
	}
	return nil
}

// Write copies p into guest RAM at gpa. VMM side, ignores page state.
func (g *Guest) Write(gpa GPA, p []byte) error {
	done := 0
	err := g.walk(gpa, uint64(len(p)), func(s span) error {
		done += copy(s.r.mem[s.off:s.off+s.len], p[done:])
		return nil
	})
	if err != nil {
		return fmt.Errorf("guest write: %w", err)
	}
	return nil
}

// Slice returns the VMM mapping of [gpa, gpa+n), which must lie within one
// region. VMM side: it ignores page state and the slice stays valid until
// the backend is closed.
func (g *Guest) Slice(gpa GPA, n uint64) ([]byte, error) {
	r := g.find(gpa)
	if r == nil {
		return nil, fmt.Errorf("guest slice: %w: %v", ErrOutOfRange, gpa)
	}
	off := uint64(gpa - r.GPA)
	if n > r.Size-off {
		return nil, fmt.Errorf("guest slice: %w: [%v, +%#x) leaves the region [%v, %v)", ErrOutOfRange, gpa, n, r.GPA, r.End())
	}
	return r.mem[off : off+n : off+n], nil
}

// checkShared returns ErrPrivate naming the first private page of the
// spans. Called with mu held (read or write).
func (g *Guest) checkShared(gpa GPA, n uint64) error {
	return g.walk(gpa, n, func(s span) error {
		first := s.off / PageSize
		last := (s.off + s.len - 1) / PageSize
		if i := s.r.bits.firstPrivate(first, last-first+1); i >= 0 {
			return fmt.Errorf("%w: page %v", ErrPrivate, s.r.GPA+GPA(uint64(i)*PageSize))
		}
		return nil
	})
}

// CheckShared reports whether a device may touch [gpa, gpa+n): nil, or an
// error wrapping ErrOutOfRange or ErrPrivate. Advisory only: the state can
// change right after it returns; DeviceRead/DeviceWrite check atomically.
func (g *Guest) CheckShared(gpa GPA, n uint64) error {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.checkShared(gpa, n)
}

// DeviceRead copies guest RAM into p for a device model. It fails, reading
// nothing, with ErrOutOfRange outside RAM and ErrPrivate when any page
// touched is private.
func (g *Guest) DeviceRead(gpa GPA, p []byte) error {
	return g.deviceCopy(gpa, p, false)
}

// DeviceWrite copies p into guest RAM for a device model. It fails, writing
// nothing, with ErrOutOfRange outside RAM and ErrPrivate when any page
// touched is private.
func (g *Guest) DeviceWrite(gpa GPA, p []byte) error {
	return g.deviceCopy(gpa, p, true)
}

func (g *Guest) deviceCopy(gpa GPA, p []byte, write bool) (err error) {
	op := "device read"
	if write {
		op = "device write"
	}
	g.mu.RLock()
	defer g.mu.RUnlock()
	if err := g.deviceCheck(op, gpa, uint64(len(p))); err != nil {
		return err
	}
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer g.recoverFault(op, gpa, &err)
	done := 0
	return g.walk(gpa, uint64(len(p)), func(s span) error {
		m := s.r.deviceMem()
		if write {
			done += copy(m[s.off:s.off+s.len], p[done:])
		} else {
			done += copy(p[done:], m[s.off:s.off+s.len])
		}
		return nil
	})
}

// deviceCheck is the software page-state check of every device access:
// nil, or an error wrapping ErrOutOfRange or ErrPrivate (counted and logged
// rate-limited). Called with mu held for reading.
func (g *Guest) deviceCheck(op string, gpa GPA, n uint64) error {
	if g.testSkipDeviceCheck {
		return nil
	}
	if err := g.checkShared(gpa, n); err != nil {
		if errors.Is(err, ErrPrivate) {
			g.ctr.deviceRefused.Add(1)
			g.logLimit.Warn(g.log.WithField("gpa", gpa), err, op+" refused")
		}
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}

// deviceMem is the mapping device accesses go through: the hardened view
// (private runs PROT_NONE) when it is active, else the VMM mapping.
func (r *regionState) deviceMem() []byte {
	if r.view != nil {
		return r.view
	}
	return r.mem
}

// recoverFault turns a memory fault during a device access into the same
// refused-access error as the software check (ErrPrivate). Every device
// access runs with debug.SetPanicOnFault(true), so a SIGSEGV or SIGBUS on
// guest RAM becomes a panic that this deferred call recovers: the hardened
// view's PROT_NONE runs (reaching one means the software check was wrong),
// and, once the kernel enforces private memory in guest_memfd, host access
// to a private page (SIGBUS). Any other panic is not ours and goes on.
func (g *Guest) recoverFault(op string, gpa GPA, err *error) {
	r := recover()
	if r == nil {
		return
	}
	f, ok := r.(interface{ Addr() uintptr })
	if !ok {
		panic(r)
	}
	g.ctr.deviceFaults.Add(1)
	g.ctr.deviceRefused.Add(1)
	*err = fmt.Errorf("%s: %w: memory fault at host address %#x during the access at %v: %v", op, ErrPrivate, f.Addr(), gpa, r)
	g.logLimit.Warn(g.log.WithField("gpa", gpa), *err, op+" faulted")
}
