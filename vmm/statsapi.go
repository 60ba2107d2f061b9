package vmm

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"github.com/vmmgo/vmm/memory"
)

// Snapshot is the machine's counters at one moment, as `vmm stats` and the
// stats socket show them while the guest runs.
type Snapshot struct {
	Time    time.Time         `json:"time"`
	Uptime  string            `json:"uptime"`
	CPUs    int               `json:"cpus"`
	State   string            `json:"state"` // "running" or the outcome
	Exits   map[string]uint64 `json:"exits"`
	Backend memory.Kind       `json:"memory_backend"`
	Memory  uint64            `json:"memory_bytes"`
	// Pages is the shared/private page state and the conversion counters.
	Pages memory.Stats `json:"pages"`
	// Footprint is the host memory in use for guest RAM.
	Footprint memory.Usage `json:"footprint"`
	Virtio    VirtioStats  `json:"virtio"`
}

// Snapshot reads every counter without stopping the guest.
func (m *Machine) Snapshot() Snapshot {
	s := Snapshot{Time: time.Now(), CPUs: len(m.vcpus), State: "running", Exits: m.stats.snapshot(),
		Backend: m.backend.Kind(), Memory: m.cfg.Memory, Pages: m.mem.Stats(), Virtio: m.VirtioStats()}
	if t := m.started.Load(); t != 0 {
		s.Uptime = time.Since(time.Unix(0, t)).Round(time.Millisecond).String()
	}
	select {
	case <-m.done:
		s.State = m.result.Outcome.String()
	default:
	}
	if u, err := m.backend.Usage(); err == nil {
		s.Footprint = u
	}
	return s
}

// ServeStats answers every connection to a unix socket at path with one
// Snapshot as JSON and closes it (`vmm stats PATH` reads it). A stale socket
// file left by a killed VMM is replaced; any other existing file is an
// error. stop closes the listener and removes the socket.
func (m *Machine) ServeStats(path string) (stop func(), err error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("stats socket %s: exists and is not a socket", path)
		}
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return nil, fmt.Errorf("stats socket %s: another process is serving on it", path)
		}
		os.Remove(path) // stale: its VMM is gone
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("stats socket: %w", err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				if !errors.Is(err, net.ErrClosed) {
					m.log.WithError(err).Warn("stats socket")
				}
				return
			}
			c.SetWriteDeadline(time.Now().Add(5 * time.Second))
			enc := json.NewEncoder(c)
			enc.SetIndent("", "  ")
			_ = enc.Encode(m.Snapshot())
			c.Close()
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			ln.Close() // also removes the socket file (net.UnixListener unlinks on Close)
			wg.Wait()
		})
	}, nil
}
