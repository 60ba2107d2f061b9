package vmm

import (
	"fmt"
	"strings"

	"github.com/vmmgo/vmm/memory"
	"golang.org/x/arch/x86/x86asm"
)

// dump formats the vCPU's registers, the instruction bytes at RIP with their
// disassembly and the guest-virtual→physical walk of RIP. It runs on the vCPU
// thread (or after the thread ended), never while KVM_RUN is in progress.
func (v *vcpu) dump() string {
	var b strings.Builder
	regs, err := v.cpu.Regs()
	if err != nil {
		return fmt.Sprintf("vcpu %d: cannot read registers: %v\n", v.id, err)
	}
	sregs, err := v.cpu.Sregs()
	if err != nil {
		return fmt.Sprintf("vcpu %d: cannot read special registers: %v\n", v.id, err)
	}
	fmt.Fprintf(&b, "vcpu %d state:\n", v.id)
	fmt.Fprintf(&b, "  rip=%016x rsp=%016x rflags=%08x\n", regs.RIP, regs.RSP, regs.RFLAGS)
	fmt.Fprintf(&b, "  rax=%016x rbx=%016x rcx=%016x rdx=%016x\n", regs.RAX, regs.RBX, regs.RCX, regs.RDX)
	fmt.Fprintf(&b, "  rsi=%016x rdi=%016x rbp=%016x r8 =%016x\n", regs.RSI, regs.RDI, regs.RBP, regs.R8)
	fmt.Fprintf(&b, "  r9 =%016x r10=%016x r11=%016x r12=%016x\n", regs.R9, regs.R10, regs.R11, regs.R12)
	fmt.Fprintf(&b, "  r13=%016x r14=%016x r15=%016x\n", regs.R13, regs.R14, regs.R15)
	fmt.Fprintf(&b, "  cs=%04x(base %x l=%d db=%d dpl=%d) ss=%04x ds=%04x es=%04x fs=%04x gs=%04x tr=%04x\n",
		sregs.CS.Selector, sregs.CS.Base, sregs.CS.L, sregs.CS.DB, sregs.CS.DPL, sregs.SS.Selector,
		sregs.DS.Selector, sregs.ES.Selector, sregs.FS.Selector, sregs.GS.Selector, sregs.TR.Selector)
	fmt.Fprintf(&b, "  cr0=%08x cr2=%016x cr3=%016x cr4=%08x efer=%x apic_base=%x\n",
		sregs.CR0, sregs.CR2, sregs.CR3, sregs.CR4, sregs.EFER, sregs.ApicBase)
	fmt.Fprintf(&b, "  gdt=%x/%x idt=%x/%x\n", sregs.GDT.Base, sregs.GDT.Limit, sregs.IDT.Base, sregs.IDT.Limit)
	rip := regs.RIP
	if sregs.CS.L == 0 {
		rip = (sregs.CS.Base + regs.RIP) & 0xffffffff
	}
	code, walk := v.readCode(rip, 16)
	b.WriteString(walk)
	if len(code) > 0 {
		fmt.Fprintf(&b, "  code at rip: % x\n", code)
		mode := 64
		if sregs.CS.L == 0 {
			mode = 32
			if sregs.CS.DB == 0 {
				mode = 16
			}
		}
		if inst, err := x86asm.Decode(code, mode); err == nil {
			fmt.Fprintf(&b, "  disassembly: %s\n", x86asm.IntelSyntax(inst, rip, nil))
		} else {
			fmt.Fprintf(&b, "  disassembly: %v\n", err)
		}
	}
	return b.String()
}

// readCode reads n bytes at a guest virtual address through KVM's own
// translation (KVM_TRANSLATE), page by page, and describes the walk.
func (v *vcpu) readCode(gva uint64, n int) ([]byte, string) {
	var out []byte
	var walk strings.Builder
	for len(out) < n {
		addr := gva + uint64(len(out))
		tr, err := v.cpu.Translate(addr)
		if err != nil || tr.Valid == 0 {
			fmt.Fprintf(&walk, "  walk: gva %#x does not translate (%v)\n", addr, err)
			break
		}
		if len(out) == 0 {
			fmt.Fprintf(&walk, "  walk: rip gva %#x -> gpa %#x (writeable=%d usermode=%d)\n", addr, tr.PhysicalAddress, tr.Writeable, tr.Usermode)
		}
		chunk := n - len(out)
		if pageLeft := int(0x1000 - tr.PhysicalAddress&0xfff); chunk > pageLeft {
			chunk = pageLeft
		}
		buf := make([]byte, chunk)
		if err := v.m.mem.Read(memory.GPA(tr.PhysicalAddress), buf); err != nil {
			fmt.Fprintf(&walk, "  walk: gpa %#x is not RAM (%v)\n", tr.PhysicalAddress, err)
			break
		}
		out = append(out, buf...)
	}
	return out, walk.String()
}
