package firmware

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"
)

func TestDecompressPayloadFixtures(t *testing.T) {
	want := testVmlinux()
	for _, tc := range []struct{ file, codec string }{
		{"payload.gz", "gzip"}, {"payload.bz2", "bzip2"}, {"payload.lzma", "lzma"},
		{"payload.xz", "xz"}, {"payload.lzo", "lzo"}, {"payload.lz4", "lz4"}, {"payload.zst", "zstd"},
		{"payload-ultra.zst", "zstd"},
	} {
		t.Run(tc.codec, func(t *testing.T) {
			p := readFixture(t, tc.file)
			out, codec, err := DecompressPayload(p)
			if err != nil {
				t.Fatal(err)
			}
			if codec != tc.codec || !bytes.Equal(out, want) {
				t.Fatalf("codec %q, %d bytes, equal %v", codec, len(out), bytes.Equal(out, want))
			}
			// The same payload inside a bzImage.
			vml, codec, err := ExtractVmlinux(buildBzImage(p))
			if err != nil || codec != tc.codec || !bytes.Equal(vml, want) {
				t.Fatalf("ExtractVmlinux: %q %v", codec, err)
			}
			// Every corruption must be an error, never a panic or a silent
			// success with wrong bytes.
			for _, off := range []int{len(p) / 3, len(p) / 2, len(p) - 12} {
				bad := append([]byte(nil), p...)
				bad[off] ^= 0x55
				out, _, err := DecompressPayload(bad)
				if tc.codec == "lz4" {
					// Legacy lz4 frames (what the kernel uses) carry no
					// checksum: a flipped literal is undetectable. Only
					// require no panic.
					continue
				}
				if err == nil && !bytes.Equal(out, want) {
					t.Errorf("flip at %d: wrong output without error", off)
				}
			}
			if _, _, err := DecompressPayload(withSizeTrailer(p[:len(p)/2], len(want))); err == nil {
				t.Error("truncated payload accepted")
			}
			wrong := append([]byte(nil), p...)
			binary.LittleEndian.PutUint32(wrong[len(wrong)-4:], uint32(len(want)-1))
			if _, _, err := DecompressPayload(wrong); err == nil {
				t.Error("wrong size trailer accepted")
			}
		})
	}
}

func TestXZWithoutBCJDecodeDiffers(t *testing.T) {
	// The fixture was made with --x86: the BCJ pass must actually change
	// the LZMA2 output, or the test above would not prove anything about it.
	want := testVmlinux()
	b := append([]byte(nil), want...)
	bcjX86Decode(b, 0)
	if bytes.Equal(b, want) {
		t.Fatal("BCJ decode is the identity on x86-like data")
	}
}

func TestExtractAndLoadPVH(t *testing.T) {
	img := readFixture(t, "bzImage-gzip.bin")
	mem := newFakeMem(64 << 20)
	bi, err := Load(mem, img, nil, Config{E820: mustE820(t, 64<<20), Extract: true})
	if err != nil {
		t.Fatal(err)
	}
	if bi.Protocol != ProtocolPVH || bi.Format != "bzImage/gzip -> ELF" || bi.Entry != testPVHEntry {
		t.Fatalf("%+v", bi)
	}
}

func TestDecompressPayloadErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []byte
		err  string
	}{
		{"short", []byte{1, 2, 3}, "too short"},
		{"unknown", withSizeTrailer([]byte("PK\x03\x04 zip file"), 100), "unknown compression"},
		{"huge trailer", withSizeTrailer([]byte{0x1f, 0x8b, 8, 0}, 1<<30), "exceeds"},
		{"lzma dict", withSizeTrailer(append([]byte{0x5d, 0, 0, 0, 0x40}, bytes.Repeat([]byte{0xff}, 20)...), 100), "dictionary"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := DecompressPayload(tc.in)
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("err = %v, want %q", err, tc.err)
			}
		})
	}
	// gzip as the kernel build makes it: no appended size, the ISIZE
	// field is the trailer.
	v0 := testVmlinux()
	if out, codec, err := DecompressPayload(gzipBytes(v0)); err != nil || codec != "gzip" || !bytes.Equal(out, v0) {
		t.Fatalf("gzip without size_append: %q %v", codec, err)
	}
	// An uncompressed payload (CONFIG_KERNEL_UNCOMPRESSED) passes through.
	v := testVmlinux()
	if out, codec, err := DecompressPayload(v); err != nil || codec != "none" || !bytes.Equal(out, v) {
		t.Fatalf("uncompressed: %q %v", codec, err)
	}
}

func TestLZO1XHandmade(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []byte
		want string
		err  string
	}{
		// First byte 17+5: five literals, then the end marker.
		{"literals", []byte{22, 'h', 'e', 'l', 'l', 'o', 0x11, 0, 0}, "hello", ""},
		// "ab" literals (first byte 19: 2 literals, state 2), then
		// 001LLLLL with L=4: length 6, distance D+1 = 2 → overlapping copy.
		{"overlap", []byte{19, 'a', 'b', 0x24, 1 << 2, 0, 0x11, 0, 0}, "abababab", ""},
		// After 4+ literals, 0000DDSS means a 3-byte match at distance >= 2049.
		{"far", []byte{22, 'x', 'y', 'z', 'w', 'v', 0x00, 0x00, 0x11, 0, 0}, "", "distance 2049"},
		{"distance beyond", []byte{18, 'a', 0x40, 5, 0x11, 0, 0}, "", "beyond the 1 bytes"},
		{"truncated", []byte{22, 'h', 'e'}, "", "overrun"},
		{"no end", []byte{22, 'h', 'e', 'l', 'l', 'o'}, "", "overrun"},
		{"trailing", []byte{22, 'h', 'e', 'l', 'l', 'o', 0x11, 0, 0, 9}, "", "trailing"},
		{"rle", []byte{17, 1, 0, 0, 0, 0}, "", "LZO-RLE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := LZO1XDecompress(tc.in, 64)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || string(out) != tc.want {
				t.Fatalf("got %q, %v; want %q", out, err, tc.want)
			}
		})
	}
	if _, err := LZO1XDecompress([]byte{22, 'h', 'e', 'l', 'l', 'o', 0x11, 0, 0}, 4); err == nil {
		t.Error("output limit ignored")
	}
}

func TestZstdWindowShrink(t *testing.T) {
	p := readFixture(t, "payload-ultra.zst")
	if p[4]&0x20 != 0 || p[5]>>3 < 17 {
		t.Fatalf("fixture does not declare a large window: FHD %#x WD %#x", p[4], p[5])
	}
	s := shrinkZstdWindow(p[:len(p)-4], len(testVmlinux()))
	if s[5] != 7<<3 {
		t.Errorf("window descriptor %#x, want 128 KiB (0x38)", s[5])
	}
	if p[5]>>3 < 17 {
		t.Error("input modified")
	}
}
