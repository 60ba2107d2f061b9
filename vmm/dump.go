package vmm

import (
	"fmt"
	"strings"

	"github.com/vmmgo/vmm/kvm"
	"github.com/vmmgo/vmm/memory"
	"github.com/vmmgo/vmm/vmm/paging"
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
	code, walk := v.readCode(rip, 16, sregs)
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
		fmt.Fprintf(&b, "  disassembly: %s\n", disassemble(code, mode, rip))
	}
	return b.String()
}

// systemOps are the 0f 01 /xx (mod=11) instructions that x86asm does not
// decode: the VMX and SVM instructions (vmcall and vmmcall are how a guest
// makes a hypercall, the instruction a dump most often stops on), SMAP's
// clac/stac and the like (Intel SDM Vol. 2 Table A-6, AMD APM Vol. 3 Table
// A-7 opcode group 7).
var systemOps = map[byte]string{
	0xc1: "vmcall", 0xc2: "vmlaunch", 0xc3: "vmresume", 0xc4: "vmxoff",
	0xca: "clac", 0xcb: "stac", 0xd4: "vmfunc", 0xd6: "xtest",
	0xd8: "vmrun", 0xd9: "vmmcall", 0xda: "vmload", 0xdb: "vmsave",
	0xdc: "stgi", 0xdd: "clgi", 0xde: "skinit", 0xdf: "invlpga",
}

// disassemble returns the first instruction of code in Intel syntax, or why
// it cannot be decoded.
func disassemble(code []byte, mode int, rip uint64) string {
	inst, err := x86asm.Decode(code, mode)
	if err == nil {
		return x86asm.IntelSyntax(inst, rip, nil)
	}
	if len(code) >= 3 && code[0] == 0x0f && code[1] == 0x01 {
		if op, ok := systemOps[code[2]]; ok {
			return op
		}
	}
	return err.Error()
}

// readCode reads n bytes at a guest virtual address by walking the vCPU's
// page tables in guest memory (package paging), and describes that walk
// (every entry visited), which is what a crash report needs when RIP points
// somewhere unexpected. Bytes past a page that does not translate are left
// out.
func (v *vcpu) readCode(gva uint64, n int, sregs kvm.Sregs) ([]byte, string) {
	cpu := paging.CPU{CR0: sregs.CR0, CR3: sregs.CR3, CR4: sregs.CR4, EFER: sregs.EFER}
	read := func(gpa uint64, p []byte) error { return v.m.mem.Read(memory.GPA(gpa), p) }
	walk := "  walk of rip: " + paging.Describe(read, cpu, gva) + "\n"
	code := make([]byte, n)
	if err := paging.ReadVirtual(read, cpu, gva, code); err == nil {
		return code, walk
	}
	if left := int(0x1000 - gva&0xfff); left < n {
		code = code[:left]
		if err := paging.ReadVirtual(read, cpu, gva, code); err == nil {
			return code, walk
		}
	}
	return nil, walk
}
