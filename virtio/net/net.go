package net

import (
	"errors"
	"fmt"
	"io"
	stdnet "net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/vmmgo/vmm/internal/guestlog"
	"github.com/vmmgo/vmm/virtio"
)

// Feature bits (§5.1.3).
const (
	FCsum        = 1 << 0
	FGuestCsum   = 1 << 1
	FMAC         = 1 << 5
	FGuestTSO4   = 1 << 7
	FGuestTSO6   = 1 << 8
	FGuestECN    = 1 << 9
	FHostTSO4    = 1 << 11
	FHostTSO6    = 1 << 12
	FHostECN     = 1 << 13
	FStatus      = 1 << 16
	statusLinkUp = 1
)

// QueueSize is the maximum size of the rx and tx queues.
const QueueSize = 256

// maxFrame bounds one packet: 64 KiB GSO frame + Ethernet/VLAN header.
const maxFrame = 65536 + 14 + 4

// Config selects the TAP.
type Config struct {
	TAP string   // interface name (must exist); or
	FD  *os.File // an already-open TAP (IFF_TAP|IFF_NO_PI|IFF_VNET_HDR); taken over
	MAC stdnet.HardwareAddr
	Log *logrus.Entry
}

// Backend is the host side of the device; *os.File of a TAP satisfies it.
// Read returns one frame with its 12-byte virtio_net_hdr; Write takes one.
type Backend interface {
	Read(p []byte) (int, error)
	Write(p []byte) (int, error)
	SetReadDeadline(t time.Time) error
	Close() error
}

// Device is a virtio-net device.
type Device struct {
	be       Backend
	fd       int // -1 without a TAP (tests)
	name     string
	mac      stdnet.HardwareAddr
	features uint64
	log      *logrus.Entry
	rl       guestlog.Limiter

	mu      sync.Mutex
	rxKick  *virtio.Kicker
	txKick  *virtio.Kicker
	stop    chan struct{}
	wg      sync.WaitGroup
	active  bool
	txChain virtio.Chain
	rxChain virtio.Chain
	txBuf   []byte
	rxBuf   []byte

	Stats virtio.Stats
	// Frames dropped in each direction (also counted in Stats by cause).
	RxDropped, TxDropped atomic.Uint64
}

// Open attaches to a TAP and probes its offloads.
func Open(cfg Config) (*Device, error) {
	var f *os.File
	var err error
	switch {
	case cfg.FD != nil && cfg.TAP != "":
		return nil, errors.New("virtio-net: give a TAP name or a file, not both")
	case cfg.FD != nil:
		// Take the descriptor over through a duplicate. Re-wrapping
		// cfg.FD's own number in a second *os.File would give it two
		// owners (the dropped one's finalizer closes it under the device),
		// and Fd() of a pollable File switches it back to blocking mode.
		nfd, err := unix.FcntlInt(cfg.FD.Fd(), unix.F_DUPFD_CLOEXEC, 0)
		cfg.FD.Close()
		if err != nil {
			return nil, fmt.Errorf("virtio-net: TAP %s: %w", cfg.FD.Name(), os.NewSyscallError("fcntl(F_DUPFD_CLOEXEC)", err))
		}
		if err := unix.SetNonblock(nfd, true); err != nil {
			unix.Close(nfd)
			return nil, fmt.Errorf("virtio-net: %w", os.NewSyscallError("fcntl", err))
		}
		f = os.NewFile(uintptr(nfd), cfg.FD.Name()) // O_NONBLOCK: the Go poller serves it
	case cfg.TAP != "":
		if f, err = openTAP(cfg.TAP); err != nil {
			return nil, fmt.Errorf("virtio-net: %w", err)
		}
	default:
		return nil, errors.New("virtio-net: no TAP configured")
	}
	fd := int(f.Fd())
	if err := setupTAP(fd); err != nil {
		f.Close()
		return nil, fmt.Errorf("virtio-net: %w", err)
	}
	features := uint64(FCsum | FHostTSO4 | FHostTSO6 | FHostECN)
	if setOffload(fd, tunFCsum|tunFTSO4|tunFTSO6|tunFECN) == nil {
		features |= FGuestCsum | FGuestTSO4 | FGuestTSO6 | FGuestECN
	} else if setOffload(fd, tunFCsum) == nil {
		features |= FGuestCsum
	}
	_ = setOffload(fd, 0) // nothing until the guest negotiates
	d, err := New(f, features, cfg.MAC, cfg.Log)
	if err != nil {
		f.Close()
		return nil, err
	}
	d.fd = fd
	d.name = f.Name()
	return d, nil
}

// New builds a device over any Backend offering the given offload
// features (FCsum, FGuestCsum, TSO bits). Open is the TAP constructor.
func New(be Backend, offloads uint64, mac stdnet.HardwareAddr, log *logrus.Entry) (*Device, error) {
	if mac != nil && len(mac) != 6 {
		return nil, fmt.Errorf("virtio-net: MAC %v is not 6 bytes", mac)
	}
	log = guestlog.OrDiscard(log)
	f := virtio.CommonFeatures | FStatus | offloads
	if mac != nil {
		f |= FMAC
	}
	return &Device{be: be, fd: -1, mac: mac, features: f, log: log.WithField("device", "virtio-net"),
		txBuf: make([]byte, HeaderSize+maxFrame), rxBuf: make([]byte, HeaderSize+maxFrame)}, nil
}

// Type implements virtio.Device.
func (d *Device) Type() virtio.DeviceType { return virtio.TypeNet }

// Features implements virtio.Device.
func (d *Device) Features() uint64 { return d.features }

// QueueMaxSizes implements virtio.Device: receiveq1, transmitq1 (§5.1.2).
func (d *Device) QueueMaxSizes() []uint16 { return []uint16{QueueSize, QueueSize} }

// ReadConfig implements virtio.Device (struct virtio_net_config, §5.1.4).
func (d *Device) ReadConfig(off uint64, p []byte) {
	clear(p)
	var c [10]byte
	copy(c[:6], d.mac)
	c[6] = statusLinkUp
	c[8] = 1 // max_virtqueue_pairs
	if off < uint64(len(c)) {
		copy(p, c[off:])
	}
}

// WriteConfig implements virtio.Device (read-only with VERSION_1).
func (d *Device) WriteConfig(uint64, []byte) {}

// Activate implements virtio.Device: program the TAP offloads to what the
// guest can receive, then start the rx and tx goroutines.
func (d *Device) Activate(a virtio.Activation) error {
	if len(a.Queues) < 2 || a.Queues[0] == nil || a.Queues[1] == nil {
		return errors.New("virtio-net: rx/tx queues not enabled")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.active {
		return errors.New("virtio-net: already active")
	}
	if d.fd >= 0 {
		off := 0
		if a.Features&FGuestCsum != 0 {
			off |= tunFCsum
			if a.Features&FGuestTSO4 != 0 {
				off |= tunFTSO4
			}
			if a.Features&FGuestTSO6 != 0 {
				off |= tunFTSO6
			}
			if a.Features&FGuestECN != 0 {
				off |= tunFECN
			}
		}
		if err := setOffload(d.fd, off); err != nil {
			return fmt.Errorf("virtio-net: %w", err)
		}
	}
	_ = d.be.SetReadDeadline(time.Time{})
	d.active = true
	d.rxKick, d.txKick = virtio.NewKicker(), virtio.NewKicker()
	d.stop = make(chan struct{})
	d.wg.Add(2)
	go d.rx(a, d.rxKick, d.stop)
	go d.tx(a, d.txKick, d.stop)
	return nil
}

// Notify implements virtio.Device.
func (d *Device) Notify(q int) {
	d.mu.Lock()
	k := d.rxKick
	if q == 1 {
		k = d.txKick
	}
	d.mu.Unlock()
	if k != nil && (q == 0 || q == 1) {
		k.Kick(q)
	}
}

// Reset implements virtio.Device: stop both goroutines (the rx one may be
// blocked reading the TAP: a past read deadline wakes it).
func (d *Device) Reset() {
	d.mu.Lock()
	stop := d.stop
	d.rxKick, d.txKick, d.stop = nil, nil, nil
	was := d.active
	d.active = false
	d.mu.Unlock()
	if !was {
		return
	}
	close(stop)
	_ = d.be.SetReadDeadline(time.Unix(1, 0))
	d.wg.Wait()
}

// Close implements virtio.Device.
func (d *Device) Close() error {
	d.Reset()
	if err := d.be.Close(); err != nil {
		return fmt.Errorf("virtio-net: close %s: %w", d.name, err)
	}
	return nil
}

func (d *Device) broken(a virtio.Activation, err error) {
	d.rl.Warn(d.log, err, "virtqueue broken")
	a.Interrupt.NeedsReset()
}

// tx serves the transmit queue (§5.1.6.2).
func (d *Device) tx(a virtio.Activation, k *virtio.Kicker, stop chan struct{}) {
	defer d.wg.Done()
	defer a.Recover(&d.Stats, "tx")
	for {
		select {
		case <-stop:
			return
		case <-k.C:
		}
		k.Take()
		if err := d.DrainTx(a); err != nil {
			d.broken(a, err)
			<-stop
			return
		}
	}
}

// DrainTx sends every available transmit chain to the backend.
func (d *Device) DrainTx(a virtio.Activation) error {
	q := a.Queues[1]
	c := &d.txChain
	for {
		q.DisableNotify()
		for {
			ok, err := q.Pop(c)
			if err != nil {
				d.Stats.Malformed.Add(1)
				if errors.Is(err, virtio.ErrQueueBroken) {
					return err
				}
				d.rl.Warn(d.log, err, "malformed tx chain")
				continue
			}
			if !ok {
				break
			}
			d.send(a, c)
			if err := q.PushUsed(c.Head, 0); err != nil {
				return err
			}
			d.Stats.Requests.Add(1)
		}
		if q.ShouldNotify() {
			d.Stats.Notifies.Add(1)
			a.Interrupt.Used(1)
		}
		if !q.EnableNotify() {
			return nil
		}
	}
}

func (d *Device) send(a virtio.Activation, c *virtio.Chain) {
	switch {
	case c.Err != nil:
		d.Stats.Private.Add(1)
		d.TxDropped.Add(1)
		d.rl.Warn(d.log, c.Err, "tx buffer on a private page")
		return
	case c.ReadableLen < HeaderSize || c.ReadableLen > uint32(len(d.txBuf)):
		d.Stats.Malformed.Add(1)
		d.TxDropped.Add(1)
		d.rl.Warn(d.log, fmt.Errorf("tx chain of %d bytes", c.ReadableLen), "bad tx packet size")
		return
	}
	b := d.txBuf[:c.ReadableLen]
	if _, err := c.ReadAt(a.Mem, b, 0); err != nil {
		d.Stats.Errors.Add(1)
		d.TxDropped.Add(1)
		return
	}
	if _, err := ParseHeader(b, len(b)-HeaderSize, a.Features); err != nil {
		d.Stats.Malformed.Add(1)
		d.TxDropped.Add(1)
		d.rl.Warn(d.log, err, "tx header")
		return
	}
	if _, err := d.be.Write(b); err != nil {
		d.Stats.Errors.Add(1)
		d.TxDropped.Add(1)
		d.rl.Warn(d.log, err, "write to TAP")
		return
	}
	d.Stats.Bytes.Add(uint64(len(b) - HeaderSize))
}

// rx moves frames from the backend into receive buffers (§5.1.6.3).
func (d *Device) rx(a virtio.Activation, k *virtio.Kicker, stop chan struct{}) {
	defer d.wg.Done()
	defer a.Recover(&d.Stats, "rx")
	q := a.Queues[0]
	for {
		n, err := d.be.Read(d.rxBuf)
		if err != nil {
			select {
			case <-stop:
				return
			default:
			}
			if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				continue
			}
			d.rl.Warn(d.log, err, "read from TAP")
			if errors.Is(err, io.EOF) || errors.Is(err, os.ErrClosed) {
				<-stop
				return
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		if n < HeaderSize {
			continue
		}
		for {
			ok, err := d.deliver(a, q, d.rxBuf[:n])
			if err != nil {
				d.broken(a, err)
				<-stop
				return
			}
			if ok {
				break
			}
			// No receive buffer: wait for the driver to add some.
			select {
			case <-stop:
				return
			case <-k.C:
				k.Take()
			}
		}
	}
}

// deliver writes one frame (with its header) into the next receive chain.
// It returns false when the driver has no receive buffer posted.
func (d *Device) deliver(a virtio.Activation, q *virtio.Queue, frame []byte) (bool, error) {
	c := &d.rxChain
	for {
		ok, err := q.Pop(c)
		if err != nil {
			d.Stats.Malformed.Add(1)
			if errors.Is(err, virtio.ErrQueueBroken) {
				return false, err
			}
			continue
		}
		if !ok {
			if q.EnableNotify() {
				continue
			}
			return false, nil
		}
		if c.Err != nil || c.WritableLen < uint32(len(frame)) {
			// Unusable buffer: complete it empty and drop the frame, as
			// a NIC does when a descriptor is too small.
			if c.Err != nil {
				d.Stats.Private.Add(1)
				d.rl.Warn(d.log, c.Err, "rx buffer on a private page")
			} else {
				d.Stats.Malformed.Add(1)
			}
			d.RxDropped.Add(1)
			if err := q.PushUsed(c.Head, 0); err != nil {
				return false, err
			}
			d.notify(a, q, 0)
			return true, nil
		}
		// num_buffers is 1: no VIRTIO_NET_F_MRG_RXBUF (§5.1.6.4).
		frame[10], frame[11] = 1, 0
		if _, err := c.WriteAt(a.Mem, frame, 0); err != nil {
			d.Stats.Errors.Add(1)
			d.RxDropped.Add(1)
			if err := q.PushUsed(c.Head, 0); err != nil {
				return false, err
			}
			return true, nil
		}
		if err := q.PushUsed(c.Head, uint32(len(frame))); err != nil {
			return false, err
		}
		d.Stats.Requests.Add(1)
		d.Stats.Bytes.Add(uint64(len(frame) - HeaderSize))
		d.notify(a, q, 0)
		return true, nil
	}
}

func (d *Device) notify(a virtio.Activation, q *virtio.Queue, qi int) {
	if q.ShouldNotify() {
		d.Stats.Notifies.Add(1)
		a.Interrupt.Used(qi)
	}
}
