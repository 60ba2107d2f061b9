package debugport

import (
	"bytes"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

// lineWriter records each Write call separately.
type lineWriter struct {
	mu    sync.Mutex
	lines []string
	fail  bool
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.fail {
		return 0, errors.New("closed")
	}
	w.lines = append(w.lines, string(p))
	return len(p), nil
}

func TestConsoleLineBuffered(t *testing.T) {
	w := &lineWriter{}
	c := NewConsole(w, nil)
	for _, b := range []byte("hello ") {
		c.BusWrite(0, 0, []byte{b})
	}
	if len(w.lines) != 0 {
		t.Fatalf("partial line written early: %q", w.lines)
	}
	c.BusWrite(0, 0, []byte("wo")) // wide write: both bytes
	c.BusWrite(0, 0, []byte("rld\nnext"))
	if len(w.lines) != 1 || w.lines[0] != "hello world\n" {
		t.Fatalf("lines %q", w.lines)
	}
	c.Flush()
	if len(w.lines) != 2 || w.lines[1] != "next" {
		t.Fatalf("Flush: lines %q", w.lines)
	}
	c.Flush()
	if len(w.lines) != 2 {
		t.Fatal("empty Flush wrote")
	}
	long := bytes.Repeat([]byte{'x'}, MaxLine+10)
	c.BusWrite(0, 0, long)
	if len(w.lines) != 3 || len(w.lines[2]) != MaxLine {
		t.Fatalf("long line not cut at MaxLine: %d lines", len(w.lines))
	}
	if c.Bytes() != uint64(6+2+8+len(long)) {
		t.Fatalf("Bytes = %d", c.Bytes())
	}
	var b [2]byte
	c.BusRead(0, 0, b[:])
	if b != [2]byte{0xE9, 0xE9} {
		t.Fatalf("readback % x", b)
	}
	w.fail = true
	c.BusWrite(0, 0, []byte("x\n"))
	if c.Errors() != 1 {
		t.Fatalf("Errors = %d", c.Errors())
	}
}

func TestConsoleConcurrentLinesIntact(t *testing.T) {
	w := &lineWriter{}
	c := NewConsole(w, nil)
	var wg sync.WaitGroup
	for v := range 4 {
		wg.Go(func() {
			// Each vCPU writes whole lines in one wide access each
			// (string I/O arrives as one call per element, so this is
			// the best a guest can do to keep lines together).
			line := []byte(strings.Repeat(string(rune('a'+v)), 10) + "\n")
			for range 100 {
				c.BusWrite(v, 0, line)
			}
		})
	}
	wg.Wait()
	if len(w.lines) != 400 {
		t.Fatalf("%d lines", len(w.lines))
	}
	for _, l := range w.lines {
		if len(l) != 11 || strings.Count(l, l[:1]) != 10 {
			t.Fatalf("mixed line %q", l)
		}
	}
}

func TestPOST(t *testing.T) {
	now := time.Unix(1000, 0)
	p := NewPOST(func() time.Time { return now }, nil)
	if _, ok := p.FirstWrite(); ok {
		t.Fatal("FirstWrite before any write")
	}
	if _, ok := p.Last(); ok {
		t.Fatal("Last before any write")
	}
	p.BusWrite(0, 0, []byte{0x12})
	now = now.Add(time.Second)
	p.BusWrite(1, 0, []byte{0x34, 0x00})
	now = now.Add(time.Second)
	p.BusWrite(0, 0, []byte{0x12})
	first, ok := p.FirstWrite()
	if !ok || !first.Equal(time.Unix(1000, 0)) {
		t.Fatalf("FirstWrite %v %v", first, ok)
	}
	if t34, ok := p.FirstWriteOf(0x34); !ok || !t34.Equal(time.Unix(1001, 0)) {
		t.Fatalf("FirstWriteOf(0x34) = %v", t34)
	}
	if t12, _ := p.FirstWriteOf(0x12); !t12.Equal(time.Unix(1000, 0)) {
		t.Fatalf("FirstWriteOf(0x12) moved to %v", t12)
	}
	if _, ok := p.FirstWriteOf(0x99); ok {
		t.Fatal("FirstWriteOf unwritten code")
	}
	if v, _ := p.Last(); v != 0x12 || p.Writes() != 3 {
		t.Fatalf("Last %#x Writes %d", v, p.Writes())
	}
	var b [1]byte
	p.BusRead(0, 0, b[:])
	if b[0] != 0xFF {
		t.Fatalf("read %#x", b[0])
	}
}
