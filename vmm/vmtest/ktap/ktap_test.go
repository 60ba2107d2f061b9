package ktap

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// flat describes a parsed tree compactly: "path=STATUS" for every node in
// walk order.
func flat(r *Result) []string {
	var out []string
	r.Root.Walk(func(path []string, n *Test) {
		out = append(out, strings.Join(path, ".")+"="+n.Status.String())
	})
	return out
}

// kunit61 is the shape Linux 6.1's KUnit prints (lib/kunit/test.c,
// executor.c), with printk timestamps, a parameterised case, a skip, a
// failure with its diagnostic, and unrelated kernel messages interleaved.
const kunit61 = `[    0.000000] Linux version 6.1.0
[    5.100000] random: crng init done
[    6.000000] KTAP version 1
[    6.000001] 1..2
[    6.000002]     KTAP version 1
[    6.000003]     # Subtest: alpha
[    6.000004]     1..4
[    6.000005]     ok 1 alpha_pass
[    6.000006]     # alpha_fail: EXPECTATION FAILED at lib/x.c:10
[    6.000007]     Expected 1 == 2, but
[    6.000008]     not ok 2 alpha_fail
[    6.100000] clocksource: Switched to clocksource tsc
[    6.000009]     ok 3 alpha_skip # SKIP no hardware
[    6.000010]         KTAP version 1
[    6.000011]         # Subtest: alpha_params
[    6.000012]         ok 1 zero
[    6.000013]         ok 2 one
[    6.000014]     # alpha_params: pass:2 fail:0 skip:0 total:2
[    6.000015]     ok 4 alpha_params
[    6.000016] # alpha: pass:2 fail:1 skip:1 total:4
[    6.000017] # Totals: pass:3 fail:1 skip:1 total:5
[    6.000018] not ok 1 alpha
[    6.000019]     KTAP version 1
[    6.000020]     # Subtest: beta
[    6.000021]     1..1
[    6.000022]     ok 1 beta_one
[    6.000023] ok 2 beta
[    6.500000] reboot: Power down
`

func TestParseKUnit61(t *testing.T) {
	r := ParseString(kunit61)
	want := []string{
		"alpha=FAILED",
		"alpha.alpha_pass=PASSED",
		"alpha.alpha_fail=FAILED",
		"alpha.alpha_skip=SKIPPED",
		"alpha.alpha_params=PASSED",
		"alpha.alpha_params.zero=PASSED",
		"alpha.alpha_params.one=PASSED",
		"beta=PASSED",
		"beta.beta_one=PASSED",
	}
	if got := flat(r); !reflect.DeepEqual(got, want) {
		t.Errorf("tree:\n got %q\nwant %q", got, want)
	}
	if !r.Found || !r.Complete || r.Version != "KTAP version 1" || r.Root.Plan != 2 {
		t.Errorf("Found=%v Complete=%v Version=%q Plan=%d", r.Found, r.Complete, r.Version, r.Root.Plan)
	}
	if r.Status != StatusFail {
		t.Errorf("Status = %v, want FAILED", r.Status)
	}
	wantCounts := Counts{Passed: 4, Failed: 1, Skipped: 1}
	if r.Summary != wantCounts {
		t.Errorf("Summary = %+v, want %+v", r.Summary, wantCounts)
	}
	fail := r.Find("alpha", "alpha_fail")
	if fail == nil || len(fail.Log) != 2 || !strings.Contains(fail.Log[0], "EXPECTATION FAILED") {
		t.Errorf("alpha_fail log = %q, want the two diagnostic lines", fail.Log)
	}
	if s := r.Find("alpha", "alpha_skip"); s.Directive != "SKIP no hardware" || s.Number != 3 {
		t.Errorf("skip: directive %q number %d", s.Directive, s.Number)
	}
	// The interleaved kernel message lands in the next test's log.
	if s := r.Find("alpha", "alpha_skip"); len(s.Log) != 1 || !strings.Contains(s.Log[0], "clocksource") {
		t.Errorf("alpha_skip log = %q", s.Log)
	}
	if e := r.Summary.Errors; e != 0 {
		var all []string
		r.Root.Walk(func(p []string, n *Test) { all = append(all, n.Errors...) })
		t.Errorf("%d output errors: %q", e, all)
	}
}

func TestParseVariants(t *testing.T) {
	for _, tc := range []struct {
		name     string
		in       string
		tree     []string
		status   Status
		complete bool
		counts   Counts
		crash    string
	}{
		{
			name: "all pass, no timestamps, CRLF",
			in: "KTAP version 1\r\n1..1\r\n    KTAP version 1\r\n    # Subtest: s\r\n    1..2\r\n" +
				"    ok 1 a\r\n    ok 2 b\r\nok 1 s\r\n",
			tree: []string{"s=PASSED", "s.a=PASSED", "s.b=PASSED"}, status: StatusPass, complete: true,
			counts: Counts{Passed: 2},
		},
		{
			name: "missing plans everywhere",
			in:   "KTAP version 1\n    # Subtest: s\n    ok 1 a\n    not ok 2 b\nnot ok 1 s\n",
			tree: []string{"s=FAILED", "s.a=PASSED", "s.b=FAILED"}, status: StatusFail, complete: true,
			counts: Counts{Passed: 1, Failed: 1},
		},
		{
			name: "kernel panic in the middle of a suite",
			in: "[ 1.0] KTAP version 1\n[ 1.0] 1..2\n[ 1.0]     KTAP version 1\n[ 1.0]     # Subtest: s\n[ 1.0]     1..3\n" +
				"[ 1.0]     ok 1 a\n[ 2.0] BUG: kernel NULL pointer dereference\n[ 2.0] Kernel panic - not syncing: Fatal exception\n" +
				"[ 2.0]     ok 2 ghost\n",
			tree: []string{"s=CRASHED", "s.a=PASSED", "s.#2=CRASHED", "s.#3=CRASHED", "#2=CRASHED"}, status: StatusCrashed,
			counts: Counts{Passed: 1, Crashed: 3, Errors: 3}, crash: "Kernel panic - not syncing: Fatal exception",
		},
		{
			name: "output stops (watchdog): open suite and unplanned suites",
			in:   "KTAP version 1\n1..3\n    KTAP version 1\n    # Subtest: s\n    1..2\n    ok 1 a\n",
			tree: []string{"s=CRASHED", "s.a=PASSED", "s.#2=CRASHED", "#2=CRASHED", "#3=CRASHED"}, status: StatusCrashed,
			counts: Counts{Passed: 1, Crashed: 3, Errors: 3},
		},
		{
			name: "no KTAP at all",
			in:   "[    0.0] Linux version 6.1\n[ 1.0] Run /init as init process\n",
			tree: nil, status: StatusNoTests, counts: Counts{Errors: 1},
		},
		{
			name: "nothing selected",
			in:   "KTAP version 1\n1..0\n",
			tree: nil, status: StatusNoTests, complete: true,
		},
		{
			name: "TAP 14 with hyphens, flat and unindented",
			in:   "TAP version 14\n1..1\n# Subtest: s\n1..2\nok 1 - a\nnot ok 2 - b # TODO later\nok 1 - s\n",
			tree: []string{"s=PASSED", "s.a=PASSED", "s.b=SKIPPED"}, status: StatusPass, complete: true,
			counts: Counts{Passed: 1, Skipped: 1},
		},
		{
			name: "newer kernels: Subtest line before the version line",
			in:   "KTAP version 1\n1..1\n    # Subtest: s\n    # module: x\n    KTAP version 1\n    1..1\n    ok 1 a\nok 1 s\n",
			tree: []string{"s=PASSED", "s.a=PASSED"}, status: StatusPass, complete: true, counts: Counts{Passed: 1},
		},
		{
			name: "suite whose result line is missing, next suite follows",
			in: "KTAP version 1\n1..2\n    KTAP version 1\n    # Subtest: s\n    1..1\n    ok 1 a\n" +
				"    KTAP version 1\n    # Subtest: t\n    1..1\n    ok 1 b\nok 2 t\n",
			tree: []string{"s=CRASHED", "s.a=PASSED", "t=PASSED", "t.b=PASSED"}, status: StatusCrashed, complete: true,
			counts: Counts{Passed: 2, Errors: 1},
		},
		{
			name: "prefixed lines (another tag before each line)",
			in:   "guest0: KTAP version 1\nguest0: 1..1\nnoise\nguest0:     # Subtest: s\nguest0:     ok 1 a\nguest0: ok 1 s\n",
			tree: []string{"s=PASSED", "s.a=PASSED"}, status: StatusPass, complete: true, counts: Counts{Passed: 1},
		},
		{
			name: "implausible plan from a corrupted console",
			in:   "KTAP version 1\n1..99999999999\n    # Subtest: s\n    ok 1 a\nok 1 s\n",
			tree: []string{"s=PASSED", "s.a=PASSED"}, status: StatusFail, complete: true,
			counts: Counts{Passed: 1, Errors: 1},
		},
		{
			name: "suite that failed to initialise (no cases run)",
			in:   "KTAP version 1\n1..1\n    # s: failed to initialize (-12)\nnot ok 1 s\n",
			tree: []string{"s=FAILED"}, status: StatusFail, complete: true, counts: Counts{Failed: 1},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := ParseString(tc.in)
			if got := flat(r); !reflect.DeepEqual(got, tc.tree) {
				t.Errorf("tree:\n got %q\nwant %q", got, tc.tree)
			}
			if r.Status != tc.status {
				t.Errorf("Status = %v, want %v", r.Status, tc.status)
			}
			if r.Complete != tc.complete {
				t.Errorf("Complete = %v, want %v", r.Complete, tc.complete)
			}
			if r.Summary != tc.counts {
				t.Errorf("Summary = %+v, want %+v", r.Summary, tc.counts)
			}
			if r.Crash != tc.crash {
				t.Errorf("Crash = %q, want %q", r.Crash, tc.crash)
			}
		})
	}
}

func TestExecutorError(t *testing.T) {
	r := ParseString("[ 1.0] kunit executor: error adding suite: -12\n[ 1.1] KTAP version 1\n[ 1.1] 1..0\n")
	if len(r.ExecutorErrors) != 1 || r.ExecutorErrors[0] != "error adding suite: -12" {
		t.Errorf("ExecutorErrors = %q", r.ExecutorErrors)
	}
}

func TestIncrementalCallbacks(t *testing.T) {
	p := NewParser()
	var started, results []string
	p.OnStart = func(path []string, _ *Test) { started = append(started, strings.Join(path, ".")) }
	p.OnResult = func(path []string, n *Test) {
		results = append(results, strings.Join(path, ".")+"="+n.Status.String())
	}
	// Bytes split at awkward places, as a console delivers them.
	for _, chunk := range []string{"[ 1.0] KTAP ver", "sion 1\n[ 1.0] 1..2\n    KTAP version 1\n    # Subt", "est: s\n    ok 1 a\n",
		"    not ok 2 b\nnot ok 1 s\n    # Subtest: u\n    ok 1 c\nok 2 u"} {
		if _, err := p.Write([]byte(chunk)); err != nil {
			t.Fatal(err)
		}
	}
	r := p.Finish()
	if want := []string{"s", "u"}; !reflect.DeepEqual(started, want) {
		t.Errorf("OnStart paths %q, want %q", started, want)
	}
	want := []string{"s.a=PASSED", "s.b=FAILED", "s=FAILED", "u.c=PASSED", "u=PASSED"}
	if !reflect.DeepEqual(results, want) {
		t.Errorf("OnResult %q, want %q", results, want)
	}
	if !r.Complete || r.Summary != (Counts{Passed: 2, Failed: 1}) {
		t.Errorf("Complete=%v Summary=%+v", r.Complete, r.Summary)
	}
}

func TestJSONRoundTrip(t *testing.T) {
	r := ParseString(kunit61)
	b, err := r.JSON()
	if err != nil {
		t.Fatal(err)
	}
	var back Result
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatalf("unmarshal: %v\n%s", err, b)
	}
	if !reflect.DeepEqual(flat(&back), flat(r)) || back.Status != r.Status || back.Summary != r.Summary {
		t.Errorf("round trip changed the result:\n%s", b)
	}
	if !strings.Contains(string(b), `"status": "FAILED"`) {
		t.Errorf("statuses not written as names:\n%s", b)
	}
}

// TestRealOutput parses console logs captured from real guests (see
// testdata/ktap/README.md for where each came from) and checks them
// against the per-case results the kernel printed.
func TestRealOutput(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "..", "..", "testdata", "ktap", "*.log"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no captured logs in testdata/ktap")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			want, err := os.ReadFile(strings.TrimSuffix(f, ".log") + ".want")
			if err != nil {
				t.Fatal(err)
			}
			r := ParseString(string(b))
			var got []string
			got = append(got, "status="+r.Status.String(), "summary="+r.Summary.String())
			got = append(got, flat(r)...)
			wantLines := strings.Split(strings.TrimSpace(string(want)), "\n")
			if !reflect.DeepEqual(got, wantLines) {
				t.Errorf("%s:\n got:\n%s\nwant:\n%s", f, strings.Join(got, "\n"), strings.Join(wantLines, "\n"))
			}
			if c := r.Find("vmm_selftest", "vmm_selftest_deliberate_failure"); c != nil && c.Status == StatusFail &&
				!strings.Contains(strings.Join(c.Log, "\n"), "deliberate failure: proves the harness") {
				t.Errorf("failing case's log lacks the kernel's message: %q", c.Log)
			}
		})
	}
}

// TestPlaceholderBudget: a console that announces huge plans and stops
// must not make the parser build unbounded trees.
func TestPlaceholderBudget(t *testing.T) {
	var b strings.Builder
	b.WriteString("KTAP version 1\n")
	for i := 0; i < 50; i++ {
		fmt.Fprintf(&b, "    # Subtest: s%d\n    1..65536\n", i)
	}
	r := ParseString(b.String())
	n := 0
	r.Root.Walk(func([]string, *Test) { n++ })
	if n > maxPlaceholders+100 {
		t.Errorf("%d nodes for a tiny input", n)
	}
	if r.Status != StatusCrashed {
		t.Errorf("status %v", r.Status)
	}
}
