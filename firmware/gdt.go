package firmware

import (
	"encoding/binary"
	"fmt"

	"github.com/vmmgo/vmm/memory"
)

// GDT descriptors (Intel SDM Vol. 3A §3.4.5 "Segment Descriptors").
const (
	GDTNull       uint64 = 0
	GDTCode64     uint64 = 0x00af9b000000ffff // ring 0, 64-bit code (L=1), accessed
	GDTData       uint64 = 0x00cf93000000ffff // ring 0, flat 4 GiB read/write data
	GDTCode32     uint64 = 0x00cf9b000000ffff // ring 0, flat 32-bit code (D=1), for PVH
	GDTUserCode64 uint64 = 0x00affb000000ffff // ring 3, 64-bit code
	GDTUserData   uint64 = 0x00cff3000000ffff // ring 3, flat data
	// GDTTSS is a present 32/64-bit busy TSS at base 0, limit 0x67: what KVM
	// needs in TR for long mode; the kernel installs its own.
	GDTTSS uint64 = 0x00008b0000000067
)

// Selectors of the tables below.
const (
	SelectorCode64   = 0x08 // GDT64
	SelectorData     = 0x10 // GDT64, GDTPVH, GDT64User
	SelectorTSS      = 0x18 // GDT64
	SelectorCode32   = 0x08 // GDTPVH
	SelectorUserCode = 0x1b // GDT64User, RPL 3
	SelectorUserData = 0x23 // GDT64User, RPL 3
)

// Standard tables. GDT64 and GDTPVH fit in the 32 bytes between
// DefaultGDTAddr and DefaultIDTAddr; GDT64User needs 40.
var (
	GDT64     = []uint64{GDTNull, GDTCode64, GDTData, GDTTSS}
	GDTPVH    = []uint64{GDTNull, GDTCode32, GDTData, GDTTSS}
	GDT64User = []uint64{GDTNull, GDTCode64, GDTData, GDTUserCode64, GDTUserData}
)

// BuildGDT writes the descriptors at addr and returns the GDTR limit.
func BuildGDT(mem Memory, addr memory.GPA, entries []uint64) (limit uint16, err error) {
	if len(entries) == 0 || len(entries) > 8192 {
		return 0, fmt.Errorf("GDT: %d entries, want 1..8192", len(entries))
	}
	b := make([]byte, 8*len(entries))
	for i, e := range entries {
		binary.LittleEndian.PutUint64(b[8*i:], e)
	}
	if err := write(mem, "GDT", addr, b); err != nil {
		return 0, err
	}
	return uint16(len(b) - 1), nil
}

// Segment is a decoded descriptor in the form KVM's kvm_segment wants
// (the VMM copies it field by field into kvm.Segment).
type Segment struct {
	Base                      uint64
	Limit                     uint32 // byte granular (expanded when G=1)
	Selector                  uint16
	Type                      uint8
	Present, DPL, DB, S, L, G uint8
}

// SegmentFromDescriptor decodes a GDT descriptor for selector sel.
func SegmentFromDescriptor(d uint64, sel uint16) Segment {
	limit := uint32(d&0xffff) | uint32(d>>48&0xf)<<16
	g := uint8(d >> 55 & 1)
	if g == 1 {
		limit = limit<<12 | 0xfff
	}
	return Segment{
		Base:     (d >> 16 & 0xffffff) | (d>>56&0xff)<<24,
		Limit:    limit,
		Selector: sel,
		Type:     uint8(d >> 40 & 0xf),
		S:        uint8(d >> 44 & 1),
		DPL:      uint8(d >> 45 & 3),
		Present:  uint8(d >> 47 & 1),
		L:        uint8(d >> 53 & 1),
		DB:       uint8(d >> 54 & 1),
		G:        g,
	}
}

// WriteIDT clears n 16-byte gates at addr (an empty IDT: the kernel installs
// its own before enabling interrupts) and returns the IDTR limit.
func WriteIDT(mem Memory, addr memory.GPA, n int) (uint16, error) {
	if n <= 0 || n > 256 {
		return 0, fmt.Errorf("IDT: %d gates, want 1..256", n)
	}
	if err := zero(mem, "IDT", addr, uint64(16*n)); err != nil {
		return 0, err
	}
	return uint16(16*n - 1), nil
}
