package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReplaceResults(t *testing.T) {
	p := filepath.Join(t.TempDir(), "benchmarks-doc")
	orig := "# Bench\n\nmethod text\n\n## Results of 2026-11-22\n\nold quiet table\n"
	if err := os.WriteFile(p, []byte(orig), 0o644); err != nil {
		t.Fatal(err)
	}
	step := func(label, rep string, want ...string) string {
		t.Helper()
		if err := replaceResults(p, label, rep); err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(p)
		s := string(b)
		for _, w := range want {
			if !strings.Contains(s, w) {
				t.Fatalf("after %s: lacks %q:\n%s", label, w, s)
			}
		}
		return s
	}
	s := step("quiet", "## Results of 2026-12-02 (quiet)\n\nnew quiet\n", "method text", "new quiet")
	if strings.Contains(s, "old quiet") {
		t.Fatalf("old unlabelled (quiet) section kept:\n%s", s)
	}
	s = step("two CPU hogs", "## Results of 2026-12-02 (two CPU hogs)\n\nhog table\n", "new quiet", "hog table")
	if strings.Index(s, "new quiet") > strings.Index(s, "hog table") {
		t.Fatalf("order:\n%s", s)
	}
	s = step("quiet", "## Results of 2026-12-03 (quiet)\n\nnewer quiet\n", "newer quiet", "hog table")
	if strings.Contains(s, "new quiet\n") || strings.Count(s, "## Results of") != 2 {
		t.Fatalf("quiet section not replaced exactly once:\n%s", s)
	}
}

func TestStartHogs(t *testing.T) {
	stop, err := startHogs(2)
	if err != nil {
		t.Fatal(err)
	}
	stop()
	stop() // idempotent
}
