package vmm

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/vmmgo/vmm/firmware"
	"github.com/vmmgo/vmm/kvm"
	"github.com/vmmgo/vmm/memory"
	"github.com/vmmgo/vmm/virtio"
	"github.com/vmmgo/vmm/vmm/devices/acpipm"
	"github.com/vmmgo/vmm/vmm/devices/debugport"
	"github.com/vmmgo/vmm/vmm/devices/i8042"
	"github.com/vmmgo/vmm/vmm/devices/pvpanic"
	"github.com/vmmgo/vmm/vmm/devices/rtc"
	"github.com/vmmgo/vmm/vmm/devices/serial"
)

// LinuxConfig is what LoadLinux boots.
type LinuxConfig struct {
	Kernel  []byte // bzImage or ELF vmlinux (PVH note or 64-bit entry)
	Initrd  []byte // optional
	Cmdline string // appended to DefaultCmdline unless NoDefaultCmdline
	// NoDefaultCmdline uses Cmdline as given.
	NoDefaultCmdline bool
	// Extract says whether to unpack a bzImage's compressed vmlinux on the
	// host and boot it directly, sparing the guest its self-decompression
	// (about 85 s on hosts that emulate guest kernel mode).
	Extract ExtractMode
	// NoPVH boots ELF kernels through the 64-bit boot protocol even when
	// they carry a PVH note.
	NoPVH bool
	// ConsoleLog receives a copy of the serial output.
	ConsoleLog io.Writer
	// Devices are virtio device models put on PCI bus 0 (slots 1, 2, ...
	// in this order; vmm/virtio.go). LoadLinux takes ownership: they are
	// closed with the machine, also when loading fails.
	Devices []virtio.Device
}

// ExtractMode is LinuxConfig.Extract.
type ExtractMode int

const (
	// ExtractAuto extracts on hosts that emulate guest kernel mode, and
	// falls back to booting the bzImage when its payload cannot be used.
	ExtractAuto ExtractMode = iota
	ExtractOn
	ExtractOff
)

// DefaultCmdline is put before the user's command line: the console on the
// first serial port, and panics end the VMM (panic=-1 reboots at once, which
// the VMM reports as the guest's reboot or, with pvpanic, its panic).
const DefaultCmdline = "console=ttyS0 earlyprintk=serial,ttyS0,115200 panic=-1 reboot=acpi"

// emulatedTimerParams is added on hosts whose KVM emulates guest kernel
// mode: there the kernel's IOAPIC timer check (check_timer, a busy wait for
// ticks) runs in KVM's instruction emulator, thousands of times slower than
// the ticks it counts, and can give up on a working timer. Elsewhere the
// check passes (the PIT reaches the pin the MADT names, legacyGSIRoutes)
// and is kept: a guest whose timer does not work says so at boot.
const emulatedTimerParams = "no_timer_check"

// timerParams returns the command-line parameters the host needs for the
// guest's timer setup: emulatedTimerParams when this host emulates guest
// kernel mode, else nothing.
func (m *Machine) timerParams() string {
	if m.hostEmulated() {
		return emulatedTimerParams
	}
	return ""
}

// appendParams adds the parameters of params that cmdline does not have yet.
func appendParams(cmdline, params string) string {
	have := map[string]bool{}
	for _, f := range strings.Fields(cmdline) {
		have[f] = true
	}
	for _, p := range strings.Fields(params) {
		if !have[p] {
			cmdline = strings.TrimSpace(cmdline + " " + p)
			have[p] = true
		}
	}
	return cmdline
}

// LoadLinux sets up the platform (in-kernel irqchip and PIT, ACPI and MP
// tables, serial, i8042, RTC, ACPI power management, debug ports, the
// share/unshare port), loads the kernel and initrd and creates the vCPUs.
func (m *Machine) LoadLinux(lc LinuxConfig) (*firmware.BootInfo, error) {
	vw := m.newVirtioWiring(lc.Devices) // owns the devices from here on
	if len(m.vcpus) != 0 {
		return nil, fmt.Errorf("machine already loaded")
	}
	if len(lc.Kernel) == 0 {
		return nil, fmt.Errorf("kernel image is empty")
	}
	if err := m.vm.CreateIRQChip(); err != nil {
		return nil, fmt.Errorf("create in-kernel irqchip: %w", err)
	}
	m.irqchip = true
	if err := m.vm.SetGSIRouting(legacyGSIRoutes()); err != nil {
		return nil, fmt.Errorf("GSI routing: %w", err)
	}
	if err := m.vm.CreatePIT2(0); err != nil {
		return nil, fmt.Errorf("create in-kernel PIT: %w", err)
	}
	e820, err := firmware.DefaultE820(m.cfg.Memory)
	if err != nil {
		return nil, err
	}
	rsdp, err := firmware.WriteACPI(m.mem, firmware.ACPIConfig{
		NCPUs: m.cfg.CPUs, LAPICAddr: LayoutLAPIC, IOAPICAddr: LayoutIOAPIC,
		PM1aEvtPort: PortACPIPMEvt, PM1aCntPort: PortACPIPMCnt, SCIIRQ: IRQSCI,
		ResetPort: PortResetCtl, ResetValue: firmware.DefaultResetValue,
		Serial:      []firmware.SerialPort{{Port: PortCOM1, IRQ: IRQCOM1}},
		I8042:       true,
		PVPanicPort: pvpanic.Port,
		PCI:         true, // host bridge PNP0A08 with the BAR window (vmm/virtio.go)
		ECAM:        true,
		PCIIRQ:      IRQPCI,
	})
	if err != nil {
		return nil, fmt.Errorf("ACPI tables: %w", err)
	}
	if _, err := firmware.WriteMPTable(m.mem, firmware.DefaultMPTableAddr, m.cfg.CPUs); err != nil {
		return nil, fmt.Errorf("MP table: %w", err)
	}
	profile, err := m.cpuidProfile(m.cfg.CPUProfile)
	if err != nil {
		return nil, err
	}
	cmdline := lc.Cmdline
	if !lc.NoDefaultCmdline {
		cmdline = strings.TrimSpace(DefaultCmdline + " " + lc.Cmdline)
	}
	cmdline = appendParams(cmdline, m.timerParams())
	if profile.Emulated {
		cmdline = emulatedHostCmdline(cmdline, lc.NoDefaultCmdline, m.log) // vmm/cmdline_defaults.go
	}
	cmdline, profile.Protected = m.protectedCmdline(cmdline)
	fc := firmware.Config{Cmdline: cmdline, E820: e820, RSDPAddr: memory.GPA(rsdp), NoPVH: lc.NoPVH}
	fc.Extract = lc.Extract == ExtractOn
	if lc.Extract == ExtractAuto {
		fc.Extract = m.hostEmulated()
	}
	bi, err := firmware.Load(m.mem, lc.Kernel, lc.Initrd, fc)
	if err != nil && fc.Extract && lc.Extract == ExtractAuto {
		m.log.WithError(err).Info("cannot boot the bzImage's payload directly; booting the bzImage (it decompresses itself)")
		fc.Extract = false
		bi, err = firmware.Load(m.mem, lc.Kernel, lc.Initrd, fc)
	}
	if err != nil && strings.Contains(err.Error(), "RAM") { // too little guest RAM: say how to get more
		return nil, fmt.Errorf("%w (guest RAM is %s: --memory)", err, formatSize(m.cfg.Memory))
	}
	if err != nil {
		return nil, err
	}
	tables, err := m.writeBootTables(false)
	if err != nil {
		return nil, err
	}
	if bi.Protocol == firmware.ProtocolPVH {
		tables.gdt = firmware.GDTPVH
		if tables.gdtLimit, err = firmware.BuildGDT(m.mem, LayoutGDT, tables.gdt); err != nil {
			return nil, err
		}
	}
	if err := m.attachPlatform(lc, vw); err != nil {
		return nil, err
	}
	m.log.WithField("cmdline", bi.Cmdline).WithField("protocol", bi.Protocol.String()).
		WithField("format", bi.Format).WithField("cpuid", profile.Name).Info("booting Linux")
	for i := 0; i < m.cfg.CPUs; i++ {
		v, err := m.newVCPU(i)
		if err != nil {
			return nil, err
		}
		m.vcpus = append(m.vcpus, v)
		if err := m.setCPUID(v, profile); err != nil {
			return nil, err
		}
		if err := setupLinuxMSRs(v.cpu); err != nil {
			return nil, fmt.Errorf("vcpu %d: %w", i, err)
		}
		if err := setupLINT(v.cpu); err != nil {
			return nil, fmt.Errorf("vcpu %d: %w", i, err)
		}
		if i != 0 {
			continue // application processors wait for INIT/SIPI from the BSP
		}
		var regs kvm.Regs
		switch bi.Protocol {
		case firmware.ProtocolPVH:
			err = setupProtectedMode(v.cpu, tables)
			regs = kvm.Regs{RIP: bi.Entry, RBX: bi.ParamAddr, RFLAGS: 2}
		default:
			err = setupLongMode(v.cpu, tables)
			regs = kvm.Regs{RIP: bi.Entry, RSI: bi.ParamAddr, RSP: LayoutStackTop, RFLAGS: 2}
		}
		if err != nil {
			return nil, err
		}
		if err := v.cpu.SetRegs(regs); err != nil {
			return nil, fmt.Errorf("vcpu 0: set regs: %w", err)
		}
	}
	return bi, nil
}

// irqLine drives an ISA interrupt line of the in-kernel irqchip.
func (m *Machine) irqLine(irq uint32) func(level bool) {
	return func(level bool) {
		if err := m.vm.IRQLine(irq, level); err != nil {
			m.irqLimit.Warn(m.log.WithField("irq", irq), err, "KVM_IRQ_LINE failed")
		}
	}
}

// attachPlatform registers the legacy devices a PC-compatible Linux expects.
func (m *Machine) attachPlatform(lc LinuxConfig, vw *virtioWiring) error {
	log := m.log
	m.serial = serial.New(serial.Options{
		Console: m.cfg.Console, LogFile: lc.ConsoleLog, IRQ: m.irqLine(IRQCOM1),
		Log: log.WithField("device", "serial"),
	})
	kbd := i8042.New(i8042.Options{
		Reset: func() { m.Reboot("i8042 reset (command 0xfe)") },
		IRQ1:  m.irqLine(1),
		Log:   log.WithField("device", "i8042"),
	})
	below, above := m.cfg.Memory, uint64(0)
	if below > LayoutMMIOHole {
		below, above = LayoutMMIOHole, m.cfg.Memory-LayoutMMIOHole
	}
	clock := rtc.New(rtc.Options{MemoryBelow4G: below, MemoryAbove4G: above, CPUs: m.cfg.CPUs,
		IRQ: m.irqLine(8), Log: log.WithField("device", "rtc")})
	m.AddCloser(closerFunc(clock.Close))
	pm := acpipm.New(acpipm.Options{
		PowerOff: func() { m.PowerOff("ACPI S5 (PM1a_CNT SLP_EN)") },
		SCI:      m.irqLine(IRQSCI),
		Log:      log.WithField("device", "acpipm"),
	})
	reset := acpipm.NewResetControl(func() { m.Reboot("reset control register 0xcf9") }, log.WithField("device", "resetctl"))
	dbg := m.cfg.DebugCon
	if dbg == nil {
		dbg = m.cfg.Console
	}
	m.post = debugport.NewPOST(nil, log.WithField("device", "post"))
	if err := m.attachPVMem(); err != nil {
		return err
	}
	pciConfig, err := vw.attach(reset)
	if err != nil {
		return err
	}
	for _, d := range []struct {
		name       string
		base, size uint64
		dev        BusDevice
	}{
		{"serial-com1", PortCOM1, 8, m.serial},
		{"i8042-data", PortI8042Data, 1, kbd.DataPort()},
		{"i8042-cmd", PortI8042Cmd, 1, kbd.CommandPort()},
		{"rtc", PortRTC, 2, clock},
		{"acpi-pm1a-evt", PortACPIPMEvt, 4, pm.EventBlock()},
		{"acpi-pm1a-cnt", PortACPIPMCnt, 2, pm.ControlBlock()},
		{"pci-config+reset", PortPCIConfig, 8, pciConfig},
		{"post", PortPOST, 1, m.post},
		{"debugcon", PortDebugCon, 1, debugport.NewConsole(dbg, log.WithField("device", "debugcon"))},
		{"pvpanic", pvpanic.Port, 1, pvpanic.New(func(detail string) {
			m.stop(Result{Outcome: OutcomePanic, Detail: detail})
		})},
	} {
		if err := m.pio.Register(d.name, d.base, d.size, d.dev); err != nil {
			return err
		}
	}
	return nil
}

// SerialInputWait feeds bytes to the guest's COM1 (the console's stdin),
// waiting while the UART's receive buffer is full, until ctx ends or the
// machine stops.
func (m *Machine) SerialInputWait(ctx context.Context, p []byte) error {
	if m.serial == nil {
		return fmt.Errorf("no serial port")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-m.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	return m.serial.InputWait(ctx, p)
}

// Architectural MSRs set at boot, as the peers do: fast strings on, the
// SYSENTER/SYSCALL MSRs cleared, TSC at 0.
const (
	msrIA32SysenterCS  = 0x174
	msrIA32SysenterESP = 0x175
	msrIA32SysenterEIP = 0x176
	msrSTAR            = 0xc0000081
	msrLSTAR           = 0xc0000082
	msrCSTAR           = 0xc0000083
	msrSyscallMask     = 0xc0000084
	msrKernelGSBase    = 0xc0000102
	msrIA32TSC         = 0x10
	msrIA32MiscEnable  = 0x1a0
	miscEnableFastStr  = 1
)

func setupLinuxMSRs(c *kvm.VCPU) error {
	es := []kvm.MSREntry{
		{Index: msrIA32SysenterCS}, {Index: msrIA32SysenterESP}, {Index: msrIA32SysenterEIP},
		{Index: msrSTAR}, {Index: msrCSTAR}, {Index: msrKernelGSBase}, {Index: msrSyscallMask},
		{Index: msrLSTAR}, {Index: msrIA32TSC}, {Index: msrIA32MiscEnable, Data: miscEnableFastStr},
	}
	if err := c.SetMSRs(es); err != nil {
		return fmt.Errorf("set MSRs: %w", err)
	}
	return nil
}

// setupLINT programs the local APIC's LINT0 as ExtINT (the 8259's output)
// and LINT1 as NMI, as firmware leaves them (Intel MP spec §5.1; what
// Linux's virtual-wire mode expects).
func setupLINT(c *kvm.VCPU) error {
	l, err := c.LAPIC()
	if err != nil {
		return fmt.Errorf("get LAPIC: %w", err)
	}
	const (
		apicLVT0     = 0x350
		apicLVT1     = 0x360
		modeExtINT   = 0x7 << 8
		modeNMI      = 0x4 << 8
		modeMask     = 0x7 << 8
		deliveryBits = 0xfffff8ff
	)
	set := func(off int, mode uint32) {
		v := uint32(l.Regs[off]) | uint32(l.Regs[off+1])<<8 | uint32(l.Regs[off+2])<<16 | uint32(l.Regs[off+3])<<24
		v = v&deliveryBits | mode
		l.Regs[off], l.Regs[off+1], l.Regs[off+2], l.Regs[off+3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
	}
	set(apicLVT0, modeExtINT)
	set(apicLVT1, modeNMI)
	if err := c.SetLAPIC(l); err != nil {
		return fmt.Errorf("set LAPIC: %w", err)
	}
	return nil
}
