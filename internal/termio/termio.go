package termio

import (
	"errors"
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// IsTerminal reports whether fd is a terminal.
func IsTerminal(fd int) bool {
	_, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	return err == nil
}

// MakeRaw puts the terminal fd into raw mode and returns a function that
// restores the previous mode; restore may be called more than once and
// from any goroutine (a signal handler path and a deferred call, say).
// When fd is not a terminal MakeRaw does nothing and restore is a no-op.
func MakeRaw(fd int) (restore func() error, err error) {
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		if errors.Is(err, unix.ENOTTY) || errors.Is(err, unix.EINVAL) {
			return func() error { return nil }, nil
		}
		return nil, fmt.Errorf("termio: get terminal mode of fd %d: %w", fd, os.NewSyscallError("ioctl(TCGETS)", err))
	}
	raw := *old
	// cfmakeraw, keeping OPOST (see doc.go).
	raw.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	raw.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	raw.Cflag &^= unix.CSIZE | unix.PARENB
	raw.Cflag |= unix.CS8
	raw.Cc[unix.VMIN] = 1
	raw.Cc[unix.VTIME] = 0
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &raw); err != nil {
		return nil, fmt.Errorf("termio: set raw mode on fd %d: %w", fd, os.NewSyscallError("ioctl(TCSETS)", err))
	}
	var once sync.Once
	var rerr error
	return func() error {
		once.Do(func() {
			if err := unix.IoctlSetTermios(fd, unix.TCSETS, old); err != nil {
				rerr = fmt.Errorf("termio: restore terminal mode of fd %d: %w", fd, os.NewSyscallError("ioctl(TCSETS)", err))
			}
		})
		return rerr
	}, nil
}
