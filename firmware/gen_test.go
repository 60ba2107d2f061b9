package firmware

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

const fixtureDir = "../testdata/firmware"

// payloadTools are the commands the kernel build uses for each codec
// (scripts/Makefile.lib, scripts/xz_wrap.sh); gen writes <name> with the
// tool's output plus the size trailer.
var payloadTools = []struct {
	file string
	cmd  []string
}{
	{"payload.gz", []string{"gzip", "-n", "-9", "-c"}},
	{"payload.bz2", []string{"bzip2", "-9", "-c"}},
	{"payload.lzma", []string{"lzma", "-9", "-c"}},
	{"payload.xz", []string{"xz", "--check=crc32", "--x86", "--lzma2=dict=1MiB", "-c"}},
	{"payload.lzo", []string{"lzop", "-9", "-c"}},
	{"payload.lz4", []string{"lz4", "-l", "-9", "-c"}},
	{"payload.zst", []string{"zstd", "-19", "-c", "-q"}},
	// As piped kernel builds make it: a 128 MiB window for a small input.
	{"payload-ultra.zst", []string{"zstd", "--ultra", "-22", "--long=27", "-c", "-q"}},
}

// TestGenerateFixtures rewrites testdata/firmware when FIRMWARE_REGEN=1
// (needs gzip, bzip2, lzma, xz, lzop, lz4 and zstd on PATH).
func TestGenerateFixtures(t *testing.T) {
	if os.Getenv("FIRMWARE_REGEN") != "1" {
		t.Skip("set FIRMWARE_REGEN=1 to regenerate testdata/firmware")
	}
	put := func(name string, b []byte) {
		if err := os.WriteFile(filepath.Join(fixtureDir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	vml := testVmlinux()
	put("vmlinux-pvh.elf", buildELF(x86ish(4096, 2), 0x2000, true))
	put("vmlinux-nopvh.elf", buildELF(x86ish(4096, 3), 0x2000, false))
	for _, p := range payloadTools {
		c := exec.Command(p.cmd[0], p.cmd[1:]...)
		c.Stdin = bytes.NewReader(vml)
		out, err := c.Output()
		if err != nil {
			t.Fatalf("%v: %v", p.cmd, err)
		}
		put(p.file, withSizeTrailer(out, len(vml)))
	}
	good := buildBzImage(withSizeTrailer(gzipBytes(vml), len(vml)))
	put("bzImage-gzip.bin", good)
	bad := append([]byte(nil), good...)
	copy(bad[offHeaderMagic:], "HdrX")
	put("bzImage-bad-magic.bin", bad[:1024])
	old := append([]byte(nil), good[:1024]...)
	old[offVersion], old[offVersion+1] = 0x04, 0x02
	put("bzImage-old-protocol.bin", old)
	put("bzImage-truncated.bin", good[:0x300])
}
