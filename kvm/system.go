package kvm

import (
	"errors"
	"fmt"
	"io/fs"
	"sync"

	"golang.org/x/sys/unix"
)

// System is an open KVM device (/dev/kvm): the system-wide ioctls and the
// factory of VMs. Its methods are safe for concurrent use.
type System struct {
	path string

	mu sync.RWMutex
	fd int // -1 once closed
}

// Open opens the KVM device at path (DefaultPath if empty) and checks that
// it speaks API version 12. An absent device, or one with no driver, yields
// an error wrapping ErrNoKVM (and fs.ErrNotExist when the node is missing);
// a permission problem yields an error naming the device and how to fix it.
func Open(path string) (*System, error) {
	if path == "" {
		path = DefaultPath
	}
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, openError(path, err)
	}
	s := &System{path: path, fd: fd}
	v, err := s.APIVersion()
	if err != nil {
		unix.Close(fd)
		if errors.Is(err, unix.ENOTTY) || errors.Is(err, unix.EINVAL) {
			// Some other file or device: KVM_GET_API_VERSION is KVM's.
			return nil, fmt.Errorf("kvm: %s is not the KVM device (give the path of /dev/kvm, a character device 10:232): %w", path, err)
		}
		return nil, fmt.Errorf("kvm: %s: %w", path, err)
	}
	if v != APIVersion {
		unix.Close(fd)
		return nil, fmt.Errorf("%w: %s reports %d, want %d", ErrAPIVersion, path, v, APIVersion)
	}
	return s, nil
}

// openError explains why the device could not be opened.
func openError(path string, err error) error {
	perr := &fs.PathError{Op: "open", Path: path, Err: err}
	switch {
	case errors.Is(err, unix.ENOENT):
		return fmt.Errorf("%w: %s does not exist (load the module: modprobe kvm_intel or modprobe kvm_amd; "+
			"if that fails the CPU has no VT-x/AMD-V, it is off in the firmware, or this VM's host offers no nested virtualization): %w",
			ErrNoKVM, path, perr)
	case errors.Is(err, unix.ENXIO), errors.Is(err, unix.ENODEV):
		return fmt.Errorf("%w: %s has no driver (load it: modprobe kvm_intel or modprobe kvm_amd; "+
			"dmesg says why it refuses, e.g. virtualization disabled in the firmware): %w",
			ErrNoKVM, path, perr)
	case errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM):
		return fmt.Errorf("kvm: no permission to open %s read-write (add the user to the group owning it, usually \"kvm\": "+
			"sudo usermod -aG kvm $USER, then log in again; or run as root): %w",
			path, perr)
	case errors.Is(err, unix.EISDIR):
		return fmt.Errorf("%w: %s is a directory, not the KVM device (usually /dev/kvm): %w", ErrNoKVM, path, perr)
	}
	return fmt.Errorf("kvm: %w", perr)
}

// Path returns the device path the System was opened from.
func (s *System) Path() string { return s.path }

// Close closes the device. VMs created from it stay valid. Closing twice
// is safe.
func (s *System) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fd < 0 {
		return nil
	}
	err := unix.Close(s.fd)
	s.fd = -1
	if err != nil {
		return fmt.Errorf("kvm: close %s: %w", s.path, err)
	}
	return nil
}

// do runs f with the device fd held open.
func (s *System) do(f func(fd int) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.fd < 0 {
		return ErrClosed
	}
	return f(s.fd)
}

// APIVersion returns KVM_GET_API_VERSION (always 12 on a working host).
func (s *System) APIVersion() (int, error) {
	var v int
	err := s.do(func(fd int) (err error) {
		v, err = ioctl(fd, kvmGetAPIVersion, 0)
		return err
	})
	return v, err
}

// CheckExtension returns KVM_CHECK_EXTENSION(c) on the device: 0 when the
// capability is absent, otherwise 1 or a capability-specific value (a
// count, a bitmask). Prefer VM.CheckExtension for VM-type-dependent
// capabilities (guest_memfd flags, memory attributes).
func (s *System) CheckExtension(c Cap) (int, error) {
	var v int
	err := s.do(func(fd int) (err error) {
		v, err = ioctl(fd, kvmCheckExtension, uintptr(c))
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("kvm: check extension %v: %w", c, err)
	}
	return v, nil
}

// VCPUMmapSize returns KVM_GET_VCPU_MMAP_SIZE: the size of the per-vCPU
// mapping (the kvm_run page, the PIO data page and the coalesced MMIO ring).
func (s *System) VCPUMmapSize() (int, error) {
	var v int
	err := s.do(func(fd int) (err error) {
		v, err = ioctl(fd, kvmGetVCPUMmapSize, 0)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("kvm: vcpu mmap size: %w", err)
	}
	return v, nil
}

// maxCPUIDEntries bounds the KVM_GET_SUPPORTED_CPUID buffer growth
// (KVM_MAX_CPUID_ENTRIES is 256 in current kernels).
const maxCPUIDEntries = 4096

// SupportedCPUID returns KVM_GET_SUPPORTED_CPUID (api.rst 4.46): the CPUID
// leaves KVM can expose, a starting point for SetCPUID2.
func (s *System) SupportedCPUID() ([]CPUIDEntry, error) {
	var out []CPUIDEntry
	err := s.do(func(fd int) error {
		var err error
		out, err = getCPUID(fd, kvmGetSupportedCPUID)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("kvm: supported cpuid: %w", err)
	}
	return out, nil
}

// getCPUID issues a kvm_cpuid2 ioctl, growing the buffer on E2BIG.
func getCPUID(fd int, req request) ([]CPUIDEntry, error) {
	for n := 64; ; n *= 2 {
		buf := make([]byte, cpuid2HeaderSize+n*cpuidEntrySize)
		le.PutUint32(buf[0:], uint32(n))
		_, err := ioctlBuf(fd, req, buf)
		if errors.Is(err, unix.E2BIG) && n < maxCPUIDEntries {
			continue
		}
		if err != nil {
			return nil, err
		}
		got := int(le.Uint32(buf[0:]))
		if got > n {
			return nil, fmt.Errorf("%v returned %d entries for a buffer of %d", req, got, n)
		}
		out := make([]CPUIDEntry, got)
		if _, err := decodeLE(buf[cpuid2HeaderSize:cpuid2HeaderSize+got*cpuidEntrySize], out); err != nil {
			return nil, err
		}
		return out, nil
	}
}

// MSRIndexList returns KVM_GET_MSR_INDEX_LIST: the MSRs that KVM_GET_MSRS
// and KVM_SET_MSRS support (api.rst 4.3).
func (s *System) MSRIndexList() ([]uint32, error) {
	var out []uint32
	err := s.do(func(fd int) (err error) {
		out, err = msrList(fd, kvmGetMSRIndexList)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("kvm: msr index list: %w", err)
	}
	return out, nil
}

// MSRFeatureIndexList returns KVM_GET_MSR_FEATURE_INDEX_LIST: the
// feature MSRs (e.g. ARCH_CAPABILITIES) whose values KVM reports.
func (s *System) MSRFeatureIndexList() ([]uint32, error) {
	var out []uint32
	err := s.do(func(fd int) (err error) {
		out, err = msrList(fd, kvmGetMSRFeatureIdxList)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("kvm: msr feature index list: %w", err)
	}
	return out, nil
}

// msrList issues a struct kvm_msr_list ioctl. The kernel writes the
// required count into nmsrs and fails with E2BIG when the buffer is too
// small, so the first call asks with nmsrs = 0 and the retry (bounded)
// uses the count it reported.
func msrList(fd int, req request) ([]uint32, error) {
	n := 0
	for range 4 {
		buf := make([]byte, msrListHeaderSize+4*n)
		le.PutUint32(buf, uint32(n))
		_, err := ioctlBuf(fd, req, buf)
		got := int(le.Uint32(buf))
		if errors.Is(err, unix.E2BIG) && got > n && got <= 1<<16 {
			n = got
			continue
		}
		if err != nil {
			return nil, err
		}
		if got > n {
			return nil, fmt.Errorf("%v returned %d indices for a buffer of %d", req, got, n)
		}
		out := make([]uint32, got)
		for i := range out {
			out[i] = le.Uint32(buf[msrListHeaderSize+4*i:])
		}
		return out, nil
	}
	return nil, fmt.Errorf("%v: list size kept changing", req)
}

// createVMRetries bounds the EINTR retry of KVM_CREATE_VM. The ioctl can
// be interrupted while KVM sets up the VM (e.g. a signal during the MMU
// notifier registration); retrying is what the kernel selftests and QEMU do.
const createVMRetries = 8

// CreateVM creates a VM of type t (KVM_CREATE_VM, api.rst 4.2), retrying
// a bounded number of times on EINTR.
func (s *System) CreateVM(t VMType) (*VM, error) {
	var vm *VM
	err := s.do(func(fd int) error {
		mmapSize, err := ioctl(fd, kvmGetVCPUMmapSize, 0)
		if err != nil {
			return err
		}
		var vmfd int
		for i := 0; ; i++ {
			vmfd, err = ioctl(fd, kvmCreateVM, uintptr(t))
			if errors.Is(err, unix.EINTR) && i < createVMRetries {
				continue
			}
			break
		}
		if err != nil {
			return err
		}
		vm = &VM{fd: vmfd, typ: t, mmapSize: mmapSize}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("kvm: create vm (%v): %w", t, err)
	}
	return vm, nil
}
