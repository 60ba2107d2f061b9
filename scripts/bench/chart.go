package main

import (
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"os"
	"regexp"
	"strings"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

// The chart: one panel per measured quantity, horizontal bars (median) with
// min–max whiskers, drawn with the standard image packages and x/image's
// 7x13 bitmap font.

type bar struct {
	label string
	vmm   string
	s     sample
	note  string
}

type panel struct {
	title string
	unit  string
	scale float64 // value * scale = shown number
	bars  []bar
}

var backendRE = regexp.MustCompile(`\(ours: ([a-z_]+) memory\)`)

// panels groups the table rows into chart panels: the Linux-boot rows of
// all backends share one panel, and so do the footprint-at-init rows.
func panels(rows []*row) []*panel {
	var out []*panel
	groups := map[string]*panel{}
	for _, r := range rows {
		title, unit, scale := r.workload, "ms", 1e3
		if r.kind == "bytes" {
			unit, scale = "MiB", 1.0/(1<<20)
		}
		if strings.HasPrefix(r.workload, "Exit cost") {
			unit, scale = "µs per exit", 1e6
		}
		backend := ""
		if m := backendRE.FindStringSubmatch(r.workload); m != nil {
			backend = m[1]
			title = strings.TrimSpace(backendRE.ReplaceAllString(r.workload, ""))
		}
		if strings.HasPrefix(r.workload, "Linux boot") {
			unit, scale = "s", 1
		}
		p := groups[title]
		if p == nil {
			p = &panel{title: title, unit: unit, scale: scale}
			groups[title] = p
			out = append(out, p)
		}
		for _, v := range vmmNames {
			s, note := r.values[v], r.notes[v]
			if len(s) == 0 && note == "" {
				continue
			}
			label := v
			if v == vmmOurs && backend != "" {
				label = "ours, " + backend
			}
			if v != vmmOurs && backend != "" && hasLabel(p, v) {
				continue
			}
			p.bars = append(p.bars, bar{label: label, vmm: v, s: s, note: note})
		}
	}
	return out
}

func hasLabel(p *panel, l string) bool {
	for _, b := range p.bars {
		if b.label == l {
			return true
		}
	}
	return false
}

var (
	colOurs  = color.RGBA{0x1f, 0x77, 0xb4, 0xff}
	colQEMU  = color.RGBA{0xff, 0x7f, 0x0e, 0xff}
	colGokvm = color.RGBA{0x2c, 0xa0, 0x2c, 0xff}
	colFloor = color.RGBA{0x7f, 0x7f, 0x7f, 0xff}
	colText  = color.RGBA{0x20, 0x20, 0x20, 0xff}
	colGrey  = color.RGBA{0x80, 0x80, 0x80, 0xff}
	colAxis  = color.RGBA{0xc0, 0xc0, 0xc0, 0xff}
)

func vmmColor(v string) color.Color {
	switch v {
	case vmmQEMU:
		return colQEMU
	case vmmGokvm:
		return colGokvm
	case vmmFloor:
		return colFloor
	}
	return colOurs
}

const (
	chartW   = 1100
	labelW   = 150
	barH     = 16
	barGap   = 6
	plotW    = 560
	titleH   = 22
	panelGap = 16
	margin   = 16
)

func writeChart(path string, b *bench) error {
	ps := panels(b.rows)
	h := margin*2 + 40
	for _, p := range ps {
		h += titleH + len(p.bars)*(barH+barGap) + panelGap
	}
	img := image.NewRGBA(image.Rect(0, 0, chartW, h))
	draw.Draw(img, img.Bounds(), image.White, image.Point{}, draw.Src)
	y := margin
	text(img, margin, y+12, colText, fmt.Sprintf("VMM benchmarks: ours vs QEMU (%s, -cpu %s) vs gokvm (%s) vs floor (raw KVM loop in C)", b.qemuVer, b.qemuCPU, gokvmVersion))
	text(img, margin, y+28, colGrey, "bars: median; whiskers: min-max; n/a: the VMM could not run the workload here (see docs/benchmarks.md)")
	y += 40
	for _, p := range ps {
		text(img, margin, y+14, colText, fmt.Sprintf("%s [%s]", p.title, p.unit))
		y += titleH
		maxV := 0.0
		for _, br := range p.bars {
			if len(br.s) > 0 {
				maxV = max(maxV, br.s.max()*p.scale)
			}
		}
		if maxV == 0 {
			maxV = 1
		}
		x0 := margin + labelW
		fillRect(img, x0, y-2, 1, len(p.bars)*(barH+barGap), colAxis)
		for _, br := range p.bars {
			text(img, margin, y+12, colText, br.label)
			if len(br.s) == 0 {
				text(img, x0+6, y+12, colGrey, "n/a: "+shorten(br.note, 125))
				y += barH + barGap
				continue
			}
			med := br.s.median() * p.scale
			w := int(med / maxV * plotW)
			fillRect(img, x0+1, y, max(w, 1), barH, vmmColor(br.vmm))
			lo := x0 + 1 + int(br.s.min()*p.scale/maxV*plotW)
			hi := x0 + 1 + int(br.s.max()*p.scale/maxV*plotW)
			fillRect(img, lo, y+barH/2, max(hi-lo, 1), 1, colText)
			fillRect(img, lo, y+3, 1, barH-6, colText)
			fillRect(img, hi, y+3, 1, barH-6, colText)
			text(img, x0+plotW+12, y+12, colText, fmt.Sprintf("%s %s (%s-%s, n=%d)",
				num(med), p.unit, num(br.s.min()*p.scale), num(br.s.max()*p.scale), len(br.s)))
			y += barH + barGap
		}
		y += panelGap
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := png.Encode(f, img); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func num(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

func fillRect(img *image.RGBA, x, y, w, h int, c color.Color) {
	draw.Draw(img, image.Rect(x, y, x+w, y+h), &image.Uniform{c}, image.Point{}, draw.Src)
}

func text(img *image.RGBA, x, y int, c color.Color, s string) {
	d := font.Drawer{Dst: img, Src: &image.Uniform{c}, Face: basicfont.Face7x13,
		Dot: fixed.P(x, y)}
	// basicfont covers ASCII and Latin-1: spell out what it lacks.
	s = strings.NewReplacer("µ", "u", "→", "->", "÷", "/", "–", "-", "—", "-", "×", "x", "…", "...", "“", "\"", "”", "\"").Replace(s)
	d.DrawString(s)
}
