package memory

import (
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// mincore wraps mincore(2), which golang.org/x/sys/unix does not export on
// Linux. b must be a page-aligned mapping; vec needs one byte per 4 KiB page
// (mincore(2): "vec must be large enough to contain (length+PAGE_SIZE-1) /
// PAGE_SIZE bytes").
func mincore(b []byte, vec []byte) error {
	if len(b) == 0 {
		return nil
	}
	if uint64(len(vec)) < (uint64(len(b))+PageSize-1)/PageSize {
		return os.NewSyscallError("mincore", unix.EINVAL)
	}
	_, _, errno := unix.Syscall(unix.SYS_MINCORE,
		uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), uintptr(unsafe.Pointer(&vec[0])))
	if errno != 0 {
		return os.NewSyscallError("mincore", errno)
	}
	return nil
}
