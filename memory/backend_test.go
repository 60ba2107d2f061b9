package memory

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// reserveHugePages makes sure n pages of pageSize are available in the
// hugetlb pool, growing it if needed, and restores the old size in Cleanup.
// Register it before creating the backends that use the pages.
func reserveHugePages(t testing.TB, pageSize, n uint64) {
	t.Helper()
	p, err := ReadHugePool(pageSize)
	if err != nil {
		t.Fatalf("read pool: %v", err)
	}
	if p.Available() >= n {
		return
	}
	file := "/proc/sys/vm/nr_hugepages"
	if pageSize != HugePage2M {
		file = fmt.Sprintf("/sys/kernel/mm/hugepages/hugepages-%dkB/nr_hugepages", pageSize>>10)
	}
	old, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	want := p.Total + n - p.Available()
	if err := os.WriteFile(file, []byte(strconv.FormatUint(want, 10)), 0); err != nil {
		t.Fatalf("reserve %d huge pages (needs root): %v", want, err)
	}
	t.Cleanup(func() {
		if err := os.WriteFile(file, []byte(strings.TrimSpace(string(old))), 0); err != nil {
			t.Errorf("restore %s: %v", file, err)
		}
	})
	if p, err = ReadHugePool(pageSize); err != nil || p.Available() < n {
		if pageSize == HugePage1G {
			t.Skipf("the kernel could not allocate %d contiguous 1 GiB pages at run time (pool %+v)", n, p)
		}
		t.Fatalf("pool after reserving: %+v, %v; want %d available", p, err, n)
	}
}

func closeLater(t testing.TB, b Backend) {
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("close %s: %v", b.Kind(), err)
		}
	})
}

// exercise writes a pattern through the mapping, reads it back and checks
// Usage grew by exactly the pages touched.
func exercise(t *testing.T, b Backend, wantPageSize uint64) {
	t.Helper()
	if got := b.PageSize(); got != wantPageSize {
		t.Errorf("PageSize = %#x, want %#x", got, wantPageSize)
	}
	if uint64(len(b.Bytes())) != b.Size() {
		t.Fatalf("len(Bytes) = %d, Size = %d", len(b.Bytes()), b.Size())
	}
	u0, err := b.Usage()
	if err != nil {
		t.Fatal(err)
	}
	mem := b.Bytes()
	// Touch the first byte of 3 backing pages.
	for i := uint64(0); i < 3; i++ {
		mem[i*wantPageSize] = byte(0xa0 + i)
	}
	for i := uint64(0); i < 3; i++ {
		if mem[i*wantPageSize] != byte(0xa0+i) {
			t.Fatalf("page %d reads %#x", i, mem[i*wantPageSize])
		}
	}
	u1, err := b.Usage()
	if err != nil {
		t.Fatal(err)
	}
	if d := u1.InUse - u0.InUse; d != 3*wantPageSize && u0.InUse != b.Size() {
		t.Errorf("%s: InUse grew by %#x after touching 3 pages of %#x (before %+v after %+v)", b.Kind(), d, wantPageSize, u0, u1)
	}
	if u1.Size != b.Size() {
		t.Errorf("Usage.Size = %#x", u1.Size)
	}
}

func TestBackends(t *testing.T) {
	const size = 16 << 20
	t.Run("anon", func(t *testing.T) {
		b, err := NewBackend(KindAnon, size, Options{})
		if err != nil {
			t.Fatal(err)
		}
		closeLater(t, b)
		if b.FD() != -1 || b.Kind() != KindAnon {
			t.Errorf("FD %d Kind %s", b.FD(), b.Kind())
		}
		exercise(t, b, PageSize)
		u, _ := b.Usage()
		if u.Allocated != 0 || u.Resident != 3*PageSize {
			t.Errorf("anon usage %+v, want 3 resident pages", u)
		}
	})
	t.Run("memfd", func(t *testing.T) {
		b, err := NewBackend(KindMemfd, size, Options{Name: "test-ram"})
		if err != nil {
			t.Fatal(err)
		}
		closeLater(t, b)
		if b.FD() < 0 {
			t.Error("memfd has no fd")
		}
		exercise(t, b, PageSize)
		u, _ := b.Usage()
		if u.Allocated != 3*PageSize || u.Resident != 3*PageSize {
			t.Errorf("memfd usage %+v, want 3 pages allocated and resident", u)
		}
	})
	t.Run("memfd-prealloc", func(t *testing.T) {
		b, err := NewBackend(KindMemfd, size, Options{Prealloc: true})
		if err != nil {
			t.Fatal(err)
		}
		closeLater(t, b)
		u, _ := b.Usage()
		if u.InUse != size || u.Allocated != size {
			t.Errorf("preallocated memfd usage %+v, want all %#x", u, size)
		}
	})
	t.Run("hugetlb-2M", func(t *testing.T) {
		reserveHugePages(t, HugePage2M, size/HugePage2M)
		p0, _ := ReadHugePool(HugePage2M)
		b, err := NewBackend(KindHugetlb, size, Options{})
		if err != nil {
			t.Fatal(err)
		}
		closeLater(t, b)
		p1, _ := ReadHugePool(HugePage2M)
		if p1.Reserved-p0.Reserved != size/HugePage2M {
			t.Errorf("mapping reserved %d pages, want %d (no MAP_NORESERVE)", p1.Reserved-p0.Reserved, size/HugePage2M)
		}
		exercise(t, b, HugePage2M)
		u, _ := b.Usage()
		if u.HugePages != 3 || u.InUse != 3*HugePage2M {
			t.Errorf("hugetlb usage %+v, want 3 huge pages", u)
		}
	})
	t.Run("hugetlb-2M-prealloc", func(t *testing.T) {
		reserveHugePages(t, HugePage2M, size/HugePage2M)
		p0, _ := ReadHugePool(HugePage2M)
		b, err := NewBackend(KindHugetlb, size, Options{Prealloc: true, HugePageSize: HugePage2M})
		if err != nil {
			t.Fatal(err)
		}
		closeLater(t, b)
		p1, _ := ReadHugePool(HugePage2M)
		u, _ := b.Usage()
		if p0.Free-p1.Free != size/HugePage2M || u.HugePages != size/HugePage2M {
			t.Errorf("prealloc took %d pages from the pool, usage %+v; want %d", p0.Free-p1.Free, u, size/HugePage2M)
		}
	})
	t.Run("guest_memfd", func(t *testing.T) {
		vm := testVM(t)
		b, err := NewGuestMemfd(testGuestMemfd(t, vm, size), size, Options{})
		if err != nil {
			t.Fatal(err)
		}
		closeLater(t, b)
		if b.Kind() != KindGuestMemfd || b.FD() < 0 {
			t.Errorf("kind %s fd %d", b.Kind(), b.FD())
		}
		exercise(t, b, PageSize)
		u, _ := b.Usage()
		if u.Resident != 3*PageSize {
			t.Errorf("guest_memfd usage %+v, want 3 resident pages", u)
		}
	})
	t.Run("guest_memfd-prealloc", func(t *testing.T) {
		vm := testVM(t)
		b, err := NewGuestMemfd(testGuestMemfd(t, vm, size), size, Options{Prealloc: true})
		if err != nil {
			t.Fatal(err)
		}
		closeLater(t, b)
		if u, _ := b.Usage(); u.InUse != size {
			t.Errorf("preallocated guest_memfd usage %+v, want %#x", u, size)
		}
	})
	t.Run("guest_memfd-too-small", func(t *testing.T) {
		vm := testVM(t)
		_, err := NewGuestMemfd(testGuestMemfd(t, vm, size), 2*size, Options{})
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("mapping beyond the file: %v, want ErrInvalid", err)
		}
	})
}

func TestBackendHugetlb1G(t *testing.T) {
	if testing.Short() {
		t.Skip("reserving a 1 GiB page is slow and may fail on a fragmented host; skipped in -short")
	}
	reserveHugePages(t, HugePage1G, 1)
	b, err := NewBackend(KindHugetlb, HugePage1G, Options{HugePageSize: HugePage1G, Prealloc: true})
	if err != nil {
		t.Fatal(err)
	}
	closeLater(t, b)
	if u, _ := b.Usage(); u.HugePages != 1 || b.PageSize() != HugePage1G {
		t.Errorf("1 GiB usage %+v page size %#x", u, b.PageSize())
	}
}

func TestBackendBadSizes(t *testing.T) {
	for _, tc := range []struct {
		kind Kind
		size uint64
		opt  Options
	}{
		{KindAnon, 0, Options{}},
		{KindMemfd, 0, Options{}},
		{KindAnon, 4095, Options{}},
		{KindMemfd, 8193, Options{}},
		{KindHugetlb, 4096, Options{}},
		{KindHugetlb, 3 << 20, Options{HugePageSize: HugePage2M}},
		{KindHugetlb, 2 << 20, Options{HugePageSize: 4 << 20}},
		{KindHugetlb, 0, Options{}},
		{KindGuestMemfd, 4096, Options{}},
		{"tmpfs", 4096, Options{}},
	} {
		b, err := NewBackend(tc.kind, tc.size, tc.opt)
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("NewBackend(%s, %#x, %+v) = %v, %v; want ErrInvalid", tc.kind, tc.size, tc.opt, b, err)
		}
		if err != nil && !strings.Contains(err.Error(), string(tc.kind)) && tc.kind != "tmpfs" {
			t.Errorf("error %q does not name the backend", err)
		}
	}
	if _, err := NewGuestMemfd(-1, 4096, Options{}); !errors.Is(err, ErrInvalid) {
		t.Errorf("NewGuestMemfd(-1) = %v", err)
	}
}

// With the real pool: asking for more pages than are available fails before
// anything is mapped, with the count and the command to run.
func TestHugetlbPoolTooSmall(t *testing.T) {
	p, err := ReadHugePool(HugePage2M)
	if err != nil {
		t.Fatal(err)
	}
	need := p.Available() + 3
	_, err = NewBackend(KindHugetlb, need*HugePage2M, Options{})
	if !errors.Is(err, ErrNoHugePages) {
		t.Fatalf("hugetlb of %d pages with %d available: %v, want ErrNoHugePages", need, p.Available(), err)
	}
	msg := err.Error()
	wantCmd := fmt.Sprintf("echo %d > /proc/sys/vm/nr_hugepages", p.Total+3)
	if !strings.Contains(msg, wantCmd) || !strings.Contains(msg, fmt.Sprintf("needs %d pages", need)) {
		t.Errorf("error %q lacks the page count or %q", msg, wantCmd)
	}
	p2, _ := ReadHugePool(HugePage2M)
	if p2.Reserved != p.Reserved || p2.Free != p.Free {
		t.Errorf("pool changed by a refused request: %+v -> %+v", p, p2)
	}
}

// With a fake sysfs tree: an empty pool, and the 1 GiB pool command.
func TestHugetlbPoolFake(t *testing.T) {
	dir := t.TempDir()
	write := func(kb uint64, total, free, resv uint64) {
		d := filepath.Join(dir, fmt.Sprintf("hugepages-%dkB", kb))
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, v := range map[string]uint64{"nr_hugepages": total, "free_hugepages": free, "resv_hugepages": resv, "surplus_hugepages": 0} {
			if err := os.WriteFile(filepath.Join(d, name), []byte(fmt.Sprintf("%d\n", v)), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	write(2048, 0, 0, 0)
	write(1048576, 2, 2, 1)
	old := hugepagesDir
	hugepagesDir = dir
	t.Cleanup(func() { hugepagesDir = old })

	err := checkHugePool(HugePage2M, 64, 128<<20)
	if !errors.Is(err, ErrNoHugePages) || !strings.Contains(err.Error(), "echo 64 > /proc/sys/vm/nr_hugepages") ||
		!strings.Contains(err.Error(), "needs 64 pages of 2048 KiB") {
		t.Errorf("empty 2M pool: %v", err)
	}
	err = checkHugePool(HugePage1G, 2, 2<<30)
	want := "echo 3 > " + filepath.Join(dir, "hugepages-1048576kB/nr_hugepages")
	if !errors.Is(err, ErrNoHugePages) || !strings.Contains(err.Error(), want) {
		t.Errorf("1G pool with 1 available: %v; want %q", err, want)
	}
	if err := checkHugePool(HugePage1G, 1, 1<<30); err != nil {
		t.Errorf("1G pool with 1 available, 1 needed: %v", err)
	}
	if _, err := ReadHugePool(16 << 30); !errors.Is(err, ErrUnsupported) {
		t.Errorf("16 GiB pages: %v, want ErrUnsupported", err)
	}
}

func TestHugetlbfsPathNotHugetlbfs(t *testing.T) {
	_, err := NewBackend(KindHugetlb, 2<<20, Options{HugetlbfsPath: t.TempDir()})
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "not on a hugetlbfs mount") {
		t.Errorf("hugetlb on tmp dir: %v", err)
	}
}

func TestBackendCloseTwice(t *testing.T) {
	b, err := NewBackend(KindMemfd, 1<<20, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := b.Usage(); !errors.Is(err, ErrInvalid) {
		t.Errorf("Usage after Close: %v", err)
	}
}

// A hugetlbfs mount given by path (directory: an unlinked file is created
// there). The test mounts a private hugetlbfs instance and unmounts it.
func TestHugetlbfsPath(t *testing.T) {
	dir := t.TempDir()
	if err := unix.Mount("none", dir, "hugetlbfs", 0, "pagesize=2M"); err != nil {
		if errors.Is(err, unix.EPERM) {
			t.Skipf("mounting hugetlbfs needs root: %v", err)
		}
		t.Fatalf("mount hugetlbfs: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("umount %s: %v", dir, err)
		}
	})
	reserveHugePages(t, HugePage2M, 2)
	b, err := NewBackend(KindHugetlb, 4<<20, Options{HugetlbfsPath: dir, Prealloc: true})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if b.PageSize() != HugePage2M {
		t.Errorf("page size %#x", b.PageSize())
	}
	if u, _ := b.Usage(); u.HugePages != 2 {
		t.Errorf("usage %+v", u)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 0 {
		t.Errorf("backing file left in the mount: %v", entries)
	}
	if _, err := NewBackend(KindHugetlb, 4<<20, Options{HugetlbfsPath: dir, HugePageSize: HugePage1G}); !errors.Is(err, ErrInvalid) {
		t.Errorf("1 GiB pages on a 2 MiB mount: %v", err)
	}
}
