package kvm

import (
	"fmt"
	"slices"
)

// Cap is a KVM capability number for KVM_CHECK_EXTENSION / KVM_ENABLE_CAP
// (include/uapi/linux/kvm.h KVM_CAP_*). Numbers 230-244 are from the 6.18
// header (docs/kvm-api.md §2); never add numbers claimed only by
// unmerged series.
type Cap uint32

// Capabilities used by this project.
const (
	CapIRQChip             Cap = 0   // KVM_CAP_IRQCHIP
	CapHLT                 Cap = 1   // KVM_CAP_HLT
	CapUserMemory          Cap = 3   // KVM_CAP_USER_MEMORY
	CapSetTSSAddr          Cap = 4   // KVM_CAP_SET_TSS_ADDR
	CapExtCPUID            Cap = 7   // KVM_CAP_EXT_CPUID
	CapNrVCPUs             Cap = 9   // KVM_CAP_NR_VCPUS
	CapNrMemslots          Cap = 10  // KVM_CAP_NR_MEMSLOTS
	CapMPState             Cap = 14  // KVM_CAP_MP_STATE
	CapCoalescedMMIO       Cap = 15  // KVM_CAP_COALESCED_MMIO
	CapSyncMMU             Cap = 16  // KVM_CAP_SYNC_MMU
	CapUserNMI             Cap = 22  // KVM_CAP_USER_NMI
	CapSetGuestDebug       Cap = 23  // KVM_CAP_SET_GUEST_DEBUG
	CapIRQRouting          Cap = 25  // KVM_CAP_IRQ_ROUTING
	CapIRQInjectStatus     Cap = 26  // KVM_CAP_IRQ_INJECT_STATUS
	CapIRQFD               Cap = 32  // KVM_CAP_IRQFD
	CapPIT2                Cap = 33  // KVM_CAP_PIT2
	CapIOEventFD           Cap = 36  // KVM_CAP_IOEVENTFD
	CapSetIdentityMapAddr  Cap = 37  // KVM_CAP_SET_IDENTITY_MAP_ADDR
	CapAdjustClock         Cap = 39  // KVM_CAP_ADJUST_CLOCK
	CapInternalErrorData   Cap = 40  // KVM_CAP_INTERNAL_ERROR_DATA
	CapVCPUEvents          Cap = 41  // KVM_CAP_VCPU_EVENTS
	CapDebugRegs           Cap = 50  // KVM_CAP_DEBUGREGS
	CapXSave               Cap = 55  // KVM_CAP_XSAVE
	CapXCRs                Cap = 56  // KVM_CAP_XCRS
	CapTSCControl          Cap = 60  // KVM_CAP_TSC_CONTROL
	CapGetTSCKHz           Cap = 61  // KVM_CAP_GET_TSC_KHZ
	CapMaxVCPUs            Cap = 66  // KVM_CAP_MAX_VCPUS
	CapTSCDeadlineTimer    Cap = 72  // KVM_CAP_TSC_DEADLINE_TIMER
	CapSignalMSI           Cap = 77  // KVM_CAP_SIGNAL_MSI
	CapReadonlyMem         Cap = 81  // KVM_CAP_READONLY_MEM
	CapIRQFDResample       Cap = 82  // KVM_CAP_IRQFD_RESAMPLE
	CapExtEmulCPUID        Cap = 95  // KVM_CAP_EXT_EMUL_CPUID
	CapCheckExtensionVM    Cap = 105 // KVM_CAP_CHECK_EXTENSION_VM
	CapX86SMM              Cap = 117 // KVM_CAP_X86_SMM
	CapGuestDebugHWBPs     Cap = 119 // KVM_CAP_GUEST_DEBUG_HW_BPS
	CapSplitIRQChip        Cap = 121 // KVM_CAP_SPLIT_IRQCHIP
	CapMaxVCPUID           Cap = 128 // KVM_CAP_MAX_VCPU_ID
	CapX2APICAPI           Cap = 129 // KVM_CAP_X2APIC_API
	CapImmediateExit       Cap = 136 // KVM_CAP_IMMEDIATE_EXIT
	CapX86DisableExits     Cap = 143 // KVM_CAP_X86_DISABLE_EXITS
	CapGetMSRFeatures      Cap = 153 // KVM_CAP_GET_MSR_FEATURES
	CapCoalescedPIO        Cap = 162 // KVM_CAP_COALESCED_PIO
	CapExceptionPayload    Cap = 164 // KVM_CAP_EXCEPTION_PAYLOAD
	CapX86UserSpaceMSR     Cap = 188 // KVM_CAP_X86_USER_SPACE_MSR
	CapDirtyLogRing        Cap = 192 // KVM_CAP_DIRTY_LOG_RING
	CapSetGuestDebug2      Cap = 195 // KVM_CAP_SET_GUEST_DEBUG2 (returns the accepted KVM_GUESTDBG_* flags)
	CapSregs2              Cap = 200 // KVM_CAP_SREGS2
	CapExitHypercall       Cap = 201 // KVM_CAP_EXIT_HYPERCALL
	CapBinaryStatsFD       Cap = 203 // KVM_CAP_BINARY_STATS_FD
	CapExitOnEmulationFail Cap = 204 // KVM_CAP_EXIT_ON_EMULATION_FAILURE
	CapXSave2              Cap = 208 // KVM_CAP_XSAVE2
	CapSystemEventData     Cap = 215 // KVM_CAP_SYSTEM_EVENT_DATA
	CapX86TripleFaultEvent Cap = 218 // KVM_CAP_X86_TRIPLE_FAULT_EVENT
	CapUserMemory2         Cap = 231 // KVM_CAP_USER_MEMORY2
	CapMemoryFaultInfo     Cap = 232 // KVM_CAP_MEMORY_FAULT_INFO
	CapMemoryAttributes    Cap = 233 // KVM_CAP_MEMORY_ATTRIBUTES (returns the supported attribute mask)
	CapGuestMemfd          Cap = 234 // KVM_CAP_GUEST_MEMFD
	CapVMTypes             Cap = 235 // KVM_CAP_VM_TYPES (returns a bitmap of VMType)
	CapPreFaultMemory      Cap = 236 // KVM_CAP_PRE_FAULT_MEMORY
	CapGuestMemfdFlags     Cap = 244 // KVM_CAP_GUEST_MEMFD_FLAGS (returns the GuestMemfdFlag* mask)
)

// capNames maps every capability number of the mainline header to its
// kernel name (0-223 from the 6.1 uapi header, 224-247 from the mainline
// header, docs/kvm-api.md §2).
var capNames = map[Cap]string{
	0:   "KVM_CAP_IRQCHIP",
	1:   "KVM_CAP_HLT",
	2:   "KVM_CAP_MMU_SHADOW_CACHE_CONTROL",
	3:   "KVM_CAP_USER_MEMORY",
	4:   "KVM_CAP_SET_TSS_ADDR",
	6:   "KVM_CAP_VAPIC",
	7:   "KVM_CAP_EXT_CPUID",
	8:   "KVM_CAP_CLOCKSOURCE",
	9:   "KVM_CAP_NR_VCPUS",
	10:  "KVM_CAP_NR_MEMSLOTS",
	11:  "KVM_CAP_PIT",
	12:  "KVM_CAP_NOP_IO_DELAY",
	13:  "KVM_CAP_PV_MMU",
	14:  "KVM_CAP_MP_STATE",
	15:  "KVM_CAP_COALESCED_MMIO",
	16:  "KVM_CAP_SYNC_MMU",
	18:  "KVM_CAP_IOMMU",
	21:  "KVM_CAP_DESTROY_MEMORY_REGION_WORKS",
	22:  "KVM_CAP_USER_NMI",
	23:  "KVM_CAP_SET_GUEST_DEBUG",
	24:  "KVM_CAP_REINJECT_CONTROL",
	25:  "KVM_CAP_IRQ_ROUTING",
	26:  "KVM_CAP_IRQ_INJECT_STATUS",
	29:  "KVM_CAP_ASSIGN_DEV_IRQ",
	30:  "KVM_CAP_JOIN_MEMORY_REGIONS_WORKS",
	31:  "KVM_CAP_MCE",
	32:  "KVM_CAP_IRQFD",
	33:  "KVM_CAP_PIT2",
	34:  "KVM_CAP_SET_BOOT_CPU_ID",
	35:  "KVM_CAP_PIT_STATE2",
	36:  "KVM_CAP_IOEVENTFD",
	37:  "KVM_CAP_SET_IDENTITY_MAP_ADDR",
	38:  "KVM_CAP_XEN_HVM",
	39:  "KVM_CAP_ADJUST_CLOCK",
	40:  "KVM_CAP_INTERNAL_ERROR_DATA",
	41:  "KVM_CAP_VCPU_EVENTS",
	42:  "KVM_CAP_S390_PSW",
	43:  "KVM_CAP_PPC_SEGSTATE",
	44:  "KVM_CAP_HYPERV",
	45:  "KVM_CAP_HYPERV_VAPIC",
	46:  "KVM_CAP_HYPERV_SPIN",
	47:  "KVM_CAP_PCI_SEGMENT",
	48:  "KVM_CAP_PPC_PAIRED_SINGLES",
	49:  "KVM_CAP_INTR_SHADOW",
	50:  "KVM_CAP_DEBUGREGS",
	51:  "KVM_CAP_X86_ROBUST_SINGLESTEP",
	52:  "KVM_CAP_PPC_OSI",
	53:  "KVM_CAP_PPC_UNSET_IRQ",
	54:  "KVM_CAP_ENABLE_CAP",
	55:  "KVM_CAP_XSAVE",
	56:  "KVM_CAP_XCRS",
	57:  "KVM_CAP_PPC_GET_PVINFO",
	58:  "KVM_CAP_PPC_IRQ_LEVEL",
	59:  "KVM_CAP_ASYNC_PF",
	60:  "KVM_CAP_TSC_CONTROL",
	61:  "KVM_CAP_GET_TSC_KHZ",
	62:  "KVM_CAP_PPC_BOOKE_SREGS",
	63:  "KVM_CAP_SPAPR_TCE",
	64:  "KVM_CAP_PPC_SMT",
	65:  "KVM_CAP_PPC_RMA",
	66:  "KVM_CAP_MAX_VCPUS",
	67:  "KVM_CAP_PPC_HIOR",
	68:  "KVM_CAP_PPC_PAPR",
	69:  "KVM_CAP_SW_TLB",
	70:  "KVM_CAP_ONE_REG",
	71:  "KVM_CAP_S390_GMAP",
	72:  "KVM_CAP_TSC_DEADLINE_TIMER",
	73:  "KVM_CAP_S390_UCONTROL",
	74:  "KVM_CAP_SYNC_REGS",
	75:  "KVM_CAP_PCI_2_3",
	76:  "KVM_CAP_KVMCLOCK_CTRL",
	77:  "KVM_CAP_SIGNAL_MSI",
	78:  "KVM_CAP_PPC_GET_SMMU_INFO",
	79:  "KVM_CAP_S390_COW",
	80:  "KVM_CAP_PPC_ALLOC_HTAB",
	81:  "KVM_CAP_READONLY_MEM",
	82:  "KVM_CAP_IRQFD_RESAMPLE",
	83:  "KVM_CAP_PPC_BOOKE_WATCHDOG",
	84:  "KVM_CAP_PPC_HTAB_FD",
	85:  "KVM_CAP_S390_CSS_SUPPORT",
	86:  "KVM_CAP_PPC_EPR",
	87:  "KVM_CAP_ARM_PSCI",
	88:  "KVM_CAP_ARM_SET_DEVICE_ADDR",
	89:  "KVM_CAP_DEVICE_CTRL",
	90:  "KVM_CAP_IRQ_MPIC",
	91:  "KVM_CAP_PPC_RTAS",
	92:  "KVM_CAP_IRQ_XICS",
	93:  "KVM_CAP_ARM_EL1_32BIT",
	94:  "KVM_CAP_SPAPR_MULTITCE",
	95:  "KVM_CAP_EXT_EMUL_CPUID",
	96:  "KVM_CAP_HYPERV_TIME",
	97:  "KVM_CAP_IOAPIC_POLARITY_IGNORED",
	98:  "KVM_CAP_ENABLE_CAP_VM",
	99:  "KVM_CAP_S390_IRQCHIP",
	100: "KVM_CAP_IOEVENTFD_NO_LENGTH",
	101: "KVM_CAP_VM_ATTRIBUTES",
	102: "KVM_CAP_ARM_PSCI_0_2",
	103: "KVM_CAP_PPC_FIXUP_HCALL",
	104: "KVM_CAP_PPC_ENABLE_HCALL",
	105: "KVM_CAP_CHECK_EXTENSION_VM",
	106: "KVM_CAP_S390_USER_SIGP",
	107: "KVM_CAP_S390_VECTOR_REGISTERS",
	108: "KVM_CAP_S390_MEM_OP",
	109: "KVM_CAP_S390_USER_STSI",
	110: "KVM_CAP_S390_SKEYS",
	111: "KVM_CAP_MIPS_FPU",
	112: "KVM_CAP_MIPS_MSA",
	113: "KVM_CAP_S390_INJECT_IRQ",
	114: "KVM_CAP_S390_IRQ_STATE",
	115: "KVM_CAP_PPC_HWRNG",
	116: "KVM_CAP_DISABLE_QUIRKS",
	117: "KVM_CAP_X86_SMM",
	118: "KVM_CAP_MULTI_ADDRESS_SPACE",
	119: "KVM_CAP_GUEST_DEBUG_HW_BPS",
	120: "KVM_CAP_GUEST_DEBUG_HW_WPS",
	121: "KVM_CAP_SPLIT_IRQCHIP",
	122: "KVM_CAP_IOEVENTFD_ANY_LENGTH",
	123: "KVM_CAP_HYPERV_SYNIC",
	124: "KVM_CAP_S390_RI",
	125: "KVM_CAP_SPAPR_TCE_64",
	126: "KVM_CAP_ARM_PMU_V3",
	127: "KVM_CAP_VCPU_ATTRIBUTES",
	128: "KVM_CAP_MAX_VCPU_ID",
	129: "KVM_CAP_X2APIC_API",
	130: "KVM_CAP_S390_USER_INSTR0",
	131: "KVM_CAP_MSI_DEVID",
	132: "KVM_CAP_PPC_HTM",
	133: "KVM_CAP_SPAPR_RESIZE_HPT",
	134: "KVM_CAP_PPC_MMU_RADIX",
	135: "KVM_CAP_PPC_MMU_HASH_V3",
	136: "KVM_CAP_IMMEDIATE_EXIT",
	137: "KVM_CAP_MIPS_VZ",
	138: "KVM_CAP_MIPS_TE",
	139: "KVM_CAP_MIPS_64BIT",
	140: "KVM_CAP_S390_GS",
	141: "KVM_CAP_S390_AIS",
	142: "KVM_CAP_SPAPR_TCE_VFIO",
	143: "KVM_CAP_X86_DISABLE_EXITS",
	144: "KVM_CAP_ARM_USER_IRQ",
	145: "KVM_CAP_S390_CMMA_MIGRATION",
	146: "KVM_CAP_PPC_FWNMI",
	147: "KVM_CAP_PPC_SMT_POSSIBLE",
	148: "KVM_CAP_HYPERV_SYNIC2",
	149: "KVM_CAP_HYPERV_VP_INDEX",
	150: "KVM_CAP_S390_AIS_MIGRATION",
	151: "KVM_CAP_PPC_GET_CPU_CHAR",
	152: "KVM_CAP_S390_BPB",
	153: "KVM_CAP_GET_MSR_FEATURES",
	154: "KVM_CAP_HYPERV_EVENTFD",
	155: "KVM_CAP_HYPERV_TLBFLUSH",
	156: "KVM_CAP_S390_HPAGE_1M",
	157: "KVM_CAP_NESTED_STATE",
	158: "KVM_CAP_ARM_INJECT_SERROR_ESR",
	159: "KVM_CAP_MSR_PLATFORM_INFO",
	160: "KVM_CAP_PPC_NESTED_HV",
	161: "KVM_CAP_HYPERV_SEND_IPI",
	162: "KVM_CAP_COALESCED_PIO",
	163: "KVM_CAP_HYPERV_ENLIGHTENED_VMCS",
	164: "KVM_CAP_EXCEPTION_PAYLOAD",
	165: "KVM_CAP_ARM_VM_IPA_SIZE",
	166: "KVM_CAP_MANUAL_DIRTY_LOG_PROTECT",
	167: "KVM_CAP_HYPERV_CPUID",
	168: "KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2",
	169: "KVM_CAP_PPC_IRQ_XIVE",
	170: "KVM_CAP_ARM_SVE",
	171: "KVM_CAP_ARM_PTRAUTH_ADDRESS",
	172: "KVM_CAP_ARM_PTRAUTH_GENERIC",
	173: "KVM_CAP_PMU_EVENT_FILTER",
	174: "KVM_CAP_ARM_IRQ_LINE_LAYOUT_2",
	175: "KVM_CAP_HYPERV_DIRECT_TLBFLUSH",
	176: "KVM_CAP_PPC_GUEST_DEBUG_SSTEP",
	177: "KVM_CAP_ARM_NISV_TO_USER",
	178: "KVM_CAP_ARM_INJECT_EXT_DABT",
	179: "KVM_CAP_S390_VCPU_RESETS",
	180: "KVM_CAP_S390_PROTECTED",
	181: "KVM_CAP_PPC_SECURE_GUEST",
	182: "KVM_CAP_HALT_POLL",
	183: "KVM_CAP_ASYNC_PF_INT",
	184: "KVM_CAP_LAST_CPU",
	185: "KVM_CAP_SMALLER_MAXPHYADDR",
	186: "KVM_CAP_S390_DIAG318",
	187: "KVM_CAP_STEAL_TIME",
	188: "KVM_CAP_X86_USER_SPACE_MSR",
	189: "KVM_CAP_X86_MSR_FILTER",
	190: "KVM_CAP_ENFORCE_PV_FEATURE_CPUID",
	191: "KVM_CAP_SYS_HYPERV_CPUID",
	192: "KVM_CAP_DIRTY_LOG_RING",
	193: "KVM_CAP_X86_BUS_LOCK_EXIT",
	194: "KVM_CAP_PPC_DAWR1",
	195: "KVM_CAP_SET_GUEST_DEBUG2",
	196: "KVM_CAP_SGX_ATTRIBUTE",
	197: "KVM_CAP_VM_COPY_ENC_CONTEXT_FROM",
	198: "KVM_CAP_PTP_KVM",
	199: "KVM_CAP_HYPERV_ENFORCE_CPUID",
	200: "KVM_CAP_SREGS2",
	201: "KVM_CAP_EXIT_HYPERCALL",
	202: "KVM_CAP_PPC_RPT_INVALIDATE",
	203: "KVM_CAP_BINARY_STATS_FD",
	204: "KVM_CAP_EXIT_ON_EMULATION_FAILURE",
	205: "KVM_CAP_ARM_MTE",
	206: "KVM_CAP_VM_MOVE_ENC_CONTEXT_FROM",
	207: "KVM_CAP_VM_GPA_BITS",
	208: "KVM_CAP_XSAVE2",
	209: "KVM_CAP_SYS_ATTRIBUTES",
	210: "KVM_CAP_PPC_AIL_MODE_3",
	211: "KVM_CAP_S390_MEM_OP_EXTENSION",
	212: "KVM_CAP_PMU_CAPABILITY",
	213: "KVM_CAP_DISABLE_QUIRKS2",
	214: "KVM_CAP_VM_TSC_CONTROL",
	215: "KVM_CAP_SYSTEM_EVENT_DATA",
	216: "KVM_CAP_ARM_SYSTEM_SUSPEND",
	217: "KVM_CAP_S390_PROTECTED_DUMP",
	218: "KVM_CAP_X86_TRIPLE_FAULT_EVENT",
	219: "KVM_CAP_X86_NOTIFY_VMEXIT",
	220: "KVM_CAP_VM_DISABLE_NX_HUGE_PAGES",
	221: "KVM_CAP_S390_ZPCI_OP",
	222: "KVM_CAP_S390_CPU_TOPOLOGY",
	223: "KVM_CAP_DIRTY_LOG_RING_ACQ_REL",
	224: "KVM_CAP_S390_PROTECTED_ASYNC_DISABLE",
	225: "KVM_CAP_DIRTY_LOG_RING_WITH_BITMAP",
	226: "KVM_CAP_PMU_EVENT_MASKED_EVENTS",
	227: "KVM_CAP_COUNTER_OFFSET",
	228: "KVM_CAP_ARM_EAGER_SPLIT_CHUNK_SIZE",
	229: "KVM_CAP_ARM_SUPPORTED_BLOCK_SIZES",
	230: "KVM_CAP_ARM_SUPPORTED_REG_MASK_RANGES",
	231: "KVM_CAP_USER_MEMORY2",
	232: "KVM_CAP_MEMORY_FAULT_INFO",
	233: "KVM_CAP_MEMORY_ATTRIBUTES",
	234: "KVM_CAP_GUEST_MEMFD",
	235: "KVM_CAP_VM_TYPES",
	236: "KVM_CAP_PRE_FAULT_MEMORY",
	237: "KVM_CAP_X86_APIC_BUS_CYCLES_NS",
	238: "KVM_CAP_X86_GUEST_MODE",
	239: "KVM_CAP_ARM_WRITABLE_IMP_ID_REGS",
	240: "KVM_CAP_ARM_EL2",
	241: "KVM_CAP_ARM_EL2_E2H0",
	242: "KVM_CAP_RISCV_MP_STATE_RESET",
	243: "KVM_CAP_ARM_CACHEABLE_PFNMAP_SUPPORTED",
	244: "KVM_CAP_GUEST_MEMFD_FLAGS",
	245: "KVM_CAP_ARM_SEA_TO_USER",
	246: "KVM_CAP_S390_USER_OPEREXEC",
	247: "KVM_CAP_S390_KEYOP",
}

// String returns the kernel name (KVM_CAP_...), or Cap(n) when unknown.
func (c Cap) String() string {
	if s, ok := capNames[c]; ok {
		return s
	}
	return fmt.Sprintf("Cap(%d)", uint32(c))
}

// capDescriptions explains, for `vmm probe`, what the capabilities this
// project uses mean and what the check's return value is (api.rst §8 and
// the ioctl sections named there).
var capDescriptions = map[Cap]string{
	CapIRQChip:             "in-kernel PIC, IOAPIC and local APIC (KVM_CREATE_IRQCHIP)",
	CapHLT:                 "guest HLT exits to userspace as KVM_EXIT_HLT",
	CapUserMemory:          "guest RAM from userspace mappings (KVM_SET_USER_MEMORY_REGION)",
	CapSetTSSAddr:          "KVM_SET_TSS_ADDR (needed for real mode on VMX without unrestricted guest)",
	CapExtCPUID:            "KVM_GET_SUPPORTED_CPUID / KVM_SET_CPUID2",
	CapNrVCPUs:             "recommended maximum number of vCPUs",
	CapNrMemslots:          "maximum number of memory slots",
	CapMPState:             "KVM_GET_MP_STATE / KVM_SET_MP_STATE",
	CapCoalescedMMIO:       "coalesced MMIO ring (value: page offset of the ring in the vCPU mapping)",
	CapSyncMMU:             "KVM follows changes to the host mappings of guest RAM (MMU notifiers)",
	CapUserNMI:             "KVM_NMI injects an NMI",
	CapSetGuestDebug:       "KVM_SET_GUEST_DEBUG (single-step and breakpoints for a debugger stub)",
	CapIRQRouting:          "KVM_SET_GSI_ROUTING",
	CapIRQInjectStatus:     "KVM_IRQ_LINE_STATUS",
	CapIRQFD:               "KVM_IRQFD: an eventfd raises a GSI without a userspace round trip",
	CapPIT2:                "in-kernel i8254 PIT (KVM_CREATE_PIT2)",
	CapIOEventFD:           "KVM_IOEVENTFD: guest PIO/MMIO writes signal an eventfd without an exit",
	CapSetIdentityMapAddr:  "KVM_SET_IDENTITY_MAP_ADDR (VMX EPT identity page)",
	CapAdjustClock:         "KVM_GET_CLOCK / KVM_SET_CLOCK (value: supported KVM_CLOCK_* flags)",
	CapInternalErrorData:   "KVM_EXIT_INTERNAL_ERROR carries ndata/data",
	CapVCPUEvents:          "KVM_GET_VCPU_EVENTS / KVM_SET_VCPU_EVENTS (exception injection)",
	CapDebugRegs:           "KVM_GET_DEBUGREGS / KVM_SET_DEBUGREGS",
	CapXSave:               "KVM_GET_XSAVE / KVM_SET_XSAVE",
	CapXCRs:                "KVM_GET_XCRS / KVM_SET_XCRS",
	CapTSCControl:          "KVM_SET_TSC_KHZ",
	CapGetTSCKHz:           "KVM_GET_TSC_KHZ",
	CapMaxVCPUs:            "maximum number of vCPUs per VM",
	CapTSCDeadlineTimer:    "local APIC TSC-deadline timer mode",
	CapSignalMSI:           "KVM_SIGNAL_MSI injects an MSI directly",
	CapReadonlyMem:         "KVM_MEM_READONLY memory slots",
	CapIRQFDResample:       "KVM_IRQFD with a resample eventfd (level-triggered lines)",
	CapExtEmulCPUID:        "KVM_GET_EMULATED_CPUID",
	CapCheckExtensionVM:    "KVM_CHECK_EXTENSION on VM fds",
	CapX86SMM:              "system management mode",
	CapGuestDebugHWBPs:     "number of hardware breakpoints for KVM_SET_GUEST_DEBUG",
	CapSplitIRQChip:        "local APIC in kernel, IOAPIC and PIC in userspace",
	CapMaxVCPUID:           "largest vCPU id + 1",
	CapX2APICAPI:           "32-bit x2APIC ids in routing and LAPIC state",
	CapImmediateExit:       "kvm_run.immediate_exit (the race-free vCPU kick)",
	CapX86DisableExits:     "KVM_CAP_X86_DISABLE_EXITS (value: mask of exits that can be disabled)",
	CapGetMSRFeatures:      "KVM_GET_MSR_FEATURE_INDEX_LIST",
	CapCoalescedPIO:        "coalesced port I/O",
	CapExceptionPayload:    "exception payloads in KVM_GET/SET_VCPU_EVENTS",
	CapX86UserSpaceMSR:     "unhandled MSR accesses exit to userspace (KVM_EXIT_X86_RDMSR/WRMSR)",
	CapDirtyLogRing:        "dirty page ring (value: maximum ring size in bytes)",
	CapSetGuestDebug2:      "KVM_SET_GUEST_DEBUG flags this kernel accepts (value: KVM_GUESTDBG_* mask)",
	CapSregs2:              "KVM_GET_SREGS2 / KVM_SET_SREGS2 (PDPTRs)",
	CapExitHypercall:       "hypercalls exit to userspace as KVM_EXIT_HYPERCALL (value: mask of hypercall numbers, 1<<12 = KVM_HC_MAP_GPA_RANGE)",
	CapBinaryStatsFD:       "KVM_GET_STATS_FD binary statistics",
	CapExitOnEmulationFail: "emulation failures exit with the instruction bytes even where KVM would inject #UD",
	CapXSave2:              "KVM_GET_XSAVE2 (value: size of the XSAVE buffer)",
	CapSystemEventData:     "KVM_EXIT_SYSTEM_EVENT carries ndata/data",
	CapX86TripleFaultEvent: "triple-fault pending state in vCPU events",
	CapUserMemory2:         "KVM_SET_USER_MEMORY_REGION2 (guest_memfd memory slots)",
	CapMemoryFaultInfo:     "KVM_RUN fills kvm_run.memory_fault on EFAULT/EHWPOISON (KVM_EXIT_MEMORY_FAULT)",
	CapMemoryAttributes:    "KVM_SET_MEMORY_ATTRIBUTES (value: supported attributes, 8 = PRIVATE)",
	CapGuestMemfd:          "KVM_CREATE_GUEST_MEMFD",
	CapVMTypes:             "supported VM types (value: bitmap, bit 0 = default, bit 1 = SW_PROTECTED, ...)",
	CapPreFaultMemory:      "KVM_PRE_FAULT_MEMORY (needs TDP; absent under shadow paging)",
	CapGuestMemfdFlags:     "flags valid for KVM_CREATE_GUEST_MEMFD (value: mask, 1 = MMAP, 2 = INIT_SHARED)",
}

// Description returns a one-line explanation of the capability for probe
// output, or "" when none is recorded.
func (c Cap) Description() string { return capDescriptions[c] }

// ProbeCaps returns, in ascending order, the capabilities this project
// uses and describes; `vmm probe` checks each of them.
func ProbeCaps() []Cap {
	caps := make([]Cap, 0, len(capDescriptions))
	for c := range capDescriptions {
		caps = append(caps, c)
	}
	slices.Sort(caps)
	return caps
}
