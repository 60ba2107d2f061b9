package virtio

import (
	"fmt"
	"io"

	"github.com/vmmgo/vmm/memory"
)

// ReadAt copies from the chain's device-readable buffers, viewed as one
// byte stream, starting at off. It returns the bytes copied and
// io.ErrUnexpectedEOF when the buffers end before p is full.
func (c *Chain) ReadAt(mem GuestMemory, p []byte, off uint32) (int, error) {
	return xfer(c.Readable, p, off, mem.DeviceRead)
}

// WriteAt copies p into the chain's device-writable buffers starting at off.
func (c *Chain) WriteAt(mem GuestMemory, p []byte, off uint32) (int, error) {
	return xfer(c.Writable, p, off, mem.DeviceWrite)
}

func xfer(ds []Desc, p []byte, off uint32, op func(memory.GPA, []byte) error) (int, error) {
	done := 0
	pos := uint64(off)
	for _, d := range ds {
		if len(p) == done {
			break
		}
		if pos >= uint64(d.Len) {
			pos -= uint64(d.Len)
			continue
		}
		n := min(uint64(d.Len)-pos, uint64(len(p)-done))
		if err := op(d.Addr+memory.GPA(pos), p[done:done+int(n)]); err != nil {
			return done, fmt.Errorf("guest buffer %v+%#x: %w", d.Addr, pos, err)
		}
		done += int(n)
		pos = 0
	}
	if done < len(p) {
		return done, io.ErrUnexpectedEOF
	}
	return done, nil
}
