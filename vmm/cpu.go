package vmm

import (
	"fmt"

	"github.com/vmmgo/vmm/firmware"
	"github.com/vmmgo/vmm/kvm"
)

// kvmSegment converts a decoded GDT descriptor into the form
// KVM_SET_SREGS takes (the hidden part of the segment register).
func kvmSegment(d uint64, sel uint16) kvm.Segment {
	f := firmware.SegmentFromDescriptor(d, sel)
	return kvm.Segment{Base: f.Base, Limit: f.Limit, Selector: f.Selector, Type: f.Type,
		Present: f.Present, DPL: f.DPL, DB: f.DB, S: f.S, L: f.L, G: f.G}
}

// bootTables says where the GDT and page tables went, for vCPU setup.
type bootTables struct {
	gdt      []uint64
	gdtLimit uint16
	idtLimit uint16
}

// writeBootTables writes the GDT (with user segments for raw guests) and
// the identity map of the first 4 GiB (2 MiB pages; user-accessible for raw
// guests so they can drop to CPL3).
func (m *Machine) writeBootTables(raw bool) (bootTables, error) {
	t := bootTables{gdt: firmware.GDT64}
	if raw {
		t.gdt = firmware.GDT64User
	}
	var err error
	if t.gdtLimit, err = firmware.BuildGDT(m.mem, LayoutGDT, t.gdt); err != nil {
		return t, err
	}
	if !raw {
		if t.idtLimit, err = firmware.WriteIDT(m.mem, LayoutIDT, 1); err != nil {
			return t, err
		}
	}
	if _, err := firmware.BuildIdentityPageTables(m.mem, LayoutPML4, Layout4G, raw); err != nil {
		return t, fmt.Errorf("identity page tables: %w", err)
	}
	return t, nil
}

// setupLongMode puts a vCPU in 64-bit mode at CPL0 with the boot tables.
// TR keeps KVM's default (a busy TSS), which VM entry accepts.
func setupLongMode(c *kvm.VCPU, t bootTables) error {
	s, err := c.Sregs()
	if err != nil {
		return err
	}
	code := kvmSegment(t.gdt[1], firmware.SelectorCode64)
	data := kvmSegment(t.gdt[2], firmware.SelectorData)
	s.CS = code
	s.DS, s.ES, s.FS, s.GS, s.SS = data, data, data, data, data
	s.GDT = kvm.DTable{Base: LayoutGDT, Limit: t.gdtLimit}
	s.IDT = kvm.DTable{Base: LayoutIDT, Limit: t.idtLimit}
	s.CR0 = cr0PE | cr0ET | cr0NE | cr0PG
	s.CR3 = LayoutPML4
	s.CR4 = cr4PAE
	s.EFER = eferLME | eferLMA
	if err := c.SetSregs(s); err != nil {
		return fmt.Errorf("set sregs (long mode): %w", err)
	}
	return setupFPU(c)
}

// setupProtectedMode puts a vCPU in flat 32-bit protected mode, paging off,
// as the PVH boot ABI requires (xen docs/misc/pvh.pandoc).
func setupProtectedMode(c *kvm.VCPU, t bootTables) error {
	s, err := c.Sregs()
	if err != nil {
		return err
	}
	code := kvmSegment(t.gdt[1], firmware.SelectorCode32)
	data := kvmSegment(t.gdt[2], firmware.SelectorData)
	s.CS = code
	s.DS, s.ES, s.FS, s.GS, s.SS = data, data, data, data, data
	s.GDT = kvm.DTable{Base: LayoutGDT, Limit: t.gdtLimit}
	s.IDT = kvm.DTable{Base: LayoutIDT, Limit: t.idtLimit}
	s.CR0 = cr0PE | cr0ET | cr0NE
	s.CR3, s.CR4, s.EFER = 0, 0, 0
	if err := c.SetSregs(s); err != nil {
		return fmt.Errorf("set sregs (protected mode): %w", err)
	}
	return setupFPU(c)
}

// Control-register and EFER bits used to enter the guest.
const (
	cr0PE   = 1 << 0
	cr0ET   = 1 << 4
	cr0NE   = 1 << 5
	cr0PG   = 1 << 31
	cr4PAE  = 1 << 5
	eferLME = 1 << 8
	eferLMA = 1 << 10
)

// setupFPU puts the x87/SSE state in its power-on form (FCW 0x37f,
// MXCSR 0x1f80), which KVM leaves zeroed for new vCPUs.
func setupFPU(c *kvm.VCPU) error {
	f, err := c.FPU()
	if err != nil {
		return err
	}
	f.FCW = 0x37f
	f.MXCSR = 0x1f80
	if err := c.SetFPU(f); err != nil {
		return fmt.Errorf("set FPU: %w", err)
	}
	return nil
}
