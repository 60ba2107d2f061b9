package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// report prints one check's marker line.
func report(console io.Writer, format string, args ...any) {
	fmt.Fprintf(console, "VMM-GUEST-INIT: "+format+"\n", args...)
}

// runChecks runs what c asks for, in the order of the checks type.
func runChecks(console io.Writer, c checks) {
	if c.sleep > 0 {
		wall0 := time.Now().Round(0) // wall clock only
		mono0 := time.Now()
		time.Sleep(c.sleep)
		mono := time.Since(mono0)
		wall1 := time.Now().Round(0)
		report(console, "sleep %v: monotonic %.3fs realtime %.3fs epoch %.3f", c.sleep, mono.Seconds(),
			wall1.Sub(wall0).Seconds(), float64(wall1.UnixNano())/1e9)
	}
	if m := c.mount; m != nil {
		err := os.MkdirAll(m.dir, 0o755)
		if err == nil {
			err = unix.Mount(m.dev, m.dir, m.fstype, unix.MS_RDONLY, "")
		}
		if err != nil {
			report(console, "mount %s on %s (%s): %v", m.dev, m.dir, m.fstype, err)
		} else {
			report(console, "mount %s on %s (%s): ok", m.dev, m.dir, m.fstype)
		}
	}
	if c.cat != "" {
		b, err := os.ReadFile(c.cat)
		if err != nil {
			report(console, "cat %s: %v", c.cat, err)
		} else {
			report(console, "cat %s: %q", c.cat, b)
		}
	}
	var wg sync.WaitGroup
	if c.portEcho != "" {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, err := portEcho(c.portEcho)
			report(console, "portecho %s: %d bytes, err %v", c.portEcho, n, err)
		}()
	}
	if c.vsockEcho != 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, err := vsockEcho(c.vsockEcho)
			report(console, "vsockecho %d: %d bytes, err %v", c.vsockEcho, n, err)
		}()
	}
	wg.Wait()
}

// echoOnce reads a line from rw and writes back echoReply; it returns the
// bytes written.
func echoOnce(rw io.ReadWriter) (int, error) {
	line, err := bufio.NewReader(rw).ReadString('\n')
	if err != nil {
		return 0, fmt.Errorf("read: %w", err)
	}
	return io.WriteString(rw, echoReply(strings.TrimSuffix(line, "\n")))
}

// portEcho finds the virtio-console port by name in sysfs (no udev here to
// make /dev/virtio-ports/<name>) and echoes one line on it.
func portEcho(name string) (int, error) {
	deadline := time.Now().Add(echoTimeout)
	for {
		ms, _ := filepath.Glob("/sys/class/virtio-ports/*/name")
		for _, m := range ms {
			if b, err := os.ReadFile(m); err == nil && strings.TrimSpace(string(b)) == name {
				dev := "/dev/" + filepath.Base(filepath.Dir(m))
				f, err := os.OpenFile(dev, os.O_RDWR, 0)
				if err != nil {
					return 0, err
				}
				defer f.Close()
				done := make(chan struct{})
				defer close(done)
				go func() {
					select {
					case <-done:
					case <-time.After(time.Until(deadline)):
						f.Close() // unblocks the read
					}
				}()
				return echoOnce(f)
			}
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("no virtio-console port named %q after %v", name, echoTimeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// vsockEcho accepts one AF_VSOCK stream on port and echoes one line on it.
func vsockEcho(port uint32) (int, error) {
	fd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, os.NewSyscallError("socket", err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrVM{CID: unix.VMADDR_CID_ANY, Port: port}); err != nil {
		return 0, os.NewSyscallError("bind", err)
	}
	if err := unix.Listen(fd, 1); err != nil {
		return 0, os.NewSyscallError("listen", err)
	}
	tv := unix.NsecToTimeval(echoTimeout.Nanoseconds())
	// SO_RCVTIMEO bounds accept as well as reads.
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	c, _, err := unix.Accept(fd)
	if err != nil {
		return 0, os.NewSyscallError("accept", err)
	}
	_ = unix.SetsockoptTimeval(c, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	f := os.NewFile(uintptr(c), "vsock")
	defer f.Close()
	return echoOnce(f)
}
