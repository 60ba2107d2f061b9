package ktap

import (
	"reflect"
	"testing"
)

// FuzzParse feeds arbitrary console bytes: the parser must not panic, must
// give the same tree whether the bytes come at once or in pieces, and its
// summary must agree with the tree.
func FuzzParse(f *testing.F) {
	f.Add(kunit61, 7)
	f.Add("KTAP version 1\n1..1\n    # Subtest: s\n    ok 1 a\nok 1 s\n", 3)
	f.Add("TAP version 14\n1..2\nok 1 - a # SKIP\nnot ok 2 b # TODO x\n", 1)
	f.Add("KTAP version 1\n1..3\n    KTAP version 1\n        KTAP version 1\nok\nnot ok 99999999999999999999 x\n", 2)
	f.Add("KTAP version 1\n1..4294967296\n    1..70000\n", 9)
	f.Add("x KTAP version 1\nx 1..1\nx     ok 1\nKernel panic - not syncing: x\n", 5)
	f.Fuzz(func(t *testing.T, in string, chunk int) {
		whole := ParseString(in)

		p := NewParser()
		if chunk <= 0 {
			chunk = 1
		}
		for i := 0; i < len(in); i += chunk {
			p.Write([]byte(in[i:min(len(in), i+chunk)]))
		}
		pieces := p.Finish()
		if !reflect.DeepEqual(flat(whole), flat(pieces)) || whole.Status != pieces.Status || whole.Summary != pieces.Summary {
			t.Fatalf("chunked parse differs: %q vs %q", flat(whole), flat(pieces))
		}

		leaves := 0
		bad := false
		whole.Root.Walk(func(_ []string, n *Test) {
			if len(n.Subtests) == 0 {
				leaves++
				if !n.Status.OK() {
					bad = true
				}
			}
			if n.Status < StatusCrashed || n.Status > StatusNoTests {
				t.Fatalf("invalid status %d", n.Status)
			}
		})
		if whole.Summary.Total() != leaves {
			t.Fatalf("summary counts %d tests, tree has %d leaves", whole.Summary.Total(), leaves)
		}
		if whole.Status == StatusPass && (bad || whole.Summary.Errors > 0 || !whole.Found) {
			t.Fatalf("run reported PASSED with failures/errors: %+v", whole.Summary)
		}
		if !whole.Found && len(whole.Root.Subtests) != 0 {
			t.Fatal("tests without a KTAP header")
		}
	})
}
