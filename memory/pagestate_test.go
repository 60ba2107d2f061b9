package memory

import (
	"math/rand/v2"
	"testing"
)

// The word-at-a-time bitmap against a []bool model, over random ranges
// that start and end at every bit offset.
func TestPageBitsModel(t *testing.T) {
	const n = 64*5 + 17
	rng := rand.New(rand.NewPCG(1, 2))
	b := newPageBits(n, false)
	model := make([]bool, n)
	for iter := 0; iter < 20000; iter++ {
		first := rng.Uint64N(n)
		count := 1 + rng.Uint64N(n-first)
		private := rng.IntN(2) == 0
		var wantChanged uint64
		for i := first; i < first+count; i++ {
			if model[i] != private {
				wantChanged++
			}
			model[i] = private
		}
		var cbChanged uint64
		got := b.update(first, count, private, func(w int, m uint64) {
			for j := 0; j < 64; j++ {
				if m&(1<<j) != 0 {
					i := uint64(w*64 + j)
					if i < first || i >= first+count {
						t.Fatalf("onChange reported page %d outside [%d, %d)", i, first, first+count)
					}
					cbChanged++
				}
			}
		})
		if got != wantChanged || cbChanged != wantChanged {
			t.Fatalf("update(%d,%d,%v) changed %d (callback %d), want %d", first, count, private, got, cbChanged, wantChanged)
		}
		// Query a random range.
		qf := rng.Uint64N(n)
		qc := 1 + rng.Uint64N(n-qf)
		wantFirst, wantCount := int64(-1), uint64(0)
		for i := qf; i < qf+qc; i++ {
			if model[i] {
				if wantFirst < 0 {
					wantFirst = int64(i)
				}
				wantCount++
			}
		}
		if g := b.firstPrivate(qf, qc); g != wantFirst {
			t.Fatalf("firstPrivate(%d,%d) = %d, want %d", qf, qc, g, wantFirst)
		}
		if g := b.countPrivate(qf, qc); g != wantCount {
			t.Fatalf("countPrivate(%d,%d) = %d, want %d", qf, qc, g, wantCount)
		}
		if qf+qc <= n-1 {
			var wantT uint64
			for i := qf; i < qf+qc; i++ {
				if model[i] != model[i+1] {
					wantT++
				}
			}
			if g := b.transitions(qf, qf+qc); g != wantT {
				t.Fatalf("transitions(%d,%d) = %d, want %d", qf, qf+qc, g, wantT)
			}
		}
	}
	for i := uint64(0); i < n; i++ {
		if b.isPrivate(i) != model[i] {
			t.Fatalf("page %d = %v, model %v", i, b.isPrivate(i), model[i])
		}
	}
}

func TestPageBitsInitialPrivate(t *testing.T) {
	b := newPageBits(130, true)
	if c := b.countPrivate(0, 130); c != 130 {
		t.Errorf("countPrivate = %d, want 130", c)
	}
	// Bits past n stay clear so word scans never see ghosts.
	if w := b.words[2].Load(); w != 3 {
		t.Errorf("last word %#x, want 0x3", w)
	}
}

func TestZeroPages(t *testing.T) {
	mem := make([]byte, 128*PageSize)
	for i := range mem {
		mem[i] = 0xff
	}
	mask := uint64(0b1011) | 1<<63
	zeroPages(mem, 1, mask) // pages 64, 65, 67, 127
	for p := 0; p < 128; p++ {
		want := byte(0xff)
		if p == 64 || p == 65 || p == 67 || p == 127 {
			want = 0
		}
		if mem[p*PageSize] != want || mem[p*PageSize+PageSize-1] != want {
			t.Fatalf("page %d = %#x, want %#x", p, mem[p*PageSize], want)
		}
	}
}
