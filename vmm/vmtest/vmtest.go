package vmtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/vmmgo/vmm/internal/guestimage"
	"github.com/vmmgo/vmm/internal/hostspeed"
	"github.com/vmmgo/vmm/kvm/kvmtest"
	"github.com/vmmgo/vmm/virtio"
	"github.com/vmmgo/vmm/vmm"
)

// Defaults for Options.
const (
	DefaultMemory  = 256 << 20
	DefaultTimeout = 10 * time.Minute
	// maxConsole bounds the console kept in memory (and in the artifact).
	maxConsole = 32 << 20
)

// ArtifactsEnv, when set, names the directory under which failed runs keep
// their artifacts (default: the system temporary directory).
const ArtifactsEnv = "VMTEST_ARTIFACTS"

// KernelEnv, when set, is the kernel booted when Options.Kernel is empty,
// instead of the cached guest kernel of internal/guestimage.
const KernelEnv = "VMTEST_KERNEL"

// Options describe one guest.
type Options struct {
	// Kernel is a bzImage or ELF vmlinux. Empty: $VMTEST_KERNEL, else the
	// vmm project's cached guest kernel (built on first use, minutes).
	Kernel string
	// Initrd is an initramfs file. Files are added to it (as a second,
	// concatenated archive) or, without Initrd, to the vmm test initramfs
	// whose /init is scripts/guest-init.
	Initrd string
	// Files maps host paths to guest paths to put in the initramfs.
	Files map[string]string
	// Cmdline is added after the VMM's default command line.
	Cmdline string
	// CPUs (default 1) and Memory in bytes (default 256 MiB).
	CPUs   int
	Memory uint64
	// Timeout stops the guest and dumps the vCPUs (default: derived from
	// Cost if set, else 10 minutes; in tests, shortened to fit the test
	// binary's -timeout).
	Timeout time.Duration
	// Cost, used when Timeout is zero, is what the run takes on a quiet
	// development host whose KVM emulates guest kernel mode (the reference
	// of internal/hostspeed, e.g. hostspeed.LinuxBoot for a boot to init):
	// the timeout is then derived from this host's measured speed and load
	// when the guest starts (hostspeed.Deadline).
	Cost time.Duration
	// Want is the outcome that counts as success for Run (default
	// vmm.OutcomePowerOff).
	Want vmm.Outcome
	// QuietConsole logs the console to the test log only when the run
	// fails, instead of line by line as it arrives.
	QuietConsole bool
	// KeepArtifacts keeps the artifact directory even when the run passes.
	KeepArtifacts bool
	// Console, if set, receives a copy of the raw console output.
	Console io.Writer
	// KVMPath is the KVM device (default $VMM_KVM_DEVICE or /dev/kvm).
	KVMPath string
	// Log receives the VMM's log (default: discarded).
	Log *logrus.Entry
	// PrivateMemory starts guest RAM private (vmm.Config.PrivateMemory,
	// `vmm boot --private-memory`).
	PrivateMemory bool
	// OpenDevices, if set, opens the virtio devices of one boot (the
	// machine owns and closes them).
	OpenDevices func() ([]virtio.Device, error)

	// boot replaces the real machine in this package's tests.
	boot bootFunc
	// name labels artifact directories.
	name string
}

// bootFunc runs a guest whose console goes to console. It returns the
// machine's result and its exit counters.
type bootFunc func(ctx context.Context, o *Options, console io.Writer) (vmm.Result, map[string]uint64, error)

// Result is what a guest did.
type Result struct {
	Outcome vmm.Outcome
	Detail  string // why it stopped, from the VMM
	Dump    string // vCPU state on timeout or crash
	// Console is the guest's serial output (at most 32 MiB).
	Console string
	// Stats are the VMM's exit counters.
	Stats    map[string]uint64
	Duration time.Duration
	// ArtifactDir holds console.log, result.txt and stats.txt when the run
	// failed (or KeepArtifacts was set); empty otherwise.
	ArtifactDir string
}

// consoleSink splits console bytes into lines for a callback and keeps
// them all. It is safe for the vCPU goroutines that write to it.
type consoleSink struct {
	mu      sync.Mutex
	all     bytes.Buffer
	partial []byte
	onLine  func(string)
	copyTo  io.Writer
	dropped int
}

func (c *consoleSink) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.copyTo != nil {
		c.copyTo.Write(p)
	}
	if room := maxConsole - c.all.Len(); room > 0 {
		c.all.Write(p[:min(len(p), room)])
	}
	if c.all.Len() >= maxConsole {
		c.dropped += len(p)
	}
	c.partial = append(c.partial, p...)
	for {
		i := bytes.IndexByte(c.partial, '\n')
		if i < 0 {
			break
		}
		c.emit(string(c.partial[:i]))
		c.partial = c.partial[i+1:]
	}
	if len(c.partial) > 64<<10 {
		c.emit(string(c.partial))
		c.partial = nil
	}
	return len(p), nil
}

func (c *consoleSink) emit(line string) {
	if c.onLine != nil {
		c.onLine(strings.TrimRight(line, "\r"))
	}
}

// flush delivers a last line without its newline.
func (c *consoleSink) flush() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.partial) > 0 {
		c.emit(string(c.partial))
		c.partial = nil
	}
}

func (c *consoleSink) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.all.String()
}

// kernelMu serializes the cached-kernel lookup so parallel tests do not
// start several builds; cachedKernel remembers the answer.
var (
	kernelMu     sync.Mutex
	cachedKernel string
)

// resolveKernel returns the kernel to boot.
func resolveKernel(ctx context.Context, k string) (string, error) {
	if k != "" {
		return k, nil
	}
	if k := os.Getenv(KernelEnv); k != "" {
		return k, nil
	}
	kernelMu.Lock()
	defer kernelMu.Unlock()
	if cachedKernel != "" {
		return cachedKernel, nil
	}
	imgs, err := guestimage.Kernel(ctx, nil)
	if err != nil {
		return "", fmt.Errorf("guest kernel: %w", err)
	}
	cachedKernel = imgs.VMLinux
	return cachedKernel, nil
}

// initrd returns the initramfs bytes for o (nil: none).
func initrd(ctx context.Context, o *Options) ([]byte, error) {
	var out []byte
	if o.Initrd != "" {
		b, err := os.ReadFile(o.Initrd)
		if err != nil {
			return nil, fmt.Errorf("initrd: %w", err)
		}
		out = b
	}
	if len(o.Files) == 0 {
		return out, nil
	}
	hosts := make([]string, 0, len(o.Files))
	for h := range o.Files {
		hosts = append(hosts, h)
	}
	sort.Strings(hosts)
	var files []guestimage.File
	for _, h := range hosts {
		files = append(files, guestimage.File{Host: h, Guest: o.Files[h]})
	}
	p, err := guestimage.Initramfs(ctx, guestimage.InitramfsOptions{Files: files})
	if err != nil {
		return nil, fmt.Errorf("initramfs: %w", err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("initramfs: %w", err)
	}
	// The kernel unpacks concatenated newc archives in turn
	// (init/initramfs.c); newc records are 4-byte aligned.
	for len(out)%4 != 0 {
		out = append(out, 0)
	}
	return append(out, b...), nil
}

// bootVMM is the real bootFunc: a vmm.Machine booting Linux.
func bootVMM(ctx context.Context, o *Options, console io.Writer) (vmm.Result, map[string]uint64, error) {
	kpath, err := resolveKernel(ctx, o.Kernel)
	if err != nil {
		return vmm.Result{}, nil, err
	}
	kdata, err := os.ReadFile(kpath)
	if err != nil {
		return vmm.Result{}, nil, fmt.Errorf("kernel: %w", err)
	}
	idata, err := initrd(ctx, o)
	if err != nil {
		return vmm.Result{}, nil, err
	}
	cfg := vmm.DefaultConfig()
	cfg.KVMPath = o.KVMPath
	cfg.CPUs = o.CPUs
	cfg.Memory = o.Memory
	cfg.Timeout = o.Timeout
	cfg.Console = console
	cfg.Log = o.Log
	cfg.PrivateMemory = o.PrivateMemory
	var devices []virtio.Device
	if o.OpenDevices != nil {
		if devices, err = o.OpenDevices(); err != nil {
			return vmm.Result{}, nil, err
		}
	}
	m, err := vmm.New(cfg)
	if err != nil {
		for _, d := range devices {
			d.Close()
		}
		return vmm.Result{}, nil, fmt.Errorf("create machine: %w", err)
	}
	defer m.Close()
	if _, err := m.LoadLinux(vmm.LinuxConfig{Kernel: kdata, Initrd: idata, Cmdline: o.Cmdline, Devices: devices}); err != nil {
		return vmm.Result{}, nil, fmt.Errorf("load %s: %w", kpath, err)
	}
	res, err := m.Run(ctx)
	if err != nil {
		return vmm.Result{}, m.Stats(), fmt.Errorf("run: %w", err)
	}
	return res, m.Stats(), nil
}

// withDefaults fills in o's zero fields.
func (o Options) withDefaults() Options {
	if o.CPUs == 0 {
		o.CPUs = 1
	}
	if o.Memory == 0 {
		o.Memory = DefaultMemory
	}
	if o.Timeout == 0 && o.Cost == 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Want == vmm.OutcomeNone {
		o.Want = vmm.OutcomePowerOff
	}
	if o.KVMPath == "" {
		o.KVMPath = kvmtest.Path()
	}
	return o
}

// Boot runs one guest to completion without a testing.T: it is what Run,
// KUnit and the `vmm kunit` command build on. onLine, if not nil, gets each
// console line as it arrives. The error reports host-side failures (no
// kernel, KVM errors); what the guest did is in the Result.
func Boot(ctx context.Context, opts Options, onLine func(string)) (*Result, error) {
	o := opts.withDefaults()
	if o.Timeout == 0 {
		o.Timeout = hostspeed.Deadline(o.Cost)
	}
	sink := &consoleSink{onLine: onLine, copyTo: o.Console}
	// A backstop in case the VMM's own watchdog cannot stop the guest.
	ctx, cancel := context.WithTimeout(ctx, o.Timeout+time.Minute)
	defer cancel()
	run := o.boot
	if run == nil {
		run = bootVMM
	}
	start := time.Now()
	vres, stats, err := run(ctx, &o, sink)
	sink.flush()
	r := &Result{
		Outcome:  vres.Outcome,
		Detail:   vres.Detail,
		Dump:     vres.Dump,
		Console:  sink.String(),
		Stats:    stats,
		Duration: time.Since(start),
	}
	if sink.dropped > 0 {
		r.Detail += fmt.Sprintf(" (console truncated: %d bytes dropped)", sink.dropped)
	}
	if err != nil {
		if r.Outcome == vmm.OutcomeNone {
			r.Outcome = vmm.OutcomeError
		}
		return r, err
	}
	return r, nil
}

// artifact is one extra file to keep with a failed run.
type artifact struct {
	name string
	data []byte
}

var unsafeName = regexp.MustCompile(`[^A-Za-z0-9_.-]+`)

// keepArtifacts writes the run's files to a new directory and returns it.
func keepArtifacts(name string, r *Result, hostErr error, extra ...artifact) (string, error) {
	base := os.Getenv(ArtifactsEnv)
	if base == "" {
		base = os.TempDir()
	}
	if err := os.MkdirAll(base, 0o755); err != nil {
		return "", fmt.Errorf("artifacts: %w", err)
	}
	dir, err := os.MkdirTemp(base, "vmtest-"+unsafeName.ReplaceAllString(name, "_")+"-")
	if err != nil {
		return "", fmt.Errorf("artifacts: %w", err)
	}
	var summary strings.Builder
	fmt.Fprintf(&summary, "outcome: %v\nduration: %v\ndetail: %s\n", r.Outcome, r.Duration.Round(time.Millisecond), r.Detail)
	if hostErr != nil {
		fmt.Fprintf(&summary, "error: %v\n", hostErr)
	}
	if r.Dump != "" {
		fmt.Fprintf(&summary, "\nvCPU dump:\n%s\n", r.Dump)
	}
	var stats strings.Builder
	keys := make([]string, 0, len(r.Stats))
	for k := range r.Stats {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&stats, "%-28s %d\n", k, r.Stats[k])
	}
	files := append([]artifact{
		{"console.log", []byte(r.Console)},
		{"result.txt", []byte(summary.String())},
		{"stats.txt", []byte(stats.String())},
	}, extra...)
	var errs []error
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(dir, f.name), f.data, 0o644); err != nil {
			errs = append(errs, err)
		}
	}
	return dir, errors.Join(errs...)
}

// deadline shortens o.Timeout to end before the test binary's own deadline,
// leaving time to report.
func deadline(t testing.TB, o *Options) {
	d, ok := t.(interface{ Deadline() (time.Time, bool) })
	if !ok {
		return
	}
	end, ok := d.Deadline()
	if !ok {
		return
	}
	left := time.Until(end) - 30*time.Second
	if left < time.Second {
		left = time.Second
	}
	if o.Timeout == 0 || o.Timeout > left {
		o.Timeout = left
	}
}

// boot is Run's machinery shared with KUnit and GoTest: it boots with the
// console in the test log and keeps artifacts when fail says so. It calls
// t.Fatal on host-side errors.
func boot(t testing.TB, opts Options, onLine func(string)) (*Result, error) {
	t.Helper()
	o := opts
	if o.boot == nil {
		path := o.KVMPath
		if path == "" {
			path = kvmtest.Path()
		}
		// Skips only when /dev/kvm is absent; fails when it is broken.
		if kvmtest.OpenPath(t, path) == nil {
			return nil, errors.New("no KVM")
		}
		// At most a few guests boot at once on the machine (across test
		// processes); the timeout is taken once the slot is held.
		hostspeed.HoldBootSlot(t)
	}
	if o.Timeout == 0 {
		o.Timeout = hostspeed.Deadline(o.Cost)
		t.Logf("vmtest: timeout %v for a run of %v on the reference host", o.Timeout.Round(time.Second), o.Cost)
	}
	deadline(t, &o)
	if o.name == "" {
		o.name = t.Name()
	}
	r, err := Boot(context.Background(), o, func(line string) {
		if !o.QuietConsole {
			t.Log("console: " + line)
		}
		if onLine != nil {
			onLine(line)
		}
	})
	return r, err
}

// Run boots a guest for test t, logs its console line by line, and fails t
// unless the guest ends with opts.Want (default: power-off). On failure the
// console log, the VMM's verdict with any vCPU dump and its exit counters
// are kept in a directory named in the failure message. Tests may call Run
// in parallel (t.Parallel): every call has its own machine.
//
// Run skips t when the KVM device is absent, and fails it when the device
// is present but unusable.
func Run(t testing.TB, opts Options) *Result {
	t.Helper()
	o := opts.withDefaults()
	r, err := boot(t, o, nil)
	if r == nil {
		return nil
	}
	if err == nil && r.Outcome == o.Want {
		if o.KeepArtifacts {
			r.ArtifactDir, _ = keepArtifacts(nameOf(t, o), r, nil)
			t.Logf("vmtest: artifacts in %s", r.ArtifactDir)
		}
		return r
	}
	fail(t, o, r, err, fmt.Sprintf("guest ended with %v, want %v", r.Outcome, o.Want))
	return r
}

func nameOf(t testing.TB, o Options) string {
	if o.name != "" {
		return o.name
	}
	return t.Name()
}

// fail reports a failed run on t with its artifacts.
func fail(t testing.TB, o Options, r *Result, hostErr error, what string, extra ...artifact) {
	t.Helper()
	if o.QuietConsole {
		for _, l := range strings.Split(strings.TrimRight(r.Console, "\n"), "\n") {
			t.Log("console: " + strings.TrimRight(l, "\r"))
		}
	}
	dir, aerr := keepArtifacts(nameOf(t, o), r, hostErr, extra...)
	r.ArtifactDir = dir
	msg := "vmtest: " + what
	if dir != "" {
		msg += "\nartifacts kept in " + dir
	}
	if hostErr != nil {
		msg += fmt.Sprintf("\nerror: %v", hostErr)
	}
	if r.Detail != "" {
		msg += "\ndetail: " + r.Detail
	}
	if r.Dump != "" {
		msg += "\nvCPU state:\n" + r.Dump
	}
	if aerr != nil {
		msg += fmt.Sprintf("\nartifacts: %v", aerr)
	}
	t.Error(msg)
}
