package vmm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/vmmgo/vmm/firmware"
	"github.com/vmmgo/vmm/internal/guestlog"
	"github.com/vmmgo/vmm/kvm"
	"github.com/vmmgo/vmm/memory"
	"github.com/vmmgo/vmm/vmm/devices/debugport"
	"github.com/vmmgo/vmm/vmm/devices/pvmem"
	"github.com/vmmgo/vmm/vmm/devices/serial"
)

// Machine is one virtual machine: its KVM handles, guest memory, buses and
// vCPUs. Build it with New, load something into it (LoadLinux, LoadRaw), then
// Run it. A Machine runs once.
type Machine struct {
	cfg Config
	log *logrus.Entry

	sys     *kvm.System
	vm      *kvm.VM
	backend memory.Backend
	mem     *memory.Guest
	vcpus   []*vcpu

	pio, mmio *Bus
	irqchip   bool
	stats     *exitStats

	// hypercallExit is true when KVM_CAP_EXIT_HYPERCALL was enabled for
	// KVM_HC_MAP_GPA_RANGE, so the guest may be told about it in CPUID.
	hypercallExit bool
	// kvmEnforced is true when KVM itself enforces private memory.
	kvmEnforced bool
	// convLimit throttles the log lines of refused guest conversions.
	convLimit guestlog.Limiter
	// irqLimit throttles the log lines of failing interrupt lines.
	irqLimit guestlog.Limiter
	// conv counts conversions by transport (conversion.go); the other two
	// report a guest kernel without protected-guest support once.
	conv               conversionCounters
	unprotectedOnce    sync.Once
	unprotectedDrivers atomic.Uint64

	hostKind       hostState // Config.Host resolved (host.go)
	supportedCPUID []firmware.CPUIDEntry
	cpuProfileName string // the CPUID profile in use (for error hints)
	pvmem          *pvmem.Device
	serial         *serial.UART
	post           *debugport.POST

	// debug is the GDB stub's hook into the vCPU loop, nil without --gdb.
	debug debugger

	ctl vcpuControl // the vCPUs' control states (pause.go)

	// Stop reasons: the first one wins.
	stopOnce sync.Once
	result   Result
	done     chan struct{}
	ran      atomic.Bool
	started  atomic.Int64   // when Run started the vCPUs (Unix ns)
	vcpuWG   sync.WaitGroup // the vCPU goroutines of Run

	closers []io.Closer
	// virtioW is the PCI/virtio wiring LoadLinux set up (nil before, and
	// for raw guests); it is also among closers, which closes it.
	virtioW atomic.Pointer[virtioWiring]
}

// New creates the VM, its memory and vCPUs. Nothing runs until Run.
func New(cfg Config) (_ *Machine, err error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	m := &Machine{cfg: cfg, log: cfg.Log, done: make(chan struct{}), stats: newExitStats(),
		convLimit: guestlog.Limiter{Burst: 10}, irqLimit: guestlog.Limiter{Burst: 10}}
	m.ctl.init()
	defer func() {
		if err != nil {
			m.Close()
		}
	}()
	m.pio = NewBus("pio")
	m.mmio = NewBus("mmio")
	lim := &guestlog.Limiter{Burst: 10}
	m.pio.onMiss = func(vcpu int, addr uint64, size int, write bool) {
		if ok, n := lim.Allow(); ok {
			guestlog.Suppressed(m.log, n).WithFields(logrus.Fields{"vcpu": vcpu, "port": fmt.Sprintf("%#x", addr), "size": size, "write": write}).Debug("unhandled port access")
		}
	}
	m.mmio.onMiss = func(vcpu int, addr uint64, size int, write bool) {
		if ok, n := lim.Allow(); ok {
			guestlog.Suppressed(m.log, n).WithFields(logrus.Fields{"vcpu": vcpu, "gpa": fmt.Sprintf("%#x", addr), "size": size, "write": write}).Debug("unhandled MMIO access")
		}
	}

	if m.sys, err = kvm.Open(cfg.KVMPath); err != nil {
		return nil, err
	}
	if v, err := m.sys.APIVersion(); err != nil {
		return nil, err
	} else if v != 12 {
		return nil, fmt.Errorf("%s: KVM API version %d, this VMM needs 12", cfg.KVMPath, v)
	}
	if m.vm, err = m.sys.CreateVM(kvm.VMTypeDefault); err != nil {
		return nil, fmt.Errorf("create VM: %w", err)
	}
	if err := m.vm.SetTSSAddr(LayoutTSS); err != nil {
		return nil, err
	}
	if err := m.vm.SetIdentityMapAddr(LayoutIdentityMap); err != nil {
		return nil, err
	}
	if err := m.setupMemory(); err != nil {
		return nil, err
	}
	if n, _ := m.vm.CheckExtension(kvm.CapExitHypercall); n&(1<<kvm.HCMapGPARange) != 0 {
		if err := m.vm.EnableCap(kvm.CapExitHypercall, 1<<kvm.HCMapGPARange); err != nil {
			return nil, fmt.Errorf("enable KVM_CAP_EXIT_HYPERCALL: %w", err)
		}
		m.hypercallExit = true
	}
	return m, nil
}

// setupMemory allocates guest RAM once, from one backing, and registers one
// memslot per RAM region (the MMIO hole splits RAM above 3 GiB in two).
func (m *Machine) setupMemory() error {
	cfg := m.cfg
	opt := memory.Options{Prealloc: cfg.Prealloc, HugePageSize: cfg.HugePageSize, HugetlbfsPath: cfg.HugetlbfsPath, Name: "guest-ram"}
	var err error
	if cfg.MemoryBackend == memory.KindGuestMemfd {
		flags, cerr := m.vm.CheckExtension(kvm.CapGuestMemfdFlags)
		if cerr != nil || flags&int(kvm.GuestMemfdFlagMMAP|kvm.GuestMemfdFlagInitShared) != int(kvm.GuestMemfdFlagMMAP|kvm.GuestMemfdFlagInitShared) {
			return fmt.Errorf("memory backend guest_memfd: this kernel does not offer mmap-able shared guest_memfd (KVM_CAP_GUEST_MEMFD_FLAGS = %d, need MMAP|INIT_SHARED = 3; Linux 6.18 or later): %w", flags, memory.ErrUnsupported)
		}
		fd, gerr := m.vm.CreateGuestMemfd(cfg.Memory, kvm.GuestMemfdFlagMMAP|kvm.GuestMemfdFlagInitShared)
		if gerr != nil {
			return fmt.Errorf("memory backend guest_memfd: %w", gerr)
		}
		m.backend, err = memory.NewGuestMemfd(fd, cfg.Memory, opt)
	} else {
		m.backend, err = memory.NewBackend(cfg.MemoryBackend, cfg.Memory, opt)
	}
	if err != nil {
		return fmt.Errorf("guest memory (%s, %s): %w", cfg.MemoryBackend, formatSize(cfg.Memory), err)
	}
	var regions []memory.Region
	var off uint64
	for _, r := range ramRegions(cfg.Memory) {
		regions = append(regions, memory.Region{GPA: memory.GPA(r[0]), Size: r[1], Backend: m.backend, Offset: off})
		off += r[1]
	}
	policy := memory.PolicyPreserve
	if cfg.ZeroOnConvert {
		policy = memory.PolicyZero
	}
	m.mem, err = memory.NewGuestWithOptions(memory.GuestOptions{
		InitialPrivate: cfg.PrivateMemory, Policy: policy, Harden: cfg.Harden,
		Log: m.log.WithField("component", "memory"),
	}, regions...)
	if err != nil {
		return err
	}
	for slot, r := range regions {
		if err := m.registerSlot(uint32(slot), r); err != nil {
			return err
		}
	}
	m.configureConversion()
	return nil
}

func (m *Machine) registerSlot(slot uint32, r memory.Region) error {
	host := r.Backend.Bytes()[r.Offset : r.Offset+r.Size]
	addr := uint64(sliceAddr(host))
	if r.Backend.Kind() == memory.KindGuestMemfd {
		err := m.vm.SetUserMemoryRegion2(kvm.UserspaceMemoryRegion2{
			Slot: slot, Flags: kvm.MemGuestMemfd, GuestPhysAddr: uint64(r.GPA), MemorySize: r.Size,
			UserspaceAddr: addr, GuestMemfdOffset: r.Offset, GuestMemfd: uint32(r.Backend.FD()),
		})
		if err != nil {
			return fmt.Errorf("register guest_memfd memslot %d at %#x: %w", slot, r.GPA, err)
		}
		return nil
	}
	err := m.vm.SetUserMemoryRegion(kvm.UserspaceMemoryRegion{
		Slot: slot, GuestPhysAddr: uint64(r.GPA), MemorySize: r.Size, UserspaceAddr: addr,
	})
	if err != nil {
		return fmt.Errorf("register memslot %d at %#x: %w", slot, r.GPA, err)
	}
	return nil
}

// Memory is the guest's RAM.
func (m *Machine) Memory() *memory.Guest { return m.mem }

// Backend is the single allocation behind guest RAM.
func (m *Machine) Backend() memory.Backend { return m.backend }

// PIO and MMIO are the machine's buses, for attaching devices.
func (m *Machine) PIO() *Bus  { return m.pio }
func (m *Machine) MMIO() *Bus { return m.mmio }

// VM is the KVM VM handle (for wiring devices that need ioeventfd/irqfd).
func (m *Machine) VM() *kvm.VM { return m.vm }

// Log is the machine's logger.
func (m *Machine) Log() *logrus.Entry { return m.log }

// NumCPUs is the number of vCPUs.
func (m *Machine) NumCPUs() int { return len(m.vcpus) }

// stop records why the machine stops (the first reason wins) and kicks every
// vCPU out of KVM_RUN.
func (m *Machine) stop(r Result) {
	m.stopOnce.Do(func() {
		m.result = r
		close(m.done)
		for _, v := range m.vcpus {
			v.requestStop() // also wakes a parked vCPU
		}
	})
}

// Stop ends a running machine from the host side.
func (m *Machine) Stop(detail string) {
	m.stop(Result{Outcome: OutcomeStopped, Detail: detail})
}

// PowerOff, Reboot and Panic are the device callbacks for the guest's
// power-off, reset and panic paths.
func (m *Machine) PowerOff(detail string) { m.stop(Result{Outcome: OutcomePowerOff, Detail: detail}) }
func (m *Machine) Reboot(detail string)   { m.stop(Result{Outcome: OutcomeReboot, Detail: detail}) }
func (m *Machine) Panic(detail string)    { m.stop(Result{Outcome: OutcomePanic, Detail: detail}) }

// Done is closed when the machine has been asked to stop.
func (m *Machine) Done() <-chan struct{} { return m.done }

// Run starts every vCPU and blocks until the machine stops: the guest powers
// off, resets, panics, every vCPU halts (tiny guests), the context ends, or
// the watchdog (Config.Timeout) fires. The vCPU threads have all returned when
// Run returns.
func (m *Machine) Run(ctx context.Context) (Result, error) {
	if !m.ran.CompareAndSwap(false, true) {
		return Result{}, errors.New("machine already ran")
	}
	if len(m.vcpus) == 0 {
		return Result{}, errors.New("nothing loaded: no vCPUs to run")
	}
	m.started.Store(time.Now().UnixNano())
	wg := &m.vcpuWG
	for _, v := range m.vcpus {
		wg.Add(1)
		go func(v *vcpu) {
			defer wg.Done()
			v.loop()
		}(v)
	}
	var timeout <-chan time.Time
	if m.cfg.Timeout > 0 {
		t := time.NewTimer(m.cfg.Timeout)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case <-m.done:
	case <-ctx.Done():
		m.stop(Result{Outcome: OutcomeStopped, Detail: fmt.Sprintf("host: %v", context.Cause(ctx)), Dump: m.DumpState()})
	case <-timeout:
		dump := m.DumpState()
		m.stop(Result{Outcome: OutcomeTimeout, Detail: fmt.Sprintf("watchdog: guest still running after %v", m.cfg.Timeout), Dump: dump})
	}
	wg.Wait()
	return m.result, nil
}

// DumpState asks every vCPU for its registers, the instruction bytes at RIP
// and its exit counters, without stopping the machine. A vCPU that does not
// answer within a second (stuck in the kernel) is reported as such.
func (m *Machine) DumpState() string {
	var b strings.Builder
	for _, v := range m.vcpus {
		b.WriteString(v.requestDump(time.Second))
	}
	b.WriteString(m.stats.String())
	b.WriteString(m.MemoryReport())
	return b.String()
}

// ExitReport is the exit counters so far, one per line.
func (m *Machine) ExitReport() string { return m.stats.String() }

// Stats is the exit counters so far.
func (m *Machine) Stats() map[string]uint64 { return m.stats.snapshot() }

// Close releases everything. It is safe after a failed New and twice, and
// while Run is still going (it stops the machine and waits for the vCPU
// threads first, so no thread runs on a closed vCPU).
func (m *Machine) Close() error {
	if m.ran.Load() {
		m.Stop("machine closed")
		m.vcpuWG.Wait()
	}
	var errs []error
	for i := len(m.closers) - 1; i >= 0; i-- {
		errs = append(errs, m.closers[i].Close())
	}
	m.closers = nil
	for _, v := range m.vcpus {
		errs = append(errs, v.cpu.Close())
	}
	m.vcpus = nil
	if m.vm != nil {
		errs = append(errs, m.vm.Close())
		m.vm = nil
	}
	if m.backend != nil {
		errs = append(errs, m.backend.Close())
		m.backend = nil
	}
	if m.sys != nil {
		errs = append(errs, m.sys.Close())
		m.sys = nil
	}
	runtime.KeepAlive(m)
	return errors.Join(errs...)
}

// AddCloser registers something to close with the machine (devices, files).
func (m *Machine) AddCloser(c io.Closer) { m.closers = append(m.closers, c) }

// closerFunc adapts a func() to io.Closer.
type closerFunc func()

func (f closerFunc) Close() error { f(); return nil }
