package net

import (
	"errors"
	"fmt"
	stdnet "net"
	"os"

	"golang.org/x/sys/unix"
)

// TUN offload flags (linux/if_tun.h).
const (
	tunFCsum = unix.TUN_F_CSUM
	tunFTSO4 = unix.TUN_F_TSO4
	tunFTSO6 = unix.TUN_F_TSO6
	tunFECN  = unix.TUN_F_TSO_ECN
)

// ErrNoTAP is returned when the named TAP interface does not exist.
var ErrNoTAP = errors.New("TAP interface does not exist")

// openTAP attaches to an existing TAP interface by name. It refuses to
// create one: TUNSETIFF on an unknown name would silently make a new
// interface nobody configured.
func openTAP(name string) (*os.File, error) {
	if len(name) >= unix.IFNAMSIZ {
		return nil, fmt.Errorf("TAP name %q longer than %d bytes", name, unix.IFNAMSIZ-1)
	}
	if _, err := stdnet.InterfaceByName(name); err != nil {
		return nil, fmt.Errorf("%w: %q (create it with `ip tuntap add dev %s mode tap`): %v", ErrNoTAP, name, name, err)
	}
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/net/tun: %w", os.NewSyscallError("open", err))
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("TAP %q: %w", name, err)
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("attach to TAP %q (is it a tap device, not tun, and free?): %w", name, os.NewSyscallError("ioctl(TUNSETIFF)", err))
	}
	return os.NewFile(uintptr(fd), "tap:"+name), nil
}

// setupTAP checks an open TAP file and sets the vnet header size.
func setupTAP(fd int) error {
	ifr, err := unix.NewIfreq("")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.TUNGETIFF, ifr); err != nil {
		return fmt.Errorf("not a TAP file descriptor: %w", os.NewSyscallError("ioctl(TUNGETIFF)", err))
	}
	fl := ifr.Uint16()
	if fl&unix.IFF_TAP == 0 || fl&unix.IFF_VNET_HDR == 0 || fl&unix.IFF_NO_PI == 0 {
		return fmt.Errorf("TAP %q flags %#x lack IFF_TAP|IFF_NO_PI|IFF_VNET_HDR", ifr.Name(), fl)
	}
	if err := unix.IoctlSetPointerInt(fd, unix.TUNSETVNETHDRSZ, HeaderSize); err != nil {
		return fmt.Errorf("TAP %q: %w", ifr.Name(), os.NewSyscallError("ioctl(TUNSETVNETHDRSZ)", err))
	}
	return nil
}

func setOffload(fd int, flags int) error {
	if err := unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, flags); err != nil {
		return os.NewSyscallError("ioctl(TUNSETOFFLOAD)", err)
	}
	return nil
}
