package vmm

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmmgo/vmm/memory"
)

// request sends one control request and decodes the answer into v.
func request(t *testing.T, path, req string, v any) {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	if err := json.NewDecoder(c).Decode(v); err != nil {
		t.Fatalf("request %q: %v", req, err)
	}
}

func readSnapshot(t *testing.T, path string) Snapshot {
	t.Helper()
	var s Snapshot
	request(t, path, "stats\n", &s)
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
	path := filepath.Join(t.TempDir(), "stats.sock")
	stop, err := m.ServeControl(path)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { m.Run(ctx); close(done) }()
	var s Snapshot
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if s = readSnapshot(t, path); s.Pages.PrivatePages > 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if s.State != "running" || s.Pages.PrivatePages != 16 || s.Pages.ToPrivate != 1 || s.Exits["KVM_EXIT_IO"] == 0 || s.Footprint.Size != 8<<20 || s.Backend != memory.KindMemfd {
		t.Fatalf("snapshot while running: %+v\n%s", s, m.DumpState())
	}
	// pause, dump while paused, resume, unknown request, then stop.
	var r ControlReply
	if request(t, path, "pause\n", &r); !r.OK || !m.Parked(0) {
		t.Fatalf("pause: %+v, parked %v", r, m.Parked(0))
	}
	if request(t, path, "dump\n", &r); !r.OK || !strings.Contains(r.Dump, "vcpu 0 state") || !strings.Contains(r.Dump, "private 16 pages") {
		t.Fatalf("dump: %+v", r)
	}
	r = ControlReply{}
	if request(t, path, "resume\n", &r); !r.OK {
		t.Fatalf("resume: %+v", r)
	}
	for deadline := time.Now().Add(5 * time.Second); m.Parked(0); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("vCPU still parked after resume")
		}
	}
	r = ControlReply{}
	if request(t, path, "reboot\n", &r); r.OK || !strings.Contains(r.Error, "unknown request") {
		t.Fatalf("unknown request: %+v", r)
	}
	r = ControlReply{}
	if request(t, path, "stop\n", &r); !r.OK {
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
	for in, want := range map[string]string{"stats\n": CtlStats, "\n": CtlStats, "": CtlStats, " pause \r\n": CtlPause, "stop": CtlStop} {
		if got, err := ParseControl([]byte(in)); err != nil || got != want {
			t.Errorf("ParseControl(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"reboot\n", "stats extra\n", strings.Repeat("x", 100)} {
		if got, err := ParseControl([]byte(in)); err == nil {
			t.Errorf("ParseControl(%q) = %q, want an error", in, got)
		}
	}
}

func FuzzParseControl(f *testing.F) {
	for _, s := range []string{"stats\n", "pause\n", "", "\x00\xff", strings.Repeat("a", 70)} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		cmd, err := ParseControl(b)
		if err == nil {
			switch cmd {
			case CtlStats, CtlDump, CtlPause, CtlResume, CtlStop:
			default:
				t.Fatalf("ParseControl(%q) accepted %q", b, cmd)
			}
		}
	})
}
