package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmmgo/vmm/kvm/kvmtest"
	"github.com/vmmgo/vmm/vmm"
	"github.com/vmmgo/vmm/vmm/vmtest"
	"github.com/vmmgo/vmm/vmm/vmtest/ktap"
)

func TestKUnitUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"--cpus", "0"},
		{"--memory", "lots"},
		{"--timeout", "-1s"},
		{"extra-arg"},
		{"--no-such-flag"},
	} {
		var out, errb bytes.Buffer
		code, err := runKUnit(context.Background(), args, &out, &errb)
		var ue usageError
		if code != 2 || !errors.As(err, &ue) {
			t.Errorf("vmm kunit %q: code %d err %v, want usage error (2)", args, code, err)
		}
	}
}

// TestKUnitPrinter replays a captured console through the printer and
// checks the kunit.py-style lines.
func TestKUnitPrinter(t *testing.T) {
	b, err := os.ReadFile("../../testdata/ktap/linux-6.1-kunit-all.log")
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	pr := &kunitPrinter{stamp: func(format string, a ...any) { fmt.Fprintf(&out, format+"\n", a...) }}
	p := ktap.NewParser()
	p.OnStart, p.OnResult = pr.start, pr.result
	p.Write(b)
	p.Finish()
	got := out.String()
	for _, want := range []string{
		"========================= cmdline ==========================\n",
		"[PASSED] cmdline_test_noint\n",
		"[SKIPPED] example_skip_test # SKIP this test should be skipped\n",
		"# vmm_selftest_deliberate_failure: EXPECTATION FAILED at lib/vmm_kunit_test.c:72\ndeliberate failure: proves the harness reports failing cases\n[FAILED] vmm_selftest_deliberate_failure\n",
		"================== [FAILED] vmm_selftest ===================\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("printer output lacks %q:\n%s", want, got)
		}
	}
}

// TestKUnitChecksKVMFirst: without access to /dev/kvm, `vmm kunit` says so
// at once instead of first building a kernel for minutes.
func TestKUnitChecksKVMFirst(t *testing.T) {
	start := time.Now()
	code, out, errOut := run(t, "kunit", "--kvm", filepath.Join(t.TempDir(), "kvm"))
	if code != 1 || !strings.Contains(errOut, "does not exist") || strings.Contains(out, "Finding the cached guest kernel") {
		t.Errorf("exit %d, stdout %q, stderr %q; want 1, the KVM error and no kernel lookup", code, out, errOut)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("took %v", el)
	}
}

// TestKUnitProgressLines: the reporter is silent while results arrive and
// says the elapsed time and boot stage after a silence.
func TestKUnitProgressLines(t *testing.T) {
	var out []string
	t0 := time.Now()
	k := newKUnitProgress(func(f string, a ...any) { out = append(out, fmt.Sprintf(f, a...)) }, t0)
	every := 15 * time.Second
	k.tick(t0.Add(10*time.Second), every)
	k.tick(t0.Add(16*time.Second), every)
	k.line("[    2.500000] PCI: Using configuration type 1 for base access\r")
	k.tick(t0.Add(20*time.Second), every) // 4 s after the last progress line
	k.tick(t0.Add(31*time.Second), every)
	k.printed() // a result, now (about t0): the silence restarts
	k.tick(t0.Add(10*time.Second), every)
	k.line(strings.Repeat("x", 300))
	k.tick(t0.Add(16*time.Second), every)
	want := []string{
		"... 16s in the guest; no console output yet",
		"... 31s in the guest; console: [    2.500000] PCI: Using configuration type 1 for base access",
	}
	if len(out) != 3 || out[0] != want[0] || out[1] != want[1] || !strings.HasSuffix(out[2], strings.Repeat("x", 100)+"...") {
		t.Errorf("progress lines:\n%s", strings.Join(out, "\n"))
	}
}

// TestKUnitProgress: `vmm kunit` fills a long silence between "Booting"
// and the first result with progress lines, and stops once results come.
func TestKUnitProgress(t *testing.T) {
	kvmtest.Open(t)
	saved, savedEvery := runKUnitGuest, progressEvery
	defer func() { runKUnitGuest, progressEvery = saved, savedEvery }()
	progressEvery = 40 * time.Millisecond
	runKUnitGuest = func(ctx context.Context, opts vmtest.KUnitOptions, p *ktap.Parser, onLine func(string)) (*vmtest.KUnitResult, error) {
		onLine("[    0.000000] Linux version 6.1.0")
		time.Sleep(1500 * time.Millisecond) // dozens of periods, even on a loaded host
		for _, l := range []string{"KTAP version 1", "1..1", "    KTAP version 1", "    # Subtest: demo", "    1..1", "    ok 1 case", "ok 1 demo"} {
			p.Line(l)
			onLine(l)
		}
		return &vmtest.KUnitResult{Result: &vmtest.Result{Outcome: vmm.OutcomePowerOff}, KTAP: p.Finish()}, nil
	}
	code, out, errOut := run(t, "kunit", "--kernel", "/dev/null", "--kvm", kvmtest.Path())
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	for _, want := range []string{"in the guest; console: [    0.000000] Linux version 6.1.0", "[PASSED] case"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}
