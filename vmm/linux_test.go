package vmm

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmmgo/vmm/internal/guestimage"
	"github.com/vmmgo/vmm/kvm/kvmtest"
	"github.com/vmmgo/vmm/memory"
)

// syncBuffer is a console that tests read while the guest writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// guestKernel returns the project's cached guest kernel and initramfs,
// building them when missing (minutes, once per machine).
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

// bootLinux boots the guest kernel and returns the result and console.
func bootLinux(t *testing.T, cfg Config, lc LinuxConfig) (Result, string) {
	t.Helper()
	con := &syncBuffer{}
	cfg.Console = con
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Minute
	}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
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
func TestLinuxBoot(t *testing.T) {
	k, initrd := guestKernel(t)
	kernel, err := os.ReadFile(k.VMLinux)
	if err != nil {
		t.Fatal(err)
	}
	rd, err := os.ReadFile(initrd)
	if err != nil {
		t.Fatal(err)
	}
	host, err := DetectHost(context.Background(), "/dev/kvm")
	if err != nil {
		t.Fatal(err)
	}
	emulated := host.Kind == HostEmulated
	for _, backend := range []memory.Kind{memory.KindAnon, memory.KindMemfd, memory.KindHugetlb, memory.KindGuestMemfd} {
		t.Run(string(backend), func(t *testing.T) {
			t.Parallel()
			cfg := DefaultConfig()
			cfg.CPUs = 2
			cfg.Memory = 256 << 20
			cfg.MemoryBackend = backend
			token := fmt.Sprintf("vmm.test=%s-%d", backend, time.Now().UnixNano())
			res, out := bootLinux(t, cfg, LinuxConfig{Kernel: kernel, Initrd: rd, Cmdline: token})
			fail := func(format string, args ...any) {
				t.Helper()
				t.Errorf(format, args...)
			}
			for _, want := range []string{
				"Linux version 6.1",
				"Command line: " + DefaultCmdline,
				token,
				// The e820 map the VMM built (firmware.DefaultE820 for 256 MiB).
				"BIOS-e820: [mem 0x0000000000000000-0x000000000009fbff] usable",
				"BIOS-e820: [mem 0x0000000000100000-0x000000000fffffff] usable",
				"smp: Brought up 1 node, 2 CPUs",
				"Unpacking initramfs",
				"Run /init as init process",
			} {
				if !strings.Contains(out, want) {
					fail("console lacks %q", want)
				}
			}
			if m := regexp.MustCompile(`BIOS-e820: \[mem 0x000000000009fc00-0x00000000000fffff\] reserved`).FindString(out); m == "" {
				fail("console lacks the reserved EBDA/BIOS e820 entry")
			}
			if emulated {
				// The documented limit of this host: the first system call of
				// /init faults, the kernel panics, pvpanic reports it.
				if res.Outcome != OutcomePanic || !strings.Contains(out, "Attempted to kill init") {
					fail("outcome %v (%s), want a panic after init died", res.Outcome, res.Detail)
				}
			} else {
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
		Cmdline: "kunit.enable=1 kunit.filter_glob=vmm_selftest.vmm_selftest_arith kunit_shutdown=poweroff"})
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
