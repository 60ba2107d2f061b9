package main

// docs/cli.md is generated from the CLI's own --help output, so the
// reference cannot drift from the binary: TestCLIDoc fails when it is stale
// and says how to regenerate it. The help and error texts a user reads are
// checked here too.

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/vmmgo/vmm/kvm/kvmtest"
)

var updateCLIDoc = flag.Bool("update", false, "rewrite docs/cli.md from the --help output")

const cliDocPath = "../../docs/cli.md"

// cliDoc renders the reference: the top-level help, then each command's.
func cliDoc(t *testing.T) []byte {
	t.Helper()
	saved := version
	version = "VERSION" // the document must not depend on the build
	defer func() { version = saved }()
	var b bytes.Buffer
	b.WriteString("# vmm command-line reference\n\n")
	b.WriteString("<!-- Generated from `vmm --help` and `vmm COMMAND --help` by\n")
	b.WriteString("     go test ./cmd/vmm -run TestCLIDoc -update\n")
	b.WriteString("     Do not edit by hand: change the flag definitions and usage texts in cmd/vmm. -->\n\n")
	b.WriteString("Flags take one or two dashes (`-memory 1G` and `--memory=1G` are the same).\n")
	b.WriteString("A flag's value may follow it as the next argument or after `=`; boolean\n")
	b.WriteString("flags take `=false` to turn them off.\n\n")
	b.WriteString("Commands:\n\n- [vmm](#vmm)\n")
	for _, c := range commands() {
		fmt.Fprintf(&b, "- [vmm %s](#vmm-%s): %s\n", c.name, c.name, c.summary)
	}
	b.WriteString("- [Equivalents: QEMU, Firecracker, Cloud Hypervisor](#equivalents-qemu-firecracker-cloud-hypervisor)\n")
	b.WriteString("- [Config file](#config-file)\n- [Control API](control-api.md)\n")
	writeEquivalents(&b)
	writeConfigSection(t, &b)
	section := func(title string, args ...string) {
		code, out, errOut := run(t, args...)
		if code != 0 {
			t.Fatalf("vmm %s: exit %d, want 0\n%s%s", strings.Join(args, " "), code, out, errOut)
		}
		if errOut != "" {
			t.Fatalf("vmm %s wrote to stderr: %q", strings.Join(args, " "), errOut)
		}
		text := out
		if !strings.HasPrefix(text, "Usage: vmm") && !strings.HasPrefix(text, "vmm VERSION") {
			t.Fatalf("vmm %s: help does not start with a usage line:\n%s", strings.Join(args, " "), text)
		}
		fmt.Fprintf(&b, "\n## %s\n\n```text\n%s```\n", title, strings.TrimRight(text, "\n")+"\n")
	}
	section("vmm", "--help")
	for _, c := range commands() {
		section("vmm "+c.name, c.name, "--help")
	}
	return b.Bytes()
}

// writeEquivalents renders the equivalents table (cmd/vmm/equivalents.go).
func writeEquivalents(b *bytes.Buffer) {
	b.WriteString("\n## Equivalents: QEMU, Firecracker, Cloud Hypervisor\n\n")
	b.WriteString("What users of other VMMs type, and what `vmm boot` takes. ✓ marks a spelling `vmm boot`\n")
	b.WriteString("accepts as it is (it sets the native flag, or is accepted with a note when it asks for what\n")
	b.WriteString("vmm does anyway); QEMU spellings vmm cannot honour are refused with the native one.\n")
	b.WriteString("Firecracker's `--config-file` JSON is read by `--config` (translated). TestEquivalents checks\n")
	b.WriteString("every ✓ against the native column.\n\n")
	b.WriteString("| what | QEMU | Firecracker | Cloud Hypervisor | vmm |\n|---|---|---|---|---|\n")
	cell := func(s string, ok bool) string {
		if s == "" {
			return ""
		}
		if strings.HasPrefix(s, "(") {
			return s
		}
		c := "`" + strings.ReplaceAll(s, "|", "\\|") + "`"
		if ok {
			c += " ✓"
		}
		return c
	}
	for _, e := range equivalents {
		vmmCell := cell(e.vmm, false)
		if e.vmm == "" {
			vmmCell = "(nothing to say: accepted with a note)"
		}
		fmt.Fprintf(b, "| %s | %s | %s | %s | %s |\n", e.what, cell(e.qemu, e.qemuOK), cell(e.firecracker, false), cell(e.cloudHV, e.chOK), vmmCell)
	}
}

// writeConfigSection documents --config with a file --print-config wrote.
func writeConfigSection(t *testing.T, b *bytes.Buffer) {
	b.WriteString("\n## Config file\n\n")
	b.WriteString("`vmm boot --config vm.json` reads the machine from a JSON file; `--print-config` prints the\n")
	b.WriteString("machine the other flags describe as such a file, so\n\n")
	b.WriteString("```sh\nvmm boot --kernel vmlinux --memory 1G --cpus 2 --disk root.img --rng --print-config > vm.json\nvmm boot --config vm.json            # the same machine (TestConfigRoundTrip)\nvmm boot --config vm.json --cpus 4   # flags override the file; --disk/--net add devices\n```\n\n")
	b.WriteString("The keys are the flag names with `_` for `-`. The first command writes:\n\n```json\n")
	b.WriteString(printConfig(t, "--kernel", "vmlinux", "--memory", "1G", "--cpus", "2", "--disk", "root.img", "--rng"))
	b.WriteString("```\n\nA Firecracker config file (`boot-source`, `machine-config`, `drives`,\n")
	b.WriteString("`network-interfaces`, `vsock`, `entropy`) is translated: `boot_args` is added after vmm's\n")
	b.WriteString("default command line, and a drive with `is_root_device` adds `root=/dev/vdX`.\n")
}

// TestCLIDoc fails when docs/cli.md differs from the current --help output.
func TestCLIDoc(t *testing.T) {
	got := cliDoc(t)
	if *updateCLIDoc {
		if err := os.WriteFile(cliDocPath, got, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s", filepath.Clean(cliDocPath))
		return
	}
	want, err := os.ReadFile(cliDocPath)
	if err != nil {
		t.Fatalf("%v\nGenerate it with: go test ./cmd/vmm -run TestCLIDoc -update", err)
	}
	if bytes.Equal(got, want) {
		return
	}
	gl, wl := strings.Split(string(got), "\n"), strings.Split(string(want), "\n")
	line := 0
	for line < len(gl) && line < len(wl) && gl[line] == wl[line] {
		line++
	}
	at := func(l []string) string {
		if line < len(l) {
			return l[line]
		}
		return "(end of file)"
	}
	t.Fatalf("docs/cli.md is stale (first difference at line %d):\n  docs/cli.md: %q\n  --help says: %q\n"+
		"Regenerate it with: go test ./cmd/vmm -run TestCLIDoc -update", line+1, at(wl), at(gl))
}

// TestEveryCommandHasHelp: each command answers --help, -h and `vmm help
// COMMAND` with its usage and exit code 0, and documents every flag it
// defines (flag.PrintDefaults lists them; a usage func that forgot it
// would not).
func TestEveryCommandHasHelp(t *testing.T) {
	for _, c := range commands() {
		for _, args := range [][]string{{c.name, "--help"}, {c.name, "-h"}, {"help", c.name}} {
			code, out, errOut := run(t, args...)
			text := out + errOut
			if code != 0 || !strings.HasPrefix(text, "Usage: vmm "+c.name) {
				t.Errorf("vmm %s: exit %d, output %q; want 0 and \"Usage: vmm %s\"", strings.Join(args, " "), code, text, c.name)
			}
		}
	}
	// Commands with flags list each one.
	for _, name := range []string{"boot", "run", "probe", "kunit"} {
		_, help, _ := run(t, name, "--help")
		if !strings.Contains(help, "Flags:\n") || !strings.Contains(help, "  -kvm path") {
			t.Errorf("vmm %s --help does not list its flags:\n%s", name, help)
		}
	}
}

// TestErrorsSayHowToFix: the failures a new user meets first name the
// problem and the fix (README "Using it"; the kvm and memory packages
// build these messages, the CLI prints them once).
func TestErrorsSayHowToFix(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "hlt.bin")
	if err := os.WriteFile(img, []byte{0xf4}, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"no device", []string{"run", "--image", img, "--kvm", filepath.Join(dir, "kvm")},
			[]string{"does not exist", "modprobe kvm_intel"}},
		{"not a KVM device", []string{"run", "--image", img, "--kvm", "/dev/null"},
			[]string{"/dev/null is not the KVM device"}},
		{"a directory", []string{"probe", "--kvm", dir},
			[]string{"is a directory, not the KVM device"}},
		{"missing image", []string{"run", "--image", filepath.Join(dir, "nope.bin")},
			[]string{"nope.bin", "no such file"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := run(t, tc.args...)
			if code != 1 {
				t.Errorf("exit %d, want 1", code)
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr %q does not say %q", stderr, w)
				}
			}
			if strings.Count(stderr, "\n") != 1 {
				t.Errorf("want the error on one line, printed once: %q", stderr)
			}
		})
	}

	t.Run("empty hugetlb pool", func(t *testing.T) {
		kvmtest.Open(t)
		const pool = "/sys/kernel/mm/hugepages/hugepages-1048576kB/free_hugepages"
		if b, err := os.ReadFile(pool); err != nil || strings.TrimSpace(string(b)) != "0" {
			t.Skipf("the 1 GiB hugetlb pool is not empty here (%q, %v): the case cannot be staged", b, err)
		}
		code, _, stderr := run(t, "run", "--image", img, "--memory-backend", "hugetlb", "--hugepage-size", "1G", "--memory", "1G")
		if code != 1 || !strings.Contains(stderr, "not enough hugetlb pages") ||
			!strings.Contains(stderr, "> /sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages") {
			t.Errorf("exit %d, stderr %q; want 1 and how to reserve pages", code, stderr)
		}
	})

	t.Run("no permission", func(t *testing.T) {
		kvmtest.Open(t)
		if os.Geteuid() != 0 {
			t.Skip("needs root to run the VMM as an unprivileged user")
		}
		st, err := os.Stat(kvmtest.Path())
		if err != nil || st.Mode().Perm()&0o006 == 0o006 {
			t.Skipf("%s is open to everyone (%v): the case cannot be staged", kvmtest.Path(), st.Mode())
		}
		bin := vmmBinary(t)
		if err := os.Chmod(filepath.Dir(bin), 0o755); err != nil {
			t.Fatal(err)
		}
		// The image must be readable by the user: next to the binary.
		pub := filepath.Join(filepath.Dir(bin), "hlt.bin")
		if err := os.WriteFile(pub, []byte{0xf4}, 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "run", "--image", pub, "--kvm", kvmtest.Path())
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		cmd.Env = append(os.Environ(), "HOME="+filepath.Dir(bin))
		out, _ := cmd.CombinedOutput()
		if cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != 1 ||
			!strings.Contains(string(out), "no permission") || !strings.Contains(string(out), "usermod -aG kvm") {
			t.Errorf("as uid 65534: %v, output %q; want exit 1 and how to get access", cmd.ProcessState, out)
		}
	})
}
