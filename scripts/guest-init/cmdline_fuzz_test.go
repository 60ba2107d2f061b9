package main

import (
	"strings"
	"testing"
)

// FuzzSplitCmdline: the kernel command line (whatever the host passed) never
// panics /init, and splitting only drops quotes and unquoted separators:
// the parameters, joined, are the input without them.
func FuzzSplitCmdline(f *testing.F) {
	for _, s := range []string{"", `vmm.run="ls -l /" panic=-1`, `"a=b c" d`, `a="" b`, `unterminated="a b`, "\t\n x \"", "vmm.run= -- vmm.run=x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var want strings.Builder
		inQuote := false
		for _, r := range s {
			switch {
			case r == '"':
				inQuote = !inQuote
			case !inQuote && (r == ' ' || r == '\t' || r == '\n'):
			default:
				want.WriteRune(r)
			}
		}
		got := splitCmdline(s)
		if j := strings.Join(got, ""); j != want.String() {
			t.Fatalf("splitCmdline(%q) = %q: joined %q, want %q", s, got, j, want.String())
		}
		if !strings.ContainsRune(s, '"') {
			if f := strings.FieldsFunc(s, func(r rune) bool { return r == ' ' || r == '\t' || r == '\n' }); len(f) != len(got) {
				t.Fatalf("splitCmdline(%q) = %q, want the fields %q", s, got, f)
			}
		}
		_ = commandFromCmdline(s)
	})
}
