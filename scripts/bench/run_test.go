package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TestRunVMMWatches runs a shell as a stand-in VMM: it prints a marker,
// then a failure line on stderr, then sleeps; runVMM must time the marker,
// record the failure and kill the process well before the sleep ends.
func TestRunVMMWatches(t *testing.T) {
	spec := runSpec{
		argv: []string{"sh", "-c", "sleep 0.1; printf 'x\\036y'; echo 'KVM internal error. Suberror: 1' >&2; sleep 30"},
		watch: []pattern{
			{name: "marker", text: []byte{0x1e}},
			{name: "internal error", stderr: true, text: []byte("KVM internal error"), action: actFail},
		},
		timeout: 20 * time.Second,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
	defer cancel()
	res, err := runVMM(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	at, ok := res.seen["marker"]
	if !ok || at < 100*time.Millisecond || at > 5*time.Second {
		t.Fatalf("marker at %v (seen %v)", at, ok)
	}
	if res.failure != "internal error" || res.timedOut || !res.exited || res.exitAt > 10*time.Second {
		t.Fatalf("failure %q timedOut %v exited %v at %v", res.failure, res.timedOut, res.exited, res.exitAt)
	}
	if !strings.Contains(string(res.stderr), "Suberror: 1") {
		t.Fatalf("stderr %q", res.stderr)
	}
}

func TestRunVMMPTYAndExit(t *testing.T) {
	spec := runSpec{argv: []string{"sh", "-c", "test -t 0 && exit 3; exit 4"}, pty: true, timeout: 10 * time.Second}
	res, err := runVMM(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	if !res.exited || res.exitCode != 3 {
		t.Fatalf("exit code %d (exited %v): stdin was not a terminal", res.exitCode, res.exited)
	}
}

// TestReadFootprintSelf maps a distinctive anonymous region in this process,
// touches part of it and checks readFootprint finds it and counts it apart.
//
// The test controls what it measures: small pages only (MADV_NOHUGEPAGE,
// so a transparent huge page cannot make 4 MiB of touches count as more),
// the touched pages locked in memory as they fault (mlock2 MLOCK_ONFAULT:
// nothing can reclaim them before smaps is read, and the untouched rest
// stays unpopulated), and VMA flags no neighbour has, so the kernel cannot
// merge the region with an adjacent anonymous mapping of the Go runtime
// (which made readFootprint pick another VMA and report 0 bytes resident).
func TestReadFootprintSelf(t *testing.T) {
	const size = 24<<20 + 4096*3
	const touched = 4 << 20
	b := mmapAnon(t, size)
	if err := unix.Madvise(b, unix.MADV_NOHUGEPAGE); err != nil {
		t.Fatal(err)
	}
	addr := uintptr(unsafe.Pointer(&b[0]))
	if _, _, errno := unix.Syscall(unix.SYS_MLOCK2, addr, size, unix.MLOCK_ONFAULT); errno != 0 {
		t.Skipf("mlock2(MLOCK_ONFAULT) of %d bytes: %v (RLIMIT_MEMLOCK too low to pin the pages measured)", size, errno)
	}
	for i := 0; i < touched; i += 4096 {
		b[i] = 1
	}
	fp, err := readFootprint(os.Getpid(), size>>10)
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("%x-%x ", addr, addr+size); !strings.HasPrefix(fp.GuestMap, want) {
		t.Fatalf("readFootprint took mapping %q, want the test's %s", fp.GuestMap, want)
	}
	if fp.GuestRSS != touched {
		t.Fatalf("guest RSS %d, want %d: the locked, touched small pages (%s)", fp.GuestRSS, touched, fp.GuestMap)
	}
	if fp.TotalRSS != fp.VMMRSS+fp.GuestRSS || fp.VMMRSS == 0 {
		t.Fatalf("total %d vmm %d guest %d", fp.TotalRSS, fp.VMMRSS, fp.GuestRSS)
	}
}
