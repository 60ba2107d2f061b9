package vmm

// The control API (docs/control-api.md, schema docs/control-api.schema.json):
// a unix socket on which each client sends requests, one JSON object per
// line, and reads one JSON reply per line, in order. Every client is served
// at once in its own goroutine; a silent client only holds its own
// connection.

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"reflect"
	"sort"
	"strings"
	"sync"
	"time"
)

// ControlAPIVersion is the "api" of every request and reply. A request may
// omit it (meaning this version); a request for another version is refused
// with the code "unsupported_api".
const ControlAPIVersion = 1

// Control operations.
const (
	CtlInfo   = "info"   // API version and the operations offered
	CtlStats  = "stats"  // a Stats snapshot
	CtlDump   = "dump"   // every vCPU's state, as text
	CtlPause  = "pause"  // park every vCPU
	CtlResume = "resume" // let them run again
	CtlStop   = "stop"   // end the guest (the VMM exits with code 6)
)

// ControlOps lists the operations in the order the docs give them.
var ControlOps = []string{CtlInfo, CtlStats, CtlDump, CtlPause, CtlResume, CtlStop}

// Error codes of ControlError.
const (
	CtlErrBadRequest  = "bad_request"     // not JSON, too long, or unknown fields
	CtlErrUnknownOp   = "unknown_op"      // op is not one of ControlOps
	CtlErrUnsupported = "unsupported_api" // api is not ControlAPIVersion
	CtlErrFailed      = "failed"          // the operation was tried and failed
	CtlErrBusy        = "busy"            // too many clients connected
)

// ControlRequest is one request line. A bare operation name ("stats") is
// accepted too, for `echo stats | socat - UNIX:vm.sock`.
type ControlRequest struct {
	API int    `json:"api,omitempty"`
	ID  any    `json:"id,omitempty"` // echoed in the reply
	Op  string `json:"op"`
}

// ControlReply is one reply line. Result is set when OK: an Info for
// "info", a Stats for "stats", a Dump for "dump", and null otherwise.
type ControlReply struct {
	API    int           `json:"api"`
	ID     any           `json:"id,omitempty"`
	OK     bool          `json:"ok"`
	Result any           `json:"result,omitempty"`
	Error  *ControlError `json:"error,omitempty"`
}

// ControlError says why a request failed.
type ControlError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *ControlError) Error() string { return e.Code + ": " + e.Message }

// Info is the result of "info".
type Info struct {
	API int      `json:"api"`
	Ops []string `json:"ops"`
}

// Dump is the result of "dump".
type Dump struct {
	Text string `json:"text"`
}

// Machine states in Stats.State (besides the outcomes once the guest has
// ended: Outcome.String(), e.g. "poweroff").
const (
	StateCreated = "created" // Run has not started the vCPUs yet
	StateRunning = "running"
	StatePaused  = "paused" // every vCPU is parked (pause, or gdb stopped them)
)

// Stats is the machine's counters at one moment ("stats"; `vmm stats`).
// Every name is snake_case; sizes are bytes, times seconds.
type Stats struct {
	Time          time.Time         `json:"time"`
	UptimeSeconds float64           `json:"uptime_seconds"` // since Run started the vCPUs; 0 before
	State         string            `json:"state"`
	CPUs          int               `json:"cpus"`
	MemoryBytes   uint64            `json:"memory_bytes"`
	MemoryBackend string            `json:"memory_backend"`
	Exits         map[string]uint64 `json:"exits"` // vCPU exits by reason (and port for PIO)
	Pages         PageStats         `json:"pages"`
	Footprint     FootprintStats    `json:"footprint"`
	Virtio        VirtioCounters    `json:"virtio"`
	// Conversions is the conversion counters by transport (conversion.go).
	Conversions ConversionStats `json:"conversions"`
}

// PageStats is memory.Stats: the shared/private page state and the
// conversion counters.
type PageStats struct {
	SharedPages    uint64 `json:"shared_pages"`
	PrivatePages   uint64 `json:"private_pages"`
	ToPrivate      uint64 `json:"to_private"`      // successful conversion requests to private
	ToShared       uint64 `json:"to_shared"`       // successful conversion requests to shared
	PagesRequested uint64 `json:"pages_requested"` // pages named by successful requests
	PagesConverted uint64 `json:"pages_converted"` // pages whose state flipped
	Refused        uint64 `json:"refused"`         // conversion requests refused
	SinkCalls      uint64 `json:"sink_calls"`
	SinkErrors     uint64 `json:"sink_errors"`
	DeviceRefused  uint64 `json:"device_refused"` // device accesses refused: the page was private
	DeviceFaults   uint64 `json:"device_faults"`  // stopped by the hardened view (should stay 0)
	Hardened       bool   `json:"hardened"`
	HardenedVMAs   uint64 `json:"hardened_vmas"`
	HardenMaxVMAs  uint64 `json:"harden_max_vmas"`
	HardenFallback string `json:"harden_fallback,omitempty"`
}

// FootprintStats is memory.Usage: the host memory in use for guest RAM.
type FootprintStats struct {
	SizeBytes      uint64 `json:"size_bytes"`
	ResidentBytes  uint64 `json:"resident_bytes"`
	AllocatedBytes uint64 `json:"allocated_bytes"` // file blocks (memfd, hugetlbfs, guest_memfd)
	HugePages      uint64 `json:"huge_pages"`
	InUseBytes     uint64 `json:"in_use_bytes"`
}

// VirtioCounters is VirtioStats.
type VirtioCounters struct {
	Devices        int    `json:"devices"`
	DriverOK       int    `json:"driver_ok"`
	IOEventFDs     int    `json:"ioeventfds"`
	EventfdKicks   uint64 `json:"eventfd_kicks"`
	Notifies       uint64 `json:"notifies"`
	MSIs           uint64 `json:"msis"`
	MSIErrors      uint64 `json:"msi_errors"`
	INTxAssertions uint64 `json:"intx_assertions"`
	BARMoves       uint64 `json:"bar_moves"`
}

// copyFields copies the fields of src into the same-named fields of dst
// (a pointer to a struct); the wire types mirror the internal ones field by
// field, and TestStatsMirrorsCounters fails when a counter is added to one
// and not the other.
func copyFields(dst, src any) {
	d, s := reflect.ValueOf(dst).Elem(), reflect.ValueOf(src)
	for i := 0; i < s.NumField(); i++ {
		if f := d.FieldByName(s.Type().Field(i).Name); f.IsValid() {
			f.Set(s.Field(i))
		}
	}
}

// Snapshot reads every counter without stopping the guest.
func (m *Machine) Snapshot() Stats {
	s := Stats{Time: time.Now(), CPUs: len(m.vcpus), State: m.RunState(), Exits: m.stats.snapshot(),
		MemoryBackend: string(m.backend.Kind()), MemoryBytes: m.cfg.Memory}
	copyFields(&s.Pages, m.mem.Stats())
	copyFields(&s.Virtio, m.VirtioStats())
	s.Conversions = m.Conversions()
	if t := m.started.Load(); t != 0 {
		s.UptimeSeconds = time.Since(time.Unix(0, t)).Seconds()
	}
	if u, err := m.backend.Usage(); err == nil {
		s.Footprint = FootprintStats{SizeBytes: u.Size, ResidentBytes: u.Resident, AllocatedBytes: u.Allocated,
			HugePages: u.HugePages, InUseBytes: u.InUse}
	}
	return s
}

// maxControlLine bounds a request line.
const maxControlLine = 4096

// maxControlClients bounds the connections served at once; more are
// answered "busy" and closed.
const maxControlClients = 16

// controlIdle is how long a connection may stay silent between requests.
var controlIdle = 5 * time.Minute

// ParseControl reads one request line: a JSON ControlRequest, or a bare
// operation name (an empty line means stats).
func ParseControl(line []byte) (ControlRequest, *ControlError) {
	if len(line) > maxControlLine {
		return ControlRequest{}, &ControlError{CtlErrBadRequest, fmt.Sprintf("request longer than %d bytes", maxControlLine)}
	}
	text := strings.TrimSpace(string(line))
	var req ControlRequest
	switch {
	case strings.HasPrefix(text, "{"):
		dec := json.NewDecoder(strings.NewReader(text))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			return req, &ControlError{CtlErrBadRequest, "not a request object: " + err.Error()}
		}
		if dec.More() {
			return req, &ControlError{CtlErrBadRequest, "one JSON object per line"}
		}
		if req.API == 0 {
			req.API = ControlAPIVersion
		}
	case text == "":
		req = ControlRequest{API: ControlAPIVersion, Op: CtlStats}
	default:
		req = ControlRequest{API: ControlAPIVersion, Op: text}
	}
	if req.API != ControlAPIVersion {
		return req, &ControlError{CtlErrUnsupported, fmt.Sprintf("api %d: this VMM speaks api %d", req.API, ControlAPIVersion)}
	}
	for _, op := range ControlOps {
		if req.Op == op {
			return req, nil
		}
	}
	return req, &ControlError{CtlErrUnknownOp, fmt.Sprintf("unknown op %q (want %s)", req.Op, strings.Join(ControlOps, ", "))}
}

// ServeControl serves the control API on a unix socket at path. A stale
// socket file left by a killed VMM is replaced; any other existing file is
// an error. stop closes the listener and every connection and removes the
// socket.
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
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns = map[net.Conn]bool{}
	)
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
			mu.Lock()
			if len(conns) >= maxControlClients {
				mu.Unlock()
				c.SetWriteDeadline(time.Now().Add(time.Second))
				writeReply(c, ControlReply{API: ControlAPIVersion, Error: &ControlError{CtlErrBusy,
					fmt.Sprintf("%d clients are connected already", maxControlClients)}})
				c.Close()
				continue
			}
			conns[c] = true
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				m.serveControlConn(c)
				mu.Lock()
				delete(conns, c)
				mu.Unlock()
			}()
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			ln.Close() // also removes the socket file (net.UnixListener unlinks on Close)
			mu.Lock()
			for c := range conns {
				c.Close()
			}
			mu.Unlock()
			wg.Wait()
		})
	}, nil
}

// serveControlConn answers the requests of one connection until the
// client closes it, stays silent for controlIdle, or sends a line too long.
func (m *Machine) serveControlConn(c net.Conn) {
	defer c.Close()
	r := bufio.NewReaderSize(c, maxControlLine+1)
	for {
		c.SetReadDeadline(time.Now().Add(controlIdle))
		line, err := r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			writeReply(c, ControlReply{API: ControlAPIVersion, Error: &ControlError{CtlErrBadRequest,
				fmt.Sprintf("request longer than %d bytes", maxControlLine)}})
			return
		}
		last := err != nil // closed, idle or broken; a last line without \n is answered
		if last && (len(line) == 0 || !errors.Is(err, io.EOF)) {
			return
		}
		if werr := writeReply(c, m.handleControl(line)); werr != nil || last {
			return
		}
	}
}

func writeReply(w net.Conn, r ControlReply) error {
	b, err := json.Marshal(r)
	if err != nil {
		b, _ = json.Marshal(ControlReply{API: ControlAPIVersion, ID: r.ID, Error: &ControlError{CtlErrFailed, err.Error()}})
	}
	w.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, err = w.Write(append(b, '\n'))
	return err
}

// handleControl answers one request line.
func (m *Machine) handleControl(line []byte) ControlReply {
	req, cerr := ParseControl(line)
	reply := ControlReply{API: ControlAPIVersion, ID: req.ID}
	if cerr != nil {
		reply.Error = cerr
		return reply
	}
	switch req.Op {
	case CtlInfo:
		reply.Result = Info{API: ControlAPIVersion, Ops: ControlOps}
	case CtlStats:
		reply.Result = m.Snapshot()
	case CtlDump:
		reply.Result = Dump{Text: m.DumpState()}
	case CtlPause:
		if err := m.Pause(5 * time.Second); err != nil {
			reply.Error = &ControlError{CtlErrFailed, err.Error()}
			return reply
		}
	case CtlResume:
		m.Resume()
	case CtlStop:
		m.Stop("stop request on the control socket")
	}
	reply.OK = true
	return reply
}

// ExitReasons returns the keys of Exits, sorted.
func (s Stats) ExitReasons() []string {
	keys := make([]string, 0, len(s.Exits))
	for k := range s.Exits {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
