package memory

import (
	"fmt"
	"math"
	"math/bits"
)

// Attribute bits of a conversion request. They are those of
// KVM_HC_MAP_GPA_RANGE (Documentation/virt/kvm/x86/hypercalls.rst §8,
// arch/x86/include/uapi/asm/kvm_para.h), so the hypercall's args[2] and the
// pvmem port's ATTRS register pass through unchanged.
const (
	AttrPageSizeMask uint64 = 0xf    // bits 3:0: page-size hint
	AttrPageSize4K   uint64 = 0      // KVM_MAP_GPA_RANGE_PAGE_SZ_4K
	AttrPageSize2M   uint64 = 1 << 0 // KVM_MAP_GPA_RANGE_PAGE_SZ_2M
	AttrPageSize1G   uint64 = 1 << 1 // KVM_MAP_GPA_RANGE_PAGE_SZ_1G
	AttrPrivate      uint64 = 1 << 4 // KVM_MAP_GPA_RANGE_ENCRYPTED; clear = shared (DECRYPTED)
	attrKnown               = AttrPageSizeMask | AttrPrivate
)

// ConvertRequest asks to make NPages 4 KiB pages starting at GPA private
// (Attrs&AttrPrivate) or shared. The page-size hint in Attrs bits 3:0 must
// be 4K, 2M or 1G; it never changes what is converted (always exactly the
// requested 4 KiB pages) and imposes no alignment.
type ConvertRequest struct {
	GPA    GPA
	NPages uint64
	Attrs  uint64
}

// Private reports whether the request converts to private.
func (r ConvertRequest) Private() bool { return r.Attrs&AttrPrivate != 0 }

func (r ConvertRequest) String() string {
	dir := "shared"
	if r.Private() {
		dir = "private"
	}
	return fmt.Sprintf("[%v, +%d pages) -> %s (attrs %#x)", r.GPA, r.NPages, dir, r.Attrs)
}

// ConvertResult says what a successful conversion did.
type ConvertResult struct {
	Pages   uint64 // pages in the request
	Changed uint64 // pages whose state actually flipped (the rest already had it)
}

// Validate checks a request without converting anything: errors wrap
// ErrInvalid (zero pages, unaligned, wrap-around, unknown attribute bits or
// page-size hint) or ErrOutOfRange (outside guest RAM or across a hole).
func (g *Guest) Validate(req ConvertRequest) error {
	_, err := g.plan(req)
	return err
}

// plan validates req and splits it into per-region page ranges.
func (g *Guest) plan(req ConvertRequest) ([]span, error) {
	switch {
	case req.NPages == 0:
		return nil, fmt.Errorf("convert %v: %w: zero pages", req, ErrInvalid)
	case uint64(req.GPA)%PageSize != 0:
		return nil, fmt.Errorf("convert %v: %w: gpa not 4 KiB aligned", req, ErrInvalid)
	case req.NPages > (math.MaxUint64-uint64(req.GPA))/PageSize+1 ||
		req.NPages > math.MaxUint64/PageSize:
		return nil, fmt.Errorf("convert %v: %w: range wraps around the address space", req, ErrInvalid)
	case req.Attrs&^attrKnown != 0:
		return nil, fmt.Errorf("convert %v: %w: unknown attribute bits %#x", req, ErrInvalid, req.Attrs&^attrKnown)
	}
	switch req.Attrs & AttrPageSizeMask {
	case AttrPageSize4K, AttrPageSize2M, AttrPageSize1G:
	default:
		return nil, fmt.Errorf("convert %v: %w: unknown page-size hint %#x", req, ErrInvalid, req.Attrs&AttrPageSizeMask)
	}
	n := req.NPages * PageSize
	if uint64(req.GPA)+(n-1) < uint64(req.GPA) {
		return nil, fmt.Errorf("convert %v: %w: range wraps around the address space", req, ErrInvalid)
	}
	var spans []span
	err := g.walk(req.GPA, n, func(s span) error {
		spans = append(spans, s)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("convert %v: %w", req, err)
	}
	return spans, nil
}

// SetAttributeSink installs the hook through which the VMM tells KVM about
// a conversion (KVM_SET_MEMORY_ATTRIBUTES, or guest_memfd in-place
// conversion) where the kernel can enforce privacy. Convert calls it with
// the whole range, under the conversion lock, before the tracker changes;
// an error refuses the conversion and leaves every page as it was. nil
// removes it. The memory package never calls KVM itself.
func (g *Guest) SetAttributeSink(fn func(gpa, size uint64, private bool) error) {
	g.mu.Lock()
	g.sink = fn
	g.mu.Unlock()
}

// Convert is the one conversion routine behind every guest transport
// (KVM_HC_MAP_GPA_RANGE and the pvmem port). It validates req, then under
// the conversion lock flips exactly the requested 4 KiB pages. It allocates
// nothing, copies nothing, punches no hole and splits no huge page; the
// content of every page is kept unless the policy is PolicyZero, which
// clears the pages that changed state in place. Errors wrap ErrInvalid or
// ErrOutOfRange (bad request) or come from the attribute sink; nothing
// changes on error.
func (g *Guest) Convert(req ConvertRequest) (ConvertResult, error) {
	spans, err := g.plan(req)
	if err != nil {
		g.ctr.refused.Add(1)
		return ConvertResult{}, err
	}
	private := req.Private()
	res := ConvertResult{Pages: req.NPages}

	g.mu.Lock()
	if g.sink != nil {
		g.ctr.sinkCalls.Add(1)
		if err := g.sink(uint64(req.GPA), req.NPages*PageSize, private); err != nil {
			g.mu.Unlock()
			g.ctr.sinkErrors.Add(1)
			g.ctr.refused.Add(1)
			return ConvertResult{}, fmt.Errorf("convert %v: attribute sink: %w", req, err)
		}
	}
	for _, s := range spans {
		r := s.r
		first, count := s.off/PageSize, s.len/PageSize
		var before uint64
		if r.view != nil {
			before = r.bits.boundaryTransitions(first, count)
		}
		var onChange func(int, uint64)
		if g.policy == PolicyZero {
			onChange = func(w int, changed uint64) { zeroPages(r.mem, w, changed) }
		}
		res.Changed += r.bits.update(first, count, private, onChange)
		if r.view != nil {
			g.hardenUpdate(r, first, count, private, before)
		}
	}
	g.mu.Unlock()

	if private {
		g.ctr.toPrivate.Add(1)
		g.nPrivate.Add(res.Changed)
	} else {
		g.ctr.toShared.Add(1)
		g.nPrivate.Add(-res.Changed)
	}
	g.ctr.pagesRequested.Add(req.NPages)
	g.ctr.pagesChanged.Add(res.Changed)
	return res, nil
}

// zeroPages clears, in place, the pages of word w whose bit is set in mask.
func zeroPages(mem []byte, w int, mask uint64) {
	for mask != 0 {
		lo := bits.TrailingZeros64(mask)
		hi := lo + bits.TrailingZeros64(^(mask >> lo)) // end of this run of ones
		if hi > 64 {
			hi = 64
		}
		a := (uint64(w)*64 + uint64(lo)) * PageSize
		z := (uint64(w)*64 + uint64(hi)) * PageSize
		clear(mem[a:z])
		if hi == 64 {
			break
		}
		mask &^= wordMask(uint64(lo), uint64(hi))
	}
}

// IsPrivate reports the state of the page containing gpa (lock-free).
func (g *Guest) IsPrivate(gpa GPA) (bool, error) {
	r := g.find(gpa)
	if r == nil {
		return false, fmt.Errorf("page state: %w: %v", ErrOutOfRange, gpa)
	}
	return r.bits.isPrivate(uint64(gpa-r.GPA) / PageSize), nil
}

// PrivatePagesIn counts private pages in [gpa, gpa+n) (lock-free snapshot).
func (g *Guest) PrivatePagesIn(gpa GPA, n uint64) (uint64, error) {
	var total uint64
	err := g.walk(gpa, n, func(s span) error {
		first := s.off / PageSize
		last := (s.off + s.len - 1) / PageSize
		total += s.r.bits.countPrivate(first, last-first+1)
		return nil
	})
	return total, err
}

// Stats is a snapshot of the conversion and access counters.
type Stats struct {
	ToPrivate      uint64 // successful conversion requests to private
	ToShared       uint64 // successful conversion requests to shared
	PagesRequested uint64 // pages named by successful requests
	PagesConverted uint64 // pages whose state flipped
	Refused        uint64 // conversion requests refused (invalid, out of range, sink error)
	SinkCalls      uint64 // attribute sink calls
	SinkErrors     uint64 // attribute sink failures (also counted in Refused)
	DeviceRefused  uint64 // device accesses refused because a page was private
	DeviceFaults   uint64 // device accesses stopped by the hardened view (should stay 0)
	SharedPages    uint64 // current totals
	PrivatePages   uint64
	Hardened       bool   // the mprotect device view is active
	HardenedVMAs   uint64 // VMAs the device views use now (1 per region + 1 per state boundary)
	HardenMaxVMAs  uint64 // the budget they may use
	HardenFallback string // why hardening is off, if it was asked for
}

// Stats returns a snapshot of the counters.
func (g *Guest) Stats() Stats {
	priv := g.nPrivate.Load()
	s := Stats{
		ToPrivate:      g.ctr.toPrivate.Load(),
		ToShared:       g.ctr.toShared.Load(),
		PagesRequested: g.ctr.pagesRequested.Load(),
		PagesConverted: g.ctr.pagesChanged.Load(),
		Refused:        g.ctr.refused.Load(),
		SinkCalls:      g.ctr.sinkCalls.Load(),
		SinkErrors:     g.ctr.sinkErrors.Load(),
		DeviceRefused:  g.ctr.deviceRefused.Load(),
		DeviceFaults:   g.ctr.deviceFaults.Load(),
		PrivatePages:   priv,
		SharedPages:    g.size/PageSize - priv,
	}
	g.mu.RLock()
	s.Hardened = g.harden.active
	s.HardenedVMAs = uint64(g.harden.vmas)
	s.HardenMaxVMAs = uint64(g.harden.budget)
	s.HardenFallback = g.harden.fallback
	g.mu.RUnlock()
	return s
}
