package kvm_test

import (
	"errors"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vmmgo/vmm/kvm"
	"github.com/vmmgo/vmm/kvm/kvmtest"
)

// Tiny real-mode test guests. RAM is one anonymous 64 KiB slot at GPA 0;
// code is placed at codeGPA and runs with CS.base = 0, IP = codeGPA.
const (
	memSize  = 0x10000
	codeGPA  = 0x1000
	dataGPA  = 0x2000
	tssAddr  = 0xfffbd000 // 3 pages below the 4 GiB BIOS area, as QEMU uses
	deadline = 5 * time.Second
)

type guest struct {
	sys  *kvm.System
	vm   *kvm.VM
	vcpu *kvm.VCPU
	mem  []byte
}

func anonMem(t testing.TB, size int) []byte {
	t.Helper()
	mem, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatalf("mmap guest memory: %v", err)
	}
	t.Cleanup(func() { unix.Munmap(mem) })
	return mem
}

// newGuestVM creates a VM with RAM and code but no vCPU yet, so a test can
// add an irqchip first.
func newGuestVM(t testing.TB, code []byte) *guest {
	t.Helper()
	sys, vm := kvmtest.NewVM(t)
	if err := vm.SetTSSAddr(tssAddr); err != nil {
		t.Fatal(err)
	}
	g := &guest{sys: sys, vm: vm, mem: anonMem(t, memSize)}
	copy(g.mem[codeGPA:], code)
	err := vm.SetUserMemoryRegion(kvm.UserspaceMemoryRegion{
		Slot: 0, GuestPhysAddr: 0, MemorySize: memSize, UserspaceAddr: addrOf(g.mem),
	})
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func newGuest(t testing.TB, code []byte) *guest {
	t.Helper()
	g := newGuestVM(t, code)
	g.addVCPU(t)
	return g
}

// addVCPU creates vCPU 0 in real mode at CS:IP = 0:codeGPA.
func (g *guest) addVCPU(t testing.TB) {
	t.Helper()
	vcpu, err := g.vm.CreateVCPU(0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { vcpu.Close() })
	g.vcpu = vcpu
	s, err := vcpu.Sregs()
	if err != nil {
		t.Fatal(err)
	}
	for _, seg := range []*kvm.Segment{&s.CS, &s.DS, &s.ES, &s.SS, &s.FS, &s.GS} {
		seg.Base, seg.Selector = 0, 0
	}
	if err := vcpu.SetSregs(s); err != nil {
		t.Fatal(err)
	}
	if err := vcpu.SetRegs(kvm.Regs{RIP: codeGPA, RFLAGS: 2, RSP: 0x8000}); err != nil {
		t.Fatal(err)
	}
}

// run enters the guest once on a locked OS thread with a watchdog that
// kicks the vCPU after d. A watchdog kick fails the test with a register
// dump, so no guest can hang the test binary.
func (g *guest) run(t testing.TB, d time.Duration) {
	t.Helper()
	if err := runOnce(g.vcpu, d); err != nil {
		g.fatal(t, "run: %v", err)
	}
}

func runOnce(c *kvm.VCPU, d time.Duration) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	c.BindThread()
	timer := time.AfterFunc(d, func() { c.Kick() })
	err := c.Run()
	// A signal that is not a kick (e.g. the Go runtime's preemption
	// SIGURG racing with the syscall) also interrupts KVM_RUN; the kick
	// protocol tells them apart by immediate_exit.
	for errors.Is(err, kvm.ErrInterrupted) && !c.RunData().ImmediateExit() {
		err = c.Run()
	}
	if !timer.Stop() {
		// The watchdog fired: make sure its immediate_exit does not leak
		// into the next run, whatever the outcome of this one.
		c.SetImmediateExit(false)
		if err == nil {
			err = errors.New("watchdog fired")
		}
	}
	return err
}

// expect runs once and checks the exit reason.
func (g *guest) expect(t testing.TB, want kvm.ExitReason) *kvm.Run {
	t.Helper()
	g.run(t, deadline)
	r := g.vcpu.RunData()
	if got := r.ExitReason(); got != want {
		g.fatal(t, "exit %v, want %v", r, want)
	}
	return r
}

func (g *guest) fatal(t testing.TB, format string, args ...any) {
	t.Helper()
	regs, rerr := g.vcpu.Regs()
	sregs, serr := g.vcpu.Sregs()
	t.Fatalf(format+"\nexit: %v\nregs: %+v (%v)\ncs: %+v cr0 %#x (%v)", append(args, g.vcpu.RunData(), regs, rerr, sregs.CS, sregs.CR0, serr)...)
}
