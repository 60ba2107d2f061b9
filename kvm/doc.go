// Package kvm is the typed layer over the Linux KVM ioctl API
// (Documentation/virt/kvm/api.rst) for x86_64 hosts, written on
// golang.org/x/sys/unix without cgo.
//
// It owns:
//
//   - the handles System (/dev/kvm), VM and VCPU and their lifetimes;
//   - every ioctl request number this project uses, in one table (ioctl.go),
//     pinned by a golden test against the _IOC encoding;
//   - Go mirrors of the kernel structs with explicit padding, whose sizes
//     and offsets are pinned by tests;
//   - decoding of the mmapped kvm_run page (run.go): the exit union is read
//     through bounds-checked accessors, never by casting the page to a Go
//     struct, because its contents are written by KVM on behalf of the guest;
//   - capability, exit-reason and VM-type names;
//   - the vCPU kick protocol (see VCPU.Kick).
//
// It keeps out of policy: it does not retry (except the bounded EINTR retry of
// KVM_CREATE_VM), does not log, does not choose a memory layout, and imports
// nothing from this module.
//
// Errors from the kernel are *os.SyscallError values named after the ioctl
// ("ioctl(KVM_GET_REGS)"), so errors.Is(err, unix.EINVAL) works, wrapped
// with context. unsafe is confined to files named *_unsafe.go.
package kvm
