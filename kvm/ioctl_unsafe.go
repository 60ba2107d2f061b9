package kvm

import (
	"os"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ioctl issues an ioctl whose argument is an integer (or nothing). It
// returns the ioctl's non-negative result. Errors are *os.SyscallError named
// after the request ("ioctl(KVM_CREATE_VCPU)"). There is deliberately no
// EINTR retry here: KVM_RUN must surface EINTR (that is how a kick lands),
// and the callers that want a retry do it themselves, bounded.
func ioctl(fd int, req request, arg uintptr) (int, error) {
	r, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(req), arg)
	if errno != 0 {
		return int(r), os.NewSyscallError("ioctl("+req.String()+")", errno)
	}
	return int(r), nil
}

// ioctlPtr issues an ioctl whose argument points at *arg. The pointer is
// converted to uintptr inside the syscall expression, and arg is kept alive
// until the kernel has returned (runtime.KeepAlive), so that neither the
// garbage collector nor the stack mover can invalidate the address the
// kernel reads or writes.
func ioctlPtr[T any](fd int, req request, arg *T) (int, error) {
	r, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(req), uintptr(unsafe.Pointer(arg)))
	runtime.KeepAlive(arg)
	if errno != 0 {
		return int(r), os.NewSyscallError("ioctl("+req.String()+")", errno)
	}
	return int(r), nil
}

// ioctlBuf is ioctlPtr for variable-length kernel structs that this package
// builds in a byte buffer (kvm_cpuid2, kvm_msrs, kvm_msr_list,
// kvm_irq_routing). The kernel uses copy_{from,to}_user on them, which has
// no alignment requirement.
func ioctlBuf(fd int, req request, buf []byte) (int, error) {
	if len(buf) == 0 {
		return ioctl(fd, req, 0)
	}
	return ioctlPtr(fd, req, &buf[0])
}
