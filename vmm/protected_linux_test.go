package vmm

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/vmmgo/vmm/internal/hostspeed"
	"github.com/vmmgo/vmm/virtio"
	"github.com/vmmgo/vmm/virtio/rng"
)

// TestLinuxPrivateMemoryWithoutSupport boots the project's kernel under
// --private-memory as a kernel without protected-guest support:
// vmmgo_protected=off makes the patched kernel ignore the VMM's
// announcement (scripts/guest-kernel/patches/vmmgo-protected-guest.patch),
// so it shares nothing and its virtio drivers negotiate as on any host.
// The VMM must turn every driver away at FEATURES_OK, say so exactly once,
// early (before the kernel reaches init), naming the reason, and no device
// may have touched guest RAM. The guest is stopped as soon as both drivers
// were refused and the kernel logged their probe failure: the check costs
// the part of a boot up to the virtio probes, not a whole one. The protected
// boot that works is TestLinuxVirtioDevicesProtected.
func TestLinuxPrivateMemoryWithoutSupport(t *testing.T) {
	k, _ := guestKernel(t)
	kernel, err := os.ReadFile(k.VMLinux)
	if err != nil {
		t.Fatal(err)
	}
	var logBuf syncBuffer
	l := logrus.New()
	l.SetOutput(&logBuf)
	l.SetLevel(logrus.InfoLevel)
	cfg := DefaultConfig()
	cfg.Memory = linuxTestMemory
	cfg.PrivateMemory = true
	cfg.Timeout = hostspeed.BootSlot(t, hostspeed.LinuxBoot)
	cfg.Log = logrus.NewEntry(l)
	con := &syncBuffer{}
	cfg.Console = con
	devices := []virtio.Device{rng.New(nil), rng.New(nil)}
	m := newOwningDevices(t, cfg, devices)
	defer m.Close()
	if _, err := m.LoadLinux(LinuxConfig{Kernel: kernel, Cmdline: "vmmgo_protected=off root=/dev/vda", Devices: devices}); err != nil {
		t.Fatal(err)
	}
	// Stop the guest once both drivers were refused and the kernel said
	// so; a console that reaches init first means the message came late.
	const probeFailure = "device refuses features"
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		for {
			if m.Conversions().UnprotectedDrivers >= uint64(len(devices)) && strings.Count(con.String(), probeFailure) >= len(devices) {
				cancel(errors.New("both virtio drivers refused: the no-support path is established"))
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	start := time.Now()
	res, err := m.Run(ctx)
	cancel(nil)
	<-watchDone
	if err != nil {
		t.Fatal(err)
	}
	out, log := con.String(), logBuf.String()
	c := m.Conversions()
	ps := m.ConversionStats()
	t.Logf("guest stopped after %v: %v (%s); pages %+v; conversions %+v", time.Since(start).Round(time.Millisecond), res.Outcome, res.Detail, ps, c)
	if !strings.Contains(out, "vmmgo: vmmgo_protected=off: protected mode announced but ignored") {
		t.Errorf("console lacks the kernel's vmmgo_protected=off line: the kernel is not the patched one or ignored the switch")
	}
	if !strings.Contains(out, "swiotlb=") {
		t.Errorf("console lacks the swiotlb default the VMM adds under --private-memory")
	}
	if n := strings.Count(log, "guest kernel lacks protected-guest support"); n != 1 {
		t.Errorf("%d 'lacks protected-guest support' log lines, want exactly 1", n)
	}
	if !strings.Contains(log, "shared no memory") {
		t.Errorf("the log does not say why (want the reason naming that the guest shared no memory):\n%s", log)
	}
	if n := strings.Count(out, probeFailure); n < len(devices) {
		t.Errorf("console has %d %q lines, want the clean probe failure of all %d drivers", n, probeFailure, len(devices))
	}
	if strings.Contains(out, "Run /") || strings.Contains(out, "Kernel panic") {
		t.Errorf("the kernel reached init or panicked before the refusal was established: the message came late")
	}
	if c.UnprotectedDrivers != uint64(len(devices)) {
		t.Errorf("%d drivers refused, want %d", c.UnprotectedDrivers, len(devices))
	}
	if ps.DeviceRefused != 0 || ps.SharedPages != 0 || ps.ToShared != 0 {
		t.Errorf("device accesses refused %d, shared pages %d, share requests %d: want 0, 0 and 0", ps.DeviceRefused, ps.SharedPages, ps.ToShared)
	}
	if res.Outcome != OutcomeStopped || !strings.Contains(res.Detail, "both virtio drivers refused") {
		t.Errorf("outcome %v (%s), want stopped by the test once the refusal was established\n%s", res.Outcome, res.Detail, res.Dump)
	}
	if t.Failed() {
		t.Logf("console:\n%s\nlog:\n%s", out, log)
	}
}
