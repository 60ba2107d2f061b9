package main

// Fuzz targets for what the CLI parses from the user: sizes, device flag
// specs and the machine flags as a whole. Run them with scripts/fuzz.sh.

import (
	"flag"
	"fmt"
	"io"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"512M", "2G", "1.5G", "64K", "4096B", "256", "1GiB", "1gb", " 1G ", "", "G", "-1G",
		"1e3M", "0x10M", "NaN", "Inf", "99999999T", "1.0000001B", "0.5K", "4503599627370496B", "4503599627370497B"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := parseSize(s)
		if err != nil {
			if n != 0 {
				t.Fatalf("parseSize(%q) = %d with error %v", s, n, err)
			}
			return
		}
		if n > 1<<52 {
			t.Fatalf("parseSize(%q) = %d, above the 1<<52 limit", s, n)
		}
		// The size in bytes parses back to itself, and case does not matter.
		if m, err := parseSize(fmt.Sprintf("%dB", n)); err != nil || m != n {
			t.Fatalf("parseSize(%q) = %d, but parseSize(\"%dB\") = %d, %v", s, n, n, m, err)
		}
		if m, err := parseSize(strings.ToLower(s)); err != nil || m != n {
			t.Fatalf("parseSize(%q) = %d, but the lower-case form gives %d, %v", s, n, m, err)
		}
	})
}

func FuzzDeviceSpecs(f *testing.F) {
	for _, s := range []string{"disk.img", "path=disk.img,readonly,serial=abc", "d,ro=on", "tap=tap0",
		"tap=tap0,mac=52:54:00:12:34:56", "fd=3,mac=01:00:00:00:00:00", "cid=3,path=/tmp/v.sock", "cid=0x10,path=p",
		"name=org.test.0,path=/tmp/p.sock", ",", "a,,b", "=", "x=", "serial=012345678901234567890"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if d, err := parseDisk(s); err == nil {
			if d.path == "" || strings.Contains(d.path, ",") || len(d.serial) > 20 {
				t.Fatalf("parseDisk(%q) accepted %+v", s, d)
			}
		}
		if n, err := parseNet(s); err == nil {
			if (n.tap == "") == (n.fd < 0) || len(n.tap) >= unix.IFNAMSIZ || (n.mac != nil && (len(n.mac) != 6 || n.mac[0]&1 != 0)) {
				t.Fatalf("parseNet(%q) accepted %+v", s, n)
			}
		}
		if v, err := parseVsock(s); err == nil {
			if v.cid < 3 || v.cid > 0xffffffff || v.path == "" {
				t.Fatalf("parseVsock(%q) accepted %+v", s, v)
			}
		}
		if p, err := parsePort(s); err == nil {
			if p.name == "" || p.path == "" {
				t.Fatalf("parsePort(%q) accepted %+v", s, p)
			}
		}
	})
}

// FuzzMachineFlags parses the flags every guest-running command shares and
// turns them into a vmm.Config: no input panics, and an accepted one is a
// config the machine itself accepts as far as sizes and counts go.
func FuzzMachineFlags(f *testing.F) {
	f.Add("512M", "2M", "anon", "1", "0s")
	f.Add("1G", "1G", "hugetlb", "254", "10m")
	f.Add("3.5G", "2m", "guest_memfd", "0", "-1s")
	f.Add("1", "4M", "memfd", "255", "1h")
	f.Fuzz(func(t *testing.T, mem, hp, backend, cpus, timeout string) {
		fs := flag.NewFlagSet("fuzz", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		var mf machineFlags
		mf.register(fs, "64M")
		if err := parseFlags(fs, []string{"--memory", mem, "--hugepage-size", hp, "--memory-backend", backend,
			"--cpus", cpus, "--timeout", timeout}); err != nil {
			return
		}
		cfg, err := mf.config(io.Discard)
		if err != nil {
			return
		}
		if cfg.CPUs < 1 || cfg.Memory > 1<<52 || cfg.Timeout < 0 || (cfg.HugePageSize != 2<<20 && cfg.HugePageSize != 1<<30) {
			t.Fatalf("flags %q %q %q %q %q gave config %+v", mem, hp, backend, cpus, timeout, cfg)
		}
	})
}
