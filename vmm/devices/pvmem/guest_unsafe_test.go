package pvmem

import (
	"encoding/binary"
	"errors"
	"os"
	"runtime"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/vmmgo/vmm/memory"
)

// A minimal raw-ioctl KVM harness (devices never import kvm) to run a
// real-mode guest that drives the port with in/out, as a guest kernel
// would. KVM API §4 (KVM_CREATE_VM, KVM_SET_USER_MEMORY_REGION,
// KVM_CREATE_VCPU, KVM_GET/SET_SREGS, KVM_SET_REGS, KVM_RUN).
const (
	kvmGetVCPUMmapSize   = 0xAE04
	kvmCreateVM          = 0xAE01
	kvmCreateVCPU        = 0xAE41
	kvmSetUserMemRegion  = 0x4020AE46
	kvmRun               = 0xAE80
	kvmGetSregs          = 0x8138AE83 // _IOR(KVMIO, 0x83, struct kvm_sregs = 312)
	kvmSetSregs          = 0x4138AE84
	kvmSetRegs           = 0x4090AE82 // _IOW(KVMIO, 0x82, struct kvm_regs = 144)
	kvmExitIO            = 2
	kvmExitHLT           = 5
	kvmExitIOIn          = 0
	runExitReasonOff     = 8
	runIOOff             = 32 // direction u8, size u8, port u16, count u32, data_offset u64
	sregsSize, regsSize  = 312, 144
	sregsSSDPL           = 5*24 + 16 // kvm_sregs.ss (6th kvm_segment of 24 bytes), .dpl
	userMemRegionSize    = 32
	guestCodeGPA         = 0x1000
	guestResultsGPA      = 0x600
	guestListGPA         = 0x3000
	testRAMSize          = 1 << 20
	guestDeadline        = 20 * time.Second
	ioExitsInProgram     = 12 + 2000
	conversionsInProgram = 1 + 2 + 1000 // single, list entries, loop
)

// The guest (real mode, assembled with GNU as --32, .code16):
//
//	GPA=0x5000 NPAGES=2 ATTRS=private; in CONVERT -> [0x600]
//	LIST=0x3000 COUNT=2; in LIST_CONVERT -> [0x604]
//	GPA=0x5001; in CONVERT -> [0x608]            (invalid: unaligned)
//	GPA=0x5000; 500 x { ATTRS=0x10; in CONVERT; ATTRS=0; in CONVERT } ORing statuses into [0x60c]
//	hlt
var guestProgram = []byte{
	0xba, 0x53, 0x0a, 0x66, 0xb8, 0x00, 0x50, 0x00, 0x00, 0x66, 0xef, 0x42,
	0x66, 0x31, 0xc0, 0x66, 0xef, 0x42, 0x66, 0xb8, 0x02, 0x00, 0x00, 0x00,
	0x66, 0xef, 0x42, 0x66, 0xb8, 0x10, 0x00, 0x00, 0x00, 0x66, 0xef, 0x42,
	0x66, 0xed, 0x66, 0xa3, 0x00, 0x06, 0xba, 0x59, 0x0a, 0x66, 0xb8, 0x00,
	0x30, 0x00, 0x00, 0x66, 0xef, 0x42, 0x66, 0x31, 0xc0, 0x66, 0xef, 0x42,
	0x66, 0xb8, 0x02, 0x00, 0x00, 0x00, 0x66, 0xef, 0x42, 0x66, 0xed, 0x66,
	0xa3, 0x04, 0x06, 0xba, 0x53, 0x0a, 0x66, 0xb8, 0x01, 0x50, 0x00, 0x00,
	0x66, 0xef, 0xba, 0x57, 0x0a, 0x66, 0xed, 0x66, 0xa3, 0x08, 0x06, 0xba,
	0x53, 0x0a, 0x66, 0xb8, 0x00, 0x50, 0x00, 0x00, 0x66, 0xef, 0xb9, 0xf4,
	0x01, 0xba, 0x56, 0x0a, 0x66, 0xb8, 0x10, 0x00, 0x00, 0x00, 0x66, 0xef,
	0x42, 0x66, 0xed, 0x66, 0x09, 0x06, 0x0c, 0x06, 0xba, 0x56, 0x0a, 0x66,
	0x31, 0xc0, 0x66, 0xef, 0x42, 0x66, 0xed, 0x66, 0x09, 0x06, 0x0c, 0x06,
	0xe2, 0xdb, 0xf4,
}

func ioctl(t *testing.T, fd int, req, arg uintptr, name string) uintptr {
	t.Helper()
	for {
		r, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, arg)
		if errno == unix.EINTR && req == kvmCreateVM {
			continue
		}
		if errno != 0 {
			t.Fatalf("ioctl(%s): %v", name, os.NewSyscallError("ioctl", errno))
		}
		return r
	}
}

// TestGuestDrivesPort runs a real-mode guest under KVM whose in/out
// instructions reach the device through KVM_EXIT_IO.
func TestGuestDrivesPort(t *testing.T) {
	kfd, err := unix.Open("/dev/kvm", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		t.Skip("/dev/kvm is absent")
	}
	if err != nil {
		t.Fatalf("/dev/kvm present but unusable: %v", err)
	}
	defer unix.Close(kfd)
	vm := int(ioctl(t, kfd, kvmCreateVM, 0, "KVM_CREATE_VM"))
	defer unix.Close(vm)

	b, err := memory.NewBackend(memory.KindMemfd, testRAMSize, memory.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	g, err := memory.NewGuest(memory.Region{GPA: 0, Size: testRAMSize, Backend: b})
	if err != nil {
		t.Fatal(err)
	}
	mem := b.Bytes()
	var region [userMemRegionSize]byte // slot u32, flags u32, gpa u64, size u64, uaddr u64
	binary.LittleEndian.PutUint64(region[16:], testRAMSize)
	binary.LittleEndian.PutUint64(region[24:], uint64(uintptr(unsafe.Pointer(&mem[0]))))
	ioctl(t, vm, kvmSetUserMemRegion, uintptr(unsafe.Pointer(&region[0])), "KVM_SET_USER_MEMORY_REGION")
	copy(mem[guestCodeGPA:], guestProgram)
	putList(t, g, guestListGPA, []entry{{0x8000, 1, memory.AttrPrivate, 0}, {0x9000, 3, memory.AttrPrivate, 0}})

	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	vcpu := int(ioctl(t, vm, kvmCreateVCPU, 0, "KVM_CREATE_VCPU"))
	defer unix.Close(vcpu)
	// The CPL rule as the VMM applies it: SS.DPL from KVM_GET_SREGS, read
	// on the vCPU thread when a doorbell rings (0 in real mode).
	cplReads := 0
	dev, err := New(g, Config{VCPUs: 1, Convert: guestConvert(g), CPL: func(int) (int, error) {
		var sr [sregsSize]byte
		if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(vcpu), kvmGetSregs, uintptr(unsafe.Pointer(&sr[0]))); errno != 0 {
			return -1, errno
		}
		cplReads++
		return int(sr[sregsSSDPL]), nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	runSize := int(ioctl(t, kfd, kvmGetVCPUMmapSize, 0, "KVM_GET_VCPU_MMAP_SIZE"))
	run, err := unix.Mmap(vcpu, 0, runSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(run)
	var sregs [sregsSize]byte
	ioctl(t, vcpu, kvmGetSregs, uintptr(unsafe.Pointer(&sregs[0])), "KVM_GET_SREGS")
	binary.LittleEndian.PutUint64(sregs[0:], 0)  // cs.base
	binary.LittleEndian.PutUint16(sregs[12:], 0) // cs.selector
	ioctl(t, vcpu, kvmSetSregs, uintptr(unsafe.Pointer(&sregs[0])), "KVM_SET_SREGS")
	var regs [regsSize]byte
	binary.LittleEndian.PutUint64(regs[16*8:], guestCodeGPA) // rip
	binary.LittleEndian.PutUint64(regs[17*8:], 2)            // rflags
	ioctl(t, vcpu, kvmSetRegs, uintptr(unsafe.Pointer(&regs[0])), "KVM_SET_REGS")

	// Watchdog: a wedged guest fails the test instead of hanging CI.
	tid := unix.Gettid()
	timer := time.AfterFunc(guestDeadline, func() {
		run[1] = 1 // immediate_exit
		unix.Tgkill(unix.Getpid(), tid, unix.SIGURG)
	})
	defer timer.Stop()

	exits := 0
	start := time.Now()
	for {
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(vcpu), kvmRun, 0)
		if errno == unix.EINTR {
			if run[1] == 1 {
				t.Fatalf("guest still running after %v (%d exits)", guestDeadline, exits)
			}
			continue
		}
		if errno != 0 {
			t.Fatalf("KVM_RUN: %v", errno)
		}
		reason := binary.LittleEndian.Uint32(run[runExitReasonOff:])
		if reason == kvmExitHLT {
			break
		}
		if reason != kvmExitIO {
			t.Fatalf("unexpected exit %d after %d I/O exits", reason, exits)
		}
		exits++
		dir := run[runIOOff]
		size := int(run[runIOOff+1])
		port := binary.LittleEndian.Uint16(run[runIOOff+2:])
		count := int(binary.LittleEndian.Uint32(run[runIOOff+4:]))
		off := binary.LittleEndian.Uint64(run[runIOOff+8:])
		if port < DefaultPort || port >= DefaultPort+NumPorts {
			t.Fatalf("I/O to unexpected port %#x", port)
		}
		for i := 0; i < count; i++ {
			data := run[off+uint64(i*size) : off+uint64((i+1)*size)]
			if dir == kvmExitIOIn {
				dev.BusRead(0, uint64(port-DefaultPort), data)
			} else {
				dev.BusWrite(0, uint64(port-DefaultPort), data)
			}
		}
	}
	elapsed := time.Since(start)
	res := make([]byte, 16)
	g.Read(guestResultsGPA, res)
	single := int32(binary.LittleEndian.Uint32(res[0:]))
	list := int32(binary.LittleEndian.Uint32(res[4:]))
	bad := int32(binary.LittleEndian.Uint32(res[8:]))
	loop := binary.LittleEndian.Uint32(res[12:])
	if single != 0 || list != 0 || int64(bad) != StatusInvalid || loop != 0 {
		t.Errorf("guest saw statuses single=%d list=%d unaligned=%d loop=%#x", single, list, bad, loop)
	}
	if got := statuses(t, g, guestListGPA, 2); got[0] != 0 || got[1] != 0 {
		t.Errorf("list statuses %v", got)
	}
	for gpa, want := range map[uint64]bool{0x5000: false, 0x6000: false, 0x8000: true, 0x9000: true, 0xb000: true, 0xc000: false} {
		if p, _ := g.IsPrivate(memory.GPA(gpa)); p != want {
			t.Errorf("page %#x private=%v, want %v", gpa, p, want)
		}
	}
	if doorbells := 3 + 1000; cplReads != doorbells {
		t.Errorf("CPL read %d times, want once per doorbell (%d)", cplReads, doorbells)
	}
	if exits != ioExitsInProgram {
		t.Errorf("%d I/O exits, want %d", exits, ioExitsInProgram)
	}
	s := g.Stats()
	t.Logf("guest: %d port exits, %d conversions in %v: %.1f µs per exit, %.1f µs per single-register conversion (2 exits each in the loop)",
		exits, s.ToPrivate+s.ToShared, elapsed, float64(elapsed.Microseconds())/float64(exits), 2*float64(elapsed.Microseconds())/float64(exits))
	if s.ToPrivate+s.ToShared != conversionsInProgram || s.Refused != 1 {
		t.Errorf("conversions %d refused %d, want %d and 1", s.ToPrivate+s.ToShared, s.Refused, conversionsInProgram)
	}
}
