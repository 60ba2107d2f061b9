package guestlog

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"
)

func TestRateLimitAndSuppressedCount(t *testing.T) {
	l, hook := test.NewNullLogger()
	g := New(logrus.NewEntry(l), "uart")
	g.Interval = 50 * time.Millisecond
	for i := 0; i < 100; i++ {
		g.Warnf("bad register %d", i)
	}
	if n := len(hook.AllEntries()); n != 1 {
		t.Fatalf("%d lines logged in one interval, want 1", n)
	}
	time.Sleep(60 * time.Millisecond)
	g.Warn(errors.New("boom"), "again")
	e := hook.LastEntry()
	if len(hook.AllEntries()) != 2 || e.Data["suppressed"] != uint64(99) || e.Data["device"] != "uart" || e.Data["error"] == nil {
		t.Fatalf("second line %v %v, want suppressed=99 device=uart error=boom", e.Message, e.Data)
	}
	New(nil, "x").Warnf("nil logger discards") // must not panic
}

func TestBurst(t *testing.T) {
	lim := Limiter{Interval: time.Hour, Burst: 3}
	got := 0
	for i := 0; i < 10; i++ {
		if ok, n := lim.Allow(); ok {
			if n != 0 {
				t.Fatalf("event %d: suppressed %d before any was held back", i, n)
			}
			got++
		}
	}
	if got != 3 {
		t.Fatalf("%d events let through, want the burst of 3", got)
	}
	// A new window lets the next through with the 7 held back.
	lim.mu.Lock()
	lim.start = time.Now().Add(-2 * time.Hour)
	lim.mu.Unlock()
	if ok, n := lim.Allow(); !ok || n != 7 {
		t.Fatalf("next window: ok=%v suppressed=%d, want true 7", ok, n)
	}
}

func TestConcurrentAllow(t *testing.T) {
	var lim Limiter // zero value: one a second
	var wg sync.WaitGroup
	var mu sync.Mutex
	allowed := 0
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 100; i++ {
				if ok, _ := lim.Allow(); ok {
					mu.Lock()
					allowed++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if allowed < 1 || allowed > 2 { // 2 only if the run straddles a second
		t.Fatalf("%d of 800 concurrent events let through, want 1", allowed)
	}
}

func TestDiscard(t *testing.T) {
	e := Discard()
	if e.Logger.IsLevelEnabled(logrus.ErrorLevel) {
		t.Fatal("Discard logger has error level enabled")
	}
	l, _ := test.NewNullLogger()
	in := logrus.NewEntry(l)
	if OrDiscard(in) != in || OrDiscard(nil) == nil {
		t.Fatal("OrDiscard: want the given entry, or a discarding one for nil")
	}
}
