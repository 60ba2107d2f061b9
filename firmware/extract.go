package firmware

import (
	"bytes"
	"compress/bzip2"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/ulikunitz/xz/lzma"
)

// MaxVmlinuxSize bounds the decompressed vmlinux ExtractVmlinux accepts. A
// stripped vmlinux.bin (what a bzImage carries) is tens of MiB.
const MaxVmlinuxSize = 256 << 20

// maxDict bounds the LZ dictionary a hostile header may make us allocate.
const maxDict = 128 << 20

// Compression magics at the start of the payload, as the kernel's
// arch/x86/boot/compressed/Makefile produces them (lib/decompress.c table).
var codecs = []struct {
	name   string
	magic  []byte
	decode func(src []byte, want int) ([]byte, error)
}{
	{"gzip", []byte{0x1f, 0x8b}, decodeGzip},
	{"bzip2", []byte("BZh"), decodeBzip2},
	{"lzma", []byte{0x5d, 0x00, 0x00}, decodeLZMA},
	{"xz", []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}, decodeXZ},
	{"lzo", []byte{0x89, 'L', 'Z', 'O', 0x00, '\r', '\n', 0x1a, '\n'}, decodeLzop},
	{"lz4", []byte{0x02, 0x21, 0x4c, 0x18}, decodeLZ4},
	{"zstd", []byte{0x28, 0xb5, 0x2f, 0xfd}, decodeZstd},
}

// ExtractVmlinux decompresses the vmlinux inside a bzImage on the host, using
// the header's payload_offset/payload_length (boot protocol 2.08+). It returns
// the ELF image and the codec name. The payload ends with the 4-byte
// little-endian uncompressed size (scripts/Makefile.lib size_append, or the
// gzip ISIZE field for gzip); the output must have exactly that size.
func ExtractVmlinux(bzImage []byte) ([]byte, string, error) {
	bz, err := ParseBzImage(bzImage)
	if err != nil {
		return nil, "", err
	}
	payload, err := bz.Payload()
	if err != nil {
		return nil, "", err
	}
	out, codec, err := DecompressPayload(payload)
	if err != nil {
		return nil, codec, err
	}
	if !hasELFMagic(out) {
		return nil, codec, fmt.Errorf("bzImage payload (%s): decompressed %d bytes are not an ELF image", codec, len(out))
	}
	return out, codec, nil
}

// DecompressPayload decompresses a kernel payload (compressed data followed by
// the 4-byte uncompressed size), detecting the codec from its magic.
func DecompressPayload(payload []byte) ([]byte, string, error) {
	if hasELFMagic(payload) {
		// CONFIG_KERNEL_UNCOMPRESSED: the payload is vmlinux.bin itself.
		return payload, "none", nil
	}
	if len(payload) < 8 {
		return nil, "", fmt.Errorf("payload of %d bytes too short", len(payload))
	}
	want := binary.LittleEndian.Uint32(payload[len(payload)-4:])
	if want > MaxVmlinuxSize {
		return nil, "", fmt.Errorf("payload: uncompressed size %d (trailer) exceeds the %d-byte limit", want, MaxVmlinuxSize)
	}
	data := payload[:len(payload)-4]
	for _, c := range codecs {
		if !bytes.HasPrefix(data, c.magic) {
			continue
		}
		in := data
		if c.name == "gzip" {
			// The kernel build appends no size to gzip (cmd_gzip has no
			// size_append): the last 4 bytes are the member's own ISIZE.
			// Either way they hold the size; the reader stops after one
			// member and ignores an appended copy.
			in = payload
		}
		out, err := c.decode(in, int(want))
		if err != nil {
			return nil, c.name, fmt.Errorf("payload (%s): %w", c.name, err)
		}
		if len(out) != int(want) {
			return nil, c.name, fmt.Errorf("payload (%s): decompressed %d bytes, trailer says %d", c.name, len(out), want)
		}
		return out, c.name, nil
	}
	n := min(len(payload), 6)
	return nil, "", fmt.Errorf("payload: unknown compression, first bytes % x", payload[:n])
}

// readAllLimit reads r to EOF, failing once it produces more than want bytes.
func readAllLimit(r io.Reader, want int) ([]byte, error) {
	var buf bytes.Buffer
	n, err := io.Copy(&buf, io.LimitReader(r, int64(want)+1))
	if err != nil {
		return nil, err
	}
	if n > int64(want) {
		return nil, fmt.Errorf("output exceeds the expected %d bytes", want)
	}
	return buf.Bytes(), nil
}

func decodeGzip(src []byte, want int) ([]byte, error) {
	r, err := gzip.NewReader(bytes.NewReader(src))
	if err != nil {
		return nil, err
	}
	r.Multistream(false)
	return readAllLimit(r, want)
}

func decodeBzip2(src []byte, want int) ([]byte, error) {
	return readAllLimit(bzip2.NewReader(bytes.NewReader(src)), want)
}

// dictFor bounds a dictionary to what the output can reference: no match
// reaches further back than the output produced so far.
func dictFor(d int64, want int) int {
	if d > int64(want) {
		d = int64(want)
	}
	if d < lzma.MinDictCap {
		d = lzma.MinDictCap
	}
	return int(d)
}

// decodeLZMA reads the legacy .lzma ("lzma_alone") format: properties byte,
// 4-byte dictionary size, 8-byte uncompressed size (-1 = until end marker).
func decodeLZMA(src []byte, want int) ([]byte, error) {
	if len(src) < lzma.HeaderLen {
		return nil, fmt.Errorf("%d bytes too short for the %d-byte header", len(src), lzma.HeaderLen)
	}
	hdr := append([]byte(nil), src[:lzma.HeaderLen]...)
	dict := int64(binary.LittleEndian.Uint32(hdr[1:]))
	if dict > maxDict {
		return nil, fmt.Errorf("dictionary of %d bytes exceeds %d", dict, maxDict)
	}
	// Shrinking the declared dictionary to the output size changes nothing
	// for a valid stream and bounds the allocation for a hostile one.
	binary.LittleEndian.PutUint32(hdr[1:], uint32(dictFor(dict, want)))
	in := io.MultiReader(bytes.NewReader(hdr), bytes.NewReader(src[lzma.HeaderLen:]))
	r, err := lzma.ReaderConfig{DictCap: dictFor(dict, want)}.NewReader(in)
	if err != nil {
		return nil, err
	}
	return readAllLimit(r, want)
}

func decodeLZ4(src []byte, want int) ([]byte, error) {
	r := lz4.NewReader(bytes.NewReader(src))
	if err := r.Apply(lz4.ConcurrencyOption(1)); err != nil {
		return nil, err
	}
	return readAllLimit(r, want)
}

// shrinkZstdWindow rewrites the Window_Descriptor of the first frame (RFC
// 8878 §3.1.1.1.2) to the smallest window covering the expected output (at
// least the 128 KiB maximum block size). No match can reach further back than
// the output produced, so a valid frame decodes the same, and the decoder
// does not allocate the up to 128 MiB a piped "zstd --ultra -22" declares.
func shrinkZstdWindow(src []byte, want int) []byte {
	if len(src) < 6 || src[4]&0x20 != 0 { // Single_Segment: no descriptor
		return src
	}
	exp := 7 // 1<<(10+7) = 128 KiB
	for 1<<(10+exp) < want && exp < 31 {
		exp++
	}
	d := byte(exp << 3)
	if cur := src[5]; cur>>3 < d>>3 || cur>>3 == d>>3 && cur&7 == 0 {
		return src // already no larger
	}
	out := append([]byte(nil), src...)
	out[5] = d
	return out
}

func decodeZstd(src []byte, want int) ([]byte, error) {
	src = shrinkZstdWindow(src, want)
	d, err := zstd.NewReader(bytes.NewReader(src),
		zstd.WithDecoderConcurrency(1),
		zstd.WithDecoderMaxMemory(uint64(maxDict)+uint64(want)),
		zstd.WithDecoderMaxWindow(maxDict))
	if err != nil {
		return nil, err
	}
	defer d.Close()
	out, err := readAllLimit(d, want)
	if err != nil && errors.Is(err, zstd.ErrDecoderSizeExceeded) {
		return nil, fmt.Errorf("output exceeds the expected %d bytes", want)
	}
	return out, err
}
