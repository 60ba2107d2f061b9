package kvm_test

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vmmgo/vmm/kvm"
	"github.com/vmmgo/vmm/kvm/kvmtest"
)

func TestOpenAbsent(t *testing.T) {
	p := filepath.Join(t.TempDir(), "kvm")
	_, err := kvm.Open(p)
	if !errors.Is(err, kvm.ErrNoKVM) || !errors.Is(err, fs.ErrNotExist) || !errors.Is(err, unix.ENOENT) {
		t.Fatalf("Open(absent) = %v, want ErrNoKVM and fs.ErrNotExist", err)
	}
	if !strings.Contains(err.Error(), "not available") || !strings.Contains(err.Error(), p) {
		t.Fatalf("message does not say KVM is unavailable: %v", err)
	}
}

func TestOpenNotKVM(t *testing.T) {
	// /dev/null opens but answers ENOTTY to KVM_GET_API_VERSION.
	_, err := kvm.Open("/dev/null")
	if err == nil || errors.Is(err, kvm.ErrNoKVM) || !errors.Is(err, unix.ENOTTY) {
		t.Fatalf("Open(/dev/null) = %v, want ENOTTY from KVM_GET_API_VERSION", err)
	}
	if !strings.Contains(err.Error(), "KVM_GET_API_VERSION") {
		t.Fatalf("error does not name the ioctl: %v", err)
	}
}

func TestOpenPermissionMessage(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("running as root: DAC permission checks do not apply, so EACCES cannot be provoked")
	}
	p := filepath.Join(t.TempDir(), "kvm")
	if err := os.WriteFile(p, nil, 0); err != nil {
		t.Fatal(err)
	}
	_, err := kvm.Open(p)
	if !errors.Is(err, fs.ErrPermission) || !strings.Contains(err.Error(), "kvm") || !strings.Contains(err.Error(), "permission") {
		t.Fatalf("Open(mode 000) = %v", err)
	}
}

func TestSystem(t *testing.T) {
	sys := kvmtest.Open(t)
	if v, err := sys.APIVersion(); err != nil || v != 12 {
		t.Fatalf("APIVersion = %d, %v; want 12", v, err)
	}
	for _, c := range []kvm.Cap{kvm.CapIRQChip, kvm.CapHLT, kvm.CapUserMemory, kvm.CapImmediateExit, kvm.CapExtCPUID, kvm.CapSetTSSAddr} {
		if v, err := sys.CheckExtension(c); err != nil || v < 1 {
			t.Errorf("%v = %d, %v; every supported host has it", c, v, err)
		}
	}
	nr, err1 := sys.CheckExtension(kvm.CapNrVCPUs)
	max, err2 := sys.CheckExtension(kvm.CapMaxVCPUs)
	if err1 != nil || err2 != nil || nr < 1 || max < nr {
		t.Errorf("NR_VCPUS %d MAX_VCPUS %d (%v, %v)", nr, max, err1, err2)
	}
	if types, err := sys.CheckExtension(kvm.CapVMTypes); err != nil {
		t.Error(err)
	} else if types != 0 && types&1 == 0 {
		t.Errorf("VM_TYPES = %#x lacks the default type (bit 0)", types)
	} else {
		t.Logf("VM_TYPES = %#x", types)
	}
	for _, c := range kvm.ProbeCaps() {
		v, err := sys.CheckExtension(c)
		if err != nil {
			t.Errorf("%v: %v", c, err)
		}
		t.Logf("%-40v %6d  %s", c, v, c.Description())
	}
	size, err := sys.VCPUMmapSize()
	if err != nil || size < 2*4096 {
		t.Fatalf("VCPUMmapSize = %d, %v; want the run page and the PIO page", size, err)
	}
	cpuid, err := sys.SupportedCPUID()
	if err != nil || len(cpuid) == 0 || cpuid[0].Function != 0 {
		t.Fatalf("SupportedCPUID: %d entries, %v", len(cpuid), err)
	}
	if cpuid[0].EAX == 0 {
		t.Errorf("CPUID.0 max leaf is 0")
	}
	msrs, err := sys.MSRIndexList()
	if err != nil || !slices.Contains(msrs, 0x10) || !slices.Contains(msrs, 0x174) {
		t.Fatalf("MSRIndexList: %d entries (TSC 0x10, SYSENTER_CS 0x174 expected), %v", len(msrs), err)
	}
	if v, _ := sys.CheckExtension(kvm.CapGetMSRFeatures); v > 0 {
		if _, err := sys.MSRFeatureIndexList(); err != nil {
			t.Errorf("MSRFeatureIndexList: %v", err)
		}
	}
	if err := sys.Close(); err != nil {
		t.Fatal(err)
	}
	if err := sys.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := sys.APIVersion(); !errors.Is(err, kvm.ErrClosed) {
		t.Fatalf("APIVersion after Close = %v", err)
	}
}

func TestVMCaps(t *testing.T) {
	_, vm := kvmtest.NewVM(t)
	flags, err := vm.CheckExtension(kvm.CapGuestMemfdFlags)
	if err != nil {
		t.Fatal(err)
	}
	// Before 6.18 the cap is absent (0); from 6.18 a default VM may use
	// both MMAP and INIT_SHARED (docs/kvm-api.md §2.1).
	if flags != 0 && flags != int(kvm.GuestMemfdFlagMMAP|kvm.GuestMemfdFlagInitShared) {
		t.Errorf("GUEST_MEMFD_FLAGS on a default VM = %#x, want 0 or 3", flags)
	}
	t.Logf("GUEST_MEMFD_FLAGS = %#x", flags)
	if attrs, err := vm.CheckExtension(kvm.CapMemoryAttributes); err != nil || attrs&int(kvm.MemoryAttributePrivate) != 0 {
		// A default VM has no private memory on any kernel.
		t.Errorf("MEMORY_ATTRIBUTES on a default VM = %#x, %v", attrs, err)
	}
	if _, err := vm.CreateVCPU(-1); err == nil {
		t.Error("CreateVCPU(-1) succeeded")
	}
	c, err := vm.CreateVCPU(0)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := vm.CreateVCPU(0); !errors.Is(err, unix.EEXIST) || !strings.Contains(err.Error(), "KVM_CREATE_VCPU") {
		t.Errorf("second CreateVCPU(0) = %v, want EEXIST naming KVM_CREATE_VCPU", err)
	}
	if len(c.RunData().Bytes()) < 2*4096 {
		t.Errorf("run mapping is %d bytes", len(c.RunData().Bytes()))
	}
	if err := vm.EnableCap(kvm.CapExitHypercall, 1, 2, 3, 4, 5); err == nil {
		t.Error("EnableCap with 5 args succeeded")
	}
	if mask, _ := vm.CheckExtension(kvm.CapExitHypercall); mask&(1<<kvm.HCMapGPARange) != 0 {
		if err := vm.EnableCap(kvm.CapExitHypercall, 1<<kvm.HCMapGPARange); err != nil {
			t.Errorf("enable KVM_HC_MAP_GPA_RANGE exits: %v", err)
		}
	}
}

// TestPIOGuest: mov al, 0x42; out 0x10, al; hlt.
func TestPIOGuest(t *testing.T) {
	g := newGuest(t, []byte{0xb0, 0x42, 0xe6, 0x10, 0xf4})
	r := g.expect(t, kvm.ExitIO)
	io, err := r.IO()
	if err != nil {
		t.Fatal(err)
	}
	if io.Port != 0x10 || io.Size != 1 || io.Direction != kvm.IOOut || io.Count != 1 || !bytes.Equal(io.Data, []byte{0x42}) {
		g.fatal(t, "IO exit %+v", io)
	}
	g.expect(t, kvm.ExitHLT)
	regs, err := g.vcpu.Regs()
	if err != nil || regs.RIP != codeGPA+5 || regs.RAX&0xff != 0x42 {
		g.fatal(t, "after hlt: rip %#x rax %#x (%v)", regs.RIP, regs.RAX, err)
	}
}

// TestPIOInGuest: in al, 0x60; mov [0x2000], al; hlt. The VMM answers the
// IN through IOExit.Data and KVM completes it on re-entry.
func TestPIOInGuest(t *testing.T) {
	g := newGuest(t, []byte{0xe4, 0x60, 0xa2, 0x00, 0x20, 0xf4})
	io, err := g.expect(t, kvm.ExitIO).IO()
	if err != nil || io.Direction != kvm.IOIn || io.Port != 0x60 || len(io.Data) != 1 {
		g.fatal(t, "IN exit %+v, %v", io, err)
	}
	io.Data[0] = 0x5a
	g.expect(t, kvm.ExitHLT)
	if g.mem[dataGPA] != 0x5a {
		t.Fatalf("guest stored %#x, want 0x5a", g.mem[dataGPA])
	}
}

// TestStringIOGuest: cld; mov cx, 4; mov si, 0x2000; mov dx, 0x3f8;
// rep outsb; hlt.
func TestStringIOGuest(t *testing.T) {
	code := []byte{0xfc, 0xb9, 0x04, 0x00, 0xbe, 0x00, 0x20, 0xba, 0xf8, 0x03, 0xf3, 0x6e, 0xf4}
	g := newGuest(t, code)
	copy(g.mem[dataGPA:], "ABCD")
	var got []byte
	exits := 0
	for {
		g.run(t, deadline)
		r := g.vcpu.RunData()
		if r.ExitReason() == kvm.ExitHLT {
			break
		}
		if r.ExitReason() != kvm.ExitIO || exits > 4 {
			g.fatal(t, "unexpected exit after %d IO exits", exits)
		}
		io, err := r.IO()
		if err != nil || io.Port != 0x3f8 || io.Size != 1 || io.Direction != kvm.IOOut {
			g.fatal(t, "string IO exit %+v, %v", io, err)
		}
		t.Logf("exit %d: count %d data %q", exits, io.Count, io.Data)
		got = append(got, io.Data...)
		exits++
	}
	if string(got) != "ABCD" {
		t.Fatalf("guest sent %q, want ABCD", got)
	}
	// KVM's emulator completes rep outs one element per exit (it only
	// batches rep ins, see TestStringIOInGuest), so 1..4 exits are fine.
	t.Logf("rep outsb of 4 bytes: %d exits", exits)
}

// TestStringIOInGuest: cld; mov cx, 4; mov di, 0x2000; mov dx, 0x3f8;
// rep insb; hlt. KVM reads ahead for rep ins within a page
// (emulator pio_in_emulated), so one exit carries Count = 4 and the VMM
// fills Size*Count bytes at data_offset.
func TestStringIOInGuest(t *testing.T) {
	code := []byte{0xfc, 0xb9, 0x04, 0x00, 0xbf, 0x00, 0x20, 0xba, 0xf8, 0x03, 0xf3, 0x6c, 0xf4}
	g := newGuest(t, code)
	io, err := g.expect(t, kvm.ExitIO).IO()
	if err != nil || io.Direction != kvm.IOIn || io.Port != 0x3f8 || io.Size != 1 {
		g.fatal(t, "rep insb exit %+v, %v", io, err)
	}
	if io.Count != 4 || len(io.Data) != 4 || io.DataOffset < kvm.RunSize {
		g.fatal(t, "rep insb: count %d, %d data bytes at %#x; want 4 in one exit", io.Count, len(io.Data), io.DataOffset)
	}
	copy(io.Data, "WXYZ")
	g.expect(t, kvm.ExitHLT)
	if got := string(g.mem[dataGPA : dataGPA+4]); got != "WXYZ" {
		t.Fatalf("guest stored %q, want WXYZ", got)
	}
}

// TestMMIOGuest: mov ax, 0x2000; mov ds, ax; mov dword [0x10], 0xdeadbeef;
// hlt. GPA 0x20010 is outside the only memory slot.
func TestMMIOGuest(t *testing.T) {
	code := []byte{
		0xb8, 0x00, 0x20, // mov ax, 0x2000
		0x8e, 0xd8, // mov ds, ax
		0x66, 0xc7, 0x06, 0x10, 0x00, 0xef, 0xbe, 0xad, 0xde, // mov dword [0x10], 0xdeadbeef
		0x8a, 0x1e, 0x20, 0x00, // mov bl, [0x20]
		0xf4, // hlt
	}
	g := newGuest(t, code)
	m, err := g.expect(t, kvm.ExitMMIO).MMIO()
	if err != nil || m.PhysAddr != 0x20010 || !m.IsWrite || m.Len != 4 || !bytes.Equal(m.Data, []byte{0xef, 0xbe, 0xad, 0xde}) {
		g.fatal(t, "MMIO write exit %+v, %v", m, err)
	}
	m, err = g.expect(t, kvm.ExitMMIO).MMIO()
	if err != nil || m.PhysAddr != 0x20020 || m.IsWrite || m.Len != 1 {
		g.fatal(t, "MMIO read exit %+v, %v", m, err)
	}
	m.Data[0] = 0x99
	g.expect(t, kvm.ExitHLT)
	if regs, _ := g.vcpu.Regs(); regs.RBX&0xff != 0x99 {
		t.Fatalf("MMIO read returned %#x to the guest, want 0x99", regs.RBX&0xff)
	}
}

// TestKick: the guest spins in "jmp $"; a kick from another goroutine must
// get Run out with ErrInterrupted, and the vCPU must be re-enterable.
func TestKick(t *testing.T) {
	// 0x1000: jmp $ ; 0x1002: mov al, 7; out 0x11, al; hlt
	g := newGuest(t, []byte{0xeb, 0xfe, 0xb0, 0x07, 0xe6, 0x11, 0xf4})

	// Not bound yet: Kick reports it, but the next Run still returns at once.
	if err := g.vcpu.Kick(); !errors.Is(err, kvm.ErrNotBound) {
		t.Fatalf("Kick before BindThread = %v, want ErrNotBound", err)
	}
	if err := runOnce(g.vcpu, deadline); !errors.Is(err, kvm.ErrInterrupted) {
		t.Fatalf("Run with immediate_exit set = %v, want ErrInterrupted", err)
	}
	g.vcpu.SetImmediateExit(false)

	for round := range 2 {
		start := time.Now()
		go func() {
			time.Sleep(50 * time.Millisecond)
			if err := g.vcpu.Kick(); err != nil {
				t.Errorf("Kick: %v", err)
			}
		}()
		err := runOnce(g.vcpu, 10*time.Second)
		elapsed := time.Since(start)
		if !errors.Is(err, kvm.ErrInterrupted) || !errors.Is(err, unix.EINTR) {
			g.fatal(t, "round %d: Run = %v, want ErrInterrupted and EINTR", round, err)
		}
		if elapsed > time.Second {
			t.Fatalf("round %d: kick took %v, want < 1s", round, elapsed)
		}
		if !g.vcpu.RunData().ImmediateExit() {
			t.Fatal("immediate_exit not set after a kick")
		}
		regs, err := g.vcpu.Regs()
		if err != nil || regs.RIP != codeGPA {
			g.fatal(t, "spinning guest at rip %#x, want %#x (%v)", regs.RIP, codeGPA, err)
		}
		t.Logf("round %d: kicked out after %v", round, elapsed)
		g.vcpu.SetImmediateExit(false)
	}

	// Re-enter after moving past the loop.
	regs, _ := g.vcpu.Regs()
	regs.RIP = codeGPA + 2
	if err := g.vcpu.SetRegs(regs); err != nil {
		t.Fatal(err)
	}
	io, err := g.expect(t, kvm.ExitIO).IO()
	if err != nil || io.Port != 0x11 || io.Data[0] != 7 {
		g.fatal(t, "after re-entry: %+v, %v", io, err)
	}
	g.expect(t, kvm.ExitHLT)
}

// TestEmulationFailure: popcnt ax, bx (f3 0f b8 c3) cannot be emulated by
// KVM's instruction emulator; on a host that emulates real mode (this
// shadow-paging host, or VMX without unrestricted guest) it exits with
// KVM_INTERNAL_ERROR_EMULATION and the instruction bytes. A host that runs
// real mode natively executes it and halts.
func TestEmulationFailure(t *testing.T) {
	g := newGuest(t, []byte{0xf3, 0x0f, 0xb8, 0xc3, 0xf4})
	g.run(t, deadline)
	r := g.vcpu.RunData()
	switch r.ExitReason() {
	case kvm.ExitHLT:
		t.Log("popcnt executed natively (real mode not emulated on this host)")
	case kvm.ExitInternalError:
		e, err := r.InternalError()
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("internal error: suberror %d ndata %d flags %#x insn % x data %#x", e.Suberror, e.NData, e.Flags, e.InsnBytes, e.Data)
		if e.Suberror != kvm.InternalErrorEmulation {
			t.Fatalf("suberror %d, want emulation failure", e.Suberror)
		}
		if e.Flags&kvm.InternalErrorEmulationFlagInsnBytes != 0 && !bytes.HasPrefix(e.InsnBytes, []byte{0xf3, 0x0f, 0xb8, 0xc3}) {
			t.Fatalf("instruction bytes % x, want f3 0f b8 c3", e.InsnBytes)
		}
	default:
		g.fatal(t, "unexpected exit")
	}
}

func TestGuestDebugSingleStep(t *testing.T) {
	// nop; nop; hlt
	g := newGuest(t, []byte{0x90, 0x90, 0xf4})
	if err := g.vcpu.SetGuestDebug(kvm.GuestDebug{Control: kvm.GuestDbgEnable | kvm.GuestDbgSingleStep}); err != nil {
		t.Fatal(err)
	}
	d := g.expect(t, kvm.ExitDebug).Debug()
	if d.Exception != 1 || d.PC != codeGPA+1 {
		g.fatal(t, "single step: %+v, want #DB at %#x", d, codeGPA+1)
	}
	if err := g.vcpu.SetGuestDebug(kvm.GuestDebug{}); err != nil {
		t.Fatal(err)
	}
	g.expect(t, kvm.ExitHLT)
}

// TestGuestMemfd: RAM is a guest_memfd created with MMAP|INIT_SHARED,
// mmapped MAP_SHARED and registered with KVM_SET_USER_MEMORY_REGION2; the
// guest's store is visible through the host mapping.
func TestGuestMemfd(t *testing.T) {
	_, vm := kvmtest.NewVM(t)
	want := kvm.GuestMemfdFlagMMAP | kvm.GuestMemfdFlagInitShared
	if flags, err := vm.CheckExtension(kvm.CapGuestMemfdFlags); err != nil || uint64(flags)&want != want {
		t.Skipf("KVM_CAP_GUEST_MEMFD_FLAGS = %#x (%v): this kernel (< 6.18) cannot mmap a shared guest_memfd", flags, err)
	}
	if _, err := vm.CreateGuestMemfd(memSize, 1<<40); !errors.Is(err, unix.EINVAL) {
		t.Errorf("CreateGuestMemfd with an unknown flag = %v, want EINVAL", err)
	}
	gfd, err := vm.CreateGuestMemfd(memSize, want)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(gfd)
	mem, err := unix.Mmap(gfd, 0, memSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatalf("mmap guest_memfd: %v", err)
	}
	defer unix.Munmap(mem)
	// mov byte [0x2000], 0x77; hlt
	copy(mem[codeGPA:], []byte{0xc6, 0x06, 0x00, 0x20, 0x77, 0xf4})
	if err := vm.SetTSSAddr(tssAddr); err != nil {
		t.Fatal(err)
	}
	err = vm.SetUserMemoryRegion2(kvm.UserspaceMemoryRegion2{
		Slot: 0, Flags: kvm.MemGuestMemfd, GuestPhysAddr: 0, MemorySize: memSize,
		UserspaceAddr: addrOf(mem), GuestMemfd: uint32(gfd), GuestMemfdOffset: 0,
	})
	if err != nil {
		t.Fatal(err)
	}
	g := &guest{vm: vm, mem: mem}
	g.addVCPU(t)
	g.expect(t, kvm.ExitHLT)
	if mem[dataGPA] != 0x77 {
		t.Fatalf("host mapping sees %#x at %#x, want 0x77", mem[dataGPA], dataGPA)
	}
	// KVM rejects dirty logging on guest_memfd slots (docs/kvm-api.md §4.4).
	err = vm.SetUserMemoryRegion2(kvm.UserspaceMemoryRegion2{
		Slot: 1, Flags: kvm.MemGuestMemfd | kvm.MemLogDirtyPages, GuestPhysAddr: 0x100000, MemorySize: 0x1000,
		UserspaceAddr: addrOf(mem), GuestMemfd: uint32(gfd), GuestMemfdOffset: 0x1000,
	})
	if !errors.Is(err, unix.EINVAL) {
		t.Errorf("dirty-logged guest_memfd slot: %v, want EINVAL", err)
	}
}

// TestSetMemoryAttributesFailsCleanly: without KVM_CAP_MEMORY_ATTRIBUTES
// (every default VM) the ioctl fails with a syscall error, no panic.
func TestSetMemoryAttributesFailsCleanly(t *testing.T) {
	_, vm := kvmtest.NewVM(t)
	attrs, err := vm.CheckExtension(kvm.CapMemoryAttributes)
	if err != nil {
		t.Fatal(err)
	}
	err = vm.SetMemoryAttributes(0, 0x1000, kvm.MemoryAttributePrivate)
	if attrs&int(kvm.MemoryAttributePrivate) != 0 {
		t.Fatalf("default VM reports PRIVATE (%#x); SetMemoryAttributes = %v", attrs, err)
	}
	var serr *os.SyscallError
	if err == nil || !errors.As(err, &serr) || !strings.Contains(err.Error(), "KVM_SET_MEMORY_ATTRIBUTES") {
		t.Fatalf("SetMemoryAttributes = %v, want a syscall error naming the ioctl", err)
	}
	t.Logf("SetMemoryAttributes: %v", err)
}

func TestPreFaultMemory(t *testing.T) {
	g := newGuest(t, []byte{0xf4})
	v, err := g.vm.CheckExtension(kvm.CapPreFaultMemory)
	if err != nil {
		t.Fatal(err)
	}
	err = g.vcpu.PreFaultMemory(0, memSize)
	if v > 0 && err != nil {
		t.Fatalf("PRE_FAULT_MEMORY advertised but failed: %v", err)
	}
	if v == 0 && err == nil {
		t.Fatal("PRE_FAULT_MEMORY succeeded without the capability")
	}
	t.Logf("cap %d: %v", v, err)
}

func TestStateRoundTrip(t *testing.T) {
	g := newGuestVM(t, []byte{0xf4})
	if err := g.vm.CreateIRQChip(); err != nil {
		t.Fatal(err)
	}
	g.addVCPU(t)
	c := g.vcpu

	regs := kvm.Regs{RAX: 1, RBX: 2, RCX: 3, RDX: 4, RSI: 5, RDI: 6, RSP: 7, RBP: 8, R8: 9, R15: 0x1515, RIP: 0x1234, RFLAGS: 0x202}
	if err := c.SetRegs(regs); err != nil {
		t.Fatal(err)
	}
	if got, err := c.Regs(); err != nil || got != regs {
		t.Errorf("Regs = %+v, %v; want %+v", got, err, regs)
	}

	s, err := c.Sregs()
	if err != nil {
		t.Fatal(err)
	}
	s.DS.Base, s.DS.Selector = 0x12340, 0x1234
	s.GDT = kvm.DTable{Base: 0x5000, Limit: 0x27}
	s.IDT = kvm.DTable{Base: 0x6000, Limit: 0xfff}
	s.CR2 = 0xcafe000
	if err := c.SetSregs(s); err != nil {
		t.Fatal(err)
	}
	got, err := c.Sregs()
	if err != nil || got.DS.Base != 0x12340 || got.DS.Selector != 0x1234 || got.GDT != s.GDT || got.IDT != s.IDT || got.CR2 != 0xcafe000 {
		t.Errorf("Sregs round trip: %+v, %v", got, err)
	}

	f, err := c.FPU()
	if err != nil {
		t.Fatal(err)
	}
	f.FCW = 0x27f
	f.FSW = 0x0800 // TOP = 1
	f.FPR[2] = [16]byte{0: 0x11, 9: 0x40}
	f.XMM[3] = [16]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	if err := c.SetFPU(f); err != nil {
		t.Fatal(err)
	}
	// KVM_GET/SET_FPU do not carry MXCSR (KVM copies the other fields
	// only; MXCSR travels with KVM_GET/SET_XSAVE), so it is not compared.
	if got, err := c.FPU(); err != nil || got.FCW != 0x27f || got.FSW != 0x0800 || got.FPR[2] != f.FPR[2] || got.XMM[3] != f.XMM[3] {
		t.Errorf("FPU round trip: fcw %#x fsw %#x st2 % x xmm3 % x (%v)", got.FCW, got.FSW, got.FPR[2], got.XMM[3], err)
	}

	const sysenterCS, sysenterESP = 0x174, 0x175
	if err := c.SetMSRs([]kvm.MSREntry{{Index: sysenterCS, Data: 0x10}, {Index: sysenterESP, Data: 0xffff8000}}); err != nil {
		t.Fatal(err)
	}
	m, err := c.MSRs([]uint32{sysenterCS, sysenterESP})
	if err != nil || len(m) != 2 || m[0].Data != 0x10 || m[1].Data != 0xffff8000 {
		t.Errorf("MSRs = %+v, %v", m, err)
	}
	if _, err := c.MSRs([]uint32{0xdeadbeef}); err == nil || !strings.Contains(err.Error(), "0xdeadbeef") {
		t.Errorf("reading a bogus MSR: %v, want an error naming it", err)
	}

	l, err := c.LAPIC()
	if err != nil {
		t.Fatal(err)
	}
	if v := l.Reg(0x30) & 0xff; v < 0x10 {
		t.Errorf("LAPIC version %#x", v)
	}
	l.SetReg(0x80, 0x20)   // TPR
	l.SetReg(0x350, 0x700) // LVT LINT0: ExtINT
	if err := c.SetLAPIC(l); err != nil {
		t.Fatal(err)
	}
	if got, err := c.LAPIC(); err != nil || got.Reg(0x80) != 0x20 || got.Reg(0x350) != 0x700 {
		t.Errorf("LAPIC TPR %#x LINT0 %#x (%v)", got.Reg(0x80), got.Reg(0x350), err)
	}

	ev, err := c.Events()
	if err != nil {
		t.Fatal(err)
	}
	ev.NMI.Masked = 1
	if err := c.SetEvents(ev); err != nil {
		t.Fatal(err)
	}
	if got, err := c.Events(); err != nil || got.NMI.Masked != 1 {
		t.Errorf("Events NMI.Masked = %d, %v", got.NMI.Masked, err)
	}

	dr := kvm.DebugRegs{DB: [4]uint64{0x1000, 0x2000, 0x3000, 0x4000}, DR6: 0xffff0ff0, DR7: 0x401}
	if err := c.SetDebugRegs(dr); err != nil {
		t.Fatal(err)
	}
	if got, err := c.DebugRegs(); err != nil || got.DB != dr.DB || got.DR7 != 0x401 {
		t.Errorf("DebugRegs = %+v, %v", got, err)
	}

	if st, err := c.MPState(); err != nil || st != kvm.MPStateRunnable {
		t.Errorf("MPState = %d, %v", st, err)
	}
	if err := c.SetMPState(kvm.MPStateHalted); err != nil {
		t.Fatal(err)
	}
	if st, err := c.MPState(); err != nil || st != kvm.MPStateHalted {
		t.Errorf("MPState after set = %d, %v", st, err)
	}
	if err := c.SetMPState(kvm.MPStateRunnable); err != nil {
		t.Fatal(err)
	}

	// Paging is off: linear == physical.
	tr, err := c.Translate(0x1234)
	if err != nil || tr.Valid != 1 || tr.PhysicalAddress != 0x1234 {
		t.Errorf("Translate(0x1234) = %+v, %v", tr, err)
	}

	cpuid, err := g.sys.SupportedCPUID()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SetCPUID2(cpuid); err != nil {
		t.Fatal(err)
	}
	back, err := c.CPUID2()
	if err != nil || len(back) == 0 || len(back) > len(cpuid) || back[0] != cpuid[0] {
		t.Errorf("CPUID2: %d entries (set %d), leaf 0 %+v vs %+v, %v", len(back), len(cpuid), back[0], cpuid[0], err)
	}
	if len(back) != len(cpuid) {
		t.Logf("KVM kept %d of the %d CPUID entries set", len(back), len(cpuid))
	}
	if khz, err := c.TSCKHz(); err != nil || khz <= 0 {
		t.Errorf("TSCKHz = %d, %v", khz, err)
	}
	if err := c.NMI(); err != nil {
		t.Errorf("NMI: %v", err)
	}
}

func TestIRQChipAndEventFDs(t *testing.T) {
	// mov al, 1; out 0x80, al; out 0x81, al; hlt. The first OUT is
	// swallowed by an ioeventfd; the second exits. (With an in-kernel
	// irqchip HLT does not exit: the vCPU waits in KVM for an interrupt.)
	g := newGuestVM(t, []byte{0xb0, 0x01, 0xe6, 0x80, 0xe6, 0x81, 0xf4})
	vm := g.vm
	if err := vm.CreateIRQChip(); err != nil {
		t.Fatal(err)
	}
	if err := vm.CreatePIT2(kvm.PITSpeakerDummy); err != nil {
		t.Fatal(err)
	}
	if err := vm.IRQLine(4, true); err != nil {
		t.Fatal(err)
	}
	if err := vm.IRQLine(4, false); err != nil {
		t.Fatal(err)
	}
	if _, err := vm.IRQLineStatus(3, true); err != nil {
		t.Fatal(err)
	}
	var routes []kvm.IRQRoutingEntry
	for i := uint32(0); i < 16; i++ {
		if i != 2 {
			routes = append(routes, kvm.IRQRoutingIRQChip(i, kvm.IRQChipPICMaster+i/8, i%8))
		}
		routes = append(routes, kvm.IRQRoutingIRQChip(i, kvm.IRQChipIOAPIC, i))
	}
	routes = append(routes, kvm.IRQRoutingMSI(24, 0xfee00000, 0x41))
	if err := vm.SetGSIRouting(routes); err != nil {
		t.Fatal(err)
	}

	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(efd)
	if err := vm.IRQFD(efd, 5, -1, false); err != nil {
		t.Fatal(err)
	}
	if err := vm.IRQFD(efd, 5, -1, true); err != nil {
		t.Fatal(err)
	}
	if err := vm.IRQFD(-1, 5, -1, false); err == nil {
		t.Error("IRQFD(-1) succeeded")
	}

	iofd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(iofd)
	if err := vm.IOEventFD(kvm.IOEventFD{Addr: 0x80, Len: 1, FD: int32(iofd), Flags: kvm.IOEventFDFlagPIO}); err != nil {
		t.Fatal(err)
	}
	clk, err := vm.Clock()
	if err != nil {
		t.Fatal(err)
	}
	if err := vm.SetClock(kvm.ClockData{Clock: clk.Clock + 1_000_000}); err != nil {
		t.Fatal(err)
	}

	g.addVCPU(t)
	// With vCPU 0 (APIC id 0) present, an MSI to it is delivered.
	if err := vm.SignalMSI(0xfee00000, 0x30); err != nil {
		t.Fatal(err)
	}
	if io, err := g.expect(t, kvm.ExitIO).IO(); err != nil || io.Port != 0x81 {
		g.fatal(t, "first exit %+v, %v; want the OUT to 0x81 (0x80 goes to the ioeventfd)", io, err)
	}
	var buf [8]byte
	if n, err := unix.Read(iofd, buf[:]); err != nil || n != 8 || buf[0] != 1 {
		t.Fatalf("ioeventfd counter: n %d %v % x", n, err, buf)
	}
	if err := vm.IOEventFD(kvm.IOEventFD{Addr: 0x80, Len: 1, FD: int32(iofd), Flags: kvm.IOEventFDFlagPIO | kvm.IOEventFDFlagDeassign}); err != nil {
		t.Fatal(err)
	}
}

func TestCloseTwice(t *testing.T) {
	_, vm := kvmtest.NewVM(t)
	c, err := vm.CreateVCPU(0)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := c.Close(); err != nil {
			t.Fatalf("vcpu Close %d: %v", i, err)
		}
	}
	if err := c.Run(); err == nil {
		t.Fatal("Run after Close succeeded")
	}
	if c.RunData().ExitReason() != 0 {
		t.Fatal("RunData after Close reads the unmapped page")
	}
	if err := c.Kick(); !errors.Is(err, kvm.ErrClosed) {
		t.Fatalf("Kick after Close = %v, want ErrClosed", err)
	}
	c.SetImmediateExit(true) // must not touch the unmapped page
	for i := range 2 {
		if err := vm.Close(); err != nil {
			t.Fatalf("vm Close %d: %v", i, err)
		}
	}
	if _, err := vm.CreateVCPU(1); !errors.Is(err, kvm.ErrClosed) {
		t.Fatalf("CreateVCPU on a closed VM = %v", err)
	}
}
