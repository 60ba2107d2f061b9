package vmm

import (
	"errors"
	"fmt"
	"strings"

	"github.com/sirupsen/logrus"
	"github.com/vmmgo/vmm/kvm"
	"github.com/vmmgo/vmm/vmm/x86emu"
	"golang.org/x/arch/x86/x86asm"
)

// handleHypercall answers KVM_EXIT_HYPERCALL. Only KVM_HC_MAP_GPA_RANGE is
// ever forwarded (it is the only bit we enable); anything else gets
// -KVM_ENOSYS. The result goes to hypercall.ret, which KVM copies into the
// guest's RAX when the vCPU re-enters (api.rst §5, KVM_EXIT_HYPERCALL).
// With trace, every hypercall exit is logged like the other exits
// (--trace-exits): number, arguments, mode and the answer.
func (v *vcpu) handleHypercall(trace bool) {
	hc := v.run.Hypercall()
	ret := negErrno(kvm.KVMENOSYS)
	if hc.Nr == kvm.HCMapGPARange {
		ret = v.m.mapGPARange(v.id, hc.Args[0], hc.Args[1], hc.Args[2])
	}
	v.run.SetHypercallRet(ret)
	if trace {
		v.log.WithFields(logrus.Fields{"exit": "hypercall", "nr": hc.Nr,
			"args":     fmt.Sprintf("%#x,%#x,%#x", hc.Args[0], hc.Args[1], hc.Args[2]),
			"longmode": hc.LongMode(), "ret": int64(ret)}).Trace("exit")
	}
}

func negErrno(code uint64) uint64 { return -code }

// handleMemoryFault answers KVM_EXIT_MEMORY_FAULT (KVM_RUN returned -EFAULT
// with the exit filled in). On VMs with KVM-enforced private memory the guest
// touched a page whose shared/private state does not match its access:
// convert implicitly, as QEMU does, but guard against the same fault coming
// back forever (api.rst §8.44).
func (v *vcpu) handleMemoryFault(mf *kvm.MemoryFaultError) bool {
	ex := mf.Exit
	private := ex.Flags&kvm.MemoryExitFlagPrivate != 0
	if ex.GPA == v.lastFaultGPA && v.faultRepeat > 3 {
		v.m.stop(Result{Outcome: OutcomeError, Detail: fmt.Sprintf("vcpu %d: memory fault at gpa %#x (size %#x, private=%v) repeats after conversion", v.id, ex.GPA, ex.Size, private), Dump: v.dump()})
		return false
	}
	if ex.GPA == v.lastFaultGPA {
		v.faultRepeat++
	} else {
		v.lastFaultGPA, v.faultRepeat = ex.GPA, 1
	}
	if err := v.m.memoryFaultConvert(v.id, ex.GPA, ex.Size, private); err != nil {
		v.m.stop(Result{Outcome: OutcomeError, Detail: fmt.Sprintf("vcpu %d: memory fault at gpa %#x (size %#x, private=%v) outside guest RAM: %v", v.id, ex.GPA, ex.Size, private, err), Dump: v.dump()})
		return false
	}
	return true
}

// handleInternalError handles KVM_EXIT_INTERNAL_ERROR. On hosts whose KVM
// emulates guest kernel mode, int3 cannot be emulated: KVM stops on the 0xcc
// byte. We do what the CPU would have done: advance RIP past it and inject
// #BP (vector 3) so the guest's own handler runs (docs/host-kvm.md). fwait
// gets its own handler, the instructions of package x86emu the fallback
// (fallback.go, docs/emulation.md); anything else is reported precisely and
// stops the machine.
func (v *vcpu) handleInternalError() bool {
	ie, err := v.run.InternalError()
	if err != nil {
		v.m.stop(Result{Outcome: OutcomeError, Detail: fmt.Sprintf("vcpu %d: malformed internal-error exit: %v", v.id, err), Dump: v.dump()})
		return false
	}
	if ie.Suberror == kvm.InternalErrorEmulation && len(ie.InsnBytes) > 0 && ie.InsnBytes[0] == 0xcc {
		if v.m.debug != nil && v.m.debug.onInt3(v) {
			return true // a GDB software breakpoint: v parks there
		}
		if err := v.injectBreakpoint(); err == nil {
			v.m.stats.counter("int3-injected").Add(1)
			return true
		} else {
			v.log.WithError(err).Warn("cannot inject #BP for int3")
		}
	}
	if ie.Suberror == kvm.InternalErrorEmulation && len(ie.InsnBytes) > 0 && ie.InsnBytes[0] == 0x9b {
		// fwait/wait (Linux's fpu__drop on every thread exit): it only
		// delivers a pending unmasked x87 exception. Do what the CPU does:
		// #MF when FSW.ES is set, otherwise step over it.
		if err := v.emulateFwait(); err == nil {
			v.m.stats.counter("fwait-emulated").Add(1)
			return true
		} else {
			v.log.WithError(err).Warn("cannot emulate fwait")
		}
	}
	var fallbackErr error
	if ie.Suberror == kvm.InternalErrorEmulation {
		if fallbackErr = v.fallback(ie.InsnBytes); fallbackErr == nil {
			return true
		}
	}
	v.m.stop(Result{Outcome: OutcomeError, Detail: v.internalErrorDetail(ie, fallbackErr), Dump: v.dump()})
	return false
}

// internalErrorDetail names the instruction KVM stopped on and says what
// is true of it here: which CPU profile is in use, and why the VMM's
// fallback did not execute it.
func (v *vcpu) internalErrorDetail(ie kvm.InternalErrorExit, fallbackErr error) string {
	detail := fmt.Sprintf("vcpu %d: KVM internal error, suberror %d (%s)", v.id, ie.Suberror, internalErrorName(ie.Suberror))
	if ie.Suberror == kvm.InternalErrorEmulation {
		what := "the instruction"
		mode := 64
		regs, rerr := v.cpu.Regs()
		sregs, serr := v.cpu.Sregs()
		if rerr == nil && serr == nil {
			mode = (&x86emu.CPU{Regs: regs, Sregs: sregs}).Mode()
			what += fmt.Sprintf(" at rip %#x", regs.RIP)
		}
		if len(ie.InsnBytes) > 0 {
			if inst, err := x86asm.Decode(ie.InsnBytes, mode); err == nil {
				what = "`" + x86asm.IntelSyntax(inst, 0, nil) + "`" + strings.TrimPrefix(what, "the instruction")
			}
		}
		detail += ": the host's instruction emulator cannot execute " + what
		switch {
		case errors.Is(fallbackErr, x86emu.ErrUnsupported):
			detail += " and the VMM's fallback does not handle it (docs/emulation.md lists what it executes)"
		case fallbackErr != nil:
			detail += fmt.Sprintf(" and the VMM's fallback failed: %v", fallbackErr)
		}
		if v.m.cpuProfileName == ProfileEmulated {
			detail += "; the CPU profile is already \"emulated\": the guest kernel must not use this instruction here (clearcpuid= for the CPU feature that selects it, or a kernel built without it)"
		} else {
			detail += fmt.Sprintf("; the CPU profile is %q: on a host whose KVM emulates guest kernel mode, --cpu-profile emulated hides the features whose instructions its emulator lacks", v.m.cpuProfileName)
		}
	}
	if len(ie.InsnBytes) > 0 {
		detail += fmt.Sprintf("; instruction bytes % x", ie.InsnBytes)
	}
	if len(ie.Data) > 0 {
		detail += fmt.Sprintf("; data %x", ie.Data)
	}
	return detail
}

func internalErrorName(sub uint32) string {
	switch sub {
	case kvm.InternalErrorEmulation:
		return "emulation failure"
	case 2:
		return "simultaneous exceptions"
	case 3:
		return "delivery event"
	case 4:
		return "unexpected exit reason"
	}
	return "unknown"
}

// x86 exception vectors the VMM injects.
const (
	vectorBP = 3  // #BP, after int3 (a trap: RIP past the instruction)
	vectorMF = 16 // #MF, x87 floating-point error (a fault: RIP on the instruction)
	fswES    = 1 << 7
)

func (v *vcpu) injectBreakpoint() error { return v.skipAndInject(1, vectorBP) }

// emulateFwait executes a one-byte fwait the emulator refused.
func (v *vcpu) emulateFwait() error {
	f, err := v.cpu.FPU()
	if err != nil {
		return err
	}
	if f.FSW&fswES != 0 {
		return v.skipAndInject(0, vectorMF)
	}
	return v.skipAndInject(1, -1)
}

// skipAndInject advances RIP by n and, when vector >= 0, injects that
// exception (without error code) for delivery on the next entry.
func (v *vcpu) skipAndInject(n uint64, vector int) error {
	regs, err := v.cpu.Regs()
	if err != nil {
		return err
	}
	regs.RIP += n
	if err := v.cpu.SetRegs(regs); err != nil {
		return err
	}
	if vector < 0 {
		return nil
	}
	ev, err := v.cpu.Events()
	if err != nil {
		return err
	}
	if ev.Exception.Injected != 0 || ev.Exception.Pending != 0 {
		return errors.New("an exception is already pending")
	}
	ev.Exception.Injected = 1
	ev.Exception.Nr = uint8(vector)
	ev.Exception.HasErrorCode = 0
	ev.Flags = 0
	return v.cpu.SetEvents(ev)
}

// handleDebug handles KVM_EXIT_DEBUG: breakpoints and single steps for the
// GDB stub. Without a debugger attached it is unexpected.
func (v *vcpu) handleDebug() bool {
	if v.m.debug != nil {
		return v.m.debug.onDebugExit(v)
	}
	d := v.run.Debug()
	v.m.stop(Result{Outcome: OutcomeError, Detail: fmt.Sprintf("vcpu %d: debug exit (exception %d at %#x) with no debugger attached", v.id, d.Exception, d.PC), Dump: v.dump()})
	return false
}
