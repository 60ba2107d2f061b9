package kvm

// Go mirrors of the kernel's x86_64 KVM structs (include/uapi/linux/kvm.h,
// arch/x86/include/uapi/asm/kvm.h). Field order, widths and explicit padding
// follow the C definitions exactly; layout_test.go pins every size and the
// offsets that matter. Reserved and padding fields must be zero when passed
// to the kernel unless noted.

// Regs mirrors struct kvm_regs (144 bytes): KVM_GET_REGS / KVM_SET_REGS.
type Regs struct {
	RAX, RBX, RCX, RDX uint64
	RSI, RDI, RSP, RBP uint64
	R8, R9, R10, R11   uint64
	R12, R13, R14, R15 uint64
	RIP, RFLAGS        uint64
}

// Segment mirrors struct kvm_segment (24 bytes). Type is the 4-bit
// descriptor type; the single-bit attributes are one byte each.
type Segment struct {
	Base     uint64
	Limit    uint32
	Selector uint16
	Type     uint8
	Present  uint8
	DPL      uint8
	DB       uint8
	S        uint8
	L        uint8
	G        uint8
	AVL      uint8
	Unusable uint8
	Padding  uint8
}

// DTable mirrors struct kvm_dtable (16 bytes): a GDTR/IDTR value.
type DTable struct {
	Base    uint64
	Limit   uint16
	Padding [3]uint16
}

// Sregs mirrors struct kvm_sregs (312 bytes): KVM_GET_SREGS / KVM_SET_SREGS.
// InterruptBitmap holds one bit per pending external interrupt vector
// (KVM_NR_INTERRUPTS = 256); at most one bit may be set on SET_SREGS.
type Sregs struct {
	CS, DS, ES, FS, GS, SS Segment
	TR, LDT                Segment
	GDT, IDT               DTable
	CR0, CR2, CR3, CR4     uint64
	CR8                    uint64
	EFER                   uint64
	ApicBase               uint64
	InterruptBitmap        [4]uint64
}

// FPU mirrors struct kvm_fpu (416 bytes): KVM_GET_FPU / KVM_SET_FPU, the
// legacy FXSAVE-style x87/SSE state. KVM does not transfer MXCSR through
// these ioctls (it reads back as 0 and is ignored on set); MXCSR travels
// with KVM_GET/SET_XSAVE.
type FPU struct {
	FPR        [8][16]uint8
	FCW        uint16
	FSW        uint16
	FTWX       uint8 // abridged tag word, as in FXSAVE
	Pad1       uint8
	LastOpcode uint16
	LastIP     uint64
	LastDP     uint64
	XMM        [16][16]uint8
	MXCSR      uint32
	Pad2       uint32
}

// XSave mirrors struct kvm_xsave (4096 bytes): KVM_GET_XSAVE /
// KVM_SET_XSAVE, the vCPU's x87/SSE/extended state in the XSAVE standard
// format (bytes 0..511 the FXSAVE legacy area, 512..575 the XSAVE header;
// hosts without XSAVE fill only the legacy area and the header's
// XSTATE_BV). KVM_SET_XSAVE loads MXCSR only when XSTATE_BV has the SSE
// (bit 1) or AVX (bit 2) component.
type XSave struct {
	Region [4096]uint8
}

// Offsets into XSave.Region (SDM Vol. 1 §10.5.1, §13.4.2).
const (
	XSaveMXCSR     = 24  // u32 MXCSR
	XSaveMXCSRMask = 28  // u32 MXCSR_MASK (0: the default 0xFFBF)
	XSaveXStateBV  = 512 // u64 XSTATE_BV
	XStateSSE      = 1 << 1
)

// LAPICState mirrors struct kvm_lapic_state (1024 bytes): the local APIC
// register page as KVM_GET_LAPIC / KVM_SET_LAPIC see it (register at offset
// off is the little-endian u32 at Regs[off:off+4]; see Reg / SetReg).
type LAPICState struct {
	Regs [1024]uint8
}

// Reg returns the 32-bit local APIC register at byte offset off (for
// example 0x20 ID, 0x80 TPR, 0xF0 SVR, 0x350 LVT LINT0). Offsets outside
// the page or not 4-byte aligned return 0.
func (l *LAPICState) Reg(off int) uint32 {
	if off < 0 || off+4 > len(l.Regs) || off%4 != 0 {
		return 0
	}
	b := l.Regs[off : off+4]
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}

// SetReg sets the 32-bit local APIC register at byte offset off. Offsets
// outside the page or not 4-byte aligned are ignored.
func (l *LAPICState) SetReg(off int, v uint32) {
	if off < 0 || off+4 > len(l.Regs) || off%4 != 0 {
		return
	}
	l.Regs[off] = byte(v)
	l.Regs[off+1] = byte(v >> 8)
	l.Regs[off+2] = byte(v >> 16)
	l.Regs[off+3] = byte(v >> 24)
}

// ExceptionEvent is the exception part of struct kvm_vcpu_events.
type ExceptionEvent struct {
	Injected     uint8
	Nr           uint8
	HasErrorCode uint8
	Pending      uint8
	ErrorCode    uint32
}

// InterruptEvent is the interrupt part of struct kvm_vcpu_events.
type InterruptEvent struct {
	Injected uint8
	Nr       uint8
	Soft     uint8
	Shadow   uint8 // KVM_X86_SHADOW_INT_MOV_SS | KVM_X86_SHADOW_INT_STI
}

// NMIEvent is the nmi part of struct kvm_vcpu_events.
type NMIEvent struct {
	Injected uint8
	Pending  uint8
	Masked   uint8
	Pad      uint8
}

// SMIEvent is the smi part of struct kvm_vcpu_events.
type SMIEvent struct {
	SMM          uint8
	Pending      uint8
	SMMInsideNMI uint8
	LatchedInit  uint8
}

// VCPUEvents mirrors struct kvm_vcpu_events (64 bytes):
// KVM_GET_VCPU_EVENTS / KVM_SET_VCPU_EVENTS (api.rst 4.31/4.32). Flags
// selects which optional fields SET applies (VCPUEventValid*).
type VCPUEvents struct {
	Exception           ExceptionEvent
	Interrupt           InterruptEvent
	NMI                 NMIEvent
	SIPIVector          uint32
	Flags               uint32
	SMI                 SMIEvent
	TripleFaultPending  uint8
	Reserved            [26]uint8
	ExceptionHasPayload uint8
	ExceptionPayload    uint64
}

// DebugRegs mirrors struct kvm_debugregs (128 bytes): KVM_GET_DEBUGREGS /
// KVM_SET_DEBUGREGS. Flags must be 0.
type DebugRegs struct {
	DB       [4]uint64
	DR6      uint64
	DR7      uint64
	Flags    uint64
	Reserved [9]uint64
}

// GuestDebug mirrors struct kvm_guest_debug (72 bytes) for
// KVM_SET_GUEST_DEBUG: Control is a GuestDbg* mask; DebugReg holds
// DR0-DR3, DR6 (unused) and DR7 for hardware breakpoints (entries 4 and 5
// are reserved by the x86 struct kvm_guest_debug_arch layout: debugreg[8]).
type GuestDebug struct {
	Control  uint32
	Pad      uint32
	DebugReg [8]uint64
}

// CPUIDEntry mirrors struct kvm_cpuid_entry2 (40 bytes).
type CPUIDEntry struct {
	Function uint32
	Index    uint32
	Flags    uint32 // CPUIDFlag*
	EAX      uint32
	EBX      uint32
	ECX      uint32
	EDX      uint32
	Padding  [3]uint32
}

// MSREntry mirrors struct kvm_msr_entry (16 bytes).
type MSREntry struct {
	Index    uint32
	Reserved uint32
	Data     uint64
}

// IRQRoutingEntry mirrors struct kvm_irq_routing_entry (48 bytes). U is
// the union (irqchip, msi, adapter, hv_sint, xen_evtchn) as eight u32; use
// IRQRoutingIRQChip and IRQRoutingMSI to fill it.
type IRQRoutingEntry struct {
	GSI   uint32
	Type  uint32 // IRQRouting*
	Flags uint32
	Pad   uint32
	U     [8]uint32
}

// IRQRoutingIRQChip returns a KVM_IRQ_ROUTING_IRQCHIP entry routing gsi to
// pin of chip (IRQChipPICMaster, IRQChipPICSlave, IRQChipIOAPIC).
func IRQRoutingIRQChip(gsi, chip, pin uint32) IRQRoutingEntry {
	e := IRQRoutingEntry{GSI: gsi, Type: IRQRoutingTypeIRQChip}
	e.U[0] = chip // kvm_irq_routing_irqchip.irqchip
	e.U[1] = pin  // kvm_irq_routing_irqchip.pin
	return e
}

// IRQRoutingMSI returns a KVM_IRQ_ROUTING_MSI entry that makes gsi deliver
// the MSI (addr, data).
func IRQRoutingMSI(gsi uint32, addr uint64, data uint32) IRQRoutingEntry {
	e := IRQRoutingEntry{GSI: gsi, Type: IRQRoutingTypeMSI}
	e.U[0] = uint32(addr)       // kvm_irq_routing_msi.address_lo
	e.U[1] = uint32(addr >> 32) // address_hi
	e.U[2] = data               // data
	return e
}

// IOEventFD mirrors struct kvm_ioeventfd (64 bytes): KVM_IOEVENTFD. Flags
// is a mask of IOEventFDFlag*.
type IOEventFD struct {
	Datamatch uint64
	Addr      uint64
	Len       uint32
	FD        int32
	Flags     uint32
	Pad       [36]uint8
}

// irqfd mirrors struct kvm_irqfd (32 bytes).
type irqfd struct {
	FD         uint32
	GSI        uint32
	Flags      uint32
	ResampleFD uint32
	Pad        [16]uint8
}

// Translation mirrors struct kvm_translation (24 bytes): KVM_TRANSLATE.
type Translation struct {
	LinearAddress   uint64
	PhysicalAddress uint64
	Valid           uint8
	Writeable       uint8
	Usermode        uint8
	Pad             [5]uint8
}

// UserspaceMemoryRegion mirrors struct kvm_userspace_memory_region
// (32 bytes). Slot bits 16-31 are the address space id.
type UserspaceMemoryRegion struct {
	Slot          uint32
	Flags         uint32 // Mem*
	GuestPhysAddr uint64
	MemorySize    uint64 // 0 deletes the slot
	UserspaceAddr uint64
}

// UserspaceMemoryRegion2 mirrors struct kvm_userspace_memory_region2
// (160 bytes, api.rst 4.140). With Flags&MemGuestMemfd the slot is backed
// by GuestMemfd at GuestMemfdOffset.
type UserspaceMemoryRegion2 struct {
	Slot             uint32
	Flags            uint32 // Mem*
	GuestPhysAddr    uint64
	MemorySize       uint64
	UserspaceAddr    uint64
	GuestMemfdOffset uint64
	GuestMemfd       uint32
	Pad1             uint32
	Pad2             [14]uint64
}

// createGuestMemfd mirrors struct kvm_create_guest_memfd (64 bytes).
type createGuestMemfd struct {
	Size     uint64
	Flags    uint64
	Reserved [6]uint64
}

// memoryAttributes mirrors struct kvm_memory_attributes (32 bytes).
type memoryAttributes struct {
	Address    uint64
	Size       uint64
	Attributes uint64
	Flags      uint64
}

// preFaultMemory mirrors struct kvm_pre_fault_memory (64 bytes).
type preFaultMemory struct {
	GPA     uint64
	Size    uint64
	Flags   uint64
	Padding [5]uint64
}

// enableCap mirrors struct kvm_enable_cap (104 bytes).
type enableCap struct {
	Cap   uint32
	Flags uint32
	Args  [4]uint64
	Pad   [64]uint8
}

// msi mirrors struct kvm_msi (32 bytes).
type msi struct {
	AddressLo uint32
	AddressHi uint32
	Data      uint32
	Flags     uint32
	DevID     uint32
	Pad       [12]uint8
}

// irqLevel mirrors struct kvm_irq_level (8 bytes); the first word is the
// irq on input and the status on output (KVM_IRQ_LINE_STATUS).
type irqLevel struct {
	IRQ   uint32
	Level uint32
}

// pitConfig mirrors struct kvm_pit_config (64 bytes).
type pitConfig struct {
	Flags uint32
	Pad   [15]uint32
}

// ClockData mirrors struct kvm_clock_data (48 bytes): KVM_GET_CLOCK /
// KVM_SET_CLOCK, the kvmclock time in ns.
type ClockData struct {
	Clock    uint64
	Flags    uint32 // ClockTSCStable | ClockRealtime | ClockHostTSC
	Pad0     uint32
	Realtime uint64
	HostTSC  uint64
	Pad      [4]uint32
}

// mpState mirrors struct kvm_mp_state (4 bytes).
type mpState struct {
	State uint32
}

// interrupt mirrors struct kvm_interrupt (4 bytes).
type interrupt struct {
	IRQ uint32
}

// Header sizes of the variable-length structs built in byte buffers.
const (
	cpuid2HeaderSize     = 8   // struct kvm_cpuid2 { __u32 nent; __u32 padding; entries[] }
	msrsHeaderSize       = 8   // struct kvm_msrs { __u32 nmsrs; __u32 pad; entries[] }
	msrListHeaderSize    = 4   // struct kvm_msr_list { __u32 nmsrs; __u32 indices[] }
	irqChipSize          = 520 // struct kvm_irqchip { __u32 chip_id; __u32 pad; union { char dummy[512]; ... } chip; }
	irqRoutingHeaderSize = 8   // struct kvm_irq_routing { __u32 nr; __u32 flags; entries[] }
	cpuidEntrySize       = 40
	msrEntrySize         = 16
	irqRoutingEntrySize  = 48
)
