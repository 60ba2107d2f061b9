package memory

import (
	"errors"
	"testing"
)

// FuzzConvertRequest checks the conversion validation against an
// independent oracle on the holey layout (RAM [0,8M) and [12M,16M)).
func FuzzConvertRequest(f *testing.F) {
	f.Add(uint64(0), uint64(1), AttrPrivate)
	f.Add(uint64(4*mib-PageSize), uint64(2), AttrPrivate|AttrPageSize2M)
	f.Add(uint64(8*mib-PageSize), uint64(2), AttrPrivate)
	f.Add(uint64(0x1001), uint64(1), uint64(0))
	f.Add(^uint64(0)-0xfff, uint64(2), AttrPrivate)
	f.Add(uint64(12*mib), uint64(1024), uint64(3))
	f.Add(uint64(0), uint64(1)<<52, AttrPrivate)
	g := holeyGuest(f, GuestOptions{})
	f.Fuzz(func(t *testing.T, gpa, npages, attrs uint64) {
		req := ConvertRequest{GPA: GPA(gpa), NPages: npages, Attrs: attrs}
		before := g.Stats().PrivatePages
		_, err := g.Convert(req)

		invalid := npages == 0 || gpa%PageSize != 0 || attrs&^0x1f != 0 || attrs&0xf > 2 ||
			npages > (^uint64(0)-gpa)/PageSize+1 || npages >= 1<<52
		inRAM := false
		if !invalid {
			end := gpa + npages*PageSize // no overflow here: checked above (end may be 0 = 2^64)
			inRAM = end != 0 && (end <= 8*mib || (gpa >= 12*mib && end <= 16*mib))
		}
		switch {
		case invalid:
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("%v: %v, want ErrInvalid", req, err)
			}
		case !inRAM:
			if !errors.Is(err, ErrOutOfRange) {
				t.Fatalf("%v: %v, want ErrOutOfRange", req, err)
			}
		default:
			if err != nil {
				t.Fatalf("%v: %v, want success", req, err)
			}
			n, _ := g.PrivatePagesIn(GPA(gpa), npages*PageSize)
			if want := map[bool]uint64{true: npages, false: 0}[req.Private()]; n != want {
				t.Fatalf("%v: %d private pages in range, want %d", req, n, want)
			}
			// Reset for the next input.
			if _, err := g.Convert(ConvertRequest{GPA: GPA(gpa), NPages: npages}); err != nil {
				t.Fatal(err)
			}
			return
		}
		if after := g.Stats().PrivatePages; after != before {
			t.Fatalf("refused %v changed state: %d -> %d private", req, before, after)
		}
	})
}
