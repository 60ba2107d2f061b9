package virtio

import (
	"errors"
	"sync/atomic"

	"github.com/sirupsen/logrus"
	"github.com/vmmgo/vmm/internal/guestlog"
)

// Device is a virtio device model, independent of the transport (§2, §3).
// The transport owns feature negotiation, the status state machine and the
// queue registers; it calls Activate when the driver sets DRIVER_OK, Notify
// when the driver kicks a queue, and Reset when the driver writes status 0.
type Device interface {
	Type() DeviceType
	// Features is every feature bit the device offers (including
	// CommonFeatures if it supports them).
	Features() uint64
	// QueueMaxSizes is the maximum size of each queue; its length is the
	// number of queues.
	QueueMaxSizes() []uint16
	// ReadConfig and WriteConfig access the device-specific configuration
	// space (§4.1.4.6) at off; out-of-range reads fill zeros.
	ReadConfig(off uint64, p []byte)
	WriteConfig(off uint64, p []byte)
	// Activate starts serving the queues (DRIVER_OK was set). Queues for
	// disabled virtqueues are nil.
	Activate(a Activation) error
	// Notify is called on the vCPU thread (or the ioeventfd reader) when the
	// driver kicks queue q. It must not block.
	Notify(q int)
	// Reset stops serving and returns the device to its initial state; when
	// it returns no goroutine of the device touches guest memory.
	Reset()
	// Close releases host resources (files, sockets, TAP).
	Close() error
}

// Activation is what a device gets when the driver sets DRIVER_OK.
type Activation struct {
	Mem       GuestMemory
	Features  uint64 // negotiated
	Queues    []*Queue
	Interrupt Interrupt
	Log       *logrus.Entry
}

// Interrupt is how a device signals the driver; the transport implements it
// (MSI-X vector or INTx with the ISR, §4.1.4.5).
type Interrupt interface {
	// Used signals a used-buffer notification for queue q.
	Used(q int)
	// ConfigChanged signals a configuration-change notification.
	ConfigChanged()
	// NeedsReset sets DEVICE_NEEDS_RESET and notifies the driver (§2.1.2);
	// a device calls it when a queue is broken beyond recovery.
	NeedsReset()
}

// Stats are the counters every device keeps. Guest misbehaviour is never
// fatal; it is counted here and logged through a guestlog.Limiter.
type Stats struct {
	Requests  atomic.Uint64 // chains completed
	Bytes     atomic.Uint64 // payload bytes moved
	Errors    atomic.Uint64 // requests completed with an error status
	Malformed atomic.Uint64 // malformed chains or requests
	Private   atomic.Uint64 // requests refused because they touched a private page
	Notifies  atomic.Uint64 // interrupts sent
	Panics    atomic.Uint64 // device-model panics contained (see Recover)
}

// Snapshot is a plain copy of Stats.
type Snapshot struct {
	Requests, Bytes, Errors, Malformed, Private, Notifies, Panics uint64
}

// Snapshot returns the current counter values.
func (s *Stats) Snapshot() Snapshot {
	return Snapshot{
		Requests:  s.Requests.Load(),
		Bytes:     s.Bytes.Load(),
		Errors:    s.Errors.Load(),
		Malformed: s.Malformed.Load(),
		Private:   s.Private.Load(),
		Notifies:  s.Notifies.Load(),
		Panics:    s.Panics.Load(),
	}
}

// Kicker wakes a device worker goroutine: Notify sets a pending bit per
// queue and pokes a 1-slot channel, so it never blocks the vCPU.
type Kicker struct {
	pending atomic.Uint64
	C       chan struct{}
}

// NewKicker returns a Kicker ready for use.
func NewKicker() *Kicker { return &Kicker{C: make(chan struct{}, 1)} }

// Kick marks queue q (0..63) pending and wakes the worker.
func (k *Kicker) Kick(q int) {
	if q >= 0 && q < 64 {
		k.pending.Or(1 << uint(q))
	}
	select {
	case k.C <- struct{}{}:
	default:
	}
}

// Take returns and clears the pending queue mask.
func (k *Kicker) Take() uint64 { return k.pending.Swap(0) }

// PopNext takes the next chain from q into c, re-arming driver
// notifications when the ring is empty (and looking once more, so work that
// raced the re-arm is not left waiting). A malformed chain is counted in
// s.Malformed, logged through rl, and skipped; a broken queue asks the
// driver for a reset (DEVICE_NEEDS_RESET) and reports broken.
func PopNext(q *Queue, c *Chain, a Activation, s *Stats, rl *guestlog.Limiter, log *logrus.Entry) (ok, broken bool) {
	for {
		ok, err := q.Pop(c)
		if err == nil {
			if ok {
				return true, false
			}
			// Empty: re-arm (avail_event or NO_NOTIFY, §2.7.10), look again.
			if q.EnableNotify() {
				continue
			}
			return false, false
		}
		s.Malformed.Add(1)
		rl.Warn(log, err, "malformed chain")
		if errors.Is(err, ErrQueueBroken) {
			a.Interrupt.NeedsReset()
			return false, true
		}
	}
}
