package memory

import (
	"errors"
	"os"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A tiny raw-ioctl helper so the guest_memfd backend can be tested without
// importing kvm (memory never imports kvm). KVM API §4.142.
const (
	kvmCreateVM          = 0xAE01     // _IO(KVMIO, 0x01)
	kvmCreateGuestMemfd  = 0xC040AED4 // _IOWR(KVMIO, 0xd4, struct kvm_create_guest_memfd)
	guestMemfdFlagMmap   = 1 << 0
	guestMemfdFlagShared = 1 << 1
)

type kvmCreateGuestMemfdArg struct {
	Size, Flags uint64
	Reserved    [6]uint64
}

// testVM opens /dev/kvm and creates a VM. It skips only when /dev/kvm is
// absent and fails when it is present but does not work.
func testVM(t testing.TB) int {
	t.Helper()
	kfd, err := unix.Open("/dev/kvm", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			t.Skip("/dev/kvm is absent: guest_memfd needs KVM")
		}
		t.Fatalf("open /dev/kvm (present but unusable): %v", err)
	}
	t.Cleanup(func() { unix.Close(kfd) })
	var vm uintptr
	for i := 0; i < 10; i++ {
		var errno unix.Errno
		vm, _, errno = unix.Syscall(unix.SYS_IOCTL, uintptr(kfd), kvmCreateVM, 0)
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			t.Fatalf("KVM_CREATE_VM: %v", os.NewSyscallError("ioctl", errno))
		}
		break
	}
	t.Cleanup(func() { unix.Close(int(vm)) })
	return int(vm)
}

// testGuestMemfd creates a guest_memfd (MMAP|INIT_SHARED) of size bytes.
func testGuestMemfd(t testing.TB, vm int, size uint64) int {
	t.Helper()
	arg := kvmCreateGuestMemfdArg{Size: size, Flags: guestMemfdFlagMmap | guestMemfdFlagShared}
	fd, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(vm), kvmCreateGuestMemfd, uintptr(unsafe.Pointer(&arg)))
	if errno != 0 {
		t.Fatalf("KVM_CREATE_GUEST_MEMFD(%#x, MMAP|INIT_SHARED): %v", size, os.NewSyscallError("ioctl", errno))
	}
	return int(fd)
}
