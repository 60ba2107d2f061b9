package firmware

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"hash/crc64"

	"github.com/ulikunitz/xz/lzma"
)

// The .xz container (tukaani xz-file-format-1.2.1, §2) decoded here because
// the kernel compresses with the x86 BCJ filter (scripts/xz_wrap.sh --x86),
// which github.com/ulikunitz/xz does not implement. LZMA2 chunks are decoded
// by ulikunitz/xz/lzma; the container, the checks and BCJ are ours.

const (
	xzFilterX86   = 0x04
	xzFilterLZMA2 = 0x21
	xzCheckNone   = 0
	xzCheckCRC32  = 1
	xzCheckCRC64  = 4
	xzCheckSHA256 = 10
)

var crc64Table = crc64.MakeTable(crc64.ECMA)

// xzCheckSizes is the size of the check field by check type (§2.1.1.2).
var xzCheckSizes = [16]int{0, 4, 4, 4, 8, 8, 8, 16, 16, 16, 32, 32, 32, 64, 64, 64}

// readVLI decodes a multibyte integer (§1.2): up to 9 bytes, 7 bits each.
func readVLI(b []byte) (uint64, int, error) {
	var v uint64
	for i := 0; i < 9 && i < len(b); i++ {
		v |= uint64(b[i]&0x7f) << (7 * i)
		if b[i]&0x80 == 0 {
			if i > 0 && b[i] == 0 {
				return 0, 0, fmt.Errorf("non-minimal multibyte integer")
			}
			return v, i + 1, nil
		}
	}
	return 0, 0, fmt.Errorf("truncated or overlong multibyte integer")
}

func decodeXZ(src []byte, want int) ([]byte, error) {
	if len(src) < 12 {
		return nil, fmt.Errorf("%d bytes too short for the stream header", len(src))
	}
	if src[6] != 0 || src[7]&0xf0 != 0 {
		return nil, fmt.Errorf("unsupported stream flags %#02x%02x", src[6], src[7])
	}
	if crc32.ChecksumIEEE(src[6:8]) != binary.LittleEndian.Uint32(src[8:12]) {
		return nil, fmt.Errorf("stream header CRC32 mismatch")
	}
	check := int(src[7] & 0x0f)
	p := src[12:]
	var out []byte
	for {
		if len(p) == 0 {
			return nil, fmt.Errorf("truncated: no index after %d blocks bytes", len(out))
		}
		if p[0] == 0 { // index indicator: no more blocks (§3)
			return out, nil
		}
		blk, n, err := decodeXZBlock(p, check, want-len(out))
		if err != nil {
			return nil, fmt.Errorf("block at output offset %d: %w", len(out), err)
		}
		out = append(out, blk...)
		p = p[n:]
	}
}

// decodeXZBlock decodes one block (§3.1) and returns its output and the
// number of input bytes it spans (header, data, padding, check).
func decodeXZBlock(p []byte, check int, room int) ([]byte, int, error) {
	hsize := (int(p[0]) + 1) * 4
	if hsize > len(p) {
		return nil, 0, fmt.Errorf("block header of %d bytes beyond the input", hsize)
	}
	h := p[:hsize]
	if crc32.ChecksumIEEE(h[:hsize-4]) != binary.LittleEndian.Uint32(h[hsize-4:]) {
		return nil, 0, fmt.Errorf("block header CRC32 mismatch")
	}
	flags := h[1]
	if flags&0x3c != 0 {
		return nil, 0, fmt.Errorf("reserved block flags %#02x", flags)
	}
	nfilters := int(flags&3) + 1
	q := h[2 : hsize-4]
	var compSize, uncompSize uint64 = 0, ^uint64(0)
	if flags&0x40 != 0 {
		v, n, err := readVLI(q)
		if err != nil {
			return nil, 0, fmt.Errorf("compressed size: %w", err)
		}
		compSize, q = v, q[n:]
	}
	if flags&0x80 != 0 {
		v, n, err := readVLI(q)
		if err != nil {
			return nil, 0, fmt.Errorf("uncompressed size: %w", err)
		}
		uncompSize, q = v, q[n:]
	}
	var bcj, haveLZMA2 bool
	var bcjStart uint32
	dict := int64(0)
	for i := 0; i < nfilters; i++ {
		id, n, err := readVLI(q)
		if err != nil {
			return nil, 0, fmt.Errorf("filter %d id: %w", i, err)
		}
		q = q[n:]
		psize, n, err := readVLI(q)
		if err != nil {
			return nil, 0, fmt.Errorf("filter %d properties size: %w", i, err)
		}
		q = q[n:]
		if psize > uint64(len(q)) {
			return nil, 0, fmt.Errorf("filter %d properties of %d bytes beyond the header", i, psize)
		}
		props := q[:psize]
		q = q[psize:]
		last := i == nfilters-1
		switch {
		case id == xzFilterLZMA2 && last && psize == 1:
			d, err := lzma.DecodeDictCap(props[0])
			if err != nil {
				return nil, 0, fmt.Errorf("LZMA2 dictionary: %w", err)
			}
			dict, haveLZMA2 = d, true
		case id == xzFilterX86 && !last && !bcj && (psize == 0 || psize == 4):
			bcj = true
			if psize == 4 {
				bcjStart = binary.LittleEndian.Uint32(props)
			}
		default:
			return nil, 0, fmt.Errorf("unsupported filter %#x (properties %d bytes) at position %d of %d", id, psize, i, nfilters)
		}
	}
	if !haveLZMA2 {
		return nil, 0, fmt.Errorf("filter chain does not end in LZMA2")
	}
	for _, b := range q {
		if b != 0 {
			return nil, 0, fmt.Errorf("nonzero block header padding")
		}
	}
	if dict > maxDict {
		return nil, 0, fmt.Errorf("LZMA2 dictionary of %d bytes exceeds %d", dict, maxDict)
	}
	data := p[hsize:]
	br := bytes.NewReader(data)
	r, err := lzma.Reader2Config{DictCap: dictFor(dict, room)}.NewReader2(br)
	if err != nil {
		return nil, 0, fmt.Errorf("LZMA2: %w", err)
	}
	out, err := readAllLimit(r, room)
	if err != nil {
		return nil, 0, fmt.Errorf("LZMA2: %w", err)
	}
	used := uint64(len(data) - br.Len())
	if flags&0x40 != 0 && used != compSize {
		return nil, 0, fmt.Errorf("compressed size %d, header says %d", used, compSize)
	}
	if flags&0x80 != 0 && uint64(len(out)) != uncompSize {
		return nil, 0, fmt.Errorf("uncompressed size %d, header says %d", len(out), uncompSize)
	}
	pad := int(alignUp(used, 4) - used)
	csize := xzCheckSizes[check]
	end := hsize + int(used) + pad + csize
	if end > len(p) {
		return nil, 0, fmt.Errorf("block padding and check beyond the input")
	}
	for _, b := range p[hsize+int(used) : hsize+int(used)+pad] {
		if b != 0 {
			return nil, 0, fmt.Errorf("nonzero block padding")
		}
	}
	if bcj {
		bcjX86Decode(out, bcjStart)
	}
	sum := p[end-csize : end]
	switch check {
	case xzCheckCRC32:
		if crc32.ChecksumIEEE(out) != binary.LittleEndian.Uint32(sum) {
			return nil, 0, fmt.Errorf("CRC32 of the block output mismatches")
		}
	case xzCheckCRC64:
		if crc64.Checksum(out, crc64Table) != binary.LittleEndian.Uint64(sum) {
			return nil, 0, fmt.Errorf("CRC64 of the block output mismatches")
		}
	case xzCheckSHA256:
		s := sha256.Sum256(out)
		if !bytes.Equal(s[:], sum) {
			return nil, 0, fmt.Errorf("SHA-256 of the block output mismatches")
		}
	}
	return out, end, nil
}

// bcjX86Decode undoes the x86 branch converter (xz "BCJ x86"; the same
// algorithm as xz-embedded's bcj_x86) over a whole buffer in place: E8/E9
// (CALL/JMP rel32) operands were turned from relative into absolute
// addresses by the encoder; turn them back. start is the stream offset of
// buf[0] (the filter's start-offset property).
func bcjX86Decode(buf []byte, start uint32) {
	// For a prefix mask of recent E8/E9 bytes: may the current one convert,
	// and which operand byte to test.
	allowed := [8]bool{true, true, true, false, true, false, false, false}
	bitNum := [8]uint32{0, 1, 2, 2, 3, 3, 3, 3}
	msb := func(b byte) bool { return b == 0x00 || b == 0xFF }
	if len(buf) <= 4 {
		return
	}
	limit := len(buf) - 4
	prevPos := -1
	prevMask := uint32(0)
	for i := 0; i < limit; i++ {
		if buf[i]&0xFE != 0xE8 {
			continue
		}
		d := i - prevPos
		if d > 3 {
			prevMask = 0
		} else {
			prevMask = (prevMask << uint(d-1)) & 7
			if prevMask != 0 {
				b := buf[i+4-int(bitNum[prevMask])]
				if !allowed[prevMask] || msb(b) {
					prevPos = i
					prevMask = prevMask<<1 | 1
					continue
				}
			}
		}
		prevPos = i
		if !msb(buf[i+4]) {
			prevMask = prevMask<<1 | 1
			continue
		}
		src := binary.LittleEndian.Uint32(buf[i+1:])
		var dest uint32
		for {
			dest = src - (start + uint32(i) + 5)
			if prevMask == 0 {
				break
			}
			j := bitNum[prevMask] * 8
			if !msb(byte(dest >> (24 - j))) {
				break
			}
			src = dest ^ (1<<(32-j) - 1)
		}
		dest &= 0x01FFFFFF
		dest |= 0 - (dest & 0x01000000)
		binary.LittleEndian.PutUint32(buf[i+1:], dest)
		i += 4
	}
}
