package main

import "testing"

func TestSampleStats(t *testing.T) {
	s := sample{3, 1, 2, 10}
	if s.median() != 2.5 || s.min() != 1 || s.max() != 10 {
		t.Fatalf("median %v min %v max %v", s.median(), s.min(), s.max())
	}
	if (sample{5, 1, 3}).median() != 3 || (sample{}).median() != 0 {
		t.Fatal("odd/empty median")
	}
	if got := ratio(sample{2}, sample{4}); got != "0.50×" {
		t.Fatalf("ratio = %q", got)
	}
	if got := ratio(sample{2}, nil); got != "–" {
		t.Fatalf("ratio without peer = %q", got)
	}
	if got := fmtDur(0.0000155); got != "15.50 µs" {
		t.Fatalf("fmtDur = %q", got)
	}
}
