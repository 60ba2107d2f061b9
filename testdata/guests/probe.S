	# vmm probe: is guest kernel mode emulated on this host?
	# Entered in 64-bit mode at CPL0 with the VMM's identity map and GDT
	# (user code 0x1b, user data 0x23 at CPL3). The loop count is read from
	# 0x1ff000 (written by the VMM). Each `out` to 0xf8 is a timestamp mark;
	# `out` to 0xf4 ends the guest.
	out %al, $0xf8            # mark 0: start of the kernel-mode loop
	mov 0x1ff000, %ecx
1:	dec %ecx
	jnz 1b
	out %al, $0xf8            # mark 1: kernel-mode loop done
	mov $0x7f000, %rax        # user stack
	push $0x23                # ss
	push %rax                 # rsp
	push $0x3002              # rflags: IOPL=3, reserved bit 1
	push $0x1b                # cs: 64-bit user code
	lea 2f(%rip), %rax
	push %rax
	iretq
2:	out %al, $0xf8            # mark 2: now at CPL3
	mov 0x1ff000, %ecx
3:	dec %ecx
	jnz 3b
	out %al, $0xf8            # mark 3: user-mode loop done
	xor %eax, %eax
	out %al, $0xf4            # exit, code 0
