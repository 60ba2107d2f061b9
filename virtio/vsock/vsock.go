package vsock

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/vmmgo/vmm/internal/guestlog"
	"github.com/vmmgo/vmm/virtio"
)

// QueueSize is the maximum size of each queue (rx, tx, event; §5.10.2).
const QueueSize = 256

const (
	bufAlloc        = 256 << 10 // our receive buffer per connection (buf_alloc)
	firstHostPort   = 1 << 30   // local ports for host-initiated streams
	handshakeLimit  = 64        // bytes of "CONNECT <port>\n"
	handshakeWait   = 5 * time.Second
	dialWait        = 2 * time.Second
	creditThreshold = bufAlloc / 4
)

// Config configures the device.
type Config struct {
	GuestCID uint64 // ≥ 3
	Path     string // unix socket the host connects to; "<Path>_<port>" for guest-initiated streams
	Log      *logrus.Entry
}

// Device is a virtio-vsock device.
type Device struct {
	cfg    Config
	log    *logrus.Entry
	rl     guestlog.Limiter
	ln     *net.UnixListener
	events chan event

	w     virtio.Worker
	mu    sync.Mutex
	reset bool // a TRANSPORT_RESET event is owed to the driver

	Stats virtio.Stats
}

// Open validates the configuration and listens on Path.
func Open(cfg Config) (*Device, error) {
	if cfg.GuestCID < 3 || cfg.GuestCID > 0xffffffff {
		return nil, fmt.Errorf("virtio-vsock: guest CID %d must be in [3, 2^32)", cfg.GuestCID)
	}
	if cfg.Path == "" {
		return nil, errors.New("virtio-vsock: no unix socket path")
	}
	if st, err := os.Stat(filepath.Dir(cfg.Path)); err != nil || !st.IsDir() {
		return nil, fmt.Errorf("virtio-vsock: directory of socket %s: %w", cfg.Path, errOr(err, errors.New("not a directory")))
	}
	if st, err := os.Lstat(cfg.Path); err == nil {
		if st.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("virtio-vsock: %s exists and is not a socket", cfg.Path)
		}
		if c, err := net.Dial("unix", cfg.Path); err == nil {
			c.Close()
			return nil, fmt.Errorf("virtio-vsock: socket %s is in use by another process", cfg.Path)
		}
		_ = os.Remove(cfg.Path) // stale socket from a previous run
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: cfg.Path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("virtio-vsock: listen on %s: %w", cfg.Path, err)
	}
	log := guestlog.OrDiscard(cfg.Log)
	d := &Device{cfg: cfg, log: log.WithField("device", "virtio-vsock"), ln: ln, events: make(chan event, 256)}
	go d.accept()
	return d, nil
}

func errOr(err, def error) error {
	if err != nil {
		return err
	}
	return def
}

// Type implements virtio.Device.
func (d *Device) Type() virtio.DeviceType { return virtio.TypeVsock }

// Features implements virtio.Device (stream sockets only).
func (d *Device) Features() uint64 { return virtio.CommonFeatures }

// QueueMaxSizes implements virtio.Device.
func (d *Device) QueueMaxSizes() []uint16 { return []uint16{QueueSize, QueueSize, QueueSize} }

// ReadConfig implements virtio.Device: le64 guest_cid (§5.10.4).
func (d *Device) ReadConfig(off uint64, p []byte) {
	clear(p)
	var c [8]byte
	binary.LittleEndian.PutUint64(c[:], d.cfg.GuestCID)
	if off < 8 {
		copy(p, c[off:])
	}
}

// WriteConfig implements virtio.Device (read-only).
func (d *Device) WriteConfig(uint64, []byte) {}

// Activate implements virtio.Device.
func (d *Device) Activate(a virtio.Activation) error {
	if len(a.Queues) != 3 || a.Queues[0] == nil || a.Queues[1] == nil {
		return errors.New("virtio-vsock: rx/tx queues not enabled")
	}
	w := &worker{d: d, a: a, conns: map[key]*conn{}, nextPort: firstHostPort}
	if !d.w.Start(a, &d.Stats, w.run) {
		return errors.New("virtio-vsock: already active")
	}
	return nil
}

// Notify implements virtio.Device.
func (d *Device) Notify(q int) { d.w.Kick(q) }

// SendTransportReset queues VIRTIO_VSOCK_EVENT_TRANSPORT_RESET (after a
// snapshot restore the guest must drop its connections, §5.10.6.8).
func (d *Device) SendTransportReset() {
	d.mu.Lock()
	d.reset = true
	d.mu.Unlock()
	d.w.Kick(2)
}

// Reset implements virtio.Device: stops the worker, which closes every
// connection.
func (d *Device) Reset() { d.w.Stop() }

// Close implements virtio.Device: also stops listening and removes the socket.
func (d *Device) Close() error {
	d.Reset()
	err := d.ln.Close()
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("virtio-vsock: close %s: %w", d.cfg.Path, err)
	}
	return nil
}

// accept takes host connections on Path and reads their handshake.
func (d *Device) accept() {
	for {
		uc, err := d.ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				d.rl.Warn(d.log, err, "accept")
				time.Sleep(10 * time.Millisecond)
				continue
			}
			return
		}
		go d.handshake(uc)
	}
}

// handshake reads "CONNECT <port>\n" byte by byte (so no stream data after
// it is consumed) and hands the connection to the worker.
func (d *Device) handshake(uc net.Conn) {
	_ = uc.SetReadDeadline(time.Now().Add(handshakeWait))
	var line []byte
	b := make([]byte, 1)
	for len(line) < handshakeLimit {
		if _, err := uc.Read(b); err != nil {
			uc.Close()
			return
		}
		if b[0] == '\n' {
			break
		}
		line = append(line, b[0])
	}
	_ = uc.SetReadDeadline(time.Time{})
	port, err := parseConnect(string(line))
	if err != nil {
		d.rl.Warn(d.log, err, "host handshake")
		uc.Close()
		return
	}
	if !d.w.Running() {
		uc.Close()
		return
	}
	select {
	case d.events <- event{kind: evHostConnect, uc: uc, port: port}:
	case <-time.After(handshakeWait):
		uc.Close()
	}
}

// parseConnect parses the host handshake "CONNECT <port>".
func parseConnect(s string) (uint32, error) {
	s = strings.TrimSuffix(s, "\r")
	rest, ok := strings.CutPrefix(s, "CONNECT ")
	if !ok {
		return 0, fmt.Errorf("handshake %q: want \"CONNECT <port>\"", s)
	}
	p, err := strconv.ParseUint(strings.TrimSpace(rest), 10, 32)
	if err != nil {
		return 0, fmt.Errorf("handshake %q: %w", s, err)
	}
	return uint32(p), nil
}
