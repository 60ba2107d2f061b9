package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmmgo/vmm/internal/guestimage"
	"github.com/vmmgo/vmm/kvm/kvmtest"
)

// fakeKernelCache points scripts/guest-kernel/build.sh (through the
// environment, for this test and the processes it starts) at a private
// cache whose kernel source is a tiny tarball holding src (path ->
// contents, under linux/), and returns the cache entry directory the
// script will look in, not yet filled.
func fakeKernelCache(t *testing.T, src map[string]string) (cache, entry string) {
	t.Helper()
	base := t.TempDir()
	cache, input, tree := filepath.Join(base, "cache"), filepath.Join(base, "input"), filepath.Join(base, "tree", "linux")
	for p, body := range map[string]string{filepath.Join(input, "config.fragment"): "CONFIG_TEST=y\n", filepath.Join(tree, "Makefile"): "all:\n"} {
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, []byte(body), 0o644)
	}
	for p, body := range src {
		os.MkdirAll(filepath.Dir(filepath.Join(tree, p)), 0o755)
		os.WriteFile(filepath.Join(tree, p), []byte(body), 0o644)
	}
	tarball := filepath.Join(base, "linux-test.tar")
	if out, err := exec.Command("tar", "-cf", tarball, "-C", filepath.Dir(tree), "linux").CombinedOutput(); err != nil {
		t.Fatalf("tar: %v\n%s", err, out)
	}
	// The pristine tree build.sh extracts before a build (a cache hit does
	// not extract): cache/src/<source version with [^A-Za-z0-9.+-] as _>.
	st, err := os.Stat(tarball)
	if err != nil {
		t.Fatal(err)
	}
	ver := []byte(fmt.Sprintf("tarball %s %d %d", filepath.Base(tarball), st.Size(), st.ModTime().Unix()))
	for i, c := range ver {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '+' || c == '-') {
			ver[i] = '_'
		}
	}
	os.MkdirAll(filepath.Join(cache, "src"), 0o755)
	if out, err := exec.Command("cp", "-a", tree, filepath.Join(cache, "src", string(ver))).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v\n%s", err, out)
	}
	t.Setenv("VMM_CACHE_DIR", cache)
	t.Setenv("VMM_KERNEL_SOURCE", tarball)
	t.Setenv("VMM_KERNEL_INPUT_DIR", input)
	t.Setenv("VMM_KERNEL_NO_INSTALL", "1")
	root, err := guestimage.SourceDir()
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("bash", filepath.Join(root, "scripts/guest-kernel/build.sh"), "--print-dir").Output()
	if err != nil {
		t.Fatalf("build.sh --print-dir: %v", err)
	}
	entry = strings.TrimSpace(string(out))
	if !strings.HasPrefix(entry, cache+"/kernel-") {
		t.Fatalf("build.sh --print-dir = %q, not under %s", entry, cache)
	}
	return cache, entry
}

// fillEntry writes a complete cache entry with vmlinux as given.
func fillEntry(t *testing.T, entry string, vmlinux []byte) {
	t.Helper()
	os.MkdirAll(entry, 0o755)
	for name, body := range map[string][]byte{"vmlinux": vmlinux, "bzImage": []byte("bz"), "System.map": nil, ".config": []byte("CONFIG_TEST=y\n")} {
		if err := os.WriteFile(filepath.Join(entry, name), body, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestBootDefaultKernel: `vmm boot` without --kernel boots the cached
// project kernel, as `vmm kunit` does, and says so.
func TestBootDefaultKernel(t *testing.T) {
	kvmtest.Open(t)
	_, entry := fakeKernelCache(t, nil)
	fillEntry(t, entry, []byte("not a kernel, but the cache's")) // the load fails after the lookup: no guest runs
	code, _, errOut := run(t, "boot", "--console", "none", "--memory", "64M")
	for _, want := range []string{"no --kernel: booting the cached project kernel", "kernel " + filepath.Join(entry, "vmlinux"), "not a kernel"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errOut)
		}
	}
	if code != 1 {
		t.Errorf("exit %d, want 1 (the fake kernel does not load)", code)
	}
}

// TestGDBSourcePaths: the kernel build tree is deleted after a build, so
// gdb could not show source lines; build.sh writes vmlinux-gdb.gdb next to
// vmlinux, which maps the build directory named in the DWARF to the
// pristine source. Staged with a small C program "built" in a temporary
// tree of the cache, as the kernel is.
func TestGDBSourcePaths(t *testing.T) {
	for _, tool := range []string{"gcc", "gdb", "readelf", "tar"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed: %v", tool, err)
		}
	}
	const mainC = "int start_kernel(void) { return 42; /* VMM-GDB-SOURCE-MARKER */ }\nint main(void) { return start_kernel(); }\n"
	cache, entry := fakeKernelCache(t, map[string]string{"init/main.c": mainC})
	build := filepath.Join(cache, ".kernel-test.XXXX", "linux")
	os.MkdirAll(filepath.Join(build, "init"), 0o755)
	os.WriteFile(filepath.Join(build, "init/main.c"), []byte(mainC), 0o644)
	cc := exec.Command("gcc", "-g", "-O0", "-o", "vmlinux", "init/main.c") // relative, as kbuild does
	cc.Dir = build
	if out, err := cc.CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	vmlinux, err := os.ReadFile(filepath.Join(build, "vmlinux"))
	if err != nil {
		t.Fatal(err)
	}
	fillEntry(t, entry, vmlinux)
	os.RemoveAll(filepath.Dir(build)) // as build.sh does
	gdbList := func(args ...string) string {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "gdb", append(append([]string{"-batch", "-nx"}, args...), "-ex", "list start_kernel", filepath.Join(entry, "vmlinux"))...)
		out, _ := cmd.CombinedOutput()
		return string(out)
	}
	if out := gdbList(); strings.Contains(out, "VMM-GDB-SOURCE-MARKER") {
		t.Fatalf("gdb finds the source without help; the test stages nothing:\n%s", out)
	}
	var log bytes.Buffer
	k, err := guestimage.Kernel(context.Background(), &log) // a cache hit: writes the gdb file
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	gdbinit := filepath.Join(k.Dir, "vmlinux-gdb.gdb")
	script, err := os.ReadFile(gdbinit)
	if err != nil {
		t.Fatalf("no gdb file: %v\n%s", err, log.String())
	}
	if out := gdbList("-x", gdbinit); !strings.Contains(out, "VMM-GDB-SOURCE-MARKER") {
		t.Errorf("gdb -x %s cannot list start_kernel:\n%s\nscript:\n%s", gdbinit, out, script)
	}
}
