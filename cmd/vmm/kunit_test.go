package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

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
