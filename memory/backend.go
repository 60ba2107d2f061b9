package memory

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sync"

	"golang.org/x/sys/unix"
)

// Kind names a guest RAM backend.
type Kind string

// The backends. Each region of guest RAM is backed by exactly one of them.
const (
	KindAnon       Kind = "anon"        // mmap(MAP_SHARED|MAP_ANONYMOUS)
	KindMemfd      Kind = "memfd"       // memfd_create + mmap(MAP_SHARED)
	KindHugetlb    Kind = "hugetlb"     // memfd_create(MFD_HUGETLB) or a hugetlbfs file
	KindGuestMemfd Kind = "guest_memfd" // KVM_CREATE_GUEST_MEMFD(MMAP|INIT_SHARED), created by the caller
)

// Huge page sizes the hugetlb backend accepts.
const (
	HugePage2M uint64 = 2 << 20
	HugePage1G uint64 = 1 << 30
)

// Options tune a backend.
type Options struct {
	// Prealloc allocates every page when the backend is created (fallocate
	// and MAP_POPULATE), so a short hugetlb pool or a full tmpfs fails at
	// start-up instead of killing the guest with SIGBUS later. Without it,
	// anon and memfd are lazily populated (MAP_NORESERVE); hugetlb still
	// reserves its pages at mmap time (no MAP_NORESERVE).
	Prealloc bool
	// HugePageSize is the hugetlb page size: HugePage2M (default) or
	// HugePage1G. With HugetlbfsPath it must match the mount's page size
	// (0 takes the mount's).
	HugePageSize uint64
	// HugetlbfsPath, for KindHugetlb, is a directory on a hugetlbfs mount
	// (an unlinked file is created there) or a file on one. Empty uses
	// memfd_create(MFD_HUGETLB), which needs no mount.
	HugetlbfsPath string
	// Name labels the memfd (visible in /proc/<pid>/maps). Default "vmm-ram".
	Name string
}

// Usage is the host memory a backend actually holds, in bytes.
//
//   - Resident: pages of the backing object present in host memory, by
//     mincore(2) over the whole mapping. For shared mappings (anon
//     MAP_SHARED, memfd, guest_memfd) mincore answers from the object's page
//     cache, so a page counts whoever touched it: the VMM, KVM or the guest
//     through another mapping. guest_memfd counts a page once it has been
//     faulted (made up to date); Prealloc faults every page. For hugetlb it
//     equals Allocated (mincore on hugetlb only reports this process's page
//     table entries).
//   - Allocated: file blocks allocated, fstat(2) st_blocks × 512: shmem
//     pages of a memfd (including swapped-out ones), huge pages of a hugetlb
//     file × the huge page size. 0 for anon (no file) and guest_memfd (its
//     inode does not count blocks on Linux 6.18).
//   - HugePages: huge pages this hugetlb file holds from the pool
//     (Allocated / PageSize()); 0 for the other kinds.
//   - InUse: the one figure to compare: max(Resident, Allocated).
type Usage struct {
	Size      uint64
	Resident  uint64
	Allocated uint64
	HugePages uint64
	InUse     uint64
}

// Backend is one host allocation that backs guest RAM.
type Backend interface {
	Kind() Kind
	Size() uint64
	PageSize() uint64      // backing page size: 4 KiB, 2 MiB or 1 GiB
	Bytes() []byte         // the host mapping (MAP_SHARED), len == Size()
	FD() int               // -1 when there is no file
	Usage() (Usage, error) // host memory actually in use
	Close() error
}

// backing implements Backend for every kind.
type backing struct {
	kind     Kind
	size     uint64
	pageSize uint64
	mem      []byte
	fd       int

	closeOnce sync.Once
	closeErr  error
}

var _ Backend = (*backing)(nil)

func (b *backing) Kind() Kind       { return b.kind }
func (b *backing) Size() uint64     { return b.size }
func (b *backing) PageSize() uint64 { return b.pageSize }
func (b *backing) Bytes() []byte    { return b.mem }
func (b *backing) FD() int          { return b.fd }

func (b *backing) Close() error {
	b.closeOnce.Do(func() {
		var errs []error
		if b.mem != nil {
			if err := unix.Munmap(b.mem); err != nil {
				errs = append(errs, os.NewSyscallError("munmap", err))
			}
			b.mem = nil
		}
		if b.fd >= 0 {
			if err := unix.Close(b.fd); err != nil {
				errs = append(errs, os.NewSyscallError("close", err))
			}
			b.fd = -1
		}
		b.closeErr = errors.Join(errs...)
	})
	return b.closeErr
}

func (b *backing) Usage() (Usage, error) {
	u := Usage{Size: b.size}
	if b.mem == nil {
		return u, fmt.Errorf("%s backend usage: %w: backend is closed", b.kind, ErrInvalid)
	}
	if b.fd >= 0 {
		var st unix.Stat_t
		if err := unix.Fstat(b.fd, &st); err != nil {
			return u, fmt.Errorf("%s backend usage: %w", b.kind, os.NewSyscallError("fstat", err))
		}
		u.Allocated = uint64(st.Blocks) * 512
	}
	if b.kind == KindHugetlb {
		u.Resident = u.Allocated
		u.HugePages = u.Allocated / b.pageSize
	} else {
		n, err := residentPages(b.mem)
		if err != nil {
			return u, fmt.Errorf("%s backend usage: %w", b.kind, err)
		}
		u.Resident = n * PageSize
	}
	u.InUse = max(u.Resident, u.Allocated)
	return u, nil
}

// residentPages counts the 4 KiB pages of mem that mincore reports resident,
// in chunks so the vector stays small for many-GiB mappings.
func residentPages(mem []byte) (uint64, error) {
	const chunk = 1 << 30
	vec := make([]byte, chunk/PageSize)
	var n uint64
	for off := 0; off < len(mem); off += chunk {
		end := min(off+chunk, len(mem))
		if err := mincore(mem[off:end], vec); err != nil {
			return 0, err
		}
		for _, v := range vec[:(end-off+PageSize-1)/PageSize] {
			n += uint64(v & 1)
		}
	}
	return n, nil
}

func checkSize(kind Kind, size, align uint64) error {
	switch {
	case size == 0:
		return fmt.Errorf("%s backend: %w: size is zero", kind, ErrInvalid)
	case size%align != 0:
		return fmt.Errorf("%s backend: %w: size %#x is not a multiple of the page size %#x", kind, ErrInvalid, size, align)
	case size > math.MaxInt:
		return fmt.Errorf("%s backend: %w: size %#x does not fit the address space", kind, ErrInvalid, size)
	}
	return nil
}

// NewBackend allocates guest RAM of the given kind (anon, memfd or hugetlb;
// guest_memfd comes from NewGuestMemfd because its fd is made by KVM).
func NewBackend(kind Kind, size uint64, opt Options) (Backend, error) {
	if opt.Name == "" {
		opt.Name = "vmm-ram"
	}
	switch kind {
	case KindAnon:
		return newAnon(size, opt)
	case KindMemfd:
		return newMemfd(size, opt)
	case KindHugetlb:
		return newHugetlb(size, opt)
	case KindGuestMemfd:
		return nil, fmt.Errorf("new backend: %w: guest_memfd needs a KVM fd, use NewGuestMemfd", ErrInvalid)
	default:
		return nil, fmt.Errorf("new backend: %w: unknown kind %q (want anon, memfd, hugetlb or guest_memfd)", ErrInvalid, kind)
	}
}

// mapFlags: lazily populated memory must not be charged against the
// overcommit limit up front (MAP_NORESERVE), so an 8 GiB guest that touches
// little costs little; Prealloc populates instead.
func mapFlags(opt Options) int {
	if opt.Prealloc {
		return unix.MAP_SHARED | unix.MAP_POPULATE
	}
	return unix.MAP_SHARED | unix.MAP_NORESERVE
}

func newAnon(size uint64, opt Options) (Backend, error) {
	if err := checkSize(KindAnon, size, PageSize); err != nil {
		return nil, err
	}
	mem, err := unix.Mmap(-1, 0, int(size), unix.PROT_READ|unix.PROT_WRITE, mapFlags(opt)|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, fmt.Errorf("anon backend of %#x bytes: %w", size, os.NewSyscallError("mmap", err))
	}
	return &backing{kind: KindAnon, size: size, pageSize: PageSize, mem: mem, fd: -1}, nil
}

func newMemfd(size uint64, opt Options) (_ Backend, err error) {
	if err := checkSize(KindMemfd, size, PageSize); err != nil {
		return nil, err
	}
	fd, err := unix.MemfdCreate(opt.Name, unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("memfd backend: %w", os.NewSyscallError("memfd_create", err))
	}
	defer func() {
		if err != nil {
			unix.Close(fd)
		}
	}()
	if err := unix.Ftruncate(fd, int64(size)); err != nil {
		return nil, fmt.Errorf("memfd backend of %#x bytes: %w", size, os.NewSyscallError("ftruncate", err))
	}
	if opt.Prealloc {
		if err := unix.Fallocate(fd, 0, 0, int64(size)); err != nil {
			return nil, fmt.Errorf("memfd backend: preallocate %#x bytes: %w", size, os.NewSyscallError("fallocate", err))
		}
	}
	mem, err := unix.Mmap(fd, 0, int(size), unix.PROT_READ|unix.PROT_WRITE, mapFlags(opt))
	if err != nil {
		return nil, fmt.Errorf("memfd backend of %#x bytes: %w", size, os.NewSyscallError("mmap", err))
	}
	return &backing{kind: KindMemfd, size: size, pageSize: PageSize, mem: mem, fd: fd}, nil
}

// NewGuestMemfd maps a guest_memfd that the caller created with
// KVM_CREATE_GUEST_MEMFD and flags GUEST_MEMFD_FLAG_MMAP|GUEST_MEMFD_FLAG_INIT_SHARED
// (KVM API §4.142; guest_memfd only allows MAP_SHARED). The backend takes
// ownership of fd and closes it, also on error. The caller registers the
// memory with KVM_SET_USER_MEMORY_REGION2 (KVM_MEM_GUEST_MEMFD, guest_memfd =
// fd, userspace_addr = &Bytes()[0]). Prealloc uses fallocate(KEEP_SIZE), the
// only allocation mode guest_memfd accepts, then faults every page in.
func NewGuestMemfd(fd int, size uint64, opt Options) (_ Backend, err error) {
	defer func() {
		if err != nil && fd >= 0 {
			unix.Close(fd)
		}
	}()
	if fd < 0 {
		return nil, fmt.Errorf("guest_memfd backend: %w: bad fd %d", ErrInvalid, fd)
	}
	if err := checkSize(KindGuestMemfd, size, PageSize); err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("guest_memfd backend: %w", os.NewSyscallError("fstat", err))
	}
	if uint64(st.Size) < size {
		return nil, fmt.Errorf("guest_memfd backend: %w: file holds %#x bytes, %#x requested", ErrInvalid, st.Size, size)
	}
	if opt.Prealloc {
		if err := unix.Fallocate(fd, unix.FALLOC_FL_KEEP_SIZE, 0, int64(size)); err != nil {
			return nil, fmt.Errorf("guest_memfd backend: preallocate %#x bytes: %w", size, os.NewSyscallError("fallocate", err))
		}
	}
	mem, err := unix.Mmap(fd, 0, int(size), unix.PROT_READ|unix.PROT_WRITE, mapFlags(opt))
	if err != nil {
		if errors.Is(err, unix.ENODEV) {
			return nil, fmt.Errorf("guest_memfd backend: %w: mmap refused (created without GUEST_MEMFD_FLAG_MMAP?): %w",
				ErrUnsupported, os.NewSyscallError("mmap", err))
		}
		return nil, fmt.Errorf("guest_memfd backend of %#x bytes: %w", size, os.NewSyscallError("mmap", err))
	}
	return &backing{kind: KindGuestMemfd, size: size, pageSize: PageSize, mem: mem, fd: fd}, nil
}

func newHugetlb(size uint64, opt Options) (_ Backend, err error) {
	var fd int
	hp := opt.HugePageSize
	if opt.HugetlbfsPath != "" {
		fd, hp, err = openHugetlbfs(opt.HugetlbfsPath, opt.Name, hp)
		if err != nil {
			return nil, err
		}
		defer func() {
			if err != nil {
				unix.Close(fd)
			}
		}()
	} else {
		if hp == 0 {
			hp = HugePage2M
		}
		if hp != HugePage2M && hp != HugePage1G {
			return nil, fmt.Errorf("hugetlb backend: %w: huge page size %#x (want 2 MiB or 1 GiB)", ErrInvalid, hp)
		}
	}
	if err := checkSize(KindHugetlb, size, hp); err != nil {
		return nil, err
	}
	held := uint64(0)
	if opt.HugetlbfsPath != "" {
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			return nil, fmt.Errorf("hugetlb backend: %w", os.NewSyscallError("fstat", err))
		}
		held = uint64(st.Blocks) * 512 / hp
	}
	if need := size / hp; need > held {
		if err := checkHugePool(hp, need-held, size); err != nil {
			return nil, err
		}
	}
	if opt.HugetlbfsPath == "" {
		flag := unix.MFD_HUGE_2MB
		if hp == HugePage1G {
			flag = unix.MFD_HUGE_1GB
		}
		fd, err = unix.MemfdCreate(opt.Name, unix.MFD_CLOEXEC|unix.MFD_HUGETLB|flag)
		if err != nil {
			if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
				return nil, fmt.Errorf("hugetlb backend: %w: memfd_create(MFD_HUGETLB, %d KiB pages): %w",
					ErrUnsupported, hp>>10, os.NewSyscallError("memfd_create", err))
			}
			return nil, fmt.Errorf("hugetlb backend: %w", os.NewSyscallError("memfd_create", err))
		}
		defer func() {
			if err != nil {
				unix.Close(fd)
			}
		}()
	}
	if err := unix.Ftruncate(fd, int64(size)); err != nil {
		return nil, fmt.Errorf("hugetlb backend of %#x bytes: %w", size, os.NewSyscallError("ftruncate", err))
	}
	if opt.Prealloc {
		if err := unix.Fallocate(fd, 0, 0, int64(size)); err != nil {
			if errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.ENOMEM) {
				return nil, fmt.Errorf("hugetlb backend: preallocate %#x bytes: %w (the pool shrank meanwhile?): %w",
					size, ErrNoHugePages, os.NewSyscallError("fallocate", err))
			}
			return nil, fmt.Errorf("hugetlb backend: preallocate %#x bytes: %w", size, os.NewSyscallError("fallocate", err))
		}
	}
	// No MAP_NORESERVE: a shared hugetlb mapping reserves its pages now, so
	// the guest cannot die of an empty pool later even without Prealloc.
	flags := unix.MAP_SHARED
	if opt.Prealloc {
		flags |= unix.MAP_POPULATE
	}
	mem, err := unix.Mmap(fd, 0, int(size), unix.PROT_READ|unix.PROT_WRITE, flags)
	if err != nil {
		if errors.Is(err, unix.ENOMEM) {
			return nil, fmt.Errorf("hugetlb backend of %#x bytes: %w (the pool shrank meanwhile?): %w",
				size, ErrNoHugePages, os.NewSyscallError("mmap", err))
		}
		return nil, fmt.Errorf("hugetlb backend of %#x bytes: %w", size, os.NewSyscallError("mmap", err))
	}
	return &backing{kind: KindHugetlb, size: size, pageSize: hp, mem: mem, fd: fd}, nil
}

// openHugetlbfs opens (or creates, unlinked, in a directory) a file on a
// hugetlbfs mount and returns its huge page size (statfs f_bsize).
func openHugetlbfs(path, name string, want uint64) (fd int, hp uint64, err error) {
	var sfs unix.Statfs_t
	if err := unix.Statfs(path, &sfs); err != nil {
		return -1, 0, fmt.Errorf("hugetlb backend: %s: %w", path, os.NewSyscallError("statfs", err))
	}
	if uint32(sfs.Type) != unix.HUGETLBFS_MAGIC {
		return -1, 0, fmt.Errorf("hugetlb backend: %w: %s is not on a hugetlbfs mount (f_type %#x)", ErrInvalid, path, sfs.Type)
	}
	hp = uint64(sfs.Bsize)
	if want != 0 && want != hp {
		return -1, 0, fmt.Errorf("hugetlb backend: %w: %s has %d KiB pages, %d KiB requested", ErrInvalid, path, hp>>10, want>>10)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return -1, 0, fmt.Errorf("hugetlb backend: %w", err)
	}
	if fi.IsDir() {
		f, err := os.CreateTemp(path, name+"-*")
		if err != nil {
			return -1, 0, fmt.Errorf("hugetlb backend: %w", err)
		}
		defer f.Close()
		if err := os.Remove(f.Name()); err != nil {
			return -1, 0, fmt.Errorf("hugetlb backend: unlink %s: %w", filepath.Base(f.Name()), err)
		}
		fd, err = unix.Dup(int(f.Fd()))
		if err != nil {
			return -1, 0, fmt.Errorf("hugetlb backend: %w", os.NewSyscallError("dup", err))
		}
		unix.CloseOnExec(fd)
		return fd, hp, nil
	}
	fd, err = unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, 0, fmt.Errorf("hugetlb backend: open %s: %w", path, os.NewSyscallError("open", err))
	}
	return fd, hp, nil
}
