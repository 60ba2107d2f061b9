package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// gokvmModule and gokvmVersion pin gokvm. The Go module proxy serves only
// this pseudo-version (2023-10-03, commit f53faca69d28): newer commits of
// bobuhiro11/gokvm are not available from proxy.golang.org ("This module
// version is not available"). It builds with current Go and has PVH boot.
const (
	gokvmModule  = "github.com/bobuhiro11/gokvm"
	gokvmVersion = "v0.0.8-0.20231003020000-f53faca69d28"
)

// run executes a helper command, returning its combined output in errors.
func run(ctx context.Context, dir string, env []string, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	// `go run` leaves its child running when killed: stop the group.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, lastLines(out.String(), 5))
	}
	return out.String(), nil
}

// ensureQEMU finds qemu-system-x86_64, installing Debian's qemu-system-x86
// with apt-get when it is missing (we run as root on the bench hosts).
func ensureQEMU(ctx context.Context, logf func(string, ...any)) (path, version string, err error) {
	path, err = exec.LookPath("qemu-system-x86_64")
	if err != nil {
		if os.Geteuid() != 0 {
			return "", "", fmt.Errorf("qemu-system-x86_64 not installed and not root: apt-get install qemu-system-x86")
		}
		logf("installing qemu-system-x86 with apt-get")
		env := []string{"DEBIAN_FRONTEND=noninteractive"}
		if _, err := run(ctx, "", env, "apt-get", "install", "-y", "--no-install-recommends", "qemu-system-x86"); err != nil {
			if _, uerr := run(ctx, "", env, "apt-get", "update"); uerr != nil {
				return "", "", uerr
			}
			if _, err := run(ctx, "", env, "apt-get", "install", "-y", "--no-install-recommends", "qemu-system-x86"); err != nil {
				return "", "", err
			}
		}
		if path, err = exec.LookPath("qemu-system-x86_64"); err != nil {
			return "", "", fmt.Errorf("qemu-system-x86_64 still missing after apt-get: %w", err)
		}
	}
	out, err := run(ctx, "", nil, path, "--version")
	if err != nil {
		return "", "", err
	}
	return path, firstLine(out), nil
}

// ensureGokvm builds gokvm at the pinned version into cache/gokvm-VERSION
// with `go install` (module mode, outside this module).
func ensureGokvm(ctx context.Context, cache string, logf func(string, ...any)) (string, error) {
	dir := filepath.Join(cache, "gokvm-"+gokvmVersion)
	bin := filepath.Join(dir, "gokvm")
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	gobin, err := goTool()
	if err != nil {
		return "", err
	}
	logf("building gokvm %s with go install", gokvmVersion)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	env := []string{"GOBIN=" + dir, "GOFLAGS=-mod=mod", "CGO_ENABLED=0"}
	if _, err := run(ctx, os.TempDir(), env, gobin, "install", gokvmModule+"@"+gokvmVersion); err != nil {
		return "", fmt.Errorf("build gokvm: %w", err)
	}
	return bin, nil
}

// buildOurs builds cmd/vmm from the source tree, static as the Makefile
// builds it (no libc mapped: about 1 MiB less resident).
func buildOurs(ctx context.Context, root, cache string) (string, error) {
	gobin, err := goTool()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(cache, "vmm")
	if _, err := run(ctx, root, []string{"CGO_ENABLED=0"}, gobin, "build", "-o", bin, "./cmd/vmm"); err != nil {
		return "", fmt.Errorf("build our VMM: %w", err)
	}
	return bin, nil
}

func goTool() (string, error) {
	if p, err := exec.LookPath("go"); err == nil {
		return p, nil
	}
	for _, p := range []string{filepath.Join(os.Getenv("GOROOT"), "bin", "go"), "/usr/local/go/bin/go"} {
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p, nil
		}
	}
	return "", fmt.Errorf("go toolchain not found")
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return strings.TrimSpace(s[:i])
	}
	return s
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\r\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " / ")
}
