package vmm

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmmgo/vmm/internal/tinyguest"
	"github.com/vmmgo/vmm/kvm/kvmtest"
	"github.com/vmmgo/vmm/memory"
	"github.com/vmmgo/vmm/virtio"
	"github.com/vmmgo/vmm/virtio/pci"
)

// panickyDevice is a fakeDevice whose model has a bug: with notifyPanics
// set, Notify itself panics once (the vCPU thread or the ioeventfd reader
// called it); otherwise Notify kicks a virtio.Worker whose loop panics
// once. After a reset it works.
type panickyDevice struct {
	*fakeDevice
	notifyPanics bool
	armed        atomic.Bool
	w            virtio.Worker
	Stats        virtio.Stats
}

func newPanickyDevice(inNotify bool) *panickyDevice {
	d := &panickyDevice{fakeDevice: newFakeDevice(), notifyPanics: inNotify}
	d.armed.Store(true)
	return d
}

func (d *panickyDevice) Activate(a virtio.Activation) error {
	if err := d.fakeDevice.Activate(a); err != nil {
		return err
	}
	d.w.Start(a, &d.Stats, func(k *virtio.Kicker, stop <-chan struct{}) {
		for {
			select {
			case <-stop:
				return
			case <-k.C:
				mask := k.Take()
				if d.armed.CompareAndSwap(true, false) {
					panic("injected device-worker bug")
				}
				for q := 0; q < 2; q++ {
					if mask&(1<<q) != 0 {
						d.notified <- q
					}
				}
			}
		}
	})
	return nil
}

func (d *panickyDevice) Notify(q int) {
	if d.notifyPanics {
		if d.armed.CompareAndSwap(true, false) {
			panic("injected Notify bug")
		}
		d.notified <- q
		return
	}
	d.w.Kick(q)
}

func (d *panickyDevice) Reset() { d.w.Stop(); d.fakeDevice.Reset() }

// TestDevicePanicIsContained: a guest rings the doorbells of a device whose
// Notify panics and of one whose worker goroutine panics, then of a healthy
// device. The two faulty devices end in DEVICE_NEEDS_RESET with a
// configuration-change interrupt and a counted panic; the healthy one is
// served; the guest keeps running until the host lets it power off; and a
// driver reset brings the faulty devices back.
func TestDevicePanicIsContained(t *testing.T) {
	kvmtest.Open(t)
	inNotify, inWorker, healthy := newPanickyDevice(true), newPanickyDevice(false), newFakeDevice()
	cfg := smallConfig(memory.KindAnon)
	cfg.Timeout = 60 * time.Second
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	w := m.newVirtioWiring([]virtio.Device{inNotify, inWorker, healthy})
	t.Cleanup(func() { w.Close() })
	ports, err := w.attach(&resetRecorder{})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.pio.Register("pci", PortPCIConfig, 8, ports); err != nil {
		t.Fatal(err)
	}
	devs := m.VirtioDevices()
	for _, d := range devs {
		driverOK(t, m, d.Region().Addr, 2)
	}
	// The guest writes each doorbell (KVM's ioeventfd or the MMIO exit
	// delivers it), then spins until the host sets the flag at 0x200000.
	const flag = 0x200000
	code, err := tinyguest.Assemble(fmt.Sprintf(`
		movabs $%#x, %%rbx
		movw $0, (%%rbx)
		movabs $%#x, %%rbx
		movw $0, (%%rbx)
		movabs $%#x, %%rbx
		movw $0, (%%rbx)
	1:	pause
		cmpl $1, %#x
		jne 1b
		xor %%eax, %%eax
		out %%al, $0xf4`, devs[0].NotifyAddr(0), devs[1].NotifyAddr(0), devs[2].NotifyAddr(0), flag), rawOrg)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.LoadRaw(RawImage{Data: code, Addr: rawOrg}); err != nil {
		t.Fatal(err)
	}
	type result struct {
		res Result
		err error
	}
	ran := make(chan result, 1)
	go func() { r, err := m.Run(t.Context()); ran <- result{r, err} }()

	waitNotify(t, healthy, 0)
	deadline := time.Now().Add(10 * time.Second)
	for devs[0].Stats.Panics.Load() == 0 || inWorker.Stats.Panics.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("panics not contained in time: notify %d, worker %d\n%s",
				devs[0].Stats.Panics.Load(), inWorker.Stats.Panics.Load(), m.DumpState())
		}
		time.Sleep(time.Millisecond)
	}
	for i, d := range devs[:2] {
		if st := d.Status(); st&pci.StatusDeviceNeedsReset == 0 {
			t.Errorf("device %d status %#x, want DEVICE_NEEDS_RESET", i, st)
		}
		if isr := mmioRead(m, d.Region().Addr+0x100, 1); isr&2 == 0 {
			t.Errorf("device %d ISR %#x, want the configuration-change bit", i, isr)
		}
	}
	if st := devs[2].Status(); st&pci.StatusDeviceNeedsReset != 0 {
		t.Errorf("healthy device status %#x: marked failed with the others", st)
	}
	select {
	case r := <-ran:
		t.Fatalf("guest stopped after the device panics: %v %v (%s)", r.res.Outcome, r.err, r.res.Detail)
	default:
	}
	// The driver resets the failed devices and starts them again.
	for i, d := range []*panickyDevice{inNotify, inWorker} {
		driverOK(t, m, devs[i].Region().Addr, 2)
		mmioWrite(m, devs[i].NotifyAddr(1), 2, 1)
		waitNotify(t, d.fakeDevice, 1)
	}
	if err := m.Memory().Write(flag, []byte{1, 0, 0, 0}); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-ran:
		if r.err != nil || r.res.Outcome != OutcomePowerOff {
			t.Fatalf("guest ended with %v %v (%s), want power-off\n%s", r.res.Outcome, r.err, r.res.Detail, r.res.Dump)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("guest did not power off after the flag\n%s", m.DumpState())
	}
	if n := devs[0].Stats.Panics.Load() + inWorker.Stats.Panics.Load(); n != 2 {
		t.Errorf("%d panics counted, want 2", n)
	}
}
