package guestlog

import (
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"
)

func TestRateLimitAndSuppressedCount(t *testing.T) {
	l, hook := test.NewNullLogger()
	g := New(logrus.NewEntry(l), "uart")
	g.interval = 50 * time.Millisecond
	for i := 0; i < 100; i++ {
		g.Warnf("bad register %d", i)
	}
	if n := len(hook.AllEntries()); n != 1 {
		t.Fatalf("%d lines logged in one interval, want 1", n)
	}
	time.Sleep(60 * time.Millisecond)
	g.Warnf("again")
	e := hook.LastEntry()
	if len(hook.AllEntries()) != 2 || e.Data["suppressed"] != uint64(99) || e.Data["device"] != "uart" {
		t.Fatalf("second line %v %v, want suppressed=99 device=uart", e.Message, e.Data)
	}
	New(nil, "x").Warnf("nil logger discards") // must not panic
}
