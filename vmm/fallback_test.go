package vmm

import (
	"context"
	"encoding/binary"
	"strings"
	"testing"

	"github.com/vmmgo/vmm/kvm"
	"github.com/vmmgo/vmm/memory"
)

// TestMXCSRAtCPL0 runs ldmxcsr and stmxcsr in guest kernel mode. On hosts
// whose KVM emulates kernel mode its emulator refuses both and the VMM's
// fallback (fallback.go, package x86emu) executes them; on others they run
// natively. Either way the guest sees the architecture: the value loads
// and reads back, a reserved bit raises #GP(0) with MXCSR unchanged, and
// the host reads the final MXCSR through KVM_GET_XSAVE.
func TestMXCSRAtCPL0(t *testing.T) {
	m := newRawMachine(t, smallConfig(memory.KindAnon), `
		mov %cr4, %rax
		or $0x600, %rax            # OSFXSR | OSXMMEXCPT
		mov %rax, %cr4
		lea gp(%rip), %rax         # IDT gate 13 -> gp
		lea idt(%rip), %rbx
		mov %ax, 13*16(%rbx)
		movw $0x08, 13*16+2(%rbx)
		movw $0x8e00, 13*16+4(%rbx)
		shr $16, %rax
		mov %ax, 13*16+6(%rbx)
		shr $16, %rax
		mov %eax, 13*16+8(%rbx)
		lidt idtr(%rip)
		movl $0x9fc0, 0x200000
		ldmxcsr 0x200000           # the fallback's load
		stmxcsr 0x200004           # ... and store
		movl $0x10000, 0x200008    # bit 16 is reserved
		ldmxcsr 0x200008           # #GP(0); gp skips these 8 bytes
		stmxcsr 0x20000c           # still 0x9fc0
		mov $0x1fa0, %eax
		sub $8, %rsp
		mov %eax, 4(%rsp)
		ldmxcsr 4(%rsp)            # the form Linux's kernel_fpu_begin uses
		add $8, %rsp
		xor %eax, %eax
		out %al, $0xf4
	gp:
		pop %rax                   # error code
		mov %rax, 0x200010
		incq 0x200018              # times #GP was taken
		addq $8, (%rsp)            # past "ldmxcsr 0x200008"
		iretq
	.align 16
	idtr: .word 16*16-1
		.quad idt
	.align 16
	idt: .fill 256, 1, 0`)
	res := runMachine(t, m, OutcomePowerOff)
	b := make([]byte, 0x20)
	if err := m.Memory().Read(0x200000, b); err != nil {
		t.Fatal(err)
	}
	if got := binary.LittleEndian.Uint32(b[4:]); got != 0x9fc0 {
		t.Errorf("stmxcsr after ldmxcsr 0x9fc0 stored %#x", got)
	}
	if n, code := binary.LittleEndian.Uint64(b[0x18:]), binary.LittleEndian.Uint64(b[0x10:]); n != 1 || code != 0 {
		t.Errorf("reserved MXCSR bit: #GP taken %d times with error code %#x, want once with 0", n, code)
	}
	if got := binary.LittleEndian.Uint32(b[0xc:]); got != 0x9fc0 {
		t.Errorf("MXCSR after the faulting ldmxcsr: %#x, want 0x9fc0 unchanged", got)
	}
	x, err := m.vcpus[0].cpu.XSave()
	if err != nil {
		t.Fatal(err)
	}
	if got := binary.LittleEndian.Uint32(x.Region[kvm.XSaveMXCSR:]); got != 0x1fa0 {
		t.Errorf("KVM_GET_XSAVE MXCSR %#x, want 0x1fa0 (the last ldmxcsr)", got)
	}
	st := m.Stats()
	t.Logf("fallback counters: ldmxcsr %d, stmxcsr %d, ldmxcsr faults %d", st["ldmxcsr-emulated"], st["stmxcsr-emulated"], st["ldmxcsr-fault-injected"])
	if m.hostEmulated() {
		if st["ldmxcsr-emulated"] != 2 || st["stmxcsr-emulated"] != 2 || st["ldmxcsr-fault-injected"] != 1 {
			t.Errorf("this host emulates kernel mode, but the fallback ran ldmxcsr %d / stmxcsr %d times and injected %d faults (want 2, 2, 1)",
				st["ldmxcsr-emulated"], st["stmxcsr-emulated"], st["ldmxcsr-fault-injected"])
		}
	}
	_ = res
}

// TestUnhandledEmulationFailureNamesTheInstruction: an instruction neither
// the host's emulator nor the fallback executes stops the machine with its
// name and a hint that fits the CPU profile in use.
func TestUnhandledEmulationFailureNamesTheInstruction(t *testing.T) {
	host, err := DetectHost(context.Background(), DefaultConfig().KVMPath)
	emu := host.Kind == HostEmulated
	if err != nil {
		t.Skipf("cannot tell whether this host emulates kernel mode: %v", err)
	}
	if !emu {
		t.Skip("kernel mode is not emulated on this host: pshufb runs natively")
	}
	for _, profile := range []string{ProfileHost, ProfileEmulated} {
		t.Run(profile, func(t *testing.T) {
			cfg := smallConfig(memory.KindAnon)
			cfg.CPUProfile = profile
			m := newRawMachine(t, cfg, `
				mov %cr4, %rax
				or $0x600, %rax
				mov %rax, %cr4
				pshufb %xmm1, %xmm0
				hlt`)
			res := runMachine(t, m, OutcomeError)
			if !strings.Contains(res.Detail, "pshufb xmm0, xmm1") || !strings.Contains(res.Detail, "fallback does not handle it") {
				t.Errorf("detail does not name the instruction and the fallback: %s", res.Detail)
			}
			hint := "--cpu-profile emulated hides"
			if profile == ProfileEmulated {
				hint = `already "emulated"`
			}
			if !strings.Contains(res.Detail, hint) {
				t.Errorf("profile %s: detail lacks %q: %s", profile, hint, res.Detail)
			}
		})
	}
}
