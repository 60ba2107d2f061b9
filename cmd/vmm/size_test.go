package main

import "testing"

func TestParseSize(t *testing.T) {
	good := map[string]uint64{
		"512M": 512 << 20, "2G": 2 << 30, "2g": 2 << 30, "1.5G": 3 << 29, "64K": 64 << 10,
		"4096B": 4096, "256": 256 << 20, "1GiB": 1 << 30, " 1G ": 1 << 30,
	}
	for in, want := range good {
		got, err := parseSize(in)
		if err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "G", "-1G", "abc", "1.0000001B", "99999999T"} {
		if got, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) = %d, want an error", in, got)
		}
	}
}
