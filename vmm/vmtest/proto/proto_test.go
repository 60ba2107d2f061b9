package proto

import (
	"errors"
	"testing"
)

func TestDecode(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Frame
		bad  bool
	}{
		{"VMTEST-BEGIN: v1", Frame{Kind: KindBegin, Text: "v1"}, false},
		{"VMTEST-BEGIN: v2", Frame{}, true},
		{"VMTEST-OUT: --- PASS: TestX (0.00s)\r", Frame{Kind: KindOut, Text: "--- PASS: TestX (0.00s)"}, false},
		{"VMTEST-OUT: ", Frame{Kind: KindOut}, false},
		{FormatResult(0), Frame{Kind: KindResult, Code: 0}, false},
		{FormatResult(137), Frame{Kind: KindResult, Code: 137}, false},
		{"[   3.1] random: crng initVMTEST-RESULT: exit=1", Frame{Kind: KindResult, Code: 1}, false},
		{"VMTEST-RESULT: exit=", Frame{}, true},
		{"VMTEST-RESULT: exit=12x", Frame{}, true},
		{"VMTEST-RESULT: code=0", Frame{}, true},
		{"VMTEST-RESULT: exit=99999999999999999999", Frame{}, true},
		{"[    1.0] Run /init as init process", Frame{}, false},
		{"\x00\xff\xfeVMTEST", Frame{}, false},
	} {
		got, err := Decode(tc.in)
		if tc.bad {
			if !errors.Is(err, ErrMalformed) {
				t.Errorf("Decode(%q) error = %v, want ErrMalformed", tc.in, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("Decode(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
}

func FuzzDecode(f *testing.F) {
	f.Add("VMTEST-RESULT: exit=3")
	f.Add("VMTEST-OUT: x")
	f.Fuzz(func(t *testing.T, s string) {
		fr, err := Decode(s)
		if err != nil && fr != (Frame{}) {
			t.Fatalf("error with a frame: %+v %v", fr, err)
		}
		if fr.Kind == KindResult {
			if back, err := Decode(FormatResult(fr.Code)); err != nil || back != fr {
				t.Fatalf("result %d does not round-trip: %+v %v", fr.Code, back, err)
			}
		}
	})
}
