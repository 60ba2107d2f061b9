package kvm

import (
	"slices"
	"testing"
)

func TestCapNames(t *testing.T) {
	tests := []struct {
		c    Cap
		num  uint32
		name string
	}{
		{CapIRQChip, 0, "KVM_CAP_IRQCHIP"},
		{CapHLT, 1, "KVM_CAP_HLT"},
		{CapUserMemory, 3, "KVM_CAP_USER_MEMORY"},
		{CapSetTSSAddr, 4, "KVM_CAP_SET_TSS_ADDR"},
		{CapExtCPUID, 7, "KVM_CAP_EXT_CPUID"},
		{CapNrVCPUs, 9, "KVM_CAP_NR_VCPUS"},
		{CapMaxVCPUs, 66, "KVM_CAP_MAX_VCPUS"},
		{CapPIT2, 33, "KVM_CAP_PIT2"},
		{CapIOEventFD, 36, "KVM_CAP_IOEVENTFD"},
		{CapIRQFD, 32, "KVM_CAP_IRQFD"},
		{CapSetIdentityMapAddr, 37, "KVM_CAP_SET_IDENTITY_MAP_ADDR"},
		{CapIRQRouting, 25, "KVM_CAP_IRQ_ROUTING"},
		{CapSignalMSI, 77, "KVM_CAP_SIGNAL_MSI"},
		{CapDebugRegs, 50, "KVM_CAP_DEBUGREGS"},
		{CapVCPUEvents, 41, "KVM_CAP_VCPU_EVENTS"},
		{CapSetGuestDebug, 23, "KVM_CAP_SET_GUEST_DEBUG"},
		{CapSetGuestDebug2, 195, "KVM_CAP_SET_GUEST_DEBUG2"},
		{CapImmediateExit, 136, "KVM_CAP_IMMEDIATE_EXIT"},
		{CapExitHypercall, 201, "KVM_CAP_EXIT_HYPERCALL"},
		{CapUserMemory2, 231, "KVM_CAP_USER_MEMORY2"},
		{CapMemoryFaultInfo, 232, "KVM_CAP_MEMORY_FAULT_INFO"},
		{CapMemoryAttributes, 233, "KVM_CAP_MEMORY_ATTRIBUTES"},
		{CapGuestMemfd, 234, "KVM_CAP_GUEST_MEMFD"},
		{CapVMTypes, 235, "KVM_CAP_VM_TYPES"},
		{CapPreFaultMemory, 236, "KVM_CAP_PRE_FAULT_MEMORY"},
		{CapGuestMemfdFlags, 244, "KVM_CAP_GUEST_MEMFD_FLAGS"},
		{Cap(999), 999, "Cap(999)"},
	}
	for _, tc := range tests {
		if uint32(tc.c) != tc.num || tc.c.String() != tc.name {
			t.Errorf("cap %d: String() = %q, want %d %q", uint32(tc.c), tc.c.String(), tc.num, tc.name)
		}
	}
	caps := ProbeCaps()
	if !slices.IsSorted(caps) || len(caps) != len(capDescriptions) {
		t.Fatalf("ProbeCaps not sorted or incomplete: %v", caps)
	}
	for _, c := range caps {
		if c.Description() == "" || capNames[c] == "" {
			t.Errorf("%v: missing description or name", c)
		}
	}
	for _, c := range []Cap{CapIRQChip, CapHLT, CapUserMemory, CapSetTSSAddr, CapExtCPUID, CapNrVCPUs, CapMaxVCPUs,
		CapPIT2, CapIOEventFD, CapIRQFD, CapSetIdentityMapAddr, CapIRQRouting, CapSignalMSI, CapDebugRegs,
		CapVCPUEvents, CapSetGuestDebug, CapImmediateExit, CapExitHypercall, CapUserMemory2, CapMemoryFaultInfo,
		CapMemoryAttributes, CapGuestMemfd, CapVMTypes, CapPreFaultMemory, CapGuestMemfdFlags} {
		if !slices.Contains(caps, c) {
			t.Errorf("ProbeCaps lacks %v", c)
		}
	}
}

func TestExitReasonNames(t *testing.T) {
	tests := []struct {
		e    ExitReason
		num  uint32
		name string
	}{
		{ExitUnknown, 0, "KVM_EXIT_UNKNOWN"},
		{ExitIO, 2, "KVM_EXIT_IO"},
		{ExitHypercall, 3, "KVM_EXIT_HYPERCALL"},
		{ExitDebug, 4, "KVM_EXIT_DEBUG"},
		{ExitHLT, 5, "KVM_EXIT_HLT"},
		{ExitMMIO, 6, "KVM_EXIT_MMIO"},
		{ExitShutdown, 8, "KVM_EXIT_SHUTDOWN"},
		{ExitFailEntry, 9, "KVM_EXIT_FAIL_ENTRY"},
		{ExitIntr, 10, "KVM_EXIT_INTR"},
		{ExitInternalError, 17, "KVM_EXIT_INTERNAL_ERROR"},
		{ExitSystemEvent, 24, "KVM_EXIT_SYSTEM_EVENT"},
		{ExitX86RDMSR, 29, "KVM_EXIT_X86_RDMSR"},
		{ExitNotify, 37, "KVM_EXIT_NOTIFY"},
		{ExitLoongArchIOCSR, 38, "KVM_EXIT_LOONGARCH_IOCSR"},
		{ExitMemoryFault, 39, "KVM_EXIT_MEMORY_FAULT"},
		{ExitTDX, 40, "KVM_EXIT_TDX"},
		{ExitARMSEA, 41, "KVM_EXIT_ARM_SEA"},
		{ExitReason(42), 42, "ExitReason(42)"},
	}
	for _, tc := range tests {
		if uint32(tc.e) != tc.num || tc.e.String() != tc.name {
			t.Errorf("exit %d: String() = %q, want %q", uint32(tc.e), tc.e.String(), tc.name)
		}
	}
	for i, n := range exitNames {
		if n == "" {
			t.Errorf("exit reason %d has no name", i)
		}
	}
}

func TestVMTypeNames(t *testing.T) {
	want := []string{"KVM_X86_DEFAULT_VM", "KVM_X86_SW_PROTECTED_VM", "KVM_X86_SEV_VM", "KVM_X86_SEV_ES_VM", "KVM_X86_SNP_VM", "KVM_X86_TDX_VM"}
	for i, w := range want {
		if s := VMType(i).String(); s != w {
			t.Errorf("VMType(%d) = %q, want %q", i, s, w)
		}
	}
	if s := VMType(9).String(); s != "VMType(9)" {
		t.Errorf("unknown type: %q", s)
	}
}

// TestABIConstants pins the values other packages rely on (kvm.h,
// kvm_para.h, and docs/kvm-api.md §8).
func TestABIConstants(t *testing.T) {
	tests := []struct {
		name      string
		got, want uint64
	}{
		{"KVM_MEM_LOG_DIRTY_PAGES", uint64(MemLogDirtyPages), 1},
		{"KVM_MEM_READONLY", uint64(MemReadonly), 2},
		{"KVM_MEM_GUEST_MEMFD", uint64(MemGuestMemfd), 4},
		{"GUEST_MEMFD_FLAG_MMAP", GuestMemfdFlagMMAP, 1},
		{"GUEST_MEMFD_FLAG_INIT_SHARED", GuestMemfdFlagInitShared, 2},
		{"KVM_MEMORY_ATTRIBUTE_PRIVATE", MemoryAttributePrivate, 8},
		{"KVM_MEMORY_EXIT_FLAG_PRIVATE", MemoryExitFlagPrivate, 8},
		{"KVM_EXIT_HYPERCALL_LONG_MODE", HypercallExitLongMode, 1},
		{"KVM_HC_MAP_GPA_RANGE", HCMapGPARange, 12},
		{"KVM_MAP_GPA_RANGE_PAGE_SZ_2M", MapGPARangePageSz2M, 1},
		{"KVM_MAP_GPA_RANGE_PAGE_SZ_1G", MapGPARangePageSz1G, 2},
		{"KVM_MAP_GPA_RANGE_ENCRYPTED", MapGPARangeEncrypted, 16},
		{"KVM_FEATURE_HC_MAP_GPA_RANGE", FeatureHCMapGPARange, 16},
		{"KVM_ENOSYS", KVMENOSYS, 1000},
		{"KVM_EINVAL", KVMEINVAL, 22},
		{"KVM_EPERM", KVMEPERM, 1},
		{"KVM_EFAULT", KVMEFAULT, 14},
		{"KVM_E2BIG", KVME2BIG, 7},
		{"KVM_EOPNOTSUPP", KVMEOPNOTSUPP, 95},
		{"KVM_GUESTDBG_ENABLE", uint64(GuestDbgEnable), 1},
		{"KVM_GUESTDBG_SINGLESTEP", uint64(GuestDbgSingleStep), 2},
		{"KVM_GUESTDBG_USE_SW_BP", uint64(GuestDbgUseSWBP), 0x10000},
		{"KVM_GUESTDBG_USE_HW_BP", uint64(GuestDbgUseHWBP), 0x20000},
		{"KVM_SYSTEM_EVENT_SHUTDOWN", uint64(SystemEventShutdown), 1},
		{"KVM_SYSTEM_EVENT_RESET", uint64(SystemEventReset), 2},
		{"KVM_SYSTEM_EVENT_CRASH", uint64(SystemEventCrash), 3},
		{"KVM_INTERNAL_ERROR_EMULATION", uint64(InternalErrorEmulation), 1},
		{"KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES", InternalErrorEmulationFlagInsnBytes, 1},
		{"KVM_MP_STATE_RUNNABLE", uint64(MPStateRunnable), 0},
		{"KVM_MP_STATE_HALTED", uint64(MPStateHalted), 3},
		{"KVM_MP_STATE_SUSPENDED", uint64(MPStateSuspended), 10},
		{"KVM_IOEVENTFD_FLAG_PIO", uint64(IOEventFDFlagPIO), 2},
		{"KVM_IOEVENTFD_FLAG_DEASSIGN", uint64(IOEventFDFlagDeassign), 4},
		{"KVM_IRQFD_FLAG_RESAMPLE", uint64(irqfdFlagResample), 2},
		{"KVM_IRQ_ROUTING_MSI", uint64(IRQRoutingTypeMSI), 2},
		{"KVM_IRQCHIP_IOAPIC", uint64(IRQChipIOAPIC), 2},
		{"KVM_VCPUEVENT_VALID_TRIPLE_FAULT", uint64(VCPUEventValidTripleFault), 0x20},
	}
	for _, tc := range tests {
		if tc.got != tc.want {
			t.Errorf("%s = %#x, want %#x", tc.name, tc.got, tc.want)
		}
	}
}

func TestRoutingHelpers(t *testing.T) {
	e := IRQRoutingMSI(24, 0x1_fee0_1000, 0x4041)
	if e.GSI != 24 || e.Type != IRQRoutingTypeMSI || e.U[0] != 0xfee01000 || e.U[1] != 1 || e.U[2] != 0x4041 {
		t.Fatalf("IRQRoutingMSI = %+v", e)
	}
	c := IRQRoutingIRQChip(4, IRQChipIOAPIC, 4)
	if c.Type != IRQRoutingTypeIRQChip || c.U[0] != 2 || c.U[1] != 4 {
		t.Fatalf("IRQRoutingIRQChip = %+v", c)
	}
	var l LAPICState
	l.SetReg(0x80, 0xdeadbeef)
	if l.Reg(0x80) != 0xdeadbeef || l.Regs[0x80] != 0xef || l.Reg(0x81) != 0 || l.Reg(1024) != 0 || l.Reg(-4) != 0 {
		t.Fatal("LAPICState Reg/SetReg")
	}
	l.SetReg(1022, 1) // ignored, no panic
}
