package gdbstub

import (
	"fmt"
	"sort"
	"sync"
)

// Int3 is the x86 breakpoint instruction (SDM Vol. 2A, "INT3").
const Int3 = 0xcc

// MemFunc reads or writes guest memory at a virtual address.
type MemFunc func(gva uint64, p []byte) error

// SWBreakpoints keeps the original bytes under planted int3 instructions,
// for Target implementations. It is safe for concurrent use (vCPU threads
// ask Has while the server inserts and removes).
//
// Memory the debugger reads should be passed through Shadow so GDB sees the
// original instructions, and memory it writes through Patch so a write over
// a breakpoint updates the saved byte and keeps the int3.
type SWBreakpoints struct {
	mu   sync.Mutex
	orig map[uint64]byte
}

// Insert plants int3 at gva, saving the byte there. Inserting twice is a
// no-op. read and write must be the raw accessors, not ones that call
// Shadow or Patch (the lock is held across them).
func (b *SWBreakpoints) Insert(gva uint64, read, write MemFunc) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.orig[gva]; ok {
		return nil
	}
	var old [1]byte
	if err := read(gva, old[:]); err != nil {
		return fmt.Errorf("insert breakpoint at %#x: %w", gva, err)
	}
	if err := write(gva, []byte{Int3}); err != nil {
		return fmt.Errorf("insert breakpoint at %#x: %w", gva, err)
	}
	if b.orig == nil {
		b.orig = make(map[uint64]byte)
	}
	b.orig[gva] = old[0]
	return nil
}

// Remove restores the byte under the breakpoint at gva. Removing an
// unknown address is a no-op.
func (b *SWBreakpoints) Remove(gva uint64, write MemFunc) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	old, ok := b.orig[gva]
	if !ok {
		return nil
	}
	if err := write(gva, []byte{old}); err != nil {
		return fmt.Errorf("remove breakpoint at %#x: %w", gva, err)
	}
	delete(b.orig, gva)
	return nil
}

// Has reports whether a breakpoint is planted at gva: a #BP (or an int3
// emulation failure) there is the debugger's, not the guest's.
func (b *SWBreakpoints) Has(gva uint64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	_, ok := b.orig[gva]
	return ok
}

// Addrs returns the planted addresses in increasing order.
func (b *SWBreakpoints) Addrs() []uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]uint64, 0, len(b.orig))
	for a := range b.orig {
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// Shadow replaces planted int3 bytes in p, which was read from gva, with
// the original bytes.
func (b *SWBreakpoints) Shadow(gva uint64, p []byte) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for a, old := range b.orig {
		if a-gva < uint64(len(p)) {
			p[a-gva] = old
		}
	}
}

// Patch prepares p, about to be written at gva, for memory with planted
// breakpoints: the new bytes under breakpoints become the saved originals
// and the returned copy keeps int3 there. p is not modified.
func (b *SWBreakpoints) Patch(gva uint64, p []byte) []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := p
	for a := range b.orig {
		if a-gva < uint64(len(p)) {
			if &out[0] == &p[0] {
				out = append([]byte(nil), p...)
			}
			b.orig[a] = p[a-gva]
			out[a-gva] = Int3
		}
	}
	return out
}
