package kvm

import (
	"errors"
	"fmt"
)

var (
	// ErrNoKVM is wrapped by Open when the KVM device does not exist or has
	// no driver behind it (kvm module not loaded, no hardware
	// virtualization, or a container without /dev/kvm).
	ErrNoKVM = errors.New("kvm: KVM is not available")

	// ErrAPIVersion is wrapped by Open when KVM_GET_API_VERSION is not 12.
	ErrAPIVersion = errors.New("kvm: unsupported KVM API version")

	// ErrInterrupted is wrapped by VCPU.Run when KVM_RUN returned EINTR:
	// the vCPU was kicked (immediate_exit was set, or a signal reached the
	// vCPU thread). The same error also matches unix.EINTR with errors.Is.
	// The exit_reason in the run page is KVM_EXIT_INTR or stale; nothing in
	// the guest needs completing beyond what the last exit required.
	ErrInterrupted = errors.New("kvm: vcpu run interrupted")

	// ErrNotBound is returned by VCPU.Kick when no thread has called
	// BindThread yet. immediate_exit has been set anyway, so the next
	// KVM_RUN returns at once.
	ErrNotBound = errors.New("kvm: no thread bound to the vcpu")

	// ErrClosed is returned by operations on a closed handle.
	ErrClosed = errors.New("kvm: use of closed handle")

	// ErrCorruptExit is wrapped by the kvm_run decoders when a field is out
	// of range (a data offset beyond the mapping, an invalid size, ndata >
	// 16). The page is written by the kernel, but its contents derive from
	// guest actions, so the VMM treats them as untrusted input.
	ErrCorruptExit = errors.New("kvm: corrupt kvm_run exit data")
)

// MemoryFaultError is returned by VCPU.Run when KVM_RUN failed with EFAULT
// or EHWPOISON and exit_reason is KVM_EXIT_MEMORY_FAULT (api.rst §5 and
// §8.44 KVM_CAP_MEMORY_FAULT_INFO): the only exit that comes with a -1
// return. Err is the *os.SyscallError, so errors.Is(err, unix.EFAULT) works.
type MemoryFaultError struct {
	Exit MemoryFaultExit
	Err  error
}

func (e *MemoryFaultError) Error() string {
	kind := "shared"
	if e.Exit.Private() {
		kind = "private"
	}
	return fmt.Sprintf("kvm: memory fault on %s gpa %#x size %#x (flags %#x): %v",
		kind, e.Exit.GPA, e.Exit.Size, e.Exit.Flags, e.Err)
}

func (e *MemoryFaultError) Unwrap() error { return e.Err }
