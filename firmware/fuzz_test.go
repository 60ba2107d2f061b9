package firmware

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
)

func addFixtures(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join(fixtureDir, "*"))
	for _, p := range files {
		if b, err := os.ReadFile(p); err == nil && filepath.Ext(p) != ".md" {
			f.Add(b)
		}
	}
}

// FuzzLoad: any kernel image either loads inside the memory map or fails;
// it never panics or writes outside guest RAM (fakeMem would error).
func FuzzLoad(f *testing.F) {
	addFixtures(f)
	f.Fuzz(func(t *testing.T, img []byte) {
		const ram = 32 << 20
		m, _ := DefaultE820(ram)
		cmd := "console=ttyS0"
		if len(img) > 0 && img[0]&1 == 1 {
			cmd = string(img[:min(len(img), 300)])
		}
		bi, err := Load(newSparseMem(ram), img, img[:min(len(img), 4096)], Config{Cmdline: cmd, E820: m})
		if err != nil {
			return
		}
		if bi.InitrdSize > 0 && (bi.InitrdAddr < bi.KernelEnd || bi.InitrdAddr+bi.InitrdSize > ram) {
			t.Fatalf("initrd [%#x +%#x) overlaps kernel end %#x or leaves RAM", bi.InitrdAddr, bi.InitrdSize, bi.KernelEnd)
		}
	})
}

// FuzzExtractVmlinux feeds hostile payloads to every decompressor through a
// well-formed bzImage header.
func FuzzExtractVmlinux(f *testing.F) {
	for _, n := range []string{"payload.gz", "payload.bz2", "payload.lzma", "payload.xz", "payload.lzo", "payload.lz4", "payload.zst"} {
		if b, err := os.ReadFile(filepath.Join(fixtureDir, n)); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		if len(payload) >= 4 {
			// Keep the claimed size small so iterations stay fast.
			binary.LittleEndian.PutUint32(payload[len(payload)-4:], binary.LittleEndian.Uint32(payload[len(payload)-4:])%(1<<20))
		}
		out, _, err := ExtractVmlinux(buildBzImage(payload))
		if err == nil && !hasELFMagic(out) {
			t.Fatal("success without an ELF image")
		}
	})
}

func FuzzLZO1X(f *testing.F) {
	f.Add([]byte{22, 'h', 'e', 'l', 'l', 'o', 0x11, 0, 0})
	f.Add([]byte{19, 'a', 'b', 0x24, 1 << 2, 0, 0x11, 0, 0})
	f.Fuzz(func(t *testing.T, in []byte) {
		out, err := LZO1XDecompress(in, 1<<16)
		if err == nil && len(out) > 1<<16 {
			t.Fatalf("output %d beyond the limit", len(out))
		}
	})
}

func FuzzParseCmdline(f *testing.F) {
	f.Add(`console=ttyS0 foo="a b" -- init`)
	f.Add(`"`)
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseCmdline(s)
		if err != nil {
			return
		}
		// Rendering and parsing again is stable.
		c2, err := ParseCmdline(c.String())
		if err != nil {
			t.Fatalf("re-parse of %q: %v", c.String(), err)
		}
		if c2.String() != c.String() {
			t.Fatalf("unstable: %q -> %q", c.String(), c2.String())
		}
	})
}

func FuzzParseELF(f *testing.F) {
	addFixtures(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := ParseELF(b)
		if err != nil {
			return
		}
		for _, s := range e.Segments {
			if s.Offset+s.FileSize > uint64(len(b)) || s.FileSize > s.MemSize {
				t.Fatalf("unchecked segment %+v", s)
			}
		}
	})
}
