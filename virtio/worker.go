package virtio

import "sync"

// Worker runs a device's request loop on its own goroutine, off the vCPU
// threads: started by Activate, woken by Kick (from Notify), stopped and
// waited for by Stop (from Reset and Close). The zero value is ready.
type Worker struct {
	mu   sync.Mutex
	kick *Kicker
	stop chan struct{}
	done chan struct{}
}

// Start runs loop on a new goroutine with a fresh Kicker and a stop channel
// that Stop closes. It returns false, starting nothing, if a loop is already
// running. A panic in loop is contained (Activation.Recover, counted in
// s.Panics): the loop ends, the device asks for a reset, the VMM goes on.
func (w *Worker) Start(a Activation, s *Stats, loop func(k *Kicker, stop <-chan struct{})) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stop != nil {
		return false
	}
	k, stop, done := NewKicker(), make(chan struct{}), make(chan struct{})
	w.kick, w.stop, w.done = k, stop, done
	go func() {
		defer close(done)
		defer a.Recover(s, "worker")
		loop(k, stop)
	}()
	return true
}

// Kick marks queue q pending and wakes the loop; nothing when none runs.
func (w *Worker) Kick(q int) {
	if k := w.Kicker(); k != nil {
		k.Kick(q)
	}
}

// Kicker is the running loop's Kicker, nil when none runs.
func (w *Worker) Kicker() *Kicker {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.kick
}

// Running reports whether a loop was started and not stopped.
func (w *Worker) Running() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.stop != nil
}

// Stop closes the loop's stop channel and waits for the loop to return. It
// is a no-op when none runs, and safe from several goroutines.
func (w *Worker) Stop() {
	w.mu.Lock()
	stop, done := w.stop, w.done
	w.kick, w.stop, w.done = nil, nil, nil
	w.mu.Unlock()
	if stop != nil {
		close(stop)
		<-done
	}
}
