package main

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

func TestReadOnlyMappingOf(t *testing.T) {
	const exe = "/usr/bin/vmm"
	for _, c := range []struct {
		line       string
		start, end uint64
		ok         bool
	}{
		{"00400000-00687000 r-xp 00000000 fd:01 123 /usr/bin/vmm", 0x400000, 0x687000, true},
		{"00687000-0094a000 r--p 00287000 fd:01 123 /usr/bin/vmm", 0x687000, 0x94a000, true},
		{"0094a000-009b5000 rw-p 0054a000 fd:01 123 /usr/bin/vmm", 0, 0, false}, // data: written
		{"7f00-8f00 r--s 0 fd:01 9 /usr/bin/vmm", 0, 0, false},                  // shared
		{"00400000-00687000 r-xp 00000000 fd:01 123 /usr/bin/other", 0, 0, false},
		{"7ffd5fa77000-7ffd5fa98000 rw-p 00000000 00:00 0 [stack]", 0, 0, false},
		{"zz-00687000 r-xp 0 fd:01 123 /usr/bin/vmm", 0, 0, false},
		{"00687000-00400000 r-xp 0 fd:01 123 /usr/bin/vmm", 0, 0, false},
	} {
		s, e, ok := readOnlyMappingOf([]byte(c.line), exe)
		if s != c.start || e != c.end || ok != c.ok {
			t.Errorf("%q: %#x-%#x %v, want %#x-%#x %v", c.line, s, e, ok, c.start, c.end, c.ok)
		}
	}
}

// rssFileKB is RssFile of this process.
func rssFileKB(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "RssFile:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no RssFile in /proc/self/status")
	return 0
}

// TestTrimResident trims this test binary: its read-only segments are
// advised, file-backed RSS drops, and the program goes on running (the code
// refaults from the page cache).
func TestTrimResident(t *testing.T) {
	before := rssFileKB(t)
	n, err := trimResident()
	if err != nil {
		t.Fatal(err)
	}
	after := rssFileKB(t)
	if n == 0 || after >= before {
		t.Fatalf("advised %d bytes; RssFile %d kB -> %d kB", n, before, after)
	}
	t.Logf("advised %d KiB; RssFile %d kB -> %d kB", n>>10, before, after)
	// Code and read-only data still work.
	if s := strconv.Itoa(12345); s != "12345" || !strings.Contains(strings.Repeat("ab", 3), "ba") {
		t.Fatal("the program broke after trimming")
	}
}
