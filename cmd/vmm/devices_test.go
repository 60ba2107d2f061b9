package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	stdnet "net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vmmgo/vmm/internal/guestimage"
	"github.com/vmmgo/vmm/internal/hostspeed"
	"github.com/vmmgo/vmm/kvm/kvmtest"
	"github.com/vmmgo/vmm/virtio"
)

func TestParseDeviceFlags(t *testing.T) {
	mac := stdnet.HardwareAddr{0x52, 0x54, 0, 0x12, 0x34, 0x56}
	for _, tc := range []struct {
		flag, value string
		want        any
		err         string
	}{
		{"disk", "/img", diskSpec{path: "/img"}, ""},
		{"disk", "/img,readonly,serial=abc", diskSpec{path: "/img", readOnly: true, serial: "abc"}, ""},
		{"disk", "path=/img,ro", diskSpec{path: "/img", readOnly: true}, ""},
		{"disk", "", nil, "empty value"},
		{"disk", "readonly=x,path=/a", nil, "takes no value"},
		{"disk", "serial=abc", nil, "no image path"},
		{"disk", "/img,serial=" + strings.Repeat("s", 21), nil, "longer than 20 bytes"},
		{"disk", "/img,cache=none", nil, `unknown option "cache"`},
		{"disk", "/img,,ro", nil, "empty option"},
		{"net", "tap=tap0,mac=52:54:00:12:34:56", netSpec{tap: "tap0", fd: -1, mac: mac}, ""},
		{"net", "fd=3", netSpec{fd: 3}, ""},
		{"net", "tap0", nil, "want tap=NAME or fd=N"},
		{"net", "tap=a,fd=3", nil, "exactly one of"},
		{"net", "mac=52:54:00:12:34:56", nil, "exactly one of"},
		{"net", "fd=-1", nil, "file descriptor number"},
		{"net", "tap=" + strings.Repeat("t", 16), nil, "longer than 15 bytes"},
		{"net", "tap=t,mac=zz", nil, "six hex bytes"},
		{"net", "tap=t,mac=01:00:5e:00:00:01", nil, "multicast"},
		{"net", "tap=t,mac=", nil, "empty value"},
		{"vsock", "cid=3,path=/tmp/v.sock", vsockSpec{cid: 3, path: "/tmp/v.sock"}, ""},
		{"vsock", "cid=2,path=/tmp/v.sock", nil, "0-2 are reserved"},
		{"vsock", "cid=4294967296,path=/p", nil, "from 3 to"},
		{"vsock", "cid=5", nil, "want cid=N,path=PATH"},
		{"vsock", "x", nil, "want cid=N,path=PATH"},
		{"console-port", "name=org.test,path=/tmp/p.sock", portSpec{name: "org.test", path: "/tmp/p.sock"}, ""},
		{"console-port", "name=org.test", nil, "want name=NAME,path=PATH"},
		{"console-port", "name=a,path=/p,speed=9600", nil, `unknown option "speed"`},
	} {
		var got any
		var err error
		switch tc.flag {
		case "disk":
			got, err = parseDisk(tc.value)
		case "net":
			got, err = parseNet(tc.value)
		case "vsock":
			got, err = parseVsock(tc.value)
		case "console-port":
			got, err = parsePort(tc.value)
		}
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("--%s %q: err %v, want %q", tc.flag, tc.value, err, tc.err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("--%s %q = %+v, %v; want %+v", tc.flag, tc.value, got, err, tc.want)
		}
	}
}

// TestDeviceFlagUsageErrors: syntax mistakes are usage errors (exit 2)
// that name the flag.
func TestDeviceFlagUsageErrors(t *testing.T) {
	k := filepath.Join(t.TempDir(), "kernel")
	if err := os.WriteFile(k, []byte("not a kernel"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--disk", "/x,bogus"}, `invalid value "/x,bogus" for flag -disk: unknown option "bogus"`},
		{[]string{"--net", "eth0"}, `flag -net`},
		{[]string{"--vsock", "cid=1,path=/tmp/x"}, `flag -vsock`},
		{[]string{"--vsock", "cid=3,path=/tmp/x", "--vsock", "cid=4,path=/tmp/y"}, "given twice"},
		{[]string{"--console-port", "name=a"}, `flag -console-port`},
		{[]string{"--console-port", "name=a,path=/tmp/a", "--console-port", "name=a,path=/tmp/b"}, `name "a" given twice`},
		{[]string{"--disk", "/tmp/same", "--console-port", "name=a,path=/tmp/same"}, "already used by --disk"},
	} {
		code, _, stderr := run(t, append([]string{"boot", "--kernel", k}, tc.args...)...)
		if code != 2 || !strings.Contains(stderr, tc.want) {
			t.Errorf("vmm boot %q: exit %d, stderr %q; want exit 2 and %q", tc.args, code, stderr, tc.want)
		}
	}
}

// TestDeviceBadInput: what only the host can tell fails with a clear error
// (exit 1) before any machine is created; none of these needs /dev/kvm.
func TestDeviceBadInput(t *testing.T) {
	dir := t.TempDir()
	k := filepath.Join(dir, "kernel")
	if err := os.WriteFile(k, []byte("not a kernel"), 0o644); err != nil {
		t.Fatal(err)
	}
	ro := filepath.Join(dir, "ro.img")
	if err := os.WriteFile(ro, make([]byte, 1<<20), 0o444); err != nil {
		t.Fatal(err)
	}
	notSock := filepath.Join(dir, "plain")
	if err := os.WriteFile(notSock, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	busy := filepath.Join(dir, "busy.sock")
	ln, err := stdnet.Listen("unix", busy)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"missing disk", []string{"--disk", filepath.Join(dir, "nope.img")}, "--disk " + filepath.Join(dir, "nope.img") + ": no such file"},
		{"read-only disk read-write", []string{"--disk", ro}, "add ,readonly to attach it read-only"},
		{"disk is a directory", []string{"--disk", dir}, "not a regular file or block device"},
		{"missing TAP", []string{"--net", "tap=vmmnosuch0"}, "TAP interface does not exist"},
		{"closed fd", []string{"--net", "fd=987"}, "--net fd=987: fcntl(F_GETFD): bad file descriptor"},
		{"fd not a TAP", []string{"--net", "fd=0"}, "not a TAP file descriptor"},
		{"vsock dir missing", []string{"--vsock", "cid=3,path=" + filepath.Join(dir, "no/dir/v.sock")}, "--vsock: virtio-vsock: directory of socket"},
		{"vsock path not a socket", []string{"--vsock", "cid=3,path=" + notSock}, "exists and is not a socket"},
		{"vsock socket in use", []string{"--vsock", "cid=3,path=" + busy}, "in use by another process"},
		{"console port dir missing", []string{"--console-port", "name=a,path=" + filepath.Join(dir, "no/dir/p.sock")}, "--console-port a: directory of socket"},
		{"console port in use", []string{"--console-port", "name=a,path=" + busy}, "in use by another process"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"boot", "--kernel", k, "--kvm", filepath.Join(dir, "no-kvm")}, tc.args...)
			if tc.name == "fd not a TAP" {
				// The VMM takes the descriptor over (and closes it on this
				// error): give it one of its own, not fd 0.
				fd, err := unix.Open(os.DevNull, unix.O_RDONLY|unix.O_CLOEXEC, 0)
				if err != nil {
					t.Fatal(err)
				}
				args[len(args)-1] = "fd=" + strconv.Itoa(fd)
			}
			code, _, stderr := run(t, args...)
			if code != 1 || !strings.Contains(stderr, tc.want) {
				t.Fatalf("exit %d, stderr %q; want exit 1 and %q", code, stderr, tc.want)
			}
			if strings.Contains(stderr, "no-kvm") {
				t.Fatalf("the machine was created before the device error: %q", stderr)
			}
			t.Log(strings.TrimSpace(stderr))
		})
	}
	// A busy socket's file is left alone; a stale one is replaced.
	if _, err := os.Stat(busy); err != nil {
		t.Errorf("busy socket removed: %v", err)
	}
}

// TestOpenDevices opens one of each device the host can offer without
// privileges (disk read-only and read-write, rng, console with a named
// port, vsock) and checks the PCI slot order and that close releases the
// sockets.
func TestOpenDevices(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(img, make([]byte, 4<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	port := filepath.Join(dir, "port.sock")
	vs := filepath.Join(dir, "vsock.sock")
	f := deviceFlags{
		disks:         []diskSpec{{path: img, serial: "one"}, {path: img + ".ro", readOnly: true}},
		rng:           true,
		virtioConsole: true,
		ports:         []portSpec{{name: "org.test.port", path: port}},
		vsock:         &vsockSpec{cid: 3, path: vs},
	}
	if err := os.WriteFile(img+".ro", make([]byte, 1<<20), 0o444); err != nil {
		t.Fatal(err)
	}
	o, err := f.open(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var types []virtio.DeviceType
	for _, d := range o.list {
		types = append(types, d.Type())
	}
	want := []virtio.DeviceType{virtio.TypeBlock, virtio.TypeBlock, virtio.TypeRNG, virtio.TypeConsole, virtio.TypeVsock}
	if !reflect.DeepEqual(types, want) {
		t.Errorf("device order %v, want %v", types, want)
	}
	if o.hvcIn == nil {
		t.Error("--virtio-console: no stdin pipe for hvc0")
	}
	for _, p := range []string{port, vs} {
		if st, err := os.Stat(p); err != nil || st.Mode()&os.ModeSocket == 0 {
			t.Errorf("%s: not a listening socket (%v)", p, err)
		}
	}
	o.close()
	for _, p := range []string{port, vs} {
		if c, err := stdnet.Dial("unix", p); err == nil {
			c.Close()
			t.Errorf("%s still accepts connections after close", p)
		}
	}
}

// TestSocketPort: the host side of a named console port carries bytes both
// ways, survives a client leaving, lets a new client take over, drops
// output while nobody is connected and ends reads on Close.
func TestSocketPort(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.sock")
	p, err := listenPort(path)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if n, err := p.Write([]byte("lost")); n != 4 || err != nil {
		t.Fatalf("write without a client: %d, %v", n, err)
	}
	if p.dropped.Load() != 4 {
		t.Fatalf("dropped %d, want 4", p.dropped.Load())
	}
	reads := make(chan string, 4)
	go func() {
		buf := make([]byte, 64)
		for {
			n, err := p.Read(buf)
			if err != nil {
				close(reads)
				return
			}
			reads <- string(buf[:n])
		}
	}()
	for round := 0; round < 2; round++ {
		c, err := stdnet.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write([]byte("from host")); err != nil {
			t.Fatal(err)
		}
		select {
		case got := <-reads:
			if got != "from host" {
				t.Fatalf("round %d: guest side read %q", round, got)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("round %d: nothing read", round)
		}
		if round == 0 {
			// A second client takes over; the first is disconnected.
			c2, err := stdnet.Dial("unix", path)
			if err != nil {
				t.Fatal(err)
			}
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if n, err := c.Read(make([]byte, 8)); err == nil {
				t.Fatalf("replaced client read %d bytes, want EOF", n)
			}
			c.Close()
			c = c2
		}
		if _, err := p.Write([]byte("to host\n")); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil || line != "to host\n" {
			t.Fatalf("round %d: host read %q, %v", round, line, err)
		}
		c.Close() // the port waits for the next client
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case _, ok := <-reads:
		if ok {
			t.Fatal("read data after close")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Read did not return after Close")
	}
	if _, err := os.Stat(path); err == nil {
		t.Error("socket file left after Close")
	}
}

// TestBootVirtioDevices boots the project kernel through the CLI with a
// disk, rng, hvc0 on stdout (plus a named port) and vsock: the kernel mounts
// the disk as its root and its log after hvc0 registered arrives on stdout;
// --stats reports every device driven. init is a script whose interpreter
// does not exist, so the kernel panics (exit 4) after reading it.
func TestBootVirtioDevices(t *testing.T) {
	if testing.Short() {
		t.Skip("boots Linux; not run with -short")
	}
	kvmtest.Open(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	var log bytes.Buffer
	k, err := guestimage.Kernel(ctx, &log)
	if err != nil {
		t.Fatalf("guest kernel: %v\n%s", err, log.String())
	}
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "vmm-marker"), []byte("#!/no/such/interpreter\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(dir, "root.ext4")
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-d", root, img, "8M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4 (e2fsprogs, see scripts/setup.sh): %v\n%s", err, out)
	}
	timeout := hostspeed.BootSlot(t, hostspeed.LinuxBoot)
	code, stdout, stderr := run(t, "boot", "--kernel", k.VMLinux, "--memory", "128M", "--console", "none",
		"--timeout", timeout.String(), "--stats",
		"--disk", img+",readonly,serial=cli-root", "--rng", "--virtio-console",
		"--console-port", "name=org.vmmgo.cli,path="+filepath.Join(dir, "port.sock"),
		"--vsock", "cid=7,path="+filepath.Join(dir, "vsock.sock"),
		"--cmdline", "console=hvc0 root=/dev/vda ro init=/vmm-marker")
	for _, want := range []string{"VFS: Mounted root (ext4 filesystem) readonly", "Run /vmm-marker as init process", "Requested init /vmm-marker failed (error -2)"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("hvc0 (stdout) lacks %q", want)
		}
	}
	if !strings.Contains(stderr, "virtio: 4 devices (4 driven)") {
		t.Errorf("--stats lacks the four driven virtio devices")
	}
	if code != 4 {
		t.Errorf("exit %d, want 4 (guest panic: init failed)", code)
	}
	if t.Failed() {
		t.Logf("stdout:\n%s\nstderr:\n%s", stdout, stderr)
	}
}

// TestOpenTAPByName: --net tap=NAME attaches to an existing TAP (created in
// a network namespace of its own on a dedicated thread, which exits with
// the test goroutine and takes the namespace with it), and a TAP already
// attached elsewhere is refused with a clear error.
func TestOpenTAPByName(t *testing.T) {
	type result struct {
		types []virtio.DeviceType
		err   error
		busy  error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread leaves the host's namespace
		var r result
		defer func() { ch <- r }()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			r.err = err
			return
		}
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			r.err = err
			return
		}
		ifr, _ := unix.NewIfreq("vmmtap1")
		ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			r.err = err
			return
		}
		if err := unix.IoctlSetInt(fd, unix.TUNSETPERSIST, 1); err != nil {
			r.err = err
			return
		}
		unix.Close(fd)
		n, err := parseNet("tap=vmmtap1,mac=52:54:00:00:00:01")
		if err != nil {
			r.err = err
			return
		}
		f := deviceFlags{nets: []netSpec{n}}
		o, err := f.open(nil, io.Discard)
		if err != nil {
			r.err = err
			return
		}
		defer o.close()
		for _, d := range o.list {
			r.types = append(r.types, d.Type())
		}
		// The TAP is single-queue and now in use: a second attach fails.
		if o2, err := f.open(nil, io.Discard); err == nil {
			o2.close()
		} else {
			r.busy = err
		}
	}()
	r := <-ch
	if errors.Is(r.err, unix.EPERM) {
		t.Skipf("cannot create a network namespace and TAP here: %v", r.err)
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	if len(r.types) != 1 || r.types[0] != virtio.TypeNet {
		t.Errorf("devices %v, want one virtio-net", r.types)
	}
	if r.busy == nil || !strings.Contains(r.busy.Error(), "--net tap=vmmtap1") {
		t.Errorf("second attach: %v, want an error naming the flag", r.busy)
	} else {
		t.Log(r.busy)
	}
}
