package kvm

import (
	"testing"
	"unsafe"
)

// Sizes and offsets from gcc on include/uapi/linux/kvm.h (6.1) and, for
// the guest_memfd-era structs, docs/kvm-api.md §1.
func TestStructSizes(t *testing.T) {
	tests := []struct {
		name string
		got  uintptr
		want uintptr
	}{
		{"kvm_regs", unsafe.Sizeof(Regs{}), 144},
		{"kvm_segment", unsafe.Sizeof(Segment{}), 24},
		{"kvm_dtable", unsafe.Sizeof(DTable{}), 16},
		{"kvm_sregs", unsafe.Sizeof(Sregs{}), 312},
		{"kvm_fpu", unsafe.Sizeof(FPU{}), 416},
		{"kvm_lapic_state", unsafe.Sizeof(LAPICState{}), 1024},
		{"kvm_xsave", unsafe.Sizeof(XSave{}), 4096},
		{"kvm_vcpu_events", unsafe.Sizeof(VCPUEvents{}), 64},
		{"kvm_debugregs", unsafe.Sizeof(DebugRegs{}), 128},
		{"kvm_guest_debug", unsafe.Sizeof(GuestDebug{}), 72},
		{"kvm_cpuid_entry2", unsafe.Sizeof(CPUIDEntry{}), cpuidEntrySize},
		{"kvm_cpuid_entry2 (literal)", cpuidEntrySize, 40},
		{"kvm_msr_entry", unsafe.Sizeof(MSREntry{}), msrEntrySize},
		{"kvm_msr_entry (literal)", msrEntrySize, 16},
		{"kvm_irq_routing_entry", unsafe.Sizeof(IRQRoutingEntry{}), irqRoutingEntrySize},
		{"kvm_irq_routing_entry (literal)", irqRoutingEntrySize, 48},
		{"kvm_ioeventfd", unsafe.Sizeof(IOEventFD{}), 64},
		{"kvm_irqfd", unsafe.Sizeof(irqfd{}), 32},
		{"kvm_translation", unsafe.Sizeof(Translation{}), 24},
		{"kvm_userspace_memory_region", unsafe.Sizeof(UserspaceMemoryRegion{}), 32},
		{"kvm_userspace_memory_region2", unsafe.Sizeof(UserspaceMemoryRegion2{}), 160},
		{"kvm_create_guest_memfd", unsafe.Sizeof(createGuestMemfd{}), 64},
		{"kvm_memory_attributes", unsafe.Sizeof(memoryAttributes{}), 32},
		{"kvm_pre_fault_memory", unsafe.Sizeof(preFaultMemory{}), 64},
		{"kvm_enable_cap", unsafe.Sizeof(enableCap{}), 104},
		{"kvm_msi", unsafe.Sizeof(msi{}), 32},
		{"kvm_irq_level", unsafe.Sizeof(irqLevel{}), 8},
		{"kvm_pit_config", unsafe.Sizeof(pitConfig{}), 64},
		{"kvm_clock_data", unsafe.Sizeof(ClockData{}), 48},
		{"kvm_mp_state", unsafe.Sizeof(mpState{}), 4},
		{"kvm_interrupt", unsafe.Sizeof(interrupt{}), 4},
		{"kvm_run", RunSize, 2352},
	}
	for _, tc := range tests {
		if tc.got != tc.want {
			t.Errorf("sizeof(%s) = %d, want %d", tc.name, tc.got, tc.want)
		}
	}
}

func TestFieldOffsets(t *testing.T) {
	var (
		regs  Regs
		seg   Segment
		dt    DTable
		sregs Sregs
		fpu   FPU
		ev    VCPUEvents
		dr    DebugRegs
		gd    GuestDebug
		cpuid CPUIDEntry
		msr   MSREntry
		route IRQRoutingEntry
		ioe   IOEventFD
		irqf  irqfd
		tr    Translation
		r1    UserspaceMemoryRegion
		r2    UserspaceMemoryRegion2
		gm    createGuestMemfd
		ma    memoryAttributes
		ec    enableCap
		m     msi
		clk   ClockData
	)
	tests := []struct {
		name string
		got  uintptr
		want uintptr
	}{
		{"kvm_regs.rip", unsafe.Offsetof(regs.RIP), 128},
		{"kvm_regs.rflags", unsafe.Offsetof(regs.RFLAGS), 136},
		{"kvm_regs.r15", unsafe.Offsetof(regs.R15), 120},
		{"kvm_segment.limit", unsafe.Offsetof(seg.Limit), 8},
		{"kvm_segment.selector", unsafe.Offsetof(seg.Selector), 12},
		{"kvm_segment.type", unsafe.Offsetof(seg.Type), 14},
		{"kvm_segment.unusable", unsafe.Offsetof(seg.Unusable), 22},
		{"kvm_segment.padding", unsafe.Offsetof(seg.Padding), 23},
		{"kvm_dtable.limit", unsafe.Offsetof(dt.Limit), 8},
		{"kvm_dtable.padding", unsafe.Offsetof(dt.Padding), 10},
		{"kvm_sregs.ldt", unsafe.Offsetof(sregs.LDT), 168},
		{"kvm_sregs.gdt", unsafe.Offsetof(sregs.GDT), 192},
		{"kvm_sregs.idt", unsafe.Offsetof(sregs.IDT), 208},
		{"kvm_sregs.cr0", unsafe.Offsetof(sregs.CR0), 224},
		{"kvm_sregs.efer", unsafe.Offsetof(sregs.EFER), 264},
		{"kvm_sregs.apic_base", unsafe.Offsetof(sregs.ApicBase), 272},
		{"kvm_sregs.interrupt_bitmap", unsafe.Offsetof(sregs.InterruptBitmap), 280},
		{"kvm_fpu.fcw", unsafe.Offsetof(fpu.FCW), 128},
		{"kvm_fpu.ftwx", unsafe.Offsetof(fpu.FTWX), 132},
		{"kvm_fpu.last_opcode", unsafe.Offsetof(fpu.LastOpcode), 134},
		{"kvm_fpu.last_ip", unsafe.Offsetof(fpu.LastIP), 136},
		{"kvm_fpu.last_dp", unsafe.Offsetof(fpu.LastDP), 144},
		{"kvm_fpu.xmm", unsafe.Offsetof(fpu.XMM), 152},
		{"kvm_fpu.mxcsr", unsafe.Offsetof(fpu.MXCSR), 408},
		{"kvm_vcpu_events.exception.error_code", unsafe.Offsetof(ev.Exception) + unsafe.Offsetof(ev.Exception.ErrorCode), 4},
		{"kvm_vcpu_events.interrupt", unsafe.Offsetof(ev.Interrupt), 8},
		{"kvm_vcpu_events.nmi", unsafe.Offsetof(ev.NMI), 12},
		{"kvm_vcpu_events.sipi_vector", unsafe.Offsetof(ev.SIPIVector), 16},
		{"kvm_vcpu_events.flags", unsafe.Offsetof(ev.Flags), 20},
		{"kvm_vcpu_events.smi", unsafe.Offsetof(ev.SMI), 24},
		{"kvm_vcpu_events.triple_fault", unsafe.Offsetof(ev.TripleFaultPending), 28},
		{"kvm_vcpu_events.reserved", unsafe.Offsetof(ev.Reserved), 29},
		{"kvm_vcpu_events.exception_has_payload", unsafe.Offsetof(ev.ExceptionHasPayload), 55},
		{"kvm_vcpu_events.exception_payload", unsafe.Offsetof(ev.ExceptionPayload), 56},
		{"kvm_debugregs.dr6", unsafe.Offsetof(dr.DR6), 32},
		{"kvm_debugregs.dr7", unsafe.Offsetof(dr.DR7), 40},
		{"kvm_debugregs.flags", unsafe.Offsetof(dr.Flags), 48},
		{"kvm_debugregs.reserved", unsafe.Offsetof(dr.Reserved), 56},
		{"kvm_guest_debug.arch", unsafe.Offsetof(gd.DebugReg), 8},
		{"kvm_cpuid_entry2.eax", unsafe.Offsetof(cpuid.EAX), 12},
		{"kvm_cpuid_entry2.padding", unsafe.Offsetof(cpuid.Padding), 28},
		{"kvm_msr_entry.data", unsafe.Offsetof(msr.Data), 8},
		{"kvm_irq_routing_entry.type", unsafe.Offsetof(route.Type), 4},
		{"kvm_irq_routing_entry.u", unsafe.Offsetof(route.U), 16},
		{"kvm_ioeventfd.len", unsafe.Offsetof(ioe.Len), 16},
		{"kvm_ioeventfd.fd", unsafe.Offsetof(ioe.FD), 20},
		{"kvm_ioeventfd.flags", unsafe.Offsetof(ioe.Flags), 24},
		{"kvm_ioeventfd.pad", unsafe.Offsetof(ioe.Pad), 28},
		{"kvm_irqfd.resamplefd", unsafe.Offsetof(irqf.ResampleFD), 12},
		{"kvm_irqfd.pad", unsafe.Offsetof(irqf.Pad), 16},
		{"kvm_translation.valid", unsafe.Offsetof(tr.Valid), 16},
		{"kvm_translation.usermode", unsafe.Offsetof(tr.Usermode), 18},
		{"kvm_userspace_memory_region.userspace_addr", unsafe.Offsetof(r1.UserspaceAddr), 24},
		{"kvm_userspace_memory_region2.guest_memfd_offset", unsafe.Offsetof(r2.GuestMemfdOffset), 32},
		{"kvm_userspace_memory_region2.guest_memfd", unsafe.Offsetof(r2.GuestMemfd), 40},
		{"kvm_userspace_memory_region2.pad1", unsafe.Offsetof(r2.Pad1), 44},
		{"kvm_userspace_memory_region2.pad2", unsafe.Offsetof(r2.Pad2), 48},
		{"kvm_create_guest_memfd.flags", unsafe.Offsetof(gm.Flags), 8},
		{"kvm_create_guest_memfd.reserved", unsafe.Offsetof(gm.Reserved), 16},
		{"kvm_memory_attributes.attributes", unsafe.Offsetof(ma.Attributes), 16},
		{"kvm_memory_attributes.flags", unsafe.Offsetof(ma.Flags), 24},
		{"kvm_enable_cap.args", unsafe.Offsetof(ec.Args), 8},
		{"kvm_enable_cap.pad", unsafe.Offsetof(ec.Pad), 40},
		{"kvm_msi.devid", unsafe.Offsetof(m.DevID), 16},
		{"kvm_msi.pad", unsafe.Offsetof(m.Pad), 20},
		{"kvm_clock_data.realtime", unsafe.Offsetof(clk.Realtime), 16},
		{"kvm_clock_data.host_tsc", unsafe.Offsetof(clk.HostTSC), 24},
		{"kvm_clock_data.pad", unsafe.Offsetof(clk.Pad), 32},
	}
	for _, tc := range tests {
		if tc.got != tc.want {
			t.Errorf("offsetof(%s) = %d, want %d", tc.name, tc.got, tc.want)
		}
	}
}

// TestRunOffsets pins the kvm_run offsets used by the decoders (gcc on the
// 6.1 header; memory_fault from docs/kvm-api.md §3.1).
func TestRunOffsets(t *testing.T) {
	tests := []struct {
		name      string
		got, want int
	}{
		{"immediate_exit", RunOffImmediateExit, 1},
		{"exit_reason", RunOffExitReason, 8},
		{"ready_for_interrupt_injection", RunOffReadyForInjection, 12},
		{"if_flag", RunOffIFFlag, 13},
		{"flags", RunOffFlags, 14},
		{"cr8", RunOffCR8, 16},
		{"apic_base", RunOffApicBase, 24},
		{"union", RunOffUnion, 32},
		{"union end (kvm_valid_regs)", RunOffUnion + RunUnionSize, 288},
		{"io.direction", RunOffIODirection, 32},
		{"io.size", RunOffIOSize, 33},
		{"io.port", RunOffIOPort, 34},
		{"io.count", RunOffIOCount, 36},
		{"io.data_offset", RunOffIODataOffset, 40},
		{"mmio.phys_addr", RunOffMMIOPhysAddr, 32},
		{"mmio.data", RunOffMMIOData, 40},
		{"mmio.len", RunOffMMIOLen, 48},
		{"mmio.is_write", RunOffMMIOIsWrite, 52},
		{"debug.arch.exception", RunOffDebugException, 32},
		{"debug.arch.pc", RunOffDebugPC, 40},
		{"debug.arch.dr6", RunOffDebugDR6, 48},
		{"debug.arch.dr7", RunOffDebugDR7, 56},
		{"hypercall.nr", RunOffHypercallNr, 32},
		{"hypercall.args", RunOffHypercallArgs, 40},
		{"hypercall.ret", RunOffHypercallRet, 88},
		{"hypercall.flags", RunOffHypercallFlags, 96},
		{"fail_entry.hardware_entry_failure_reason", RunOffFailEntryReason, 32},
		{"fail_entry.cpu", RunOffFailEntryCPU, 40},
		{"internal.suberror", RunOffInternalSuberror, 32},
		{"internal.ndata", RunOffInternalNData, 36},
		{"internal.data", RunOffInternalData, 40},
		{"emulation_failure.flags", RunOffEmulationFlags, 40},
		{"emulation_failure.insn_size", RunOffEmulationInsnLen, 48},
		{"emulation_failure.insn_bytes", RunOffEmulationInsn, 49},
		{"system_event.type", RunOffSystemEventType, 32},
		{"system_event.ndata", RunOffSystemEventNData, 36},
		{"system_event.data", RunOffSystemEventData, 40},
		{"memory_fault.flags", RunOffMemFaultFlags, 32},
		{"memory_fault.gpa", RunOffMemFaultGPA, 40},
		{"memory_fault.size", RunOffMemFaultSize, 48},
		// The largest union members must fit in the 256-byte union.
		{"internal.data end <= union end", min(RunOffInternalData+8*internalMaxData, 288), RunOffInternalData + 8*internalMaxData},
		{"insn_bytes end", RunOffEmulationInsn + emulationInsnMax, 64},
	}
	for _, tc := range tests {
		if tc.got != tc.want {
			t.Errorf("kvm_run.%s at %d, want %d", tc.name, tc.got, tc.want)
		}
	}
}
