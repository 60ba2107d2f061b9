package main

// Tests for what users of QEMU, Firecracker and Cloud Hypervisor type
// (issue 16): help on stdout, short flag errors with suggestions, QEMU
// spellings, --config files, and the error texts of common mistakes.

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestHelpGoesToStdout: `vmm boot --help | grep memory` finds the flag.
func TestHelpGoesToStdout(t *testing.T) {
	for _, c := range commands() {
		code, out, errOut := run(t, c.name, "--help")
		if code != 0 || errOut != "" || !strings.HasPrefix(out, "Usage: vmm "+c.name) {
			t.Errorf("vmm %s --help: exit %d, stdout %.60q, stderr %.60q; want the usage on stdout only", c.name, code, out, errOut)
		}
	}
	if _, out, _ := run(t, "boot", "--help"); !strings.Contains(out, "-memory size") {
		t.Errorf("boot --help on stdout lacks --memory:\n%s", out)
	}
}

// TestFlagTypos: a typo gets one line naming the flag meant, not the usage.
func TestFlagTypos(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"boot", "--memroy", "1G"}, "unknown flag --memroy (did you mean --memory?)"},
		{[]string{"boot", "--kernal", "x"}, "unknown flag --kernal (did you mean --kernel?)"},
		{[]string{"boot", "--timeuot", "3"}, "did you mean --timeout?"},
		{[]string{"run", "--imgae", "x"}, "did you mean --image?"},
		{[]string{"kunit", "--suit", "x"}, "did you mean --suite?"},
		{[]string{"stats", "--jsno", "s"}, "did you mean --json?"},
		{[]string{"boot", "-hda", "disk.img"}, "use --disk FILE"},
		{[]string{"boot", "-vnc", ":0"}, "vmm has no display"},
		{[]string{"boot", "--zzzzzz"}, "unknown flag --zzzzzz\n"},
		{[]string{"boto"}, `unknown command "boto" (did you mean boot?)`},
		{[]string{"--memory", "1G"}, "needs a command first"},
	} {
		code, out, errOut := run(t, tc.args...)
		if code != 2 || !strings.Contains(errOut, tc.want) {
			t.Errorf("vmm %q: exit %d, stderr %q; want 2 and %q", tc.args, code, errOut, tc.want)
		}
		if n := strings.Count(errOut, "\n"); n > 2 || out != "" {
			t.Errorf("vmm %q: %d lines on stderr and %q on stdout; want the error and a pointer to --help only:\n%s", tc.args, n, out, errOut)
		}
	}
	if got := suggest("memroy", []string{"memory", "memory-backend", "m"}); !reflect.DeepEqual(got, []string{"memory"}) {
		t.Errorf("suggest(memroy) = %q", got)
	}
	for a, b := range map[string]string{"memroy": "memory", "kernal": "kernel", "cpsu": "cpus"} {
		if d := editDistance(a, b); d != 1 {
			t.Errorf("editDistance(%q, %q) = %d, want 1", a, b, d)
		}
	}
}

// TestTimeoutBareNumber: --timeout 30 means 30 seconds, for every command
// that has --timeout.
func TestTimeoutBareNumber(t *testing.T) {
	for in, want := range map[string]time.Duration{"30": 30 * time.Second, "2.5": 2500 * time.Millisecond, "90s": 90 * time.Second, "1m30s": 90 * time.Second, "0": 0} {
		if got, err := parseSeconds(in); err != nil || got != want {
			t.Errorf("parseSeconds(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"-1", "soon", "1e300"} {
		if _, err := parseSeconds(in); err == nil {
			t.Errorf("parseSeconds(%q) accepted", in)
		}
	}
	b, err := parseBootFlags([]string{"--timeout", "30"}, &bytes.Buffer{})
	if err != nil || b.mf.timeout != 30*time.Second {
		t.Fatalf("boot --timeout 30: %v, timeout %v", err, b.mf.timeout)
	}
	if code, _, errOut := run(t, "boot", "--timeout", "soon"); code != 2 || !strings.Contains(errOut, "or a number of seconds") {
		t.Errorf("--timeout soon: exit %d, %q", code, errOut)
	}
	// kunit: 30 parses; the usage error comes from --cpus, after it.
	if code, _, errOut := run(t, "kunit", "--timeout", "30", "--cpus", "0"); code != 2 || !strings.Contains(errOut, "--cpus 0") {
		t.Errorf("kunit --timeout 30: exit %d, %q", code, errOut)
	}
}

// printConfig returns what `vmm boot ARGS --print-config` prints.
func printConfig(t *testing.T, args ...string) string {
	t.Helper()
	code, out, errOut := run(t, append(append([]string{"boot"}, args...), "--print-config")...)
	if code != 0 {
		t.Fatalf("vmm boot %q --print-config: exit %d\n%s", args, code, errOut)
	}
	return out
}

// TestQEMUSpellings: each QEMU spelling describes the same machine as the
// native flags it stands for.
func TestQEMUSpellings(t *testing.T) {
	for _, tc := range []struct{ qemu, native []string }{
		{[]string{"-kernel", "k", "-initrd", "i", "-append", "quiet", "-m", "1G", "-smp", "2"},
			[]string{"--kernel", "k", "--initrd", "i", "--cmdline", "quiet", "--memory", "1G", "--cpus", "2"}},
		{[]string{"-nographic", "-enable-kvm", "-M", "microvm", "-cpu", "host", "-accel", "kvm"}, nil},
		{[]string{"-serial", "stdio"}, []string{"--console", "stdio"}},
		{[]string{"-serial", "file:/tmp/c.log"}, []string{"--console", "file:/tmp/c.log"}},
		{[]string{"-serial", "none"}, []string{"--console", "none"}},
		{[]string{"-s", "-S"}, []string{"--gdb", "tcp:127.0.0.1:1234", "--gdb-wait"}},
		{[]string{"-drive", "file=/d.img,if=virtio,format=raw"}, []string{"--disk", "/d.img"}},
		{[]string{"-drive", "file=/d.img,if=virtio,readonly=on"}, []string{"--disk", "/d.img,readonly"}},
		{[]string{"-drive", "file=/d.img,if=none,id=d0", "-device", "virtio-blk-pci,drive=d0"}, []string{"--disk", "/d.img"}},
		{[]string{"-device", "virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56", "-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no"},
			[]string{"--net", "tap=tap0,mac=52:54:00:12:34:56"}},
		{[]string{"-netdev", "tap,id=n1,fd=3", "-device", "virtio-net-pci,netdev=n1"}, []string{"--net", "fd=3"}},
		{[]string{"-device", "virtio-rng-pci"}, []string{"--rng"}},
		{[]string{"-initramfs", "i"}, []string{"--initrd", "i"}},
		{[]string{"-config-file", "/dev/null"}, nil}, // an empty object: see TestConfigFile
	} {
		if tc.qemu[0] == "-config-file" {
			continue
		}
		got, want := printConfig(t, tc.qemu...), printConfig(t, tc.native...)
		if got != want {
			t.Errorf("%q and %q describe different machines:\n%s\nvs\n%s", tc.qemu, tc.native, got, want)
		}
	}
	// The accepted no-ops say what vmm does instead.
	_, _, errOut := run(t, "boot", "--kernel", filepath.Join(t.TempDir(), "none"), "-nographic", "-enable-kvm", "-M", "microvm", "-cpu", "host")
	for _, want := range []string{"-nographic: vmm has no display", "-enable-kvm: vmm always runs on KVM", "-M microvm: vmm has one machine type", "-cpu host: the guest sees the host's CPUID"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("no note %q in:\n%s", want, errOut)
		}
	}
	// What vmm cannot do is refused with the native spelling.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-netdev", "user,id=n0"}, "no user-mode networking"},
		{[]string{"-netdev", "tap,id=n0,ifname=tap0"}, "add -device virtio-net-pci,netdev=n0"},
		{[]string{"-device", "virtio-net-pci,netdev=nope"}, "no -netdev with id=nope"},
		{[]string{"-drive", "file=/d.img"}, "add if=virtio"},
		{[]string{"-drive", "file=/d.img,if=ide"}, "if=virtio (= --disk PATH)"},
		{[]string{"-drive", "file=/d.qcow2,if=virtio,format=qcow2"}, "qemu-img convert"},
		{[]string{"-cpu", "qemu64"}, "--cpu-profile"},
		{[]string{"-serial", "pty"}, "--console stdio, none or file:PATH"},
		{[]string{"-M", "virt"}, "one machine type"},
		{[]string{"-S"}, "-S waits for gdb: add -s"},
		{[]string{"-device", "e1000"}, "docs/devices.md"},
		{[]string{"-device", "vhost-vsock-pci,guest-cid=3"}, "--vsock cid=N,path=PATH"},
		{[]string{"-accel", "tcg"}, "KVM only"},
	} {
		code, _, errOut := run(t, append([]string{"boot", "--kernel", "k"}, tc.args...)...)
		if code != 2 || !strings.Contains(errOut, tc.want) {
			t.Errorf("vmm boot %q: exit %d, %q; want 2 and %q", tc.args, code, errOut, tc.want)
		}
	}
}

// richFlags exercise every kind of boot flag.
var richFlags = []string{"--kernel", "/k/vmlinux", "--initrd", "/k/rd.cpio", "--cmdline", "quiet loglevel=3",
	"--cpus", "2", "--memory", "1G", "--memory-backend", "memfd", "--prealloc", "--timeout", "45",
	"--disk", "/d/a.img,serial=root", "--disk", "/d/b.img,readonly", "--net", "tap=tap0,mac=52:54:00:00:00:01",
	"--net", "fd=5", "--rng", "--vsock", "cid=7,path=/tmp/v.sock", "--virtio-console",
	"--console-port", "name=org.test,path=/tmp/p.sock", "--console", "none", "--console-log", "/tmp/c.log",
	"--gdb", "tcp:127.0.0.1:2345", "--control-socket", "/tmp/vm.sock", "--log-level", "warn",
	"--cpu-profile", "emulated", "--extract", "off", "--no-pvh", "--stats"}

// plan parses args and returns the checked machine, without its logger.
func planOf(t *testing.T, args ...string) *bootPlan {
	t.Helper()
	b, err := parseBootFlags(args, &bytes.Buffer{})
	if err != nil {
		t.Fatalf("%q: %v", args, err)
	}
	p, err := b.plan(&bytes.Buffer{})
	if err != nil {
		t.Fatalf("%q: %v", args, err)
	}
	p.cfg.Log = nil
	return p
}

// TestConfigRoundTrip: --print-config writes a file that --config reads
// back into the same machine, and the file's JSON is stable.
func TestConfigRoundTrip(t *testing.T) {
	dir := t.TempDir()
	cfgText := printConfig(t, richFlags...)
	file := filepath.Join(dir, "vm.json")
	if err := os.WriteFile(file, []byte(cfgText), 0o644); err != nil {
		t.Fatal(err)
	}
	fromFlags, fromFile := planOf(t, richFlags...), planOf(t, "--config", file)
	if !reflect.DeepEqual(fromFlags, fromFile) {
		t.Errorf("flags and file give different machines:\nflags: %+v\nfile:  %+v", fromFlags, fromFile)
	}
	if again := printConfig(t, "--config", file); again != cfgText {
		t.Errorf("the file does not round-trip:\n%s\nvs\n%s", cfgText, again)
	}
	// Spot checks: the file says what the flags said, in JSON types.
	var m map[string]any
	if err := json.Unmarshal([]byte(cfgText), &m); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]any{"version": 1.0, "cpus": 2.0, "memory": "1G", "memory_backend": "memfd", "prealloc": true,
		"timeout": "45s", "rng": true, "kernel": "/k/vmlinux"} {
		if !reflect.DeepEqual(m[k], want) {
			t.Errorf("%s = %#v, want %#v", k, m[k], want)
		}
	}
	if d := m["disks"].([]any); len(d) != 2 || d[1].(map[string]any)["readonly"] != true {
		t.Errorf("disks = %v", m["disks"])
	}
	// Flags next to the file override it; device flags add devices.
	p := planOf(t, "--config", file, "--cpus", "4", "--disk", "/d/c.img")
	if p.cfg.CPUs != 4 || len(p.devices.disks) != 3 || p.cfg.Memory != 1<<30 {
		t.Errorf("override: cpus %d, %d disks, memory %d", p.cfg.CPUs, len(p.devices.disks), p.cfg.Memory)
	}
	// The machine built from the file is the one the flags build.
	if fromFile.cfg.CPUs != 2 || fromFile.cfg.Memory != 1<<30 || fromFile.cfg.Timeout != 45*time.Second ||
		fromFile.linux.Cmdline != "quiet loglevel=3" || fromFile.kernel != "/k/vmlinux" || !fromFile.devices.rng ||
		fromFile.devices.vsock == nil || fromFile.devices.vsock.cid != 7 || len(fromFile.devices.nets) != 2 {
		t.Errorf("file plan: %+v", fromFile)
	}
}

// TestConfigFileErrors: mistakes in a file are named with the key.
func TestConfigFileErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ json, want string }{
		{`{"memroy": "1G"}`, `unknown key "memroy" (did you mean "memory"?)`},
		{`{"version": 2}`, "this vmm reads version 1"},
		{`{"cpus": "many"}`, `"cpus"`},
		{`{"disks": [{"path": "/a", "cache": "none"}]}`, `unknown option "cache"`},
		{`{"disks": [{"path": "/a,b"}]}`, "a comma cannot be expressed"},
		{`{"disks": {"path": "/a"}}`, "want a list of objects"},
		{`[1]`, "not a JSON object"},
		{`{"memory": "10K"}`, "--memory 10K: guest RAM must be at least 2M"},
	} {
		f := filepath.Join(dir, "c.json")
		os.WriteFile(f, []byte(tc.json), 0o644)
		code, _, errOut := run(t, "boot", "--kernel", "k", "--config", f)
		if code != 2 || !strings.Contains(errOut, tc.want) {
			t.Errorf("%s: exit %d, %q; want 2 and %q", tc.json, code, errOut, tc.want)
		}
	}
	if code, _, errOut := run(t, "boot", "--config", filepath.Join(dir, "none.json")); code != 2 || !strings.Contains(errOut, "none.json: no such file") {
		t.Errorf("missing file: exit %d, %q", code, errOut)
	}
}

// TestFirecrackerConfig: a Firecracker --config-file describes the same
// machine as the equivalent flags.
func TestFirecrackerConfig(t *testing.T) {
	f := filepath.Join(t.TempDir(), "fc.json")
	os.WriteFile(f, []byte(`{
  "boot-source": {"kernel_image_path": "/k/vmlinux", "boot_args": "console=ttyS0 reboot=k panic=1", "initrd_path": "/k/rd"},
  "drives": [{"drive_id": "rootfs", "path_on_host": "/d/root.ext4", "is_root_device": true, "is_read_only": false}],
  "machine-config": {"vcpu_count": 2, "mem_size_mib": 1024, "smt": false},
  "network-interfaces": [{"iface_id": "eth0", "guest_mac": "06:00:ac:10:00:02", "host_dev_name": "tap0"}],
  "vsock": {"guest_cid": 3, "uds_path": "/tmp/v.sock"},
  "entropy": {}
}`), 0o644)
	got := printConfig(t, "--config-file", f)
	want := printConfig(t, "--kernel", "/k/vmlinux", "--initrd", "/k/rd", "--cmdline", "console=ttyS0 reboot=k panic=1 root=/dev/vda rw",
		"--cpus", "2", "--memory", "1024M", "--disk", "/d/root.ext4,serial=rootfs", "--net", "tap=tap0,mac=06:00:ac:10:00:02",
		"--vsock", "cid=3,path=/tmp/v.sock", "--rng")
	if got != want {
		t.Errorf("Firecracker file:\n%s\nflags:\n%s", got, want)
	}
	os.WriteFile(f, []byte(`{"boot-source": {"kernel_image_path": "/k"}, "balloon": {}}`), 0o644)
	if code, _, errOut := run(t, "boot", "--config", f); code != 2 || !strings.Contains(errOut, `unknown field "balloon"`) {
		t.Errorf("unknown Firecracker section: exit %d, %q", code, errOut)
	}
}

// TestMistakeMessages: the errors of common mistakes say what is wrong
// and what to do, once, with the right exit code.
func TestMistakeMessages(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, b []byte, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	notKernel := write("notkernel", []byte("#!/bin/sh\n"), 0o644)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(bytes.Repeat([]byte("MZ kernel"), 100))
	zw.Close()
	gzipped := write("vmlinuz.gz", gz.Bytes(), 0o644)
	roDisk := write("ro.img", make([]byte, 1<<20), 0o444)
	kdir := filepath.Join(dir, "build")
	os.Mkdir(kdir, 0o755)
	write("build/vmlinux", []byte("x"), 0o644)
	for _, tc := range []struct {
		name  string
		args  []string
		code  int
		want  []string
		never string
	}{
		{"missing initrd", []string{"--kernel", notKernel, "--initrd", filepath.Join(dir, "rd.cpio")}, 1,
			[]string{"initrd", "rd.cpio: no such file", "go run ./scripts/mkinitramfs"}, "guest-kernel/build.sh"},
		{"kernel is a directory", []string{"--kernel", kdir}, 1,
			[]string{"kernel " + kdir + " is a directory: give the kernel file", filepath.Join(kdir, "vmlinux") + " is there"}, ""},
		{"gzipped kernel", []string{"--kernel", gzipped}, 1, []string{"this is gzip data", "gunzip it first"}, "HdrS"},
		{"read-only disk", []string{"--kernel", notKernel, "--disk", roDisk}, 1, []string{"--disk " + roDisk, "add ,readonly"}, ""},
		{"memory too small", []string{"--kernel", notKernel, "--memory", "10K"}, 2, []string{"--memory 10K: guest RAM must be at least 2M"}, ""},
		{"memory not whole pages", []string{"--kernel", notKernel, "--memory", "3001K"}, 2, []string{"whole number of 4 KiB pages"}, ""},
		{"gdb on every interface", []string{"--kernel", notKernel, "--gdb", "tcp::1234"}, 2, []string{"every network interface", "tcp:127.0.0.1:1234"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errOut := run(t, append([]string{"boot", "--console", "none", "--memory", "64M"}, tc.args...)...)
			if code != tc.code {
				t.Errorf("exit %d, want %d: %q", code, tc.code, errOut)
			}
			for _, w := range tc.want {
				if !strings.Contains(errOut, w) {
					t.Errorf("stderr %q does not say %q", errOut, w)
				}
			}
			if tc.never != "" && strings.Contains(errOut, tc.never) {
				t.Errorf("stderr %q says %q", errOut, tc.never)
			}
			if strings.Count(errOut, "read-only") > 1 {
				t.Errorf("says read-only twice: %q", errOut)
			}
		})
	}
}

// TestMemoryAboveHostRAM: more guest RAM than the host has is refused at
// once (it used to be accepted silently and its teardown took 50 s), and
// more than is available now gets a warning.
func TestMemoryAboveHostRAM(t *testing.T) {
	saved := meminfoPath
	defer func() { meminfoPath = saved }()
	meminfoPath = filepath.Join(t.TempDir(), "meminfo")
	os.WriteFile(meminfoPath, []byte("MemTotal:       24000000 kB\nMemFree:  100 kB\nMemAvailable:    1048576 kB\n"), 0o644)
	start := time.Now()
	code, _, errOut := run(t, "boot", "--kernel", "k", "--memory", "1T")
	if code != 2 || !strings.Contains(errOut, "--memory 1T is more than this host's RAM (22.9 GiB)") {
		t.Errorf("1T: exit %d, %q", code, errOut)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("refusing took %v", el)
	}
	_, _, errOut = run(t, "boot", "--kernel", filepath.Join(t.TempDir(), "none"), "--memory", "2G")
	if !strings.Contains(errOut, "--memory 2G is more than the 1.0 GiB of RAM this host has available now") {
		t.Errorf("2G with 1 GiB available: no warning in %q", errOut)
	}
}

// TestVersionSaysGo: the help promises the Go version; a release build
// (version set by the Makefile) printed only the commit.
func TestVersionSaysGo(t *testing.T) {
	saved := version
	defer func() { version = saved }()
	version = "v1.2.3-4-gabcdef"
	for _, args := range [][]string{{"--version"}, {"version"}} {
		code, out, _ := run(t, args...)
		if code != 0 || out != "vmm v1.2.3-4-gabcdef ("+runtime.Version()+")\n" {
			t.Errorf("vmm %s: exit %d, %q", args[0], code, out)
		}
	}
}

// TestGDBAllInterfacesWarns: an explicit 0.0.0.0 is allowed, with a warning.
func TestGDBAllInterfacesWarns(t *testing.T) {
	_, _, errOut := run(t, "boot", "--kernel", filepath.Join(t.TempDir(), "none"), "--gdb", "tcp:0.0.0.0:1234")
	if !strings.Contains(errOut, "listens on every network interface") {
		t.Errorf("no warning: %q", errOut)
	}
	if err := checkGDBAddr("tcp:127.0.0.1:1234"); err != nil {
		t.Error(err)
	}
	if err := checkGDBAddr("unix:/tmp/g.sock"); err != nil {
		t.Error(err)
	}
}

// shellWords splits a command line like a shell would, for the simple
// quoting the equivalents table uses.
func shellWords(s string) []string {
	var out []string
	var cur strings.Builder
	in, quoted := false, false
	for _, r := range s {
		switch {
		case r == '\'':
			quoted, in = !quoted, true
		case r == ' ' && !quoted:
			if in {
				out = append(out, cur.String())
				cur.Reset()
				in = false
			}
		default:
			cur.WriteRune(r)
			in = true
		}
	}
	if in {
		out = append(out, cur.String())
	}
	return out
}

// TestEquivalents: the table in docs/cli.md says true things: every vmm
// spelling is accepted, and every spelling marked as accepted (QEMU's,
// Cloud Hypervisor's) describes the same machine as the vmm one.
func TestEquivalents(t *testing.T) {
	names := map[string]bool{}
	for _, c := range commands() {
		names[c.name] = true
	}
	for _, e := range equivalents {
		var native []string
		switch {
		case strings.HasPrefix(e.vmm, "vmm "):
			if w := shellWords(e.vmm); !names[w[1]] {
				t.Errorf("%s: no command %q", e.what, w[1])
			}
			continue
		case strings.Contains(e.vmm, "-config"): // needs a file; TestConfigRoundTrip covers it
			if newBootFlags(io.Discard).fs.Lookup(strings.TrimLeft(shellWords(e.vmm)[0], "-")) == nil {
				t.Errorf("%s: no flag %s", e.what, e.vmm)
			}
			continue
		case e.vmm != "":
			native = shellWords(e.vmm)
		}
		want := printConfig(t, native...)
		for _, alt := range []struct {
			spelling string
			ok       bool
		}{{e.qemu, e.qemuOK}, {e.cloudHV, e.chOK}} {
			if !alt.ok {
				continue
			}
			if got := printConfig(t, shellWords(alt.spelling)...); got != want {
				t.Errorf("%s: %q and %q differ:\n%s\nvs\n%s", e.what, alt.spelling, e.vmm, got, want)
			}
		}
	}
}

// FuzzConfigFile: no config file panics the parser, and whatever one it
// accepts round-trips: written back with --print-config and read again,
// it describes the same machine.
func FuzzConfigFile(f *testing.F) {
	f.Add([]byte(`{"version": 1, "cpus": 2, "memory": "1G", "disks": [{"path": "/a", "readonly": true}], "rng": true}`))
	f.Add([]byte(`{"nets": [{"tap": "tap0", "mac": "52:54:00:00:00:01"}], "vsock": {"cid": 3, "path": "/v"}, "timeout": 30}`))
	f.Add([]byte(`{"boot-source": {"kernel_image_path": "/k"}, "machine-config": {"vcpu_count": 1, "mem_size_mib": 64}}`))
	f.Add([]byte(`{"console_ports": [{"name": "a", "path": "/p"}], "kernel": "k", "cmdline": "x y"}`))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		file := filepath.Join(dir, "c.json")
		if err := os.WriteFile(file, data, 0o644); err != nil {
			t.Fatal(err)
		}
		b := newBootFlags(io.Discard)
		if loadConfig(b.fs, file) != nil || b.q.finish(b) != nil {
			return
		}
		out, err := b.writeConfig()
		if err != nil {
			t.Fatalf("accepted %q but cannot write it: %v", data, err)
		}
		if err := os.WriteFile(file, out, 0o644); err != nil {
			t.Fatal(err)
		}
		b2 := newBootFlags(io.Discard)
		if err := loadConfig(b2.fs, file); err != nil {
			t.Fatalf("accepted %q, wrote\n%s\nand refused that: %v", data, out, err)
		}
		if out2, _ := b2.writeConfig(); !bytes.Equal(out, out2) {
			t.Fatalf("%q does not round-trip:\n%s\nvs\n%s", data, out, out2)
		}
	})
}
