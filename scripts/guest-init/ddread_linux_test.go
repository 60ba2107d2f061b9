package main

import (
	"errors"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestDDRead reads a file of known content with O_DIRECT (skips where the
// test directory's file system refuses O_DIRECT, e.g. tmpfs on 6.1).
func TestDDRead(t *testing.T) {
	dir, err := os.MkdirTemp(".", "ddread")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	b := make([]byte, 3<<20)
	for i := range b {
		b[i] = byte(rand.UintN(256))
	}
	p := filepath.Join(dir, "img")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	n, took, sum, err := ddRead(p, 2)
	if errors.Is(err, unix.EINVAL) {
		t.Skipf("O_DIRECT refused here: %v", err)
	}
	if err != nil || n != 2<<20 || took <= 0 || sum != crc32.ChecksumIEEE(b[:2<<20]) {
		t.Errorf("ddRead 2 MiB: %d bytes, %v, crc %08x (want %08x), %v", n, took, sum, crc32.ChecksumIEEE(b[:2<<20]), err)
	}
	if n, _, _, err := ddRead(p, 4); err == nil || n != 3<<20 {
		t.Errorf("ddRead past the end: %d bytes, %v: want 3 MiB and a short-read error", n, err)
	}
}
