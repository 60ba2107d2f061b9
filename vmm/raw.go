package vmm

import (
	"encoding/binary"
	"fmt"

	"github.com/vmmgo/vmm/kvm"
	"github.com/vmmgo/vmm/memory"
	"github.com/vmmgo/vmm/vmm/devices/debugport"
)

// RawImage is a flat binary loaded at Addr and entered at Entry (Addr when
// zero) in 64-bit long mode at CPL0, with an identity map of the first 4 GiB
// (user-accessible, so guests may drop to CPL3), the GDT of firmware.BuildGDT
// (kernel code 0x08, data 0x10, user code 0x1b, user data 0x23) and no
// interrupt controller (HLT exits to the VMM). Each vCPU starts there with
// RDI = its index, RSI = the number of vCPUs and its own stack.
//
// Raw guests talk to the VMM through ports: 0xf4 ends the machine with the
// value written as its exit code (PowerOff, Result.Code), 0xf8 records a
// timestamp, 0xe9 prints to the debug console, 0xa50 is the share/unshare
// interface (docs/pvmem.md).
type RawImage struct {
	Data  []byte
	Addr  uint64
	Entry uint64
}

// RawStack is the top of vCPU 0's stack in raw guests; vCPU n uses
// RawStack - n*RawStackSize.
const (
	RawStack     = 0x80000
	RawStackSize = 0x1000
)

// LoadRaw loads a raw image and creates the vCPUs.
func (m *Machine) LoadRaw(img RawImage) error {
	if len(m.vcpus) != 0 {
		return fmt.Errorf("machine already loaded")
	}
	if len(img.Data) == 0 {
		return fmt.Errorf("raw image is empty")
	}
	if img.Addr < 0x100000 && img.Addr+uint64(len(img.Data)) > LayoutPML4 {
		return fmt.Errorf("raw image at %#x+%#x overlaps the boot structures below 1 MiB (load it at 0x100000 or above)", img.Addr, len(img.Data))
	}
	if err := m.mem.Write(memory.GPA(img.Addr), img.Data); err != nil {
		return fmt.Errorf("load raw image (%d bytes at %#x, guest RAM %s): %w", len(img.Data), img.Addr, formatSize(m.cfg.Memory), err)
	}
	entry := img.Entry
	if entry == 0 {
		entry = img.Addr
	}
	if m.cfg.CPUs > 1 && RawStack-uint64(m.cfg.CPUs)*RawStackSize < LayoutCmdline {
		return fmt.Errorf("too many vCPUs (%d) for raw guest stacks", m.cfg.CPUs)
	}
	tables, err := m.writeBootTables(true)
	if err != nil {
		return err
	}
	if err := m.attachRawDevices(); err != nil {
		return err
	}
	profile := m.cfg.CPUProfile
	if profile == ProfileAuto {
		profile = ProfileHost // tiny guests use nothing the emulator lacks unless they ask
	}
	cpuid, err := m.cpuidProfile(profile)
	if err != nil {
		return err
	}
	for i := 0; i < m.cfg.CPUs; i++ {
		v, err := m.newVCPU(i)
		if err != nil {
			return err
		}
		m.vcpus = append(m.vcpus, v)
		if err := m.setCPUID(v, cpuid); err != nil {
			return err
		}
		if err := setupLongMode(v.cpu, tables); err != nil {
			return fmt.Errorf("vcpu %d: %w", i, err)
		}
		regs := kvm.Regs{RIP: entry, RSP: RawStack - uint64(i)*RawStackSize, RFLAGS: 2, RDI: uint64(i), RSI: uint64(m.cfg.CPUs)}
		if err := v.cpu.SetRegs(regs); err != nil {
			return fmt.Errorf("vcpu %d: set regs: %w", i, err)
		}
	}
	return nil
}

// exitPort ends the machine with the value written (QEMU isa-debug-exit style).
type exitPort struct{ m *Machine }

func (e exitPort) BusRead(_ int, _ uint64, data []byte) {
	for i := range data {
		data[i] = 0
	}
}

func (e exitPort) BusWrite(vcpu int, _ uint64, data []byte) {
	var b [4]byte
	copy(b[:], data)
	code := binary.LittleEndian.Uint32(b[:])
	e.m.stop(Result{Outcome: OutcomePowerOff, Code: code, Detail: fmt.Sprintf("vcpu %d wrote %d to the exit port", vcpu, code)})
}

func (m *Machine) attachRawDevices() error {
	dbg := m.cfg.DebugCon
	if dbg == nil {
		dbg = m.cfg.Console
	}
	con := debugport.NewConsole(dbg, m.log.WithField("device", "debugcon"))
	if err := m.attachPVMem(); err != nil {
		return err
	}
	for _, d := range []struct {
		name       string
		base, size uint64
		dev        BusDevice
	}{
		{"exit", PortTestExit, 4, exitPort{m}},
		{"debugcon", PortDebugCon, 1, con},
	} {
		if err := m.pio.Register(d.name, d.base, d.size, d.dev); err != nil {
			return err
		}
	}
	return nil
}
