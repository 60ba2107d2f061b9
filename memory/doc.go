// Package memory owns guest RAM: the backends that allocate it, the regions
// that place it in the guest physical address space, bounds-checked access
// to it, and the shared/private state of every 4 KiB page with the one
// routine that converts pages between the two.
//
// # Backends
//
// Each region is backed by one host allocation, made once (see
// docs/conversion.md and docs/kvm-api.md §4-§5):
//
//	anon         mmap(MAP_SHARED|MAP_ANONYMOUS)               4 KiB
//	memfd        memfd_create + mmap(MAP_SHARED)              4 KiB
//	hugetlb      memfd_create(MFD_HUGETLB|MFD_HUGE_2MB/1GB)   2 MiB / 1 GiB
//	             or a file on a hugetlbfs mount
//	guest_memfd  KVM_CREATE_GUEST_MEMFD(MMAP|INIT_SHARED),    4 KiB
//	             made by the caller, mmap(MAP_SHARED)
//
// Of this module the package imports only internal/guestlog (a leaf, see
// docs/architecture.md); it never imports kvm: the VMM creates the guest_memfd and
// registers every mapping with KVM_SET_USER_MEMORY_REGION(2). Usage reports
// what each backing really holds (resident pages by mincore, file blocks,
// huge pages); its fields are documented on the Usage type.
//
// # Access
//
// Read/Write/Slice are for the VMM itself (loaders, firmware tables) and
// ignore page state. DeviceRead/DeviceWrite are for device models: they are
// refused with ErrPrivate, touching nothing, when any page of the access is
// private, and the refusal is counted and logged (rate-limited). The
// device atomics (DeviceLoad16, DeviceStore16, DeviceLoad32,
// DeviceCompareAndSwap32: virtqueue ring indexes) are checked the same way;
// devices never get a pointer into guest RAM. Every device access runs with
// debug.SetPanicOnFault, so a fault on guest RAM (the hardened view, or a
// kernel that SIGBUSes host access to a private guest_memfd page) is
// returned as ErrPrivate instead of killing the process.
//
// # Page state and conversion
//
// The tracker keeps one bit per 4 KiB page (set = private) whatever the
// backing page size, in words updated with sync/atomic And/Or, so range
// updates and the device check scan 64 pages per step. Guest.Convert is the
// only routine that changes it; every guest transport (KVM_HC_MAP_GPA_RANGE,
// the pvmem port, KVM_EXIT_MEMORY_FAULT) calls it through the VMM's one
// entry point per transport (vmm/conversion.go). A conversion validates, flips exactly the
// requested pages and leaves the backing alone: nothing is allocated,
// copied, punched or split, and content survives share -> unshare -> share
// (pKVM semantics) unless the guest's policy is PolicyZero, which clears the
// pages that changed state in place. The kernel has no "get attributes"
// call, so this record is the truth; where KVM can enforce privacy the VMM
// mirrors each conversion into it through SetAttributeSink.
//
// # Concurrency: why a RWMutex
//
// Conversions take Guest.mu for writing; device copies and atomics take it
// for reading from the state check to the end of the access. A device access that passed
// the check can therefore never overlap a conversion of its pages to private
// (that would leak data written after the guest unshared the page, or let a
// device write land in a private page). A seqlock would let the check and
// copy run without a shared cache line, but a device write cannot be rolled
// back after a failed sequence check, so it cannot protect writes. Readers
// (vCPU and device threads) run concurrently with one another; Go's RWMutex
// blocks new readers once a writer waits, so conversions are not starved.
// Lock-free queries (IsPrivate, Stats) read the atomic words directly.
//
// # Hardening
//
// Optionally (GuestOptions.Harden, fd-backed 4 KiB regions only) device
// copies go through a second MAP_SHARED mapping of the same file in which
// private runs are mprotect(PROT_NONE). It counts the VMAs it creates,
// stays under a budget derived from vm.max_map_count, and falls back to the
// software check alone (logged once, reported by Stats) when the budget is
// exhausted or the backing is hugetlb or anonymous. See harden.go.
package memory
