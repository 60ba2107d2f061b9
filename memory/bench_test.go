package memory

import (
	"testing"
)

func benchGuest(b *testing.B, size uint64) *Guest {
	m, err := NewBackend(KindMemfd, size, Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { m.Close() })
	g, err := NewGuest(Region{GPA: 0, Size: size, Backend: m})
	if err != nil {
		b.Fatal(err)
	}
	return g
}

// Single 4 KiB page conversions through the whole routine (validation,
// lock, bitmap), alternating direction per pass.
func BenchmarkConvert4K(b *testing.B) {
	g := benchGuest(b, 1<<30)
	const pages = (1 << 30) / PageSize
	for i := 0; b.Loop(); i++ {
		p := uint64(i) % pages
		attrs := AttrPrivate
		if (uint64(i)/pages)%2 == 1 {
			attrs = 0
		}
		if _, err := g.Convert(ConvertRequest{GPA: GPA(p * PageSize), NPages: 1, Attrs: attrs}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pages/s")
}

// 2 MiB (512-page) conversions: word-at-a-time range updates.
func BenchmarkConvert2M(b *testing.B) {
	g := benchGuest(b, 1<<30)
	const runs = (1 << 30) / (2 << 20)
	for i := 0; b.Loop(); i++ {
		attrs := AttrPrivate
		if (i/runs)%2 == 1 {
			attrs = 0
		}
		if _, err := g.Convert(ConvertRequest{GPA: GPA(uint64(i%runs) * (2 << 20)), NPages: 512, Attrs: attrs}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)*512/b.Elapsed().Seconds(), "pages/s")
}

// The device check on a typical virtio access (a 16-byte descriptor, a
// 4 KiB buffer), and on a whole 1 GiB range.
func BenchmarkDeviceRead16(b *testing.B) {
	g := benchGuest(b, 1<<30)
	buf := make([]byte, 16)
	for b.Loop() {
		if err := g.DeviceRead(0x1000, buf); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDeviceRead4K(b *testing.B) {
	g := benchGuest(b, 1<<30)
	buf := make([]byte, 4096)
	for b.Loop() {
		if err := g.DeviceRead(0x10000, buf); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCheckShared1GiB(b *testing.B) {
	g := benchGuest(b, 1<<30)
	for b.Loop() {
		if err := g.CheckShared(0, 1<<30); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDeviceStore16 is one used.idx publication (checked CAS).
func BenchmarkDeviceStore16(b *testing.B) {
	g := benchGuest(b, 16<<20)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if err := g.DeviceStore16(0x1002, uint16(i)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDeviceLoad16 is one avail.idx read (checked acquire load).
func BenchmarkDeviceLoad16(b *testing.B) {
	g := benchGuest(b, 16<<20)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := g.DeviceLoad16(0x1002); err != nil {
			b.Fatal(err)
		}
	}
}
