package memory

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// discardBaseline is what QEMU and cloud-hypervisor do today (kvm-memory-api.md
// §8): two backings per RAM range, a shared one (memfd or hugetlb) and a
// private guest_memfd, and on each conversion the side no longer in use is
// discarded with fallocate(PUNCH_HOLE|KEEP_SIZE) — except a hugetlb shared
// side, which QEMU never discards ("pre-allocated ... doesn't need to be
// discarded"). After a conversion the guest uses the pages it converted, so
// they are touched on their new side. Test-only: it exists to be measured
// against Guest.Convert.
type discardBaseline struct {
	shared, private Backend
	punchShared     bool
	state           []bool // true = private
	punches         int
}

func (d *discardBaseline) convert(first, n uint64, private bool) error {
	off, l := int64(first*PageSize), int64(n*PageSize)
	var discard, use Backend
	if private {
		discard, use = d.shared, d.private
	} else {
		discard, use = d.private, d.shared
	}
	if discard != d.shared || d.punchShared {
		if err := unix.Fallocate(discard.FD(), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, l); err != nil {
			return os.NewSyscallError("fallocate(PUNCH_HOLE)", err)
		}
		d.punches++
	}
	mem := use.Bytes()
	for p := first; p < first+n; p++ {
		mem[p*PageSize] = 1 // the guest uses the page it converted
		d.state[p] = private
	}
	return nil
}

func (d *discardBaseline) inUse(t *testing.T) uint64 {
	us, err := d.shared.Usage()
	if err != nil {
		t.Fatal(err)
	}
	up, err := d.private.Usage()
	if err != nil {
		t.Fatal(err)
	}
	return us.InUse + up.InUse
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
			d := &discardBaseline{shared: sb, private: pb, punchShared: shared != KindHugetlb, state: make([]bool, pages)}
			for p := uint64(0); p < pages; p++ { // all shared, all touched
				sb.Bytes()[p*PageSize] = byte(p) | 1
			}
			start := time.Now()
			seq.steps(pages, func(first, n uint64, private bool) {
				if err := d.convert(first, n, private); err != nil {
					t.Fatal(err)
				}
			})
			dur := time.Since(start)
			kept := true
			for p := uint64(0); p < pages; p++ {
				side := sb
				if d.state[p] {
					side = pb
				}
				kept = kept && side.Bytes()[p*PageSize] == byte(p)|1
			}
			return float64(d.inUse(t)) / size, dur, kept, fmt.Sprintf("%d fallocate(PUNCH_HOLE)", d.punches)
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
	d := &discardBaseline{shared: sb, private: pb, punchShared: true, state: make([]bool, size/PageSize)}
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		p := uint64(i) % (size / PageSize)
		if err := d.convert(p, 1, i/(size/PageSize)%2 == 0); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pages/s")
}
