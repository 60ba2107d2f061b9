/*
 * benchguest: one tiny PVH-bootable guest for comparing VMMs.
 *
 * Boot contract: Xen PVH (xen/include/public/arch-x86/hvm/start_info.h,
 * "HVM direct start"): the VMM loads the PT_LOAD segments, finds the entry
 * point in the XEN_ELFNOTE_PHYS32_ENTRY note (type 18) and enters it in
 * 32-bit protected mode, paging off, with flat 4 GiB CS/DS/ES/SS and
 * interrupts disabled. QEMU (-M microvm/-M pc -kernel), gokvm (pvh package)
 * and our VMM (vmm boot --kernel) all accept that. We use no start_info field.
 *
 * Behaviour, chosen at assembly time with --defsym:
 *   LOOPS=N  number of `out` instructions to the 16550 scratch register
 *            (COM1+7 = 0x3ff): every one is a VM exit that each VMM's UART
 *            model handles without producing output.
 *   USER=1   run the loop at CPL3 (iret with IOPL=3) instead of CPL0. On a
 *            host whose KVM emulates guest kernel mode that is the difference
 *            between an emulated `out` and a full world switch.
 *   IDLE=1   after the marker, halt with interrupts off for ever (footprint
 *            sampling); the host kills the VMM.
 *
 * Sequence: 1. the first instructions write MARKER (0x1e) to COM1's THR
 * (0x3f8): all three VMMs print it to their stdout at once, so the host can
 * time "process start -> first guest instruction". 2. the loop. 3. the end
 * marker 0x1f on COM1, then the power-off sequence, which ends each VMM in
 * its own way:
 *   out 0xf4   QEMU: isa-debug-exit (the bench adds that device) exits
 *              QEMU at once; gokvm: an unclaimed port stops the vCPU
 *              ("unexpected io port 0xf4") and gokvm exits once all vCPUs
 *              stop; ours: unclaimed writes are dropped.
 *   outw 0x604 SLP_TYP=5|SLP_EN to the ACPI PM1a control block (ACPI 6.4
 *              4.8.3.2.1): our VMM powers off.
 *   cli; hlt   nothing else is left.
 */
	.code32

	.section .note.Xen, "a", @note
	.p2align 2
	.long 4			/* namesz: "Xen\0" */
	.long 4			/* descsz */
	.long 18		/* XEN_ELFNOTE_PHYS32_ENTRY */
	.asciz "Xen"
	.long _start

	.text
	.globl _start
_start:
	movb $0x1e, %al
	movw $0x3f8, %dx
	outb %al, %dx		/* the start-up marker: first VM exit */

.if IDLE
1:	cli
	hlt
	jmp 1b
.endif

	lgdt gdtr
	ljmp $0x08, $2f
2:	movw $0x10, %ax
	movw %ax, %ds
	movw %ax, %es
	movw %ax, %ss
	movl $stack_top, %esp

.if USER
	/* CPL3 needs long mode here: KVM's instruction emulator cannot execute
	 * a protected-mode iret (measured: emulation failure on `cf`), and
	 * iretq is what the host documentation verified. Identity-map the
	 * first 2 MiB with user-accessible entries (SDM vol. 3A 4.5), enable
	 * PAE, load CR3, set EFER.LME, turn paging on, far-jump to 64-bit code. */
	movl %cr4, %eax
	orl $0x20, %eax			/* CR4.PAE */
	movl %eax, %cr4
	movl $pml4, %eax
	movl %eax, %cr3
	movl $0xc0000080, %ecx		/* IA32_EFER */
	rdmsr
	orl $0x100, %eax		/* LME */
	wrmsr
	movl %cr0, %eax
	orl $0x80000001, %eax		/* PG | PE */
	movl %eax, %cr0
	ljmp $0x28, $long64
	.code64
long64:
	movq $stack_top, %rsp
	pushq $0x23			/* SS: user data, RPL 3 */
	pushq $stack_top
	pushq $0x3002			/* RFLAGS: IOPL=3 so `out` is allowed at CPL3, IF=0 */
	pushq $0x33			/* CS: 64-bit user code, RPL 3 */
	pushq $user64
	iretq
user64:
	movl $LOOPS, %ecx
	movw $0x3ff, %dx
	testl %ecx, %ecx
	jz 8f
7:	outb %al, %dx
	decl %ecx
	jnz 7b
8:	movb $0x1f, %al
	movw $0x3f8, %dx
	outb %al, %dx
	movb $0, %al
	outb %al, $0xf4
	movw $0x3400, %ax
	movw $0x604, %dx
	outw %ax, %dx
	/* hlt would #GP at CPL3 (no IDT: triple fault); spin until the VMM
	 * stops the vCPU. */
9:	pause
	jmp 9b
	.code32
.endif

	movl $LOOPS, %ecx
	movw $0x3ff, %dx	/* 16550 SCR */
	testl %ecx, %ecx
	jz 5f
4:	outb %al, %dx
	decl %ecx
	jnz 4b
5:
	movb $0x1f, %al
	movw $0x3f8, %dx
	outb %al, %dx		/* end marker */

	movb $0, %al
	outb %al, $0xf4		/* QEMU isa-debug-exit; gokvm stops here */
	movw $0x3400, %ax	/* SLP_EN (bit 13) | SLP_TYP 5 (bits 12:10) */
	movw $0x604, %dx
	outw %ax, %dx		/* our VMM powers off here */
6:	cli
	hlt
	jmp 6b

	.p2align 3
gdt:
	.quad 0
	.quad 0x00cf9a000000ffff	/* 0x08: 32-bit code, DPL0, flat */
	.quad 0x00cf92000000ffff	/* 0x10: data, DPL0, flat */
	.quad 0x00cffa000000ffff	/* 0x18: 32-bit code, DPL3, flat */
	.quad 0x00cff2000000ffff	/* 0x20: data, DPL3, flat */
	.quad 0x00af9a000000ffff	/* 0x28: 64-bit code, DPL0 */
	.quad 0x00affa000000ffff	/* 0x30: 64-bit code, DPL3 */
gdt_end:
gdtr:
	.word gdt_end - gdt - 1
	.long gdt

	/* Page tables live in .data, not .bss: a VMM need not zero memory it
	 * did not load (gokvm fills RAM with a poison pattern). */
	.data
	.p2align 12
pml4:	.quad pdpt + 7			/* P | W | U */
	.fill 511, 8, 0
pdpt:	.quad pd + 7
	.fill 511, 8, 0
pd:	.quad 0x87			/* 2 MiB page at 0: P | W | U | PS */
	.fill 511, 8, 0

	.bss
	.p2align 4
	.skip 4096
stack_top:
