package vmm

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmmgo/vmm/internal/guestimage"
	"github.com/vmmgo/vmm/internal/hostspeed"
	"github.com/vmmgo/vmm/kvm/kvmtest"
	"github.com/vmmgo/vmm/memory"
)

// syncBuffer is a console that tests read while the guest writes. watch
// calls a function once, the first time a text appears in it.
type syncBuffer struct {
	mu      sync.Mutex
	b       bytes.Buffer
	text    string
	onText  func()
	checked int // bytes of b already searched for text
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	n, err := s.b.Write(p)
	var fire func()
	if s.onText != nil {
		// Search from where a match could start that was not there before.
		from := max(0, s.checked-len(s.text)+1)
		if bytes.Contains(s.b.Bytes()[from:], []byte(s.text)) {
			fire, s.onText = s.onText, nil
		}
		s.checked = s.b.Len()
	}
	s.mu.Unlock()
	if fire != nil {
		fire()
	}
	return n, err
}

func (s *syncBuffer) watch(text string, f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.text, s.onText = text, f
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// guestKernel returns the project's cached guest kernel and initramfs,
// building them when missing (minutes, once per machine).
// guestKernelBytes is guestKernel's vmlinux and initramfs, read.
func guestKernelBytes(t *testing.T) (kernel, initrd []byte) {
	t.Helper()
	k, path := guestKernel(t)
	kernel, err := os.ReadFile(k.VMLinux)
	if err != nil {
		t.Fatal(err)
	}
	initrd, err = os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return kernel, initrd
}

func guestKernel(t *testing.T) (guestimage.KernelImages, string) {
	t.Helper()
	if testing.Short() {
		t.Skip("Linux boot tests are long; not run with -short")
	}
	kvmtest.Open(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	var log bytes.Buffer
	k, err := guestimage.Kernel(ctx, &log)
	if err != nil {
		t.Fatalf("guest kernel: %v\n%s", err, log.String())
	}
	initrd, err := guestimage.Initramfs(ctx, guestimage.InitramfsOptions{Log: &log})
	if err != nil {
		t.Fatalf("initramfs: %v\n%s", err, log.String())
	}
	return k, initrd
}

// linuxTestMemory is the guest RAM of Linux boot tests that do not test
// the memory map: early boot initialises a struct page for every 4 KiB
// page and frees each into the buddy allocator, emulated instruction by
// instruction on hosts that emulate guest kernel mode, so the boot's cost
// grows with RAM (the vCPU samples of docs/benchmarks.md, "Boot time").
const linuxTestMemory = 128 << 20

// bootLinux boots the guest kernel and returns the result and console. It
// waits for a guest boot slot first (hostspeed: at most a few Linux boots
// run at once on the machine, across test processes) and, unless cfg sets
// one, bounds the boot by a deadline derived from the host's speed for a
// boot that costs cost on the quiet reference host; when it fires the
// result carries the vCPU dump. A non-empty stopAt ends the guest as soon
// as that text appears on the console (OutcomeStopped).
func bootLinux(t *testing.T, cfg Config, lc LinuxConfig, cost time.Duration, stopAt string) (Result, string) {
	t.Helper()
	con := &syncBuffer{}
	cfg.Console = con
	deadline := hostspeed.BootSlot(t, cost)
	if cfg.Timeout == 0 {
		cfg.Timeout = deadline
	}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if stopAt != "" {
		con.watch(stopAt, func() { m.Stop("test: console showed " + strconv.Quote(stopAt)) })
	}
	if _, err := m.LoadLinux(lc); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	res, err := m.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("guest ended after %v: %v (%s)", time.Since(start).Round(time.Millisecond), res.Outcome, res.Detail)
	return res, con.String()
}

// TestLinuxBoot boots the project's kernel with each memory backend and
// checks what the kernel says about the machine the VMM built. On a host
// that emulates guest kernel mode, guest userspace cannot make a system
// call, so /init dies and the kernel panics (reported through pvpanic as
// OutcomePanic); with hardware virtualization, /init prints its marker and
// powers off.
//
// Only the anonymous-memory guest boots all the way (the other Linux boot
// tests of the suite do too); the memfd, hugetlb and guest_memfd guests
// stop once the kernel has brought up both CPUs, which needs the whole
// early boot out of that memory (decompression-free PVH entry, memblock,
// the buddy allocator over all of RAM, page tables, SMP trampoline) at a
// fraction of the emulated cost of a full boot.
func TestLinuxBoot(t *testing.T) {
	kernel, rd := guestKernelBytes(t)
	host, err := DetectHost(context.Background(), "/dev/kvm")
	if err != nil {
		t.Fatal(err)
	}
	emulated := host.Kind == HostEmulated
	const smpUp = "smp: Brought up 1 node, 2 CPUs"
	for _, tc := range []struct {
		backend memory.Kind
		full    bool
	}{
		{memory.KindAnon, true},
		{memory.KindMemfd, false},
		{memory.KindHugetlb, false},
		{memory.KindGuestMemfd, false},
	} {
		t.Run(string(tc.backend), func(t *testing.T) {
			t.Parallel()
			cfg := DefaultConfig()
			cfg.CPUs = 2
			cfg.Memory = 256 << 20
			cfg.MemoryBackend = tc.backend
			token := fmt.Sprintf("vmm.test=%s-%d", tc.backend, time.Now().UnixNano())
			cost, stopAt := hostspeed.LinuxBoot, ""
			if !tc.full {
				cost, stopAt = hostspeed.LinuxBoot/2, smpUp
			}
			res, out := bootLinux(t, cfg, LinuxConfig{Kernel: kernel, Initrd: rd, Cmdline: token}, cost, stopAt)
			fail := func(format string, args ...any) {
				t.Helper()
				t.Errorf(format, args...)
			}
			wants := []string{
				"Linux version 6.1",
				"Command line: " + DefaultCmdline,
				token,
				// The e820 map the VMM built (firmware.DefaultE820 for 256 MiB).
				"BIOS-e820: [mem 0x0000000000000000-0x000000000009fbff] usable",
				"BIOS-e820: [mem 0x0000000000100000-0x000000000fffffff] usable",
				smpUp,
			}
			if tc.full {
				wants = append(wants, "Unpacking initramfs", "Run /init as init process")
			}
			for _, want := range wants {
				if !strings.Contains(out, want) {
					fail("console lacks %q", want)
				}
			}
			if m := regexp.MustCompile(`BIOS-e820: \[mem 0x000000000009fc00-0x00000000000fffff\] reserved`).FindString(out); m == "" {
				fail("console lacks the reserved EBDA/BIOS e820 entry")
			}
			switch {
			case !tc.full:
				if res.Outcome != OutcomeStopped || !strings.Contains(res.Detail, smpUp) {
					fail("outcome %v (%s), want stopped by the test after %q", res.Outcome, res.Detail, smpUp)
				}
			case emulated:
				// The documented limit of this host: the first system call of
				// /init faults, the kernel panics, pvpanic reports it.
				if res.Outcome != OutcomePanic || !strings.Contains(out, "Attempted to kill init") {
					fail("outcome %v (%s), want a panic after init died", res.Outcome, res.Detail)
				}
			default:
				if res.Outcome != OutcomePowerOff || !strings.Contains(out, guestimage.MarkerHello) {
					fail("outcome %v (%s), want power-off after the init marker", res.Outcome, res.Detail)
				}
			}
			if t.Failed() {
				t.Logf("console:\n%s\n%s", out, res.Dump)
			}
		})
	}
}

// TestLinuxPowerOff: a kernel-initiated power-off (KUnit with
// kunit_shutdown=poweroff, which works without guest userspace) ends the
// VMM with the power-off outcome through ACPI S5.
func TestLinuxPowerOff(t *testing.T) {
	k, _ := guestKernel(t)
	kernel, err := os.ReadFile(k.VMLinux)
	if err != nil {
		t.Fatal(err)
	}
	t.Parallel()
	cfg := DefaultConfig()
	cfg.Memory = 128 << 20
	res, out := bootLinux(t, cfg, LinuxConfig{Kernel: kernel,
		Cmdline: "kunit.enable=1 kunit.filter_glob=vmm_selftest.vmm_selftest_arith kunit_shutdown=poweroff"}, hostspeed.LinuxBoot, "")
	if res.Outcome != OutcomePowerOff || !strings.Contains(res.Detail, "S5") {
		t.Fatalf("outcome %v (%s), want an ACPI S5 power-off\n%s\n%s", res.Outcome, res.Detail, out, res.Dump)
	}
	if !strings.Contains(out, "reboot: Power down") {
		t.Errorf("console lacks the kernel's power-down message:\n%s", out)
	}
}

// TestLinuxBadInput: loading fails with a clear error, before anything runs.
func TestLinuxBadInput(t *testing.T) {
	k, _ := guestKernel(t)
	kernel, err := os.ReadFile(k.VMLinux)
	if err != nil {
		t.Fatal(err)
	}
	bz, err := os.ReadFile(k.BzImage)
	if err != nil {
		t.Fatal(err)
	}
	load := func(cfg Config, lc LinuxConfig) error {
		m, err := New(cfg)
		if err != nil {
			return err
		}
		defer m.Close()
		_, err = m.LoadLinux(lc)
		return err
	}
	small := DefaultConfig()
	small.Memory = 64 << 20
	for _, tc := range []struct {
		name string
		cfg  Config
		lc   LinuxConfig
		want string
	}{
		{"initrd too large", small, LinuxConfig{Kernel: kernel, Initrd: make([]byte, 80<<20)}, "initrd"},
		{"cmdline over the limit", small, LinuxConfig{Kernel: bz, Cmdline: strings.Repeat("x", 4096), Extract: ExtractOff}, "exceeds the kernel's limit"},
		{"memory smaller than the kernel", func() Config { c := DefaultConfig(); c.Memory = 8 << 20; return c }(), LinuxConfig{Kernel: kernel}, "not in usable RAM (guest RAM is 8M"},
		{"truncated bzImage", small, LinuxConfig{Kernel: bz[:len(bz)/2], Extract: ExtractOff}, "bzImage"},
		{"hugetlb pool empty", func() Config {
			c := DefaultConfig()
			c.Memory = 1 << 30
			c.MemoryBackend = memory.KindHugetlb
			c.HugePageSize = 1 << 30
			return c
		}(), LinuxConfig{Kernel: kernel}, "nr_hugepages"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.cfg.HugePageSize == 1<<30 && tc.cfg.MemoryBackend == memory.KindHugetlb {
				if p, err := memory.ReadHugePool(1 << 30); err != nil || p.Free > 0 {
					t.Skipf("1 GiB hugetlb pages are reserved on this machine (%+v, %v): the empty-pool case cannot be staged", p, err)
				}
			}
			err := load(tc.cfg, tc.lc)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want an error mentioning %q", err, tc.want)
			}
			t.Logf("%v", err)
		})
	}
}
