package virtio

import (
	"sync/atomic"
	"testing"
	"time"
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
	if !w.Start(loop) || !w.Running() {
		t.Fatal("Start did not start")
	}
	if w.Start(loop) {
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
	if !w.Start(loop) {
		t.Fatal("cannot restart after Stop")
	}
	w.Stop()
}
