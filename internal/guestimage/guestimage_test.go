package guestimage

import (
	"bytes"
	"context"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/u-root/u-root/pkg/cpio"
)

func TestCacheDir(t *testing.T) {
	t.Setenv("VMM_CACHE_DIR", "/x/vmm-cache")
	t.Setenv("XDG_CACHE_HOME", "/y")
	if got := CacheDir(); got != "/x/vmm-cache" {
		t.Errorf("with VMM_CACHE_DIR: CacheDir() = %q", got)
	}
	t.Setenv("VMM_CACHE_DIR", "")
	if got := CacheDir(); got != "/y/vmm" {
		t.Errorf("with XDG_CACHE_HOME: CacheDir() = %q", got)
	}
	t.Setenv("XDG_CACHE_HOME", "")
	t.Setenv("HOME", "/home/z")
	if got := CacheDir(); got != "/home/z/.cache/vmm" {
		t.Errorf("with HOME only: CacheDir() = %q", got)
	}
}

func TestSourceDir(t *testing.T) {
	root, err := SourceDir()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{kernelScript, "scripts/guest-kernel/config.fragment", "scripts/guest-init/main_linux.go"} {
		if _, err := os.Stat(filepath.Join(root, p)); err != nil {
			t.Errorf("source tree %s: %v", root, err)
		}
	}
	t.Setenv("VMM_SOURCE_DIR", t.TempDir())
	if _, err := SourceDir(); err == nil {
		t.Error("SourceDir accepted a VMM_SOURCE_DIR without go.mod")
	}
}

func TestParseAndCheckConfig(t *testing.T) {
	fragment := []byte(`# comment
CONFIG_A=y
# CONFIG_B is not set
CONFIG_C="str"
CONFIG_D=-1
CONFIG_E=n
`)
	want := []configOption{{"CONFIG_A", "y"}, {"CONFIG_B", "n"}, {"CONFIG_C", `"str"`}, {"CONFIG_D", "-1"}, {"CONFIG_E", "n"}}
	got := parseConfig(fragment)
	if len(got) != len(want) {
		t.Fatalf("parseConfig = %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("parseConfig[%d] = %v, want %v", i, got[i], want[i])
		}
	}
	for _, tc := range []struct {
		config  string
		bad     []string // options the error must name; nil: no error
		notBad  []string
		comment string
	}{
		{"CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=\"str\"\nCONFIG_D=-1\n", nil, nil, "all as asked (E absent counts as n)"},
		{"CONFIG_A=m\nCONFIG_C=\"str\"\nCONFIG_D=-1\n", []string{"CONFIG_A"}, []string{"CONFIG_B"}, "module is not y"},
		{"CONFIG_A=y\nCONFIG_B=y\nCONFIG_C=\"str\"\nCONFIG_D=-1\n", []string{"CONFIG_B"}, nil, "must be unset"},
		{"CONFIG_A=y\nCONFIG_C=\"other\"\nCONFIG_D=0\nCONFIG_E=y\n", []string{"CONFIG_C", "CONFIG_D", "CONFIG_E"}, []string{"CONFIG_A"}, "values differ"},
		{"", []string{"CONFIG_A", "CONFIG_C", "CONFIG_D"}, nil, "empty config"},
	} {
		err := checkConfig(fragment, []byte(tc.config))
		if tc.bad == nil {
			if err != nil {
				t.Errorf("%s: unexpected error %v", tc.comment, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("%s: no error", tc.comment)
			continue
		}
		for _, b := range tc.bad {
			if !strings.Contains(err.Error(), b+":") {
				t.Errorf("%s: error %q does not name %s", tc.comment, err, b)
			}
		}
		for _, b := range tc.notBad {
			if strings.Contains(err.Error(), b+":") {
				t.Errorf("%s: error %q wrongly names %s", tc.comment, err, b)
			}
		}
	}
}

// kernelInputs copies scripts/guest-kernel's inputs into a temporary
// directory and makes a fake source tarball with a fixed mtime, so the cache
// key depends only on things the test controls. It returns the environment
// for build.sh.
func kernelInputs(t *testing.T) (inputDir string, env []string) {
	t.Helper()
	root, err := SourceDir()
	if err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(root, "scripts", "guest-kernel")
	inputDir = t.TempDir()
	err = filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		dst := filepath.Join(inputDir, rel)
		if fi.IsDir() {
			return os.MkdirAll(dst, 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, b, fi.Mode().Perm())
	})
	if err != nil {
		t.Fatal(err)
	}
	tarball := filepath.Join(t.TempDir(), "linux-fake.tar.xz")
	if err := os.WriteFile(tarball, []byte("not really a tarball\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	stamp := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	if err := os.Chtimes(tarball, stamp, stamp); err != nil {
		t.Fatal(err)
	}
	return inputDir, []string{
		"VMM_KERNEL_INPUT_DIR=" + inputDir,
		"VMM_KERNEL_SOURCE=" + tarball,
		"VMM_KERNEL_NO_INSTALL=1",
	}
}

func printKey(t *testing.T, env []string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := runKernelScript(ctx, nil, env, "--print-key")
	if err != nil {
		t.Fatal(err)
	}
	k := lastLine(out)
	if !regexp.MustCompile(`^[0-9a-f]{16}$`).MatchString(k) {
		t.Fatalf("--print-key printed %q, want 16 hex digits", out)
	}
	return k
}

func TestKernelKeyCoversInputs(t *testing.T) {
	t.Setenv("VMM_CACHE_DIR", t.TempDir())
	dir, env := kernelInputs(t)
	base := printKey(t, env)
	if again := printKey(t, env); again != base {
		t.Fatalf("key not deterministic: %s then %s", base, again)
	}
	edit := func(name, suffix string) func() {
		p := filepath.Join(dir, name)
		orig, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, append(append([]byte{}, orig...), suffix...), 0o644); err != nil {
			t.Fatal(err)
		}
		return func() {
			if err := os.WriteFile(p, orig, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	seen := map[string]string{base: "original"}
	for _, tc := range []struct{ file, suffix string }{
		{"config.fragment", "CONFIG_EXTRA=y\n"},
		{"config.fragment", "# a comment only\n"},
		{"kunit/vmm_kunit_test.c", "/* changed */\n"},
		{"kunit/Kconfig", "\n"},
	} {
		restore := edit(tc.file, tc.suffix)
		k := printKey(t, env)
		what := tc.file + " + " + strings.TrimSpace(tc.suffix)
		if prev, dup := seen[k]; dup {
			t.Errorf("changing %s left key %s (same as %s)", what, k, prev)
		}
		seen[k] = what
		restore()
	}
	// A new patch file is an input too.
	if err := os.MkdirAll(filepath.Join(dir, "patches"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "patches", "0001-x.patch"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if k := printKey(t, env); seen[k] != "" {
		t.Errorf("adding a patch left key %s (same as %s)", k, seen[k])
	}
	// Only the added file goes: patches/ may hold the recipe's own patches.
	if err := os.Remove(filepath.Join(dir, "patches", "0001-x.patch")); err != nil {
		t.Fatal(err)
	}
	if k := printKey(t, env); k != base {
		t.Errorf("restored inputs give key %s, want %s", k, base)
	}
	// The source version is an input.
	tarball := strings.TrimPrefix(env[1], "VMM_KERNEL_SOURCE=")
	if err := os.WriteFile(tarball, []byte("another version\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if k := printKey(t, env); k == base {
		t.Errorf("changing the source tarball left key %s", k)
	}
}

func TestKernelCacheHitDoesNotRebuild(t *testing.T) {
	cache := t.TempDir()
	t.Setenv("VMM_CACHE_DIR", cache)
	_, env := kernelInputs(t)
	dir := filepath.Join(cache, "kernel-"+printKey(t, env))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour).Truncate(time.Second)
	for _, f := range []string{"vmlinux", "bzImage", "System.map", ".config"} {
		p := filepath.Join(dir, f)
		if err := os.WriteFile(p, []byte("sentinel "+f), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, old, old); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var log bytes.Buffer
	start := time.Now()
	k, err := kernel(ctx, &log, env)
	elapsed := time.Since(start)
	if err != nil {
		t.Fatalf("cache hit failed: %v\nlog:\n%s", err, log.String())
	}
	if k.Dir != dir || k.VMLinux != filepath.Join(dir, "vmlinux") || k.Config != filepath.Join(dir, ".config") {
		t.Errorf("Kernel = %+v, want paths in %s", k, dir)
	}
	if !strings.Contains(log.String(), "cache hit") {
		t.Errorf("log does not say cache hit:\n%s", log.String())
	}
	for _, f := range []string{"vmlinux", "bzImage", "System.map", ".config"} {
		p := filepath.Join(dir, f)
		b, err := os.ReadFile(p)
		fi, err2 := os.Stat(p)
		if err != nil || err2 != nil || string(b) != "sentinel "+f || !fi.ModTime().Equal(old) {
			t.Errorf("%s was rewritten by a cache hit", f)
		}
	}
	if entries, _ := os.ReadDir(cache); len(entries) != 1 {
		t.Errorf("cache hit created files: %v", entries)
	}
	t.Logf("cache hit took %v", elapsed)
	if elapsed > 5*time.Second {
		t.Errorf("cache hit took %v, want well under a second (5 s allowed on a loaded host)", elapsed)
	}
}

func TestKernelPartialEntryIsNotAHit(t *testing.T) {
	cache := t.TempDir()
	t.Setenv("VMM_CACHE_DIR", cache)
	_, env := kernelInputs(t)
	key := printKey(t, env)
	// A finished-looking temporary tree and an entry missing its bzImage.
	stale := filepath.Join(cache, ".kernel-"+key+".abc123", "out")
	dir := filepath.Join(cache, "kernel-"+key)
	for _, d := range []string{stale, dir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{"vmlinux", "System.map", ".config"} {
			if err := os.WriteFile(filepath.Join(d, f), []byte("x"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := os.WriteFile(filepath.Join(stale, "bzImage"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var log bytes.Buffer
	// The fake tarball cannot be extracted, so anything but a cache hit fails.
	k, err := kernel(ctx, &log, env)
	if err == nil {
		t.Fatalf("partial entry accepted as a hit: %+v\nlog:\n%s", k, log.String())
	}
	if strings.Contains(log.String(), "cache hit") {
		t.Errorf("log claims a cache hit:\n%s", log.String())
	}
	if _, err := os.Stat(filepath.Join(dir, "vmlinux")); err != nil {
		t.Errorf("failed build damaged the existing partial entry: %v", err)
	}
	// With its tools present build.sh gets as far as the build lock, where
	// it removes temporary trees left by killed runs.
	if !strings.Contains(log.String(), "missing build tools") {
		if _, err := os.Stat(filepath.Dir(stale)); !os.IsNotExist(err) {
			t.Errorf("stale temporary tree %s survived (stat: %v)", filepath.Dir(stale), err)
		}
		if strings.Contains(log.String(), "extracting") {
			if m, _ := filepath.Glob(filepath.Join(cache, "src", ".extract.*")); len(m) > 0 {
				t.Errorf("failed extraction left %v", m)
			}
		}
	}
	t.Logf("build.sh said:\n%s", log.String())
}

func TestKernelKeyOfTree(t *testing.T) {
	if _, err := exec.LookPath("dpkg-query"); err != nil {
		t.Skip("no dpkg-query: the key of the real tree needs Debian's linux-source package")
	}
	if err := exec.Command("dpkg-query", "-W", "linux-source-6.1").Run(); err != nil {
		t.Skip("linux-source-6.1 not installed; build.sh installs it on first build")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	k, err := KernelKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^[0-9a-f]{16}$`).MatchString(k) {
		t.Errorf("KernelKey = %q", k)
	}
}

// readInitramfs returns the records of a cpio in order, with contents.
func readInitramfs(t *testing.T, p string) ([]cpio.Info, map[string][]byte) {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	recs, err := cpio.ReadAllRecords(cpio.Newc.Reader(f))
	if err != nil {
		t.Fatalf("parse %s: %v", p, err)
	}
	var infos []cpio.Info
	data := map[string][]byte{}
	for _, r := range recs {
		infos = append(infos, r.Info)
		if r.Mode&cpio.S_IFMT == cpio.S_IFREG {
			b, err := io.ReadAll(io.NewSectionReader(r.ReaderAt, 0, int64(r.FileSize)))
			if err != nil {
				t.Fatal(err)
			}
			data[r.Name] = b
		}
	}
	return infos, data
}

func TestInitramfs(t *testing.T) {
	cache := t.TempDir()
	t.Setenv("VMM_CACHE_DIR", cache)
	host := filepath.Join(t.TempDir(), "payload")
	if err := os.WriteFile(host, []byte("payload v1\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(host, 0o640); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	opts := InitramfsOptions{Files: []File{{Host: host, Guest: "/opt/test/payload"}}}
	start := time.Now()
	p, err := Initramfs(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("first build: %v", time.Since(start))
	if filepath.Dir(p) != cache || !regexp.MustCompile(`^initramfs-[0-9a-f]{16}\.cpio$`).MatchString(filepath.Base(p)) {
		t.Errorf("Initramfs path %s, want initramfs-<hash>.cpio in %s", p, cache)
	}
	raw, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(raw, []byte("070701")) {
		t.Fatalf("not an uncompressed newc cpio: starts with %q", raw[:6])
	}

	infos, data := readInitramfs(t, p)
	index := map[string]int{}
	for i, in := range infos {
		if _, dup := index[in.Name]; dup {
			t.Errorf("duplicate entry %s", in.Name)
		}
		index[in.Name] = i
	}
	want := map[string]uint64{ // name -> mode
		"init":             cpio.S_IFREG | 0o755,
		"dev":              cpio.S_IFDIR | 0o755,
		"dev/console":      cpio.S_IFCHR | 0o600,
		"dev/null":         cpio.S_IFCHR | 0o666,
		"proc":             cpio.S_IFDIR | 0o755,
		"sys":              cpio.S_IFDIR | 0o755,
		"tmp":              cpio.S_IFDIR | 0o1777,
		"opt":              cpio.S_IFDIR | 0o755,
		"opt/test":         cpio.S_IFDIR | 0o755,
		"opt/test/payload": cpio.S_IFREG | 0o640,
	}
	for name, mode := range want {
		i, ok := index[name]
		if !ok {
			t.Errorf("no %s in initramfs", name)
			continue
		}
		if infos[i].Mode != mode {
			t.Errorf("%s: mode %o, want %o", name, infos[i].Mode, mode)
		}
	}
	if c := infos[index["dev/console"]]; c.Rmajor != 5 || c.Rminor != 1 {
		t.Errorf("dev/console is %d:%d, want 5:1", c.Rmajor, c.Rminor)
	}
	// The kernel's unpacker does not create parent directories.
	for name, i := range index {
		for d := filepath.Dir(name); d != "."; d = filepath.Dir(d) {
			if j, ok := index[d]; !ok || j > i {
				t.Errorf("%s comes before (or without) its directory %s", name, d)
			}
		}
	}
	if got := string(data["opt/test/payload"]); got != "payload v1\n" {
		t.Errorf("payload content %q", got)
	}
	checkStaticInit(t, data["init"])

	// Same inputs: a cache hit that does not rewrite the file.
	old := time.Now().Add(-time.Hour).Truncate(time.Second)
	if err := os.Chtimes(p, old, old); err != nil {
		t.Fatal(err)
	}
	p2, err := Initramfs(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(p2); p2 != p || err != nil || !fi.ModTime().Equal(old) {
		t.Errorf("second Initramfs = %s (rewritten?), want cache hit on %s", p2, p)
	}
	// Different payload: a different image.
	if err := os.WriteFile(host, []byte("payload v2\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	p3, err := Initramfs(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if p3 == p {
		t.Errorf("changed payload gave the same image %s", p3)
	}
	if _, data3 := readInitramfs(t, p3); string(data3["opt/test/payload"]) != "payload v2\n" {
		t.Errorf("new image has payload %q", data3["opt/test/payload"])
	}
	// Nothing left behind but the two images.
	entries, _ := os.ReadDir(cache)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if len(names) != 2 {
		t.Errorf("cache holds %v, want just the two images", names)
	}
}

// checkStaticInit checks that b is a static x86-64 ELF executable.
func checkStaticInit(t *testing.T, b []byte) {
	t.Helper()
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("/init is not ELF: %v", err)
	}
	if f.Machine != elf.EM_X86_64 || f.Type != elf.ET_EXEC {
		t.Errorf("/init is %v %v, want a static EM_X86_64 ET_EXEC", f.Machine, f.Type)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("/init has %v: not static", p.Type)
		}
	}
}

func TestInitramfsRejectsBadFiles(t *testing.T) {
	t.Setenv("VMM_CACHE_DIR", t.TempDir())
	host := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(host, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"", "nocolon", ":guest", "host:"} {
		if _, err := ParseFile(s); err == nil {
			t.Errorf("ParseFile(%q) accepted", s)
		}
	}
	if f, err := ParseFile(host + ":/a/b"); err != nil || f.Host != host || f.Guest != "/a/b" {
		t.Errorf("ParseFile = %+v, %v", f, err)
	}
	for _, files := range [][]File{
		{{Host: host, Guest: "/init"}},
		{{Host: host, Guest: "dev/console"}},
		{{Host: host, Guest: "/"}},
		{{Host: host, Guest: "/a"}, {Host: host, Guest: "a"}},
		{{Host: filepath.Dir(host), Guest: "/dir"}},
		{{Host: host + ".missing", Guest: "/m"}},
	} {
		if _, err := resolveFiles(files); err == nil {
			t.Errorf("resolveFiles(%+v) accepted", files)
		}
	}
	if got, err := resolveFiles([]File{{Host: host, Guest: "/x/../y/./z"}}); err != nil || got[0].name != "y/z" {
		t.Errorf("resolveFiles normalizes to %+v, %v; want y/z", got, err)
	}
}

// TestGuestInitOnHost runs the /init from a built image on the host, where
// it is not PID 1 and so neither mounts nor powers off, and checks the
// console protocol: hello marker, the command's output, its exit code.
func TestGuestInitOnHost(t *testing.T) {
	t.Setenv("VMM_CACHE_DIR", t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	p, err := Initramfs(ctx, InitramfsOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, data := readInitramfs(t, p)
	initBin := filepath.Join(t.TempDir(), "init")
	if err := os.WriteFile(initBin, data["init"], 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{nil, []string{MarkerHello, MarkerExitPrefix + "0"}},
		{[]string{"/bin/sh", "-c", "echo from-child; exit 7"}, []string{MarkerHello, "from-child", MarkerExitPrefix + "7"}},
		{[]string{"/bin/sh", "-c", "kill -TERM $$"}, []string{MarkerHello, MarkerExitPrefix + "143"}},
		{[]string{"/does/not/exist"}, []string{MarkerHello, MarkerExitPrefix + "127"}},
	} {
		out, err := exec.CommandContext(ctx, initBin, tc.args...).CombinedOutput()
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Errorf("init %q: %v\n%s", tc.args, err, out)
			continue
		}
		// Off PID 1, init exits with the command's code.
		if code := strings.TrimPrefix(tc.want[len(tc.want)-1], MarkerExitPrefix); ee == nil && code != "0" ||
			ee != nil && fmt.Sprint(ee.ExitCode()) != code {
			t.Errorf("init %q: exit status %v, want %s", tc.args, err, code)
		}
		lines := strings.Split(string(out), "\n")
		i := 0
		for _, l := range lines {
			if i < len(tc.want) && l == tc.want[i] {
				i++
			}
		}
		if i != len(tc.want) {
			t.Errorf("init %q printed:\n%s\nwant lines in order: %q", tc.args, out, tc.want)
		}
	}
}

// TestKernelConfig builds (or finds in the cache) the real guest kernel and
// checks it independently of build.sh: every fragment option in .config,
// the PVH entry note, DWARF, and our KUnit suite linked in.
func TestKernelConfig(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: building the guest kernel takes minutes")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	logf, err := os.CreateTemp(t.TempDir(), "build-*.log")
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	start := time.Now()
	k, err := Kernel(ctx, logf)
	if err != nil {
		tail, _ := os.ReadFile(logf.Name())
		if len(tail) > 8000 {
			tail = tail[len(tail)-8000:]
		}
		t.Fatalf("Kernel: %v\nlog tail:\n%s", err, tail)
	}
	t.Logf("Kernel() took %v: %s", time.Since(start), k.Dir)
	root, err := SourceDir()
	if err != nil {
		t.Fatal(err)
	}
	fragment, err := os.ReadFile(filepath.Join(root, "scripts", "guest-kernel", "config.fragment"))
	if err != nil {
		t.Fatal(err)
	}
	config, err := os.ReadFile(k.Config)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(parseConfig(fragment)); n < 50 {
		t.Errorf("fragment has only %d options", n)
	}
	if err := checkConfig(fragment, config); err != nil {
		t.Error(err)
	}

	f, err := elf.Open(k.VMLinux)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if !hasPVHNote(t, f) {
		t.Error("vmlinux has no Xen PHYS32_ENTRY note: PVH boot impossible")
	}
	if f.Section(".debug_info") == nil {
		t.Error("vmlinux has no .debug_info")
	}
	syms, err := os.ReadFile(k.SystemMap)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"start_kernel", "vmm_selftest_deliberate_failure", "kunit_run_all_tests"} {
		if !regexp.MustCompile(`(?m) ` + s + `$`).Match(syms) {
			t.Errorf("System.map lacks %s", s)
		}
	}
}

// hasPVHNote looks for the ELF note XEN_ELFNOTE_PHYS32_ENTRY (name "Xen",
// type 18), which marks a kernel bootable through the PVH entry point
// (x86/HVM direct boot ABI; arch/x86/platform/pvh/head.S).
func hasPVHNote(t *testing.T, f *elf.File) bool {
	t.Helper()
	for _, p := range f.Progs {
		if p.Type != elf.PT_NOTE {
			continue
		}
		b, err := io.ReadAll(p.Open())
		if err != nil {
			t.Fatal(err)
		}
		for len(b) >= 12 {
			namesz := binary.LittleEndian.Uint32(b[0:])
			descsz := binary.LittleEndian.Uint32(b[4:])
			typ := binary.LittleEndian.Uint32(b[8:])
			nameEnd := 12 + int((namesz+3)&^3)
			end := nameEnd + int((descsz+3)&^3)
			if end > len(b) || nameEnd > len(b) {
				break
			}
			name := strings.TrimRight(string(b[12:12+namesz]), "\x00")
			if name == "Xen" && typ == 18 {
				return true
			}
			b = b[end:]
		}
	}
	return false
}

// TestBootQEMUTCG boots the guest kernel and initramfs under QEMU's software
// emulator (TCG, so guest system calls work even on no-VMX hosts) to prove
// the images themselves are sound, independently of our VMM: /init runs and
// reports exit codes, power-off ends the machine, and the built-in KUnit
// suites run on request and report vmm_selftest's deliberate failure.
func TestBootQEMUTCG(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: may build the guest kernel (minutes)")
	}
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Skip("qemu-system-x86_64 not installed (apt-get install qemu-system-x86): the images are checked statically only")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	k, err := Kernel(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("VMM_CACHE_DIR", t.TempDir())
	initrd, err := Initramfs(ctx, InitramfsOptions{})
	if err != nil {
		t.Fatal(err)
	}
	boot := func(t *testing.T, cmdline string) string {
		t.Helper()
		bctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
		defer cancel()
		start := time.Now()
		out, err := exec.CommandContext(bctx, qemu, "-M", "pc", "-accel", "tcg", "-cpu", "max",
			"-m", "256", "-smp", "2", "-nographic", "-no-reboot", "-nodefaults", "-serial", "stdio",
			"-kernel", k.VMLinux, "-initrd", initrd,
			"-append", "console=ttyS0 panic=-1 "+cmdline).CombinedOutput()
		if bctx.Err() != nil {
			t.Fatalf("guest did not power off within the deadline; console:\n%s", out)
		}
		if err != nil {
			t.Fatalf("qemu: %v; console:\n%s", err, out)
		}
		t.Logf("boot with %q took %v", cmdline, time.Since(start))
		return string(out)
	}
	expectInOrder := func(t *testing.T, out string, want ...string) {
		t.Helper()
		rest := out
		for _, w := range want {
			i := strings.Index(rest, w)
			if i < 0 {
				t.Fatalf("console lacks %q (in order %q); console:\n%s", w, want, out)
			}
			rest = rest[i+len(w):]
		}
	}
	t.Run("init", func(t *testing.T) {
		// The guest /init runs a second copy of itself (not PID 1) with a
		// missing command: the inner copy reports 127 and exits with it, the
		// outer one reports that exit code and powers off.
		out := boot(t, `vmm.run="/init /no/such/command"`)
		expectInOrder(t, out, "Run /init as init process", MarkerHello, MarkerHello,
			MarkerExitPrefix+"127", MarkerExitPrefix+"127", "reboot: Power down")
		if strings.Contains(out, "KTAP") {
			t.Error("KUnit ran although kunit.enable was not given")
		}
	})
	t.Run("kunit", func(t *testing.T) {
		out := boot(t, "kunit.enable=1 kunit.filter_glob=vmm_selftest kunit_shutdown=poweroff")
		expectInOrder(t, out, "KTAP version 1", "# Subtest: vmm_selftest",
			"ok 1 vmm_selftest_arith", "not ok 5 vmm_selftest_deliberate_failure",
			"# vmm_selftest: pass:4 fail:1 skip:0 total:5", "not ok 1 vmm_selftest", "reboot: Power down")
		if strings.Contains(out, MarkerHello) {
			t.Error("init ran although kunit_shutdown=poweroff should have ended the boot")
		}
	})
}

// TestKernelEnv: $VMM_GUEST_KERNEL is returned as is when complete and
// refused, naming what is missing, when not.
func TestKernelEnv(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(KernelEnv, dir)
	if _, err := Kernel(context.Background(), nil); err == nil || !strings.Contains(err.Error(), "vmlinux") {
		t.Fatalf("empty kernel dir: err %v, want one naming vmlinux", err)
	}
	for _, f := range []string{"vmlinux", "bzImage", "System.map", ".config"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	k, err := Kernel(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if k.Dir != dir || k.VMLinux != filepath.Join(dir, "vmlinux") || k.BzImage != filepath.Join(dir, "bzImage") {
		t.Errorf("Kernel() = %+v", k)
	}
}

// TestInitEnv: with $VMM_GUEST_INIT the initramfs carries that binary as
// /init and needs neither the Go toolchain nor the source tree.
func TestInitEnv(t *testing.T) {
	dir := t.TempDir()
	initBin := filepath.Join(dir, "prebuilt-init")
	content := []byte("#!prebuilt init " + t.Name())
	if err := os.WriteFile(initBin, content, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv(InitEnv, initBin)
	t.Setenv("VMM_CACHE_DIR", filepath.Join(dir, "cache"))
	t.Setenv("VMM_SOURCE_DIR", dir) // no go.mod: no source tree
	t.Setenv("PATH", dir)           // no go tool
	p, err := Initramfs(context.Background(), InitramfsOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ents, err := ListInitramfs(p)
	if err != nil {
		t.Fatal(err)
	}
	if ents["init"].FileSize != uint64(len(content)) {
		t.Errorf("/init is %d bytes, want the prebuilt %d", ents["init"].FileSize, len(content))
	}
}
