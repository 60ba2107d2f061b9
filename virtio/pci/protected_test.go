package pci_test

import (
	"strings"
	"testing"

	"github.com/vmmgo/vmm/memory"
	"github.com/vmmgo/vmm/virtio"
	"github.com/vmmgo/vmm/virtio/pci"
	"github.com/vmmgo/vmm/virtio/virtiotest"
)

// newProtectedEnv is newEnv with DeviceOptions.AccessPlatform, recording
// the OnUnprotected reports.
func newProtectedEnv(t *testing.T, protected bool) (*env, *[]string) {
	return newProtectedEnvShares(t, protected, nil)
}

func newProtectedEnvShares(t *testing.T, protected bool, shares func() bool) (*env, *[]string) {
	t.Helper()
	e := &env{echo: &echoDevice{}, msi: &msiRecorder{}, mem: virtiotest.NewMemory(1 << 20)}
	var reports []string
	var err error
	e.bus, err = pci.NewBus(pci.Options{WindowBase: 0xc0000000, WindowSize: 0x20000000, MSI: e.msi})
	if err != nil {
		t.Fatal(err)
	}
	e.dev, err = e.bus.Add(e.echo, e.mem, pci.DeviceOptions{
		AccessPlatform: protected,
		GuestShares:    shares,
		OnUnprotected:  func(dev, why string) { reports = append(reports, dev+": "+why) },
	})
	if err != nil {
		t.Fatal(err)
	}
	return e, &reports
}

// TestAccessPlatformNegotiation: with AccessPlatform the device offers
// VIRTIO_F_ACCESS_PLATFORM (bit 33), refuses FEATURES_OK to a driver that
// does not accept it (reporting once per attempt), and accepts it with it;
// without AccessPlatform it is not offered, so a driver asking for it is
// refused like any unknown bit.
func TestAccessPlatformNegotiation(t *testing.T) {
	base := virtio.FVersion1 | virtio.FRingEventIdx
	t.Run("protected", func(t *testing.T) {
		e, reports := newProtectedEnv(t, true)
		e.barW(0, 4, 1)
		if hi := e.bar(4, 4); hi&(1<<(33-32)) == 0 || hi&1 == 0 {
			t.Fatalf("device features hi %#x: ACCESS_PLATFORM or VERSION_1 not offered", hi)
		}
		if st := e.initDriver(t, base, nil); st&pci.StatusFeaturesOK != 0 {
			t.Fatal("FEATURES_OK accepted from a driver without ACCESS_PLATFORM")
		}
		if len(*reports) != 1 || !strings.Contains((*reports)[0], "VIRTIO_F_ACCESS_PLATFORM") {
			t.Fatalf("reports %q", *reports)
		}
		if e.dev.Stats.Unprotected.Load() != 1 || e.dev.Stats.FeatureRejects.Load() != 1 {
			t.Errorf("stats: unprotected %d, rejects %d", e.dev.Stats.Unprotected.Load(), e.dev.Stats.FeatureRejects.Load())
		}
		if st := e.initDriver(t, base|virtio.FAccessPlatform, nil); st&pci.StatusFeaturesOK == 0 {
			t.Fatal("FEATURES_OK refused with ACCESS_PLATFORM accepted")
		}
		if len(*reports) != 1 {
			t.Errorf("a protected driver was reported: %q", *reports)
		}
	})
	t.Run("unprotected", func(t *testing.T) {
		e, reports := newProtectedEnv(t, false)
		e.barW(0, 4, 1)
		if hi := e.bar(4, 4); hi&(1<<(33-32)) != 0 {
			t.Fatalf("ACCESS_PLATFORM offered without AccessPlatform (hi %#x)", hi)
		}
		if st := e.initDriver(t, base, nil); st&pci.StatusFeaturesOK == 0 {
			t.Fatal("a plain driver refused")
		}
		if st := e.initDriver(t, base|virtio.FAccessPlatform, nil); st&pci.StatusFeaturesOK != 0 {
			t.Fatal("accepted ACCESS_PLATFORM that was not offered")
		}
		if len(*reports) != 0 {
			t.Errorf("reports without AccessPlatform: %q", *reports)
		}
	})
}

// TestAccessPlatformNothingShared: while the guest has shared no memory,
// even a driver with ACCESS_PLATFORM gets FEATURES_OK refused (a kernel
// that knows the bit but not that its RAM is private: stock Linux); once
// the guest shares, the same driver is accepted.
func TestAccessPlatformNothingShared(t *testing.T) {
	shared := false
	e, reports := newProtectedEnvShares(t, true, func() bool { return shared })
	feat := virtio.FVersion1 | virtio.FRingEventIdx | virtio.FAccessPlatform
	if st := e.initDriver(t, feat, nil); st&pci.StatusFeaturesOK != 0 {
		t.Fatal("FEATURES_OK accepted before the guest shared anything")
	}
	if len(*reports) != 1 || !strings.Contains((*reports)[0], "shared no memory") {
		t.Fatalf("reports %q", *reports)
	}
	shared = true
	if st := e.initDriver(t, feat, nil); st&pci.StatusFeaturesOK == 0 {
		t.Fatal("FEATURES_OK refused after the guest shared memory")
	}
}

// TestAccessPlatformPrivateRings: a driver that accepts ACCESS_PLATFORM and
// has shared memory but leaves a virtqueue in private memory gets its
// DRIVER_OK failed (DEVICE_NEEDS_RESET) and reported, instead of a storm of
// refused ring accesses; once the rings are shared the device activates.
func TestAccessPlatformPrivateRings(t *testing.T) {
	feat := virtio.FVersion1 | virtio.FRingEventIdx | virtio.FAccessPlatform
	for _, ring := range []string{"desc", "avail", "used"} {
		t.Run(ring, func(t *testing.T) {
			e, reports := newProtectedEnv(t, true)
			d0, _ := virtiotest.NewDriver(e.mem, 0x10000, 16, 4096)
			at := map[string]uint64{"desc": uint64(d0.Cfg.Desc), "avail": uint64(d0.Cfg.Avail), "used": uint64(d0.Cfg.Used)}[ring]
			e.mem.SetPrivate(memory.GPA(at), 1, true)
			st := e.initDriver(t, feat, []*virtiotest.Driver{d0})
			if st&pci.StatusDeviceNeedsReset == 0 {
				t.Fatalf("status %#x: activation with a private %s ring did not fail", st, ring)
			}
			e.echo.mu.Lock()
			act := e.echo.act
			e.echo.mu.Unlock()
			if act != nil {
				t.Fatal("the device model was activated")
			}
			if len(*reports) != 1 || !strings.Contains((*reports)[0], "private memory") {
				t.Fatalf("reports %q", *reports)
			}
			e.mem.SetPrivate(memory.GPA(at), 1, false)
			e.barW(20, 1, 0) // reset
			if st := e.initDriver(t, feat, []*virtiotest.Driver{d0}); st&pci.StatusDriverOK == 0 || st&pci.StatusDeviceNeedsReset != 0 {
				t.Fatalf("status %#x with shared rings", st)
			}
		})
	}
}
