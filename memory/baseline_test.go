package memory

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// baselineInUse is the host memory both sides of a DiscardBaseline hold.
func baselineInUse(t *testing.T, d *DiscardBaseline) uint64 {
	u, err := d.Usage()
	if err != nil {
		t.Fatal(err)
	}
	return u.InUse
}

// convSeq is one conversion of a measured sequence.
type convSeq struct {
	name  string
	steps func(pages uint64, do func(first, n uint64, private bool))
}

var measuredSequences = []convSeq{
	{"4K checkerboard", func(pages uint64, do func(uint64, uint64, bool)) {
		for p := uint64(0); p < pages; p += 2 {
			do(p, 1, true)
		}
	}},
	{"2M runs (every other)", func(pages uint64, do func(uint64, uint64, bool)) {
		do(0, pages, false)
		for p := uint64(0); p < pages; p += 1024 {
			do(p, 512, true)
		}
	}},
	{"whole-RAM flip to private", func(pages uint64, do func(uint64, uint64, bool)) {
		do(0, pages, true)
	}},
	{"whole-RAM private, shared", func(pages uint64, do func(uint64, uint64, bool)) {
		do(0, pages, true)
		do(0, pages, false)
	}},
	{"random storm (20000)", func(pages uint64, do func(uint64, uint64, bool)) {
		rng := rand.New(rand.NewPCG(7, 7))
		for i := 0; i < 20000; i++ {
			first := rng.Uint64N(pages)
			do(first, 1+rng.Uint64N(min(pages-first, 16)), rng.IntN(2) == 0)
		}
	}},
}

// TestFootprintBaselineVsInPlace measures, for the same sequences, the host
// memory ÷ guest RAM touched of in-place conversion (one backing) and of the
// two-backing discard baseline. Run with -v to see the table.
func TestFootprintBaselineVsInPlace(t *testing.T) {
	const size = 64 * mib
	const pages = size / PageSize
	reserveHugePages(t, HugePage2M, 2*size/HugePage2M)
	vm := testVM(t)
	type setup struct {
		name string
		run  func(seq convSeq) (ratio float64, d time.Duration, kept bool, extra string)
	}
	inPlace := func(kind Kind) setup {
		return setup{"in place, " + string(kind), func(seq convSeq) (float64, time.Duration, bool, string) {
			var b Backend
			var err error
			if kind == KindGuestMemfd {
				b, err = NewGuestMemfd(testGuestMemfd(t, vm, size), size, Options{})
			} else {
				b, err = NewBackend(kind, size, Options{})
			}
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			g, err := NewGuest(Region{GPA: 0, Size: size, Backend: b})
			if err != nil {
				t.Fatal(err)
			}
			for p := uint64(0); p < pages; p++ { // the guest touched all its RAM
				b.Bytes()[p*PageSize] = byte(p) | 1
			}
			pool0, _ := ReadHugePool(HugePage2M)
			start := time.Now()
			seq.steps(pages, func(first, n uint64, private bool) {
				a := uint64(0)
				if private {
					a = AttrPrivate
				}
				if _, err := g.Convert(ConvertRequest{GPA: GPA(first * PageSize), NPages: n, Attrs: a}); err != nil {
					t.Fatal(err)
				}
			})
			d := time.Since(start)
			u, err := b.Usage()
			if err != nil {
				t.Fatal(err)
			}
			kept := true
			for p := uint64(0); p < pages; p++ {
				kept = kept && b.Bytes()[p*PageSize] == byte(p)|1
			}
			pool1, _ := ReadHugePool(HugePage2M)
			extra := ""
			if kind == KindHugetlb {
				extra = fmt.Sprintf("huge pages in use %d -> %d", pool0.InUse(), pool1.InUse())
				if pool0.InUse() != pool1.InUse() {
					t.Errorf("in-place hugetlb: huge pages in use changed %d -> %d", pool0.InUse(), pool1.InUse())
				}
			}
			return float64(u.InUse) / size, d, kept, extra
		}}
	}
	baseline := func(shared Kind) setup {
		return setup{"discard baseline, " + string(shared) + " + guest_memfd", func(seq convSeq) (float64, time.Duration, bool, string) {
			sb, err := NewBackend(shared, size, Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer sb.Close()
			pb, err := NewGuestMemfd(testGuestMemfd(t, vm, size), size, Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer pb.Close()
			d, err := NewDiscardBaseline(sb, pb)
			if err != nil {
				t.Fatal(err)
			}
			for p := uint64(0); p < pages; p++ { // all shared, all touched
				sb.Bytes()[p*PageSize] = byte(p) | 1
			}
			start := time.Now()
			seq.steps(pages, func(first, n uint64, private bool) {
				// The guest uses the pages it converted, on their new side.
				if err := d.Convert(first, n, private); err != nil {
					t.Fatal(err)
				}
				if err := d.Touch(first, n, 1); err != nil {
					t.Fatal(err)
				}
			})
			dur := time.Since(start)
			kept := true
			for p := uint64(0); p < pages; p++ {
				kept = kept && d.Read(p) == byte(p)|1
			}
			return float64(baselineInUse(t, d)) / size, dur, kept, fmt.Sprintf("%d fallocate(PUNCH_HOLE)", d.Punches())
		}}
	}
	setups := []setup{inPlace(KindMemfd), inPlace(KindHugetlb), inPlace(KindGuestMemfd), baseline(KindMemfd), baseline(KindHugetlb)}
	var out strings.Builder
	fmt.Fprintf(&out, "\n%-28s %-42s %9s %12s %8s %s\n", "sequence", "setup", "footprint", "time", "content", "notes")
	for _, seq := range measuredSequences {
		for i, s := range setups {
			ratio, d, kept, extra := s.run(seq)
			fmt.Fprintf(&out, "%-28s %-42s %8.2fx %12v %8v %s\n", seq.name, s.name, ratio, d.Round(time.Microsecond), kept, extra)
			if i < 3 { // in place: exactly the RAM touched, content kept
				if ratio != 1.0 || !kept {
					t.Errorf("%s / %s: footprint %.3fx, content kept %v; want 1.00x and true", seq.name, s.name, ratio, kept)
				}
			}
		}
	}
	t.Log(out.String())
}

func BenchmarkBaselineDiscard4K(b *testing.B) {
	const size = 64 * mib
	vm := testVM(b)
	sb, err := NewBackend(KindMemfd, size, Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer sb.Close()
	pb, err := NewGuestMemfd(testGuestMemfd(b, vm, size), size, Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer pb.Close()
	d, err := NewDiscardBaseline(sb, pb)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		p := uint64(i) % (size / PageSize)
		if err := d.Convert(p, 1, i/(size/PageSize)%2 == 0); err != nil {
			b.Fatal(err)
		}
		if err := d.Touch(p, 1, 1); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pages/s")
}

// TestDiscardBaselineModel checks the baseline model itself with two memfd
// sides (no KVM needed): a conversion punches exactly the side left behind,
// content does not survive, and bad ranges are refused.
func TestDiscardBaselineModel(t *testing.T) {
	const size = 1 * mib
	newSide := func() Backend {
		b, err := NewBackend(KindMemfd, size, Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		return b
	}
	sb, pb := newSide(), newSide()
	if _, err := NewDiscardBaseline(sb, newBackendOfSize(t, 2*mib)); !errors.Is(err, ErrInvalid) {
		t.Fatalf("size mismatch: %v", err)
	}
	d, err := NewDiscardBaseline(sb, pb)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Touch(0, d.Pages(), 7); err != nil { // all shared, all touched
		t.Fatal(err)
	}
	u0, _ := d.Usage()
	if u0.InUse != size {
		t.Fatalf("after touching every shared page: %+v", u0)
	}
	if err := d.Convert(4, 4, true); err != nil {
		t.Fatal(err)
	}
	u1, _ := d.Usage()
	if u1.InUse != size-4*PageSize || !d.IsPrivate(4) || d.IsPrivate(8) || d.Punches() != 1 {
		t.Fatalf("after 4 pages to private: usage %+v, private(4)=%v private(8)=%v punches %d", u1, d.IsPrivate(4), d.IsPrivate(8), d.Punches())
	}
	if d.Read(4) == 7 {
		t.Fatal("content survived a discard conversion")
	}
	if err := d.Touch(4, 4, 9); err != nil {
		t.Fatal(err)
	}
	if u2, _ := d.Usage(); u2.InUse != size || d.Read(4) != 9 || sb.Bytes()[4*PageSize] != 0 {
		t.Fatalf("after the guest used the private pages: %+v, read %d", u2, d.Read(4))
	}
	for _, c := range [][2]uint64{{0, 0}, {d.Pages(), 1}, {d.Pages() - 1, 2}, {1, ^uint64(0)}} {
		if err := d.Convert(c[0], c[1], true); !errors.Is(err, ErrOutOfRange) {
			t.Errorf("Convert(%d, %d): %v, want ErrOutOfRange", c[0], c[1], err)
		}
	}
}

func newBackendOfSize(t *testing.T, size uint64) Backend {
	b, err := NewBackend(KindMemfd, size, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}
