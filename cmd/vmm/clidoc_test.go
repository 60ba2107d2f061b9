package main

// docs/cli.md is generated from the CLI's own --help output, so the
// reference cannot drift from the binary: TestCLIDoc fails when it is stale
// and says how to regenerate it.

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
	section := func(title string, args ...string) {
		code, out, errOut := run(t, args...)
		if code != 0 {
			t.Fatalf("vmm %s: exit %d, want 0\n%s%s", strings.Join(args, " "), code, out, errOut)
		}
		text := out + errOut // commands print their usage on stderr
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
		_, _, help := run(t, name, "--help")
		if !strings.Contains(help, "Flags:\n") || !strings.Contains(help, "  -kvm path") {
			t.Errorf("vmm %s --help does not list its flags:\n%s", name, help)
		}
	}
}
