package main

import (
	"fmt"
	"sort"
	"time"
)

// sample is a set of measurements of one quantity (seconds, bytes, ...).
type sample []float64

func (s sample) sorted() []float64 {
	c := append([]float64(nil), s...)
	sort.Float64s(c)
	return c
}

// median of the values; 0 when empty.
func (s sample) median() float64 {
	c := s.sorted()
	switch n := len(c); {
	case n == 0:
		return 0
	case n%2 == 1:
		return c[n/2]
	default:
		return (c[n/2-1] + c[n/2]) / 2
	}
}

func (s sample) min() float64 {
	if len(s) == 0 {
		return 0
	}
	return s.sorted()[0]
}

func (s sample) max() float64 {
	if len(s) == 0 {
		return 0
	}
	return s.sorted()[len(s)-1]
}

func secs(d time.Duration) float64 { return d.Seconds() }

// fmtDur formats seconds with a unit that suits the magnitude.
func fmtDur(s float64) string {
	switch {
	case s >= 10:
		return fmt.Sprintf("%.1f s", s)
	case s >= 1:
		return fmt.Sprintf("%.2f s", s)
	case s >= 1e-3:
		return fmt.Sprintf("%.1f ms", s*1e3)
	default:
		return fmt.Sprintf("%.2f µs", s*1e6)
	}
}

// fmtSpread is "median (min–max, n=N)".
func fmtSpread(s sample, f func(float64) string) string {
	if len(s) == 0 {
		return "–"
	}
	if len(s) == 1 {
		return fmt.Sprintf("%s (n=1)", f(s[0]))
	}
	return fmt.Sprintf("%s (%s–%s, n=%d)", f(s.median()), f(s.min()), f(s.max()), len(s))
}

func fmtMiB(b float64) string { return fmt.Sprintf("%.1f MiB", b/(1<<20)) }

// ratio is ours÷peer of two medians, or "–".
func ratio(ours, peer sample) string {
	if len(ours) == 0 || len(peer) == 0 || peer.median() == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f×", ours.median()/peer.median())
}
