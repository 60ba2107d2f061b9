package main

import (
	"bufio"
	"fmt"
	"hash/crc32"
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
	if d := c.ddRead; d != nil {
		n, took, sum, err := ddRead(d.dev, d.mib)
		if err != nil {
			report(console, "ddread %s: %d bytes, err %v", d.dev, n, err)
		} else {
			report(console, "ddread %s: %d bytes in %.6fs: %.1f MiB/s crc32 %08x", d.dev, n, took.Seconds(),
				float64(n)/(1<<20)/took.Seconds(), sum)
		}
	}
}

// ddRead reads mib MiB from the start of dev with O_DIRECT (no page cache:
// every byte crosses the device) in 1 MiB requests from an aligned buffer.
func ddRead(dev string, mib int) (int64, time.Duration, uint32, error) {
	fd, err := unix.Open(dev, unix.O_RDONLY|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, 0, 0, err
	}
	defer unix.Close(fd)
	buf, err := unix.Mmap(-1, 0, 1<<20, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return 0, 0, 0, err
	}
	defer unix.Munmap(buf)
	var total int64
	var sum uint32
	start := time.Now()
	for i := 0; i < mib; i++ {
		n, err := unix.Read(fd, buf)
		if n > 0 {
			sum = crc32.Update(sum, crc32.IEEETable, buf[:n])
			total += int64(n)
		}
		if err != nil {
			return total, time.Since(start), sum, err
		}
		if n < len(buf) {
			return total, time.Since(start), sum, fmt.Errorf("short read at %d bytes (device smaller than %d MiB?)", total, mib)
		}
	}
	return total, time.Since(start), sum, nil
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
