package main

import (
	"fmt"
	"strconv"
	"strings"
)

// parseSize reads a memory size: "512M", "2G", "1.5G", "64K", "4096B". A bare
// number means MiB, as QEMU's -m does.
func parseSize(s string) (uint64, error) {
	t := strings.TrimSpace(strings.ToUpper(s))
	if t == "" {
		return 0, fmt.Errorf("empty size")
	}
	// "1GiB" and "1GB" mean "1G".
	if n := len(t); n >= 3 && strings.HasSuffix(t, "IB") && strings.ContainsRune("KMGT", rune(t[n-3])) {
		t = t[:n-2]
	} else if n >= 2 && t[n-1] == 'B' && strings.ContainsRune("KMGT", rune(t[n-2])) {
		t = t[:n-1]
	}
	mult := float64(1 << 20)
	switch t[len(t)-1] {
	case 'B':
		mult, t = 1, t[:len(t)-1]
	case 'K':
		mult, t = 1<<10, t[:len(t)-1]
	case 'M':
		mult, t = 1<<20, t[:len(t)-1]
	case 'G':
		mult, t = 1<<30, t[:len(t)-1]
	case 'T':
		mult, t = 1<<40, t[:len(t)-1]
	}
	v, err := strconv.ParseFloat(t, 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("size %q: want a number with an optional K, M, G or T suffix (e.g. 512M, 2G)", s)
	}
	n := v * mult
	if n > 1<<52 {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	if n != float64(uint64(n)) {
		return 0, fmt.Errorf("size %q is not a whole number of bytes", s)
	}
	return uint64(n), nil
}
