package blk_test

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmmgo/vmm/virtio/blk"
	"github.com/vmmgo/vmm/virtio/virtiotest"
)

// TestDiskFullThenFreed: the file system under a sparse image fills up
// while the guest writes (writes complete with IOERR, reads and flushes go
// on), then space is freed (another file deleted): the device writes again
// without a reset, and the data it wrote before and after is intact.
// (A read-only remount cannot be tested this way: the kernel refuses it
// while the device holds the image open for writing.)
func TestDiskFullThenFreed(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", dir).Run() })
	filler := filepath.Join(dir, "filler")
	if err := os.WriteFile(filler, make([]byte, 128<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "sparse.img")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(4 << 20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	r := newRig(t, blk.Config{Path: p})
	write := func(sector uint64, v byte) byte {
		_, st, _ := r.do(virtiotest.Buf{Data: hdr(blk.TypeOut, sector)}, virtiotest.Buf{Data: bytes.Repeat([]byte{v}, 8192)}, status())
		return st
	}
	read := func(sector uint64) []byte {
		n, st, addrs := r.do(virtiotest.Buf{Data: hdr(blk.TypeIn, sector)}, virtiotest.Buf{Len: 8192, Write: true}, status())
		if st != blk.StatusOK || n != 8193 {
			t.Fatalf("read sector %d: status %d len %d", sector, st, n)
		}
		b := make([]byte, 8192)
		_ = r.h.Mem.Read(addrs[1], b)
		return b
	}
	full := -1
	for i := 0; i < 64; i++ {
		st := write(uint64(i*16), byte(i+1))
		if st == blk.StatusIOErr {
			full = i
			break
		}
		if st != blk.StatusOK {
			t.Fatalf("write %d: status %d", i, st)
		}
	}
	if full < 1 {
		t.Fatalf("the file system never filled up (first IOERR at write %d)", full)
	}
	if _, st, _ := r.do(virtiotest.Buf{Data: hdr(blk.TypeFlush, 0)}, status()); st != blk.StatusOK && st != blk.StatusIOErr {
		t.Fatalf("flush on a full file system: status %d", st)
	}
	if !bytes.Equal(read(0), bytes.Repeat([]byte{1}, 8192)) {
		t.Fatal("data written before the file system filled up reads back wrong")
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if st := write(uint64(full*16), 0xab); st != blk.StatusOK {
		t.Fatalf("write after space was freed: status %d", st)
	}
	if _, st, _ := r.do(virtiotest.Buf{Data: hdr(blk.TypeFlush, 0)}, status()); st != blk.StatusOK {
		t.Fatalf("flush after space was freed: status %d", st)
	}
	if !bytes.Equal(read(uint64(full*16)), bytes.Repeat([]byte{0xab}, 8192)) {
		t.Fatal("the write after space was freed reads back wrong")
	}
	t.Logf("file system full at write %d (%d KiB written)", full, full*8)
}

const childEnv = "VMM_BLK_KILL_CHILD"

// TestFlushedDataSurvivesKill: data the guest wrote and flushed is in the
// host file after the VMM is SIGKILLed. A child process (this test binary)
// opens the device, writes and flushes, says so, and is killed; the parent
// then reads the file.
func TestFlushedDataSurvivesKill(t *testing.T) {
	if p := os.Getenv(childEnv); p != "" {
		blkKillChild(t, p)
		return
	}
	p := image(t, 1<<20)
	cmd := exec.Command(os.Args[0], "-test.run=^TestFlushedDataSurvivesKill$", "-test.v")
	cmd.Env = append(os.Environ(), childEnv+"="+p)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	flushed := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "BLK-CHILD-FLUSHED") {
				flushed <- true
				return
			}
		}
		flushed <- false
	}()
	select {
	case ok := <-flushed:
		if !ok {
			_ = cmd.Wait()
			t.Fatalf("child ended without flushing:\n%s", stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("child did not flush within 20s:\n%s", stderr.String())
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	file, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if want := childPattern(); !bytes.Equal(file[8*512:8*512+len(want)], want) {
		t.Fatal("data written and flushed by the killed process is not in the file")
	}
	if file[8*512-1] != 7 || file[8*512+len(childPattern())] != byte((8*512+len(childPattern()))/512) {
		t.Fatal("bytes around the write changed")
	}
}

func childPattern() []byte { return bytes.Repeat([]byte("flushed!"), 1024) } // 8 KiB

// blkKillChild is the child side: write, flush, report, wait to be killed.
func blkKillChild(t *testing.T, path string) {
	r := newRig(t, blk.Config{Path: path})
	data := childPattern()
	if _, st, _ := r.do(virtiotest.Buf{Data: hdr(blk.TypeOut, 8)}, virtiotest.Buf{Data: data}, status()); st != blk.StatusOK {
		t.Fatalf("child write: status %d", st)
	}
	if _, st, _ := r.do(virtiotest.Buf{Data: hdr(blk.TypeFlush, 0)}, status()); st != blk.StatusOK {
		t.Fatalf("child flush: status %d", st)
	}
	os.Stdout.WriteString("BLK-CHILD-FLUSHED\n")
	time.Sleep(time.Minute) // killed long before
	t.Fatal("child was not killed")
}
