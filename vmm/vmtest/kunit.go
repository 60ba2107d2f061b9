package vmtest

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/vmmgo/vmm/vmm"
	"github.com/vmmgo/vmm/vmm/vmtest/ktap"
)

// KUnitOptions describe a KUnit run: the guest kernel must have KUnit built
// in (the vmm guest kernel does, dormant until kunit.enable=1).
type KUnitOptions struct {
	Options
	// Filter selects suites and cases: the kernel's kunit.filter_glob
	// ("suite", "list*", "suite.case"). Empty runs every built-in suite.
	Filter string
	// ExpectFail names the suites ("suite") or cases ("suite.case") that
	// are expected to fail: KUnit reports them as passing subtests when they
	// fail, and as failing subtests when they pass.
	ExpectFail []string
	// ResultsOnly returns the parsed results without creating subtests and
	// without failing t on test failures (a boot that produces no complete
	// KTAP still fails t). The caller asserts on KUnitResult.KTAP itself.
	ResultsOnly bool
}

// KUnitResult is a KUnit run: the guest's Result and the parsed KTAP.
type KUnitResult struct {
	*Result
	KTAP *ktap.Result
}

// KUnitCmdline returns the kernel parameters that run KUnit with filter and
// power the guest off afterwards (lib/kunit/executor.c).
func KUnitCmdline(filter string) string {
	s := "kunit.enable=1 kunit_shutdown=poweroff"
	if filter != "" {
		s += " kunit.filter_glob=" + filter
	}
	return s
}

func (o KUnitOptions) options() Options {
	opts := o.Options
	opts.Cmdline = strings.TrimSpace(KUnitCmdline(o.Filter) + " " + opts.Cmdline)
	return opts
}

// RunKUnit boots a KUnit guest without a testing.T (the `vmm kunit`
// command uses it). parser, if not nil, is fed the console as it arrives
// (set its OnStart/OnResult for live output) and its result is returned;
// otherwise a fresh parser is used.
func RunKUnit(ctx context.Context, opts KUnitOptions, parser *ktap.Parser, onLine func(string)) (*KUnitResult, error) {
	if parser == nil {
		parser = ktap.NewParser()
	}
	r, err := Boot(ctx, opts.options(), func(line string) {
		parser.Line(line)
		if onLine != nil {
			onLine(line)
		}
	})
	return &KUnitResult{Result: r, KTAP: parser.Finish()}, err
}

// KUnit boots the kernel with KUnit enabled, parses its KTAP output and
// (unless ResultsOnly) reports every suite as a subtest of t and every case
// as a subtest of its suite: t.Run(suite, ...) then t.Run(case, ...), so a
// case's full name is TestX/suite/case and -run can select it. Passing
// cases pass, skipped cases skip, failing and crashed cases fail with the
// kernel's diagnostic lines, except those listed in ExpectFail.
//
// The boot itself must end in a power-off (kunit_shutdown) with complete
// KTAP output, else t fails with the console, vCPU dump and artifacts.
func KUnit(t *testing.T, opts KUnitOptions) *KUnitResult {
	t.Helper()
	kr := kunitBoot(t, opts)
	if kr == nil || opts.ResultsOnly {
		return kr
	}
	reportKUnit(t, kr, opts.ExpectFail)
	return kr
}

// kunitBoot boots, parses, and fails t when the run as a whole went wrong.
func kunitBoot(t testing.TB, opts KUnitOptions) *KUnitResult {
	t.Helper()
	o := opts.options().withDefaults()
	parser := ktap.NewParser()
	r, err := boot(t, o, parser.Line)
	if r == nil {
		return nil
	}
	kr := &KUnitResult{Result: r, KTAP: parser.Finish()}
	ktapJSON, _ := kr.KTAP.JSON()
	extra := []artifact{{"ktap.json", ktapJSON}}
	switch {
	case err != nil || r.Outcome != vmm.OutcomePowerOff:
		fail(t, o, r, err, fmt.Sprintf("KUnit guest ended with %v, want power-off (kunit_shutdown=poweroff); KTAP: %s", r.Outcome, describe(kr.KTAP)), extra...)
	case !kr.KTAP.Found:
		fail(t, o, r, nil, "no KTAP output on the console: is CONFIG_KUNIT built in and kunit.enable=1 honoured?", extra...)
	case !kr.KTAP.Complete:
		fail(t, o, r, nil, "KTAP output incomplete: "+describe(kr.KTAP), extra...)
	case len(kr.KTAP.Suites()) == 0:
		fail(t, o, r, nil, fmt.Sprintf("no suite matched kunit.filter_glob=%q", opts.Filter), extra...)
	case len(kr.KTAP.ExecutorErrors) > 0:
		fail(t, o, r, nil, "kunit executor: "+strings.Join(kr.KTAP.ExecutorErrors, "; "), extra...)
	}
	return kr
}

// reportKUnit reports every suite and case as subtests of t.
func reportKUnit(t *testing.T, kr *KUnitResult, expectFail []string) {
	t.Helper()
	expect := map[string]bool{}
	for _, e := range expectFail {
		expect[e] = true
	}
	unused := map[string]bool{}
	for e := range expect {
		unused[e] = true
	}
	for _, suite := range kr.KTAP.Suites() {
		t.Run(suite.Name, func(t *testing.T) {
			t.Helper()
			delete(unused, suite.Name)
			if len(suite.Subtests) == 0 {
				verdict(t, suite, expect[suite.Name])
				return
			}
			for _, e := range suite.Errors {
				t.Errorf("suite %s: KTAP: %s", suite.Name, e)
			}
			for _, c := range suite.Subtests {
				name := suite.Name + "." + c.Name
				delete(unused, name)
				t.Run(c.Name, func(t *testing.T) {
					reportCase(t, c, expect[suite.Name] || expect[name])
				})
			}
		})
	}
	for e := range unused {
		t.Errorf("ExpectFail %q matched no suite or case that ran", e)
	}
}

// reportCase reports one case (and its parameters, as subtests).
func reportCase(t *testing.T, c *ktap.Test, expectFail bool) {
	t.Helper()
	for _, p := range c.Subtests {
		t.Run(p.Name, func(t *testing.T) { verdict(t, p, expectFail) })
	}
	if len(c.Subtests) == 0 || !c.Status.OK() {
		verdict(t, c, expectFail)
	}
}

// verdict maps one KTAP status onto t.
func verdict(t *testing.T, n *ktap.Test, expectFail bool) {
	t.Helper()
	for _, e := range n.Errors {
		t.Logf("KTAP: %s", e)
	}
	logs := strings.Join(n.Log, "\n")
	switch {
	case expectFail && n.Status == ktap.StatusFail:
		t.Logf("failed as expected:\n%s", logs)
	case expectFail:
		t.Errorf("%s: expected to fail, got %v\n%s", n.Name, n.Status, logs)
	case n.Status == ktap.StatusPass:
	case n.Status == ktap.StatusSkip:
		t.Skipf("%s: %s", n.Name, n.Directive)
	default:
		t.Errorf("%s: %v\n%s", n.Name, n.Status, logs)
	}
}

// describe summarises a KTAP result in one line.
func describe(r *ktap.Result) string {
	s := fmt.Sprintf("%v, %s", r.Status, r.Summary)
	if !r.Found {
		s = "none found"
	}
	if r.Crash != "" {
		s += "; " + r.Crash
	}
	return s
}
