package memory

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// hugepagesDir is where the kernel exposes the per-size hugetlb pool counters
// (Documentation/admin-guide/mm/hugetlbpage.rst, "/sys/kernel/mm/hugepages").
// A variable so tests can point it at a fake tree.
var hugepagesDir = "/sys/kernel/mm/hugepages"

// HugePool is a snapshot of the hugetlb pool for one huge page size.
type HugePool struct {
	PageSize uint64 // bytes
	Total    uint64 // nr_hugepages
	Free     uint64 // free_hugepages (includes reserved ones)
	Reserved uint64 // resv_hugepages: promised to mappings, not yet faulted
	Surplus  uint64 // surplus_hugepages
}

// Available is how many pages a new mapping can still reserve.
func (p HugePool) Available() uint64 {
	if p.Reserved > p.Free {
		return 0
	}
	return p.Free - p.Reserved
}

// InUse is how many huge pages are faulted in (taken from the pool).
func (p HugePool) InUse() uint64 {
	if p.Free > p.Total {
		return 0
	}
	return p.Total - p.Free
}

// ReadHugePool reads the pool counters for pageSize (2 MiB or 1 GiB).
func ReadHugePool(pageSize uint64) (HugePool, error) {
	p := HugePool{PageSize: pageSize}
	dir := filepath.Join(hugepagesDir, fmt.Sprintf("hugepages-%dkB", pageSize>>10))
	if _, err := os.Stat(dir); err != nil {
		return p, fmt.Errorf("hugetlb pool: %w: no %d KiB huge pages on this host: %w", ErrUnsupported, pageSize>>10, err)
	}
	for _, f := range []struct {
		name string
		dst  *uint64
	}{
		{"nr_hugepages", &p.Total},
		{"free_hugepages", &p.Free},
		{"resv_hugepages", &p.Reserved},
		{"surplus_hugepages", &p.Surplus},
	} {
		b, err := os.ReadFile(filepath.Join(dir, f.name))
		if err != nil {
			return p, fmt.Errorf("hugetlb pool: %w", err)
		}
		v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
		if err != nil {
			return p, fmt.Errorf("hugetlb pool: %s: %w", f.name, err)
		}
		*f.dst = v
	}
	return p, nil
}

// reserveCommand is the exact command that grows the pool to total pages.
func reserveCommand(pageSize, total uint64) string {
	if pageSize == HugePage2M {
		return fmt.Sprintf("echo %d > /proc/sys/vm/nr_hugepages", total)
	}
	return fmt.Sprintf("echo %d > %s/hugepages-%dkB/nr_hugepages", total, hugepagesDir, pageSize>>10)
}

// checkHugePool fails with ErrNoHugePages, saying how many pages are missing
// and how to reserve them, when the pool cannot back need more pages. The
// default hugepage size's pool is /proc/sys/vm/nr_hugepages; other sizes
// only have the sysfs file.
func checkHugePool(pageSize, need, size uint64) error {
	p, err := ReadHugePool(pageSize)
	if err != nil {
		return fmt.Errorf("hugetlb backend: %w", err)
	}
	if avail := p.Available(); avail < need {
		total := p.Total + (need - avail)
		return fmt.Errorf("hugetlb backend: %w: %d MiB of guest RAM needs %d pages of %d KiB, the pool has %d available "+
			"(%d total, %d free, %d reserved); reserve more as root with: %s",
			ErrNoHugePages, size>>20, need, pageSize>>10, avail, p.Total, p.Free, p.Reserved, reserveCommand(pageSize, total))
	}
	return nil
}

// ReserveHugePages makes n 2 MiB hugetlb pages available, raising
// /proc/sys/vm/nr_hugepages (root) only if the pool is short. restore lowers
// it by exactly what was raised, so callers sharing the pool (parallel
// tests, the benchmark scripts) do not take each other's pages away.
func ReserveHugePages(n uint64) (restore func() error, err error) {
	nop := func() error { return nil }
	p, err := ReadHugePool(HugePage2M)
	if err != nil {
		return nop, err
	}
	if p.Available() >= n {
		return nop, nil
	}
	raise := int64(n - p.Available())
	if err := addHugePages(raise); err != nil {
		return nop, fmt.Errorf("reserve %d more 2 MiB pages (needs root): %w", raise, err)
	}
	restore = func() error { return addHugePages(-raise) }
	if p, err = ReadHugePool(HugePage2M); err != nil || p.Available() < n {
		return restore, fmt.Errorf("hugetlb pool after reserving: %+v, %v; want %d available", p, err, n)
	}
	return restore, nil
}

func addHugePages(delta int64) error {
	const file = "/proc/sys/vm/nr_hugepages"
	b, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	cur, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	return os.WriteFile(file, []byte(strconv.FormatInt(max(cur+delta, 0), 10)), 0)
}
