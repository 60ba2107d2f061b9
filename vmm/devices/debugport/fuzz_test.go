package debugport

import (
	"bytes"
	"testing"
	"time"
)

// FuzzPorts writes random data to both ports and checks that the console
// output, after Flush, is exactly the bytes written, in lines no longer
// than MaxLine, and that POST keeps the last code.
func FuzzPorts(f *testing.F) {
	f.Add([]byte("hello\nworld"), uint8(3))
	f.Add(bytes.Repeat([]byte{'a'}, 5000), uint8(1))
	f.Fuzz(func(t *testing.T, in []byte, chunk uint8) {
		w := &lineWriter{}
		c := NewConsole(w, nil)
		p := NewPOST(time.Now, nil)
		n := 1 + int(chunk)%8
		rest := in
		for len(rest) > 0 {
			k := min(n, len(rest))
			c.BusWrite(0, 0, rest[:k])
			p.BusWrite(0, 0, rest[:k])
			if v, ok := p.Last(); !ok || v != rest[0] {
				t.Fatalf("Last = %#x, want %#x", v, rest[0])
			}
			rest = rest[k:]
		}
		c.Flush()
		var got []byte
		for i, l := range w.lines {
			if len(l) > MaxLine || len(l) == 0 {
				t.Fatalf("line %d has %d bytes", i, len(l))
			}
			if i < len(w.lines)-1 && l[len(l)-1] != '\n' && len(l) != MaxLine {
				t.Fatalf("line %d cut early: %q", i, l)
			}
			got = append(got, l...)
		}
		if !bytes.Equal(got, in) {
			t.Fatal("console output differs from input")
		}
	})
}
