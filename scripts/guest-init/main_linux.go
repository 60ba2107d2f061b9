package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// mounts are the file systems every test guest gets. Errors are reported and
// otherwise ignored: a missing /sys must not stop the marker from printing.
var mounts = []struct {
	source, target, fstype string
	flags                  uintptr
}{
	{"proc", "/proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC},
	{"sysfs", "/sys", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC},
	{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID},
	{"tmpfs", "/tmp", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV},
}

func main() {
	// Outside PID 1 (a developer running the binary on the host, or a test)
	// nothing is mounted and nothing is powered off: the markers and the
	// command's exit code go to stdout, so the host stays untouched.
	pid1 := os.Getpid() == 1
	console := io.Writer(os.Stdout)
	stdio := os.Stdout
	if pid1 {
		mountAll(console)
		// The kernel gave us /dev/console from the initramfs as stdio when
		// that node exists; reopen it from devtmpfs so output works either way.
		if f, err := os.OpenFile("/dev/console", os.O_RDWR, 0); err == nil {
			stdio = f
			console = f
		}
	}
	fmt.Fprintln(console, MarkerHello)

	code := 0
	var argv []string
	// Only the real init obeys the kernel command line: a copy started by
	// vmm.run=/init (or on the host) must not run vmm.run again.
	if pid1 {
		cmdline, err := os.ReadFile("/proc/cmdline")
		if err != nil {
			fmt.Fprintf(console, "guest-init: %v\n", err)
		}
		argv = commandFromCmdline(string(cmdline))
		if c, err := checksFromCmdline(string(cmdline)); err != nil {
			fmt.Fprintf(console, "guest-init: %v\n", err)
		} else {
			runChecks(console, c)
		}
	}
	if len(argv) == 0 && len(os.Args) > 1 {
		argv = os.Args[1:]
	}
	if len(argv) > 0 {
		var attr *syscall.SysProcAttr
		if pid1 {
			// Give the command the real console tty as its controlling
			// terminal (/dev/console itself never becomes one), so that an
			// interactive shell gets job control and ^C.
			if tty := consoleTTY(); tty != nil {
				defer tty.Close()
				stdio = tty
				attr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
			}
		}
		code = run(console, stdio, attr, argv)
	}
	fmt.Fprintln(console, exitLine(code))
	if !pid1 {
		fmt.Fprintln(console, "guest-init: not PID 1, not powering off")
		os.Exit(code & 0xff)
	}

	unix.Sync()
	err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	fmt.Fprintf(console, "guest-init: power off: %v\n", os.NewSyscallError("reboot", err))
	os.Exit(1)
}

// mountAll mounts the standard file systems, reporting failures on console.
func mountAll(console io.Writer) {
	for _, m := range mounts {
		if err := os.MkdirAll(m.target, 0o755); err != nil {
			fmt.Fprintf(console, "guest-init: mkdir %s: %v\n", m.target, err)
		}
		err := unix.Mount(m.source, m.target, m.fstype, m.flags, "")
		if err != nil && !errors.Is(err, unix.EBUSY) {
			fmt.Fprintf(console, "guest-init: mount %s on %s: %v\n", m.fstype, m.target, os.NewSyscallError("mount", err))
		}
	}
}

// consoleTTY opens the tty behind /dev/console (the last name in
// /sys/class/tty/console/active is the preferred console, e.g. ttyS0), or
// returns nil.
func consoleTTY() *os.File {
	b, err := os.ReadFile("/sys/class/tty/console/active")
	if err != nil {
		return nil
	}
	names := strings.Fields(string(b))
	if len(names) == 0 || strings.ContainsAny(names[len(names)-1], "/.") {
		return nil
	}
	f, err := os.OpenFile("/dev/"+names[len(names)-1], os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return nil
	}
	if _, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS); err != nil {
		f.Close()
		return nil
	}
	return f
}

// run starts argv with stdio as its stdin/stdout/stderr and returns its exit
// code.
func run(console io.Writer, stdio *os.File, attr *syscall.SysProcAttr, argv []string) int {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdio, stdio, stdio
	cmd.SysProcAttr = attr
	cmd.Env = append(os.Environ(), "PATH=/bin:/sbin:/usr/bin:/usr/sbin:/bbin:/ubin")
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(console, "guest-init: start %q: %v\n", argv, err)
		return 127
	}
	err := cmd.Wait()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ee.ExitCode()
	default:
		fmt.Fprintf(console, "guest-init: wait %q: %v\n", argv, err)
		return 127
	}
}
