// Package procstat reads what the current process holds (open fds, OS
// threads, goroutines, resident memory) for soak tests that check nothing
// leaks across many VMs.
package procstat

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
)

// Snapshot is what the process holds at one moment.
type Snapshot struct {
	FDs, Threads, Goroutines int
	RSSKiB                   int64
}

func (s Snapshot) String() string {
	return fmt.Sprintf("fds %d, threads %d, goroutines %d, RSS %d KiB", s.FDs, s.Threads, s.Goroutines, s.RSSKiB)
}

// Take collects garbage first, so that finalizers closing forgotten fds
// show up as a difference between two snapshots instead of hiding one.
func Take() (Snapshot, error) {
	runtime.GC()
	debug.FreeOSMemory()
	var s Snapshot
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return s, err
	}
	s.FDs = len(ents) - 1 // the directory being read holds one
	s.Goroutines = runtime.NumGoroutine()
	st, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return s, err
	}
	sc := bufio.NewScanner(bytes.NewReader(st))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB"))
		switch k {
		case "Threads":
			s.Threads, _ = strconv.Atoi(v)
		case "VmRSS":
			s.RSSKiB, _ = strconv.ParseInt(v, 10, 64)
		}
	}
	if s.Threads == 0 || s.RSSKiB == 0 {
		return s, fmt.Errorf("could not read Threads/VmRSS from /proc/self/status:\n%s", st)
	}
	return s, nil
}
