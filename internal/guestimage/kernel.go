package guestimage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// KernelImages are the files of one cached guest kernel build.
type KernelImages struct {
	Dir       string // the cache entry, kernel-<hash>/
	VMLinux   string // uncompressed ELF with DWARF and the PVH note: boot this one
	BzImage   string // compressed bzImage (decompression is slow on no-VMX hosts)
	SystemMap string
	Config    string // the kernel .config
	BuildLog  string
}

// kernelScript is build.sh relative to the source tree.
const kernelScript = "scripts/guest-kernel/build.sh"

// Kernel returns the cached guest kernel for the current
// scripts/guest-kernel inputs, running build.sh to build it when missing
// (minutes; apt-get installs what is missing when running as root). Progress
// goes to log (nil: discarded). Cancelling ctx stops the build; the cache
// never holds a half-finished entry.
//
// With $VMM_GUEST_KERNEL set (KernelEnv) it returns that directory, laid out
// like a cache entry (vmlinux, bzImage, System.map, .config), without
// running anything: for hosts without the build tools, such as the L1 guest
// of scripts/nested-kvm.sh.
func Kernel(ctx context.Context, log io.Writer) (KernelImages, error) {
	if dir := os.Getenv(KernelEnv); dir != "" {
		k, err := kernelImagesIn(dir)
		if err != nil {
			return k, fmt.Errorf("%s=%s: %w", KernelEnv, dir, err)
		}
		return k, nil
	}
	return kernel(ctx, log, nil)
}

// KernelEnv names a prebuilt kernel directory that Kernel returns as is.
const KernelEnv = "VMM_GUEST_KERNEL"

// kernelImagesIn returns the images of a kernel directory, checking that
// each file is there.
func kernelImagesIn(dir string) (KernelImages, error) {
	k := KernelImages{
		Dir:       dir,
		VMLinux:   filepath.Join(dir, "vmlinux"),
		BzImage:   filepath.Join(dir, "bzImage"),
		SystemMap: filepath.Join(dir, "System.map"),
		Config:    filepath.Join(dir, ".config"),
		BuildLog:  filepath.Join(dir, "build.log"),
	}
	for _, p := range []string{k.VMLinux, k.BzImage, k.SystemMap, k.Config} {
		if _, err := os.Stat(p); err != nil {
			return KernelImages{}, fmt.Errorf("kernel directory %s incomplete: %w", dir, err)
		}
	}
	return k, nil
}

// kernel is Kernel with extra environment for build.sh (tests redirect its
// inputs and cache with it).
func kernel(ctx context.Context, log io.Writer, env []string) (KernelImages, error) {
	out, err := runKernelScript(ctx, log, env)
	if err != nil {
		return KernelImages{}, err
	}
	dir := lastLine(out)
	if dir == "" {
		return KernelImages{}, fmt.Errorf("%s printed no cache directory", kernelScript)
	}
	return kernelImagesIn(dir)
}

// KernelKey returns the cache key (hash) of the current kernel inputs
// without building anything; CI can use it as a cache key.
func KernelKey(ctx context.Context) (string, error) {
	out, err := runKernelScript(ctx, nil, nil, "--print-key")
	if err != nil {
		return "", err
	}
	return lastLine(out), nil
}

// runKernelScript runs build.sh with args; env entries are added to the
// environment (tests use them to redirect inputs). It returns stdout.
func runKernelScript(ctx context.Context, log io.Writer, env []string, args ...string) (string, error) {
	root, err := SourceDir()
	if err != nil {
		return "", err
	}
	return runScript(ctx, log, filepath.Join(root, kernelScript), root, env, args...)
}

// runScript runs a bash script of the source tree in root with the cache
// directory in VMM_CACHE_DIR and returns its stdout (stderr goes to log).
func runScript(ctx context.Context, log io.Writer, script, root string, env []string, args ...string) (string, error) {
	if log == nil {
		log = io.Discard
	}
	name, _ := filepath.Rel(root, script)
	cmd := exec.CommandContext(ctx, "bash", append([]string{script}, args...)...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "VMM_CACHE_DIR="+CacheDir())
	cmd.Env = append(cmd.Env, env...)
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = log
	// The script runs make and compilers: cancel the whole process group,
	// politely first so its EXIT trap removes the temporary build tree.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	}
	cmd.WaitDelay = 20 * time.Second
	err := cmd.Run()
	if ctx.Err() != nil {
		return "", fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), ctx.Err())
	}
	if err != nil {
		return "", fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
	}
	return stdout.String(), nil
}

// lastLine returns the last non-empty line of s, trimmed.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

// configOption is one line of a Kconfig fragment: Value is "y", "m", a number
// or a quoted string, or "n" for "# CONFIG_X is not set".
type configOption struct {
	Name, Value string
}

// parseConfig reads the options of a Kconfig fragment or .config; other
// comments and blank lines are skipped.
func parseConfig(data []byte) []configOption {
	var opts []configOption
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if name, ok := strings.CutPrefix(line, "# "); ok {
			if n, ok := strings.CutSuffix(name, " is not set"); ok && strings.HasPrefix(n, "CONFIG_") {
				opts = append(opts, configOption{n, "n"})
			}
			continue
		}
		if name, val, ok := strings.Cut(line, "="); ok && strings.HasPrefix(name, "CONFIG_") {
			opts = append(opts, configOption{name, val})
		}
	}
	return opts
}

// checkConfig returns an error naming every fragment option that config does
// not have as asked ("n" is satisfied by "is not set" or by absence).
func checkConfig(fragment, config []byte) error {
	have := map[string]string{}
	for _, o := range parseConfig(config) {
		have[o.Name] = o.Value
	}
	var bad []string
	for _, o := range parseConfig(fragment) {
		got, ok := have[o.Name]
		if !ok {
			got = "n"
		}
		if got != o.Value {
			bad = append(bad, fmt.Sprintf("%s: want %s, have %s", o.Name, o.Value, got))
		}
	}
	if len(bad) > 0 {
		return errors.New("kernel config lacks fragment options: " + strings.Join(bad, "; "))
	}
	return nil
}
