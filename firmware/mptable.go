package firmware

import (
	"encoding/binary"
	"fmt"

	"github.com/vmmgo/vmm/memory"
)

// Intel MultiProcessor Specification 1.4, chapter 4: the floating pointer
// structure followed by the configuration table. Linux uses it only when ACPI
// is off (acpi=off) or absent.
const (
	mpFloatSize     = 16
	mpHeaderSize    = 44
	mpAPICVer       = 0x14 // integrated local APIC
	mpIOAPICVer     = 0x11
	mpCPUEnabled    = 1
	mpCPUBSP        = 2
	mpEntryCPU      = 0
	mpEntryBus      = 1
	mpEntryIOAPIC   = 2
	mpEntryIOInt    = 3
	mpEntryLocalInt = 4
	mpIntINT        = 0
	mpIntNMI        = 1
	mpIntExtINT     = 3
	mpISAIRQs       = 16
)

// WriteMPTable writes the MP floating pointer at addr (16-byte aligned, in a
// range Linux scans: the EBDA's first KiB, 0x9FC00, or 0xF0000-0xFFFFF) and
// the configuration table right after it: ncpus processors (APIC IDs 0..n-1,
// CPU 0 the BSP), an ISA bus, the IOAPIC (id ncpus at DefaultIOAPICAddr),
// ISA IRQs on IOAPIC pins (IRQ0 on pin 2, ExtINT on pin 0, no IRQ2), LINT0 ExtINT
// and LINT1 NMI. It returns the first address after the table.
func WriteMPTable(mem Memory, addr memory.GPA, ncpus int) (memory.GPA, error) {
	if ncpus < 1 || ncpus > 254 {
		return 0, fmt.Errorf("MP table: %d CPUs, want 1..254", ncpus)
	}
	if addr%16 != 0 {
		return 0, fmt.Errorf("MP table: address %v not 16-byte aligned", addr)
	}
	le := binary.LittleEndian
	ioapicID := byte(ncpus)
	t := make([]byte, mpHeaderSize)
	copy(t[0:4], "PCMP")
	t[6] = 4 // spec revision 1.4
	copy(t[8:16], "VMMGO   ")
	copy(t[16:28], "VMMGO VMM   ")
	le.PutUint32(t[36:], uint32(DefaultLAPICAddr))
	n := 0
	for i := 0; i < ncpus; i++ {
		flags := byte(mpCPUEnabled)
		if i == 0 {
			flags |= mpCPUBSP
		}
		e := []byte{mpEntryCPU, byte(i), mpAPICVer, flags}
		e = le.AppendUint32(e, 0x600) // CPU signature: family 6
		e = le.AppendUint32(e, 0x201) // features: FPU, APIC
		t = append(append(t, e...), make([]byte, 8)...)
		n++
	}
	t = append(t, mpEntryBus, 0, 'I', 'S', 'A', ' ', ' ', ' ')
	n++
	t = append(t, mpEntryIOAPIC, ioapicID, mpIOAPICVer, 1)
	t = le.AppendUint32(t, uint32(DefaultIOAPICAddr))
	n++
	// The 8259 output (ExtINT) on pin 0; ISA IRQs 1..15 on the same pin
	// numbers except IRQ0 (PIT), which is wired to pin 2, and IRQ2, the
	// cascade, which never reaches the IOAPIC.
	t = append(t, mpEntryIOInt, mpIntExtINT, 0, 0, 0, 0, ioapicID, 0)
	n++
	for irq := 0; irq < mpISAIRQs; irq++ {
		pin := byte(irq)
		switch irq {
		case 0:
			pin = 2
		case 2:
			continue
		}
		t = append(t, mpEntryIOInt, mpIntINT, 0, 0, 0, byte(irq), ioapicID, pin)
		n++
	}
	t = append(t, mpEntryLocalInt, mpIntExtINT, 0, 0, 0, 0, 0xFF, 0)
	t = append(t, mpEntryLocalInt, mpIntNMI, 0, 0, 0, 0, 0xFF, 1)
	n += 2
	le.PutUint16(t[4:], uint16(len(t)))
	le.PutUint16(t[34:], uint16(n))
	t[7] = acpiChecksum(t)

	f := make([]byte, mpFloatSize)
	copy(f[0:4], "_MP_")
	le.PutUint32(f[4:], uint32(addr)+mpFloatSize)
	f[8] = 1 // length in 16-byte units
	f[9] = 4 // spec revision 1.4
	f[10] = acpiChecksum(f)
	if err := write(mem, "MP table", addr, append(f, t...)); err != nil {
		return 0, err
	}
	return addr + memory.GPA(mpFloatSize+len(t)), nil
}
