package firmware

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/adler32"
	"hash/crc32"
)

// The lzop container as the kernel's lib/decompress_unlzo.c reads it, and an
// LZO1X decompressor written from the stream description in the kernel's
// Documentation/staging/lzo.rst. No maintained pure-Go LZO module was
// available, so this one is ours, bounds-checked at every step.

const (
	lzopMaxBlock    = 256 << 10 // LZO_BLOCK_SIZE in decompress_unlzo.c
	lzopFAdler32D   = 0x00000001
	lzopFAdler32C   = 0x00000002
	lzopFCRC32D     = 0x00000100
	lzopFCRC32C     = 0x00000200
	lzopFHFilter    = 0x00000800
	lzopHeaderMagic = 9
)

var errLZOInput = errors.New("LZO1X: input overrun")

// decodeLzop decodes an lzop file: header, then blocks of (uncompressed
// size, compressed size, checksums, data) until an uncompressed size of 0.
func decodeLzop(src []byte, want int) ([]byte, error) {
	p := src[lzopHeaderMagic:]
	need := func(n int, what string) error {
		if len(p) < n {
			return fmt.Errorf("truncated %s", what)
		}
		return nil
	}
	be := binary.BigEndian
	if err := need(7, "header"); err != nil {
		return nil, err
	}
	version := be.Uint16(p)
	// version, library version, version needed to extract (2 each), method.
	p = p[7:]
	if version >= 0x0940 {
		p = p[min(1, len(p)):] // level
	}
	if err := need(4, "header flags"); err != nil {
		return nil, err
	}
	flags := be.Uint32(p)
	p = p[4:]
	if flags&lzopFHFilter != 0 {
		return nil, fmt.Errorf("lzop filter flag set: not supported")
	}
	skip := 8 // mode, mtime low
	if version >= 0x0940 {
		skip += 4 // mtime high
	}
	if err := need(skip+1, "header"); err != nil {
		return nil, err
	}
	p = p[skip:]
	nameLen := int(p[0])
	p = p[1:]
	if err := need(nameLen+4, "header file name"); err != nil {
		return nil, err
	}
	p = p[nameLen+4:] // name and header checksum
	var out []byte
	for {
		if err := need(4, "block size"); err != nil {
			return nil, err
		}
		dlen := int(be.Uint32(p))
		p = p[4:]
		if dlen == 0 {
			return out, nil
		}
		if dlen > lzopMaxBlock {
			return nil, fmt.Errorf("block of %d bytes exceeds %d", dlen, lzopMaxBlock)
		}
		if len(out)+dlen > want {
			return nil, fmt.Errorf("output exceeds the expected %d bytes", want)
		}
		if err := need(4, "compressed size"); err != nil {
			return nil, err
		}
		clen := int(be.Uint32(p))
		p = p[4:]
		if clen == 0 || clen > dlen {
			return nil, fmt.Errorf("compressed size %d invalid for a block of %d", clen, dlen)
		}
		var adlerD, crcD []byte
		if flags&lzopFAdler32D != 0 {
			if err := need(4, "checksum"); err != nil {
				return nil, err
			}
			adlerD, p = p[:4], p[4:]
		}
		if flags&lzopFCRC32D != 0 {
			if err := need(4, "checksum"); err != nil {
				return nil, err
			}
			crcD, p = p[:4], p[4:]
		}
		if clen < dlen { // checksums of the compressed data, unverified
			for _, f := range []uint32{lzopFAdler32C, lzopFCRC32C} {
				if flags&f != 0 {
					if err := need(4, "checksum"); err != nil {
						return nil, err
					}
					p = p[4:]
				}
			}
		}
		if err := need(clen, "block data"); err != nil {
			return nil, err
		}
		var blk []byte
		if clen == dlen {
			blk = p[:clen] // stored uncompressed
		} else {
			var err error
			blk, err = LZO1XDecompress(p[:clen], dlen)
			if err != nil {
				return nil, err
			}
			if len(blk) != dlen {
				return nil, fmt.Errorf("block decompressed to %d bytes, header says %d", len(blk), dlen)
			}
		}
		if adlerD != nil && adler32.Checksum(blk) != be.Uint32(adlerD) {
			return nil, fmt.Errorf("block Adler-32 mismatch")
		}
		if crcD != nil && crc32.ChecksumIEEE(blk) != be.Uint32(crcD) {
			return nil, fmt.Errorf("block CRC32 mismatch")
		}
		out = append(out, blk...)
		p = p[clen:]
	}
}

// LZO1XDecompress decompresses one LZO1X block producing at most maxOut
// bytes. Instruction encodings (Documentation/staging/lzo.rst):
//
//	first byte 18..21: copy 0..3 literals; 22..255: copy byte-17 literals
//	0000LLLL (state 0):  long literal run, 3 + L (or extended) bytes
//	0000DDSS (state 1-3): 2-byte match, distance (H<<2)+D+1
//	0000DDSS (state 4):  3-byte match, distance (H<<2)+D+2049
//	0001HLLL:            match, distance 16384+(H<<14)+D, length 2+L; 16384 = end
//	001LLLLL:            match, distance D+1 (14 bits), length 2+L
//	01LDDDSS / 1LLDDDSS: match of 3+L / 5+L bytes, distance (H<<3)+D+1
//
// where S is the number of literals copied after the match (the next state).
func LZO1XDecompress(in []byte, maxOut int) ([]byte, error) {
	out := make([]byte, 0, min(maxOut, 4*len(in)+64))
	ip := 0
	byteAt := func() (int, error) {
		if ip >= len(in) {
			return 0, errLZOInput
		}
		b := int(in[ip])
		ip++
		return b, nil
	}
	// extLen reads the zero-byte extension of a length field of `bits` bits.
	extLen := func(base int) (int, error) {
		n := 0
		for {
			b, err := byteAt()
			if err != nil {
				return 0, err
			}
			if b != 0 {
				return base + n + b, nil
			}
			n += 255
			if n > maxOut {
				return 0, fmt.Errorf("LZO1X: length overflows the output")
			}
		}
	}
	literals := func(n int) error {
		if n > len(in)-ip {
			return errLZOInput
		}
		if len(out)+n > maxOut {
			return fmt.Errorf("LZO1X: output overrun")
		}
		out = append(out, in[ip:ip+n]...)
		ip += n
		return nil
	}
	match := func(dist, n int) error {
		if dist <= 0 || dist > len(out) {
			return fmt.Errorf("LZO1X: match distance %d beyond the %d bytes produced", dist, len(out))
		}
		if len(out)+n > maxOut {
			return fmt.Errorf("LZO1X: output overrun")
		}
		from := len(out) - dist
		for k := 0; k < n; k++ { // byte by byte: the copy may overlap itself
			out = append(out, out[from+k])
		}
		return nil
	}
	state := 0
	if len(in) == 0 {
		return nil, errLZOInput
	}
	if in[0] > 17 {
		ip = 1
		t := int(in[0]) - 17
		if err := literals(t); err != nil {
			return nil, err
		}
		state = t
		if t >= 4 {
			state = 4
		}
	} else if in[0] == 17 && len(in) >= 5 && in[1] != 0 {
		return nil, fmt.Errorf("LZO1X: bitstream version %d (LZO-RLE) not supported", in[1])
	}
	for {
		t, err := byteAt()
		if err != nil {
			return nil, err
		}
		var dist, n, next int
		switch {
		case t < 16 && state == 0:
			n = t + 3
			if t == 0 {
				if n, err = extLen(15 + 3); err != nil {
					return nil, err
				}
			}
			if err := literals(n); err != nil {
				return nil, err
			}
			state = 4
			continue
		case t < 16:
			h, err := byteAt()
			if err != nil {
				return nil, err
			}
			next = t & 3
			if state == 4 {
				dist, n = h<<2+(t>>2&3)+2049, 3
			} else {
				dist, n = h<<2+(t>>2&3)+1, 2
			}
		case t < 32:
			n = t&7 + 2
			if t&7 == 0 {
				if n, err = extLen(7 + 2); err != nil {
					return nil, err
				}
			}
			if ip+2 > len(in) {
				return nil, errLZOInput
			}
			v := int(binary.LittleEndian.Uint16(in[ip:]))
			ip += 2
			next = v & 3
			dist = 16384 + (t&8)<<11 + v>>2
			if dist == 16384 { // end of stream: 0x11 0x00 0x00
				if n != 3 || ip != len(in) {
					return nil, fmt.Errorf("LZO1X: malformed end marker or %d trailing input bytes", len(in)-ip)
				}
				return out, nil
			}
		case t < 64:
			n = t&31 + 2
			if t&31 == 0 {
				if n, err = extLen(31 + 2); err != nil {
					return nil, err
				}
			}
			if ip+2 > len(in) {
				return nil, errLZOInput
			}
			v := int(binary.LittleEndian.Uint16(in[ip:]))
			ip += 2
			next = v & 3
			dist = v>>2 + 1
		default:
			h, err := byteAt()
			if err != nil {
				return nil, err
			}
			next = t & 3
			dist = h<<3 + (t >> 2 & 7) + 1
			if t < 128 {
				n = 3 + (t >> 5 & 1)
			} else {
				n = 5 + (t >> 5 & 3)
			}
		}
		if err := match(dist, n); err != nil {
			return nil, err
		}
		if err := literals(next); err != nil {
			return nil, err
		}
		state = next
	}
}
