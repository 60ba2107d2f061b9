// Command vmm runs virtual machines on Linux KVM.
//
//	vmm probe                      what this host's KVM offers
//	vmm boot --kernel PATH ...     boot a Linux kernel
//	vmm run --image PATH ...       run a raw guest image (firmware, tests)
//	vmm version
//
// Exit codes (see README): 0 guest powered off (or a tiny guest exited 0),
// 1 VMM error, 2 usage error, 3 guest rebooted, 4 guest panicked / triple
// fault, 5 watchdog timeout, 6 stopped by a signal.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"syscall"

	"github.com/sirupsen/logrus"
)

// version is set by the Makefile (-ldflags "-X main.version=...").
var version = "dev"

// errHelp is returned by a command whose --help was printed.
var errHelp = errors.New("help requested")

// usageError marks errors in the command line: exit code 2.
type usageError struct{ error }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) (int, error)
}

func commands() []command {
	return []command{
		{"boot", "boot a Linux kernel (bzImage or ELF vmlinux/PVH) with an initrd and command line", runBoot},
		{"run", "run a raw guest image loaded at a guest physical address", runRaw},
		{"stats", "print the counters of a running VMM started with --control-socket", runStats},
		{"ctl", "pause, resume, dump or stop a running VMM started with --control-socket", runCtl},
		{"probe", "report what this host's KVM offers and whether guest kernel mode is emulated", runProbe},
		{"kunit", "run the kernel's KUnit tests in a guest and report each result (like kunit.py)", runKUnit},
		{"version", "print the version", runVersion},
	}
}

func main() {
	os.Exit(realMain(os.Args[1:], os.Stdout, os.Stderr))
}

func realMain(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		topUsage(stderr)
		return 2
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		if len(args) > 1 {
			return realMain([]string{args[1], "--help"}, stdout, stderr)
		}
		topUsage(stdout)
		return 0
	case "-version", "--version", "-v":
		args = []string{"version"}
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		ctx, stop := signalContext(stderr)
		defer stop()
		code, err := c.run(ctx, args[1:], stdout, stderr)
		if errors.Is(err, errHelp) {
			return 0
		}
		if err != nil {
			var ue usageError
			if errors.As(err, &ue) {
				fmt.Fprintf(stderr, "vmm %s: %v\nRun 'vmm %s --help' for usage.\n", c.name, ue.error, c.name)
				return 2
			}
			fmt.Fprintf(stderr, "vmm %s: %v\n", c.name, err)
			if code == 0 {
				code = 1
			}
		}
		return code
	}
	var names []string
	for _, c := range commands() {
		names = append(names, c.name)
	}
	msg := fmt.Sprintf("vmm: unknown command %q", args[0])
	if strings.HasPrefix(args[0], "-") {
		msg = fmt.Sprintf("vmm: %s needs a command first (vmm boot %s ...)", args[0], args[0])
	} else if s := suggest(args[0], names); len(s) > 0 {
		msg += fmt.Sprintf(" (did you mean %s?)", strings.Join(s, " or "))
	}
	fmt.Fprintf(stderr, "%s\nRun 'vmm --help' for the commands.\n", msg)
	return 2
}

func topUsage(w io.Writer) {
	fmt.Fprintf(w, "vmm %s: a KVM virtual machine monitor\n\nUsage: vmm COMMAND [flags]\n\nCommands:\n", version)
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "\nRun 'vmm COMMAND --help' for the flags of a command.\n")
	fmt.Fprint(w, exitCodeHelp)
}

const exitCodeHelp = `
Exit codes:
  0  the guest powered off (or a raw guest wrote 0 to the exit port)
  1  VMM error (bad image, KVM failure, emulation failure)
  2  usage error
  3  the guest rebooted
  4  the guest panicked, triple-faulted or crashed
  5  the --timeout watchdog fired (vCPU state is dumped)
  6  stopped by SIGINT/SIGTERM or the console escape (Ctrl-A x)
`

func runVersion(_ context.Context, args []string, stdout, stderr io.Writer) (int, error) {
	if len(args) == 1 && (args[0] == "--help" || args[0] == "-help" || args[0] == "-h") {
		io.WriteString(stdout, `Usage: vmm version

Prints the version of this vmm binary (set at build time by the Makefile
from git describe; "dev" plus the VCS revision for a plain go build) and
the Go toolchain it was built with. 'vmm --version' is the same.
`)
		return 0, errHelp
	}
	if len(args) > 0 {
		return 2, usagef("version takes no arguments")
	}
	fmt.Fprintf(stdout, "vmm %s (%s)\n", versionString(), runtime.Version())
	return 0, nil
}

// versionString is the build's version: the Makefile's, or "dev" plus the
// VCS revision for a plain go build.
func versionString() string {
	v := version
	if bi, ok := debug.ReadBuildInfo(); ok && v == "dev" {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				v += "+" + s.Value[:min(12, len(s.Value))]
			}
		}
	}
	return v
}

// signalContext cancels on the first SIGINT/SIGTERM; a second one exits at
// once with code 6 (the terminal is restored by the caller's defer only on
// the first).
func signalContext(stderr io.Writer) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(context.Background())
	ch := make(chan os.Signal, 2)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		n := 0
		for {
			select {
			case s := <-ch:
				n++
				if n == 1 {
					cancel(fmt.Errorf("received %v", s))
					continue
				}
				fmt.Fprintf(stderr, "\r\nvmm: second %v, exiting now\r\n", s)
				restoreTerminal()
				os.Exit(6)
			case <-done:
				return
			}
		}
	}()
	return ctx, func() {
		signal.Stop(ch)
		close(done)
		cancel(nil)
	}
}

// restoreTerminal is replaced while the console holds the terminal in raw mode.
var restoreTerminal = func() {}

// terminalRaw is set while the console holds the terminal in raw mode.
var terminalRaw atomic.Bool

// rawSafe writes log lines with \r\n while the terminal is raw (a bare \n
// would only move the cursor down), and untouched otherwise.
type rawSafe struct{ w io.Writer }

func (r rawSafe) Write(p []byte) (int, error) {
	if !terminalRaw.Load() {
		return r.w.Write(p)
	}
	if _, err := io.WriteString(r.w, crlf(string(p))); err != nil {
		return 0, err
	}
	return len(p), nil
}

// setupLogging configures logrus for the whole process: stderr (the console
// owns stdout), the requested level and format.
func setupLogging(stderr io.Writer, level, format string) (*logrus.Entry, error) {
	l := logrus.New()
	l.SetOutput(rawSafe{stderr})
	lv, err := logrus.ParseLevel(level)
	if err != nil {
		return nil, usagef("--log-level %q: want one of panic, fatal, error, warn, info, debug, trace", level)
	}
	l.SetLevel(lv)
	switch strings.ToLower(format) {
	case "text", "":
		l.SetFormatter(&logrus.TextFormatter{DisableTimestamp: false, FullTimestamp: true})
	case "json":
		l.SetFormatter(&logrus.JSONFormatter{})
	default:
		return nil, usagef("--log-format %q: want text or json", format)
	}
	return logrus.NewEntry(l), nil
}
