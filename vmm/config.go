package vmm

import (
	"fmt"
	"io"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/vmmgo/vmm/internal/guestlog"
	"github.com/vmmgo/vmm/memory"
)

// Config describes a machine. The zero value is not valid: use DefaultConfig.
type Config struct {
	KVMPath string // default /dev/kvm
	CPUs    int
	Memory  uint64 // bytes of guest RAM

	MemoryBackend memory.Kind // anon, memfd, hugetlb, guest_memfd
	HugePageSize  uint64      // for hugetlb: 2 MiB or 1 GiB
	HugetlbfsPath string      // optional hugetlbfs mount or file for hugetlb
	Prealloc      bool        // populate all guest RAM up front

	// PrivateMemory starts guest RAM private: the guest shares what its
	// devices need (see docs/pvmem.md).
	PrivateMemory bool
	// ZeroOnConvert clears pages in place when they change state.
	ZeroOnConvert bool
	// Harden keeps a device view of guest RAM with private ranges mprotected.
	Harden bool
	// TestUserConversions lets the pvmem port accept conversions from guest
	// user mode (CPL3). Only for tiny test and benchmark guests, which
	// convert from CPL3 because kernel mode is emulated on some hosts; a
	// real guest must never get it (any guest process could convert
	// memory). No command-line flag sets it.
	TestUserConversions bool

	// CPUProfile names the CPUID profile ("host", "emulated"; "" = auto).
	CPUProfile string

	// Console receives the guest's serial output; Machine.SerialInputWait
	// feeds its input.
	Console io.Writer
	// DebugCon receives port 0xe9 output (nil = Console).
	DebugCon io.Writer

	// Timeout stops the guest after this long (0 = none), dumping vCPU state.
	Timeout time.Duration
	// TraceExits logs every exit at trace level and keeps per-reason counters.
	TraceExits bool

	Log *logrus.Entry
}

// DefaultConfig is one vCPU, 256 MiB of anonymous memory.
func DefaultConfig() Config {
	return Config{
		KVMPath:       "/dev/kvm",
		CPUs:          1,
		Memory:        256 << 20,
		MemoryBackend: memory.KindAnon,
		HugePageSize:  2 << 20,
	}
}

// MaxCPUs bounds --cpus; KVM's own limit is checked when vCPUs are created.
const MaxCPUs = 254

func (c *Config) validate() error {
	if c.CPUs < 1 || c.CPUs > MaxCPUs {
		return fmt.Errorf("cpus = %d: must be between 1 and %d", c.CPUs, MaxCPUs)
	}
	if c.Memory == 0 {
		return fmt.Errorf("memory size is zero")
	}
	if c.Memory%memory.PageSize != 0 {
		return fmt.Errorf("memory size %d is not a multiple of %d bytes", c.Memory, memory.PageSize)
	}
	if c.Memory < 2<<20 {
		return fmt.Errorf("memory size %d is below the 2 MiB minimum", c.Memory)
	}
	switch c.MemoryBackend {
	case memory.KindAnon, memory.KindMemfd, memory.KindGuestMemfd:
	case memory.KindHugetlb:
		if c.HugePageSize != 2<<20 && c.HugePageSize != 1<<30 {
			return fmt.Errorf("hugepage size %d: must be 2M or 1G", c.HugePageSize)
		}
		if c.Memory%c.HugePageSize != 0 {
			return fmt.Errorf("memory size %d is not a multiple of the %s hugepage size", c.Memory, formatSize(c.HugePageSize))
		}
		if c.Memory > LayoutMMIOHole && LayoutMMIOHole%c.HugePageSize != 0 {
			return fmt.Errorf("memory above %s cannot be split at the MMIO hole with %s pages", formatSize(LayoutMMIOHole), formatSize(c.HugePageSize))
		}
	default:
		return fmt.Errorf("unknown memory backend %q (want anon, memfd, hugetlb or guest_memfd)", c.MemoryBackend)
	}
	c.Log = guestlog.OrDiscard(c.Log)
	if c.KVMPath == "" {
		c.KVMPath = "/dev/kvm"
	}
	return nil
}

func formatSize(n uint64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%dG", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%dM", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%dK", n>>10)
	}
	return fmt.Sprintf("%d", n)
}
