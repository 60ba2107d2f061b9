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

func readSnapshot(t *testing.T, path string) Snapshot {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var s Snapshot
	if err := json.NewDecoder(c).Decode(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestStatsSocket: the counters are readable while the guest runs, and
// they move as the guest converts memory.
func TestStatsSocket(t *testing.T) {
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
	stop, err := m.ServeStats(path)
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
	cancel()
	<-done
	if s = readSnapshot(t, path); s.State != "stopped" {
		t.Errorf("state after stop %q", s.State)
	}
	stop()
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("socket left behind: %v", err)
	}
}

func TestStatsSocketRefusesOtherFiles(t *testing.T) {
	m := newRawMachine(t, smallConfig(memory.KindAnon), "hlt")
	p := filepath.Join(t.TempDir(), "file")
	os.WriteFile(p, nil, 0o644)
	if _, err := m.ServeStats(p); err == nil || !strings.Contains(err.Error(), "not a socket") {
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
	stop, err := m.ServeStats(s)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	stop()
}
