package vmm

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vmmgo/vmm/internal/guestimage"
	"github.com/vmmgo/vmm/internal/hostspeed"
	"github.com/vmmgo/vmm/kvm/kvmtest"
)

// debianBootCost is what TestDebianKernelBoots's boot (the cloud kernel,
// 1 vCPU, 256 MiB, the VMM's emulating-host defaults, no initramfs, to the
// root-mount panic) costs on the quiet reference host of
// internal/hostspeed; the deadline is hostspeed's bound for it at the
// current load (cost × slowdown × Margin), up to debianBootCeiling. It is
// an estimate from loaded runs, not a quiet measurement: 34.8 minutes at a
// load average of 4.5-26 (hostspeed slowdown about 3-13 there), and our
// own kernel boots in 47-50 s quiet and 155 s beside two CPU hogs; a quiet
// run of this boot has not been taken.
const debianBootCost = 12 * time.Minute

// debianBootCeiling caps the deadline on a very busy host: beyond it the
// boot is treated as hung whatever the load (one run at load 4.5-26 took
// 34.8 minutes). VMM_DEBIAN_BOOT_TIMEOUT (a Go duration) replaces the
// derived deadline.
const debianBootCeiling = 75 * time.Minute

// debianFlavour is the Debian kernel the test boots (the one that boots
// faster here); VMM_DEBIAN_FLAVOUR picks the other ("amd64").
const debianFlavour = "cloud-amd64"

// TestDebianKernelBoots boots Debian's own kernel, unmodified (the bzImage
// from the linux-image package, fetched and cached by
// scripts/debian-kernel.sh), without an initramfs: it must get through all
// of its initcalls to the root mount, which fails for want of a disk
// ("VFS: Unable to mount root fs"). On a host that emulates guest kernel
// mode that takes the instruction fallback (ldmxcsr), the emulated CPU
// profile and the command-line defaults together. Skipped only when the
// package cannot be had (no apt, no network and no cached copy); long, so
// not run with -short and only with VMM_TEST_DEBIAN=1 (make test-debian);
// VMM_DEBIAN_CONSOLE_LOG=FILE copies the console there as it runs.
func TestDebianKernelBoots(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a distribution kernel (minutes under emulation); not run with -short")
	}
	if os.Getenv("VMM_TEST_DEBIAN") == "" {
		t.Skip("boots Debian's stock kernel (minutes on hosts that emulate kernel mode): set VMM_TEST_DEBIAN=1 or run make test-debian")
	}
	kvmtest.Open(t)
	flavour := debianFlavour
	if f := os.Getenv("VMM_DEBIAN_FLAVOUR"); f != "" {
		flavour = f
	}
	var deadline time.Duration
	if s := os.Getenv("VMM_DEBIAN_BOOT_TIMEOUT"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("VMM_DEBIAN_BOOT_TIMEOUT=%q: %v", s, err)
		}
		deadline = d
	} else {
		// Taken before bootLinux waits for the boot slot: the test runs
		// alone (make test-debian), so the wait is nil and the load the
		// same.
		deadline = hostspeed.DeadlineUpTo(debianBootCost, debianBootCeiling)
		t.Logf("hostspeed: %s, load %s: deadline %v for a boot of %v on the reference host",
			hostspeed.Measure(), loadAverage(), deadline.Round(time.Second), debianBootCost)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var log bytes.Buffer
	dk, err := guestimage.DebianKernel(ctx, flavour, &log)
	if err != nil {
		t.Skipf("Debian's linux-image-%s package cannot be fetched here: %v\n%s", flavour, err, log.String())
	}
	kernel, err := os.ReadFile(dk.VMLinuz)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("booting %s (%s) from %s, deadline %v", dk.Package, dk.KVer, dk.Dir, deadline)
	cfg := DefaultConfig()
	cfg.CPUs = 1
	cfg.Memory = 256 << 20
	cfg.Timeout = deadline // fires with every vCPU's state in res.Dump
	lc := LinuxConfig{Kernel: kernel}
	if p := os.Getenv("VMM_DEBIAN_CONSOLE_LOG"); p != "" {
		// A copy of the console while it runs (bootLinux keeps the rest).
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		lc.ConsoleLog = f
	}
	start := time.Now()
	res, out := bootLinux(t, cfg, lc, deadline, "")
	t.Logf("%s: %v to %v (load average at the end: %s)", flavour, time.Since(start).Round(time.Second), res.Outcome, loadAverage())
	for _, want := range []string{
		"Linux version " + dk.KVer,
		"Debian",
		"VFS: Unable to mount root fs",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("console lacks %q", want)
		}
	}
	// Without pvpanic (a module in Debian's kernels) the panic reboots
	// (panic=-1 reboot=acpi); with it, the VMM reports the panic.
	if res.Outcome != OutcomeReboot && res.Outcome != OutcomePanic {
		t.Errorf("outcome %v (%s), want the root-mount panic's reboot", res.Outcome, res.Detail)
	}
	if t.Failed() {
		t.Logf("console tail:\n%s\n%s", tail(out, 4000), res.Dump)
	}
}

// loadAverage is /proc/loadavg's first three fields (boot times mean
// little without it on a shared host).
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// tail returns the last n bytes of s.
func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
