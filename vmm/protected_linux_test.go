package vmm

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/vmmgo/vmm/virtio"
	"github.com/vmmgo/vmm/virtio/rng"
)

// TestLinuxPrivateMemoryWithoutSupport boots the project's kernel under
// --private-memory with two virtio devices and checks both sides of the
// protected-guest contract, depending on what the kernel was built with:
//   - with the protected-guest patch (CONFIG_VMMGO_PROTECTED_GUEST=y in its
//     .config, scripts/guest-kernel/protected.fragment) the drivers are
//     accepted, the guest shares its swiotlb pool and rings and keeps the
//     rest private (>= 90 %), and no device access is refused;
//   - without it every virtio driver must be turned away at FEATURES_OK
//     (the kernel shared nothing), the VMM must say so exactly once, early,
//     naming the reason, and no device may have touched guest RAM.
func TestLinuxPrivateMemoryWithoutSupport(t *testing.T) {
	k, _ := guestKernel(t)
	kernel, err := os.ReadFile(k.VMLinux)
	if err != nil {
		t.Fatal(err)
	}
	kconfig, err := os.ReadFile(k.Config)
	if err != nil {
		t.Fatal(err)
	}
	supported := strings.Contains(string(kconfig), "\nCONFIG_VMMGO_PROTECTED_GUEST=y\n")
	var logBuf syncBuffer
	l := logrus.New()
	l.SetOutput(&logBuf)
	l.SetLevel(logrus.InfoLevel)
	cfg := DefaultConfig()
	cfg.Memory = 256 << 20
	cfg.PrivateMemory = true
	cfg.Timeout = 10 * time.Minute
	cfg.Log = logrus.NewEntry(l)
	con := &syncBuffer{}
	cfg.Console = con
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	devices := []virtio.Device{rng.New(nil), rng.New(nil)}
	if _, err := m.LoadLinux(LinuxConfig{Kernel: kernel, Cmdline: "root=/dev/vda", Devices: devices}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	res, err := m.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out, log := con.String(), logBuf.String()
	t.Logf("guest ended after %v: %v (%s)", time.Since(start).Round(time.Millisecond), res.Outcome, res.Detail)
	c := m.Conversions()
	ps := m.ConversionStats()
	t.Logf("protected-guest kernel: %v; pages %+v; conversions %+v", supported, ps, c)
	if !strings.Contains(out, "swiotlb=") {
		t.Errorf("console lacks the swiotlb default")
	}
	if supported {
		if strings.Contains(log, "guest kernel lacks protected-guest support") || c.UnprotectedDrivers != 0 {
			t.Errorf("a protected-guest kernel was refused (%d drivers):\n%s", c.UnprotectedDrivers, log)
		}
		total := ps.SharedPages + ps.PrivatePages
		if ps.SharedPages == 0 || total == 0 || ps.PrivatePages*10 < total*9 {
			t.Errorf("shared %d, private %d pages: want the swiotlb pool and rings shared and >= 90 %% private", ps.SharedPages, ps.PrivatePages)
		}
		if ps.DeviceRefused != 0 {
			t.Errorf("%d device accesses refused in normal operation, want 0", ps.DeviceRefused)
		}
	} else {
		if n := strings.Count(log, "guest kernel lacks protected-guest support"); n != 1 {
			t.Errorf("%d 'lacks protected-guest support' log lines, want exactly 1", n)
		}
		if !strings.Contains(log, "shared no memory") {
			t.Errorf("the log does not say why:\n%s", log)
		}
		if !strings.Contains(out, "device refuses features") {
			t.Errorf("console lacks the drivers' clean probe failure")
		}
		if c.UnprotectedDrivers != uint64(len(devices)) {
			t.Errorf("%d drivers refused, want %d", c.UnprotectedDrivers, len(devices))
		}
		if ps.DeviceRefused != 0 || ps.SharedPages != 0 {
			t.Errorf("device accesses refused %d, shared pages %d: want 0 and 0", ps.DeviceRefused, ps.SharedPages)
		}
	}
	if res.Outcome == OutcomeError || res.Outcome == OutcomeTimeout {
		t.Errorf("outcome %v (%s)\n%s", res.Outcome, res.Detail, res.Dump)
	}
	if t.Failed() {
		t.Logf("console:\n%s\nlog:\n%s", out, log)
	}
}
