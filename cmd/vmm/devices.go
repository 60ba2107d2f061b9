package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	stdnet "net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/vmmgo/vmm/virtio"
	"github.com/vmmgo/vmm/virtio/blk"
	"github.com/vmmgo/vmm/virtio/console"
	vnet "github.com/vmmgo/vmm/virtio/net"
	"github.com/vmmgo/vmm/virtio/rng"
	"github.com/vmmgo/vmm/virtio/vsock"
	"github.com/vmmgo/vmm/vmm"
)

// deviceFlags are the virtio device flags of `vmm boot` (docs/devices.md).
// Syntax errors are usage errors (exit 2), reported by the flag package;
// what can only be checked against the host (files, TAPs, sockets) fails in
// open, before the machine is created (exit 1).
type deviceFlags struct {
	disks         []diskSpec
	nets          []netSpec
	rng           bool
	vsock         *vsockSpec
	virtioConsole bool
	ports         []portSpec
}

type diskSpec struct {
	path     string
	readOnly bool
	serial   string
}

type netSpec struct {
	tap string
	fd  int // -1: none
	mac stdnet.HardwareAddr
}

type vsockSpec struct {
	cid  uint64
	path string
}

type portSpec struct {
	name, path string
}

func (f *deviceFlags) register(fset *flag.FlagSet) {
	fset.Func("disk", "virtio-blk disk: `path[,readonly][,serial=ID]` (repeatable; the first is /dev/vda)", func(s string) error {
		d, err := parseDisk(s)
		if err != nil {
			return err
		}
		f.disks = append(f.disks, d)
		return nil
	})
	fset.Func("net", "virtio-net on a TAP: `tap=NAME[,mac=MAC]` or fd=N[,mac=MAC] (an open TAP descriptor; repeatable)", func(s string) error {
		n, err := parseNet(s)
		if err != nil {
			return err
		}
		f.nets = append(f.nets, n)
		return nil
	})
	fset.BoolVar(&f.rng, "rng", false, "virtio-rng entropy device (fed from the host's getrandom)")
	fset.Func("vsock", "virtio-vsock: `cid=N,path=PATH` (host connects to the unix socket PATH; guest connections to port P go to PATH_P)", func(s string) error {
		if f.vsock != nil {
			return errors.New("given twice (one vsock device per machine)")
		}
		v, err := parseVsock(s)
		if err != nil {
			return err
		}
		f.vsock = &v
		return nil
	})
	fset.BoolVar(&f.virtioConsole, "virtio-console", false, "virtio console: hvc0 on stdout, stdin goes to hvc0 instead of the serial port (add console=hvc0 to --cmdline for kernel messages)")
	fset.Func("console-port", "named virtio-console port: `name=NAME,path=PATH` (a unix socket the VMM listens on; the guest sees /dev/vport0pN named NAME; repeatable)", func(s string) error {
		p, err := parsePort(s)
		if err != nil {
			return err
		}
		f.ports = append(f.ports, p)
		return nil
	})
}

// splitOpts splits "a,b=c,d" into a leading bare word (if any) and key=value
// options; bare words after the first are flags (value "").
func splitOpts(s string) (first string, opts []([2]string), err error) {
	if s == "" {
		return "", nil, errors.New("empty value")
	}
	for i, part := range strings.Split(s, ",") {
		k, v, hasEq := strings.Cut(part, "=")
		switch {
		case part == "":
			return "", nil, fmt.Errorf("empty option in %q", s)
		case i == 0 && !hasEq:
			first = part
		default:
			if hasEq && v == "" {
				return "", nil, fmt.Errorf("option %q has an empty value", k)
			}
			opts = append(opts, [2]string{k, v})
		}
	}
	return first, opts, nil
}

func parseDisk(s string) (diskSpec, error) {
	first, opts, err := splitOpts(s)
	if err != nil {
		return diskSpec{}, err
	}
	d := diskSpec{path: first}
	for _, o := range opts {
		switch o[0] {
		case "path":
			if d.path != "" {
				return d, errors.New("path given twice")
			}
			d.path = o[1]
		case "readonly", "ro":
			if o[1] != "" && o[1] != "on" && o[1] != "true" {
				return d, fmt.Errorf("%s takes no value", o[0])
			}
			d.readOnly = true
		case "serial":
			if len(o[1]) > 20 {
				return d, fmt.Errorf("serial %q is longer than 20 bytes (virtio 1.2 §5.2.6: VIRTIO_BLK_ID_BYTES)", o[1])
			}
			d.serial = o[1]
		default:
			return d, fmt.Errorf("unknown option %q (want readonly, serial=ID)", o[0])
		}
	}
	if d.path == "" {
		return d, errors.New("no image path")
	}
	return d, nil
}

func parseNet(s string) (netSpec, error) {
	first, opts, err := splitOpts(s)
	if err != nil {
		return netSpec{fd: -1}, err
	}
	n := netSpec{fd: -1}
	if first != "" {
		return n, fmt.Errorf("%q: want tap=NAME or fd=N", first)
	}
	for _, o := range opts {
		switch o[0] {
		case "tap":
			if len(o[1]) >= unix.IFNAMSIZ {
				return n, fmt.Errorf("TAP name %q is longer than %d bytes", o[1], unix.IFNAMSIZ-1)
			}
			n.tap = o[1]
		case "fd":
			fd, err := strconv.Atoi(o[1])
			if err != nil || fd < 0 {
				return n, fmt.Errorf("fd=%s: want a file descriptor number", o[1])
			}
			n.fd = fd
		case "mac":
			mac, err := stdnet.ParseMAC(o[1])
			if err != nil || len(mac) != 6 {
				return n, fmt.Errorf("mac=%s: want six hex bytes like 52:54:00:12:34:56", o[1])
			}
			if mac[0]&1 != 0 {
				return n, fmt.Errorf("mac=%s is a multicast address", o[1])
			}
			n.mac = mac
		default:
			return n, fmt.Errorf("unknown option %q (want tap=NAME or fd=N, mac=MAC)", o[0])
		}
	}
	if (n.tap == "") == (n.fd < 0) {
		return n, errors.New("give exactly one of tap=NAME and fd=N")
	}
	return n, nil
}

func parseVsock(s string) (vsockSpec, error) {
	first, opts, err := splitOpts(s)
	if err != nil {
		return vsockSpec{}, err
	}
	if first != "" {
		return vsockSpec{}, fmt.Errorf("%q: want cid=N,path=PATH", first)
	}
	var v vsockSpec
	for _, o := range opts {
		switch o[0] {
		case "cid":
			cid, err := strconv.ParseUint(o[1], 0, 64)
			if err != nil || cid < 3 || cid > 0xffffffff {
				return v, fmt.Errorf("cid=%s: want a number from 3 to 4294967295 (0-2 are reserved)", o[1])
			}
			v.cid = cid
		case "path", "socket": // socket= is Cloud Hypervisor's name
			v.path = o[1]
		default:
			return v, fmt.Errorf("unknown option %q (want cid=N,path=PATH)", o[0])
		}
	}
	if v.cid == 0 || v.path == "" {
		return v, errors.New("want cid=N,path=PATH")
	}
	return v, nil
}

func parsePort(s string) (portSpec, error) {
	first, opts, err := splitOpts(s)
	if err != nil {
		return portSpec{}, err
	}
	if first != "" {
		return portSpec{}, fmt.Errorf("%q: want name=NAME,path=PATH", first)
	}
	var p portSpec
	for _, o := range opts {
		switch o[0] {
		case "name":
			p.name = o[1]
		case "path":
			p.path = o[1]
		default:
			return p, fmt.Errorf("unknown option %q (want name=NAME,path=PATH)", o[0])
		}
	}
	if p.name == "" || p.path == "" {
		return p, errors.New("want name=NAME,path=PATH")
	}
	return p, nil
}

// check finds what the flag syntax cannot: duplicates across flags.
func (f *deviceFlags) check() error {
	ports := map[string]bool{}
	paths := map[string]string{}
	claim := func(path, what string) error {
		abs, err := filepath.Abs(path)
		if err != nil {
			abs = path
		}
		if prev, ok := paths[abs]; ok {
			return usagef("%s: %s is already used by %s", what, path, prev)
		}
		paths[abs] = what
		return nil
	}
	for _, d := range f.disks {
		if err := claim(d.path, "--disk"); err != nil {
			return err
		}
	}
	if f.vsock != nil {
		if err := claim(f.vsock.path, "--vsock"); err != nil {
			return err
		}
	}
	for _, p := range f.ports {
		if ports[p.name] {
			return usagef("--console-port: name %q given twice", p.name)
		}
		ports[p.name] = true
		if err := claim(p.path, "--console-port "+p.name); err != nil {
			return err
		}
	}
	return nil
}

// openedDevices are the device models, ready for vmm.LinuxConfig.Devices.
type openedDevices struct {
	list []virtio.Device
	// hvcIn feeds hvc0 (nil without --virtio-console).
	hvcIn *io.PipeWriter
}

func (o *openedDevices) close() {
	for _, d := range o.list {
		d.Close()
	}
	o.list = nil
	if o.hvcIn != nil {
		o.hvcIn.Close()
	}
}

// open opens every device in a fixed order (disks, networks, rng, console,
// vsock: the PCI slot order), so that every host-side mistake is reported
// before a guest starts. On error nothing stays open.
func (f *deviceFlags) open(log *logrus.Entry, stdout io.Writer) (_ *openedDevices, err error) {
	o := &openedDevices{}
	defer func() {
		if err != nil {
			o.close()
		}
	}()
	for _, d := range f.disks {
		dev, err := blk.Open(blk.Config{Path: d.path, ReadOnly: d.readOnly, Serial: d.serial, Log: log})
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return nil, fmt.Errorf("--disk %s: no such file", d.path)
		case err != nil && !d.readOnly && (errors.Is(err, fs.ErrPermission) || errors.Is(err, unix.EROFS) || strings.Contains(err.Error(), "read-only")):
			// blk's message already says what to do; say it once, in flag terms.
			why := "not writable by this process"
			if errors.Is(err, unix.EROFS) {
				why = "on a read-only file system"
			}
			return nil, fmt.Errorf("--disk %s: the image is %s: add ,readonly to attach it read-only", d.path, why)
		case err != nil:
			return nil, fmt.Errorf("--disk %s: %w", d.path, err)
		}
		o.list = append(o.list, dev)
	}
	for _, n := range f.nets {
		cfg := vnet.Config{TAP: n.tap, MAC: n.mac, Log: log}
		what := "tap=" + n.tap
		if n.fd >= 0 {
			what = fmt.Sprintf("fd=%d", n.fd)
			if _, err := unix.FcntlInt(uintptr(n.fd), unix.F_GETFD, 0); err != nil {
				return nil, fmt.Errorf("--net %s: %w", what, os.NewSyscallError("fcntl(F_GETFD)", err))
			}
			cfg.FD = os.NewFile(uintptr(n.fd), fmt.Sprintf("fd:%d", n.fd))
		}
		dev, err := vnet.Open(cfg)
		if err != nil {
			return nil, fmt.Errorf("--net %s: %w", what, err)
		}
		o.list = append(o.list, dev)
	}
	if f.rng {
		o.list = append(o.list, rng.New(log))
	}
	if f.virtioConsole || len(f.ports) > 0 {
		cfg := console.Config{Log: log}
		if f.virtioConsole {
			var r *io.PipeReader
			r, o.hvcIn = io.Pipe()
			cfg.In, cfg.Out = r, stdout
		}
		for _, p := range f.ports {
			sp, err := listenPort(p.path)
			if err != nil {
				for _, q := range cfg.Ports {
					q.Host.Close()
				}
				return nil, fmt.Errorf("--console-port %s: %w", p.name, err)
			}
			cfg.Ports = append(cfg.Ports, console.Port{Name: p.name, Host: sp})
		}
		dev, err := console.New(cfg)
		if err != nil {
			for _, q := range cfg.Ports {
				q.Host.Close()
			}
			return nil, fmt.Errorf("--console-port: %w", err)
		}
		o.list = append(o.list, dev)
	}
	if v := f.vsock; v != nil {
		dev, err := vsock.Open(vsock.Config{GuestCID: v.cid, Path: v.path, Log: log})
		if err != nil {
			return nil, fmt.Errorf("--vsock: %w", err)
		}
		o.list = append(o.list, dev)
	}
	return o, nil
}

// socketPort is the host side of a named console port: a unix socket the
// VMM listens on. One client at a time is connected: a new client replaces
// the previous one (which is disconnected), so a client that reconnects is
// never refused because its old connection has not been noticed closed yet.
// While none is connected, guest output is dropped (counted) and reads
// wait, like a serial line with nobody on the other end.
type socketPort struct {
	ln   *stdnet.UnixListener
	path string

	mu      sync.Mutex
	cond    *sync.Cond
	conn    stdnet.Conn
	closed  bool
	dropped atomic.Uint64
}

// listenPort creates the socket at path: its directory must exist, and a
// file already there must be a stale socket (nobody accepting on it).
func listenPort(path string) (*socketPort, error) {
	if st, err := os.Stat(filepath.Dir(path)); err != nil {
		return nil, fmt.Errorf("directory of socket %s: %w", path, err)
	} else if !st.IsDir() {
		return nil, fmt.Errorf("directory of socket %s is not a directory", path)
	}
	if st, err := os.Lstat(path); err == nil {
		if st.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("%s exists and is not a socket", path)
		}
		if c, err := stdnet.Dial("unix", path); err == nil {
			c.Close()
			return nil, fmt.Errorf("socket %s is in use by another process", path)
		}
		_ = os.Remove(path) // stale socket from a previous run
	}
	ln, err := stdnet.ListenUnix("unix", &stdnet.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	p := &socketPort{ln: ln, path: path}
	p.cond = sync.NewCond(&p.mu)
	go p.accept()
	return p, nil
}

func (p *socketPort) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return // listener closed
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			c.Close()
			return
		}
		prev := p.conn
		p.conn = c
		p.cond.Broadcast()
		p.mu.Unlock()
		if prev != nil {
			prev.Close() // its pending Read fails; drop leaves the new conn alone
		}
	}
}

// drop forgets c if it is still the current connection.
func (p *socketPort) drop(c stdnet.Conn) {
	p.mu.Lock()
	if p.conn == c {
		p.conn = nil
	}
	p.mu.Unlock()
	c.Close()
}

// Read returns the next bytes from the connected client, waiting for one;
// a client's EOF is not the port's (the next client continues). It returns
// io.EOF only after Close.
func (p *socketPort) Read(b []byte) (int, error) {
	for {
		p.mu.Lock()
		for p.conn == nil && !p.closed {
			p.cond.Wait()
		}
		if p.closed {
			p.mu.Unlock()
			return 0, io.EOF
		}
		c := p.conn
		p.mu.Unlock()
		n, err := c.Read(b)
		if err != nil {
			p.drop(c)
		}
		if n > 0 {
			return n, nil
		}
	}
}

// Write sends b to the client, or drops it when none is connected.
func (p *socketPort) Write(b []byte) (int, error) {
	p.mu.Lock()
	c := p.conn
	p.mu.Unlock()
	if c == nil {
		p.dropped.Add(uint64(len(b)))
		return len(b), nil
	}
	if _, err := c.Write(b); err != nil {
		p.drop(c)
		p.dropped.Add(uint64(len(b)))
	}
	return len(b), nil
}

// Close stops listening, disconnects the client and removes the socket.
func (p *socketPort) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	c := p.conn
	p.conn = nil
	p.cond.Broadcast()
	p.mu.Unlock()
	err := p.ln.Close() // also removes the socket file (UnixListener unlinks on Close)
	if c != nil {
		c.Close()
	}
	return err
}

// printVirtioStats adds the virtio counters to --stats.
func printVirtioStats(w io.Writer, m *vmm.Machine) {
	s := m.VirtioStats()
	if s.Devices == 0 {
		return
	}
	fmt.Fprintf(w, "virtio: %d devices (%d driven), doorbells %d (%d through ioeventfds on %d queues), MSIs %d (failed %d), INTx assertions %d, BAR moves %d\r\n",
		s.Devices, s.DriverOK, s.Notifies, s.EventfdKicks, s.IOEventFDs, s.MSIs, s.MSIErrors, s.INTxAssertions, s.BARMoves)
	for _, d := range m.VirtioDevices() {
		fmt.Fprintf(w, "  %-22s slot %d status %#02x BAR %#x notifies %d interrupts %d\r\n",
			d.Name(), d.Slot(), d.Status(), d.Region().Addr, d.Stats.Notifies.Load(), d.Stats.Interrupts.Load())
	}
}
