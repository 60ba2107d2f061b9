package vmm

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/vmmgo/vmm/memory"
)

// Snapshot is the machine's counters at one moment, as `vmm stats` and the
// control socket show them while the guest runs.
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
	// Conversions is the conversion counters by transport (conversion.go).
	Conversions ConversionStats `json:"conversions"`
	// Footprint is the host memory in use for guest RAM.
	Footprint memory.Usage `json:"footprint"`
	Virtio    VirtioStats  `json:"virtio"`
}

// Snapshot reads every counter without stopping the guest.
func (m *Machine) Snapshot() Snapshot {
	s := Snapshot{Time: time.Now(), CPUs: len(m.vcpus), State: m.RunState(), Exits: m.stats.snapshot(),
		Backend: m.backend.Kind(), Memory: m.cfg.Memory, Pages: m.mem.Stats(), Conversions: m.Conversions(), Virtio: m.VirtioStats()}
	if t := m.started.Load(); t != 0 {
		s.Uptime = time.Since(time.Unix(0, t)).Round(time.Millisecond).String()
	}
	if u, err := m.backend.Usage(); err == nil {
		s.Footprint = u
	}
	return s
}

// Control requests, one line per connection (see ServeControl).
const (
	CtlStats  = "stats"
	CtlDump   = "dump"
	CtlPause  = "pause"
	CtlResume = "resume"
	CtlStop   = "stop"
)

// maxControlLine bounds a request; the longest valid one is 6 bytes.
const maxControlLine = 64

// ParseControl reads the command of a control request line.
func ParseControl(line []byte) (string, error) {
	if len(line) > maxControlLine {
		return "", fmt.Errorf("request longer than %d bytes", maxControlLine)
	}
	cmd := strings.TrimSpace(string(line))
	switch cmd {
	case CtlStats, CtlDump, CtlPause, CtlResume, CtlStop:
		return cmd, nil
	case "":
		return CtlStats, nil
	}
	return "", fmt.Errorf("unknown request %q (want stats, dump, pause, resume or stop)", cmd)
}

// ControlReply answers every request but stats (which gets a Snapshot).
type ControlReply struct {
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
	Dump  string `json:"dump,omitempty"`
}

// ServeControl serves a unix socket at path on which a client writes one
// request line (stats, dump, pause, resume, stop; a bare newline means
// stats) and reads one JSON answer (`vmm stats`, `vmm ctl`). A stale socket
// file left by a killed VMM is replaced; any other existing file is an
// error. stop closes the listener and removes the socket.
func (m *Machine) ServeControl(path string) (stop func(), err error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("control socket %s: exists and is not a socket", path)
		}
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return nil, fmt.Errorf("control socket %s: another process is serving on it", path)
		}
		os.Remove(path) // stale: its VMM is gone
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				if !errors.Is(err, net.ErrClosed) {
					m.log.WithError(err).Warn("control socket")
				}
				return
			}
			m.serveControl(c)
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

// serveControl answers one connection: one request, one reply.
func (m *Machine) serveControl(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReaderSize(io.LimitReader(c, maxControlLine+1), maxControlLine+1).ReadSlice('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		line = append(line, 'x') // over-long or cut off: let ParseControl refuse it
	}
	enc := json.NewEncoder(c)
	enc.SetIndent("", "  ")
	cmd, err := ParseControl(line)
	if err != nil {
		_ = enc.Encode(ControlReply{Error: err.Error()})
		return
	}
	reply := ControlReply{OK: true}
	switch cmd {
	case CtlStats:
		_ = enc.Encode(m.Snapshot())
		return
	case CtlDump:
		reply.Dump = m.DumpState()
	case CtlPause:
		if err := m.Pause(5 * time.Second); err != nil {
			reply = ControlReply{Error: err.Error()}
		}
	case CtlResume:
		m.Resume()
	case CtlStop:
		m.Stop("stop request on the control socket")
	}
	_ = enc.Encode(reply)
}
