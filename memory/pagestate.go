package memory

import (
	"math/bits"
	"sync/atomic"
)

// pageBits records the state of n 4 KiB pages, one bit each: set = private,
// clear = shared. 1 GiB of guest RAM costs 32 KiB. Every word is accessed
// with sync/atomic so lock-free readers (IsPrivate, statistics) never see a
// torn word; range updates touch a whole word per 64 pages (And/Or), so a
// 4 KiB checkerboard or a whole-RAM flip costs O(pages/64).
//
// Mutual exclusion between a conversion and a device copy is not this
// type's job: Guest holds its RWMutex around both (see guest.go).
type pageBits struct {
	n     uint64
	words []atomic.Uint64
}

func newPageBits(n uint64, private bool) *pageBits {
	b := &pageBits{n: n, words: make([]atomic.Uint64, (n+63)/64)}
	if private {
		b.update(0, n, true, nil)
	}
	return b
}

// wordMask returns the mask of bits [lo, hi) within one word (0 <= lo < hi <= 64).
func wordMask(lo, hi uint64) uint64 {
	m := ^uint64(0) << lo
	if hi < 64 {
		m &= (uint64(1) << hi) - 1
	}
	return m
}

// update sets pages [first, first+count) to private or shared and returns
// how many changed state. If onChange is not nil it is called for every
// word with changed bits, with the word index and the mask of changed bits.
// The caller guarantees the range is inside the bitmap.
func (b *pageBits) update(first, count uint64, private bool, onChange func(word int, changed uint64)) uint64 {
	var changed uint64
	end := first + count
	for i := first; i < end; {
		w := i / 64
		lo := i % 64
		hi := min(uint64(64), lo+(end-i))
		m := wordMask(lo, hi)
		var c uint64
		if private {
			old := b.words[w].Or(m)
			c = m &^ old
		} else {
			old := b.words[w].And(^m)
			c = m & old
		}
		if c != 0 {
			changed += uint64(bits.OnesCount64(c))
			if onChange != nil {
				onChange(int(w), c)
			}
		}
		i += hi - lo
	}
	return changed
}

// firstPrivate returns the index of the first private page in
// [first, first+count), or -1 when the whole range is shared. It scans a
// word (64 pages) per step.
func (b *pageBits) firstPrivate(first, count uint64) int64 {
	end := first + count
	for i := first; i < end; {
		w := i / 64
		lo := i % 64
		hi := min(uint64(64), lo+(end-i))
		if v := b.words[w].Load() & wordMask(lo, hi); v != 0 {
			return int64(w*64) + int64(bits.TrailingZeros64(v))
		}
		i += hi - lo
	}
	return -1
}

func (b *pageBits) isPrivate(i uint64) bool {
	return b.words[i/64].Load()&(uint64(1)<<(i%64)) != 0
}

// countPrivate counts private pages in [first, first+count).
func (b *pageBits) countPrivate(first, count uint64) uint64 {
	var n uint64
	end := first + count
	for i := first; i < end; {
		w := i / 64
		lo := i % 64
		hi := min(uint64(64), lo+(end-i))
		n += uint64(bits.OnesCount64(b.words[w].Load() & wordMask(lo, hi)))
		i += hi - lo
	}
	return n
}

// transitions counts the i in [a, z) with state(i) != state(i+1), i.e. the
// boundaries between runs of equal state; a view whose private runs are
// mprotected has 1 + transitions(0, n-1) VMAs. Requires z <= n-1.
func (b *pageBits) transitions(a, z uint64) uint64 {
	var n uint64
	for i := a; i < z; {
		w := i / 64
		lo := i % 64
		hi := min(uint64(64), lo+(z-i))
		cur := b.words[w].Load()
		next := cur >> 1
		if int(w+1) < len(b.words) {
			next |= b.words[w+1].Load() << 63
		}
		n += uint64(bits.OnesCount64((cur ^ next) & wordMask(lo, hi)))
		i += hi - lo
	}
	return n
}

// boundaryTransitions counts the transitions touching the range
// [first, first+count): the pairs (first-1, first) ... (end-1, end) that lie
// inside the bitmap. Used before and after an update to track VMA counts.
func (b *pageBits) boundaryTransitions(first, count uint64) uint64 {
	a := first
	if a > 0 {
		a--
	}
	z := min(first+count, b.n-1)
	if z <= a {
		return 0
	}
	return b.transitions(a, z)
}
