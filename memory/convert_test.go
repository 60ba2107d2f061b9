package memory

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestConvertRefused(t *testing.T) {
	g := holeyGuest(t, GuestOptions{})
	for _, tc := range []struct {
		name string
		req  ConvertRequest
		want error
	}{
		{"zero pages", ConvertRequest{GPA: 0, NPages: 0, Attrs: AttrPrivate}, ErrInvalid},
		{"unaligned", ConvertRequest{GPA: 0x1001, NPages: 1, Attrs: AttrPrivate}, ErrInvalid},
		{"unaligned by 2048", ConvertRequest{GPA: 0x800, NPages: 1}, ErrInvalid},
		{"wraps", ConvertRequest{GPA: ^GPA(0) - 0xfff, NPages: 2, Attrs: AttrPrivate}, ErrInvalid},
		{"npages overflow", ConvertRequest{GPA: 0, NPages: 1 << 52, Attrs: AttrPrivate}, ErrInvalid},
		{"npages max", ConvertRequest{GPA: 4096, NPages: ^uint64(0), Attrs: AttrPrivate}, ErrInvalid},
		{"unknown bit 5", ConvertRequest{GPA: 0, NPages: 1, Attrs: AttrPrivate | 1<<5}, ErrInvalid},
		{"unknown bit 63", ConvertRequest{GPA: 0, NPages: 1, Attrs: 1 << 63}, ErrInvalid},
		{"bad hint 3", ConvertRequest{GPA: 0, NPages: 1, Attrs: 3}, ErrInvalid},
		{"bad hint 8", ConvertRequest{GPA: 0, NPages: 1, Attrs: AttrPrivate | 8}, ErrInvalid},
		{"past the end", ConvertRequest{GPA: 16 * mib, NPages: 1, Attrs: AttrPrivate}, ErrOutOfRange},
		{"straddles the end", ConvertRequest{GPA: 16*mib - PageSize, NPages: 2, Attrs: AttrPrivate}, ErrOutOfRange},
		{"in the hole", ConvertRequest{GPA: 9 * mib, NPages: 1, Attrs: AttrPrivate}, ErrOutOfRange},
		{"into the hole", ConvertRequest{GPA: 8*mib - PageSize, NPages: 2, Attrs: AttrPrivate}, ErrOutOfRange},
		{"across the hole", ConvertRequest{GPA: 8*mib - PageSize, NPages: 1 + 1024 + 1, Attrs: AttrPrivate}, ErrOutOfRange},
		{"far away", ConvertRequest{GPA: 1 << 40, NPages: 1, Attrs: AttrPrivate}, ErrOutOfRange},
	} {
		before := g.Stats()
		res, err := g.Convert(tc.req)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: Convert(%v) = %+v, %v; want %v", tc.name, tc.req, res, err, tc.want)
		}
		if err := g.Validate(tc.req); !errors.Is(err, tc.want) {
			t.Errorf("%s: Validate = %v", tc.name, err)
		}
		after := g.Stats()
		if after.Refused != before.Refused+1 || after.PrivatePages != 0 || after.ToPrivate != 0 {
			t.Errorf("%s: stats %+v", tc.name, after)
		}
	}
	// Every page still shared.
	for _, r := range g.Regions() {
		if n, err := g.PrivatePagesIn(r.GPA, r.Size); err != nil || n != 0 {
			t.Errorf("region %v has %d private pages (%v)", r.GPA, n, err)
		}
	}
	// Valid edge cases: hints, last page, across adjacent regions.
	for _, req := range []ConvertRequest{
		{GPA: 16*mib - PageSize, NPages: 1, Attrs: AttrPrivate | AttrPageSize1G},
		{GPA: 4*mib - PageSize, NPages: 2, Attrs: AttrPrivate | AttrPageSize2M},
		{GPA: 12 * mib, NPages: 1024, Attrs: AttrPrivate},
	} {
		if _, err := g.Convert(req); err != nil {
			t.Errorf("Convert(%v): %v", req, err)
		}
	}
	if s := g.Stats(); s.PrivatePages != 1024+2 || s.ToPrivate != 3 {
		t.Errorf("stats after valid conversions %+v", s)
	}
}

func TestConvertResultAndStats(t *testing.T) {
	g := holeyGuest(t, GuestOptions{})
	res, err := g.Convert(ConvertRequest{GPA: 0, NPages: 100, Attrs: AttrPrivate})
	if err != nil || res.Pages != 100 || res.Changed != 100 {
		t.Fatalf("%+v %v", res, err)
	}
	res, err = g.Convert(ConvertRequest{GPA: 50 * PageSize, NPages: 100, Attrs: AttrPrivate})
	if err != nil || res.Changed != 50 {
		t.Fatalf("overlapping conversion changed %+v %v, want 50", res, err)
	}
	res, err = g.Convert(ConvertRequest{GPA: 0, NPages: 10})
	if err != nil || res.Changed != 10 {
		t.Fatalf("%+v %v", res, err)
	}
	s := g.Stats()
	want := Stats{ToPrivate: 2, ToShared: 1, PagesRequested: 210, PagesConverted: 160, PrivatePages: 140, SharedPages: 12*mib/PageSize - 140}
	s.HardenFallback, s.HardenMaxVMAs = "", 0
	if s != want {
		t.Errorf("stats %+v\nwant  %+v", s, want)
	}
	for _, c := range []struct {
		gpa  GPA
		want bool
	}{{0, false}, {9 * PageSize, false}, {10 * PageSize, true}, {149 * PageSize, true}, {150 * PageSize, false}} {
		if p, err := g.IsPrivate(c.gpa + 123); err != nil || p != c.want {
			t.Errorf("IsPrivate(%v) = %v, %v", c.gpa, p, err)
		}
	}
	if _, err := g.IsPrivate(9 * mib); !errors.Is(err, ErrOutOfRange) {
		t.Errorf("IsPrivate in hole: %v", err)
	}
}

func TestInitialPrivate(t *testing.T) {
	g := holeyGuest(t, GuestOptions{InitialPrivate: true})
	if s := g.Stats(); s.PrivatePages != 12*mib/PageSize || s.SharedPages != 0 {
		t.Fatalf("stats %+v", s)
	}
	if err := g.DeviceRead(0, make([]byte, 1)); !errors.Is(err, ErrPrivate) {
		t.Errorf("device read of initially private RAM: %v", err)
	}
	if _, err := g.Convert(ConvertRequest{GPA: 0, NPages: 1}); err != nil {
		t.Fatal(err)
	}
	if err := g.DeviceRead(0, make([]byte, PageSize)); err != nil {
		t.Errorf("after sharing: %v", err)
	}
}

func TestAttributeSink(t *testing.T) {
	g := holeyGuest(t, GuestOptions{})
	type call struct {
		gpa, size uint64
		private   bool
	}
	var calls []call
	fail := false
	g.SetAttributeSink(func(gpa, size uint64, private bool) error {
		calls = append(calls, call{gpa, size, private})
		if fail {
			return errors.New("KVM_SET_MEMORY_ATTRIBUTES: EAGAIN")
		}
		return nil
	})
	if _, err := g.Convert(ConvertRequest{GPA: 4*mib - PageSize, NPages: 3, Attrs: AttrPrivate}); err != nil {
		t.Fatal(err)
	}
	fail = true
	_, err := g.Convert(ConvertRequest{GPA: 4*mib - PageSize, NPages: 3})
	if err == nil {
		t.Fatal("a failing sink did not refuse the conversion")
	}
	if n, _ := g.PrivatePagesIn(4*mib-PageSize, 3*PageSize); n != 3 {
		t.Errorf("refused conversion changed state: %d private", n)
	}
	// Invalid requests never reach the sink.
	g.Convert(ConvertRequest{GPA: 9 * mib, NPages: 1})
	want := []call{{4*mib - PageSize, 3 * PageSize, true}, {4*mib - PageSize, 3 * PageSize, false}}
	if fmt.Sprint(calls) != fmt.Sprint(want) {
		t.Errorf("sink calls %v, want %v", calls, want)
	}
	if s := g.Stats(); s.SinkCalls != 2 || s.SinkErrors != 1 || s.Refused != 2 {
		t.Errorf("stats %+v", s)
	}
	g.SetAttributeSink(nil)
	if _, err := g.Convert(ConvertRequest{GPA: 4*mib - PageSize, NPages: 3}); err != nil {
		t.Errorf("after removing the sink: %v", err)
	}
}

func TestZeroPolicy(t *testing.T) {
	g := holeyGuest(t, GuestOptions{Policy: PolicyZero})
	fill := bytes.Repeat([]byte{0x77}, 8*PageSize)
	g.Write(0, fill)
	g.Convert(ConvertRequest{GPA: 2 * PageSize, NPages: 1, Attrs: AttrPrivate})
	g.Write(2*PageSize, fill[:PageSize]) // guest writes its private page
	// Convert pages 1..3 private: 1 and 3 change (zeroed), 2 was private (kept).
	res, err := g.Convert(ConvertRequest{GPA: PageSize, NPages: 3, Attrs: AttrPrivate})
	if err != nil || res.Changed != 2 {
		t.Fatalf("%+v %v", res, err)
	}
	got := make([]byte, 8*PageSize)
	g.Read(0, got)
	for p, want := range []byte{0x77, 0, 0x77, 0, 0x77, 0x77, 0x77, 0x77} {
		if got[p*PageSize] != want || got[p*PageSize+PageSize-1] != want {
			t.Errorf("page %d = %#x, want %#x", p, got[p*PageSize], want)
		}
	}
}

// testRAM is one region of RAM on one backend plus an expected footprint.
type testRAM struct {
	name string
	b    Backend
}

func ramBackends(t *testing.T, size uint64) []testRAM {
	var out []testRAM
	m, err := NewBackend(KindMemfd, size, Options{})
	if err != nil {
		t.Fatal(err)
	}
	closeLater(t, m)
	out = append(out, testRAM{"memfd", m})
	a, err := NewBackend(KindAnon, size, Options{})
	if err != nil {
		t.Fatal(err)
	}
	closeLater(t, a)
	out = append(out, testRAM{"anon", a})
	reserveHugePages(t, HugePage2M, size/HugePage2M)
	h, err := NewBackend(KindHugetlb, size, Options{Prealloc: true})
	if err != nil {
		t.Fatal(err)
	}
	closeLater(t, h)
	out = append(out, testRAM{"hugetlb-2M", h})
	vm := testVM(t)
	gm, err := NewGuestMemfd(testGuestMemfd(t, vm, size), size, Options{})
	if err != nil {
		t.Fatal(err)
	}
	closeLater(t, gm)
	out = append(out, testRAM{"guest_memfd", gm})
	return out
}

// TestConversionSequencesInPlace runs the headline sequences on every
// backend and checks after each: footprint unchanged, the pattern written
// before intact, hugetlb pool untouched, the tracker's counts right.
func TestConversionSequencesInPlace(t *testing.T) {
	const size = 64 * mib
	const pages = size / PageSize
	for _, ram := range ramBackends(t, size) {
		t.Run(ram.name, func(t *testing.T) {
			g := newGuestT(t, GuestOptions{Harden: ram.name == "memfd"}, Region{GPA: 0, Size: size, Backend: ram.b})
			pattern := func(p uint64) byte { return byte(p*7 + p>>8 + 1) }
			for p := uint64(0); p < pages; p++ {
				ram.b.Bytes()[p*PageSize] = pattern(p)
				ram.b.Bytes()[p*PageSize+PageSize-1] = ^pattern(p)
			}
			u0, err := ram.b.Usage()
			if err != nil {
				t.Fatal(err)
			}
			if u0.InUse != size {
				t.Fatalf("touched every page but InUse = %#x (%+v)", u0.InUse, u0)
			}
			pool0, _ := ReadHugePool(HugePage2M)
			check := func(step string, wantPrivate uint64) {
				t.Helper()
				u, err := ram.b.Usage()
				if err != nil {
					t.Fatal(err)
				}
				if u != u0 {
					t.Errorf("%s: footprint changed: %+v -> %+v", step, u0, u)
				}
				if pool, _ := ReadHugePool(HugePage2M); pool.Free != pool0.Free || pool.Total != pool0.Total {
					t.Errorf("%s: hugetlb pool changed: %+v -> %+v", step, pool0, pool)
				}
				for p := uint64(0); p < pages; p++ {
					if ram.b.Bytes()[p*PageSize] != pattern(p) || ram.b.Bytes()[p*PageSize+PageSize-1] != ^pattern(p) {
						t.Fatalf("%s: page %d lost its content", step, p)
					}
				}
				if s := g.Stats(); s.PrivatePages != wantPrivate {
					t.Errorf("%s: %d private pages, want %d", step, s.PrivatePages, wantPrivate)
				}
				if n, _ := g.PrivatePagesIn(0, size); n != wantPrivate {
					t.Errorf("%s: bitmap holds %d private pages, want %d", step, n, wantPrivate)
				}
			}
			conv := func(gpa GPA, n uint64, private bool) {
				t.Helper()
				attrs := uint64(0)
				if private {
					attrs = AttrPrivate
				}
				if _, err := g.Convert(ConvertRequest{GPA: gpa, NPages: n, Attrs: attrs}); err != nil {
					t.Fatal(err)
				}
			}
			for p := uint64(0); p < pages; p += 2 {
				conv(GPA(p*PageSize), 1, true)
			}
			check("4 KiB checkerboard", pages/2)
			if err := g.DeviceRead(PageSize, make([]byte, 1)); err != nil {
				t.Errorf("odd page of the checkerboard: %v", err)
			}
			if err := g.DeviceRead(0, make([]byte, 1)); !errors.Is(err, ErrPrivate) {
				t.Errorf("even page of the checkerboard: %v", err)
			}
			conv(0, pages, false)
			check("whole RAM shared", 0)
			for p := uint64(0); p < pages; p += 1024 {
				conv(GPA(p*PageSize), 512, true)
			}
			check("2 MiB runs", pages/2)
			for i := 0; i < 10; i++ {
				conv(0, pages, true)
				conv(0, pages, false)
			}
			conv(0, pages, true)
			check("whole-RAM flips", pages)
			conv(0, pages, false)
			rng := rand.New(rand.NewPCG(42, uint64(len(ram.name))))
			model := make([]bool, pages)
			for i := 0; i < 100000; i++ {
				first := rng.Uint64N(pages)
				n := 1 + rng.Uint64N(min(pages-first, 64))
				if rng.IntN(50) == 0 {
					n = 1 + rng.Uint64N(pages-first)
				}
				private := rng.IntN(2) == 0
				conv(GPA(first*PageSize), n, private)
				for p := first; p < first+n; p++ {
					model[p] = private
				}
			}
			var want uint64
			for p, priv := range model {
				if priv {
					want++
				}
				if got, _ := g.IsPrivate(GPA(p * PageSize)); got != priv {
					t.Fatalf("after the storm page %d private=%v, model %v", p, got, priv)
				}
			}
			check("random storm of 100000", want)
			if ram.name == "memfd" {
				s := g.Stats()
				if !s.Hardened && s.HardenFallback == "" {
					t.Errorf("hardening off without a reason: %+v", s)
				}
				t.Logf("hardening after the storm: active=%v vmas=%d budget=%d fallback=%q", s.Hardened, s.HardenedVMAs, s.HardenMaxVMAs, s.HardenFallback)
			}
		})
	}
}

// countViewVMAs counts the VMAs of /proc/self/maps inside view.
func countViewVMAs(t *testing.T, view []byte) int {
	t.Helper()
	start := uintptr(sliceAddr(view))
	end := start + uintptr(len(view))
	return countMapsIn(t, start, end)
}

func TestHardeningVMAs(t *testing.T) {
	g := newGuestT(t, GuestOptions{Harden: true}, Region{GPA: 0, Size: 16 * mib, Backend: testMemfd(t, 16*mib)})
	r := g.regions[0]
	if r.view == nil {
		t.Fatalf("no view: %+v", g.Stats())
	}
	check := func(step string, want int) {
		t.Helper()
		s := g.Stats()
		if got := countViewVMAs(t, r.view); got != want || int(s.HardenedVMAs) != want {
			t.Errorf("%s: %d VMAs in /proc/self/maps, tracker says %d, want %d", step, got, s.HardenedVMAs, want)
		}
	}
	check("fresh", 1)
	g.Convert(ConvertRequest{GPA: 10 * PageSize, NPages: 5, Attrs: AttrPrivate})
	check("one run", 3)
	g.Convert(ConvertRequest{GPA: 15 * PageSize, NPages: 5, Attrs: AttrPrivate})
	check("adjacent run coalesced", 3)
	g.Convert(ConvertRequest{GPA: 0, NPages: 10, Attrs: AttrPrivate})
	check("run from the start", 2)
	g.Convert(ConvertRequest{GPA: 4 * PageSize, NPages: 1})
	check("hole punched in the run", 4)
	g.Convert(ConvertRequest{GPA: 0, NPages: 4096, Attrs: AttrPrivate})
	check("all private", 1)
	g.Convert(ConvertRequest{GPA: 16*mib - PageSize, NPages: 1})
	check("last page shared", 2)
	// Bypass the software check: the view itself stops the copy.
	g.testSkipDeviceCheck = true
	buf := []byte{0x42}
	err := g.DeviceRead(0, buf)
	g.testSkipDeviceCheck = false
	if !errors.Is(err, ErrPrivate) || buf[0] != 0x42 || g.Stats().DeviceFaults != 1 {
		t.Errorf("hardened view did not stop a read that skipped the check: %v, %+v", err, g.Stats())
	}
}

func TestHardeningFallback(t *testing.T) {
	g := newGuestT(t, GuestOptions{Harden: true, HardenMaxVMAs: 10}, Region{GPA: 0, Size: 4 * mib, Backend: testMemfd(t, 4*mib)})
	for p := uint64(0); p < 20; p += 2 {
		g.Convert(ConvertRequest{GPA: GPA(p * PageSize), NPages: 1, Attrs: AttrPrivate})
	}
	s := g.Stats()
	if s.Hardened || s.HardenFallback == "" || g.regions[0].view != nil {
		t.Fatalf("budget of 10 VMAs not enforced: %+v", s)
	}
	if s.PrivatePages != 10 {
		t.Errorf("conversions lost during fallback: %+v", s)
	}
	if err := g.DeviceRead(2*PageSize, make([]byte, 1)); !errors.Is(err, ErrPrivate) {
		t.Errorf("software check after fallback: %v", err)
	}
	if err := g.DeviceWrite(3*PageSize, []byte{1}); err != nil {
		t.Errorf("shared page after fallback: %v", err)
	}
	for _, kind := range []Kind{KindAnon} {
		b, err := NewBackend(kind, 4*mib, Options{})
		if err != nil {
			t.Fatal(err)
		}
		closeLater(t, b)
		g := newGuestT(t, GuestOptions{Harden: true}, Region{GPA: 0, Size: 4 * mib, Backend: b})
		if s := g.Stats(); s.Hardened || s.HardenFallback == "" {
			t.Errorf("%s hardened: %+v", kind, s)
		}
	}
	hb := &fakeBackend{Backend: testMemfd(t, 4*mib), pageSize: HugePage2M}
	g = newGuestT(t, GuestOptions{Harden: true}, Region{GPA: 0, Size: 4 * mib, Backend: hb})
	if s := g.Stats(); s.Hardened || s.HardenFallback == "" {
		t.Errorf("huge-page backing hardened: %+v", s)
	}
}

// The 8 GiB 4 KiB checkerboard: lazily populated memfd, hardening on and off.
func TestCheckerboard8GiB(t *testing.T) {
	if testing.Short() {
		t.Skip("8 GiB checkerboard: about a second per mode; skipped in -short")
	}
	const size = 8 << 30
	const pages = size / PageSize
	for _, harden := range []bool{false, true} {
		t.Run(fmt.Sprintf("harden=%v", harden), func(t *testing.T) {
			b := testMemfd(t, size)
			g := newGuestT(t, GuestOptions{Harden: harden}, Region{GPA: 0, Size: size, Backend: b})
			for _, p := range []uint64{0, 1, pages / 2, pages - 2, pages - 1} {
				g.Write(GPA(p*PageSize), []byte{byte(p) | 1})
			}
			u0, _ := b.Usage()
			start := time.Now()
			for p := uint64(0); p < pages; p += 2 {
				if _, err := g.Convert(ConvertRequest{GPA: GPA(p * PageSize), NPages: 1, Attrs: AttrPrivate}); err != nil {
					t.Fatalf("page %d: %v", p, err)
				}
			}
			d := time.Since(start)
			s := g.Stats()
			t.Logf("%d single-page conversions in %v (%.2f M/s); hardened=%v vmas=%d fallback=%q",
				pages/2, d, float64(pages/2)/d.Seconds()/1e6, s.Hardened, s.HardenedVMAs, s.HardenFallback)
			if s.PrivatePages != pages/2 {
				t.Errorf("%d private pages, want %d", s.PrivatePages, pages/2)
			}
			if harden && (s.Hardened || s.HardenFallback == "") {
				t.Errorf("a 1M-VMA checkerboard should have degraded hardening: %+v", s)
			}
			if u, _ := b.Usage(); u != u0 {
				t.Errorf("footprint changed %+v -> %+v", u0, u)
			}
			for _, p := range []uint64{0, 1, pages / 2, pages - 2, pages - 1} {
				buf := []byte{0}
				err := g.DeviceRead(GPA(p*PageSize), buf)
				if p%2 == 0 && !errors.Is(err, ErrPrivate) {
					t.Errorf("page %d: %v, want ErrPrivate", p, err)
				}
				if p%2 == 1 && (err != nil || buf[0] != byte(p)|1) {
					t.Errorf("page %d: %v %#x", p, err, buf[0])
				}
				g.Read(GPA(p*PageSize), buf)
				if buf[0] != byte(p)|1 {
					t.Errorf("page %d lost its content", p)
				}
			}
		})
	}
}

// Concurrent converters and device readers/writers (run with -race). Each
// converter plays a guest that owns some pages: it makes a page private,
// writes a secret into it, checks no device wrote it while private,
// scrubs it and shares it again. Devices hammer the same pages and must
// never read a secret nor write into a private page.
func TestConcurrentConvertAndDevice(t *testing.T) {
	for _, harden := range []bool{false, true} {
		t.Run(fmt.Sprintf("harden=%v", harden), func(t *testing.T) { testConcurrent(t, harden) })
	}
}

func testConcurrent(t *testing.T, harden bool) {
	g := holeyGuest(t, GuestOptions{Harden: harden})
	const owners = 4
	const pagesPer = 8
	var stop atomic.Bool
	var wg sync.WaitGroup
	var leaks, intrusions, deviceOK atomic.Uint64
	secret := bytes.Repeat([]byte{0x5e}, PageSize)
	for o := 0; o < owners; o++ {
		wg.Add(1)
		go func(o int) {
			defer wg.Done()
			buf := make([]byte, PageSize)
			for i := 0; !stop.Load(); i++ {
				gpa := GPA(4*mib - 4*PageSize + uint64(o*pagesPer+i%pagesPer)*PageSize) // straddles A/B
				if _, err := g.Convert(ConvertRequest{GPA: gpa, NPages: 1, Attrs: AttrPrivate}); err != nil {
					t.Error(err)
					return
				}
				g.Write(gpa, secret)
				if i%16 == 0 {
					runtimeYield()
				}
				g.Read(gpa, buf)
				if !bytes.Equal(buf, secret) {
					intrusions.Add(1)
				}
				g.Write(gpa, make([]byte, PageSize))
				if _, err := g.Convert(ConvertRequest{GPA: gpa, NPages: 1}); err != nil {
					t.Error(err)
					return
				}
			}
		}(o)
	}
	for d := 0; d < 4; d++ {
		wg.Add(1)
		go func(d int) {
			defer wg.Done()
			big := make([]byte, 8*PageSize)
			junk := bytes.Repeat([]byte{0xd0 + byte(d)}, 100)
			rng := rand.New(rand.NewPCG(uint64(d), 9))
			for !stop.Load() {
				gpa := GPA(4*mib - 4*PageSize + rng.Uint64N(owners*pagesPer)*PageSize)
				buf := big[:1+rng.IntN(len(big))]
				if rng.IntN(2) == 0 {
					if err := g.DeviceRead(gpa, buf); err == nil {
						deviceOK.Add(1)
						if bytes.Contains(buf, secret[:64]) {
							leaks.Add(1)
						}
					} else if !errors.Is(err, ErrPrivate) && !errors.Is(err, ErrOutOfRange) {
						t.Error(err)
					}
				} else if err := g.DeviceWrite(gpa+GPA(rng.IntN(PageSize-100)), junk); err == nil {
					deviceOK.Add(1)
				}
			}
		}(d)
	}
	time.Sleep(400 * time.Millisecond)
	stop.Store(true)
	wg.Wait()
	s := g.Stats()
	t.Logf("conversions %d, device accesses ok %d refused %d", s.ToPrivate+s.ToShared, deviceOK.Load(), s.DeviceRefused)
	if leaks.Load() != 0 || intrusions.Load() != 0 {
		t.Errorf("%d device reads saw a secret, %d device writes landed in private pages", leaks.Load(), intrusions.Load())
	}
	if s.ToPrivate == 0 || deviceOK.Load() == 0 || s.DeviceRefused == 0 {
		t.Errorf("the race did not happen: %+v, %d ok", s, deviceOK.Load())
	}
	if s.DeviceFaults != 0 {
		t.Errorf("the hardened view faulted %d times: the software check let something through", s.DeviceFaults)
	}
}
