package main

import (
	"image/png"
	"os"
	"path/filepath"
	"testing"
)

func TestChartPanelsAndPNG(t *testing.T) {
	r1 := newRow("Start-up: x", "time")
	r1.values[vmmOurs] = sample{0.01, 0.012}
	r1.values[vmmQEMU] = sample{0.1}
	r1.notes[vmmGokvm] = "cannot"
	r2 := newRow("Linux boot: y (ours: anon memory)", "time")
	r2.values[vmmOurs] = sample{50}
	r2.notes[vmmQEMU] = "KVM internal error"
	r3 := newRow("Linux boot: y (ours: memfd memory)", "time")
	r3.values[vmmOurs] = sample{51, 52}
	ps := panels([]*row{r1, r2, r3})
	if len(ps) != 2 {
		t.Fatalf("%d panels, want 2", len(ps))
	}
	if len(ps[0].bars) != 3 || len(ps[1].bars) != 3 {
		t.Fatalf("bars: %d and %d, want 3 and 3 (%+v)", len(ps[0].bars), len(ps[1].bars), ps[1].bars)
	}
	if ps[1].bars[0].label != "ours, anon" || ps[1].bars[2].label != "ours, memfd" || ps[1].title != "Linux boot: y" {
		t.Fatalf("linux panel %q: %+v", ps[1].title, ps[1].bars)
	}
	path := filepath.Join(t.TempDir(), "c.png")
	if err := writeChart(path, &bench{rows: []*row{r1, r2, r3}}); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	if img.Bounds().Dx() != chartW || img.Bounds().Dy() < 150 {
		t.Fatalf("image %v", img.Bounds())
	}
}
