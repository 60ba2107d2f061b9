package net_test

import (
	"os/exec"
	"syscall"
	"testing"
	"time"

	vnet "github.com/vmmgo/vmm/virtio/net"
	"github.com/vmmgo/vmm/virtio/virtiotest"
)

// cpuTime is this process's user+system CPU time so far.
func cpuTime(t *testing.T) time.Duration {
	t.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestTAPDisappears deletes the TAP under a running device (an
// administrator's `ip link del`, a dying container network): the device
// keeps completing the guest's transmit chains (dropping the frames), its
// receive side neither spins on the dead descriptor nor stops the process,
// and Close still returns.
func TestTAPDisappears(t *testing.T) {
	ns, d := inNetns(t)
	h, err := virtiotest.NewHarness(d, ^uint64(0), 4<<20, 1<<20, 64)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Activate(); err != nil {
		t.Fatal(err)
	}
	for range 4 {
		if _, _, err := h.Drivers[0].Post(virtiotest.Buf{Len: 1526 + vnet.HeaderSize, Write: true}); err != nil {
			t.Fatal(err)
		}
	}
	h.Dev.Notify(0)
	if out, err := exec.Command("ip", "-n", ns, "link", "del", "vtap0").CombinedOutput(); err != nil {
		t.Fatalf("ip link del: %v\n%s", err, out)
	}
	// Frames the host kernel sent before the deletion (IPv6 neighbour
	// discovery on link-up) may still complete receive buffers: let those
	// land and drop them; only completions after this point are wrong.
	time.Sleep(100 * time.Millisecond)
	for {
		if _, ok := h.Drivers[0].Used(); !ok {
			break
		}
	}

	for i := range 3 {
		f := frame(60)
		if _, _, err := h.Drivers[1].Post(virtiotest.Buf{Data: append(make([]byte, vnet.HeaderSize), f...)}); err != nil {
			t.Fatal(err)
		}
		h.Dev.Notify(1)
		if _, err := h.WaitUsed(1, 5*time.Second); err != nil {
			t.Fatalf("tx %d after the TAP went away: %v", i, err)
		}
	}
	if d.TxDropped.Load() == 0 {
		t.Error("frames sent to a deleted TAP were not counted as dropped")
	}

	// The receive worker sees an error on every read now: it must back off.
	c0 := cpuTime(t)
	time.Sleep(500 * time.Millisecond)
	if used := cpuTime(t) - c0; used > 150*time.Millisecond {
		t.Errorf("the process used %v of CPU in 500ms with a dead TAP (a busy loop?)", used)
	}
	if e, ok := h.Drivers[0].Used(); ok {
		t.Errorf("a receive buffer was completed (len %d) after the TAP went away", e.Len)
	}
	closed := make(chan error, 1)
	go func() { closed <- d.Close() }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return with the TAP gone")
	}
}
