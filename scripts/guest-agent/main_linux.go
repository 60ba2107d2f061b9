package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"

	"github.com/vmmgo/vmm/vmm/vmtest/proto"
	"golang.org/x/sys/unix"
)

func main() {
	console := io.Writer(os.Stdout)
	if os.Getpid() == 1 {
		for _, m := range []struct{ src, dst, fs string }{
			{"proc", "/proc", "proc"}, {"sysfs", "/sys", "sysfs"},
			{"devtmpfs", "/dev", "devtmpfs"}, {"tmpfs", "/tmp", "tmpfs"},
		} {
			_ = os.MkdirAll(m.dst, 0o755)
			if err := unix.Mount(m.src, m.dst, m.fs, 0, ""); err != nil && !errors.Is(err, unix.EBUSY) {
				fmt.Fprintf(console, "guest-agent: mount %s: %v\n", m.dst, err)
			}
		}
		if f, err := os.OpenFile("/dev/console", os.O_WRONLY, 0); err == nil {
			console = f
		}
	}
	var mu sync.Mutex
	emit := func(s string) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintln(console, s)
	}
	emit(proto.Begin + proto.Version)
	code := run(emit)
	emit(proto.FormatResult(code))
	if os.Getpid() != 1 {
		os.Exit(code & 0xff)
	}
	unix.Sync()
	err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	fmt.Fprintf(console, "guest-agent: power off: %v\n", os.NewSyscallError("reboot", err))
	os.Exit(1)
}

// run starts the test binary, frames its output and returns its exit code.
func run(emit func(string)) int {
	var args []string
	if b, err := os.ReadFile(proto.ArgsFile); err == nil {
		for _, a := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
			if a != "" {
				args = append(args, a)
			}
		}
	}
	r, w, err := os.Pipe()
	if err != nil {
		emit(proto.Out + "guest-agent: pipe: " + err.Error())
		return 127
	}
	cmd := exec.Command(proto.TestBinary, args...)
	cmd.Dir = "/vmtest"
	cmd.Stdout, cmd.Stderr = w, w
	cmd.Env = append(os.Environ(), proto.InGuestEnv+"=1", "PATH=/bin:/sbin:/usr/bin:/usr/sbin:/bbin", "HOME=/tmp", "TMPDIR=/tmp")
	if err := cmd.Start(); err != nil {
		w.Close()
		r.Close()
		emit(proto.Out + "guest-agent: start test binary: " + err.Error())
		return 127
	}
	w.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		s := bufio.NewScanner(r)
		s.Buffer(make([]byte, 64<<10), 1<<20)
		for s.Scan() {
			emit(proto.Out + s.Text())
		}
	}()
	err = cmd.Wait()
	<-done
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ee.ExitCode()
	}
	emit(proto.Out + "guest-agent: wait: " + err.Error())
	return 127
}
