package main

import (
	"errors"
	"flag"
	"fmt"
	"strings"
)

// qemuFlags accepts the QEMU spellings a QEMU user types next (docs/cli.md
// has the table): each one sets the native flag it means, or is accepted
// with a note when it asks for what vmm does anyway, or is refused with the
// native spelling. The notes are logged once the logger exists.
type qemuFlags struct {
	notes []string
	// pending -device entries that refer to a -netdev or -drive id; they
	// are resolved in finish, whatever the order on the command line.
	devices []string
	netdevs map[string]netSpec
	drives  map[string]diskSpec
	used    map[string]bool
	gdbWait bool // -S was given
}

// qemuFlagNames are the flags qemuFlags registers (listed apart in --help
// and never written to a --config file: they set the native flags).
var qemuFlagNames = map[string]bool{
	"nographic": true, "enable-kvm": true, "accel": true, "serial": true, "M": true, "machine": true,
	"cpu": true, "s": true, "S": true, "drive": true, "netdev": true, "device": true,
}

func (q *qemuFlags) register(fs *flag.FlagSet, b *bootFlags) {
	q.netdevs, q.drives, q.used = map[string]netSpec{}, map[string]diskSpec{}, map[string]bool{}
	note := func(format string, a ...any) { q.notes = append(q.notes, fmt.Sprintf(format, a...)) }
	fs.BoolFunc("nographic", "QEMU: accepted; vmm has no display, the serial console is on stdio already", func(string) error {
		note("-nographic: vmm has no display; the serial console is on stdio (the default, --console stdio)")
		return nil
	})
	fs.BoolFunc("enable-kvm", "QEMU: accepted; vmm always runs on KVM", func(string) error {
		note("-enable-kvm: vmm always runs on KVM (--kvm PATH names the device)")
		return nil
	})
	fs.Func("accel", "QEMU: `kvm` accepted (vmm always runs on KVM); others refused", func(v string) error {
		if kind, _, _ := strings.Cut(v, ","); kind != "kvm" {
			return fmt.Errorf("%q: vmm runs on KVM only", v)
		}
		note("-accel kvm: vmm always runs on KVM")
		return nil
	})
	fs.Func("serial", "QEMU: `stdio`, mon:stdio, none, null or file:PATH = --console (Cloud Hypervisor's tty, off, file=PATH too)", func(v string) error {
		switch {
		case v == "stdio" || v == "mon:stdio":
			b.console = "stdio"
			if v == "mon:stdio" {
				note("-serial mon:stdio: vmm has no monitor; Ctrl-A h lists the console escapes, --control-socket serves pause/resume/stop")
			}
		case v == "tty": // Cloud Hypervisor's --serial tty
			b.console = "stdio"
		case v == "none" || v == "null" || v == "off":
			b.console = "none"
		case strings.HasPrefix(v, "file:"):
			b.console = v
		case strings.HasPrefix(v, "file="): // Cloud Hypervisor's --serial file=PATH
			b.console = "file:" + strings.TrimPrefix(v, "file=")
		default:
			return fmt.Errorf("%q: vmm's serial console is --console stdio, none or file:PATH", v)
		}
		return nil
	})
	machine := func(v string) error {
		typ, opts, _ := strings.Cut(v, ",")
		typ = strings.TrimPrefix(typ, "type=")
		switch {
		case typ == "microvm" || typ == "q35" || typ == "pc" || strings.HasPrefix(typ, "pc-"):
		default:
			return fmt.Errorf("%q: vmm has one machine type (microvm-like: no firmware, ACPI, PCI virtio, 8250 serial); -M microvm, q35 or pc are accepted", v)
		}
		if opts != "" {
			note("-M %s: vmm has one machine type; the options %q are ignored", v, opts)
		} else {
			note("-M %s: vmm has one machine type (microvm-like: no firmware, ACPI, PCI virtio, 8250 serial)", typ)
		}
		return nil
	}
	fs.Func("M", "QEMU: `microvm`, q35 or pc accepted with a note (vmm has one machine type)", machine)
	fs.Func("machine", "QEMU: alias of -M", machine)
	fs.Func("cpu", "QEMU: `host` or max accepted (= --cpu-profile auto: the host's CPUID, minus what an emulating host cannot run)", func(v string) error {
		model, _, _ := strings.Cut(v, ",")
		if model != "host" && model != "max" {
			return fmt.Errorf("%q: vmm has no CPU models; --cpu-profile auto (the host's CPU), host or emulated", v)
		}
		b.profile = "auto"
		note("-cpu %s: the guest sees the host's CPUID (--cpu-profile auto; it hides only what this host cannot run in the guest)", v)
		return nil
	})
	fs.BoolFunc("s", "QEMU: = --gdb tcp:127.0.0.1:1234 (localhost only, where QEMU listens on every interface)", func(string) error {
		b.mf.gdb = "tcp:127.0.0.1:1234"
		return nil
	})
	fs.BoolFunc("S", "QEMU: = --gdb-wait (needs -s or --gdb: the vCPUs start when gdb continues)", func(string) error {
		b.mf.gdbWait, q.gdbWait = true, true
		return nil
	})
	fs.Func("drive", "QEMU: `file=PATH,if=virtio[,readonly=on][,format=raw]` = --disk PATH[,readonly]; if=none,id=ID with -device virtio-blk-pci,drive=ID", func(v string) error {
		d, id, iface, err := parseQEMUDrive(v, note)
		if err != nil {
			return err
		}
		if iface == "none" {
			if id == "" {
				return errors.New("if=none needs id=ID (and -device virtio-blk-pci,drive=ID)")
			}
			return putID(q.drives, id, d)
		}
		b.df.disks = append(b.df.disks, d)
		return nil
	})
	fs.Func("netdev", "QEMU: `tap,id=ID,ifname=TAP` (or fd=N) with -device virtio-net-pci,netdev=ID[,mac=MAC] = --net tap=TAP[,mac=MAC]", func(v string) error {
		kind, rest, _ := strings.Cut(v, ",")
		if kind != "tap" {
			if kind == "user" {
				return errors.New("user: vmm has no user-mode networking; use a TAP: -netdev tap,id=n0,ifname=tap0 or --net tap=tap0 (docs/devices.md)")
			}
			return fmt.Errorf("%q: vmm supports tap only (--net tap=NAME, docs/devices.md)", kind)
		}
		n := netSpec{fd: -1}
		var id string
		for _, kv := range strings.Split(rest, ",") {
			k, val, _ := strings.Cut(kv, "=")
			switch k {
			case "id":
				id = val
			case "ifname":
				n.tap = val
			case "fd":
				s, err := parseNet("fd=" + val)
				if err != nil {
					return err
				}
				n.fd = s.fd
			case "script", "downscript":
				if val != "no" {
					return fmt.Errorf("%s=%s: vmm runs no scripts; create the TAP beforehand and give %s=no", k, val, k)
				}
			case "vhost":
				note("-netdev %s: vhost=%s ignored (vmm's virtio-net runs in the VMM)", v, val)
			default:
				return fmt.Errorf("unknown option %q (vmm takes id=, ifname= or fd=)", k)
			}
		}
		if id == "" {
			return errors.New("needs id=ID (named by -device virtio-net-pci,netdev=ID)")
		}
		return putID(q.netdevs, id, n)
	})
	fs.Func("device", "QEMU: `virtio-rng-pci` = --rng; virtio-net-pci,netdev=ID[,mac=MAC]; virtio-blk-pci,drive=ID", func(v string) error {
		drv, _, _ := strings.Cut(v, ",")
		switch strings.TrimSuffix(strings.TrimSuffix(drv, "-pci"), "-device") {
		case "virtio-rng":
			b.df.rng = true
			return nil
		case "virtio-net", "virtio-blk":
			q.devices = append(q.devices, v)
			return nil
		case "virtio-serial", "virtconsole", "virtserialport":
			return fmt.Errorf("%q: use --virtio-console (hvc0 on stdio) or --console-port name=NAME,path=PATH", drv)
		case "vhost-vsock":
			return fmt.Errorf("%q: use --vsock cid=N,path=PATH (the host side is a unix socket, as in Firecracker)", drv)
		}
		return fmt.Errorf("%q: vmm's devices are virtio-blk, -net, -rng, -console and -vsock (docs/devices.md)", drv)
	})
}

// putID records v under a -drive or -netdev id, refusing a second one.
func putID[T any](m map[string]T, id string, v T) error {
	if _, dup := m[id]; dup {
		return fmt.Errorf("id=%s given twice", id)
	}
	m[id] = v
	return nil
}

// parseQEMUDrive reads a -drive value; iface is "virtio" or "none".
func parseQEMUDrive(v string, note func(string, ...any)) (d diskSpec, id, iface string, err error) {
	for _, kv := range strings.Split(v, ",") {
		k, val, _ := strings.Cut(kv, "=")
		switch k {
		case "file":
			d.path = val
		case "if":
			iface = val
		case "id":
			id = val
		case "format":
			if val != "raw" {
				return d, "", "", fmt.Errorf("format=%s: vmm's disks are raw images (convert it: qemu-img convert -O raw IN OUT)", val)
			}
		case "readonly":
			d.readOnly = val == "" || val == "on" || val == "true"
		case "serial":
			d.serial = val
		case "media":
			if val != "disk" {
				return d, "", "", fmt.Errorf("media=%s: vmm has disks only", val)
			}
		case "cache", "aio", "discard", "detect-zeroes":
			note("-drive %s: %s=%s ignored", v, k, val)
		default:
			return d, "", "", fmt.Errorf("unknown option %q (vmm takes file=, if=, id=, format=raw, readonly=, serial=)", k)
		}
	}
	switch iface {
	case "virtio", "none":
	case "":
		return d, "", "", errors.New("add if=virtio: vmm's disks are virtio-blk (QEMU's default is IDE)")
	default:
		return d, "", "", fmt.Errorf("if=%s: vmm's disks are virtio-blk: if=virtio (= --disk PATH)", iface)
	}
	if d.path == "" {
		return d, "", "", errors.New("needs file=PATH")
	}
	// Same checks as --disk.
	s := d.path
	if d.readOnly {
		s += ",readonly"
	}
	if d.serial != "" {
		s += ",serial=" + d.serial
	}
	if _, err := parseDisk(s); err != nil {
		return d, "", "", err
	}
	return d, id, iface, nil
}

// finish resolves the -device entries that name a -netdev or -drive.
func (q *qemuFlags) finish(b *bootFlags) error {
	for _, v := range q.devices {
		drv, rest, _ := strings.Cut(v, ",")
		var ref, mac string
		for _, kv := range strings.Split(rest, ",") {
			k, val, _ := strings.Cut(kv, "=")
			switch k {
			case "netdev", "drive":
				ref = val
			case "mac":
				mac = val
			case "", "id", "bus", "addr":
			default:
				return usagef("-device %s: unknown option %q", v, k)
			}
		}
		if strings.HasPrefix(drv, "virtio-net") {
			n, ok := q.netdevs[ref]
			if !ok {
				return usagef("-device %s: no -netdev with id=%s", v, ref)
			}
			q.used["netdev:"+ref] = true
			s := fmt.Sprintf("tap=%s", n.tap)
			if n.fd >= 0 {
				s = fmt.Sprintf("fd=%d", n.fd)
			}
			if mac != "" {
				s += ",mac=" + mac
			}
			ns, err := parseNet(s)
			if err != nil {
				return usagef("-device %s: %v", v, err)
			}
			b.df.nets = append(b.df.nets, ns)
			continue
		}
		d, ok := q.drives[ref]
		if !ok {
			return usagef("-device %s: no -drive with if=none,id=%s", v, ref)
		}
		q.used["drive:"+ref] = true
		b.df.disks = append(b.df.disks, d)
	}
	for id := range q.netdevs {
		if !q.used["netdev:"+id] {
			return usagef("-netdev id=%s: add -device virtio-net-pci,netdev=%s (or use --net tap=NAME)", id, id)
		}
	}
	for id := range q.drives {
		if !q.used["drive:"+id] {
			return usagef("-drive id=%s,if=none: add -device virtio-blk-pci,drive=%s (or use -drive file=PATH,if=virtio)", id, id)
		}
	}
	if q.gdbWait && b.mf.gdb == "" {
		return usagef("-S waits for gdb: add -s (gdb on tcp:127.0.0.1:1234) or --gdb ADDR")
	}
	return nil
}
