package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/vmmgo/vmm/memory"
	"github.com/vmmgo/vmm/vmm"
)

// machineFlags are the flags every command that runs a guest shares.
type machineFlags struct {
	kvmPath      string
	cpus         int
	memory       string
	backend      string
	hugepageSize string
	hugetlbfs    string
	prealloc     bool
	private      bool
	zero         bool
	harden       bool
	timeout      time.Duration
	traceExits   bool
	stats        bool
	logLevel     string
	logFormat    string
	gdb          string
	gdbWait      bool
	statsSocket  string
}

func (f *machineFlags) register(fs *flag.FlagSet, defaultMemory string) {
	fs.StringVar(&f.kvmPath, "kvm", "/dev/kvm", "KVM device `path`")
	fs.IntVar(&f.cpus, "cpus", 1, "number of vCPUs")
	fs.IntVar(&f.cpus, "smp", 1, "alias of --cpus")
	fs.StringVar(&f.memory, "memory", defaultMemory, "guest RAM `size` (512M, 2G; a bare number is MiB)")
	fs.StringVar(&f.memory, "m", defaultMemory, "alias of --memory")
	fs.StringVar(&f.backend, "memory-backend", "anon", "guest RAM backing: anon, memfd, hugetlb or guest_memfd")
	fs.StringVar(&f.hugepageSize, "hugepage-size", "2M", "hugetlb page `size`: 2M or 1G")
	fs.StringVar(&f.hugetlbfs, "hugetlbfs", "", "hugetlbfs mount `dir` for --memory-backend hugetlb (default: memfd with MFD_HUGETLB)")
	fs.BoolVar(&f.prealloc, "prealloc", false, "allocate all guest RAM before the guest starts")
	fs.BoolVar(&f.private, "private-memory", false, "start guest RAM private; the guest shares what its devices need")
	fs.BoolVar(&f.zero, "zero-on-convert", false, "clear pages in place when the guest converts them (default: contents kept)")
	fs.BoolVar(&f.harden, "harden", false, "also mprotect private ranges in the device view of guest RAM (4 KiB backings)")
	fs.DurationVar(&f.timeout, "timeout", 0, "stop the guest after this `duration` and dump vCPU state (0: none)")
	fs.BoolVar(&f.traceExits, "trace-exits", false, "log every vCPU exit at trace level (implies --log-level trace)")
	fs.BoolVar(&f.stats, "stats", false, "print exit counters, memory conversion counters and footprint on exit")
	fs.StringVar(&f.gdb, "gdb", "", "serve the GDB remote protocol on `addr` (tcp:HOST:PORT or unix:PATH); vCPUs are threads")
	fs.StringVar(&f.statsSocket, "control-socket", "", "serve a control socket at this unix `path` while the guest runs: vmm stats PATH, vmm ctl PATH pause|resume|dump|stop")
	fs.StringVar(&f.statsSocket, "stats-socket", "", "alias of --control-socket")
	fs.BoolVar(&f.gdbWait, "gdb-wait", false, "with --gdb: stop before the first guest instruction until gdb continues")
	fs.StringVar(&f.logLevel, "log-level", "info", "log `level`: error, warn, info, debug, trace")
	fs.StringVar(&f.logFormat, "log-format", "text", "log `format`: text or json")
}

func (f *machineFlags) config(stderr io.Writer) (vmm.Config, error) {
	cfg := vmm.DefaultConfig()
	cfg.KVMPath = f.kvmPath
	if f.cpus < 1 || f.cpus > vmm.MaxCPUs {
		return cfg, usagef("--cpus %d: must be between 1 and %d", f.cpus, vmm.MaxCPUs)
	}
	cfg.CPUs = f.cpus
	size, err := parseSize(f.memory)
	if err != nil {
		return cfg, usagef("--memory: %v", err)
	}
	cfg.Memory = size
	switch memory.Kind(f.backend) {
	case memory.KindAnon, memory.KindMemfd, memory.KindHugetlb, memory.KindGuestMemfd:
		cfg.MemoryBackend = memory.Kind(f.backend)
	default:
		return cfg, usagef("--memory-backend %q: want anon, memfd, hugetlb or guest_memfd", f.backend)
	}
	hp, err := parseSize(f.hugepageSize)
	if err != nil || (hp != 2<<20 && hp != 1<<30) {
		return cfg, usagef("--hugepage-size %q: want 2M or 1G", f.hugepageSize)
	}
	cfg.HugePageSize = hp
	cfg.HugetlbfsPath = f.hugetlbfs
	cfg.Prealloc = f.prealloc
	cfg.PrivateMemory = f.private
	cfg.ZeroOnConvert = f.zero
	cfg.Harden = f.harden
	if f.timeout < 0 {
		return cfg, usagef("--timeout must not be negative")
	}
	cfg.Timeout = f.timeout
	cfg.TraceExits = f.traceExits
	if f.gdbWait && f.gdb == "" {
		return cfg, usagef("--gdb-wait needs --gdb")
	}
	level := f.logLevel
	if f.traceExits {
		level = "trace"
	}
	log, err := setupLogging(stderr, level, f.logFormat)
	if err != nil {
		return cfg, err
	}
	cfg.Log = log
	return cfg, nil
}

// printStats writes the counters --stats asks for.
func printStats(w io.Writer, m *vmm.Machine) {
	fmt.Fprintf(w, "\r\n--- vmm statistics ---\r\n")
	fmt.Fprint(w, crlf(m.ExitReport()))
	fmt.Fprint(w, crlf(m.MemoryReport()))
}

// startServices serves the control socket and the GDB stub when asked. It
// must run after the machine is loaded and before Run; with --gdb-wait,
// Run's vCPUs start parked. The returned function stops both.
func (f *machineFlags) startServices(ctx context.Context, m *vmm.Machine, stderr io.Writer) (func(), error) {
	stopStats := func() {}
	if f.statsSocket != "" {
		var err error
		if stopStats, err = m.ServeControl(f.statsSocket); err != nil {
			return nil, fmt.Errorf("--control-socket: %w", err)
		}
	}
	stopGDB, err := f.startGDB(ctx, m, stderr)
	if err != nil {
		stopStats()
		return nil, err
	}
	return func() { stopGDB(); stopStats() }, nil
}

// startGDB serves the GDB stub when --gdb was given.
func (f *machineFlags) startGDB(ctx context.Context, m *vmm.Machine, stderr io.Writer) (func(), error) {
	if f.gdb == "" {
		return func() {}, nil
	}
	stop, err := m.ServeGDB(ctx, f.gdb, f.gdbWait)
	if err != nil {
		return nil, fmt.Errorf("--gdb %s: %w", f.gdb, err)
	}
	fmt.Fprintf(stderr, "vmm: gdb stub listening on %s%s\r\n", f.gdb, map[bool]string{true: " (waiting for gdb to continue)", false: ""}[f.gdbWait])
	return stop, nil
}
