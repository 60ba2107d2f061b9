package pvpanic

import "testing"

func TestEvents(t *testing.T) {
	var got []string
	d := New(func(detail string) { got = append(got, detail) })
	b := []byte{0xff, 0xff}
	d.BusRead(0, 0, b)
	if b[0] != Panicked|CrashLoad || b[1] != 0 {
		t.Fatalf("read % x, want the supported events then zero", b)
	}
	for _, w := range [][]byte{{0}, {4}, {}, {Panicked}, {CrashLoad}, {Panicked | CrashLoad}} {
		d.BusWrite(0, 0, w)
	}
	want := []string{
		"guest kernel panicked (pvpanic)",
		"guest kernel crashed and is loading a crash kernel (pvpanic)",
		"guest kernel panicked (pvpanic)",
	}
	if len(got) != len(want) {
		t.Fatalf("reports %q, want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("report %d %q, want %q", i, got[i], want[i])
		}
	}
}
