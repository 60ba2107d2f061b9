package kvm_test

import (
	"errors"
	"runtime"
	"testing"
	"time"

	"github.com/vmmgo/vmm/kvm"
	"github.com/vmmgo/vmm/kvm/kvmtest"
)

// BenchmarkPIOExit measures one KVM_RUN round trip per port write: the
// real-mode guest loops on "out dx, al" (mov dx, 0x10; l: out dx, al;
// jmp l). On the shadow-paging development host the guest loop itself is
// emulated, so compare with the 5.0-5.5 us C floor for kernel-mode loops
// (docs/host-kvm.md).
func BenchmarkPIOExit(b *testing.B) {
	g := newGuest(b, []byte{0xba, 0x10, 0x00, 0xee, 0xeb, 0xfd})
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	c := g.vcpu
	c.BindThread()
	watchdog := time.AfterFunc(2*time.Minute, func() { c.Kick() })
	defer watchdog.Stop()
	r := c.RunData()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := c.Run(); err != nil {
			// A signal that is not our kick (the Go runtime's preemption
			// SIGURG) also ends KVM_RUN: re-enter, as the VMM does.
			if errors.Is(err, kvm.ErrInterrupted) && !r.ImmediateExit() {
				i--
				continue
			}
			b.Fatalf("run: %v", err)
		}
		if r.ExitReason() != kvm.ExitIO {
			b.Fatalf("exit %v", r)
		}
		if io, err := r.IO(); err != nil || io.Port != 0x10 {
			b.Fatalf("io %+v, %v", io, err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/exit")
}

// BenchmarkCreateVMToHLT measures creating a VM with one 64 KiB memory
// slot and one vCPU, running a one-instruction guest to HLT, and closing
// everything.
func BenchmarkCreateVMToHLT(b *testing.B) {
	sys := kvmtest.Open(b)
	mem := anonMem(b, memSize)
	mem[codeGPA] = 0xf4 // hlt
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	b.ResetTimer()
	for range b.N {
		vm, err := sys.CreateVM(kvm.VMTypeDefault)
		if err != nil {
			b.Fatal(err)
		}
		if err := vm.SetTSSAddr(tssAddr); err != nil {
			b.Fatal(err)
		}
		if err := vm.SetUserMemoryRegion(kvm.UserspaceMemoryRegion{MemorySize: memSize, UserspaceAddr: addrOf(mem)}); err != nil {
			b.Fatal(err)
		}
		g := &guest{sys: sys, vm: vm, mem: mem}
		c, err := vm.CreateVCPU(0)
		if err != nil {
			b.Fatal(err)
		}
		g.vcpu = c
		s, err := c.Sregs()
		if err != nil {
			b.Fatal(err)
		}
		s.CS.Base, s.CS.Selector = 0, 0
		if err := c.SetSregs(s); err != nil {
			b.Fatal(err)
		}
		if err := c.SetRegs(kvm.Regs{RIP: codeGPA, RFLAGS: 2}); err != nil {
			b.Fatal(err)
		}
		if err := runOnce(c, deadline); err != nil || c.RunData().ExitReason() != kvm.ExitHLT {
			g.fatal(b, "run: %v", err)
		}
		c.Close()
		vm.Close()
	}
}
