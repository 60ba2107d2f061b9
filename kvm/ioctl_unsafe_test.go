package kvm

import (
	"testing"
	"unsafe"
)

// _IOC and friends from include/uapi/asm-generic/ioctl.h (x86 uses the
// generic encoding): nr bits 0-7, type bits 8-15, size bits 16-29, dir
// bits 30-31.
const (
	iocNone  = 0
	iocWrite = 1
	iocRead  = 2
	kvmio    = 0xAE
)

func ioc(dir, typ, nr, size uintptr) request {
	return request(dir<<30 | size<<16 | typ<<8 | nr)
}

// TestIoctlNumbers recomputes every request number from its kernel
// definition, using unsafe.Sizeof of this package's mirror for the size
// argument, and also pins the literal value (gcc on the 6.1 headers, the
// shared doc §1 for the newer ones).
func TestIoctlNumbers(t *testing.T) {
	var u64 uint64
	tests := []struct {
		req    request
		name   string
		dir    uintptr
		nr     uintptr
		size   uintptr
		golden uint32
	}{
		{kvmGetAPIVersion, "KVM_GET_API_VERSION", iocNone, 0x00, 0, 0x0000AE00},
		{kvmCreateVM, "KVM_CREATE_VM", iocNone, 0x01, 0, 0x0000AE01},
		{kvmGetMSRIndexList, "KVM_GET_MSR_INDEX_LIST", iocRead | iocWrite, 0x02, msrListHeaderSize, 0xC004AE02},
		{kvmCheckExtension, "KVM_CHECK_EXTENSION", iocNone, 0x03, 0, 0x0000AE03},
		{kvmGetVCPUMmapSize, "KVM_GET_VCPU_MMAP_SIZE", iocNone, 0x04, 0, 0x0000AE04},
		{kvmGetSupportedCPUID, "KVM_GET_SUPPORTED_CPUID", iocRead | iocWrite, 0x05, cpuid2HeaderSize, 0xC008AE05},
		{kvmGetMSRFeatureIdxList, "KVM_GET_MSR_FEATURE_INDEX_LIST", iocRead | iocWrite, 0x0a, msrListHeaderSize, 0xC004AE0A},
		{kvmCreateVCPU, "KVM_CREATE_VCPU", iocNone, 0x41, 0, 0x0000AE41},
		{kvmSetUserMemoryRegion, "KVM_SET_USER_MEMORY_REGION", iocWrite, 0x46, unsafe.Sizeof(UserspaceMemoryRegion{}), 0x4020AE46},
		{kvmSetTSSAddr, "KVM_SET_TSS_ADDR", iocNone, 0x47, 0, 0x0000AE47},
		{kvmSetIdentityMapAddr, "KVM_SET_IDENTITY_MAP_ADDR", iocWrite, 0x48, unsafe.Sizeof(u64), 0x4008AE48},
		{kvmSetUserMemoryRegion2, "KVM_SET_USER_MEMORY_REGION2", iocWrite, 0x49, unsafe.Sizeof(UserspaceMemoryRegion2{}), 0x40A0AE49},
		{kvmCreateIRQChip, "KVM_CREATE_IRQCHIP", iocNone, 0x60, 0, 0x0000AE60},
		{kvmIRQLine, "KVM_IRQ_LINE", iocWrite, 0x61, unsafe.Sizeof(irqLevel{}), 0x4008AE61},
		{kvmGetIRQChip, "KVM_GET_IRQCHIP", iocRead | iocWrite, 0x62, irqChipSize, 0xC208AE62},
		{kvmIRQLineStatus, "KVM_IRQ_LINE_STATUS", iocRead | iocWrite, 0x67, unsafe.Sizeof(irqLevel{}), 0xC008AE67},
		{kvmSetGSIRouting, "KVM_SET_GSI_ROUTING", iocWrite, 0x6a, irqRoutingHeaderSize, 0x4008AE6A},
		{kvmIRQFD, "KVM_IRQFD", iocWrite, 0x76, unsafe.Sizeof(irqfd{}), 0x4020AE76},
		{kvmCreatePIT2, "KVM_CREATE_PIT2", iocWrite, 0x77, unsafe.Sizeof(pitConfig{}), 0x4040AE77},
		{kvmIOEventFD, "KVM_IOEVENTFD", iocWrite, 0x79, unsafe.Sizeof(IOEventFD{}), 0x4040AE79},
		{kvmSetClock, "KVM_SET_CLOCK", iocWrite, 0x7b, unsafe.Sizeof(ClockData{}), 0x4030AE7B},
		{kvmGetClock, "KVM_GET_CLOCK", iocRead, 0x7c, unsafe.Sizeof(ClockData{}), 0x8030AE7C},
		{kvmEnableCap, "KVM_ENABLE_CAP", iocWrite, 0xa3, unsafe.Sizeof(enableCap{}), 0x4068AEA3},
		{kvmSignalMSI, "KVM_SIGNAL_MSI", iocWrite, 0xa5, unsafe.Sizeof(msi{}), 0x4020AEA5},
		{kvmSetMemoryAttributes, "KVM_SET_MEMORY_ATTRIBUTES", iocWrite, 0xd2, unsafe.Sizeof(memoryAttributes{}), 0x4020AED2},
		{kvmCreateGuestMemfd, "KVM_CREATE_GUEST_MEMFD", iocRead | iocWrite, 0xd4, unsafe.Sizeof(createGuestMemfd{}), 0xC040AED4},
		{kvmPreFaultMemory, "KVM_PRE_FAULT_MEMORY", iocRead | iocWrite, 0xd5, unsafe.Sizeof(preFaultMemory{}), 0xC040AED5},
		{kvmRun, "KVM_RUN", iocNone, 0x80, 0, 0x0000AE80},
		{kvmGetRegs, "KVM_GET_REGS", iocRead, 0x81, unsafe.Sizeof(Regs{}), 0x8090AE81},
		{kvmSetRegs, "KVM_SET_REGS", iocWrite, 0x82, unsafe.Sizeof(Regs{}), 0x4090AE82},
		{kvmGetSregs, "KVM_GET_SREGS", iocRead, 0x83, unsafe.Sizeof(Sregs{}), 0x8138AE83},
		{kvmSetSregs, "KVM_SET_SREGS", iocWrite, 0x84, unsafe.Sizeof(Sregs{}), 0x4138AE84},
		{kvmTranslate, "KVM_TRANSLATE", iocRead | iocWrite, 0x85, unsafe.Sizeof(Translation{}), 0xC018AE85},
		{kvmInterrupt, "KVM_INTERRUPT", iocWrite, 0x86, unsafe.Sizeof(interrupt{}), 0x4004AE86},
		{kvmGetMSRs, "KVM_GET_MSRS", iocRead | iocWrite, 0x88, msrsHeaderSize, 0xC008AE88},
		{kvmSetMSRs, "KVM_SET_MSRS", iocWrite, 0x89, msrsHeaderSize, 0x4008AE89},
		{kvmGetFPU, "KVM_GET_FPU", iocRead, 0x8c, unsafe.Sizeof(FPU{}), 0x81A0AE8C},
		{kvmSetFPU, "KVM_SET_FPU", iocWrite, 0x8d, unsafe.Sizeof(FPU{}), 0x41A0AE8D},
		{kvmGetLAPIC, "KVM_GET_LAPIC", iocRead, 0x8e, unsafe.Sizeof(LAPICState{}), 0x8400AE8E},
		{kvmSetLAPIC, "KVM_SET_LAPIC", iocWrite, 0x8f, unsafe.Sizeof(LAPICState{}), 0x4400AE8F},
		{kvmSetCPUID2, "KVM_SET_CPUID2", iocWrite, 0x90, cpuid2HeaderSize, 0x4008AE90},
		{kvmGetCPUID2, "KVM_GET_CPUID2", iocRead | iocWrite, 0x91, cpuid2HeaderSize, 0xC008AE91},
		{kvmGetMPState, "KVM_GET_MP_STATE", iocRead, 0x98, unsafe.Sizeof(mpState{}), 0x8004AE98},
		{kvmSetMPState, "KVM_SET_MP_STATE", iocWrite, 0x99, unsafe.Sizeof(mpState{}), 0x4004AE99},
		{kvmNMI, "KVM_NMI", iocNone, 0x9a, 0, 0x0000AE9A},
		{kvmSetGuestDebug, "KVM_SET_GUEST_DEBUG", iocWrite, 0x9b, unsafe.Sizeof(GuestDebug{}), 0x4048AE9B},
		{kvmGetVCPUEvents, "KVM_GET_VCPU_EVENTS", iocRead, 0x9f, unsafe.Sizeof(VCPUEvents{}), 0x8040AE9F},
		{kvmSetVCPUEvents, "KVM_SET_VCPU_EVENTS", iocWrite, 0xa0, unsafe.Sizeof(VCPUEvents{}), 0x4040AEA0},
		{kvmGetDebugRegs, "KVM_GET_DEBUGREGS", iocRead, 0xa1, unsafe.Sizeof(DebugRegs{}), 0x8080AEA1},
		{kvmSetDebugRegs, "KVM_SET_DEBUGREGS", iocWrite, 0xa2, unsafe.Sizeof(DebugRegs{}), 0x4080AEA2},
		{kvmGetTSCKHz, "KVM_GET_TSC_KHZ", iocNone, 0xa3, 0, 0x0000AEA3},
		{kvmGetXSave, "KVM_GET_XSAVE", iocRead, 0xa4, unsafe.Sizeof(XSave{}), 0x9000AEA4},
		{kvmSetXSave, "KVM_SET_XSAVE", iocWrite, 0xa5, unsafe.Sizeof(XSave{}), 0x5000AEA5},
	}
	seen := map[request]string{}
	for _, tc := range tests {
		if got := ioc(tc.dir, kvmio, tc.nr, tc.size); got != tc.req {
			t.Errorf("%s: table has %#x, _IOC(%d, KVMIO, %#x, %d) = %#x", tc.name, uintptr(tc.req), tc.dir, tc.nr, tc.size, uintptr(got))
		}
		if uint32(tc.req) != tc.golden {
			t.Errorf("%s = %#x, golden %#x", tc.name, uintptr(tc.req), tc.golden)
		}
		if s := tc.req.String(); s != tc.name {
			t.Errorf("%#x String() = %q, want %q", uintptr(tc.req), s, tc.name)
		}
		if prev, dup := seen[tc.req]; dup {
			t.Errorf("%s and %s share request %#x", prev, tc.name, uintptr(tc.req))
		}
		seen[tc.req] = tc.name
	}
	if s := request(0x1234).String(); s != "KVM_ioctl_0x1234" {
		t.Errorf("unknown request String() = %q", s)
	}
}
