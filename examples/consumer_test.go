// Package examples checks the example modules under this directory: each
// is a separate Go module (its own go.mod), the way another project uses
// this one, so `go test ./...` of the vmm module does not build it; this
// test does, offline (GOPROXY=off: everything must come from the module
// cache the vmm module itself uses).
package examples

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// goCmd runs the go command in dir with the given extra environment.
func goCmd(t *testing.T, dir string, env []string, args ...string) string {
	t.Helper()
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("no go command on PATH: %v", err)
	}
	cmd := exec.Command(gobin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOPROXY=off", "GOFLAGS=-mod=readonly -buildvcs=false", "GOTOOLCHAIN=local")
	cmd.Env = append(cmd.Env, env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go %s in %s: %v\n%s", strings.Join(args, " "), dir, err, out)
	}
	return string(out)
}

// TestConsumerReplace: examples/consumer, which requires
// github.com/vmmgo/vmm with a replace line (docs/vmtest.md), vets, builds
// its tests and runs the one that needs no guest.
func TestConsumerReplace(t *testing.T) {
	dir, err := filepath.Abs("consumer")
	if err != nil {
		t.Fatal(err)
	}
	goCmd(t, dir, []string{"GOWORK=off"}, "vet", "./...")
	out := goCmd(t, dir, []string{"GOWORK=off"}, "test", "-count=1", "-v", "-run", "TestParseKTAP|TestKernelSuites", "./...")
	if !strings.Contains(out, "--- PASS: TestParseKTAP") {
		t.Errorf("TestParseKTAP did not pass:\n%s", out)
	}
}

// TestConsumerWorkspace: the same module without the replace and require
// lines, in a go.work that uses it and a checkout of vmm (the other way
// docs/vmtest.md gives; with the zero pseudo-version still required, the
// go command looks that version up and fails offline).
func TestConsumerWorkspace(t *testing.T) {
	repo, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, name := range []string{"go.mod", "go.sum", "kunit_test.go"} {
		b, err := os.ReadFile(filepath.Join("consumer", name))
		if err != nil {
			t.Fatal(err)
		}
		if name == "go.mod" {
			var keep []string
			for _, l := range strings.Split(string(b), "\n") {
				if !strings.HasPrefix(l, "replace ") && !strings.HasPrefix(l, "require github.com/vmmgo/vmm ") {
					keep = append(keep, l)
				}
			}
			b = []byte(strings.Join(keep, "\n"))
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	work := "go " + strings.TrimPrefix(runtime.Version(), "go") + "\n\nuse (\n\t.\n\t" + repo + "\n)\n"
	if err := os.WriteFile(filepath.Join(dir, "go.work"), []byte(work), 0o644); err != nil {
		t.Fatal(err)
	}
	env := []string{"GOWORK=" + filepath.Join(dir, "go.work"), "GOFLAGS=-buildvcs=false"}
	out := goCmd(t, dir, env, "test", "-count=1", "-v", "-run", "TestParseKTAP", ".")
	if !strings.Contains(out, "--- PASS: TestParseKTAP") {
		t.Errorf("TestParseKTAP did not pass in the workspace:\n%s", out)
	}
}
