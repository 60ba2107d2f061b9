// Package consumer is an example of another Go module that tests a kernel
// with github.com/vmmgo/vmm/vmm/vmtest (docs/vmtest.md, "Using vmtest from
// another module"). The vmm repository builds and runs it offline
// (examples/consumer_test.go).
package consumer

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vmmgo/vmm/vmm/vmtest"
	"github.com/vmmgo/vmm/vmm/vmtest/ktap"
)

// TestKernelSuites boots CONSUMER_KERNEL (a vmlinux with KUnit built in)
// and reports each KUnit case as a subtest. Without the variable it
// skips: the example is about wiring, and a boot takes minutes on hosts
// that emulate guest kernel mode.
func TestKernelSuites(t *testing.T) {
	kernel := os.Getenv("CONSUMER_KERNEL")
	if kernel == "" {
		t.Skip("set CONSUMER_KERNEL to a vmlinux with KUnit built in")
	}
	vmtest.KUnit(t, vmtest.KUnitOptions{
		Options: vmtest.Options{Kernel: kernel, Timeout: 10 * time.Minute},
		Filter:  "list*",
	})
}

// TestParseKTAP uses the KTAP parser on its own (no guest).
func TestParseKTAP(t *testing.T) {
	const console = `[    1.000000] KTAP version 1
[    1.000000] 1..1
[    1.000100]     KTAP version 1
[    1.000100]     # Subtest: example
[    1.000100]     1..2
[    1.000200]     ok 1 example_simple_test
[    1.000300]     ok 2 example_skip_test # SKIP this test should be skipped
[    1.000400] ok 1 example
`
	r, err := ktap.Parse(strings.NewReader(console))
	if err != nil {
		t.Fatal(err)
	}
	if !r.Found || !r.Complete || !r.Status.OK() || r.Summary.Total() != 2 {
		t.Fatalf("parsed %+v", r)
	}
	if c := r.Find("example", "example_skip_test"); c == nil || c.Status != ktap.StatusSkip {
		t.Fatalf("skip case: %+v", c)
	}
}
