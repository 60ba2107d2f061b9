package virtiotest

import (
	"fmt"
	"sync"
	"time"

	"github.com/vmmgo/vmm/internal/guestlog"
	"github.com/vmmgo/vmm/memory"
	"github.com/vmmgo/vmm/virtio"
)

// Interrupts records what a device signalled; it implements virtio.Interrupt.
type Interrupts struct {
	mu         sync.Mutex
	used       map[int]int
	config     int
	needsReset int
	wake       chan struct{}
}

// NewInterrupts returns an empty recorder.
func NewInterrupts() *Interrupts {
	return &Interrupts{used: map[int]int{}, wake: make(chan struct{}, 1)}
}

func (i *Interrupts) poke() {
	select {
	case i.wake <- struct{}{}:
	default:
	}
}

// Used implements virtio.Interrupt.
func (i *Interrupts) Used(q int) { i.mu.Lock(); i.used[q]++; i.mu.Unlock(); i.poke() }

// ConfigChanged implements virtio.Interrupt.
func (i *Interrupts) ConfigChanged() { i.mu.Lock(); i.config++; i.mu.Unlock(); i.poke() }

// NeedsReset implements virtio.Interrupt.
func (i *Interrupts) NeedsReset() { i.mu.Lock(); i.needsReset++; i.mu.Unlock(); i.poke() }

// Counts returns used-buffer interrupts of queue q, config interrupts and
// needs-reset signals so far.
func (i *Interrupts) Counts(q int) (used, config, needsReset int) {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.used[q], i.config, i.needsReset
}

// Harness wires a device to fake memory, one fake driver per queue and an
// interrupt recorder, the way a transport would.
type Harness struct {
	Mem      *Memory
	Drivers  []*Driver
	Dev      virtio.Device
	Irq      *Interrupts
	Features uint64
	Queues   []*virtio.Queue
}

// NewHarness lays out every queue of dev (at its maximum size, capped at
// maxSize if non-zero) in memSize bytes of fake RAM, each with arena bytes
// of buffers, and negotiates want & dev.Features() | VERSION_1.
func NewHarness(dev virtio.Device, want uint64, memSize int, arena uint64, maxSize uint16) (*Harness, error) {
	h := &Harness{Mem: NewMemory(memSize), Dev: dev, Irq: NewInterrupts()}
	h.Features = (dev.Features() & want) | virtio.FVersion1
	base := memory.GPA(memory.PageSize)
	for i, s := range dev.QueueMaxSizes() {
		if maxSize != 0 && s > maxSize {
			s = maxSize
		}
		d, err := NewDriver(h.Mem, base, s, arena)
		if err != nil {
			return nil, fmt.Errorf("queue %d: %w", i, err)
		}
		base = (d.End() + memory.PageSize - 1) &^ (memory.PageSize - 1)
		q, err := virtio.NewQueue(h.Mem, d.Cfg, h.Features)
		if err != nil {
			return nil, err
		}
		h.Drivers = append(h.Drivers, d)
		h.Queues = append(h.Queues, q)
	}
	return h, nil
}

// Activation returns what a transport would pass to Activate.
func (h *Harness) Activation() virtio.Activation {
	return virtio.Activation{Mem: h.Mem, Features: h.Features, Queues: h.Queues, Interrupt: h.Irq, Log: guestlog.Discard()}
}

// Activate activates the device.
func (h *Harness) Activate() error { return h.Dev.Activate(h.Activation()) }

// Reactivate resets the device, builds fresh queues over the same rings
// (the driver re-initialises them) and activates again.
func (h *Harness) Reactivate() error {
	h.Dev.Reset()
	for i, d := range h.Drivers {
		nd, err := NewDriver(h.Mem, d.Cfg.Desc, d.Cfg.Size, d.arenaEnd-d.arenaStart)
		if err != nil {
			return err
		}
		clear(h.Mem.buf[nd.Cfg.Avail : nd.Cfg.Used+memory.GPA(6+8*uint64(nd.Cfg.Size))])
		q, err := virtio.NewQueue(h.Mem, nd.Cfg, h.Features)
		if err != nil {
			return err
		}
		h.Drivers[i], h.Queues[i] = nd, q
	}
	return h.Activate()
}

// WaitUsed kicks queue q and waits until its driver sees a used element.
func (h *Harness) WaitUsed(q int, timeout time.Duration) (UsedElem, error) {
	deadline := time.Now().Add(timeout)
	h.Dev.Notify(q)
	for {
		if e, ok := h.Drivers[q].Used(); ok {
			return e, nil
		}
		if time.Now().After(deadline) {
			return UsedElem{}, fmt.Errorf("queue %d: no used element after %v", q, timeout)
		}
		select {
		case <-h.Irq.wake:
		case <-time.After(time.Millisecond):
		}
	}
}
