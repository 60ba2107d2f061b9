package kvmtest

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// recorder is a testing.TB that records Skip/Fatal instead of stopping the
// goroutine, so the helper's decisions can be checked. OpenPath returns
// right after calling Skipf/Fatalf, which is what makes this possible.
type recorder struct {
	testing.TB
	skipped, failed string
	cleanups        []func()
}

func (r *recorder) Helper() {}
func (r *recorder) Skipf(format string, args ...any) {
	r.skipped = fmt.Sprintf(format, args...)
}
func (r *recorder) Fatalf(format string, args ...any) {
	r.failed = fmt.Sprintf(format, args...)
}
func (r *recorder) Cleanup(f func()) { r.cleanups = append(r.cleanups, f) }
func (r *recorder) runCleanups() {
	for i := len(r.cleanups) - 1; i >= 0; i-- {
		r.cleanups[i]()
	}
}

func TestOpenPathSkipsOnlyWhenAbsent(t *testing.T) {
	r := &recorder{TB: t}
	if sys := OpenPath(r, filepath.Join(t.TempDir(), "no-such-kvm")); sys != nil {
		t.Fatal("OpenPath returned a System for a missing device")
	}
	if r.skipped == "" || r.failed != "" {
		t.Fatalf("missing device: skipped=%q failed=%q, want a skip only", r.skipped, r.failed)
	}
}

func TestOpenPathFailsWhenPresentButBroken(t *testing.T) {
	// A regular file is "present" but is not a KVM device: the helper must
	// fail the test instead of skipping it.
	p := filepath.Join(t.TempDir(), "kvm")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	r := &recorder{TB: t}
	if sys := OpenPath(r, p); sys != nil {
		t.Fatal("OpenPath returned a System for a non-KVM file")
	}
	if r.failed == "" || r.skipped != "" {
		t.Fatalf("broken device: skipped=%q failed=%q, want a failure only", r.skipped, r.failed)
	}
	t.Logf("failure message: %s", r.failed)
}

func TestOpenAndNewVM(t *testing.T) {
	sys, vm := NewVM(t)
	if v, err := sys.APIVersion(); err != nil || v != 12 {
		t.Fatalf("APIVersion = %d, %v", v, err)
	}
	if vm.FD() < 0 {
		t.Fatal("VM has no fd")
	}
}

func TestOpenClosesOnCleanup(t *testing.T) {
	if _, err := os.Stat(Path()); err != nil {
		t.Skipf("%s absent: %v", Path(), err)
	}
	r := &recorder{TB: t}
	sys := OpenPath(r, Path())
	if sys == nil || r.failed != "" || r.skipped != "" {
		t.Fatalf("OpenPath: sys=%v failed=%q skipped=%q", sys, r.failed, r.skipped)
	}
	r.runCleanups()
	if _, err := sys.APIVersion(); err == nil {
		t.Fatal("System still usable after cleanup")
	}
}
