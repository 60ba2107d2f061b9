package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"

	"github.com/vmmgo/vmm/internal/guestimage"
	"github.com/vmmgo/vmm/vmm"
	"golang.org/x/sys/unix"
)

// bootFlags are the flags of `vmm boot`: the native ones, their QEMU
// spellings (qemu.go) and the --config file (config.go).
type bootFlags struct {
	fs          *flag.FlagSet
	mf          machineFlags
	df          deviceFlags
	q           qemuFlags
	kernel      string
	initrd      string
	cmdline     string
	noDefault   bool
	extract     string
	noPVH       bool
	profile     string
	console     string
	consoleLog  string
	config      string
	printConfig bool
}

func newBootFlags(out io.Writer) *bootFlags {
	b := &bootFlags{}
	fset := flag.NewFlagSet("boot", flag.ContinueOnError)
	fset.SetOutput(out)
	b.fs = fset
	b.mf.register(fset, "512M")
	b.df.register(fset)
	fset.StringVar(&b.kernel, "kernel", "", "kernel `file`: bzImage, or ELF vmlinux (PVH note or 64-bit entry) (default: the cached project kernel, built on first use)")
	fset.StringVar(&b.initrd, "initrd", "", "initramfs `file`")
	fset.StringVar(&b.initrd, "initramfs", "", "alias of --initrd (Cloud Hypervisor)")
	fset.StringVar(&b.cmdline, "cmdline", "", "kernel command line, added after the defaults")
	fset.StringVar(&b.cmdline, "append", "", "alias of --cmdline")
	fset.BoolVar(&b.noDefault, "no-default-cmdline", false, "do not add the default command line ("+vmm.DefaultCmdline+")")
	fset.StringVar(&b.extract, "extract", "auto", "unpack a bzImage's compressed vmlinux on the host and boot it via PVH: auto (on hosts that emulate guest kernel mode), on, off")
	fset.BoolVar(&b.noPVH, "no-pvh", false, "boot ELF kernels through the 64-bit boot protocol even if they have a PVH note")
	fset.StringVar(&b.profile, "cpu-profile", "auto", "CPUID `profile`: auto, host, emulated (hides what an emulating host cannot execute)")
	fset.StringVar(&b.console, "console", "stdio", "serial console: stdio, none, or file:PATH")
	fset.StringVar(&b.consoleLog, "console-log", "", "also copy the serial console to this `file`")
	fset.StringVar(&b.config, "config", "", "read the machine from this JSON `file` (see \"Config file\" below); flags given too override it, device flags add devices")
	fset.StringVar(&b.config, "config-file", "", "alias of --config (Firecracker's name; a Firecracker config file is read too)")
	fset.BoolVar(&b.printConfig, "print-config", false, "print the machine these flags describe as a --config file on stdout, and exit")
	b.q.register(fset, b)
	fset.Usage = func() {
		w := fset.Output()
		io.WriteString(w, `Usage: vmm boot [--kernel FILE] [--initrd FILE] [--cmdline STR] [flags]
       vmm boot --config vm.json [flags]

Boots a Linux kernel with 8250 serial on COM1 (console on stdin/stdout; the
terminal is put in raw mode: type Ctrl-A x to quit, Ctrl-A s for a state
dump, Ctrl-A h for help), ACPI and MP tables for SMP and power-off, i8042
reset, CMOS RTC and the in-kernel irqchip and PIT. Without --kernel it boots
this project's cached guest kernel (scripts/guest-kernel/build.sh).

Flags:
`)
		printFlags(w, fset, qemuFlagNames)
		io.WriteString(w, "\nQEMU spellings (each sets the native flag shown, or is accepted with a note):\n")
		for _, n := range []string{"nographic", "enable-kvm", "accel", "serial", "M", "machine", "cpu", "s", "S", "drive", "netdev", "device"} {
			printFlag(w, fset.Lookup(n))
		}
		io.WriteString(w, "  (-kernel, -initrd, -append, -m and -smp are the native flags' aliases)\n")
		io.WriteString(w, configHelp)
		io.WriteString(w, exitCodeHelp)
	}
	return b
}

const configHelp = `
Config file (--config FILE, written by --print-config): a JSON object whose
keys are the flag names with "_" for "-", plus "version": 1; devices are
lists of objects: "disks": [{"path": "disk.img", "readonly": true}],
"nets": [{"tap": "tap0", "mac": "52:54:00:12:34:56"}], "vsock": {"cid": 3,
"path": "v.sock"}, "console_ports": [{"name": "N", "path": "P"}].
Firecracker config files ("boot-source", "machine-config", "drives",
"network-interfaces", "vsock", "entropy") are translated.
`

// parseBootFlags parses args, applying --config first (a first pass finds
// it) so that the flags override the file.
func parseBootFlags(args []string, stdout io.Writer) (*bootFlags, error) {
	pre := newBootFlags(io.Discard)
	_ = pre.fs.Parse(args) // errors are reported by the real pass
	b := newBootFlags(stdout)
	if pre.config != "" {
		if err := loadConfig(b.fs, pre.config); err != nil {
			return nil, usageError{err}
		}
		b.q.notes = nil // notes come from the command line only
	}
	if err := parseFlags(b.fs, args); err != nil {
		return nil, err
	}
	if err := b.q.finish(b); err != nil {
		return nil, err
	}
	return b, nil
}

// bootPlan is the machine the flags describe, checked but not yet built:
// the flags and a --config file that describe the same machine give equal
// plans (TestConfigRoundTrip).
type bootPlan struct {
	cfg        vmm.Config
	linux      vmm.LinuxConfig // without the images
	kernel     string
	initrd     string
	console    string
	consoleLog string
	devices    deviceFlags
}

func (b *bootFlags) plan(stderr io.Writer) (*bootPlan, error) {
	cfg, err := b.mf.config(stderr)
	if err != nil {
		return nil, err
	}
	for _, n := range b.q.notes {
		cfg.Log.Info("note: " + n)
	}
	p := &bootPlan{kernel: b.kernel, initrd: b.initrd, console: b.console, consoleLog: b.consoleLog, devices: b.df}
	if c := b.console; c != "stdio" && c != "none" && !strings.HasPrefix(c, "file:") {
		return nil, usagef("--console %q: want stdio, none or file:PATH", c)
	}
	switch b.profile {
	case "auto":
		cfg.CPUProfile = vmm.ProfileAuto
	case vmm.ProfileHost, vmm.ProfileEmulated:
		cfg.CPUProfile = b.profile
	default:
		return nil, usagef("--cpu-profile %q: want auto, host or emulated", b.profile)
	}
	var mode vmm.ExtractMode
	switch b.extract {
	case "on":
		mode = vmm.ExtractOn
	case "off":
		mode = vmm.ExtractOff
	case "auto":
		mode = vmm.ExtractAuto
	default:
		return nil, usagef("--extract %q: want auto, on or off", b.extract)
	}
	if err := b.df.check(); err != nil {
		return nil, err
	}
	p.cfg = cfg
	p.linux = vmm.LinuxConfig{Cmdline: b.cmdline, NoDefaultCmdline: b.noDefault, Extract: mode, NoPVH: b.noPVH}
	return p, nil
}

func runBoot(ctx context.Context, args []string, stdout, stderr io.Writer) (int, error) {
	b, err := parseBootFlags(args, stdout)
	if err != nil {
		return 2, err
	}
	if b.printConfig {
		out, err := b.writeConfig()
		if err != nil {
			return 1, err
		}
		stdout.Write(out)
		return 0, nil
	}
	p, err := b.plan(stderr)
	if err != nil {
		return 2, err
	}
	cfg, mf, df := p.cfg, &b.mf, &p.devices
	if p.kernel == "" {
		cfg.Log.Info("no --kernel: booting the cached project kernel (scripts/guest-kernel/build.sh builds it on first use, minutes)")
		k, err := guestimage.Kernel(ctx, stderr)
		if err != nil {
			return 1, fmt.Errorf("default kernel: %w (or give --kernel FILE)", err)
		}
		p.kernel = k.VMLinux
		cfg.Log.Infof("kernel %s", p.kernel)
		if p.initrd == "" {
			cfg.Log.Info("no --initrd: the kernel stops at mounting a root file system (build an initramfs with: go run ./scripts/mkinitramfs)")
		}
	}
	kdata, releaseKernel, err := readInput("kernel", p.kernel)
	if err != nil {
		return 1, err
	}
	defer releaseKernel()
	if err := checkNotCompressed(p.kernel, kdata); err != nil {
		return 1, err
	}
	var idata []byte
	if p.initrd != "" {
		var releaseInitrd func()
		if idata, releaseInitrd, err = readInput("initrd", p.initrd); err != nil {
			return 1, err
		}
		defer releaseInitrd()
	}
	var out io.Writer = stdout
	var logFile io.WriteCloser
	stdio := false
	switch {
	case p.console == "stdio":
		stdio = true
	case p.console == "none":
		out = io.Discard
	case strings.HasPrefix(p.console, "file:"):
		f, err := os.Create(strings.TrimPrefix(p.console, "file:"))
		if err != nil {
			return 1, fmt.Errorf("--console: %w", err)
		}
		defer f.Close()
		out = f
	default:
		return 2, usagef("--console %q: want stdio, none or file:PATH", p.console)
	}
	if p.consoleLog != "" {
		if logFile, err = os.Create(p.consoleLog); err != nil {
			return 1, fmt.Errorf("--console-log: %w", err)
		}
		defer logFile.Close()
	}
	cfg.Console = out
	devs, err := df.open(cfg.Log, stdout)
	if err != nil {
		return 1, err
	}
	if devs.hvcIn != nil {
		defer devs.hvcIn.Close() // ends the console's stdin reader on every path
	}

	m, err := vmm.New(cfg)
	if err != nil {
		devs.close()
		return 1, err
	}
	defer m.Close()
	lc := p.linux
	lc.Kernel, lc.Initrd, lc.Devices = kdata, idata, devs.list // the machine owns the devices now
	if logFile != nil {
		lc.ConsoleLog = logFile
	}
	if _, err := m.LoadLinux(lc); err != nil {
		return 1, err
	}
	// The images are in guest RAM now: drop the host copies (and whatever
	// host-side decompression allocated) before the guest runs for hours.
	releaseKernel() // idempotent: the deferred call does nothing more
	lc.Kernel, lc.Initrd, kdata, idata = nil, nil, nil, nil
	debug.FreeOSMemory()
	stopServices, err := mf.startServices(ctx, m, stderr)
	if err != nil {
		return 1, err
	}
	defer stopServices()
	if devs.hvcIn != nil {
		stop, err := attachVirtioConsole(ctx, m, devs.hvcIn, stderr)
		if err != nil {
			return 1, err
		}
		defer stop()
	} else if stdio {
		stop, err := attachConsole(ctx, m, stderr)
		if err != nil {
			return 1, err
		}
		defer stop()
	}
	stopDump := dumpOnSIGUSR1(m, stderr)
	defer stopDump()
	res, err := m.Run(ctx)
	if err != nil {
		return 1, err
	}
	restoreTerminal()
	reportResult(stderr, res)
	if mf.stats {
		printStats(stderr, m)
		printVirtioStats(stderr, m)
	}
	return res.Outcome.ExitCode(), nil
}

// readInput maps a kernel or initrd read-only, with errors that say what
// to do. Mapping instead of reading keeps a large image (a vmlinux with
// debug info is ~100 MB) out of the VMM's heap: once loaded into guest RAM
// and unmapped, it costs the VMM nothing (release does that).
func readInput(what, path string) (data []byte, release func(), err error) {
	f, err := os.Open(path)
	switch {
	case errors.Is(err, fs.ErrNotExist) && what == "kernel":
		return nil, nil, fmt.Errorf("kernel %s: no such file (give a bzImage or vmlinux path; leave --kernel out to boot the cached project kernel)", path)
	case errors.Is(err, fs.ErrNotExist) && what == "initrd":
		return nil, nil, fmt.Errorf("initrd %s: no such file (give a cpio archive; go run ./scripts/mkinitramfs builds one and prints its path)", path)
	case errors.Is(err, fs.ErrNotExist):
		return nil, nil, fmt.Errorf("%s %s: no such file", what, path)
	case err != nil:
		return nil, nil, fmt.Errorf("open %s: %w", what, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, nil, fmt.Errorf("stat %s: %w", what, err)
	}
	if st.IsDir() {
		hint := ""
		for _, name := range []string{"vmlinux", "bzImage", "arch/x86/boot/bzImage", "initrd.cpio"} {
			if fi, err := os.Stat(filepath.Join(path, name)); err == nil && fi.Mode().IsRegular() {
				hint = fmt.Sprintf(" (%s is there)", filepath.Join(path, name))
				break
			}
		}
		return nil, nil, fmt.Errorf("%s %s is a directory: give the %s file%s", what, path, what, hint)
	}
	if !st.Mode().IsRegular() {
		data, err = io.ReadAll(f) // a pipe or device: read it
		if err == nil && len(data) == 0 {
			err = fmt.Errorf("%s %s is empty", what, path)
		}
		return data, func() {}, err
	}
	if st.Size() == 0 {
		return nil, nil, fmt.Errorf("%s %s is empty", what, path)
	}
	data, err = unix.Mmap(int(f.Fd()), 0, int(st.Size()), unix.PROT_READ, unix.MAP_PRIVATE)
	if err != nil {
		return nil, nil, fmt.Errorf("map %s %s: %w", what, path, err)
	}
	var once sync.Once
	return data, func() { once.Do(func() { _ = unix.Munmap(data) }) }, nil
}

// compressedMagic are the formats a kernel file may be packed in by
// mistake (a distribution's vmlinuz.gz, a vmlinux.xz), with the command
// that unpacks them.
var compressedMagic = []struct {
	magic, format, cmd string
}{
	{"\x1f\x8b", "gzip", "gunzip"},
	{"\xfd7zXZ\x00", "xz", "unxz"},
	{"\x28\xb5\x2f\xfd", "zstd", "unzstd"},
	{"BZh", "bzip2", "bunzip2"},
	{"\x04\x22\x4d\x18", "lz4", "unlz4"},
}

// checkNotCompressed refuses a kernel file that is a compressed stream
// (not a bzImage, whose compressed payload sits behind a boot header).
func checkNotCompressed(path string, data []byte) error {
	for _, c := range compressedMagic {
		if bytes.HasPrefix(data, []byte(c.magic)) {
			return fmt.Errorf("kernel %s: this is %s data, not a kernel: %s it first (%s -c %s > vmlinux) and boot the result",
				path, c.format, c.cmd, c.cmd, path)
		}
	}
	return nil
}

// dumpOnSIGUSR1 prints every vCPU's state on SIGUSR1 without stopping.
func dumpOnSIGUSR1(m *vmm.Machine, w io.Writer) func() {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGUSR1)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-ch:
				fmt.Fprint(w, crlf(m.DumpState()))
			case <-done:
				return
			}
		}
	}()
	return func() {
		signal.Stop(ch)
		close(done)
	}
}

// crlf turns \n into \r\n so text stays readable while the terminal is raw.
func crlf(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "\r\n", "\n"), "\n", "\r\n")
}
