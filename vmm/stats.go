package vmm

import (
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
)

// exitStats counts vCPU exits by reason (and by port for PIO), cheaply
// enough to stay on in production: one atomic add per exit.
type exitStats struct {
	mu     sync.Mutex
	counts map[string]*atomic.Uint64
}

func newExitStats() *exitStats { return &exitStats{counts: map[string]*atomic.Uint64{}} }

// counter returns the counter for key, creating it once. vCPUs cache the
// pointers they use so the hot path does not take the lock.
func (s *exitStats) counter(key string) *atomic.Uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.counts[key]
	if !ok {
		c = new(atomic.Uint64)
		s.counts[key] = c
	}
	return c
}

func (s *exitStats) snapshot() map[string]uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]uint64, len(s.counts))
	for k, v := range s.counts {
		if n := v.Load(); n > 0 {
			out[k] = n
		}
	}
	return out
}

func (s *exitStats) String() string {
	snap := s.snapshot()
	keys := make([]string, 0, len(snap))
	for k := range snap {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString("exit counters:\n")
	for _, k := range keys {
		fmt.Fprintf(&b, "  %-28s %d\n", k, snap[k])
	}
	return b.String()
}
