package virtio

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"
)

func TestWorkerLifecycle(t *testing.T) {
	var w Worker
	w.Kick(0) // nothing running: no-op
	w.Stop()  // likewise
	var served atomic.Uint64
	loop := func(k *Kicker, stop <-chan struct{}) {
		for {
			select {
			case <-stop:
				return
			case <-k.C:
				served.Add(k.Take())
			}
		}
	}
	if !w.Start(Activation{}, &Stats{}, loop) || !w.Running() {
		t.Fatal("Start did not start")
	}
	if w.Start(Activation{}, &Stats{}, loop) {
		t.Fatal("a second loop started while one runs")
	}
	w.Kick(3)
	deadline := time.Now().Add(5 * time.Second)
	for served.Load() != 1<<3 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if served.Load() != 1<<3 {
		t.Fatalf("served mask %#x, want queue 3", served.Load())
	}
	w.Stop()
	if w.Running() || w.Kicker() != nil {
		t.Fatal("still running after Stop")
	}
	if !w.Start(Activation{}, &Stats{}, loop) {
		t.Fatal("cannot restart after Stop")
	}
	w.Stop()
}

// A panic in the loop ends the loop, not the process: counted, logged once
// with its stack, and the driver is asked for a reset.
func TestWorkerPanicBecomesDeviceFailure(t *testing.T) {
	l, hook := test.NewNullLogger()
	irq := &countingInterrupt{}
	a := Activation{Interrupt: irq, Log: logrus.NewEntry(l)}
	var s Stats
	var w Worker
	for i := 0; i < 2; i++ {
		w.Start(a, &s, func(k *Kicker, stop <-chan struct{}) {
			<-k.C
			panic("device bug")
		})
		w.Kick(0)
		deadline := time.Now().Add(5 * time.Second)
		for s.Panics.Load() != uint64(i+1) && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		w.Stop() // returns: the loop is gone
	}
	if s.Panics.Load() != 2 || irq.needsReset.Load() != 2 {
		t.Fatalf("panics %d, needs-reset %d; want 2 and 2", s.Panics.Load(), irq.needsReset.Load())
	}
	if n := len(hook.AllEntries()); n != 1 {
		t.Fatalf("%d log lines for 2 panics, want 1", n)
	}
	if e := hook.LastEntry(); e.Level != logrus.ErrorLevel || e.Data["panic"] != "device bug" || e.Data["stack"] == "" {
		t.Fatalf("log line %q %v: want an error with the panic and its stack", e.Message, e.Data)
	}
}

type countingInterrupt struct{ needsReset atomic.Uint64 }

func (*countingInterrupt) Used(int)       {}
func (*countingInterrupt) ConfigChanged() {}
func (c *countingInterrupt) NeedsReset()  { c.needsReset.Add(1) }
