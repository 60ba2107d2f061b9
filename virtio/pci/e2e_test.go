package pci_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/vmmgo/vmm/virtio"
	"github.com/vmmgo/vmm/virtio/pci"
	"github.com/vmmgo/vmm/virtio/rng"
	"github.com/vmmgo/vmm/virtio/virtiotest"
)

// TestEndToEndRNG drives a real device model through the transport the way
// Linux does: config-space probe, BAR-only initialisation, MSI-X, a
// doorbell write, then an MSI and a used entry from the device goroutine.
func TestEndToEndRNG(t *testing.T) {
	msi := &msiRecorder{}
	bus, err := pci.NewBus(pci.Options{WindowBase: 0xc0000000, WindowSize: 0x20000000, MSI: msi})
	if err != nil {
		t.Fatal(err)
	}
	mem := virtiotest.NewMemory(1 << 20)
	dev := rng.New(nil)
	d, err := bus.Add(dev, mem, pci.DeviceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Close()
	e := &env{bus: bus, dev: d, msi: msi, mem: mem}
	s := d.Slot()
	if id := e.cfgRead(s, 2, 2); id != 0x1044 {
		t.Fatalf("device id %#x", id)
	}
	drv, err := virtiotest.NewDriver(mem, 0x10000, 64, 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	e.barW(0x2000, 8, 0xfee00000)
	e.barW(0x2008, 4, 0x31)
	e.barW(0x200c, 4, 0)
	e.cfgWrite(s, 0x84+2, 2, 0x8000)
	e.cfgWrite(s, 4, 2, 0x6)
	// DRIVER_OK before FEATURES_OK is ignored.
	e.barW(20, 1, pci.StatusAcknowledge|pci.StatusDriver|pci.StatusDriverOK)
	if st := e.bar(20, 1); st&pci.StatusDriverOK != 0 {
		t.Fatalf("DRIVER_OK accepted without FEATURES_OK: %#x", st)
	}
	e.barW(20, 1, 0)
	if st := e.initDriver(t, virtio.FVersion1|virtio.FRingEventIdx, []*virtiotest.Driver{drv}); st&pci.StatusDriverOK == 0 {
		t.Fatalf("status %#x", st)
	}
	_, addrs, err := drv.Post(virtiotest.Buf{Len: 32, Write: true})
	if err != nil {
		t.Fatal(err)
	}
	e.barW(d.NotifyAddr(0)-d.Region().Addr, 2, 0)
	deadline := time.Now().Add(5 * time.Second)
	for msi.count() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no MSI from the device")
		}
		time.Sleep(time.Millisecond)
	}
	if msi.msgs[0] != [2]uint64{0xfee00000, 0x31} {
		t.Fatalf("MSI %+v", msi.msgs[0])
	}
	u, ok := drv.Used()
	if !ok || u.Len != 32 {
		t.Fatalf("used %+v %v", u, ok)
	}
	b := make([]byte, 32)
	_ = mem.Read(addrs[0], b)
	if bytes.Equal(b, make([]byte, 32)) {
		t.Fatal("no entropy written")
	}
	// Reset through the status register stops the device goroutine.
	e.barW(20, 1, 0)
	if e.bar(20, 1) != 0 {
		t.Fatal("reset did not complete")
	}
	// FAILED is recorded.
	e.barW(20, 1, pci.StatusAcknowledge|pci.StatusFailed)
	if e.bar(20, 1)&pci.StatusFailed == 0 {
		t.Fatal("FAILED not recorded")
	}
}
