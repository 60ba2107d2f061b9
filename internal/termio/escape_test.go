package termio

import (
	"reflect"
	"strings"
	"testing"
)

func TestEscapeFilter(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      []string // successive reads
		forward string
		actions []Action
	}{
		{"plain", []string{"ls -l\r"}, "ls -l\r", nil},
		{"double escape", []string{"a\x01\x01b"}, "a\x01b", nil},
		{"stats and help", []string{"\x01s", "x\x01h\x01?"}, "x", []Action{ActionStats, ActionHelp, ActionHelp}},
		{"quit drops the rest", []string{"ab\x01xcd", "more"}, "ab", []Action{ActionQuit}},
		{"split across reads", []string{"abc\x01", "x"}, "abc", []Action{ActionQuit}},
		{"split escape escape", []string{"\x01", "\x01z"}, "\x01z", nil},
		{"unknown command dropped", []string{"\x01qrest"}, "rest", nil},
		{"ctrl-c forwarded", []string{"\x03"}, "\x03", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var f EscapeFilter
			var fwd strings.Builder
			var acts []Action
			for _, s := range tc.in {
				out, a := f.Filter([]byte(s))
				fwd.Write(out)
				acts = append(acts, a...)
			}
			if fwd.String() != tc.forward {
				t.Errorf("forwarded %q, want %q", fwd.String(), tc.forward)
			}
			if !reflect.DeepEqual(acts, tc.actions) {
				t.Errorf("actions %v, want %v", acts, tc.actions)
			}
		})
	}
}

func TestEscapeFilterCustomAndNoAlloc(t *testing.T) {
	f := EscapeFilter{Escape: 0x1D} // Ctrl-]
	in := []byte("a\x01b")
	out, _ := f.Filter(in)
	if &out[0] != &in[0] {
		t.Error("clean input was copied")
	}
	out, acts := f.Filter([]byte("\x1dx"))
	if len(out) != 0 || len(acts) != 1 || acts[0] != ActionQuit {
		t.Errorf("custom escape: %q %v", out, acts)
	}
	if h := f.Help(); !strings.Contains(h, "Ctrl-] x    quit") {
		t.Errorf("help %q", h)
	}
	var d EscapeFilter
	if h := d.Help(); !strings.Contains(h, "Ctrl-a x") {
		t.Errorf("default help %q", h)
	}
	clean := []byte("hello, guest\r")
	if allocs := testing.AllocsPerRun(100, func() { d.Filter(clean) }); allocs != 0 {
		t.Errorf("%v allocations filtering clean input", allocs)
	}
}

func FuzzEscapeFilter(f *testing.F) {
	f.Add([]byte("ab\x01\x01c\x01s"), uint8(3))
	f.Add([]byte("\x01x"), uint8(1))
	f.Fuzz(func(t *testing.T, in []byte, chunk uint8) {
		// Splitting the input into reads never changes the result.
		var whole EscapeFilter
		wantOut, wantActs := whole.Filter(append([]byte(nil), in...))
		var split EscapeFilter
		var out []byte
		var acts []Action
		n := 1 + int(chunk)%7
		for i := 0; i < len(in); i += n {
			o, a := split.Filter(in[i:min(i+n, len(in))])
			out = append(out, o...)
			acts = append(acts, a...)
		}
		if string(out) != string(wantOut) || !reflect.DeepEqual(acts, wantActs) {
			t.Fatalf("split %d: %q %v, whole: %q %v", n, out, acts, wantOut, wantActs)
		}
		if len(out) > len(in) {
			t.Fatal("forwarded more than read")
		}
	})
}
