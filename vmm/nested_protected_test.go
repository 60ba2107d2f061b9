package vmm

import (
	"context"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/vmmgo/vmm/internal/guestimage"
	"github.com/vmmgo/vmm/memory"
	"github.com/vmmgo/vmm/virtio"
	"github.com/vmmgo/vmm/virtio/blk"
)

// Protected guests in the hardware-KVM lane (vmm/nested_test.go): there
// vmcall exits, so the KVM_HC_MAP_GPA_RANGE transport of the protected-guest
// patch can run, and guest userspace runs, so a block read can be timed from
// inside the guest.

// nestedProtectedRun is one L2 boot with the test initramfs and a disk
// (/dev/vda) of random content, whose /init reads ddMiB MiB from the disk
// (vmm.ddread). It returns what the VMM and the guest reported.
type nestedProtectedRun struct {
	res      Result
	console  string
	log      string
	took     time.Duration
	conv     ConversionStats
	pages    memory.Stats
	mibps    float64 // read throughput the guest measured
	readCRC  uint32
	readSize int64
}

// nestedDisk writes a disk image of mib MiB of random bytes and returns its
// path and CRC-32 (IEEE).
func nestedDisk(t *testing.T, mib int) (string, uint32) {
	t.Helper()
	b := make([]byte, mib<<20)
	for i := 0; i < len(b); i += 8 {
		v := rand.Uint64()
		for j := 0; j < 8; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	p := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p, crc32.ChecksumIEEE(b)
}

var ddReadRE = regexp.MustCompile(`VMM-GUEST-INIT: ddread /dev/vda: (\d+) bytes in [0-9.]+s: ([0-9.]+) MiB/s crc32 ([0-9a-f]{8})`)

func nestedProtectedBoot(t *testing.T, protected bool, disk string, ddMiB int, extra string) nestedProtectedRun {
	t.Helper()
	kernel, rd := guestKernelBytes(t)
	dev, err := blk.Open(blk.Config{Path: disk, ReadOnly: true, Serial: "vmm-dd"})
	if err != nil {
		t.Fatal(err)
	}
	devices := []virtio.Device{dev}
	var logBuf syncBuffer
	l := logrus.New()
	l.SetOutput(&logBuf)
	l.SetLevel(logrus.InfoLevel)
	cfg := DefaultConfig()
	cfg.Memory = 256 << 20
	cfg.PrivateMemory = protected
	cfg.Log = logrus.NewEntry(l)
	// A bound, as in nestedBoot (L2 boots take 20-90 s in L1, minutes
	// under load), plus the read.
	cfg.Timeout = 10 * time.Minute
	con := &syncBuffer{}
	cfg.Console = con
	m := newOwningDevices(t, cfg, devices)
	defer m.Close()
	cmdline := strings.TrimSpace(fmt.Sprintf("vmm.ddread=/dev/vda,%d %s", ddMiB, extra))
	if _, err := m.LoadLinux(LinuxConfig{Kernel: kernel, Initrd: rd, Cmdline: cmdline, Devices: devices}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	res, err := m.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	r := nestedProtectedRun{res: res, console: con.String(), log: logBuf.String(), took: time.Since(start),
		conv: m.Conversions(), pages: m.ConversionStats()}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("L2 console (protected %v):\n%s\n%s\nVMM log:\n%s", protected, r.console, res.Dump, r.log)
		}
	})
	if mm := ddReadRE.FindStringSubmatch(r.console); mm != nil {
		r.readSize, _ = strconv.ParseInt(mm[1], 10, 64)
		r.mibps, _ = strconv.ParseFloat(mm[2], 64)
		c, _ := strconv.ParseUint(mm[3], 16, 32)
		r.readCRC = uint32(c)
	}
	return r
}

// checkNestedRead asserts that the guest powered off after reading the
// whole disk with the right content.
func checkNestedRead(t *testing.T, what string, r nestedProtectedRun, mib int, crc uint32) {
	t.Helper()
	if r.res.Outcome != OutcomePowerOff || !strings.Contains(r.console, guestimage.MarkerExitPrefix+"0") {
		t.Errorf("%s: outcome %v (%s), want power-off after /init exited 0", what, r.res.Outcome, r.res.Detail)
	}
	if r.readSize != int64(mib)<<20 || r.readCRC != crc || r.mibps <= 0 {
		t.Errorf("%s: guest read %d bytes at %.1f MiB/s, crc32 %08x: want %d bytes, crc32 %08x", what, r.readSize, r.mibps, r.readCRC, mib<<20, crc)
	}
}

// checkNestedProtected asserts the protected-boot invariants of
// checkProtectedBoot for an L2 run and logs the conversions.
func checkNestedProtected(t *testing.T, r nestedProtectedRun) {
	t.Helper()
	ps, c := r.pages, r.conv
	total := ps.SharedPages + ps.PrivatePages
	t.Logf("protected L2 boot: shared %d, private %d of %d pages (%.1f %% private), device accesses refused %d; conversions:\n%s",
		ps.SharedPages, ps.PrivatePages, total, 100*float64(ps.PrivatePages)/float64(max(total, 1)), ps.DeviceRefused, c)
	if l := regexp.MustCompile(`vmmgo: boot conversions: .*`).FindString(r.console); l == "" || !strings.Contains(l, " 0 failed") {
		t.Errorf("guest boot-conversion report %q: want one with 0 failed", l)
	}
	if c.UnprotectedDrivers != 0 || strings.Contains(r.log, "lacks protected-guest support") {
		t.Errorf("%d drivers refused for lacking protected-guest support", c.UnprotectedDrivers)
	}
	if ps.SharedPages == 0 || total == 0 || ps.PrivatePages*10 < total*9 {
		t.Errorf("shared %d, private %d pages: want some shared and >= 90 %% private", ps.SharedPages, ps.PrivatePages)
	}
	if ps.DeviceRefused != 0 || ps.DeviceFaults != 0 || ps.Refused != 0 {
		t.Errorf("device accesses refused %d, faulted %d, conversions refused %d: want 0", ps.DeviceRefused, ps.DeviceFaults, ps.Refused)
	}
}

// TestNestedProtectedHypercall: a protected L2 boot forcing the hypercall
// transport (vmmgo_transport=hypercall): every share/unshare request of the
// guest arrives as KVM_HC_MAP_GPA_RANGE (an exit with KVM_EXIT_HYPERCALL),
// none through the pvmem port, and the guest still boots to userspace,
// reads its disk through swiotlb with the right content and powers off.
func TestNestedProtectedHypercall(t *testing.T) {
	nestedOnly(t)
	const mib = 16
	disk, crc := nestedDisk(t, mib)
	r := nestedProtectedBoot(t, true, disk, mib, "vmmgo_transport=hypercall")
	t.Logf("L2 protected boot (hypercall transport): %v in %v, read %.1f MiB/s", r.res.Outcome, r.took.Round(time.Millisecond), r.mibps)
	checkNestedRead(t, "protected, hypercall", r, mib, crc)
	checkNestedProtected(t, r)
	if !strings.Contains(r.console, "sharing through KVM_HC_MAP_GPA_RANGE") {
		t.Errorf("the guest does not say it shares through KVM_HC_MAP_GPA_RANGE")
	}
	if c := r.conv; c.Hypercall.Requests == 0 || c.Hypercall.Refused != 0 || c.PVMemList.Requests != 0 || c.PVMemRegister.Requests != 0 {
		t.Errorf("conversions %+v: want all through the hypercall, none refused, none through pvmem", c)
	}
}

// TestNestedProtectedBlockRead: virtio-blk read throughput from guest
// userspace (O_DIRECT, 1 MiB requests, 64 MiB), protected vs not, two
// alternating rounds (the best of each kind counts: L1 runs under TCG on a
// shared host). Every protected request bounces through swiotlb (one more
// copy, in the guest) and the VMM checks the page state of each buffer.
// Data and protected-boot invariants are asserted; issue 14's goal,
// protected within 20 % of unprotected, is measured and logged, and
// asserted only with VMM_NESTED_GOALS=1: under TCG the guest's bounce copy
// costs what it never costs on hardware, so a missed goal here would keep
// the lane red without saying anything about the VMM (docs/conversion.md).
func TestNestedProtectedBlockRead(t *testing.T) {
	nestedOnly(t)
	const mib = 64
	disk, crc := nestedDisk(t, mib)
	var bestPlain, bestProt float64
	for round := 1; round <= 2; round++ {
		plain := nestedProtectedBoot(t, false, disk, mib, "")
		checkNestedRead(t, "unprotected", plain, mib, crc)
		prot := nestedProtectedBoot(t, true, disk, mib, "")
		checkNestedRead(t, "protected", prot, mib, crc)
		checkNestedProtected(t, prot)
		t.Logf("round %d: unprotected %.1f MiB/s (boot to power-off %v), protected %.1f MiB/s (%v)", round,
			plain.mibps, plain.took.Round(time.Millisecond), prot.mibps, prot.took.Round(time.Millisecond))
		bestPlain, bestProt = max(bestPlain, plain.mibps), max(bestProt, prot.mibps)
	}
	if bestPlain <= 0 || bestProt <= 0 {
		return
	}
	ratio := bestProt / bestPlain
	t.Logf("virtio-blk read, %d MiB O_DIRECT from L2 userspace, best of 2: unprotected %.1f MiB/s, protected %.1f MiB/s: protected/unprotected %.2f (goal >= 0.80: %s)",
		mib, bestPlain, bestProt, ratio, map[bool]string{true: "met", false: "MISSED"}[ratio >= 0.8])
	if ratio < 0.8 && os.Getenv("VMM_NESTED_GOALS") == "1" {
		t.Errorf("protected read throughput is %.0f %% of unprotected: the goal is within 20 %%", 100*ratio)
	}
}
