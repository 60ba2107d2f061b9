package vmm

import (
	"strings"
	"testing"

	"github.com/vmmgo/vmm/memory"
)

// TestNewRejectsBadConfig: each bad configuration gets an error naming the
// problem, before anything touches KVM.
func TestNewRejectsBadConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"zero cpus", func(c *Config) { c.CPUs = 0 }, "cpus = 0"},
		{"too many cpus", func(c *Config) { c.CPUs = 1000 }, "cpus = 1000"},
		{"zero memory", func(c *Config) { c.Memory = 0 }, "memory size is zero"},
		{"unaligned memory", func(c *Config) { c.Memory = 64<<20 + 123 }, "not a multiple of 4096"},
		{"tiny memory", func(c *Config) { c.Memory = 4096 }, "below the 2 MiB minimum"},
		{"unknown backend", func(c *Config) { c.MemoryBackend = "tmpfs" }, `unknown memory backend "tmpfs"`},
		{"bad hugepage size", func(c *Config) { c.MemoryBackend = memory.KindHugetlb; c.HugePageSize = 4 << 20 }, "must be 2M or 1G"},
		{"memory not a hugepage multiple", func(c *Config) {
			c.MemoryBackend = memory.KindHugetlb
			c.HugePageSize = 1 << 30
			c.Memory = 512 << 20
		}, "not a multiple of the 1G hugepage size"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			tc.mod(&c)
			m, err := New(c)
			if err == nil {
				m.Close()
				t.Fatal("New accepted the configuration")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestNewMissingKVMDevice(t *testing.T) {
	c := DefaultConfig()
	c.KVMPath = "/nonexistent/kvm"
	_, err := New(c)
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/kvm") {
		t.Fatalf("err = %v, want an error naming the device", err)
	}
}

func TestRunBeforeLoadAndTwice(t *testing.T) {
	m := newRawMachine(t, smallConfig(memory.KindAnon), "xor %eax, %eax\nout %eax, $0xf4")
	runMachine(t, m, OutcomePowerOff)
	if _, err := m.Run(t.Context()); err == nil {
		t.Fatal("a machine ran twice")
	}
	if err := m.LoadRaw(RawImage{Data: []byte{0xf4}, Addr: 0x100000}); err == nil {
		t.Fatal("a loaded machine was loaded again")
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}
