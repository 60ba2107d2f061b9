package main

import (
	"bytes"
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/vmmgo/vmm/kvm/kvmtest"
	"github.com/vmmgo/vmm/scripts/benchguest"
)

// TestFloorRunsBenchGuest builds the floor and runs the benchmark guest's
// CPL0 and CPL3 variants: both markers, exit status 0.
func TestFloorRunsBenchGuest(t *testing.T) {
	kvmtest.Open(t)
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Skip("no gcc: the bench itself fails with the install hint")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	bin, err := buildFloor(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range []benchguest.Options{{Loops: 100}, {Loops: 100, User: true}} {
		elf, err := benchguest.Build(ctx, dir, o)
		if err != nil {
			t.Skipf("benchguest: %v", err)
		}
		res, err := runVMM(ctx, runSpec{argv: []string{bin, elf, "16"}, watch: markers, timeout: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(res.stdout, []byte{benchguest.Marker, benchguest.EndMarker}) || res.exitCode != 0 {
			t.Errorf("%s: stdout %q exit %d stderr %q", o.Name(), res.stdout, res.exitCode, res.stderr)
		}
	}
	res, err := runVMM(ctx, runSpec{argv: []string{bin, "/nonexistent.elf", "16"}, timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if res.exitCode == 0 || !strings.Contains(string(res.stderr), "/nonexistent.elf") {
		t.Errorf("missing guest: exit %d stderr %q", res.exitCode, res.stderr)
	}
}

func TestPeersRanAndGoals(t *testing.T) {
	b := &bench{}
	st := newRow("Start-up: process start → first guest port write seen on stdout", "time")
	ex := newRow("Exit cost per port write, loop at CPL0 (32-bit kernel mode: emulated here)", "time")
	u := newRow("Exit cost per port write, loop at CPL3 (64-bit user mode: native here)", "time")
	for _, v := range vmmNames {
		st.values[v] = sample{0.04}
		ex.values[v] = sample{10e-6}
	}
	st.values[vmmOurs] = sample{0.008}
	ex.values[vmmOurs] = sample{11.5e-6}
	u.notes[vmmGokvm] = "EXITSHUTDOWN" // not a required row
	b.rows = []*row{st, ex, u}
	if err := b.peersRan(); err != nil {
		t.Fatalf("all ran: %v", err)
	}
	delete(st.values, vmmQEMU)
	st.notes[vmmQEMU] = "failed to set MSR 0x10a"
	err := b.peersRan()
	if err == nil || !strings.Contains(err.Error(), "QEMU") || !strings.Contains(err.Error(), "MSR 0x10a") {
		t.Fatalf("QEMU missing: %v", err)
	}
	st.values[vmmQEMU] = sample{0.04}
	g := b.goals()
	if g[0].verdict != "met" || !strings.HasPrefix(g[0].measured, "0.20×") {
		t.Errorf("start-up goal %+v", g[0])
	}
	if g[1].verdict != "**missed**" || !strings.HasPrefix(g[1].measured, "1.15×") {
		t.Errorf("CPL0 goal %+v", g[1])
	}
	if g[2].measured != "not measured" {
		t.Errorf("CPL3 goal %+v", g[2])
	}
}

func TestShellQuote(t *testing.T) {
	if got := shellQuote("host,-arch-capabilities"); got != "host,-arch-capabilities" {
		t.Errorf("got %s", got)
	}
	if got := shellQuote("console=ttyS0 panic=-1"); got != `"console=ttyS0 panic=-1"` {
		t.Errorf("got %s", got)
	}
}
