package vmm

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/vmmgo/vmm/kvm"
	"github.com/vmmgo/vmm/memory"
	"github.com/vmmgo/vmm/vmm/x86emu"
)

// The instruction fallback: when the host's instruction emulator stops on
// an instruction (KVM_EXIT_INTERNAL_ERROR, emulation failure), the VMM
// executes the ones package x86emu handles on the vCPU's state and resumes
// the guest (docs/emulation.md). int3 and fwait keep their own handlers in
// exits.go.

// fallbackEnv is x86emu.Env on a live vCPU: MXCSR through KVM_GET/SET_XSAVE
// (KVM_GET_FPU does not carry it), memory through the guest RAM mapping.
type fallbackEnv struct {
	v     *vcpu
	xsave *kvm.XSave // read on first use
}

func (e *fallbackEnv) load() error {
	if e.xsave != nil {
		return nil
	}
	x, err := e.v.cpu.XSave()
	if err != nil {
		return err
	}
	e.xsave = &x
	return nil
}

func (e *fallbackEnv) MXCSR() (uint32, uint32, error) {
	if err := e.load(); err != nil {
		return 0, 0, err
	}
	r := e.xsave.Region[:]
	return binary.LittleEndian.Uint32(r[kvm.XSaveMXCSR:]), binary.LittleEndian.Uint32(r[kvm.XSaveMXCSRMask:]), nil
}

func (e *fallbackEnv) SetMXCSR(val uint32) error {
	if err := e.load(); err != nil {
		return err
	}
	r := e.xsave.Region[:]
	binary.LittleEndian.PutUint32(r[kvm.XSaveMXCSR:], val)
	// KVM takes MXCSR from the image only when XSTATE_BV names SSE; the
	// XMM registers in it are the current ones (or the init state, zeros,
	// when the component was not in use), so naming it changes nothing else.
	bv := binary.LittleEndian.Uint64(r[kvm.XSaveXStateBV:])
	binary.LittleEndian.PutUint64(r[kvm.XSaveXStateBV:], bv|kvm.XStateSSE)
	return e.v.cpu.SetXSave(*e.xsave)
}

func (e *fallbackEnv) ReadPhys(gpa uint64, p []byte) error {
	return e.v.m.mem.Read(memory.GPA(gpa), p)
}

func (e *fallbackEnv) WritePhys(gpa uint64, p []byte) error {
	return e.v.m.mem.Write(memory.GPA(gpa), p)
}

// fallback tries to execute the instruction KVM could not. It returns nil
// when the guest can go on: the instruction completed, or the exception it
// raises was injected. Otherwise the error says why the VMM cannot
// (errors.Is(err, x86emu.ErrUnsupported) for instructions it does not
// handle) and the vCPU is unchanged.
func (v *vcpu) fallback(insn []byte) error {
	regs, err := v.cpu.Regs()
	if err != nil {
		return err
	}
	sregs, err := v.cpu.Sregs()
	if err != nil {
		return err
	}
	cpu := &x86emu.CPU{Regs: regs, Sregs: sregs}
	env := &fallbackEnv{v: v}
	in, exc, err := x86emu.Execute(cpu, env, insn)
	if errors.Is(err, x86emu.ErrTruncated) || (err != nil && len(insn) == 0) {
		// KVM gave fewer bytes than the instruction has (or none): read it
		// at CS:RIP through the guest's page tables.
		rip := regs.RIP
		if cpu.Mode() != 64 {
			rip = (sregs.CS.Base + regs.RIP) & 0xffff_ffff
		}
		code, _ := v.readCode(rip, 15, sregs)
		in, exc, err = x86emu.Execute(cpu, env, code)
	}
	if err != nil {
		return err
	}
	if exc != nil {
		if err := v.injectFault(exc, sregs); err != nil {
			return fmt.Errorf("inject %v: %w", exc, err)
		}
		v.m.stats.counter(in.Op.String() + "-fault-injected").Add(1)
		return nil
	}
	if err := v.cpu.SetRegs(cpu.Regs); err != nil {
		return err
	}
	if v.m.stats.counter(in.Op.String()+"-emulated").Add(1) == 1 {
		v.log.WithField("rip", fmt.Sprintf("%#x", regs.RIP)).Info("the host's emulator cannot execute " + in.Op.String() + ": the VMM executes it (first time; counted in the stats)")
	}
	return nil
}

// injectFault delivers an exception x86emu raised: RIP stays on the
// faulting instruction; #PF gets CR2.
func (v *vcpu) injectFault(exc *x86emu.Exception, sregs kvm.Sregs) error {
	ev, err := v.cpu.Events()
	if err != nil {
		return err
	}
	if ev.Exception.Injected != 0 || ev.Exception.Pending != 0 {
		return errors.New("an exception is already pending")
	}
	if exc.Vector == x86emu.VectorPF {
		sregs.CR2 = exc.Addr
		if err := v.cpu.SetSregs(sregs); err != nil {
			return err
		}
	}
	ev.Exception.Injected = 1
	ev.Exception.Nr = exc.Vector
	ev.Exception.HasErrorCode = 0
	if exc.HasErrorCode {
		ev.Exception.HasErrorCode = 1
		ev.Exception.ErrorCode = exc.ErrorCode
	}
	ev.Flags = 0
	return v.cpu.SetEvents(ev)
}
