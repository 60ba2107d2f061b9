package memory

import (
	"bytes"
	"errors"
	"testing"
)

const mib = 1 << 20

func testMemfd(t testing.TB, size uint64) Backend {
	t.Helper()
	b, err := NewBackend(KindMemfd, size, Options{})
	if err != nil {
		t.Fatal(err)
	}
	closeLater(t, b)
	return b
}

func newGuestT(t testing.TB, opt GuestOptions, regions ...Region) *Guest {
	t.Helper()
	g, err := NewGuestWithOptions(opt, regions...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	return g
}

// holeyGuest: A [0,4M) and B [4M,8M) adjacent (two backends), a hole
// [8M,12M), C [12M,16M) at offset 4M of a 8M backend.
func holeyGuest(t testing.TB, opt GuestOptions) *Guest {
	a, b, c := testMemfd(t, 4*mib), testMemfd(t, 4*mib), testMemfd(t, 8*mib)
	return newGuestT(t, opt,
		Region{GPA: 12 * mib, Size: 4 * mib, Backend: c, Offset: 4 * mib},
		Region{GPA: 0, Size: 4 * mib, Backend: a},
		Region{GPA: 4 * mib, Size: 4 * mib, Backend: b},
	)
}

func TestNewGuestChecks(t *testing.T) {
	m := testMemfd(t, 8*mib)
	hp := &fakeBackend{Backend: m, pageSize: HugePage2M}
	for name, regions := range map[string][]Region{
		"none":            nil,
		"nil backend":     {{GPA: 0, Size: 4096}},
		"zero size":       {{GPA: 0, Size: 0, Backend: m}},
		"unaligned gpa":   {{GPA: 0x800, Size: 4096, Backend: m}},
		"unaligned size":  {{GPA: 0, Size: 4097, Backend: m}},
		"unaligned off":   {{GPA: 0, Size: 4096, Backend: m, Offset: 12}},
		"past backend":    {{GPA: 0, Size: 4096, Backend: m, Offset: 8 * mib}},
		"too big":         {{GPA: 0, Size: 16 * mib, Backend: m}},
		"wraps":           {{GPA: ^GPA(0) - 4095, Size: 8192, Backend: m}},
		"overlap":         {{GPA: 0, Size: 2 * mib, Backend: m}, {GPA: mib, Size: 2 * mib, Backend: m, Offset: 4 * mib}},
		"huge misaligned": {{GPA: 4096, Size: 2 * mib, Backend: hp}},
	} {
		if _, err := NewGuest(regions...); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
	g, err := NewGuest(Region{GPA: 2 * mib, Size: 2 * mib, Backend: hp, Offset: 4 * mib})
	if err != nil {
		t.Errorf("aligned huge region: %v", err)
	} else if g.Size() != 2*mib || len(g.Regions()) != 1 {
		t.Errorf("size %#x regions %v", g.Size(), g.Regions())
	}
}

// fakeBackend reports a different page size to test alignment rules.
type fakeBackend struct {
	Backend
	pageSize uint64
}

func (f *fakeBackend) PageSize() uint64 { return f.pageSize }

func TestGuestReadWrite(t *testing.T) {
	g := holeyGuest(t, GuestOptions{})
	if g.Size() != 12*mib {
		t.Fatalf("Size = %#x", g.Size())
	}
	rs := g.Regions()
	if rs[0].GPA != 0 || rs[1].GPA != 4*mib || rs[2].GPA != 12*mib {
		t.Fatalf("regions not sorted: %+v", rs)
	}
	// Across the A/B boundary.
	p := bytes.Repeat([]byte("abcdefgh"), 1024)
	at := GPA(4*mib - 3000)
	if err := g.Write(at, p); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(p))
	if err := g.Read(at, got); err != nil || !bytes.Equal(got, p) {
		t.Fatalf("read back across regions: %v", err)
	}
	// The bytes really landed in the two backends.
	if !bytes.Equal(rs[0].Backend.Bytes()[4*mib-3000:], p[:3000]) || !bytes.Equal(rs[1].Backend.Bytes()[:len(p)-3000], p[3000:]) {
		t.Error("data not in the backends")
	}
	// C is at offset 4M of its backend.
	if err := g.Write(12*mib, []byte{0x5a}); err != nil || rs[2].Backend.Bytes()[4*mib] != 0x5a {
		t.Errorf("offset region: %v", err)
	}
	// Out of range: into the hole, past the end, wrapping. Nothing written.
	for _, a := range []GPA{8*mib - 10, 8 * mib, 16*mib - 1, 16 * mib, ^GPA(0) - 5} {
		before := append([]byte(nil), rs[1].Backend.Bytes()[4*mib-10:]...)
		err := g.Write(a, make([]byte, 20))
		if !errors.Is(err, ErrOutOfRange) {
			t.Errorf("write at %v: %v, want ErrOutOfRange", a, err)
		}
		if !bytes.Equal(before, rs[1].Backend.Bytes()[4*mib-10:]) {
			t.Errorf("write at %v touched memory despite failing", a)
		}
		if err := g.Read(a, make([]byte, 20)); !errors.Is(err, ErrOutOfRange) {
			t.Errorf("read at %v: %v", a, err)
		}
	}
	// Slice: within one region only.
	s, err := g.Slice(12*mib, 16)
	if err != nil || s[0] != 0x5a || len(s) != 16 || cap(s) != 16 {
		t.Errorf("Slice: %v len %d", err, len(s))
	}
	if _, err := g.Slice(4*mib-8, 16); !errors.Is(err, ErrOutOfRange) {
		t.Errorf("Slice across regions: %v", err)
	}
	if _, err := g.Slice(9*mib, 1); !errors.Is(err, ErrOutOfRange) {
		t.Errorf("Slice in hole: %v", err)
	}
	// Zero-length accesses are fine anywhere.
	if err := g.Read(9*mib, nil); err != nil {
		t.Errorf("empty read: %v", err)
	}
}

func TestDeviceAccessPrivate(t *testing.T) {
	for _, harden := range []bool{false, true} {
		t.Run(map[bool]string{false: "software", true: "hardened"}[harden], func(t *testing.T) {
			g := holeyGuest(t, GuestOptions{Harden: harden})
			if g.Stats().Hardened != harden {
				t.Fatalf("Hardened = %v (%s)", g.Stats().Hardened, g.Stats().HardenFallback)
			}
			secret := bytes.Repeat([]byte{0xee}, 2*PageSize)
			if err := g.Write(4*mib-PageSize, secret); err != nil {
				t.Fatal(err)
			}
			// Make the first page of B private; A's last page stays shared.
			if _, err := g.Convert(ConvertRequest{GPA: 4 * mib, NPages: 1, Attrs: AttrPrivate}); err != nil {
				t.Fatal(err)
			}
			buf := bytes.Repeat([]byte{0x11}, 2*PageSize)
			for _, tc := range []struct {
				gpa GPA
				n   int
			}{{4 * mib, 1}, {4*mib + PageSize - 1, 1}, {4*mib - 1, 2}, {4*mib - PageSize, 2 * PageSize}} {
				err := g.DeviceRead(tc.gpa, buf[:tc.n])
				if !errors.Is(err, ErrPrivate) {
					t.Errorf("DeviceRead(%v, %d) = %v, want ErrPrivate", tc.gpa, tc.n, err)
				}
				if !bytes.Equal(buf, bytes.Repeat([]byte{0x11}, 2*PageSize)) {
					t.Fatalf("refused DeviceRead(%v) filled the buffer", tc.gpa)
				}
				if err := g.DeviceWrite(tc.gpa, buf[:tc.n]); !errors.Is(err, ErrPrivate) {
					t.Errorf("DeviceWrite(%v, %d) = %v, want ErrPrivate", tc.gpa, tc.n, err)
				}
			}
			got := make([]byte, 2*PageSize)
			if err := g.Read(4*mib-PageSize, got); err != nil || !bytes.Equal(got, secret) {
				t.Fatalf("a refused device write changed memory (%v)", err)
			}
			if s := g.Stats(); s.DeviceRefused != 8 || s.PrivatePages != 1 {
				t.Errorf("stats %+v, want 8 refusals and 1 private page", s)
			}
			// The shared neighbour is fine, out of range is ErrOutOfRange.
			if err := g.DeviceRead(4*mib-PageSize, got[:PageSize]); err != nil || got[0] != 0xee {
				t.Errorf("shared page: %v", err)
			}
			if err := g.DeviceWrite(4*mib-PageSize, []byte{1}); err != nil {
				t.Errorf("shared write: %v", err)
			}
			if err := g.DeviceRead(9*mib, got[:1]); !errors.Is(err, ErrOutOfRange) {
				t.Errorf("hole: %v", err)
			}
			// Back to shared: the content survived and devices may read it.
			if _, err := g.Convert(ConvertRequest{GPA: 4 * mib, NPages: 1}); err != nil {
				t.Fatal(err)
			}
			if err := g.DeviceRead(4*mib, got[:PageSize]); err != nil || got[0] != 0xee {
				t.Errorf("after re-share: %v, %#x", err, got[0])
			}
		})
	}
}
