package vmtest_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/vmmgo/vmm/vmm/vmtest"
	"github.com/vmmgo/vmm/vmm/vmtest/ktap"
)

// The kernel parameters a KUnit guest boots with: run the suites matching
// the filter, then power off so the VMM's run ends.
func ExampleKUnitCmdline() {
	fmt.Println(vmtest.KUnitCmdline("list*"))
	// Output:
	// kunit.enable=1 kunit_shutdown=poweroff kunit.filter_glob=list*
}

// What the console carries is parsed into a tree of suites and cases,
// printk prefixes and interleaved kernel messages included.
func ExampleKUnit_results() {
	r := ktap.ParseString(`[    0.512345] KTAP version 1
[    0.512350] 1..1
[    0.512400]     KTAP version 1
[    0.512401]     # Subtest: list-kunit-test
[    0.512402]     1..2
[    0.512500]     ok 1 list_test_add
[    0.512600]     # list_test_del: EXPECTATION FAILED at lib/list-test.c:42
[    0.512700]     not ok 2 list_test_del
[    0.512800] not ok 1 list-kunit-test
`)
	fmt.Println("complete:", r.Complete, "suites:", len(r.Suites()))
	c := r.Find("list-kunit-test", "list_test_del")
	fmt.Println(c.Name, c.Status)
	// Output:
	// complete: true suites: 1
	// list_test_del FAILED
}

// How a test of another module runs its kernel's KUnit suites in a guest:
// each case becomes a subtest; without /dev/kvm the test is skipped,
// saying why. (Compiled, not run: it boots Linux.)
func ExampleKUnit() {
	var t *testing.T // the test's own *testing.T
	vmtest.KUnit(t, vmtest.KUnitOptions{
		Options: vmtest.Options{Kernel: "out/vmlinux", Timeout: 5 * time.Minute},
		Filter:  "mydriver*",
	})
}
