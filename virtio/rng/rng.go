package rng

import (
	"errors"
	"fmt"
	"os"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/vmmgo/vmm/internal/guestlog"
	"github.com/vmmgo/vmm/virtio"
)

// QueueSize is the request queue's maximum size.
const QueueSize = 256

// maxRequest bounds the bytes served per request; the driver asks again.
const maxRequest = 64 << 10

// Device is a virtio-rng device.
type Device struct {
	log *logrus.Entry
	rl  guestlog.Limiter
	// Source fills p with random bytes; getrandom(2) by default. Tests may
	// replace it before activation.
	Source func(p []byte) error

	w     virtio.Worker
	buf   []byte
	chain virtio.Chain

	Stats virtio.Stats
}

// New returns an entropy device.
func New(log *logrus.Entry) *Device {
	log = guestlog.OrDiscard(log)
	return &Device{log: log.WithField("device", "virtio-rng"), Source: getrandom, buf: make([]byte, maxRequest)}
}

func getrandom(p []byte) error {
	for len(p) > 0 {
		n, err := unix.Getrandom(p, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return os.NewSyscallError("getrandom", err)
		}
		p = p[n:]
	}
	return nil
}

// Type implements virtio.Device.
func (d *Device) Type() virtio.DeviceType { return virtio.TypeRNG }

// Features implements virtio.Device (no device-specific features, §5.4.3).
func (d *Device) Features() uint64 { return virtio.CommonFeatures }

// QueueMaxSizes implements virtio.Device.
func (d *Device) QueueMaxSizes() []uint16 { return []uint16{QueueSize} }

// ReadConfig implements virtio.Device (no configuration space).
func (d *Device) ReadConfig(_ uint64, p []byte) { clear(p) }

// WriteConfig implements virtio.Device.
func (d *Device) WriteConfig(uint64, []byte) {}

// Activate implements virtio.Device.
func (d *Device) Activate(a virtio.Activation) error {
	if len(a.Queues) != 1 || a.Queues[0] == nil {
		return errors.New("virtio-rng: request queue not enabled")
	}
	if !d.w.Start(a, &d.Stats, func(k *virtio.Kicker, stop <-chan struct{}) { d.run(a, k, stop) }) {
		return errors.New("virtio-rng: already active")
	}
	return nil
}

// Notify implements virtio.Device.
func (d *Device) Notify(int) { d.w.Kick(0) }

// Reset implements virtio.Device.
func (d *Device) Reset() { d.w.Stop() }

// Close implements virtio.Device.
func (d *Device) Close() error { d.Reset(); return nil }

func (d *Device) run(a virtio.Activation, k *virtio.Kicker, stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		case <-k.C:
		}
		k.Take()
		if !d.Drain(a) {
			return
		}
	}
}

// Drain serves every available request; false when the queue is broken.
func (d *Device) Drain(a virtio.Activation) bool {
	q := a.Queues[0]
	c := &d.chain
	for {
		q.DisableNotify()
		for {
			ok, err := q.Pop(c)
			if err != nil {
				d.Stats.Malformed.Add(1)
				d.rl.Warn(d.log, err, "malformed chain")
				if errors.Is(err, virtio.ErrQueueBroken) {
					a.Interrupt.NeedsReset()
					return false
				}
				continue
			}
			if !ok {
				break
			}
			n := d.serve(a.Mem, c)
			if err := q.PushUsed(c.Head, n); err != nil {
				d.rl.Warn(d.log, err, "complete request")
				a.Interrupt.NeedsReset()
				return false
			}
			d.Stats.Requests.Add(1)
			d.Stats.Bytes.Add(uint64(n))
		}
		if q.ShouldNotify() {
			d.Stats.Notifies.Add(1)
			a.Interrupt.Used(0)
		}
		if !q.EnableNotify() {
			return true
		}
	}
}

func (d *Device) serve(mem virtio.GuestMemory, c *virtio.Chain) uint32 {
	if c.Err != nil {
		d.Stats.Private.Add(1)
		d.rl.Warn(d.log, c.Err, "request touches a private page")
		return 0
	}
	if c.WritableLen == 0 || c.ReadableLen != 0 {
		d.Stats.Malformed.Add(1)
		d.rl.Warn(d.log, fmt.Errorf("%d readable, %d writable bytes", c.ReadableLen, c.WritableLen), "malformed entropy request")
		return 0
	}
	n := min(c.WritableLen, maxRequest)
	b := d.buf[:n]
	if err := d.Source(b); err != nil {
		d.Stats.Errors.Add(1)
		d.rl.Warn(d.log, err, "entropy source")
		return 0
	}
	if _, err := c.WriteAt(mem, b, 0); err != nil {
		d.Stats.Errors.Add(1)
		d.rl.Warn(d.log, err, "write entropy")
		return 0
	}
	return n
}
