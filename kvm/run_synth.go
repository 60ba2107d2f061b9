package kvm

import "fmt"

// Encoders for synthetic exits: tests (here and in the VMM) use them with
// NewRun to feed exits that this host cannot produce, e.g.
// KVM_EXIT_HYPERCALL for KVM_HC_MAP_GPA_RANGE or KVM_EXIT_MEMORY_FAULT.
// Each Put method also sets exit_reason. Writes beyond the buffer are
// dropped; methods that place variable data return an error instead.

// SetExitReason writes kvm_run.exit_reason.
func (r *Run) SetExitReason(e ExitReason) { r.put32(RunOffExitReason, uint32(e)) }

// PutIO writes a KVM_EXIT_IO. e.Data (Size*Count bytes) is copied to
// e.DataOffset, which must lie after struct kvm_run and inside the buffer.
func (r *Run) PutIO(e IOExit) error {
	n := uint64(e.Size) * uint64(e.Count)
	if uint64(len(e.Data)) != n {
		return fmt.Errorf("kvm: synthetic io: %d data bytes for size %d count %d", len(e.Data), e.Size, e.Count)
	}
	if e.DataOffset < RunSize || e.DataOffset > uint64(len(r.b)) || n > uint64(len(r.b))-e.DataOffset {
		return fmt.Errorf("kvm: synthetic io: %d bytes at %#x do not fit a %d-byte run area", n, e.DataOffset, len(r.b))
	}
	r.SetExitReason(ExitIO)
	r.put8(RunOffIODirection, e.Direction)
	r.put8(RunOffIOSize, e.Size)
	r.put16(RunOffIOPort, e.Port)
	r.put32(RunOffIOCount, e.Count)
	r.put64(RunOffIODataOffset, e.DataOffset)
	copy(r.b[e.DataOffset:], e.Data)
	return nil
}

// PutMMIO writes a KVM_EXIT_MMIO; len(e.Data) must equal e.Len (1..8).
func (r *Run) PutMMIO(e MMIOExit) error {
	if e.Len == 0 || e.Len > 8 || len(e.Data) != int(e.Len) {
		return fmt.Errorf("kvm: synthetic mmio: len %d with %d data bytes", e.Len, len(e.Data))
	}
	if len(r.b) < RunOffMMIOIsWrite+1 {
		return fmt.Errorf("kvm: synthetic mmio: run area of %d bytes", len(r.b))
	}
	r.SetExitReason(ExitMMIO)
	r.put64(RunOffMMIOPhysAddr, e.PhysAddr)
	clear(r.b[RunOffMMIOData : RunOffMMIOData+8])
	copy(r.b[RunOffMMIOData:], e.Data)
	r.put32(RunOffMMIOLen, e.Len)
	r.put8(RunOffMMIOIsWrite, b2u8(e.IsWrite))
	return nil
}

// PutHypercall writes a KVM_EXIT_HYPERCALL.
func (r *Run) PutHypercall(h HypercallExit) {
	r.SetExitReason(ExitHypercall)
	r.put64(RunOffHypercallNr, h.Nr)
	for i, a := range h.Args {
		r.put64(RunOffHypercallArgs+8*i, a)
	}
	r.put64(RunOffHypercallRet, h.Ret)
	r.put64(RunOffHypercallFlags, h.Flags)
}

// PutMemoryFault writes a KVM_EXIT_MEMORY_FAULT.
func (r *Run) PutMemoryFault(m MemoryFaultExit) {
	r.SetExitReason(ExitMemoryFault)
	r.put64(RunOffMemFaultFlags, m.Flags)
	r.put64(RunOffMemFaultGPA, m.GPA)
	r.put64(RunOffMemFaultSize, m.Size)
}

// PutInternalError writes a KVM_EXIT_INTERNAL_ERROR with e.Data as
// internal.data (ndata = len(e.Data), at most 16). For an emulation
// failure with instruction bytes, pass Suberror InternalErrorEmulation and
// InsnBytes (at most 15): Data[0] is then forced to include the flag and
// Data is extended to at least 3 entries, as the kernel does.
func (r *Run) PutInternalError(e InternalErrorExit) error {
	data := append([]uint64(nil), e.Data...)
	if len(e.InsnBytes) > 0 {
		if e.Suberror != InternalErrorEmulation || len(e.InsnBytes) > emulationInsnMax {
			return fmt.Errorf("kvm: synthetic internal error: %d instruction bytes with suberror %d", len(e.InsnBytes), e.Suberror)
		}
		for len(data) < 3 {
			data = append(data, 0)
		}
		data[0] |= InternalErrorEmulationFlagInsnBytes
	}
	if len(data) > internalMaxData {
		return fmt.Errorf("kvm: synthetic internal error: %d data words", len(data))
	}
	if len(r.b) < RunOffInternalData+8*len(data) || len(r.b) < RunOffEmulationInsn+emulationInsnMax {
		return fmt.Errorf("kvm: synthetic internal error: run area of %d bytes", len(r.b))
	}
	r.SetExitReason(ExitInternalError)
	r.put32(RunOffInternalSuberror, e.Suberror)
	r.put32(RunOffInternalNData, uint32(len(data)))
	for i, d := range data {
		r.put64(RunOffInternalData+8*i, d)
	}
	if len(e.InsnBytes) > 0 {
		r.put8(RunOffEmulationInsnLen, uint8(len(e.InsnBytes)))
		insn := r.b[RunOffEmulationInsn : RunOffEmulationInsn+emulationInsnMax]
		for i := range insn {
			insn[i] = 0x90 // the kernel pads with NOPs
		}
		copy(insn, e.InsnBytes)
	}
	return nil
}

// PutSystemEvent writes a KVM_EXIT_SYSTEM_EVENT with ndata = len(e.Data)
// (at most 16; data[0] doubles as the legacy flags).
func (r *Run) PutSystemEvent(e SystemEventExit) error {
	if len(e.Data) > internalMaxData {
		return fmt.Errorf("kvm: synthetic system event: %d data words", len(e.Data))
	}
	r.SetExitReason(ExitSystemEvent)
	r.put32(RunOffSystemEventType, e.Type)
	r.put32(RunOffSystemEventNData, uint32(len(e.Data)))
	if len(e.Data) == 0 {
		r.put64(RunOffSystemEventData, e.Flags)
	}
	for i, d := range e.Data {
		r.put64(RunOffSystemEventData+8*i, d)
	}
	return nil
}

// PutDebug writes a KVM_EXIT_DEBUG.
func (r *Run) PutDebug(d DebugExit) {
	r.SetExitReason(ExitDebug)
	r.put32(RunOffDebugException, d.Exception)
	r.put64(RunOffDebugPC, d.PC)
	r.put64(RunOffDebugDR6, d.DR6)
	r.put64(RunOffDebugDR7, d.DR7)
}

// PutFailEntry writes a KVM_EXIT_FAIL_ENTRY.
func (r *Run) PutFailEntry(f FailEntryExit) {
	r.SetExitReason(ExitFailEntry)
	r.put64(RunOffFailEntryReason, f.HardwareReason)
	r.put32(RunOffFailEntryCPU, f.CPU)
}
