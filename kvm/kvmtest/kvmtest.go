// Package kvmtest opens KVM for tests that need a real /dev/kvm.
//
// The rule it enforces (docs/architecture.md, "Tests in three tiers"): a test
// may skip only when the KVM device is absent. When the device exists but
// is unusable (no permission, wrong API version, KVM_CREATE_VM failing),
// the test fails, so that a broken CI host cannot pass silently.
package kvmtest

import (
	"errors"
	"io/fs"
	"os"
	"testing"

	"github.com/vmmgo/vmm/kvm"
)

// PathEnv names an environment variable that overrides the device path
// (default kvm.DefaultPath).
const PathEnv = "VMM_KVM_DEVICE"

// Path returns the KVM device path tests use.
func Path() string {
	if p := os.Getenv(PathEnv); p != "" {
		return p
	}
	return kvm.DefaultPath
}

// Open opens KVM for a test and closes it on cleanup. It skips the test
// only if the device node does not exist; any other failure is fatal. It
// also creates (and closes) a default VM, so that a host whose KVM cannot
// create VMs fails here rather than in a confusing place.
func Open(t testing.TB) *kvm.System {
	t.Helper()
	return OpenPath(t, Path())
}

// OpenPath is Open for an explicit device path.
func OpenPath(t testing.TB, path string) *kvm.System {
	t.Helper()
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		t.Skipf("kvmtest: %s does not exist: KVM is not available on this host (no kvm module or no virtualization); skipping", path)
		return nil
	}
	sys, err := kvm.Open(path)
	if err != nil {
		t.Fatalf("kvmtest: %s exists but cannot be used: %v", path, err)
		return nil
	}
	t.Cleanup(func() { sys.Close() })
	v, err := sys.APIVersion()
	if err != nil || v != kvm.APIVersion {
		t.Fatalf("kvmtest: %s: API version %d (err %v), want %d", path, v, err, kvm.APIVersion)
		return nil
	}
	vm, err := sys.CreateVM(kvm.VMTypeDefault)
	if err != nil {
		t.Fatalf("kvmtest: %s: %v", path, err)
		return nil
	}
	if err := vm.Close(); err != nil {
		t.Fatalf("kvmtest: %s: %v", path, err)
		return nil
	}
	return sys
}

// NewVM opens KVM (as Open) and creates a default-type VM, both closed on
// cleanup.
func NewVM(t testing.TB) (*kvm.System, *kvm.VM) {
	t.Helper()
	sys := Open(t)
	if sys == nil {
		return nil, nil
	}
	vm, err := sys.CreateVM(kvm.VMTypeDefault)
	if err != nil {
		t.Fatalf("kvmtest: %v", err)
		return nil, nil
	}
	t.Cleanup(func() { vm.Close() })
	return sys, vm
}
