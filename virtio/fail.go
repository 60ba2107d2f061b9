package virtio

import (
	"runtime/debug"
	"sync/atomic"

	"github.com/sirupsen/logrus"
)

// Recover contains a panic in device code. Every goroutine a device model
// starts defers it first (Worker does so for its loop):
//
//	defer a.Recover(&d.Stats, "tx")
//
// A panic there is a bug in the device model, never something the guest
// may use to stop the VMM, so it becomes the failure of that device alone
// (see Fail). Recover must be deferred directly: recover only stops a
// panic when the deferred function itself calls it.
func (a Activation) Recover(s *Stats, where string) {
	if v := recover(); v != nil {
		Fail(a.Interrupt, &s.Panics, a.Log, where, v)
	}
}

// Fail makes v, a panic recovered from device code at where, the device's
// failure: it is counted in count, logged with its stack the first time
// count goes up (later ones are only counted: a driver that resets and
// re-triggers the bug must not flood the log), and the driver is asked to
// reset the device (DEVICE_NEEDS_RESET and a configuration-change
// interrupt, virtio 1.2 §2.1.2). The goroutine that panicked is gone; the
// guest, the VMM and every other device go on.
func Fail(intr Interrupt, count *atomic.Uint64, log *logrus.Entry, where string, v any) {
	if count.Add(1) == 1 && log != nil {
		log.WithFields(logrus.Fields{"where": where, "panic": v, "stack": string(debug.Stack())}).
			Error("device model panicked; device marked DEVICE_NEEDS_RESET")
	}
	if intr != nil {
		intr.NeedsReset()
	}
}
