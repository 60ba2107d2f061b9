package kvm

import "fmt"

// request is an ioctl request number. Its String method returns the kernel
// name, which every error message carries.
type request uintptr

// The ioctl request numbers used by this package, x86_64 encoding
// (asm-generic/ioctl.h): _IOC(dir, type, nr, size) = dir<<30 | size<<16 |
// type<<8 | nr with _IOC_WRITE = 1, _IOC_READ = 2 and KVMIO = 0xAE.
// Definitions are from include/uapi/linux/kvm.h; the sizes are those of the
// mirrors in types.go. ioctl_test.go recomputes every value from its
// definition and unsafe.Sizeof of the mirror.
const (
	// System ioctls (/dev/kvm).
	kvmGetAPIVersion        request = 0x0000AE00 // KVM_GET_API_VERSION _IO(KVMIO, 0x00)
	kvmCreateVM             request = 0x0000AE01 // KVM_CREATE_VM _IO(KVMIO, 0x01)
	kvmGetMSRIndexList      request = 0xC004AE02 // KVM_GET_MSR_INDEX_LIST _IOWR(KVMIO, 0x02, struct kvm_msr_list)
	kvmCheckExtension       request = 0x0000AE03 // KVM_CHECK_EXTENSION _IO(KVMIO, 0x03) (also on VM fds)
	kvmGetVCPUMmapSize      request = 0x0000AE04 // KVM_GET_VCPU_MMAP_SIZE _IO(KVMIO, 0x04)
	kvmGetSupportedCPUID    request = 0xC008AE05 // KVM_GET_SUPPORTED_CPUID _IOWR(KVMIO, 0x05, struct kvm_cpuid2)
	kvmGetMSRFeatureIdxList request = 0xC004AE0A // KVM_GET_MSR_FEATURE_INDEX_LIST _IOWR(KVMIO, 0x0a, struct kvm_msr_list)

	// VM ioctls.
	kvmCreateVCPU           request = 0x0000AE41 // KVM_CREATE_VCPU _IO(KVMIO, 0x41)
	kvmSetUserMemoryRegion  request = 0x4020AE46 // KVM_SET_USER_MEMORY_REGION _IOW(KVMIO, 0x46, struct kvm_userspace_memory_region)
	kvmSetTSSAddr           request = 0x0000AE47 // KVM_SET_TSS_ADDR _IO(KVMIO, 0x47)
	kvmSetIdentityMapAddr   request = 0x4008AE48 // KVM_SET_IDENTITY_MAP_ADDR _IOW(KVMIO, 0x48, __u64)
	kvmSetUserMemoryRegion2 request = 0x40A0AE49 // KVM_SET_USER_MEMORY_REGION2 _IOW(KVMIO, 0x49, struct kvm_userspace_memory_region2)
	kvmCreateIRQChip        request = 0x0000AE60 // KVM_CREATE_IRQCHIP _IO(KVMIO, 0x60)
	kvmIRQLine              request = 0x4008AE61 // KVM_IRQ_LINE _IOW(KVMIO, 0x61, struct kvm_irq_level)
	kvmGetIRQChip           request = 0xC208AE62 // KVM_GET_IRQCHIP _IOWR(KVMIO, 0x62, struct kvm_irqchip)
	kvmIRQLineStatus        request = 0xC008AE67 // KVM_IRQ_LINE_STATUS _IOWR(KVMIO, 0x67, struct kvm_irq_level)
	kvmSetGSIRouting        request = 0x4008AE6A // KVM_SET_GSI_ROUTING _IOW(KVMIO, 0x6a, struct kvm_irq_routing)
	kvmIRQFD                request = 0x4020AE76 // KVM_IRQFD _IOW(KVMIO, 0x76, struct kvm_irqfd)
	kvmCreatePIT2           request = 0x4040AE77 // KVM_CREATE_PIT2 _IOW(KVMIO, 0x77, struct kvm_pit_config)
	kvmIOEventFD            request = 0x4040AE79 // KVM_IOEVENTFD _IOW(KVMIO, 0x79, struct kvm_ioeventfd)
	kvmSetClock             request = 0x4030AE7B // KVM_SET_CLOCK _IOW(KVMIO, 0x7b, struct kvm_clock_data)
	kvmGetClock             request = 0x8030AE7C // KVM_GET_CLOCK _IOR(KVMIO, 0x7c, struct kvm_clock_data)
	kvmEnableCap            request = 0x4068AEA3 // KVM_ENABLE_CAP _IOW(KVMIO, 0xa3, struct kvm_enable_cap) (VM and vCPU fds)
	kvmSignalMSI            request = 0x4020AEA5 // KVM_SIGNAL_MSI _IOW(KVMIO, 0xa5, struct kvm_msi)
	kvmSetMemoryAttributes  request = 0x4020AED2 // KVM_SET_MEMORY_ATTRIBUTES _IOW(KVMIO, 0xd2, struct kvm_memory_attributes)
	kvmCreateGuestMemfd     request = 0xC040AED4 // KVM_CREATE_GUEST_MEMFD _IOWR(KVMIO, 0xd4, struct kvm_create_guest_memfd)
	kvmPreFaultMemory       request = 0xC040AED5 // KVM_PRE_FAULT_MEMORY _IOWR(KVMIO, 0xd5, struct kvm_pre_fault_memory) (vCPU fd)

	// vCPU ioctls.
	kvmRun           request = 0x0000AE80 // KVM_RUN _IO(KVMIO, 0x80)
	kvmGetRegs       request = 0x8090AE81 // KVM_GET_REGS _IOR(KVMIO, 0x81, struct kvm_regs)
	kvmSetRegs       request = 0x4090AE82 // KVM_SET_REGS _IOW(KVMIO, 0x82, struct kvm_regs)
	kvmGetSregs      request = 0x8138AE83 // KVM_GET_SREGS _IOR(KVMIO, 0x83, struct kvm_sregs)
	kvmSetSregs      request = 0x4138AE84 // KVM_SET_SREGS _IOW(KVMIO, 0x84, struct kvm_sregs)
	kvmTranslate     request = 0xC018AE85 // KVM_TRANSLATE _IOWR(KVMIO, 0x85, struct kvm_translation)
	kvmInterrupt     request = 0x4004AE86 // KVM_INTERRUPT _IOW(KVMIO, 0x86, struct kvm_interrupt)
	kvmGetMSRs       request = 0xC008AE88 // KVM_GET_MSRS _IOWR(KVMIO, 0x88, struct kvm_msrs)
	kvmSetMSRs       request = 0x4008AE89 // KVM_SET_MSRS _IOW(KVMIO, 0x89, struct kvm_msrs)
	kvmGetFPU        request = 0x81A0AE8C // KVM_GET_FPU _IOR(KVMIO, 0x8c, struct kvm_fpu)
	kvmSetFPU        request = 0x41A0AE8D // KVM_SET_FPU _IOW(KVMIO, 0x8d, struct kvm_fpu)
	kvmGetLAPIC      request = 0x8400AE8E // KVM_GET_LAPIC _IOR(KVMIO, 0x8e, struct kvm_lapic_state)
	kvmSetLAPIC      request = 0x4400AE8F // KVM_SET_LAPIC _IOW(KVMIO, 0x8f, struct kvm_lapic_state)
	kvmSetCPUID2     request = 0x4008AE90 // KVM_SET_CPUID2 _IOW(KVMIO, 0x90, struct kvm_cpuid2)
	kvmGetCPUID2     request = 0xC008AE91 // KVM_GET_CPUID2 _IOWR(KVMIO, 0x91, struct kvm_cpuid2)
	kvmGetMPState    request = 0x8004AE98 // KVM_GET_MP_STATE _IOR(KVMIO, 0x98, struct kvm_mp_state)
	kvmSetMPState    request = 0x4004AE99 // KVM_SET_MP_STATE _IOW(KVMIO, 0x99, struct kvm_mp_state)
	kvmNMI           request = 0x0000AE9A // KVM_NMI _IO(KVMIO, 0x9a)
	kvmSetGuestDebug request = 0x4048AE9B // KVM_SET_GUEST_DEBUG _IOW(KVMIO, 0x9b, struct kvm_guest_debug)
	kvmGetVCPUEvents request = 0x8040AE9F // KVM_GET_VCPU_EVENTS _IOR(KVMIO, 0x9f, struct kvm_vcpu_events)
	kvmSetVCPUEvents request = 0x4040AEA0 // KVM_SET_VCPU_EVENTS _IOW(KVMIO, 0xa0, struct kvm_vcpu_events)
	kvmGetDebugRegs  request = 0x8080AEA1 // KVM_GET_DEBUGREGS _IOR(KVMIO, 0xa1, struct kvm_debugregs)
	kvmSetDebugRegs  request = 0x4080AEA2 // KVM_SET_DEBUGREGS _IOW(KVMIO, 0xa2, struct kvm_debugregs)
	kvmGetTSCKHz     request = 0x0000AEA3 // KVM_GET_TSC_KHZ _IO(KVMIO, 0xa3)
	kvmGetXSave      request = 0x9000AEA4 // KVM_GET_XSAVE _IOR(KVMIO, 0xa4, struct kvm_xsave)
	kvmSetXSave      request = 0x5000AEA5 // KVM_SET_XSAVE _IOW(KVMIO, 0xa5, struct kvm_xsave)
)

// String returns the kernel name of the request.
func (r request) String() string {
	switch r {
	case kvmGetAPIVersion:
		return "KVM_GET_API_VERSION"
	case kvmCreateVM:
		return "KVM_CREATE_VM"
	case kvmGetMSRIndexList:
		return "KVM_GET_MSR_INDEX_LIST"
	case kvmCheckExtension:
		return "KVM_CHECK_EXTENSION"
	case kvmGetVCPUMmapSize:
		return "KVM_GET_VCPU_MMAP_SIZE"
	case kvmGetSupportedCPUID:
		return "KVM_GET_SUPPORTED_CPUID"
	case kvmGetMSRFeatureIdxList:
		return "KVM_GET_MSR_FEATURE_INDEX_LIST"
	case kvmCreateVCPU:
		return "KVM_CREATE_VCPU"
	case kvmSetUserMemoryRegion:
		return "KVM_SET_USER_MEMORY_REGION"
	case kvmSetTSSAddr:
		return "KVM_SET_TSS_ADDR"
	case kvmSetIdentityMapAddr:
		return "KVM_SET_IDENTITY_MAP_ADDR"
	case kvmSetUserMemoryRegion2:
		return "KVM_SET_USER_MEMORY_REGION2"
	case kvmCreateIRQChip:
		return "KVM_CREATE_IRQCHIP"
	case kvmIRQLine:
		return "KVM_IRQ_LINE"
	case kvmGetIRQChip:
		return "KVM_GET_IRQCHIP"
	case kvmIRQLineStatus:
		return "KVM_IRQ_LINE_STATUS"
	case kvmSetGSIRouting:
		return "KVM_SET_GSI_ROUTING"
	case kvmIRQFD:
		return "KVM_IRQFD"
	case kvmCreatePIT2:
		return "KVM_CREATE_PIT2"
	case kvmIOEventFD:
		return "KVM_IOEVENTFD"
	case kvmSetClock:
		return "KVM_SET_CLOCK"
	case kvmGetClock:
		return "KVM_GET_CLOCK"
	case kvmEnableCap:
		return "KVM_ENABLE_CAP"
	case kvmSignalMSI:
		return "KVM_SIGNAL_MSI"
	case kvmSetMemoryAttributes:
		return "KVM_SET_MEMORY_ATTRIBUTES"
	case kvmCreateGuestMemfd:
		return "KVM_CREATE_GUEST_MEMFD"
	case kvmPreFaultMemory:
		return "KVM_PRE_FAULT_MEMORY"
	case kvmRun:
		return "KVM_RUN"
	case kvmGetRegs:
		return "KVM_GET_REGS"
	case kvmSetRegs:
		return "KVM_SET_REGS"
	case kvmGetSregs:
		return "KVM_GET_SREGS"
	case kvmSetSregs:
		return "KVM_SET_SREGS"
	case kvmTranslate:
		return "KVM_TRANSLATE"
	case kvmInterrupt:
		return "KVM_INTERRUPT"
	case kvmGetMSRs:
		return "KVM_GET_MSRS"
	case kvmSetMSRs:
		return "KVM_SET_MSRS"
	case kvmGetFPU:
		return "KVM_GET_FPU"
	case kvmSetFPU:
		return "KVM_SET_FPU"
	case kvmGetLAPIC:
		return "KVM_GET_LAPIC"
	case kvmSetLAPIC:
		return "KVM_SET_LAPIC"
	case kvmSetCPUID2:
		return "KVM_SET_CPUID2"
	case kvmGetCPUID2:
		return "KVM_GET_CPUID2"
	case kvmGetMPState:
		return "KVM_GET_MP_STATE"
	case kvmSetMPState:
		return "KVM_SET_MP_STATE"
	case kvmNMI:
		return "KVM_NMI"
	case kvmSetGuestDebug:
		return "KVM_SET_GUEST_DEBUG"
	case kvmGetVCPUEvents:
		return "KVM_GET_VCPU_EVENTS"
	case kvmSetVCPUEvents:
		return "KVM_SET_VCPU_EVENTS"
	case kvmGetDebugRegs:
		return "KVM_GET_DEBUGREGS"
	case kvmSetDebugRegs:
		return "KVM_SET_DEBUGREGS"
	case kvmGetTSCKHz:
		return "KVM_GET_TSC_KHZ"
	case kvmGetXSave:
		return "KVM_GET_XSAVE"
	case kvmSetXSave:
		return "KVM_SET_XSAVE"
	}
	return fmt.Sprintf("KVM_ioctl_%#x", uintptr(r))
}
