package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
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
	f.cpus, f.memory = 1, defaultMemory
	fs.Var((*cpusValue)(&f.cpus), "cpus", "number of vCPUs (Cloud Hypervisor's boot=N works too)")
	fs.Var((*cpusValue)(&f.cpus), "smp", "alias of --cpus")
	fs.Var((*memoryValue)(&f.memory), "memory", "guest RAM `size` (512M, 2G; a bare number is MiB; Cloud Hypervisor's size=1G works too)")
	fs.Var((*memoryValue)(&f.memory), "m", "alias of --memory")
	fs.StringVar(&f.backend, "memory-backend", "anon", "guest RAM backing: anon, memfd, hugetlb or guest_memfd")
	fs.StringVar(&f.hugepageSize, "hugepage-size", "2M", "hugetlb page `size`: 2M or 1G")
	fs.StringVar(&f.hugetlbfs, "hugetlbfs", "", "hugetlbfs mount `dir` for --memory-backend hugetlb (default: memfd with MFD_HUGETLB)")
	fs.BoolVar(&f.prealloc, "prealloc", false, "allocate all guest RAM before the guest starts")
	fs.BoolVar(&f.private, "private-memory", false, "start guest RAM private; the guest shares what its devices need")
	fs.BoolVar(&f.zero, "zero-on-convert", false, "clear pages in place when the guest converts them (default: contents kept)")
	fs.BoolVar(&f.harden, "harden", false, "also mprotect private ranges in the device view of guest RAM (4 KiB backings)")
	fs.Var((*seconds)(&f.timeout), "timeout", "stop the guest after this `duration` (30s, 5m; a bare number is seconds) and dump vCPU state (0: none)")
	fs.BoolVar(&f.traceExits, "trace-exits", false, "log every vCPU exit at trace level (implies --log-level trace)")
	fs.BoolVar(&f.stats, "stats", false, "print exit counters, memory conversion counters and footprint on exit")
	fs.StringVar(&f.gdb, "gdb", "", "serve the GDB remote protocol on `addr` (tcp:HOST:PORT or unix:PATH); vCPUs are threads")
	fs.StringVar(&f.statsSocket, "control-socket", "", "serve the control API (JSON lines, docs/control-api.md) at this unix `path` while the guest runs: vmm stats PATH, vmm ctl PATH pause|resume|dump|stop|info")
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
	if err := checkMemorySize(f.memory, size); err != nil {
		return cfg, err
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
	if err := checkGDBAddr(f.gdb); err != nil {
		return cfg, err
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
	if avail, ok := hostMemory("MemAvailable"); ok && size > avail {
		log.Warnf("--memory %s is more than the %s of RAM this host has available now: the guest may be killed, or make the host swap, when it uses it all",
			f.memory, gib(avail))
	}
	if strings.HasPrefix(f.gdb, "tcp:0.0.0.0:") || strings.HasPrefix(f.gdb, "tcp:[::]:") {
		log.Warnf("--gdb %s listens on every network interface: anyone who can reach this host can read and change the guest", f.gdb)
	}
	return cfg, nil
}

// cpusValue is --cpus: N, or Cloud Hypervisor's boot=N.
type cpusValue int

func (c *cpusValue) String() string { return strconv.Itoa(int(*c)) }
func (c *cpusValue) Get() any       { return int(*c) }
func (c *cpusValue) Set(s string) error {
	v := strings.TrimPrefix(s, "boot=")
	if strings.Contains(v, "=") || strings.Contains(v, ",") {
		return fmt.Errorf("%q: want a number of vCPUs (or boot=N)", s)
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return fmt.Errorf("%q: want a number of vCPUs", s)
	}
	*c = cpusValue(n)
	return nil
}

// memoryValue is --memory: a size, or Cloud Hypervisor's size=SIZE. The
// size is kept as typed (a --config file shows it so) and checked later.
type memoryValue string

func (m *memoryValue) String() string { return string(*m) }
func (m *memoryValue) Get() any       { return string(*m) }
func (m *memoryValue) Set(s string) error {
	v := strings.TrimPrefix(s, "size=")
	if strings.Contains(v, "=") || strings.Contains(v, ",") {
		return fmt.Errorf("%q: want a size such as 1G (or size=1G); hugepages: --memory-backend hugetlb", s)
	}
	*m = memoryValue(v)
	return nil
}

// meminfoPath is read for the host's RAM (a variable for tests).
var meminfoPath = "/proc/meminfo"

// hostMemory returns a /proc/meminfo field in bytes.
func hostMemory(field string) (uint64, bool) {
	b, err := os.ReadFile(meminfoPath)
	if err != nil {
		return 0, false
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || k != field {
			continue
		}
		var kb uint64
		if _, err := fmt.Sscanf(strings.TrimSpace(v), "%d kB", &kb); err != nil {
			return 0, false
		}
		return kb << 10, true
	}
	return 0, false
}

// checkMemorySize refuses guest RAM sizes the machine cannot have (usage
// errors, exit 2) and sizes above the host's RAM: such a guest would be
// killed by the OOM killer the moment it used its RAM, and tearing down the
// huge, mostly empty mapping and memory slot takes long.
func checkMemorySize(typed string, size uint64) error {
	if size < 2<<20 {
		return usagef("--memory %s: guest RAM must be at least 2M", typed)
	}
	if size%memory.PageSize != 0 {
		return usagef("--memory %s: guest RAM must be a whole number of 4 KiB pages", typed)
	}
	if host, ok := hostMemory("MemTotal"); ok && size > host {
		return usagef("--memory %s is more than this host's RAM (%s): the guest would be killed when it used it", typed, gib(host))
	}
	return nil
}

// gib formats a host memory size in GiB.
func gib(n uint64) string { return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30)) }

// checkGDBAddr refuses a --gdb address that listens on every interface
// without saying so: "tcp::1234" (QEMU's spelling) would let anyone on
// the network control the guest. tcp:0.0.0.0:PORT says it on purpose (and
// gets a warning).
func checkGDBAddr(addr string) error {
	rest, ok := strings.CutPrefix(addr, "tcp:")
	if !ok {
		return nil
	}
	if host, port, err := net.SplitHostPort(rest); err == nil && host == "" {
		return usagef("--gdb %s would listen on every network interface (anyone who can reach this host could control the guest): write tcp:127.0.0.1:%s, or tcp:0.0.0.0:%s if you mean it", addr, port, port)
	}
	return nil
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
