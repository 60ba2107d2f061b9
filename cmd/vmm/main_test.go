package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmmgo/vmm/kvm/kvmtest"
)

// run invokes the CLI in-process and returns its exit code and output.
func run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := realMain(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "Usage: vmm COMMAND"},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"boot", "--kernel", "k", "--memory", "10K"}, "--memory 10K: guest RAM must be at least 2M"},
		{[]string{"boot", "--kernel", "k", "--cpus", "0"}, "--cpus 0: must be between 1 and"},
		{[]string{"boot", "--kernel", "k", "-smp", "999"}, "--cpus 999"},
		{[]string{"boot", "--kernel", "k", "--memory", "lots"}, "--memory: size \"lots\""},
		{[]string{"boot", "--kernel", "k", "--memory-backend", "tmpfs"}, `--memory-backend "tmpfs"`},
		{[]string{"boot", "--kernel", "k", "--hugepage-size", "4M"}, `--hugepage-size "4M"`},
		{[]string{"boot", "--kernel", "k", "--cpu-profile", "fast"}, `--cpu-profile "fast"`},
		{[]string{"boot", "--kernel", "k", "--console", "tty"}, `--console "tty"`},
		{[]string{"boot", "--kernel", "k", "--bogus"}, "unknown flag --bogus"},
		{[]string{"boot", "--kernel", "k", "extra"}, `unexpected argument "extra"`},
		{[]string{"run"}, "--image is required"},
		{[]string{"run", "--image", "x", "--addr", "zz"}, `--addr "zz"`},
		{[]string{"run", "--image", "x", "--gdb-wait"}, "--gdb-wait needs --gdb"},
	} {
		code, _, stderr := run(t, tc.args...)
		if code != 2 || !strings.Contains(stderr, tc.want) {
			t.Errorf("vmm %q: exit %d, stderr %q; want exit 2 and %q", tc.args, code, stderr, tc.want)
		}
	}
}

func TestHelpAndVersion(t *testing.T) {
	code, out, _ := run(t, "--help")
	if code != 0 || !strings.Contains(out, "Exit codes:") {
		t.Errorf("--help: exit %d, %q", code, out)
	}
	for _, sub := range []string{"boot", "run", "probe"} {
		code, stdout, stderr := run(t, sub, "--help")
		if code != 0 || !strings.Contains(stdout, "Usage: vmm "+sub) || stderr != "" {
			t.Errorf("%s --help: exit %d, stdout %q, stderr %q", sub, code, stdout, stderr)
		}
	}
	code, out, _ = run(t, "--version")
	if code != 0 || !strings.HasPrefix(out, "vmm ") {
		t.Errorf("--version: exit %d, %q", code, out)
	}
}

// TestBadKernelInput: each bad input gets exit 1 and a message that says
// what is wrong, before any guest runs.
func TestBadKernelInput(t *testing.T) {
	kvmtest.Open(t)
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	notKernel := write("notkernel", []byte("#!/bin/sh\necho hello\n"))
	empty := write("empty", nil)
	// A bzImage header cut short: boot sector with HdrS but no payload.
	trunc := make([]byte, 0x300)
	copy(trunc[0x1fe:], []byte{0x55, 0xaa})
	copy(trunc[0x202:], "HdrS")
	trunc[0x1f1] = 30 // setup_sects far beyond the file
	truncated := write("truncated", trunc)
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"missing", []string{"--kernel", filepath.Join(dir, "nope")}, "no such file"},
		{"empty", []string{"--kernel", empty}, "is empty"},
		{"not a kernel", []string{"--kernel", notKernel}, "not a kernel"},
		{"truncated bzImage", []string{"--kernel", truncated}, "bzImage"},
		{"missing initrd", []string{"--kernel", notKernel, "--initrd", filepath.Join(dir, "nord")}, "initrd"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := run(t, append([]string{"boot", "--console", "none", "--memory", "64M"}, tc.args...)...)
			if code != 1 || !strings.Contains(stderr, tc.want) {
				t.Errorf("exit %d, stderr %q; want exit 1 and %q", code, stderr, tc.want)
			}
		})
	}
}

func TestNoKVMDevice(t *testing.T) {
	code, _, stderr := run(t, "probe", "--kvm", "/nonexistent/kvm")
	if code != 1 || !strings.Contains(stderr, "/nonexistent/kvm") {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
}
