package memory

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// DiscardBaseline models how VMMs convert memory today, for measurement
// beside Guest.Convert (docs/conversion.md, scripts/convbench): two backings
// per RAM range, a shared one (memfd or hugetlb) and a private guest_memfd,
// and on each conversion the side that is no longer in use is discarded
// with fallocate(PUNCH_HOLE|KEEP_SIZE) (docs/kvm-api.md §7; QEMU's
// ram_block_discard_range in its guest_memfd conversion path). A hugetlb
// shared side is never discarded, as QEMU does ("pre-allocated ... doesn't
// need to be discarded"), which is where double allocation comes from.
//
// It is a model, not a VMM path: nothing registers it with KVM. Page i of
// the model is byte offset i*PageSize of both backings.
type DiscardBaseline struct {
	shared, private Backend
	punchShared     bool
	private1        []uint64 // one bit per page, set = private
	pages           uint64
	punches         uint64
}

// NewDiscardBaseline pairs a shared backing with a private one of the same
// size (normally a guest_memfd). All pages start shared. The shared side is
// punched on conversions to private unless it is hugetlb.
func NewDiscardBaseline(shared, private Backend) (*DiscardBaseline, error) {
	switch {
	case shared == nil || private == nil:
		return nil, fmt.Errorf("discard baseline: %w: missing backing", ErrInvalid)
	case shared.Size() != private.Size():
		return nil, fmt.Errorf("discard baseline: %w: shared side %#x bytes, private side %#x", ErrInvalid, shared.Size(), private.Size())
	case shared.FD() < 0 || private.FD() < 0:
		return nil, fmt.Errorf("discard baseline: %w: both sides need a file to punch (shared %s, private %s)", ErrInvalid, shared.Kind(), private.Kind())
	}
	n := shared.Size() / PageSize
	return &DiscardBaseline{
		shared: shared, private: private,
		punchShared: shared.Kind() != KindHugetlb,
		private1:    make([]uint64, (n+63)/64),
		pages:       n,
	}, nil
}

// Pages is the number of 4 KiB pages the model covers.
func (d *DiscardBaseline) Pages() uint64 { return d.pages }

// Punches is how many fallocate(PUNCH_HOLE) calls conversions made.
func (d *DiscardBaseline) Punches() uint64 { return d.punches }

// IsPrivate reports the state of page i (false beyond the end).
func (d *DiscardBaseline) IsPrivate(i uint64) bool {
	return i < d.pages && d.private1[i/64]&(1<<(i%64)) != 0
}

// Convert makes pages [first, first+n) private or shared and discards their
// old side (except a hugetlb shared side). It does not touch the new side:
// call Touch for the guest's use of the pages.
func (d *DiscardBaseline) Convert(first, n uint64, private bool) error {
	if n == 0 || first >= d.pages || n > d.pages-first {
		return fmt.Errorf("discard baseline: convert [%d, +%d) of %d pages: %w", first, n, d.pages, ErrOutOfRange)
	}
	discard := d.private
	if private {
		discard = d.shared
	}
	if discard != d.shared || d.punchShared {
		if err := unix.Fallocate(discard.FD(), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE,
			int64(first*PageSize), int64(n*PageSize)); err != nil {
			return fmt.Errorf("discard baseline: punch %s side [%d, +%d): %w", discard.Kind(), first, n, os.NewSyscallError("fallocate", err))
		}
		d.punches++
	}
	for p := first; p < first+n; p++ {
		if private {
			d.private1[p/64] |= 1 << (p % 64)
		} else {
			d.private1[p/64] &^= 1 << (p % 64)
		}
	}
	return nil
}

// Touch writes one byte of each page [first, first+n) on the side its
// state selects: the guest using the pages (which allocates them there).
func (d *DiscardBaseline) Touch(first, n uint64, value byte) error {
	if first >= d.pages || n > d.pages-first {
		return fmt.Errorf("discard baseline: touch [%d, +%d) of %d pages: %w", first, n, d.pages, ErrOutOfRange)
	}
	s, p := d.shared.Bytes(), d.private.Bytes()
	for i := first; i < first+n; i++ {
		if d.IsPrivate(i) {
			p[i*PageSize] = value
		} else {
			s[i*PageSize] = value
		}
	}
	return nil
}

// Read returns the first byte of page i on its current side.
func (d *DiscardBaseline) Read(i uint64) byte {
	if i >= d.pages {
		return 0
	}
	if d.IsPrivate(i) {
		return d.private.Bytes()[i*PageSize]
	}
	return d.shared.Bytes()[i*PageSize]
}

// Usage is the host memory both sides hold: the sum of their Usage, with
// InUse the figure to compare with an in-place backing's.
func (d *DiscardBaseline) Usage() (Usage, error) {
	us, err := d.shared.Usage()
	if err != nil {
		return Usage{}, fmt.Errorf("discard baseline: shared side: %w", err)
	}
	up, err := d.private.Usage()
	if err != nil {
		return Usage{}, fmt.Errorf("discard baseline: private side: %w", err)
	}
	return Usage{
		Size:      us.Size + up.Size,
		Resident:  us.Resident + up.Resident,
		Allocated: us.Allocated + up.Allocated,
		HugePages: us.HugePages + up.HugePages,
		InUse:     us.InUse + up.InUse,
	}, nil
}
