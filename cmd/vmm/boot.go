package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"

	"github.com/vmmgo/vmm/vmm"
	"golang.org/x/sys/unix"
)

func runBoot(ctx context.Context, args []string, stdout, stderr io.Writer) (int, error) {
	fset := flag.NewFlagSet("boot", flag.ContinueOnError)
	fset.SetOutput(stderr)
	var mf machineFlags
	mf.register(fset, "512M")
	var df deviceFlags
	df.register(fset)
	kernel := fset.String("kernel", "", "kernel `file`: bzImage, or ELF vmlinux (PVH note or 64-bit entry) (required)")
	initrd := fset.String("initrd", "", "initramfs `file`")
	var cmdline string
	fset.StringVar(&cmdline, "cmdline", "", "kernel command line, added after the defaults")
	fset.StringVar(&cmdline, "append", "", "alias of --cmdline")
	noDefault := fset.Bool("no-default-cmdline", false, "do not add the default command line ("+vmm.DefaultCmdline+")")
	extract := fset.String("extract", "auto", "unpack a bzImage's compressed vmlinux on the host and boot it via PVH: auto (on hosts that emulate guest kernel mode), on, off")
	noPVH := fset.Bool("no-pvh", false, "boot ELF kernels through the 64-bit boot protocol even if they have a PVH note")
	profile := fset.String("cpu-profile", "auto", "CPUID `profile`: auto, host, emulated (hides what an emulating host cannot execute)")
	hostKind := fset.String("host", "auto", hostFlagHelp)
	console := fset.String("console", "stdio", "serial console: stdio, none, or file:PATH")
	consoleLog := fset.String("console-log", "", "also copy the serial console to this `file`")
	fset.Usage = func() {
		io.WriteString(fset.Output(), `Usage: vmm boot --kernel FILE [--initrd FILE] [--cmdline STR] [flags]

Boots a Linux kernel with 8250 serial on COM1 (console on stdin/stdout; the
terminal is put in raw mode: type Ctrl-A x to quit, Ctrl-A s for a state
dump, Ctrl-A h for help), ACPI and MP tables for SMP and power-off, i8042
reset, CMOS RTC and the in-kernel irqchip and PIT. QEMU-style aliases:
-kernel, -initrd, -append, -smp, -m.

Flags:
`)
		fset.PrintDefaults()
		io.WriteString(fset.Output(), exitCodeHelp)
	}
	if err := parseFlags(fset, args); err != nil {
		return 2, err
	}
	if *kernel == "" {
		return 2, usagef("--kernel is required")
	}
	cfg, err := mf.config(stderr)
	if err != nil {
		return 2, err
	}
	if c := *console; c != "stdio" && c != "none" && !strings.HasPrefix(c, "file:") {
		return 2, usagef("--console %q: want stdio, none or file:PATH", c)
	}
	if err := decideHost(ctx, *hostKind, &cfg); err != nil {
		return 1, err
	}
	switch *profile {
	case "auto":
		cfg.CPUProfile = vmm.ProfileAuto
	case vmm.ProfileHost, vmm.ProfileEmulated:
		cfg.CPUProfile = *profile
	default:
		return 2, usagef("--cpu-profile %q: want auto, host or emulated", *profile)
	}
	var mode vmm.ExtractMode
	switch *extract {
	case "on":
		mode = vmm.ExtractOn
	case "off":
		mode = vmm.ExtractOff
	case "auto":
		mode = vmm.ExtractAuto
	default:
		return 2, usagef("--extract %q: want auto, on or off", *extract)
	}
	kdata, releaseKernel, err := readInput("kernel", *kernel)
	if err != nil {
		return 1, err
	}
	defer releaseKernel()
	var idata []byte
	if *initrd != "" {
		var releaseInitrd func()
		if idata, releaseInitrd, err = readInput("initrd", *initrd); err != nil {
			return 1, err
		}
		defer releaseInitrd()
	}
	var out io.Writer = stdout
	var logFile io.WriteCloser
	stdio := false
	switch {
	case *console == "stdio":
		stdio = true
	case *console == "none":
		out = io.Discard
	case strings.HasPrefix(*console, "file:"):
		f, err := os.Create(strings.TrimPrefix(*console, "file:"))
		if err != nil {
			return 1, fmt.Errorf("--console: %w", err)
		}
		defer f.Close()
		out = f
	default:
		return 2, usagef("--console %q: want stdio, none or file:PATH", *console)
	}
	if *consoleLog != "" {
		if logFile, err = os.Create(*consoleLog); err != nil {
			return 1, fmt.Errorf("--console-log: %w", err)
		}
		defer logFile.Close()
	}
	cfg.Console = out
	if err := df.check(); err != nil {
		return 2, err
	}
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
	lc := vmm.LinuxConfig{Kernel: kdata, Initrd: idata, Cmdline: cmdline, NoDefaultCmdline: *noDefault,
		Extract: mode, NoPVH: *noPVH, Devices: devs.list} // the machine owns the devices now
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
	// ...after the guest started, not before its first instruction.
	go trimAfterStart(ctx)
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
	case errors.Is(err, fs.ErrNotExist):
		return nil, nil, fmt.Errorf("%s %s: no such file (build one with ./scripts/guest-kernel/build.sh, or give a bzImage/vmlinux path)", what, path)
	case err != nil:
		return nil, nil, fmt.Errorf("open %s: %w", what, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, nil, fmt.Errorf("stat %s: %w", what, err)
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
