package kvm

import (
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// VM is a KVM virtual machine (the fd returned by KVM_CREATE_VM). Its
// methods are safe for concurrent use; Close must not race with them.
type VM struct {
	typ      VMType
	mmapSize int // KVM_GET_VCPU_MMAP_SIZE, read when the VM was created

	mu sync.RWMutex
	fd int // -1 once closed
}

// Type returns the VM type the VM was created with.
func (vm *VM) Type() VMType { return vm.typ }

// FD returns the VM file descriptor (-1 after Close). It stays owned by
// the VM.
func (vm *VM) FD() int {
	vm.mu.RLock()
	defer vm.mu.RUnlock()
	return vm.fd
}

// Close closes the VM fd. vCPUs and guest_memfd files keep the kernel VM
// alive until they are closed too. Closing twice is safe.
func (vm *VM) Close() error {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	if vm.fd < 0 {
		return nil
	}
	err := unix.Close(vm.fd)
	vm.fd = -1
	if err != nil {
		return fmt.Errorf("kvm: close vm: %w", err)
	}
	return nil
}

func (vm *VM) do(f func(fd int) error) error {
	vm.mu.RLock()
	defer vm.mu.RUnlock()
	if vm.fd < 0 {
		return ErrClosed
	}
	return f(vm.fd)
}

// CheckExtension returns KVM_CHECK_EXTENSION(c) on the VM fd
// (KVM_CAP_CHECK_EXTENSION_VM), which answers for this VM's type.
func (vm *VM) CheckExtension(c Cap) (int, error) {
	var v int
	err := vm.do(func(fd int) (err error) {
		v, err = ioctl(fd, kvmCheckExtension, uintptr(c))
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("kvm: vm check extension %v: %w", c, err)
	}
	return v, nil
}

// SetUserMemoryRegion creates, moves or deletes (MemorySize 0) a memory
// slot (KVM_SET_USER_MEMORY_REGION, api.rst 4.35).
func (vm *VM) SetUserMemoryRegion(r UserspaceMemoryRegion) error {
	err := vm.do(func(fd int) error {
		_, err := ioctlPtr(fd, kvmSetUserMemoryRegion, &r)
		return err
	})
	if err != nil {
		return fmt.Errorf("kvm: set memory slot %d (gpa %#x size %#x flags %#x): %w",
			r.Slot, r.GuestPhysAddr, r.MemorySize, r.Flags, err)
	}
	return nil
}

// SetUserMemoryRegion2 is SetUserMemoryRegion with guest_memfd support
// (KVM_SET_USER_MEMORY_REGION2, api.rst 4.140; needs CapUserMemory2).
func (vm *VM) SetUserMemoryRegion2(r UserspaceMemoryRegion2) error {
	err := vm.do(func(fd int) error {
		_, err := ioctlPtr(fd, kvmSetUserMemoryRegion2, &r)
		return err
	})
	if err != nil {
		return fmt.Errorf("kvm: set memory slot %d (gpa %#x size %#x flags %#x guest_memfd %d+%#x): %w",
			r.Slot, r.GuestPhysAddr, r.MemorySize, r.Flags, int32(r.GuestMemfd), r.GuestMemfdOffset, err)
	}
	return nil
}

// CreateGuestMemfd creates a guest_memfd file of size bytes bound to this
// VM (KVM_CREATE_GUEST_MEMFD, api.rst 4.142). flags is a mask of
// GuestMemfdFlag*; the valid ones are VM.CheckExtension(CapGuestMemfdFlags).
// The caller owns the returned fd.
func (vm *VM) CreateGuestMemfd(size, flags uint64) (int, error) {
	arg := createGuestMemfd{Size: size, Flags: flags}
	var gfd int
	err := vm.do(func(fd int) (err error) {
		gfd, err = ioctlPtr(fd, kvmCreateGuestMemfd, &arg)
		return err
	})
	if err != nil {
		return -1, fmt.Errorf("kvm: create guest_memfd (size %#x flags %#x): %w", size, flags, err)
	}
	return gfd, nil
}

// EnableCap enables a VM capability with up to four arguments
// (KVM_ENABLE_CAP on the VM fd, api.rst 4.37 and §7), e.g.
// EnableCap(CapExitHypercall, 1<<HCMapGPARange).
func (vm *VM) EnableCap(c Cap, args ...uint64) error {
	var arg enableCap
	if len(args) > len(arg.Args) {
		return fmt.Errorf("kvm: enable cap %v: %d arguments, at most %d", c, len(args), len(arg.Args))
	}
	arg.Cap = uint32(c)
	copy(arg.Args[:], args)
	err := vm.do(func(fd int) error {
		_, err := ioctlPtr(fd, kvmEnableCap, &arg)
		return err
	})
	if err != nil {
		return fmt.Errorf("kvm: enable cap %v %#x: %w", c, args, err)
	}
	return nil
}

// SetMemoryAttributes sets the attributes (MemoryAttributePrivate or 0) of
// the guest-physical range [gpa, gpa+size) (KVM_SET_MEMORY_ATTRIBUTES,
// api.rst 4.141). It needs CapMemoryAttributes, which only VM types with
// private memory report; elsewhere the ioctl fails (ENOTTY/EINVAL).
func (vm *VM) SetMemoryAttributes(gpa, size, attrs uint64) error {
	arg := memoryAttributes{Address: gpa, Size: size, Attributes: attrs}
	err := vm.do(func(fd int) error {
		_, err := ioctlPtr(fd, kvmSetMemoryAttributes, &arg)
		return err
	})
	if err != nil {
		return fmt.Errorf("kvm: set memory attributes gpa %#x size %#x attrs %#x: %w", gpa, size, attrs, err)
	}
	return nil
}

// SetTSSAddr sets the guest-physical address of the three-page region KVM
// uses for the real-mode TSS on Intel without unrestricted guest
// (KVM_SET_TSS_ADDR, api.rst 4.44). It must not overlap RAM or MMIO.
func (vm *VM) SetTSSAddr(addr uint64) error {
	err := vm.do(func(fd int) error {
		_, err := ioctl(fd, kvmSetTSSAddr, uintptr(addr))
		return err
	})
	if err != nil {
		return fmt.Errorf("kvm: set tss addr %#x: %w", addr, err)
	}
	return nil
}

// SetIdentityMapAddr sets the guest-physical address of the one-page EPT
// identity map used for real mode on Intel (KVM_SET_IDENTITY_MAP_ADDR,
// api.rst 4.63). Call before creating vCPUs.
func (vm *VM) SetIdentityMapAddr(addr uint64) error {
	err := vm.do(func(fd int) error {
		_, err := ioctlPtr(fd, kvmSetIdentityMapAddr, &addr)
		return err
	})
	if err != nil {
		return fmt.Errorf("kvm: set identity map addr %#x: %w", addr, err)
	}
	return nil
}

// CreateIRQChip creates the in-kernel PIC, IOAPIC and local APICs
// (KVM_CREATE_IRQCHIP, api.rst 4.24). Call before creating vCPUs.
func (vm *VM) CreateIRQChip() error {
	err := vm.do(func(fd int) error {
		_, err := ioctl(fd, kvmCreateIRQChip, 0)
		return err
	})
	if err != nil {
		return fmt.Errorf("kvm: create irqchip: %w", err)
	}
	return nil
}

// CreatePIT2 creates the in-kernel i8254 PIT (KVM_CREATE_PIT2, api.rst
// 4.56); flags may be PITSpeakerDummy. Needs the in-kernel irqchip.
func (vm *VM) CreatePIT2(flags uint32) error {
	arg := pitConfig{Flags: flags}
	err := vm.do(func(fd int) error {
		_, err := ioctlPtr(fd, kvmCreatePIT2, &arg)
		return err
	})
	if err != nil {
		return fmt.Errorf("kvm: create pit2: %w", err)
	}
	return nil
}

func boolU32(b bool) uint32 {
	if b {
		return 1
	}
	return 0
}

// IRQLine sets the level of GSI irq on the in-kernel irqchip
// (KVM_IRQ_LINE, api.rst 4.25). Edge-triggered lines need high then low.
func (vm *VM) IRQLine(irq uint32, level bool) error {
	arg := irqLevel{IRQ: irq, Level: boolU32(level)}
	err := vm.do(func(fd int) error {
		_, err := ioctlPtr(fd, kvmIRQLine, &arg)
		return err
	})
	if err != nil {
		return fmt.Errorf("kvm: irq line %d=%v: %w", irq, level, err)
	}
	return nil
}

// IOAPICState mirrors struct kvm_ioapic_state (arch/x86/include/uapi/asm/kvm.h).
type IOAPICState struct {
	BaseAddress uint64
	IORegSel    uint32
	ID          uint32
	IRR         uint32 // pins with a pending request (bit n: pin n)
	Pad         uint32
	RedirTbl    [24]uint64
}

// IOAPIC reads the in-kernel IOAPIC's state (KVM_GET_IRQCHIP with
// KVM_IRQCHIP_IOAPIC, api.rst 4.26).
func (vm *VM) IOAPIC() (IOAPICState, error) {
	var st IOAPICState
	buf := make([]byte, irqChipSize)
	le.PutUint32(buf[0:], IRQChipIOAPIC)
	err := vm.do(func(fd int) error {
		_, err := ioctlBuf(fd, kvmGetIRQChip, buf)
		return err
	})
	if err != nil {
		return st, fmt.Errorf("kvm: get irqchip (ioapic): %w", err)
	}
	if _, err := decodeLE(buf[8:], &st); err != nil {
		return st, fmt.Errorf("kvm: get irqchip (ioapic): decode: %w", err)
	}
	return st, nil
}

// IRQLineStatus is IRQLine returning the delivery status
// (KVM_IRQ_LINE_STATUS): > 0 delivered to that many targets, 0 coalesced
// (already pending), < 0 masked / not delivered.
func (vm *VM) IRQLineStatus(irq uint32, level bool) (int32, error) {
	arg := irqLevel{IRQ: irq, Level: boolU32(level)}
	err := vm.do(func(fd int) error {
		_, err := ioctlPtr(fd, kvmIRQLineStatus, &arg)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("kvm: irq line status %d=%v: %w", irq, level, err)
	}
	return int32(arg.IRQ), nil
}

// maxGSIRoutes bounds SetGSIRouting (KVM_MAX_IRQ_ROUTES is 4096).
const maxGSIRoutes = 4096

// SetGSIRouting replaces the whole GSI routing table (KVM_SET_GSI_ROUTING,
// api.rst 4.52). Build entries with IRQRoutingIRQChip and IRQRoutingMSI.
func (vm *VM) SetGSIRouting(entries []IRQRoutingEntry) error {
	if len(entries) > maxGSIRoutes {
		return fmt.Errorf("kvm: set gsi routing: %d entries, at most %d", len(entries), maxGSIRoutes)
	}
	buf := make([]byte, irqRoutingHeaderSize+len(entries)*irqRoutingEntrySize)
	le.PutUint32(buf[0:], uint32(len(entries)))
	if _, err := encodeLE(buf[irqRoutingHeaderSize:], entries); err != nil {
		return fmt.Errorf("kvm: set gsi routing: encode: %w", err)
	}
	err := vm.do(func(fd int) error {
		_, err := ioctlBuf(fd, kvmSetGSIRouting, buf)
		return err
	})
	if err != nil {
		return fmt.Errorf("kvm: set gsi routing (%d entries): %w", len(entries), err)
	}
	return nil
}

// IRQFD binds (or, with deassign, unbinds) eventfd fd to GSI gsi
// (KVM_IRQFD, api.rst 4.75): a write to the eventfd raises the interrupt
// without a userspace round trip. resampleFD >= 0 makes the line
// level-triggered with that resample eventfd; pass -1 for none.
func (vm *VM) IRQFD(fd int, gsi uint32, resampleFD int, deassign bool) error {
	if fd < 0 {
		return fmt.Errorf("kvm: irqfd gsi %d: invalid eventfd %d", gsi, fd)
	}
	arg := irqfd{FD: uint32(fd), GSI: gsi}
	if deassign {
		arg.Flags |= irqfdFlagDeassign
	} else if resampleFD >= 0 {
		arg.Flags |= irqfdFlagResample
		arg.ResampleFD = uint32(resampleFD)
	}
	err := vm.do(func(vmfd int) error {
		_, err := ioctlPtr(vmfd, kvmIRQFD, &arg)
		return err
	})
	if err != nil {
		return fmt.Errorf("kvm: irqfd fd %d gsi %d (flags %#x): %w", fd, gsi, arg.Flags, err)
	}
	return nil
}

// IOEventFD registers (or with IOEventFDFlagDeassign removes) an ioeventfd
// (KVM_IOEVENTFD, api.rst 4.59): guest writes of e.Len bytes to e.Addr
// (a port with IOEventFDFlagPIO) signal e.FD instead of exiting.
func (vm *VM) IOEventFD(e IOEventFD) error {
	err := vm.do(func(fd int) error {
		_, err := ioctlPtr(fd, kvmIOEventFD, &e)
		return err
	})
	if err != nil {
		return fmt.Errorf("kvm: ioeventfd addr %#x len %d flags %#x: %w", e.Addr, e.Len, e.Flags, err)
	}
	return nil
}

// SignalMSI injects the MSI (addr, data) (KVM_SIGNAL_MSI, api.rst 4.70).
// A blocked (masked) delivery is not an error. When no local APIC matches
// the destination, x86 KVM returns -1, which surfaces as EPERM.
func (vm *VM) SignalMSI(addr uint64, data uint32) error {
	arg := msi{AddressLo: uint32(addr), AddressHi: uint32(addr >> 32), Data: data}
	err := vm.do(func(fd int) error {
		_, err := ioctlPtr(fd, kvmSignalMSI, &arg)
		return err
	})
	if err != nil {
		return fmt.Errorf("kvm: signal msi addr %#x data %#x: %w", addr, data, err)
	}
	return nil
}

// Clock returns the VM's kvmclock (KVM_GET_CLOCK, api.rst 4.57).
func (vm *VM) Clock() (ClockData, error) {
	var c ClockData
	err := vm.do(func(fd int) error {
		_, err := ioctlPtr(fd, kvmGetClock, &c)
		return err
	})
	if err != nil {
		return ClockData{}, fmt.Errorf("kvm: get clock: %w", err)
	}
	return c, nil
}

// SetClock sets the VM's kvmclock (KVM_SET_CLOCK, api.rst 4.58).
func (vm *VM) SetClock(c ClockData) error {
	err := vm.do(func(fd int) error {
		_, err := ioctlPtr(fd, kvmSetClock, &c)
		return err
	})
	if err != nil {
		return fmt.Errorf("kvm: set clock: %w", err)
	}
	return nil
}

// CreateVCPU creates vCPU id (KVM_CREATE_VCPU, api.rst 4.7) and maps its
// kvm_run area (KVM_GET_VCPU_MMAP_SIZE bytes).
func (vm *VM) CreateVCPU(id int) (*VCPU, error) {
	if id < 0 {
		return nil, fmt.Errorf("kvm: create vcpu %d: negative id", id)
	}
	if vm.mmapSize < RunSize {
		return nil, fmt.Errorf("kvm: create vcpu %d: vcpu mmap size %d is smaller than struct kvm_run (%d)", id, vm.mmapSize, RunSize)
	}
	var c *VCPU
	err := vm.do(func(fd int) error {
		cfd, err := ioctl(fd, kvmCreateVCPU, uintptr(id))
		if err != nil {
			return err
		}
		m, err := unix.Mmap(cfd, 0, vm.mmapSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if err != nil {
			unix.Close(cfd)
			return fmt.Errorf("mmap kvm_run (%d bytes): %w", vm.mmapSize, os.NewSyscallError("mmap", err))
		}
		c = newVCPU(id, cfd, m, unix.Getpid())
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("kvm: create vcpu %d: %w", id, err)
	}
	return c, nil
}
