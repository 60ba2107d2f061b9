package main

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmmgo/vmm/internal/tinyguest"
	"github.com/vmmgo/vmm/kvm/kvmtest"
	"github.com/vmmgo/vmm/vmm"
)

func TestStatsCommand(t *testing.T) {
	kvmtest.Open(t)
	code, err := tinyguest.Assemble("mov $0x1234, %dx\nout %al, %dx\nspin: jmp spin", 0x100000)
	if err != nil {
		t.Fatal(err)
	}
	cfg := vmm.DefaultConfig()
	cfg.Memory = 16 << 20
	cfg.Timeout = 30 * time.Second
	m, err := vmm.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.LoadRaw(vmm.RawImage{Data: code, Addr: 0x100000}); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "s")
	stop, err := m.ServeControl(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { m.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	var out string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		var c int
		c, out, _ = run(t, "stats", sock)
		if c != 0 {
			t.Fatalf("vmm stats exit %d", c)
		}
		if strings.Contains(out, "KVM_EXIT_IO") {
			break
		}
	}
	for _, want := range []string{"state running", "1 vCPUs, 16M guest RAM (anon)", "KVM_EXIT_IO", "pages: shared 4096, private 0", "host footprint"} {
		if !strings.Contains(out, want) {
			t.Errorf("vmm stats output lacks %q:\n%s", want, out)
		}
	}
	c, js, _ := run(t, "stats", "--json", sock)
	var s vmm.Stats
	if c != 0 || json.Unmarshal([]byte(js), &s) != nil || s.CPUs != 1 {
		t.Errorf("--json: exit %d, %q", c, js)
	}
	if c, _, stderr := run(t, "ctl", sock, "pause"); c != 0 || !m.Parked(0) {
		t.Fatalf("ctl pause: exit %d %q, parked %v", c, stderr, m.Parked(0))
	}
	if c, out, _ := run(t, "ctl", sock, "dump"); c != 0 || !strings.Contains(out, "vcpu 0 state") {
		t.Errorf("ctl dump: exit %d %q", c, out)
	}
	if c, _, _ := run(t, "ctl", sock, "resume"); c != 0 {
		t.Errorf("ctl resume: exit %d", c)
	}
	if c, _, _ := run(t, "ctl", sock, "stop"); c != 0 {
		t.Errorf("ctl stop: exit %d", c)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("ctl stop did not stop the guest")
	}
	if c, _, _ := run(t, "ctl", sock, "reboot"); c != 2 {
		t.Errorf("ctl reboot: exit %d, want 2", c)
	}
}

func TestStatsCommandErrors(t *testing.T) {
	c, _, stderr := run(t, "stats", filepath.Join(t.TempDir(), "none"))
	if c != 1 || !strings.Contains(stderr, "is a VMM running with --control-socket") {
		t.Errorf("missing socket: exit %d, %q", c, stderr)
	}
	if c, _, _ := run(t, "stats"); c != 2 {
		t.Errorf("no argument: exit %d", c)
	}
}
