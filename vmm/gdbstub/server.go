package gdbstub

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/vmmgo/vmm/internal/guestlog"
)

// Timeouts that keep one misbehaving client from wedging the server.
const (
	// busyGrace is how long a new connection waits for the current
	// client to leave before it is turned away.
	busyGrace = 2 * time.Second
	// writeTimeout bounds a write to a client that stopped reading.
	writeTimeout = 10 * time.Second
	// maxResends bounds retransmissions of a NAKed reply.
	maxResends = 3
)

// ParseAddress parses a --gdb flag value: "tcp:HOST:PORT" (HOST may be
// empty or a bracketed IPv6 address) or "unix:PATH". It returns the
// network and address for net.Listen.
func ParseAddress(s string) (network, address string, err error) {
	kind, rest, ok := strings.Cut(s, ":")
	if !ok {
		return "", "", fmt.Errorf("gdb address %q: want tcp:HOST:PORT or unix:PATH", s)
	}
	switch kind {
	case "tcp":
		_, port, err := net.SplitHostPort(rest)
		if err != nil {
			return "", "", fmt.Errorf("gdb address %q: %w", s, err)
		}
		if n, err := strconv.ParseUint(port, 10, 16); err != nil || (n == 0 && port != "0") {
			return "", "", fmt.Errorf("gdb address %q: bad port %q", s, port)
		}
		return "tcp", rest, nil
	case "unix":
		if rest == "" {
			return "", "", fmt.Errorf("gdb address %q: empty socket path", s)
		}
		return "unix", rest, nil
	}
	return "", "", fmt.Errorf("gdb address %q: unknown kind %q (want tcp or unix)", s, kind)
}

// Listen parses addr (see ParseAddress) and listens on it. A stale unix
// socket file at the path is replaced.
func Listen(addr string) (net.Listener, error) {
	network, address, err := ParseAddress(addr)
	if err != nil {
		return nil, err
	}
	if network == "unix" {
		if fi, err := os.Lstat(address); err == nil && fi.Mode()&os.ModeSocket != 0 {
			if err := os.Remove(address); err != nil {
				return nil, fmt.Errorf("gdb: remove stale socket: %w", err)
			}
		}
	}
	ln, err := net.Listen(network, address)
	if err != nil {
		return nil, fmt.Errorf("gdb: listen on %s: %w", addr, err)
	}
	return ln, nil
}

// Config configures a Server.
type Config struct {
	// Log receives connection and error messages (default: discard).
	Log *logrus.Entry
	// StartStopped says the vCPUs are parked when the server starts
	// (--gdb-wait): they run only once a client resumes them. Otherwise
	// they are running and are stopped when a client attaches.
	StartStopped bool
	// OnKill is called when the client kills the target ('k', vKill).
	// When nil, kill behaves like detach: the guest keeps running.
	OnKill func()
}

// Server is a GDB remote-serial-protocol stub for one Target. It serves one
// client at a time and keeps the debugging state (stopped or running, the
// reason of the last stop) across clients.
type Server struct {
	t   Target
	n   int
	log *logrus.Entry
	cfg Config

	// Notify queue, filled from vCPU goroutines.
	mu      sync.Mutex
	events  []StopEvent
	dropped int
	evReady chan struct{}

	resumed     chan struct{} // closed on the first resume
	resumedOnce sync.Once

	// drive serialises everything below and every Target call.
	drive    sync.Mutex
	running  bool
	exited   bool
	exitCode uint8
	last     StopEvent   // why the guest is stopped
	pending  []StopEvent // stops not yet reported (all-stop races)
	swbps    map[uint64]int
	hw       []hwEntry
	hwActive bool
}

// hwEntry is one Z1..Z4 request as GDB made it.
type hwEntry struct {
	typ          byte // '1'..'4'
	addr, length uint64
}

// maxQueued bounds the Notify queue; extra events are dropped (a Target
// sends at most one per vCPU per resume).
const maxQueued = 1024

// New returns a server for t.
func New(t Target, cfg Config) *Server {
	log := guestlog.OrDiscard(cfg.Log)
	s := &Server{
		t:       t,
		n:       t.NumVCPUs(),
		log:     log,
		cfg:     cfg,
		evReady: make(chan struct{}, 1),
		resumed: make(chan struct{}),
		running: !cfg.StartStopped,
		last:    StopEvent{Reason: reasonAttach},
		swbps:   make(map[uint64]int),
	}
	if !cfg.StartStopped {
		s.resumedOnce.Do(func() { close(s.resumed) }) // already running
	}
	return s
}

// Notify reports that a vCPU stopped by itself. It is safe to call from
// any goroutine and never blocks.
func (s *Server) Notify(ev StopEvent) {
	if ev.VCPU < 0 || ev.VCPU >= s.n {
		s.log.WithField("vcpu", ev.VCPU).Warn("gdb: stop event for unknown vCPU, using vCPU 0")
		ev.VCPU = 0
	}
	s.mu.Lock()
	if len(s.events) < maxQueued {
		s.events = append(s.events, ev)
	} else {
		s.dropped++
	}
	s.mu.Unlock()
	select {
	case s.evReady <- struct{}{}:
	default:
	}
}

// WaitContinue blocks until a client has resumed the guest for the first
// time (or detached), for --gdb-wait: the VMM can report that it waits for
// the debugger and proceed once the guest runs. Without StartStopped it
// returns at once.
func (s *Server) WaitContinue(ctx context.Context) error {
	select {
	case <-s.resumed:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Serve accepts clients on ln, one at a time, until ctx is cancelled or
// the listener fails. It closes ln on return.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	defer ln.Close()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	conns := make(chan net.Conn)
	acceptErr := make(chan error, 1)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				acceptErr <- err
				return
			}
			select {
			case conns <- c:
			case <-time.After(busyGrace):
				s.log.WithField("remote", c.RemoteAddr().String()).Warn("gdb: another client is attached; closing new connection")
				c.Close()
			case <-ctx.Done():
				c.Close()
				return
			}
		}
	}()
	for {
		select {
		case c := <-conns:
			if err := s.ServeConn(ctx, c); err != nil && ctx.Err() == nil {
				s.log.WithError(err).Warn("gdb: client session ended")
			}
		case <-s.evReady:
			s.drive.Lock()
			if ev := s.collect(); ev != nil {
				s.log.WithField("vcpu", ev.VCPU).Warnf("gdb: guest stopped with no debugger attached (%v); attach gdb to inspect", ev)
			}
			s.drive.Unlock()
		case err := <-acceptErr:
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("gdb: accept: %w", err)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// ServeConn runs one client session on conn until the client detaches,
// kills, disconnects or ctx is cancelled, and closes conn.
func (s *Server) ServeConn(ctx context.Context, conn net.Conn) error {
	defer conn.Close()
	s.drive.Lock()
	defer s.drive.Unlock()

	log := s.log
	if ra := conn.RemoteAddr(); ra != nil {
		log = log.WithField("remote", ra.String())
	}
	log.Info("gdb: client attached")
	sess := &session{s: s, conn: conn, log: log}

	done := make(chan struct{})
	defer close(done)
	items := make(chan item, 16)
	go readItems(conn, items, done)

	s.attach()
	for !sess.closing && sess.err == nil {
		select {
		case it, ok := <-items:
			if !ok {
				log.Info("gdb: client disconnected")
				s.release(false)
				return nil
			}
			sess.handle(it)
		case <-s.evReady:
			if ev := s.collect(); ev != nil {
				sess.reportStop(*ev)
			}
		case <-ctx.Done():
			s.release(false)
			return ctx.Err()
		}
	}
	if sess.err != nil {
		s.release(false)
		return fmt.Errorf("gdb: write to client: %w", sess.err)
	}
	log.Info("gdb: client detached")
	return nil
}

// readItems turns the byte stream into items until the connection fails.
func readItems(conn net.Conn, out chan<- item, done <-chan struct{}) {
	defer close(out)
	var p parser
	buf := make([]byte, 4096)
	for {
		n, err := conn.Read(buf)
		for _, c := range buf[:n] {
			if it, ok := p.feed(c); ok {
				select {
				case out <- it:
				case <-done:
					return
				}
			}
		}
		if err != nil {
			return
		}
	}
}

// takeEvents empties the Notify queue.
func (s *Server) takeEvents() []StopEvent {
	s.mu.Lock()
	defer s.mu.Unlock()
	ev := s.events
	s.events = nil
	if s.dropped > 0 {
		s.log.WithField("dropped", s.dropped).Warn("gdb: stop events dropped")
		s.dropped = 0
	}
	return ev
}

// collect handles queued stop events. While the guest runs, the first
// event stops every vCPU (all-stop mode) and is returned for reporting;
// the others wait in pending. Events arriving while stopped are kept.
func (s *Server) collect() *StopEvent {
	evs := s.takeEvents()
	if len(evs) == 0 {
		return nil
	}
	if !s.running {
		s.addPending(evs)
		return nil
	}
	if err := s.t.Stop(); err != nil {
		s.log.WithError(err).Error("gdb: stop vCPUs")
	}
	s.running = false
	evs = append(evs, s.takeEvents()...)
	first := 0
	for i, ev := range evs {
		if ev.Reason == ReasonExited {
			first = i // the machine is gone: that is the news
			s.exited, s.exitCode = true, ev.ExitCode
			break
		}
	}
	ev := evs[first]
	s.addPending(append(evs[:first:first], evs[first+1:]...))
	s.last = ev
	return &ev
}

func (s *Server) addPending(evs []StopEvent) {
	for _, ev := range evs {
		if ev.Reason == ReasonExited {
			s.exited, s.exitCode = true, ev.ExitCode
		}
	}
	s.pending = append(s.pending, evs...)
	if max := 4*s.n + 16; len(s.pending) > max {
		s.pending = s.pending[len(s.pending)-max:]
	}
}

// attach stops a running guest when a client connects, as GDB expects a
// stopped target after connecting.
func (s *Server) attach() {
	if !s.running {
		return
	}
	if err := s.t.Stop(); err != nil {
		s.log.WithError(err).Error("gdb: stop vCPUs on attach")
	}
	s.running = false
	s.last = StopEvent{VCPU: s.last.VCPU, Reason: reasonAttach}
	if evs := s.takeEvents(); len(evs) > 0 {
		s.last = evs[0]
		if evs[0].Reason == ReasonExited {
			s.exited, s.exitCode = true, evs[0].ExitCode
		}
		s.addPending(evs[1:])
	}
}

// release removes every breakpoint and watchpoint the client set (they
// must not outlive it) and, if resume, lets the guest run. A running guest
// is stopped for the cleanup, so that no vCPU trips over a half-removed
// breakpoint, and resumed afterwards.
func (s *Server) release(resume bool) {
	if s.running && (len(s.swbps) > 0 || s.hwActive) {
		if err := s.t.Stop(); err != nil {
			s.log.WithError(err).Error("gdb: stop vCPUs")
		}
		s.running = false
		for _, ev := range s.takeEvents() {
			if ev.Reason == ReasonExited {
				s.exited, s.exitCode = true, ev.ExitCode
				s.last = ev
			}
		}
		resume = true
	}
	for addr, vcpu := range s.swbps {
		if err := s.t.RemoveSWBreakpoint(vcpu, addr); err != nil {
			s.log.WithError(err).Warn("gdb: remove breakpoint")
		}
		delete(s.swbps, addr)
	}
	if s.hwActive {
		if err := s.t.SetHWBreakpoints(DebugRegs{}); err != nil {
			s.log.WithError(err).Warn("gdb: clear debug registers")
		}
	}
	s.hw, s.hwActive = nil, false
	s.pending = nil
	if resume && !s.running && !s.exited {
		if err := s.resumeAll(allActions(s.n, ActionContinue)); err != nil {
			s.log.WithError(err).Error("gdb: resume guest")
		}
	}
}

func allActions(n int, a Action) []Action {
	out := make([]Action, n)
	for i := range out {
		out[i] = a
	}
	return out
}

func (s *Server) resumeAll(actions []Action) error {
	if err := s.t.Resume(actions); err != nil {
		return err
	}
	s.running = true
	s.resumedOnce.Do(func() { close(s.resumed) })
	return nil
}

// resume starts vCPUs per actions, unless a pending stop of one of them
// can be reported at once. It returns the stop to report now, if any.
func (s *Server) resume(actions []Action) (*StopEvent, error) {
	if s.exited {
		return &StopEvent{Reason: ReasonExited, ExitCode: s.exitCode}, nil
	}
	kept := s.pending[:0]
	var now *StopEvent
	for _, ev := range s.pending {
		a := actions[ev.VCPU]
		switch {
		case now != nil || a == ActionNone:
			kept = append(kept, ev)
			continue
		case ev.Reason == ReasonStep && a != ActionStep:
			continue // a step nobody asks for any more
		case ev.Reason == ReasonSWBreak && !s.swbpAtRIP(ev.VCPU):
			continue // the breakpoint is gone; the vCPU re-executes
		}
		e := ev
		now = &e
	}
	s.pending = kept
	if now != nil {
		s.last = *now
		return now, nil
	}
	return nil, s.resumeAll(actions)
}

func (s *Server) swbpAtRIP(vcpu int) bool {
	r, err := s.t.ReadRegisters(vcpu)
	if err != nil {
		return false
	}
	_, ok := s.swbps[r.RIP]
	return ok
}

// interrupt handles Ctrl-C: stop everything and report why.
func (s *Server) interrupt() *StopEvent {
	if !s.running {
		return nil
	}
	if err := s.t.Stop(); err != nil {
		s.log.WithError(err).Error("gdb: stop vCPUs")
	}
	s.running = false
	ev := StopEvent{VCPU: s.last.VCPU, Reason: reasonInterrupt}
	if evs := s.takeEvents(); len(evs) > 0 {
		ev = evs[0]
		s.addPending(evs[1:])
	}
	if ev.Reason == ReasonExited {
		s.exited, s.exitCode = true, ev.ExitCode
	}
	s.last = ev
	return &ev
}

// setHW installs the hardware breakpoints and watchpoints in entries,
// allocating debug-register slots in order.
func (s *Server) setHW(entries []hwEntry) error {
	var slots [4]HWSlot
	i := 0
	for _, e := range entries {
		kind := HWExec
		pieces := [][2]uint64{{e.addr, 1}}
		if e.typ != '1' {
			kind = map[byte]HWKind{'2': HWWrite, '3': HWRead, '4': HWAccess}[e.typ]
			var err error
			if pieces, err = splitRange(e.addr, e.length); err != nil {
				return err
			}
		}
		for _, p := range pieces {
			if i == len(slots) {
				return errNoSlots
			}
			slots[i] = HWSlot{Enabled: true, Addr: p[0], Len: p[1], Kind: kind, Report: e.addr}
			i++
		}
	}
	d, err := NewDebugRegs(slots)
	if err != nil {
		return err
	}
	if err := s.t.SetHWBreakpoints(d); err != nil {
		return err
	}
	s.hw, s.hwActive = entries, d.Enabled()
	return nil
}

var errNoSlots = errors.New("no free debug register")
