package firmware

import (
	"fmt"

	"github.com/vmmgo/vmm/memory"
)

// Memory is the guest memory the loaders and table writers use. *memory.Guest
// satisfies it. Implementations must bounds-check and return an error (never
// panic) for addresses outside guest RAM.
type Memory interface {
	Read(gpa memory.GPA, p []byte) error
	Write(gpa memory.GPA, p []byte) error
}

// write is Memory.Write with context naming what was being written.
func write(mem Memory, what string, gpa memory.GPA, p []byte) error {
	if err := mem.Write(gpa, p); err != nil {
		return fmt.Errorf("write %s (%d bytes) at %v: %w", what, len(p), gpa, err)
	}
	return nil
}

// zeroChunk is a shared source of zeros for clearing guest memory.
var zeroChunk [64 << 10]byte

// zero writes n zero bytes at gpa in bounded chunks.
func zero(mem Memory, what string, gpa memory.GPA, n uint64) error {
	for n > 0 {
		c := uint64(len(zeroChunk))
		if n < c {
			c = n
		}
		if err := write(mem, what, gpa, zeroChunk[:c]); err != nil {
			return err
		}
		gpa += memory.GPA(c)
		n -= c
	}
	return nil
}

func alignUp(v, a uint64) uint64   { return (v + a - 1) &^ (a - 1) }
func alignDown(v, a uint64) uint64 { return v &^ (a - 1) }
