package memory

import (
	"errors"
	"fmt"
)

// GPA is a guest physical address.
type GPA uint64

// PageSize is the granularity of guest page state and conversions (4 KiB),
// whatever the page size of the backing.
const PageSize = 4096

func (a GPA) String() string { return fmt.Sprintf("%#x", uint64(a)) }

// Errors shared by every package that touches guest memory. Wrap them with
// context; callers test them with errors.Is.
var (
	// ErrOutOfRange: an access or request touches an address that is not guest RAM.
	ErrOutOfRange = errors.New("guest address out of range")
	// ErrPrivate: a device model touched a page the guest has made private.
	ErrPrivate = errors.New("guest page is private")
	// ErrInvalid: a malformed request (unaligned, zero length, wrap-around, unknown bits).
	ErrInvalid = errors.New("invalid guest memory request")
	// ErrNoHugePages: the hugetlb pool cannot back the requested size.
	ErrNoHugePages = errors.New("not enough hugetlb pages reserved")
	// ErrUnsupported: the host kernel lacks what a backend needs.
	ErrUnsupported = errors.New("not supported by this host")
)
