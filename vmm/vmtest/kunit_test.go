package vmtest

import (
	"strings"
	"testing"
	"time"

	"github.com/vmmgo/vmm/internal/hostspeed"
	"github.com/vmmgo/vmm/vmm/vmtest/ktap"
)

// TestKUnitInGuest boots the vmm guest kernel with KUnit enabled on this
// host's KVM and checks individual results, including the deliberately
// failing vmm_selftest case (scripts/guest-kernel/kunit/vmm_kunit_test.c),
// which must come back as FAILED.
//
// The filter "[cv]m[dm][l_]*" selects two suites, cmdline and vmm_selftest,
// out of the seven built in (not vmmgo_protected: kunit.filter_glob is one
// glob, lib/glob.c). The boot
// dominates the run time (tens of seconds where guest kernel mode is
// emulated); the tests themselves take well under a second of guest time.
func TestKUnitInGuest(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a Linux guest (about a minute where guest kernel mode is emulated)")
	}
	start := time.Now()
	kr := KUnit(t, KUnitOptions{
		Options:    Options{Cost: hostspeed.LinuxBoot, Memory: 128 << 20, QuietConsole: true},
		Filter:     "[cv]m[dm][l_]*",
		ExpectFail: []string{"vmm_selftest.vmm_selftest_deliberate_failure"},
	})
	if kr == nil {
		return
	}
	t.Logf("KUnit run: %v wall (guest %v), %s", time.Since(start).Round(time.Millisecond), kr.Duration.Round(time.Millisecond), kr.KTAP.Summary)

	var suites []string
	for _, s := range kr.KTAP.Suites() {
		suites = append(suites, s.Name)
	}
	if strings.Join(suites, ",") != "cmdline,vmm_selftest" {
		t.Errorf("suites run: %q, want cmdline and vmm_selftest only (the filter)", suites)
	}
	for _, tc := range []struct {
		path []string
		want ktap.Status
	}{
		{[]string{"vmm_selftest", "vmm_selftest_arith"}, ktap.StatusPass},
		{[]string{"vmm_selftest", "vmm_selftest_kzalloc"}, ktap.StatusPass},
		{[]string{"vmm_selftest", "vmm_selftest_sort"}, ktap.StatusPass},
		{[]string{"vmm_selftest", "vmm_selftest_cpus"}, ktap.StatusPass},
		{[]string{"vmm_selftest", "vmm_selftest_deliberate_failure"}, ktap.StatusFail},
		{[]string{"vmm_selftest"}, ktap.StatusFail},
		{[]string{"cmdline", "cmdline_test_range"}, ktap.StatusPass},
		{[]string{"cmdline"}, ktap.StatusPass},
	} {
		n := kr.KTAP.Find(tc.path...)
		if n == nil {
			t.Errorf("%s: not in the results", strings.Join(tc.path, "."))
			continue
		}
		if n.Status != tc.want {
			t.Errorf("%s: %v, want %v", strings.Join(tc.path, "."), n.Status, tc.want)
		}
	}
	if n := kr.KTAP.Find("vmm_selftest", "vmm_selftest_deliberate_failure"); n != nil &&
		!strings.Contains(strings.Join(n.Log, "\n"), "deliberate failure: proves the harness reports failing cases") {
		t.Errorf("the failing case's log lacks the kernel's message: %q", n.Log)
	}
	want := ktap.Counts{Passed: 8, Failed: 1}
	if kr.KTAP.Summary != want {
		t.Errorf("summary %+v, want %+v", kr.KTAP.Summary, want)
	}
}
