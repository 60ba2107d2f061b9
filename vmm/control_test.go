package vmm

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmmgo/vmm/memory"
)

// request sends one control request line and decodes the reply's result
// into v (when not nil).
func request(t *testing.T, path, req string, v any) ControlReply {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	return readReply(t, bufio.NewReader(c), req, v)
}

func readReply(t *testing.T, r *bufio.Reader, req string, v any) ControlReply {
	t.Helper()
	line, err := r.ReadBytes('\n')
	if err != nil {
		t.Fatalf("request %q: %v (read %q)", req, err, line)
	}
	var raw struct {
		ControlReply
		Result json.RawMessage `json:"result"`
	}
	if err := json.Unmarshal(line, &raw); err != nil {
		t.Fatalf("request %q: reply %q: %v", req, line, err)
	}
	if raw.API != ControlAPIVersion {
		t.Fatalf("request %q: reply without api %d: %s", req, ControlAPIVersion, line)
	}
	if v != nil && raw.OK {
		if err := json.Unmarshal(raw.Result, v); err != nil {
			t.Fatalf("request %q: result %s: %v", req, raw.Result, err)
		}
	}
	return raw.ControlReply
}

// serveAndRun serves m's control socket and runs m; done closes when Run
// returns, cancel ends it.
func serveAndRun(t *testing.T, m *Machine) (path string, stop func(), done chan struct{}, cancel func()) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "c.sock")
	stop, err := m.ServeControl(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done = make(chan struct{})
	go func() { m.Run(ctx); close(done) }()
	return path, stop, done, cancel
}

func readSnapshot(t *testing.T, path string) Stats {
	t.Helper()
	var s Stats
	if r := request(t, path, `{"op":"stats"}`+"\n", &s); !r.OK {
		t.Fatalf("stats: %+v", r)
	}
	return s
}

// TestStatsSocket: the counters are readable while the guest runs, and
// they move as the guest converts memory.
func TestControlSocket(t *testing.T) {
	m := newRawMachine(t, smallConfig(memory.KindMemfd), `
		# one conversion through the register interface (docs/pvmem.md:
		# one port per register): 16 pages at 2 MiB private.
		mov $0x200000, %eax
		mov $0xa53, %dx
		out %eax, %dx          # GPA_LO
		xor %eax, %eax
		inc %dx
		out %eax, %dx          # GPA_HI
		mov $16, %eax
		inc %dx
		out %eax, %dx          # NPAGES
		mov $0x10, %eax
		inc %dx
		out %eax, %dx          # ATTRS: private
		inc %dx
		in %dx, %eax           # CONVERT: the read converts and returns the status
		mov %eax, 0x300000
	spin: jmp spin`)
	path, stop, done, cancel := serveAndRun(t, m)
	defer stop()
	var s Stats
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if s = readSnapshot(t, path); s.Pages.PrivatePages > 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if s.State != "running" || s.Pages.PrivatePages != 16 || s.Pages.ToPrivate != 1 || s.Exits["KVM_EXIT_IO"] == 0 || s.Footprint.SizeBytes != 8<<20 || s.MemoryBackend != string(memory.KindMemfd) {
		t.Fatalf("snapshot while running: %+v\n%s", s, m.DumpState())
	}
	if s.UptimeSeconds <= 0 || s.MemoryBytes != 8<<20 || s.CPUs != 1 {
		t.Errorf("snapshot: uptime %v, memory %d, cpus %d", s.UptimeSeconds, s.MemoryBytes, s.CPUs)
	}
	// pause, dump while paused, resume, unknown request, then stop.
	if r := request(t, path, `{"api":1,"id":7,"op":"pause"}`+"\n", nil); !r.OK || !m.Parked(0) || r.ID != float64(7) {
		t.Fatalf("pause: %+v, parked %v", r, m.Parked(0))
	}
	if s := readSnapshot(t, path); s.State != StatePaused {
		t.Errorf("state while paused %q, want %q", s.State, StatePaused)
	}
	var d Dump
	if r := request(t, path, "dump\n", &d); !r.OK || !strings.Contains(d.Text, "vcpu 0 state") || !strings.Contains(d.Text, "private 16 pages") {
		t.Fatalf("dump: %+v %q", r, d.Text)
	}
	if r := request(t, path, "resume\n", nil); !r.OK {
		t.Fatalf("resume: %+v", r)
	}
	for deadline := time.Now().Add(5 * time.Second); m.Parked(0); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("vCPU still parked after resume")
		}
	}
	if s := readSnapshot(t, path); s.State != StateRunning {
		t.Errorf("state after resume %q", s.State)
	}
	if r := request(t, path, "reboot\n", nil); r.OK || r.Error == nil || r.Error.Code != CtlErrUnknownOp {
		t.Fatalf("unknown request: %+v", r)
	}
	if r := request(t, path, `{"api":2,"op":"stats"}`+"\n", nil); r.OK || r.Error == nil || r.Error.Code != CtlErrUnsupported {
		t.Fatalf("api 2: %+v", r)
	}
	if r := request(t, path, "stop\n", nil); !r.OK {
		t.Fatalf("stop: %+v", r)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("stop request did not stop the machine")
	}
	cancel()
	if s = readSnapshot(t, path); s.State != "stopped" {
		t.Errorf("state after stop %q", s.State)
	}
	stop()
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("socket left behind: %v", err)
	}
}

func TestControlSocketRefusesOtherFiles(t *testing.T) {
	m := newRawMachine(t, smallConfig(memory.KindAnon), "hlt")
	p := filepath.Join(t.TempDir(), "file")
	os.WriteFile(p, nil, 0o644)
	if _, err := m.ServeControl(p); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("err = %v", err)
	}
	// A stale socket (its server gone) is replaced.
	s := filepath.Join(t.TempDir(), "stale.sock")
	l, err := net.Listen("unix", s)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	stop, err := m.ServeControl(s)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	stop()
}

func TestParseControl(t *testing.T) {
	for in, want := range map[string]string{"stats\n": CtlStats, "\n": CtlStats, "": CtlStats, " pause \r\n": CtlPause, "stop": CtlStop,
		`{"op":"info"}`: CtlInfo, `{"api":1,"id":"x","op":"dump"}` + "\n": CtlDump} {
		if got, err := ParseControl([]byte(in)); err != nil || got.Op != want || got.API != ControlAPIVersion {
			t.Errorf("ParseControl(%q) = %+v, %v; want %q", in, got, err, want)
		}
	}
	for in, code := range map[string]string{"reboot\n": CtlErrUnknownOp, "stats extra\n": CtlErrUnknownOp, strings.Repeat("x", 5000): CtlErrBadRequest,
		`{"op":"stats","extra":1}`: CtlErrBadRequest, `{"op":"stats"} {}`: CtlErrBadRequest, `{"api":3,"op":"stats"}`: CtlErrUnsupported, `{"op":`: CtlErrBadRequest} {
		if got, err := ParseControl([]byte(in)); err == nil || err.Code != code {
			t.Errorf("ParseControl(%.40q) = %+v, %v; want error %s", in, got, err, code)
		}
	}
}

func FuzzParseControl(f *testing.F) {
	for _, s := range []string{"stats\n", "pause\n", "", "\x00\xff", strings.Repeat("a", 70), `{"api":1,"op":"stop","id":[1]}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := ParseControl(b)
		if err == nil && !slices.Contains(ControlOps, req.Op) {
			t.Fatalf("ParseControl(%q) accepted %q", b, req.Op)
		}
		if err != nil && err.Code == "" {
			t.Fatalf("ParseControl(%q): error without a code", b)
		}
	})
}

// TestControlConcurrentClients: clients are served at once. A client that
// connects and says nothing does not delay the others (it used to hold the
// only server loop for 10 s), several clients get answers in parallel, and
// one connection carries several requests.
func TestControlConcurrentClients(t *testing.T) {
	m := newRawMachine(t, smallConfig(memory.KindAnon), "spin: jmp spin")
	path, stop, done, cancel := serveAndRun(t, m)
	defer stop()
	defer func() { cancel(); <-done }()

	silent := make([]net.Conn, 3)
	for i := range silent {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		silent[i] = c
	}
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("unix", path)
			if err != nil {
				errs <- err.Error()
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			r := bufio.NewReader(c)
			for _, op := range []string{"info", "stats", "stats"} {
				fmt.Fprintf(c, `{"op":%q,"id":%d}`+"\n", op, i)
				line, err := r.ReadBytes('\n')
				if err != nil {
					errs <- fmt.Sprintf("client %d %s: %v", i, op, err)
					return
				}
				var rep ControlReply
				if err := json.Unmarshal(line, &rep); err != nil || !rep.OK || rep.ID != float64(i) {
					errs <- fmt.Sprintf("client %d %s: %s", i, op, line)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	// The bound is far above what 24 requests cost and far below the 10 s
	// a silent client used to hold the server.
	if el := time.Since(start); el > 3*time.Second {
		t.Errorf("8 clients next to 3 silent ones took %v", el)
	}
	// The silent clients are still connected and still answered.
	fmt.Fprintf(silent[0], "info\n")
	silent[0].SetReadDeadline(time.Now().Add(5 * time.Second))
	var info Info
	if r := readReply(t, bufio.NewReader(silent[0]), "info", &info); !r.OK || info.API != ControlAPIVersion || !slices.Equal(info.Ops, ControlOps) {
		t.Errorf("info on a late client: %+v %+v", r, info)
	}
	// stop closes every connection.
	stop()
	silent[1].SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := silent[1].Read(make([]byte, 1)); err == nil {
		t.Error("a connection survived stop")
	}
}

// TestControlTooManyClients: past the bound a client is told so at once.
func TestControlTooManyClients(t *testing.T) {
	m := newRawMachine(t, smallConfig(memory.KindAnon), "hlt")
	path := filepath.Join(t.TempDir(), "c.sock")
	stop, err := m.ServeControl(path)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := 0; i < maxControlClients; i++ {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		// A round trip makes sure the server counted it.
		fmt.Fprintf(c, "info\n")
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		readReply(t, bufio.NewReader(c), "info", nil)
	}
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if r := readReply(t, bufio.NewReader(c), "(none)", nil); r.OK || r.Error == nil || r.Error.Code != CtlErrBusy {
		t.Errorf("client %d: %+v, want busy", maxControlClients+1, r)
	}
}

// TestStatsMirrorsCounters: the snake_case wire types carry every counter
// of the internal ones (a counter added to memory.Stats, memory.Usage or
// VirtioStats must be added to the API, and the schema regenerated).
func TestStatsMirrorsCounters(t *testing.T) {
	for _, tc := range []struct{ internal, wire any }{
		{memory.Stats{}, PageStats{}},
		{VirtioStats{}, VirtioCounters{}},
	} {
		it, wt := reflect.TypeOf(tc.internal), reflect.TypeOf(tc.wire)
		for i := 0; i < it.NumField(); i++ {
			f := it.Field(i)
			w, ok := wt.FieldByName(f.Name)
			if !ok || w.Type != f.Type {
				t.Errorf("%s.%s (%s) is not in %s", it, f.Name, f.Type, wt)
			}
		}
		if wt.NumField() != it.NumField() {
			t.Errorf("%s has %d fields, %s %d", wt, wt.NumField(), it, it.NumField())
		}
	}
	if n := reflect.TypeOf(memory.Usage{}).NumField(); n != reflect.TypeOf(FootprintStats{}).NumField() {
		t.Errorf("memory.Usage has %d fields, FootprintStats %d", n, reflect.TypeOf(FootprintStats{}).NumField())
	}
	// Every JSON name is snake_case.
	var check func(reflect.Type)
	check = func(rt reflect.Type) {
		for i := 0; i < rt.NumField(); i++ {
			f := rt.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "" || name != strings.ToLower(name) || strings.ContainsAny(name, "- ") {
				t.Errorf("%s.%s: JSON name %q is not snake_case", rt, f.Name, name)
			}
			if f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeOf(time.Time{}) {
				check(f.Type)
			}
		}
	}
	check(reflect.TypeOf(Stats{}))
}
