package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"runtime/debug"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// trimDelay is how long after the vCPUs start the VMM trims itself: the
// set-up code (argument parsing, image loading, ACPI and CPUID tables,
// decompressors) has run by then, and the first guest instruction is not
// delayed by a garbage collection.
const trimDelay = 100 * time.Millisecond

// trimAfterStart waits trimDelay (or ctx) and then trims the process once:
// see trimResident.
func trimAfterStart(ctx context.Context) {
	t := time.NewTimer(trimDelay)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return
	case <-t.C:
	}
	_, _ = trimResident()
}

// trimResident gives back what start-up left resident and the running VMM
// does not need: freed heap pages (debug.FreeOSMemory), and the page-table
// entries of the binary's read-only segments (text, rodata, pclntab). The
// latter are page-cache pages shared with every other vmm process: start-up
// code and the kernel's fault-around (64 KiB per fault) map most of the
// 8 MiB binary, which RSS then counts, while a running VMM executes a small
// part of it. MADV_DONTNEED on a private read-only file mapping only drops
// our PTEs; a later access refaults the page from the page cache (a minor
// fault). Writable mappings are never touched. It returns the bytes of
// mappings it advised.
func trimResident() (uint64, error) {
	debug.FreeOSMemory()
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return 0, err
	}
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return 0, err
	}
	var total uint64
	sc := bufio.NewScanner(bytes.NewReader(maps))
	for sc.Scan() {
		start, end, ok := readOnlyMappingOf(sc.Bytes(), exe)
		if !ok {
			continue
		}
		// A raw syscall: the range is not Go memory, so no []byte for it.
		if _, _, errno := unix.Syscall(unix.SYS_MADVISE, uintptr(start), uintptr(end-start), unix.MADV_DONTNEED); errno != 0 {
			return total, fmt.Errorf("madvise %#x-%#x: %w", start, end, errno)
		}
		total += end - start
	}
	return total, sc.Err()
}

// readOnlyMappingOf parses one /proc/self/maps line and reports the range
// when it is a private mapping of file path with no write permission.
func readOnlyMappingOf(line []byte, path string) (start, end uint64, ok bool) {
	f := bytes.Fields(line)
	if len(f) < 6 || string(f[5]) != path {
		return 0, 0, false
	}
	perms := f[1]
	if len(perms) != 4 || perms[0] != 'r' || perms[1] != '-' || perms[3] != 'p' {
		return 0, 0, false
	}
	lo, hi, found := bytes.Cut(f[0], []byte("-"))
	if !found {
		return 0, 0, false
	}
	s, err1 := strconv.ParseUint(string(lo), 16, 64)
	e, err2 := strconv.ParseUint(string(hi), 16, 64)
	if err1 != nil || err2 != nil || e <= s {
		return 0, 0, false
	}
	return s, e, true
}
