package vmm

// Wiring of the virtio devices into the machine: the PCI bus (virtio/pci) on
// the port and MMIO buses, doorbells through KVM ioeventfds, interrupts
// through KVM_SIGNAL_MSI (MSI-X) or KVM_IRQ_LINE (INTx).
//
// Addresses (see layout_amd64.go): configuration mechanism #1 at ports
// 0xcf8-0xcff (PortPCIConfig; the reset control byte at 0xcf9 lies inside and
// is forwarded), ECAM for bus 0 at LayoutECAM (1 MiB), BARs from the 32-bit
// window LayoutPCIWindow..+LayoutPCIWindowSz, INTx on IRQPCI.

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/vmmgo/vmm/internal/guestlog"
	"github.com/vmmgo/vmm/kvm"
	"github.com/vmmgo/vmm/virtio"
	"github.com/vmmgo/vmm/virtio/pci"
)

// VirtioStats counts how the virtio devices were driven.
type VirtioStats struct {
	// Devices is the number of virtio functions on the bus.
	Devices int
	// DriverOK is how many of them the guest's driver has brought to
	// DRIVER_OK.
	DriverOK int
	// IOEventFDs is the number of queue doorbells KVM signals through an
	// eventfd; queues without one are kicked through an MMIO exit.
	IOEventFDs int
	// EventfdKicks counts doorbells that arrived through an ioeventfd;
	// Notifies counts every doorbell the transport passed to a device
	// (ioeventfd and MMIO-exit paths together).
	EventfdKicks, Notifies uint64
	// MSIs counts KVM_SIGNAL_MSI calls that succeeded, MSIErrors those that
	// failed (and MSI-X messages dropped by the transport).
	MSIs, MSIErrors uint64
	// INTxAssertions counts rising edges of the shared INTx line.
	INTxAssertions uint64
	// BARMoves counts BAR re-registrations after the guest moved a BAR.
	BARMoves uint64
}

// virtioWiring owns the PCI bus and every virtio device of one machine. It
// is registered as a machine closer as soon as LoadLinux gets the devices,
// so they are released with the machine even when loading fails.
type virtioWiring struct {
	m   *Machine
	log *logrus.Entry

	devices []virtio.Device // what LinuxConfig.Devices handed over
	bus     *pci.Bus        // nil until attach
	msi     msiCounter
	intx    *sharedLine

	mu       sync.Mutex
	attached []*virtioFunction // in bus order; devices[:len(attached)] are on the bus
	closed   bool
	wg       sync.WaitGroup // eventfd reader goroutines

	eventfdKicks atomic.Uint64
	barMoves     atomic.Uint64
}

// virtioFunction is one device on the bus with its doorbell eventfds.
type virtioFunction struct {
	pdev      *pci.Device
	notifiers []*queueNotifier // one per queue; nil entries use the MMIO path
}

// queueNotifier is the eventfd KVM signals when the guest writes queue q's
// doorbell (KVM_IOEVENTFD, api.rst 4.59).
type queueNotifier struct {
	q    int
	f    *os.File // non-blocking eventfd, read through the Go poller
	reg  kvm.IOEventFD
	live bool // reg is assigned in KVM
}

// newVirtioWiring takes ownership of devs; it closes them with the machine.
func (m *Machine) newVirtioWiring(devs []virtio.Device) *virtioWiring {
	w := &virtioWiring{m: m, log: m.log.WithField("component", "pci"), devices: devs}
	w.msi.vm = m.vm
	w.intx = &sharedLine{irq: IRQPCI, set: m.vm.IRQLine, log: w.log}
	m.AddCloser(w)
	m.virtioW.Store(w)
	return w
}

// attach creates PCI bus 0, puts every device on it, registers the
// configuration ports (returned, for the port bus at PortPCIConfig), ECAM
// and the BARs, and the doorbell ioeventfds. reset receives byte writes to
// port 0xcf9.
func (w *virtioWiring) attach(reset BusDevice) (BusDevice, error) {
	m := w.m
	bus, err := pci.NewBus(pci.Options{
		WindowBase: LayoutPCIWindow, WindowSize: LayoutPCIWindowSz,
		MSI:       &w.msi,
		OnBARMove: w.moveBAR,
		OnResetControl: func(v byte) {
			reset.BusWrite(0, 0, []byte{v})
		},
		Log: w.log,
	})
	if err != nil {
		return nil, fmt.Errorf("PCI bus: %w", err)
	}
	w.mu.Lock()
	w.bus = bus
	w.mu.Unlock()
	if err := m.mmio.Register("pci-ecam", LayoutECAM, LayoutECAMSize, bus.ECAM()); err != nil {
		return nil, err
	}
	for i, dev := range w.devices {
		pdev, err := bus.Add(dev, m.mem, pci.DeviceOptions{INTx: w.intx.input(i), IRQ: IRQPCI,
			AccessPlatform: m.cfg.PrivateMemory, GuestShares: m.guestShares, OnUnprotected: m.unprotectedDriver}) // conversion.go
		if err != nil {
			return nil, fmt.Errorf("virtio device %d (%s): %w", i, dev.Type(), err)
		}
		fn := &virtioFunction{pdev: pdev}
		w.mu.Lock()
		w.attached = append(w.attached, fn)
		w.mu.Unlock()
		r := pdev.Region()
		if err := m.mmio.Register(r.Name, r.Addr, r.Size, r.Dev); err != nil {
			return nil, fmt.Errorf("virtio device %s: BAR0: %w", r.Name, err)
		}
		if err := w.startNotifiers(fn); err != nil {
			return nil, err
		}
		w.log.WithFields(logrus.Fields{"device": r.Name, "slot": pdev.Slot(), "bar": fmt.Sprintf("%#x", r.Addr),
			"queues": pdev.NumQueues(), "ioeventfds": countLive(fn.notifiers)}).Info("virtio device attached")
	}
	return pciPorts{config: bus.PIO(), reset: reset}, nil
}

// pciPorts is what sits at 0xcf8-0xcff: the bus's configuration mechanism
// #1, whose byte writes to 0xcf9 the bus forwards to OnResetControl. Byte
// reads of 0xcf9 go to the reset control register too, so the guest reads
// back its SYS_RST/FULL_RST bits (Linux reads before it writes, reboot=pci).
type pciPorts struct {
	config, reset BusDevice
}

func (p pciPorts) BusRead(vcpu int, off uint64, data []byte) {
	if off == PortResetCtl-PortPCIConfig && len(data) == 1 {
		p.reset.BusRead(vcpu, 0, data)
		return
	}
	p.config.BusRead(vcpu, off, data)
}

func (p pciPorts) BusWrite(vcpu int, off uint64, data []byte) { p.config.BusWrite(vcpu, off, data) }

func countLive(ns []*queueNotifier) int {
	n := 0
	for _, q := range ns {
		if q != nil && q.live {
			n++
		}
	}
	return n
}

// startNotifiers gives every queue of fn an eventfd registered at its
// doorbell and a goroutine that passes each signal to the transport. One
// goroutine per queue rather than one epoll loop per device: a goroutine
// parked in the Go poller costs no OS thread, and Notify never blocks.
//
// An ioeventfd that KVM refuses is not fatal: the doorbell write then exits
// to the VMM and reaches the same Notify through the BAR's MMIO handler.
func (w *virtioWiring) startNotifiers(fn *virtioFunction) error {
	fn.notifiers = make([]*queueNotifier, fn.pdev.NumQueues())
	for q := range fn.notifiers {
		efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
		if err != nil {
			return fmt.Errorf("virtio device %s queue %d: %w", fn.pdev.Name(), q, os.NewSyscallError("eventfd", err))
		}
		n := &queueNotifier{q: q, f: os.NewFile(uintptr(efd), fmt.Sprintf("ioeventfd:%s:%d", fn.pdev.Name(), q))}
		if err := w.assign(n, fn.pdev.NotifyAddr(q)); err != nil {
			w.log.WithError(err).WithField("device", fn.pdev.Name()).WithField("queue", q).
				Warn("no ioeventfd for the queue doorbell; using MMIO exits")
			n.f.Close()
			continue
		}
		fn.notifiers[q] = n
		w.wg.Add(1)
		go w.readNotifier(fn.pdev, n)
	}
	return nil
}

// assign registers n's eventfd for guest writes to addr. Writes of any
// length match (len 0, KVM_CAP_IOEVENTFD_ANY_LENGTH); kernels without that
// get the 2-byte match Linux's virtio-pci driver uses (iowrite16 of the
// queue index, virtio 1.2 §4.1.4.4), other sizes then take the MMIO path.
func (w *virtioWiring) assign(n *queueNotifier, addr uint64) error {
	reg := kvm.IOEventFD{Addr: addr, Len: 0, FD: int32(n.f.Fd())}
	err := w.m.vm.IOEventFD(reg)
	if errors.Is(err, unix.EINVAL) {
		reg.Len = 2
		err = w.m.vm.IOEventFD(reg)
	}
	if err != nil {
		return err
	}
	n.reg, n.live = reg, true
	return nil
}

// deassign removes n's registration (it must be removed with the same
// address, length and eventfd it was assigned with).
func (w *virtioWiring) deassign(n *queueNotifier) error {
	if !n.live {
		return nil
	}
	reg := n.reg
	reg.Flags |= kvm.IOEventFDFlagDeassign
	n.live = false
	return w.m.vm.IOEventFD(reg)
}

func (w *virtioWiring) readNotifier(pdev *pci.Device, n *queueNotifier) {
	defer w.wg.Done()
	var buf [8]byte
	for {
		// An eventfd read returns the count of signals since the last read
		// and resets it; one Notify covers them all (the device drains the
		// queue, not one entry per kick).
		if _, err := n.f.Read(buf[:]); err != nil {
			return // closed
		}
		w.eventfdKicks.Add(1)
		pdev.Notify(n.q)
	}
}

// moveBAR is pci.Options.OnBARMove: the guest reprogrammed a BAR with memory
// decoding on. It runs on the vCPU thread that wrote the BAR.
func (w *virtioWiring) moveBAR(old, new pci.Region) error {
	m := w.m
	w.barMoves.Add(1)
	// Only this BAR's own registration goes: after a move that failed
	// (below), old.Addr is another device's range, or nobody's.
	m.mmio.UnregisterDevice(old.Addr, old.Dev)
	var errs []error
	decoded := true
	if err := m.mmio.Register(new.Name, new.Addr, new.Size, new.Dev); err != nil {
		// The guest placed the BAR over another device: like a decode
		// conflict on real hardware, the BAR is unreachable until moved,
		// doorbells included (an ioeventfd there would steal the other
		// device's writes).
		errs = append(errs, err)
		decoded = false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return errors.Join(errs...)
	}
	for _, fn := range w.attached {
		if fn.pdev.Name() != new.Name {
			continue
		}
		for _, n := range fn.notifiers {
			if n == nil {
				continue
			}
			if err := w.deassign(n); err != nil {
				errs = append(errs, fmt.Errorf("queue %d: deassign ioeventfd: %w", n.q, err))
			}
			if !decoded {
				continue
			}
			if err := w.assign(n, fn.pdev.NotifyAddr(n.q)); err != nil {
				// The doorbell still works through the MMIO exit path.
				errs = append(errs, fmt.Errorf("queue %d: move ioeventfd: %w", n.q, err))
			}
		}
	}
	w.log.WithFields(logrus.Fields{"device": new.Name, "from": fmt.Sprintf("%#x", old.Addr), "to": fmt.Sprintf("%#x", new.Addr)}).
		Debug("BAR moved: re-registered")
	return errors.Join(errs...)
}

// Close stops the doorbell goroutines, then resets and closes every device
// (each Reset returns once the device no longer touches guest memory). It
// runs before the VM and guest memory are released.
func (w *virtioWiring) Close() error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return nil
	}
	w.closed = true
	attached := w.attached
	w.mu.Unlock()
	var errs []error
	for _, fn := range attached {
		for _, n := range fn.notifiers {
			if n == nil {
				continue
			}
			if err := w.deassign(n); err != nil && !errors.Is(err, kvm.ErrClosed) {
				errs = append(errs, fmt.Errorf("%s queue %d: deassign ioeventfd: %w", fn.pdev.Name(), n.q, err))
			}
			n.f.Close()
		}
	}
	w.wg.Wait()
	for i, dev := range w.devices {
		var err error
		if i < len(attached) {
			err = attached[i].pdev.Close() // resets an active device, then closes it
		} else {
			err = dev.Close()
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (w *virtioWiring) stats() VirtioStats {
	w.mu.Lock()
	attached := w.attached
	w.mu.Unlock()
	s := VirtioStats{Devices: len(attached), EventfdKicks: w.eventfdKicks.Load(), BARMoves: w.barMoves.Load(),
		MSIs: w.msi.sent.Load(), MSIErrors: w.msi.failed.Load(), INTxAssertions: w.intx.assertions.Load()}
	for _, fn := range attached {
		if fn.pdev.Status()&pci.StatusDriverOK != 0 {
			s.DriverOK++
		}
		s.IOEventFDs += countLive(fn.notifiers)
		s.Notifies += fn.pdev.Stats.Notifies.Load()
		s.MSIErrors += fn.pdev.Stats.MSIErrors.Load()
	}
	return s
}

// virtio is the machine's wiring (nil before LoadLinux).
func (m *Machine) virtio() *virtioWiring { return m.virtioW.Load() }

// VirtioDevices returns the virtio PCI functions in slot order (nil before
// LoadLinux).
func (m *Machine) VirtioDevices() []*pci.Device {
	w := m.virtio()
	if w == nil {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]*pci.Device, 0, len(w.attached))
	for _, fn := range w.attached {
		out = append(out, fn.pdev)
	}
	return out
}

// VirtioStats reports how the guest drove the virtio devices.
func (m *Machine) VirtioStats() VirtioStats {
	w := m.virtio()
	if w == nil {
		return VirtioStats{}
	}
	return w.stats()
}

// msiCounter delivers MSI-X messages with KVM_SIGNAL_MSI (api.rst 4.70),
// counting them. KVM_SIGNAL_MSI rather than irqfd + GSI routing: every
// message costs one syscall from the device goroutine either way (an eventfd
// write is a syscall too; BenchmarkMSIDelivery measured ~205 ns per
// KVM_SIGNAL_MSI and ~220 ns per irqfd write on the development host), and
// SIGNAL_MSI needs no routing table kept in step with the guest's MSI-X
// table writes and masks.
type msiCounter struct {
	vm           *kvm.VM
	sent, failed atomic.Uint64
}

func (c *msiCounter) SignalMSI(addr uint64, data uint32) error {
	if err := c.vm.SignalMSI(addr, data); err != nil {
		c.failed.Add(1)
		return err
	}
	c.sent.Add(1)
	return nil
}

// sharedLine is a level-triggered interrupt line several PCI functions share
// (wired-OR, PCI 3.0 §2.2.6): it is high while any input is high, and
// KVM_IRQ_LINE is called only when that changes.
type sharedLine struct {
	irq        uint32
	set        func(irq uint32, level bool) error
	log        *logrus.Entry
	mu         sync.Mutex
	high       map[int]bool
	assertions atomic.Uint64
	errLimit   guestlog.Limiter
}

// input returns the INTx function of input id.
func (l *sharedLine) input(id int) func(level bool) {
	return func(level bool) {
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.high == nil {
			l.high = map[int]bool{}
		}
		was := len(l.high) > 0
		if level {
			l.high[id] = true
		} else {
			delete(l.high, id)
		}
		now := len(l.high) > 0
		if was == now {
			return
		}
		if now {
			l.assertions.Add(1)
		}
		if err := l.set(l.irq, now); err != nil {
			l.errLimit.Warn(l.log.WithField("irq", l.irq), err, "KVM_IRQ_LINE for PCI INTx failed")
		}
	}
}
