package blk

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/vmmgo/vmm/internal/guestlog"
	"github.com/vmmgo/vmm/virtio"
)

// Feature bits (§5.2.3).
const (
	FSizeMax     = 1 << 1
	FSegMax      = 1 << 2
	FRO          = 1 << 5
	FBlkSize     = 1 << 6
	FFlush       = 1 << 9
	FDiscard     = 1 << 13
	FWriteZeroes = 1 << 14
)

// Request types and status values (§5.2.6).
const (
	TypeIn          = 0
	TypeOut         = 1
	TypeFlush       = 4
	TypeGetID       = 8
	TypeDiscard     = 11
	TypeWriteZeroes = 13

	StatusOK     = 0
	StatusIOErr  = 1
	StatusUnsupp = 2

	SectorSize = 512
	headerSize = 16 // le32 type, le32 reserved, le64 sector
	segSize    = 16 // discard/write-zeroes segment: le64 sector, le32 num_sectors, le32 flags
	idLen      = 20 // VIRTIO_BLK_ID_BYTES

	QueueSize = 256
	segMax    = QueueSize - 2 // header and status take two descriptors
	sizeMax   = 1 << 20
	blockSize = 4096
	maxSegs   = 32             // max_discard_seg, max_write_zeroes_seg
	maxZeroes = 0x3fffff       // max_discard_sectors, max_write_zeroes_sectors
	chunk     = sizeMax        // host I/O is done in pieces of at most this
	unmapFlag = 1              // VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP
	configLen = 60             // struct virtio_blk_config up to write_zeroes_may_unmap + pad
	maxChain  = 256<<20 + 4096 // bound on one request's buffers
)

// Config selects the image.
type Config struct {
	Path     string
	ReadOnly bool
	Serial   string // at most 20 bytes, returned by GET_ID
	Log      *logrus.Entry
}

// Device is a virtio-blk device.
type Device struct {
	cfg      Config
	f        *os.File
	size     uint64 // bytes, multiple of SectorSize
	features uint64
	punch    bool // FALLOC_FL_PUNCH_HOLE works
	zero     bool // FALLOC_FL_ZERO_RANGE works
	log      *logrus.Entry
	rl       guestlog.Limiter

	w      virtio.Worker
	buf    []byte
	segbuf []byte
	hdr    [headerSize]byte // scratch: slices passed to GuestMemory escape
	st     [1]byte
	id     [idLen]byte
	chain  virtio.Chain // reused by the worker: no allocation per request

	Stats virtio.Stats
}

// Open opens the image and probes what it supports. All configuration
// errors surface here, before the guest starts.
func Open(cfg Config) (*Device, error) {
	if cfg.Path == "" {
		return nil, errors.New("virtio-blk: no image path")
	}
	if len(cfg.Serial) > idLen {
		return nil, fmt.Errorf("virtio-blk %s: serial %q longer than %d bytes", cfg.Path, cfg.Serial, idLen)
	}
	st, err := os.Stat(cfg.Path)
	if err != nil {
		return nil, fmt.Errorf("virtio-blk: disk image: %w", err)
	}
	if !st.Mode().IsRegular() && st.Mode()&os.ModeDevice == 0 {
		return nil, fmt.Errorf("virtio-blk: disk image %s is not a regular file or block device", cfg.Path)
	}
	if !cfg.ReadOnly && st.Mode().IsRegular() && st.Mode().Perm()&0o222 == 0 {
		// Root would be allowed to write anyway; honour the file's mode.
		return nil, fmt.Errorf("virtio-blk: disk image %s is read-only (mode %v); attach it read-only", cfg.Path, st.Mode().Perm())
	}
	flag := os.O_RDWR
	if cfg.ReadOnly {
		flag = os.O_RDONLY
	}
	f, err := os.OpenFile(cfg.Path, flag|unix.O_CLOEXEC, 0)
	if err != nil {
		if !cfg.ReadOnly && (errors.Is(err, unix.EACCES) || errors.Is(err, unix.EROFS) || errors.Is(err, unix.EPERM)) {
			return nil, fmt.Errorf("virtio-blk: disk image %s cannot be opened read-write (attach it read-only): %w", cfg.Path, err)
		}
		return nil, fmt.Errorf("virtio-blk: disk image: %w", err)
	}
	end, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("virtio-blk: size of %s: %w", cfg.Path, err)
	}
	log := guestlog.OrDiscard(cfg.Log)
	d := &Device{cfg: cfg, f: f, size: uint64(end) &^ (SectorSize - 1), log: log.WithField("device", "virtio-blk")}
	if uint64(end)%SectorSize != 0 {
		d.log.WithField("path", cfg.Path).Warn("image size is not a multiple of 512; the tail is not visible")
	}
	d.features = virtio.CommonFeatures | FSizeMax | FSegMax | FBlkSize | FFlush
	if cfg.ReadOnly {
		d.features |= FRO
	} else {
		d.punch, d.zero = probeFallocate(f, uint64(end))
		if d.punch {
			d.features |= FDiscard
		}
		if d.punch || d.zero {
			d.features |= FWriteZeroes
		}
	}
	return d, nil
}

// probeFallocate tries each fallocate mode on an empty range past the end
// of the file (KEEP_SIZE: nothing changes) to learn whether it is supported.
func probeFallocate(f *os.File, size uint64) (punch, zero bool) {
	off := int64((size + blockSize) &^ (blockSize - 1))
	punch = unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, blockSize) == nil
	zero = unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_ZERO_RANGE|unix.FALLOC_FL_KEEP_SIZE, off, blockSize) == nil
	return punch, zero
}

// Capacity returns the disk size in bytes.
func (d *Device) Capacity() uint64 { return d.size }

// Type implements virtio.Device.
func (d *Device) Type() virtio.DeviceType { return virtio.TypeBlock }

// Features implements virtio.Device.
func (d *Device) Features() uint64 { return d.features }

// QueueMaxSizes implements virtio.Device (one request queue).
func (d *Device) QueueMaxSizes() []uint16 { return []uint16{QueueSize} }

// config builds struct virtio_blk_config (§5.2.4).
func (d *Device) config() [configLen]byte {
	var c [configLen]byte
	le := binary.LittleEndian
	le.PutUint64(c[0:], d.size/SectorSize)
	le.PutUint32(c[8:], sizeMax)
	le.PutUint32(c[12:], segMax)
	// blk_size is what Linux takes as the logical block size (virtio_blk.c:
	// blk_queue_logical_block_size). 512, as QEMU and Cloud Hypervisor
	// report for image files: a 4096 here makes a 4Kn disk on which ext4
	// with 1 KiB blocks (mkfs's default for small images), FAT and 512-byte
	// partition tables cannot be used. 4 KiB is the physical size below.
	le.PutUint32(c[20:], SectorSize)
	c[24] = 3 // physical_block_exp: 4096 = 512 << 3
	le.PutUint16(c[26:], blockSize/SectorSize)
	le.PutUint16(c[34:], 1) // num_queues
	if d.features&FDiscard != 0 {
		le.PutUint32(c[36:], maxZeroes)
		le.PutUint32(c[40:], maxSegs)
		le.PutUint32(c[44:], blockSize/SectorSize)
	}
	if d.features&FWriteZeroes != 0 {
		le.PutUint32(c[48:], maxZeroes)
		le.PutUint32(c[52:], maxSegs)
		if d.punch {
			c[56] = 1
		}
	}
	return c
}

// ReadConfig implements virtio.Device.
func (d *Device) ReadConfig(off uint64, p []byte) {
	clear(p)
	c := d.config()
	if off < configLen {
		copy(p, c[off:])
	}
}

// WriteConfig implements virtio.Device; the block config is read-only
// (writeback toggling is not offered).
func (d *Device) WriteConfig(uint64, []byte) {}

// Activate implements virtio.Device.
func (d *Device) Activate(a virtio.Activation) error {
	if len(a.Queues) != 1 || a.Queues[0] == nil {
		return errors.New("virtio-blk: request queue not enabled")
	}
	if d.w.Running() {
		return errors.New("virtio-blk: already active")
	}
	a.Queues[0].SetMaxChainBytes(maxChain)
	if !d.w.Start(a, &d.Stats, func(k *virtio.Kicker, stop <-chan struct{}) { d.run(a, k, stop) }) {
		return errors.New("virtio-blk: already active")
	}
	return nil
}

// Notify implements virtio.Device.
func (d *Device) Notify(int) { d.w.Kick(0) }

// Reset implements virtio.Device: stop the worker and wait for it.
func (d *Device) Reset() { d.w.Stop() }

// Close implements virtio.Device.
func (d *Device) Close() error {
	d.Reset()
	if err := d.f.Close(); err != nil {
		return fmt.Errorf("virtio-blk: close %s: %w", d.cfg.Path, err)
	}
	return nil
}

func (d *Device) run(a virtio.Activation, k *virtio.Kicker, stop <-chan struct{}) {
	q := a.Queues[0]
	for {
		select {
		case <-stop:
			return
		case <-k.C:
		}
		k.Take()
		if !d.drain(a, q, &d.chain) {
			return
		}
	}
}

// drain serves every available request, re-enabling driver notifications
// at the end (and looping if more arrived meanwhile). It returns false when
// the queue is broken.
func (d *Device) drain(a virtio.Activation, q *virtio.Queue, c *virtio.Chain) bool {
	for {
		q.DisableNotify()
		for {
			ok, err := q.Pop(c)
			if err != nil {
				d.Stats.Malformed.Add(1)
				if errors.Is(err, virtio.ErrQueueBroken) {
					d.rl.Warn(d.log, err, "virtqueue broken")
					a.Interrupt.NeedsReset()
					return false
				}
				d.rl.Warn(d.log, err, "malformed request chain")
				continue
			}
			if !ok {
				break
			}
			n := d.handle(a.Mem, c)
			if err := q.PushUsed(c.Head, n); err != nil {
				d.rl.Warn(d.log, err, "complete request")
				a.Interrupt.NeedsReset()
				return false
			}
			d.Stats.Requests.Add(1)
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

// handle serves one request and returns the number of bytes written into
// the chain's writable buffers (data + status), for the used element.
func (d *Device) handle(mem virtio.GuestMemory, c *virtio.Chain) uint32 {
	// §5.2.6.1: header readable first, status the last writable byte.
	if c.WritableLen < 1 {
		d.Stats.Malformed.Add(1)
		d.rl.Warn(d.log, errors.New("no writable status byte"), "malformed request")
		return 0
	}
	statusOff := c.WritableLen - 1
	finish := func(status byte, data uint32) uint32 {
		if status != StatusOK {
			d.Stats.Errors.Add(1)
		}
		d.st[0] = status
		if _, err := c.WriteAt(mem, d.st[:], statusOff); err != nil {
			d.rl.Warn(d.log, err, "write request status")
			return 0
		}
		return data + 1
	}
	if c.Err != nil {
		// A buffer lies on a private page: refuse without touching anything.
		d.Stats.Private.Add(1)
		d.rl.Warn(d.log, c.Err, "request touches a private page")
		return finish(StatusIOErr, 0)
	}
	hdr := d.hdr[:]
	if _, err := c.ReadAt(mem, hdr, 0); err != nil {
		d.Stats.Malformed.Add(1)
		d.rl.Warn(d.log, err, "request header too short")
		return finish(StatusIOErr, 0)
	}
	typ := binary.LittleEndian.Uint32(hdr[0:])
	sector := binary.LittleEndian.Uint64(hdr[8:])
	switch typ {
	case TypeIn:
		n := statusOff
		if err := d.checkRange(sector, uint64(n)); err != nil {
			d.rl.Warn(d.log, err, "read request")
			return finish(StatusIOErr, 0)
		}
		if err := d.read(mem, c, sector*SectorSize, n); err != nil {
			d.rl.Warn(d.log, err, "read request")
			return finish(StatusIOErr, 0)
		}
		d.Stats.Bytes.Add(uint64(n))
		return finish(StatusOK, n)
	case TypeOut:
		if d.cfg.ReadOnly {
			return finish(StatusIOErr, 0) // §5.2.6.2 with VIRTIO_BLK_F_RO
		}
		n := c.ReadableLen - headerSize
		if c.ReadableLen < headerSize {
			return finish(StatusIOErr, 0)
		}
		if err := d.checkRange(sector, uint64(n)); err != nil {
			d.rl.Warn(d.log, err, "write request")
			return finish(StatusIOErr, 0)
		}
		if err := d.write(mem, c, sector*SectorSize, n); err != nil {
			d.rl.Warn(d.log, err, "write request")
			return finish(StatusIOErr, 0)
		}
		d.Stats.Bytes.Add(uint64(n))
		return finish(StatusOK, 0)
	case TypeFlush:
		if !d.cfg.ReadOnly {
			if err := unix.Fdatasync(int(d.f.Fd())); err != nil {
				d.rl.Warn(d.log, os.NewSyscallError("fdatasync", err), "flush")
				return finish(StatusIOErr, 0)
			}
		}
		return finish(StatusOK, 0)
	case TypeGetID:
		id := d.id[:]
		clear(id)
		copy(id, d.cfg.Serial)
		n := min(statusOff, idLen)
		if _, err := c.WriteAt(mem, id[:n], 0); err != nil {
			return finish(StatusIOErr, 0)
		}
		return finish(StatusOK, n)
	case TypeDiscard, TypeWriteZeroes:
		if typ == TypeDiscard && d.features&FDiscard == 0 || typ == TypeWriteZeroes && d.features&FWriteZeroes == 0 {
			return finish(StatusUnsupp, 0)
		}
		return finish(d.discard(mem, c, typ == TypeWriteZeroes), 0)
	default:
		return finish(StatusUnsupp, 0)
	}
}

// checkRange validates [sector, sector+n bytes) against the capacity.
func (d *Device) checkRange(sector, n uint64) error {
	if n%SectorSize != 0 {
		return fmt.Errorf("length %d is not a multiple of %d", n, SectorSize)
	}
	if sector > d.size/SectorSize || n > d.size-sector*SectorSize {
		return fmt.Errorf("sectors %d+%d beyond capacity %d", sector, n/SectorSize, d.size/SectorSize)
	}
	return nil
}

func (d *Device) scratch(n uint32) []byte {
	if uint32(cap(d.buf)) < n {
		d.buf = make([]byte, n)
	}
	return d.buf[:n]
}

// read copies n bytes from the file at off into the writable buffers,
// a chunk at a time.
func (d *Device) read(mem virtio.GuestMemory, c *virtio.Chain, off uint64, n uint32) error {
	for done := uint32(0); done < n; {
		k := min(n-done, chunk)
		b := d.scratch(k)
		if _, err := d.f.ReadAt(b, int64(off)+int64(done)); err != nil {
			return fmt.Errorf("pread %s at %d: %w", d.cfg.Path, off+uint64(done), err)
		}
		if _, err := c.WriteAt(mem, b, done); err != nil {
			return err
		}
		done += k
	}
	return nil
}

// write copies n bytes of the readable buffers after the header to the file.
func (d *Device) write(mem virtio.GuestMemory, c *virtio.Chain, off uint64, n uint32) error {
	for done := uint32(0); done < n; {
		k := min(n-done, chunk)
		b := d.scratch(k)
		if _, err := c.ReadAt(mem, b, headerSize+done); err != nil {
			return err
		}
		if _, err := d.f.WriteAt(b, int64(off)+int64(done)); err != nil {
			return fmt.Errorf("pwrite %s at %d: %w", d.cfg.Path, off+uint64(done), err)
		}
		done += k
	}
	return nil
}

// discard serves DISCARD and WRITE_ZEROES (§5.2.6.1): every segment is
// validated before any is applied.
func (d *Device) discard(mem virtio.GuestMemory, c *virtio.Chain, zeroes bool) byte {
	n := c.ReadableLen - headerSize
	if n == 0 || n%segSize != 0 || n/segSize > maxSegs {
		return StatusIOErr
	}
	if uint32(cap(d.segbuf)) < n {
		d.segbuf = make([]byte, n)
	}
	b := d.segbuf[:n]
	if _, err := c.ReadAt(mem, b, headerSize); err != nil {
		return StatusIOErr
	}
	for i := uint32(0); i < n; i += segSize {
		sector := binary.LittleEndian.Uint64(b[i:])
		num := binary.LittleEndian.Uint32(b[i+8:])
		flags := binary.LittleEndian.Uint32(b[i+12:])
		if flags&^unmapFlag != 0 || !zeroes && flags&unmapFlag != 0 {
			return StatusUnsupp // reserved bits, or unmap on discard
		}
		if num > maxZeroes {
			return StatusIOErr
		}
		if err := d.checkRange(sector, uint64(num)*SectorSize); err != nil {
			return StatusIOErr
		}
	}
	fd := int(d.f.Fd())
	for i := uint32(0); i < n; i += segSize {
		off := int64(binary.LittleEndian.Uint64(b[i:]) * SectorSize)
		length := int64(binary.LittleEndian.Uint32(b[i+8:])) * SectorSize
		unmap := binary.LittleEndian.Uint32(b[i+12:])&unmapFlag != 0
		if length == 0 {
			continue
		}
		var err error
		switch {
		case !zeroes || unmap && d.punch || !d.zero:
			err = unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, length)
		default:
			err = unix.Fallocate(fd, unix.FALLOC_FL_ZERO_RANGE|unix.FALLOC_FL_KEEP_SIZE, off, length)
		}
		if err != nil {
			d.rl.Warn(d.log, os.NewSyscallError("fallocate", err), "discard/write-zeroes")
			return StatusIOErr
		}
	}
	return StatusOK
}
