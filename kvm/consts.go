package kvm

import "fmt"

// APIVersion is the only KVM API version there has ever been in mainline
// (KVM_API_VERSION, include/uapi/linux/kvm.h); Open refuses anything else.
const APIVersion = 12

// DefaultPath is the KVM device node.
const DefaultPath = "/dev/kvm"

// ExitReason is kvm_run.exit_reason (KVM_EXIT_*, include/uapi/linux/kvm.h).
type ExitReason uint32

// Exit reasons. 0-37 are in the 6.1 uapi header; 38-41 from later mainline
// headers (MEMORY_FAULT arrived in 6.8, TDX in 6.16, ARM_SEA after 6.18).
const (
	ExitUnknown        ExitReason = 0  // KVM_EXIT_UNKNOWN
	ExitException      ExitReason = 1  // KVM_EXIT_EXCEPTION
	ExitIO             ExitReason = 2  // KVM_EXIT_IO
	ExitHypercall      ExitReason = 3  // KVM_EXIT_HYPERCALL
	ExitDebug          ExitReason = 4  // KVM_EXIT_DEBUG
	ExitHLT            ExitReason = 5  // KVM_EXIT_HLT
	ExitMMIO           ExitReason = 6  // KVM_EXIT_MMIO
	ExitIRQWindowOpen  ExitReason = 7  // KVM_EXIT_IRQ_WINDOW_OPEN
	ExitShutdown       ExitReason = 8  // KVM_EXIT_SHUTDOWN
	ExitFailEntry      ExitReason = 9  // KVM_EXIT_FAIL_ENTRY
	ExitIntr           ExitReason = 10 // KVM_EXIT_INTR
	ExitSetTPR         ExitReason = 11 // KVM_EXIT_SET_TPR
	ExitTPRAccess      ExitReason = 12 // KVM_EXIT_TPR_ACCESS
	ExitS390SIEIC      ExitReason = 13 // KVM_EXIT_S390_SIEIC
	ExitS390Reset      ExitReason = 14 // KVM_EXIT_S390_RESET
	ExitDCR            ExitReason = 15 // KVM_EXIT_DCR (deprecated)
	ExitNMI            ExitReason = 16 // KVM_EXIT_NMI
	ExitInternalError  ExitReason = 17 // KVM_EXIT_INTERNAL_ERROR
	ExitOSI            ExitReason = 18 // KVM_EXIT_OSI
	ExitPAPRHcall      ExitReason = 19 // KVM_EXIT_PAPR_HCALL
	ExitS390UControl   ExitReason = 20 // KVM_EXIT_S390_UCONTROL
	ExitWatchdog       ExitReason = 21 // KVM_EXIT_WATCHDOG
	ExitS390TSCH       ExitReason = 22 // KVM_EXIT_S390_TSCH
	ExitEPR            ExitReason = 23 // KVM_EXIT_EPR
	ExitSystemEvent    ExitReason = 24 // KVM_EXIT_SYSTEM_EVENT
	ExitS390STSI       ExitReason = 25 // KVM_EXIT_S390_STSI
	ExitIOAPICEOI      ExitReason = 26 // KVM_EXIT_IOAPIC_EOI
	ExitHyperV         ExitReason = 27 // KVM_EXIT_HYPERV
	ExitARMNISV        ExitReason = 28 // KVM_EXIT_ARM_NISV
	ExitX86RDMSR       ExitReason = 29 // KVM_EXIT_X86_RDMSR
	ExitX86WRMSR       ExitReason = 30 // KVM_EXIT_X86_WRMSR
	ExitDirtyRingFull  ExitReason = 31 // KVM_EXIT_DIRTY_RING_FULL
	ExitAPResetHold    ExitReason = 32 // KVM_EXIT_AP_RESET_HOLD
	ExitX86BusLock     ExitReason = 33 // KVM_EXIT_X86_BUS_LOCK
	ExitXen            ExitReason = 34 // KVM_EXIT_XEN
	ExitRISCVSBI       ExitReason = 35 // KVM_EXIT_RISCV_SBI
	ExitRISCVCSR       ExitReason = 36 // KVM_EXIT_RISCV_CSR
	ExitNotify         ExitReason = 37 // KVM_EXIT_NOTIFY
	ExitLoongArchIOCSR ExitReason = 38 // KVM_EXIT_LOONGARCH_IOCSR
	ExitMemoryFault    ExitReason = 39 // KVM_EXIT_MEMORY_FAULT
	ExitTDX            ExitReason = 40 // KVM_EXIT_TDX
	ExitARMSEA         ExitReason = 41 // KVM_EXIT_ARM_SEA
)

var exitNames = [...]string{
	ExitUnknown:        "KVM_EXIT_UNKNOWN",
	ExitException:      "KVM_EXIT_EXCEPTION",
	ExitIO:             "KVM_EXIT_IO",
	ExitHypercall:      "KVM_EXIT_HYPERCALL",
	ExitDebug:          "KVM_EXIT_DEBUG",
	ExitHLT:            "KVM_EXIT_HLT",
	ExitMMIO:           "KVM_EXIT_MMIO",
	ExitIRQWindowOpen:  "KVM_EXIT_IRQ_WINDOW_OPEN",
	ExitShutdown:       "KVM_EXIT_SHUTDOWN",
	ExitFailEntry:      "KVM_EXIT_FAIL_ENTRY",
	ExitIntr:           "KVM_EXIT_INTR",
	ExitSetTPR:         "KVM_EXIT_SET_TPR",
	ExitTPRAccess:      "KVM_EXIT_TPR_ACCESS",
	ExitS390SIEIC:      "KVM_EXIT_S390_SIEIC",
	ExitS390Reset:      "KVM_EXIT_S390_RESET",
	ExitDCR:            "KVM_EXIT_DCR",
	ExitNMI:            "KVM_EXIT_NMI",
	ExitInternalError:  "KVM_EXIT_INTERNAL_ERROR",
	ExitOSI:            "KVM_EXIT_OSI",
	ExitPAPRHcall:      "KVM_EXIT_PAPR_HCALL",
	ExitS390UControl:   "KVM_EXIT_S390_UCONTROL",
	ExitWatchdog:       "KVM_EXIT_WATCHDOG",
	ExitS390TSCH:       "KVM_EXIT_S390_TSCH",
	ExitEPR:            "KVM_EXIT_EPR",
	ExitSystemEvent:    "KVM_EXIT_SYSTEM_EVENT",
	ExitS390STSI:       "KVM_EXIT_S390_STSI",
	ExitIOAPICEOI:      "KVM_EXIT_IOAPIC_EOI",
	ExitHyperV:         "KVM_EXIT_HYPERV",
	ExitARMNISV:        "KVM_EXIT_ARM_NISV",
	ExitX86RDMSR:       "KVM_EXIT_X86_RDMSR",
	ExitX86WRMSR:       "KVM_EXIT_X86_WRMSR",
	ExitDirtyRingFull:  "KVM_EXIT_DIRTY_RING_FULL",
	ExitAPResetHold:    "KVM_EXIT_AP_RESET_HOLD",
	ExitX86BusLock:     "KVM_EXIT_X86_BUS_LOCK",
	ExitXen:            "KVM_EXIT_XEN",
	ExitRISCVSBI:       "KVM_EXIT_RISCV_SBI",
	ExitRISCVCSR:       "KVM_EXIT_RISCV_CSR",
	ExitNotify:         "KVM_EXIT_NOTIFY",
	ExitLoongArchIOCSR: "KVM_EXIT_LOONGARCH_IOCSR",
	ExitMemoryFault:    "KVM_EXIT_MEMORY_FAULT",
	ExitTDX:            "KVM_EXIT_TDX",
	ExitARMSEA:         "KVM_EXIT_ARM_SEA",
}

// String returns the kernel name (KVM_EXIT_...), or ExitReason(n).
func (e ExitReason) String() string {
	if int(e) < len(exitNames) {
		return exitNames[e]
	}
	return fmt.Sprintf("ExitReason(%d)", uint32(e))
}

// VMType is the KVM_CREATE_VM argument on x86 (KVM_X86_*_VM); the bitmap
// of supported types is KVM_CHECK_EXTENSION(CapVMTypes).
type VMType uint64

// VM types (arch/x86/include/uapi/asm/kvm.h; docs/kvm-api.md §6).
const (
	VMTypeDefault     VMType = 0 // KVM_X86_DEFAULT_VM
	VMTypeSWProtected VMType = 1 // KVM_X86_SW_PROTECTED_VM (needs the TDP MMU)
	VMTypeSEV         VMType = 2 // KVM_X86_SEV_VM
	VMTypeSEVES       VMType = 3 // KVM_X86_SEV_ES_VM
	VMTypeSNP         VMType = 4 // KVM_X86_SNP_VM
	VMTypeTDX         VMType = 5 // KVM_X86_TDX_VM
)

// String returns the kernel name (KVM_X86_..._VM), or VMType(n).
func (t VMType) String() string {
	switch t {
	case VMTypeDefault:
		return "KVM_X86_DEFAULT_VM"
	case VMTypeSWProtected:
		return "KVM_X86_SW_PROTECTED_VM"
	case VMTypeSEV:
		return "KVM_X86_SEV_VM"
	case VMTypeSEVES:
		return "KVM_X86_SEV_ES_VM"
	case VMTypeSNP:
		return "KVM_X86_SNP_VM"
	case VMTypeTDX:
		return "KVM_X86_TDX_VM"
	}
	return fmt.Sprintf("VMType(%d)", uint64(t))
}

// Memory slot flags (kvm_userspace_memory_region(2).flags, api.rst 4.35).
const (
	MemLogDirtyPages uint32 = 1 << 0 // KVM_MEM_LOG_DIRTY_PAGES
	MemReadonly      uint32 = 1 << 1 // KVM_MEM_READONLY
	MemGuestMemfd    uint32 = 1 << 2 // KVM_MEM_GUEST_MEMFD (REGION2 only)
)

// guest_memfd creation flags (kvm_create_guest_memfd.flags, api.rst 4.142).
const (
	GuestMemfdFlagMMAP       uint64 = 1 << 0 // GUEST_MEMFD_FLAG_MMAP: host mmap(MAP_SHARED) allowed
	GuestMemfdFlagInitShared uint64 = 1 << 1 // GUEST_MEMFD_FLAG_INIT_SHARED: all memory starts shared
)

// Memory attributes and memory-fault exit flags.
const (
	MemoryAttributePrivate uint64 = 1 << 3 // KVM_MEMORY_ATTRIBUTE_PRIVATE
	MemoryExitFlagPrivate  uint64 = 1 << 3 // KVM_MEMORY_EXIT_FLAG_PRIVATE (kvm_run.memory_fault.flags)
)

// Hypercall exit flags (kvm_run.hypercall.flags, arch/x86/include/uapi/asm/kvm.h).
const HypercallExitLongMode uint64 = 1 << 0 // KVM_EXIT_HYPERCALL_LONG_MODE

// KVM hypercall numbers and the KVM_HC_MAP_GPA_RANGE ABI
// (include/uapi/linux/kvm_para.h, arch/x86/include/uapi/asm/kvm_para.h,
// Documentation/virt/kvm/x86/hypercalls.rst §8).
const (
	HCMapGPARange uint64 = 12 // KVM_HC_MAP_GPA_RANGE: rbx=gpa, rcx=npages, rdx=attrs

	MapGPARangePageSz4K    uint64 = 0      // KVM_MAP_GPA_RANGE_PAGE_SZ_4K
	MapGPARangePageSz2M    uint64 = 1 << 0 // KVM_MAP_GPA_RANGE_PAGE_SZ_2M
	MapGPARangePageSz1G    uint64 = 1 << 1 // KVM_MAP_GPA_RANGE_PAGE_SZ_1G
	MapGPARangeEncrypted   uint64 = 1 << 4 // KVM_MAP_GPA_RANGE_ENCRYPTED (to private)
	MapGPARangeDecrypted   uint64 = 0      // KVM_MAP_GPA_RANGE_DECRYPTED (to shared)
	MapGPARangePageSzMask  uint64 = 0xf    // bits 3:0 are the page-size hint
	MapGPARangeReservedMsk uint64 = ^uint64(0x1f)

	// FeatureHCMapGPARange is the CPUID 0x40000001.EAX bit number
	// (KVM_FEATURE_HC_MAP_GPA_RANGE) advertising the hypercall.
	FeatureHCMapGPARange = 16
)

// KVM hypercall error codes, returned to the guest in RAX as negative
// numbers (include/uapi/linux/kvm_para.h). Write -code as uint64 into
// kvm_run.hypercall.ret.
const (
	KVMEPERM      = 1    // KVM_EPERM
	KVME2BIG      = 7    // KVM_E2BIG
	KVMEFAULT     = 14   // KVM_EFAULT
	KVMEINVAL     = 22   // KVM_EINVAL
	KVMEOPNOTSUPP = 95   // KVM_EOPNOTSUPP
	KVMENOSYS     = 1000 // KVM_ENOSYS
)

// Guest debug control flags (kvm_guest_debug.control, api.rst 4.59).
const (
	GuestDbgEnable     uint32 = 0x00000001 // KVM_GUESTDBG_ENABLE
	GuestDbgSingleStep uint32 = 0x00000002 // KVM_GUESTDBG_SINGLESTEP
	GuestDbgUseSWBP    uint32 = 0x00010000 // KVM_GUESTDBG_USE_SW_BP (x86: int3 exits)
	GuestDbgUseHWBP    uint32 = 0x00020000 // KVM_GUESTDBG_USE_HW_BP (x86: debugreg[] are used)
	GuestDbgInjectDB   uint32 = 0x00040000 // KVM_GUESTDBG_INJECT_DB
	GuestDbgInjectBP   uint32 = 0x00080000 // KVM_GUESTDBG_INJECT_BP
	GuestDbgBlockIRQ   uint32 = 0x00100000 // KVM_GUESTDBG_BLOCKIRQ
)

// System event types (kvm_run.system_event.type, api.rst 5 KVM_EXIT_SYSTEM_EVENT).
const (
	SystemEventShutdown uint32 = 1 // KVM_SYSTEM_EVENT_SHUTDOWN
	SystemEventReset    uint32 = 2 // KVM_SYSTEM_EVENT_RESET
	SystemEventCrash    uint32 = 3 // KVM_SYSTEM_EVENT_CRASH
	SystemEventWakeup   uint32 = 4 // KVM_SYSTEM_EVENT_WAKEUP
	SystemEventSuspend  uint32 = 5 // KVM_SYSTEM_EVENT_SUSPEND
	SystemEventSEVTerm  uint32 = 6 // KVM_SYSTEM_EVENT_SEV_TERM
	SystemEventTDXFatal uint32 = 7 // KVM_SYSTEM_EVENT_TDX_FATAL
)

// Internal-error suberrors (kvm_run.internal.suberror) and the emulation
// failure flags (kvm_run.emulation_failure.flags).
const (
	InternalErrorEmulation              uint32 = 1      // KVM_INTERNAL_ERROR_EMULATION
	InternalErrorSimulEx                uint32 = 2      // KVM_INTERNAL_ERROR_SIMUL_EX
	InternalErrorDeliveryEv             uint32 = 3      // KVM_INTERNAL_ERROR_DELIVERY_EV
	InternalErrorUnexpectedExitReason   uint32 = 4      // KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON
	InternalErrorEmulationFlagInsnBytes uint64 = 1 << 0 // KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES
)

// MP states (struct kvm_mp_state, api.rst 4.38).
const (
	MPStateRunnable      uint32 = 0  // KVM_MP_STATE_RUNNABLE
	MPStateUninitialized uint32 = 1  // KVM_MP_STATE_UNINITIALIZED
	MPStateInitReceived  uint32 = 2  // KVM_MP_STATE_INIT_RECEIVED
	MPStateHalted        uint32 = 3  // KVM_MP_STATE_HALTED
	MPStateSIPIReceived  uint32 = 4  // KVM_MP_STATE_SIPI_RECEIVED
	MPStateStopped       uint32 = 5  // KVM_MP_STATE_STOPPED
	MPStateCheckStop     uint32 = 6  // KVM_MP_STATE_CHECK_STOP
	MPStateOperating     uint32 = 7  // KVM_MP_STATE_OPERATING
	MPStateLoad          uint32 = 8  // KVM_MP_STATE_LOAD
	MPStateAPResetHold   uint32 = 9  // KVM_MP_STATE_AP_RESET_HOLD
	MPStateSuspended     uint32 = 10 // KVM_MP_STATE_SUSPENDED
)

// vCPU event validity flags (kvm_vcpu_events.flags).
const (
	VCPUEventValidNMIPending  uint32 = 0x01 // KVM_VCPUEVENT_VALID_NMI_PENDING
	VCPUEventValidSIPIVector  uint32 = 0x02 // KVM_VCPUEVENT_VALID_SIPI_VECTOR
	VCPUEventValidShadow      uint32 = 0x04 // KVM_VCPUEVENT_VALID_SHADOW
	VCPUEventValidSMM         uint32 = 0x08 // KVM_VCPUEVENT_VALID_SMM
	VCPUEventValidPayload     uint32 = 0x10 // KVM_VCPUEVENT_VALID_PAYLOAD
	VCPUEventValidTripleFault uint32 = 0x20 // KVM_VCPUEVENT_VALID_TRIPLE_FAULT
)

// Port I/O exit directions (kvm_run.io.direction).
const (
	IOIn  uint8 = 0 // KVM_EXIT_IO_IN
	IOOut uint8 = 1 // KVM_EXIT_IO_OUT
)

// IOEventFD flags (kvm_ioeventfd.flags).
const (
	IOEventFDFlagDatamatch uint32 = 1 << 0 // KVM_IOEVENTFD_FLAG_DATAMATCH
	IOEventFDFlagPIO       uint32 = 1 << 1 // KVM_IOEVENTFD_FLAG_PIO
	IOEventFDFlagDeassign  uint32 = 1 << 2 // KVM_IOEVENTFD_FLAG_DEASSIGN
)

// IRQFD flags (kvm_irqfd.flags).
const (
	irqfdFlagDeassign uint32 = 1 << 0 // KVM_IRQFD_FLAG_DEASSIGN
	irqfdFlagResample uint32 = 1 << 1 // KVM_IRQFD_FLAG_RESAMPLE
)

// IRQ routing entry types and x86 irqchip ids.
const (
	IRQRoutingTypeIRQChip   uint32 = 1 // KVM_IRQ_ROUTING_IRQCHIP
	IRQRoutingTypeMSI       uint32 = 2 // KVM_IRQ_ROUTING_MSI
	IRQRoutingTypeS390      uint32 = 3 // KVM_IRQ_ROUTING_S390_ADAPTER
	IRQRoutingTypeHVSINT    uint32 = 4 // KVM_IRQ_ROUTING_HV_SINT
	IRQRoutingTypeXenEvtchn uint32 = 5 // KVM_IRQ_ROUTING_XEN_EVTCHN

	IRQChipPICMaster uint32 = 0 // KVM_IRQCHIP_PIC_MASTER
	IRQChipPICSlave  uint32 = 1 // KVM_IRQCHIP_PIC_SLAVE
	IRQChipIOAPIC    uint32 = 2 // KVM_IRQCHIP_IOAPIC
)

// PIT configuration flags (kvm_pit_config.flags).
const PITSpeakerDummy uint32 = 1 // KVM_PIT_SPEAKER_DUMMY

// CPUID entry flags (kvm_cpuid_entry2.flags).
const (
	CPUIDFlagSignificantIndex uint32 = 1 << 0 // KVM_CPUID_FLAG_SIGNIFCANT_INDEX (sic)
)

// kvmclock flags (kvm_clock_data.flags).
const (
	ClockTSCStable uint32 = 2      // KVM_CLOCK_TSC_STABLE
	ClockRealtime  uint32 = 1 << 2 // KVM_CLOCK_REALTIME
	ClockHostTSC   uint32 = 1 << 3 // KVM_CLOCK_HOST_TSC
)
