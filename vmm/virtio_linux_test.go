package vmm

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	stdnet "net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/vmmgo/vmm/internal/hostspeed"
	"github.com/vmmgo/vmm/virtio"
	"github.com/vmmgo/vmm/virtio/blk"
	"github.com/vmmgo/vmm/virtio/console"
	vnet "github.com/vmmgo/vmm/virtio/net"
	"github.com/vmmgo/vmm/virtio/pci"
	"github.com/vmmgo/vmm/virtio/rng"
	"github.com/vmmgo/vmm/virtio/vsock"
)

// TestLinuxVirtioDevices boots the guest kernel once with every virtio
// device and checks that the kernel itself uses each of them (guest
// userspace cannot make system calls on hosts that emulate kernel mode, so
// nothing here relies on it):
//
//   - virtio-blk: the kernel sizes vda, mounts the ext4 image the test built
//     as its root file system and execs /vmm-marker from it: a 129-byte ELF
//     whose only instruction loads from an address chosen at random for
//     this run; the kernel's segfault report names that address, which it
//     can only know by reading the file's contents from the disk;
//   - virtio-net: eth0 has the MAC given, the kernel's DHCP client (ip=dhcp)
//     sends DISCOVER and REQUEST frames that the test sees on the TAP (in a
//     network namespace the test creates), and its answers reach the kernel
//     (IP-Config: Complete with the offered address);
//   - virtio-rng: the kernel's hwrng thread pulls entropy from it
//     (crng init done, bytes served);
//   - virtio-console: hvc0 becomes a kernel console (multiport: only after
//     the control-queue handshake) and the kernel's log arrives on it;
//   - virtio-vsock: a host CONNECT to a guest port nobody listens on is
//     answered by the guest kernel's transport with a reset.
//
// TestLinuxVirtioDevicesProtected runs the same scenario with
// --private-memory (linuxVirtioScenario holds the checks of both).
func TestLinuxVirtioDevices(t *testing.T) {
	linuxVirtioScenario(t, false)
}

// TestLinuxVirtioDevicesProtected is TestLinuxVirtioDevices with
// PrivateMemory (vmm boot --private-memory): all guest RAM starts private,
// every device offers VIRTIO_F_ACCESS_PLATFORM, and the project's kernel
// (protected-guest patch, docs/conversion.md) shares its swiotlb pool and
// rings in place. On top of every device check of the unprotected boot it
// asserts that the VMM never refused a driver, that private pages stay
// >= 90 % of RAM with some pages shared, that no device access was
// refused, and that the guest's own conversion report shows no failure;
// it logs the conversions (count, time) and the time to init.
func TestLinuxVirtioDevicesProtected(t *testing.T) {
	linuxVirtioScenario(t, true)
}

// linuxVirtioScenario boots the guest kernel with all five virtio devices
// (see TestLinuxVirtioDevices), protected or not, and checks each device.
func linuxVirtioScenario(t *testing.T, protected bool) {
	k, _ := guestKernel(t)
	kernel, err := os.ReadFile(k.VMLinux)
	if err != nil {
		t.Fatal(err)
	}
	if protected {
		kconfig, err := os.ReadFile(k.Config)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(kconfig), "\nCONFIG_VMMGO_PROTECTED_GUEST=y\n") {
			t.Fatalf("guest kernel %s lacks CONFIG_VMMGO_PROTECTED_GUEST=y (scripts/guest-kernel/protected.fragment): it cannot run protected", k.Config)
		}
	}
	dir := t.TempDir()
	token := uint32(0x5e000000) | rand.Uint32N(1<<20)<<4
	img := buildRootImage(t, dir, token)
	st, err := os.Stat(img)
	if err != nil {
		t.Fatal(err)
	}
	mac := stdnet.HardwareAddr{0x52, 0x54, 0x00, byte(rand.UintN(256)), byte(rand.UintN(256)), byte(rand.UintN(256))}
	tn := newTestNetwork(t)
	dhcp := startDHCPServer(t, tn.packet, "10.0.2.15", "10.0.2.2")

	blkDev, err := blk.Open(blk.Config{Path: img, Serial: "vmm-root"})
	if err != nil {
		t.Fatal(err)
	}
	netDev, err := vnet.Open(vnet.Config{FD: tn.tap, MAC: mac})
	if err != nil {
		blkDev.Close()
		t.Fatal(err)
	}
	rngDev := rng.New(nil)
	hvc := &syncBuffer{}
	conDev, err := console.New(console.Config{Out: hvc, Ports: []console.Port{{Name: "org.vmmgo.test"}}})
	if err != nil {
		t.Fatal(err)
	}
	vsockPath := filepath.Join(dir, "vsock.sock")
	vsockDev, err := vsock.Open(vsock.Config{GuestCID: 3, Path: vsockPath})
	if err != nil {
		t.Fatal(err)
	}
	devices := []virtio.Device{blkDev, netDev, rngDev, conDev, vsockDev}

	// A host program connects to guest port 1234 as soon as the guest's
	// driver has brought the vsock device up (before that the device turns
	// host connections away): the guest kernel has no listener there and
	// resets the stream.
	type vsockResult struct {
		reply string
		err   error
	}
	vsockDone := make(chan vsockResult, 1)
	vsockConnect := func(ctx context.Context, m *Machine) {
		for {
			ds := m.VirtioDevices()
			if len(ds) == 5 && ds[4].Status()&pci.StatusDriverOK != 0 {
				break
			}
			select {
			case <-ctx.Done():
				vsockDone <- vsockResult{err: errors.New("the guest never brought virtio-vsock up")}
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
		c, err := stdnet.Dial("unix", vsockPath)
		if err != nil {
			vsockDone <- vsockResult{err: err}
			return
		}
		defer c.Close()
		if _, err := io.WriteString(c, "CONNECT 1234\n"); err != nil {
			vsockDone <- vsockResult{err: err}
			return
		}
		_ = c.SetReadDeadline(time.Now().Add(time.Minute))
		b, err := io.ReadAll(c)
		vsockDone <- vsockResult{reply: string(b), err: err}
	}

	cfg := DefaultConfig()
	// 128 MiB: the kernel's memory set-up (struct pages, the buddy
	// allocator) costs emulated time in proportion to RAM.
	cfg.Memory = linuxTestMemory
	// Waits for a guest boot slot; the deadline counts from here. The
	// kernel's DHCP exchange and root mount come on top of the boot.
	// A protected boot also bounces every DMA through swiotlb and converts
	// its pool and rings.
	cost := hostspeed.LinuxBoot * 3 / 2
	var logBuf syncBuffer
	if protected {
		cost = hostspeed.LinuxBoot * 2
		cfg.PrivateMemory = true
		l := logrus.New()
		l.SetOutput(&logBuf)
		l.SetLevel(logrus.InfoLevel)
		cfg.Log = logrus.NewEntry(l)
	}
	cfg.Timeout = hostspeed.BootSlot(t, cost)
	// The time from Run to the kernel's exec of init: the boot time the
	// benchmark compares, protected vs not.
	var initAfter atomic.Int64
	var start time.Time
	con := &syncBuffer{text: "Run /vmm-marker as init process", onText: func() { initAfter.Store(int64(time.Since(start))) }}
	cfg.Console = con
	m := newOwningDevices(t, cfg, devices)
	defer m.Close()
	// console=hvc0 before the default console=ttyS0: ttyS0 stays the
	// preferred console (it retires the early serial console when it
	// registers), hvc0 gets the whole log replayed when it appears.
	cmdline := "console=hvc0 " + DefaultCmdline + " root=/dev/vda rootfstype=ext4 ro init=/vmm-marker ip=dhcp"
	if _, err := m.LoadLinux(LinuxConfig{Kernel: kernel, Cmdline: cmdline, NoDefaultCmdline: true, Devices: devices}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go vsockConnect(ctx, m)
	start = time.Now()
	res, err := m.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := con.String()
	vs := m.VirtioStats()
	t.Logf("guest ended after %v: %v (%s); virtio %+v", time.Since(start).Round(time.Millisecond), res.Outcome, res.Detail, vs)
	if d := time.Duration(initAfter.Load()); d > 0 {
		t.Logf("boot (protected %v): Run /vmm-marker after %v", protected, d.Round(time.Millisecond))
	}
	for _, d := range m.VirtioDevices() {
		t.Logf("%s slot %d status %#x bar %#x notifies %d interrupts %d MSI errors %d", d.Name(), d.Slot(), d.Status(),
			d.Region().Addr, d.Stats.Notifies.Load(), d.Stats.Interrupts.Load(), d.Stats.MSIErrors.Load())
	}
	lines := func(re string) []string {
		var out2 []string
		r := regexp.MustCompile(re)
		for _, l := range strings.Split(out, "\n") {
			if r.MatchString(l) {
				out2 = append(out2, strings.TrimSpace(l))
			}
		}
		return out2
	}
	want := func(what, re string) {
		t.Helper()
		if ls := lines(re); len(ls) == 0 {
			t.Errorf("%s: console lacks /%s/", what, re)
		} else {
			t.Logf("%s: %s", what, ls[0])
		}
	}

	// PCI and transport.
	want("virtio-pci", `virtio-pci 0000:00:01\.0: enabling device`)
	if vs.Devices != 5 || vs.DriverOK != 5 {
		t.Errorf("devices %d, DRIVER_OK %d: want all 5 driven by the guest", vs.Devices, vs.DriverOK)
	}
	if vs.MSIs == 0 || vs.MSIErrors != 0 {
		t.Errorf("MSI-X: %d sent, %d failed: want interrupts through KVM_SIGNAL_MSI", vs.MSIs, vs.MSIErrors)
	}
	if vs.IOEventFDs == 0 || vs.EventfdKicks == 0 {
		t.Errorf("ioeventfds %d, kicks through them %d: want doorbells through KVM ioeventfds", vs.IOEventFDs, vs.EventfdKicks)
	}
	// Block: size, root mount, a file read from the disk.
	sectors := st.Size() / 512
	want("virtio-blk size", fmt.Sprintf(`\[vda\] %d 512-byte logical blocks`, sectors))
	want("root mounted", `VFS: Mounted root \(ext4 filesystem\) readonly on device 254:0`)
	want("init from the disk", `Run /vmm-marker as init process`)
	want("marker executed", fmt.Sprintf(`vmm-marker\[1\]: segfault at %x ip 0*400078 `, token))
	// Network.
	want("eth0 MAC", fmt.Sprintf(`device=eth0, hwaddr=%s, ipaddr=10\.0\.2\.15, mask=255\.255\.255\.0, gw=10\.0\.2\.2`, mac))
	want("DHCP answer", `IP-Config: Got DHCP answer from 10\.0\.2\.2, my address is 10\.0\.2\.15`)
	seen := dhcp.seen()
	t.Logf("DHCP frames from the guest on the TAP: %v", seen)
	if !containsAll(seen, "DISCOVER", "REQUEST") {
		t.Errorf("DHCP messages seen on the TAP: %v, want DISCOVER and REQUEST from %s", seen, mac)
	}
	if src := dhcp.source(); !bytes.Equal(src, mac) {
		t.Errorf("DHCP frames came from %v, want the guest MAC %v", stdnet.HardwareAddr(src), mac)
	}
	// Entropy.
	want("crng", `random: crng init done`)
	if n := rngDev.Stats.Bytes.Load(); n == 0 {
		t.Errorf("virtio-rng served no bytes")
	} else {
		t.Logf("virtio-rng served %d bytes in %d requests", n, rngDev.Stats.Requests.Load())
	}
	// Console.
	want("hvc0", `printk: console \[hvc0\] enabled`)
	// Linux replays the log to a new console, but virtio_console registers
	// hvc0 before it can find the port (find_port_by_vtermno fails while
	// hvc_alloc runs), so the replay is dropped in the guest: hvc0 carries
	// what the kernel logs after it registered.
	if h := hvc.String(); !strings.Contains(h, "VFS: Mounted root (ext4 filesystem)") || !strings.Contains(h, "Run /vmm-marker as init process") {
		t.Errorf("hvc0 output (%d bytes) lacks the kernel log:\n%.2000s", len(h), h)
	} else {
		t.Logf("hvc0 carried %d bytes of kernel log", len(h))
	}
	// Vsock.
	want("vsock", `NET: Registered PF_VSOCK protocol family`)
	select {
	case r := <-vsockDone:
		if r.err != nil || r.reply != "" {
			t.Errorf("vsock CONNECT 1234: reply %q, err %v; want the stream closed without OK (guest reset)", r.reply, r.err)
		}
	case <-time.After(10 * time.Second):
		t.Errorf("vsock CONNECT 1234: no answer")
	}
	if n := vsockDev.Stats.Requests.Load(); n == 0 {
		t.Errorf("virtio-vsock: no packet from the guest")
	} else {
		t.Logf("virtio-vsock: %d packets from the guest", n)
	}
	// The end: init dies (by design), the kernel panics, pvpanic reports it.
	if res.Outcome != OutcomePanic || !strings.Contains(out, "Attempted to kill init") {
		t.Errorf("outcome %v (%s), want a panic after /vmm-marker died", res.Outcome, res.Detail)
	}
	if protected {
		checkProtectedBoot(t, m, out, logBuf.String())
	}
	if t.Failed() {
		t.Logf("console:\n%s\n%s", out, res.Dump)
		if protected {
			t.Logf("VMM log:\n%s", logBuf.String())
		}
	}
}

// checkProtectedBoot asserts what a protected boot of the project's kernel
// must leave behind: the guest announced protected mode and reported its
// boot conversions without a failure, no driver was refused for lacking the
// support, private pages are >= 90 % of RAM and some are shared (swiotlb
// pool and rings), no conversion and no device access was refused. It logs
// the conversions by transport with their time.
func checkProtectedBoot(t *testing.T, m *Machine, console, log string) {
	t.Helper()
	c := m.Conversions()
	ps := m.ConversionStats()
	var reqs, pages, refused uint64
	var spent time.Duration
	for _, ts := range []TransportStats{c.Hypercall, c.PVMemRegister, c.PVMemList, c.MemoryFault} {
		reqs += ts.Requests
		pages += ts.Pages
		refused += ts.Refused
		spent += time.Duration(ts.TimeNS)
	}
	total := ps.SharedPages + ps.PrivatePages
	t.Logf("protected boot: %d conversion requests (%d refused), %d pages changed, %v spent in the VMM; shared %d, private %d of %d pages (%.1f %% private); device accesses refused %d",
		reqs, refused, pages, spent, ps.SharedPages, ps.PrivatePages, total, 100*float64(ps.PrivatePages)/float64(max(total, 1)), ps.DeviceRefused)
	t.Logf("conversions by transport:\n%s", c)
	if l := regexp.MustCompile(`vmmgo: protected guest: .*`).FindString(console); l == "" {
		t.Errorf("console lacks the guest's protected-mode line (vmmgo: protected guest: ...)")
	} else {
		t.Logf("guest: %s", strings.TrimSpace(l))
	}
	if l := regexp.MustCompile(`vmmgo: boot conversions: .*`).FindString(console); l == "" {
		t.Errorf("console lacks the guest's boot-conversion report")
	} else if t.Logf("guest: %s", strings.TrimSpace(l)); !strings.Contains(l, " 0 failed") {
		t.Errorf("the guest reports failed conversions: %s", l)
	}
	if strings.Contains(log, "guest kernel lacks protected-guest support") || c.UnprotectedDrivers != 0 {
		t.Errorf("the protected-guest kernel was refused (%d drivers):\n%s", c.UnprotectedDrivers, log)
	}
	if reqs == 0 || refused != 0 {
		t.Errorf("%d conversion requests, %d refused: want the guest's requests, none refused", reqs, refused)
	}
	if ps.SharedPages == 0 || total == 0 || ps.PrivatePages*10 < total*9 {
		t.Errorf("shared %d, private %d pages: want the swiotlb pool and rings shared and >= 90 %% private", ps.SharedPages, ps.PrivatePages)
	}
	if ps.DeviceRefused != 0 || ps.DeviceFaults != 0 {
		t.Errorf("device accesses refused %d, faulted %d in normal operation: want 0", ps.DeviceRefused, ps.DeviceFaults)
	}
}

func containsAll(have []string, want ...string) bool {
	for _, w := range want {
		found := false
		for _, h := range have {
			found = found || h == w
		}
		if !found {
			return false
		}
	}
	return true
}

// buildRootImage writes a 16 MiB ext4 image holding /vmm-marker, a static
// x86-64 ELF whose first instruction loads from token (mkfs.ext4 -d).
func buildRootImage(t *testing.T, dir string, token uint32) string {
	t.Helper()
	return mkfsExt4(t, dir, map[string][]byte{"vmm-marker": markerELF(token)})
}

// mkfsExt4 writes a 16 MiB ext4 image holding files (name: content, mode
// 0755) into dir and returns its path.
func mkfsExt4(t *testing.T, dir string, files map[string][]byte) string {
	t.Helper()
	mkfs, err := exec.LookPath("mkfs.ext4")
	if err != nil {
		t.Fatalf("mkfs.ext4 not found (install e2fsprogs; scripts/setup.sh does): %v", err)
	}
	root := filepath.Join(dir, "root")
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(root, name), b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	img := filepath.Join(dir, "root.ext4")
	out, err := exec.Command(mkfs, "-q", "-F", "-L", "vmmroot", "-d", root, img, "16M").CombinedOutput()
	if err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	return img
}

// markerELF is a minimal ELF64 executable (one PT_LOAD at 0x400000, entry
// right after the headers) running `mov eax, [token]; ud2`.
func markerELF(token uint32) []byte {
	const base, ehdr, phdr = 0x400000, 64, 56
	code := []byte{0x8b, 0x04, 0x25, 0, 0, 0, 0, 0x0f, 0x0b} // mov eax, [disp32]; ud2
	binary.LittleEndian.PutUint32(code[3:], token)
	size := ehdr + phdr + len(code)
	b := make([]byte, ehdr+phdr, size)
	le := binary.LittleEndian
	copy(b, "\x7fELF")
	b[4], b[5], b[6] = 2, 1, 1 // ELFCLASS64, little endian, EV_CURRENT
	le.PutUint16(b[16:], 2)    // ET_EXEC
	le.PutUint16(b[18:], 62)   // EM_X86_64
	le.PutUint32(b[20:], 1)
	le.PutUint64(b[24:], base+ehdr+phdr) // e_entry
	le.PutUint64(b[32:], ehdr)           // e_phoff
	le.PutUint16(b[52:], ehdr)           // e_ehsize
	le.PutUint16(b[54:], phdr)           // e_phentsize
	le.PutUint16(b[56:], 1)              // e_phnum
	p := b[ehdr:]
	le.PutUint32(p[0:], 1) // PT_LOAD
	le.PutUint32(p[4:], 5) // PF_R|PF_X
	le.PutUint64(p[16:], base)
	le.PutUint64(p[24:], base)
	le.PutUint64(p[32:], uint64(size))
	le.PutUint64(p[40:], uint64(size))
	le.PutUint64(p[48:], 0x1000)
	return append(b, code...)
}

// testNetwork is a TAP and a packet socket on it, inside a network namespace
// the test creates on a dedicated OS thread. Both descriptors keep the
// namespace alive; it disappears when the last one is closed (the thread
// that entered it exits with its goroutine).
type testNetwork struct {
	tap    *os.File // IFF_TAP|IFF_NO_PI|IFF_VNET_HDR, handed to virtio-net
	packet int      // AF_PACKET socket bound to the TAP
}

const testTAP = "vmmtap0"

func newTestNetwork(t *testing.T) *testNetwork {
	t.Helper()
	type result struct {
		tn  *testNetwork
		err error
	}
	ch := make(chan result, 1)
	go func() {
		// Never unlocked: the thread has left the process's namespace, so
		// the runtime must not reuse it; it exits with this goroutine.
		runtime.LockOSThread()
		tn, err := setupTestNetwork()
		ch <- result{tn, err}
	}()
	r := <-ch
	if errors.Is(r.err, unix.EPERM) {
		t.Skipf("cannot create a network namespace (needs CAP_SYS_ADMIN and CAP_NET_ADMIN): %v", r.err)
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() { unix.Close(r.tn.packet) })
	return r.tn
}

func setupTestNetwork() (_ *testNetwork, err error) {
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		return nil, fmt.Errorf("unshare(CLONE_NEWNET): %w", err)
	}
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	tap := os.NewFile(uintptr(fd), "tap:"+testTAP)
	defer func() {
		if err != nil {
			tap.Close()
		}
	}()
	ifr, err := unix.NewIfreq(testTAP)
	if err != nil {
		return nil, err
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		return nil, fmt.Errorf("TUNSETIFF %s: %w", testTAP, err)
	}
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(s)
	if err := unix.IoctlIfreq(s, unix.SIOCGIFFLAGS, ifr); err != nil {
		return nil, fmt.Errorf("SIOCGIFFLAGS: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(s, unix.SIOCSIFFLAGS, ifr); err != nil {
		return nil, fmt.Errorf("SIOCSIFFLAGS up: %w", err)
	}
	iface, err := stdnet.InterfaceByName(testTAP)
	if err != nil {
		return nil, err
	}
	proto := htons(unix.ETH_P_ALL)
	p, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(proto))
	if err != nil {
		return nil, fmt.Errorf("packet socket: %w", err)
	}
	if err := unix.Bind(p, &unix.SockaddrLinklayer{Protocol: proto, Ifindex: iface.Index}); err != nil {
		unix.Close(p)
		return nil, fmt.Errorf("bind packet socket to %s: %w", testTAP, err)
	}
	return &testNetwork{tap: tap, packet: p}, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// dhcpServer answers the guest kernel's DHCP client (RFC 2131) on a packet
// socket: DISCOVER gets an OFFER, REQUEST an ACK, both broadcast.
type dhcpServer struct {
	fd           int
	client, srv  [4]byte
	mu           sync.Mutex
	msgs         []string
	from         []byte
	done, closed chan struct{}
}

func startDHCPServer(t *testing.T, fd int, client, server string) *dhcpServer {
	d := &dhcpServer{fd: fd, done: make(chan struct{}), closed: make(chan struct{})}
	copy(d.client[:], stdnet.ParseIP(client).To4())
	copy(d.srv[:], stdnet.ParseIP(server).To4())
	tv := unix.Timeval{Usec: 200000}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		t.Fatal(err)
	}
	go d.serve()
	t.Cleanup(func() { close(d.closed); <-d.done })
	return d
}

func (d *dhcpServer) seen() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.msgs...)
}

func (d *dhcpServer) source() []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.from
}

var dhcpNames = map[byte]string{1: "DISCOVER", 2: "OFFER", 3: "REQUEST", 4: "DECLINE", 5: "ACK", 6: "NAK", 7: "RELEASE", 8: "INFORM"}

func (d *dhcpServer) serve() {
	defer close(d.done)
	buf := make([]byte, 2048)
	for {
		select {
		case <-d.closed:
			return
		default:
		}
		n, _, err := unix.Recvfrom(d.fd, buf, 0)
		if err != nil {
			continue // timeout: check for close
		}
		req, ok := parseDHCP(buf[:n])
		if !ok {
			continue
		}
		d.mu.Lock()
		d.msgs = append(d.msgs, dhcpNames[req.msgType])
		d.from = append([]byte(nil), buf[6:12]...)
		d.mu.Unlock()
		var reply byte
		switch req.msgType {
		case 1:
			reply = 2
		case 3:
			reply = 5
		default:
			continue
		}
		_, _ = unix.Write(d.fd, d.reply(req, reply)) // the socket is bound to the TAP
	}
}

type dhcpRequest struct {
	msgType byte
	xid     [4]byte
	flags   [2]byte
	chaddr  [16]byte
}

// parseDHCP recognises an Ethernet/IPv4/UDP frame to port 67 carrying a
// BOOTREQUEST with a DHCP message type option.
func parseDHCP(f []byte) (dhcpRequest, bool) {
	var r dhcpRequest
	if len(f) < 14+20+8+240 || binary.BigEndian.Uint16(f[12:]) != 0x0800 {
		return r, false
	}
	ip := f[14:]
	ihl := int(ip[0]&0xf) * 4
	if ip[0]>>4 != 4 || ip[9] != 17 || len(ip) < ihl+8+240 {
		return r, false
	}
	udp := ip[ihl:]
	if binary.BigEndian.Uint16(udp[2:]) != 67 {
		return r, false
	}
	b := udp[8:]
	if b[0] != 1 || !bytes.Equal(b[236:240], []byte{99, 130, 83, 99}) {
		return r, false
	}
	copy(r.xid[:], b[4:8])
	copy(r.flags[:], b[10:12])
	copy(r.chaddr[:], b[28:44])
	for opts := b[240:]; len(opts) >= 2 && opts[0] != 255; {
		if opts[0] == 0 {
			opts = opts[1:]
			continue
		}
		l := int(opts[1])
		if len(opts) < 2+l {
			break
		}
		if opts[0] == 53 && l == 1 {
			r.msgType = opts[2]
		}
		opts = opts[2+l:]
	}
	return r, r.msgType != 0
}

// reply builds a broadcast OFFER or ACK for req.
func (d *dhcpServer) reply(req dhcpRequest, msgType byte) []byte {
	bootp := make([]byte, 240)
	bootp[0], bootp[1], bootp[2] = 2, 1, 6 // BOOTREPLY, Ethernet, hlen 6
	copy(bootp[4:], req.xid[:])
	copy(bootp[10:], req.flags[:])
	copy(bootp[16:], d.client[:]) // yiaddr
	copy(bootp[20:], d.srv[:])    // siaddr
	copy(bootp[28:], req.chaddr[:])
	copy(bootp[236:], []byte{99, 130, 83, 99})
	bootp = append(bootp, 53, 1, msgType)
	bootp = append(bootp, 54, 4)
	bootp = append(bootp, d.srv[:]...)
	bootp = append(bootp, 51, 4, 0, 0, 0x0e, 0x10) // lease 3600 s
	bootp = append(bootp, 1, 4, 255, 255, 255, 0)
	bootp = append(bootp, 3, 4)
	bootp = append(bootp, d.srv[:]...)
	bootp = append(bootp, 255)

	udp := make([]byte, 8, 8+len(bootp))
	binary.BigEndian.PutUint16(udp[0:], 67)
	binary.BigEndian.PutUint16(udp[2:], 68)
	binary.BigEndian.PutUint16(udp[4:], uint16(8+len(bootp)))
	udp = append(udp, bootp...) // checksum 0: none (RFC 768)

	ip := make([]byte, 20, 20+len(udp))
	ip[0], ip[8], ip[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(udp)))
	copy(ip[12:], d.srv[:])
	copy(ip[16:], []byte{255, 255, 255, 255})
	binary.BigEndian.PutUint16(ip[10:], ipChecksum(ip))
	ip = append(ip, udp...)

	eth := make([]byte, 14, 14+len(ip))
	copy(eth[0:], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	copy(eth[6:], []byte{0x52, 0x54, 0x00, 0xfe, 0xfe, 0xfe})
	binary.BigEndian.PutUint16(eth[12:], 0x0800)
	return append(eth, ip...)
}

func ipChecksum(h []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(h); i += 2 {
		s += uint32(binary.BigEndian.Uint16(h[i:]))
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return ^uint16(s)
}

// TestLinuxVirtioINTx: with MSI disabled in the guest (pci=nomsi) the
// virtio functions interrupt through the shared INTx line (IRQPCI): the
// kernel still sizes the disk, mounts it and runs /vmm-marker from it, and
// the rng still feeds the kernel.
func TestLinuxVirtioINTx(t *testing.T) {
	k, _ := guestKernel(t)
	kernel, err := os.ReadFile(k.VMLinux)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	token := uint32(0x5e000000) | rand.Uint32N(1<<20)<<4
	img := buildRootImage(t, dir, token)
	blkDev, err := blk.Open(blk.Config{Path: img, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	rngDev := rng.New(nil)
	cfg := DefaultConfig()
	cfg.Memory = linuxTestMemory
	cfg.Timeout = hostspeed.BootSlot(t, hostspeed.LinuxBoot)
	con := &syncBuffer{}
	cfg.Console = con
	m, err := New(cfg)
	if err != nil {
		blkDev.Close()
		t.Fatal(err)
	}
	defer m.Close()
	if _, err := m.LoadLinux(LinuxConfig{Kernel: kernel, Devices: []virtio.Device{blkDev, rngDev},
		Cmdline: "pci=nomsi root=/dev/vda rootfstype=ext4 ro init=/vmm-marker"}); err != nil {
		t.Fatal(err)
	}
	res, err := m.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := con.String()
	vs := m.VirtioStats()
	t.Logf("guest ended: %v (%s); virtio %+v", res.Outcome, res.Detail, vs)
	for _, want := range []string{
		"[vda] 32768 512-byte logical blocks",
		"VFS: Mounted root (ext4 filesystem) readonly",
		fmt.Sprintf("vmm-marker[1]: segfault at %x ", token),
		"random: crng init done",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("console lacks %q", want)
		}
	}
	if vs.DriverOK != 2 || vs.MSIs != 0 || vs.INTxAssertions == 0 {
		t.Errorf("virtio %+v: want both devices driven through INTx, no MSI", vs)
	}
	if t.Failed() {
		t.Logf("console:\n%s\n%s", out, res.Dump)
	}
}

// newOwningDevices creates the machine for a Linux boot with virtio
// devices; when that fails the devices, which LoadLinux would have taken
// over, are closed here.
func newOwningDevices(t *testing.T, cfg Config, devices []virtio.Device) *Machine {
	t.Helper()
	m, err := New(cfg)
	if err != nil {
		for _, d := range devices {
			d.Close()
		}
		t.Fatal(err)
	}
	return m
}
