package kvm

import (
	"errors"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

func TestRunError(t *testing.T) {
	kvmRunErr := func(e unix.Errno) error { return os.NewSyscallError("ioctl(KVM_RUN)", e) }

	fault := pageRun()
	fault.PutMemoryFault(MemoryFaultExit{Flags: MemoryExitFlagPrivate, GPA: 0x1000, Size: 0x1000})
	io := pageRun()
	if err := io.PutIO(IOExit{Direction: IOOut, Size: 1, Count: 1, DataOffset: 4096, Data: []byte{1}}); err != nil {
		t.Fatal(err)
	}

	// EINTR: ErrInterrupted and EINTR, whatever the run page says.
	err := runError(3, kvmRunErr(unix.EINTR), fault)
	if !errors.Is(err, ErrInterrupted) || !errors.Is(err, unix.EINTR) {
		t.Fatalf("EINTR -> %v", err)
	}

	// EFAULT / EHWPOISON with KVM_EXIT_MEMORY_FAULT: a *MemoryFaultError.
	for _, e := range []unix.Errno{unix.EFAULT, unix.EHWPOISON} {
		err := runError(0, kvmRunErr(e), fault)
		var mf *MemoryFaultError
		if !errors.As(err, &mf) || !errors.Is(err, e) || mf.Exit.GPA != 0x1000 || !mf.Exit.Private() {
			t.Fatalf("%v with memory fault -> %v", e, err)
		}
	}

	// EFAULT with a stale, unrelated exit reason: a plain wrapped error.
	err = runError(1, kvmRunErr(unix.EFAULT), io)
	var mf *MemoryFaultError
	if errors.As(err, &mf) || !errors.Is(err, unix.EFAULT) || errors.Is(err, ErrInterrupted) {
		t.Fatalf("EFAULT without memory fault -> %v", err)
	}

	// Another errno with a MEMORY_FAULT reason in the page: stale, ignored.
	err = runError(1, kvmRunErr(unix.EINVAL), fault)
	if errors.As(err, &mf) || !errors.Is(err, unix.EINVAL) {
		t.Fatalf("EINVAL -> %v", err)
	}
}
