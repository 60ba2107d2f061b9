package net_test

import (
	"bytes"
	"errors"
	"fmt"
	stdnet "net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vmmgo/vmm/memory"
	vnet "github.com/vmmgo/vmm/virtio/net"
	"github.com/vmmgo/vmm/virtio/virtiotest"
)

func TestMissingTAP(t *testing.T) {
	_, err := vnet.Open(vnet.Config{TAP: "vmmnosuchtap9"})
	if !errors.Is(err, vnet.ErrNoTAP) || !strings.Contains(err.Error(), "vmmnosuchtap9") {
		t.Fatalf("error %v", err)
	}
	if _, err := vnet.Open(vnet.Config{}); err == nil {
		t.Fatal("no TAP accepted")
	}
	if _, err := vnet.Open(vnet.Config{TAP: strings.Repeat("x", 20)}); err == nil {
		t.Fatal("overlong name accepted")
	}
}

// inNetns creates a network namespace with a TAP in it and opens the TAP
// from a thread that joined the namespace.
func inNetns(t *testing.T) (ns string, d *vnet.Device) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces and TAP devices")
	}
	ns = fmt.Sprintf("vmmtest%d", os.Getpid())
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v\n%s", args, err, out)
		}
	}
	run("netns", "add", ns)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	run("-n", ns, "tuntap", "add", "dev", "vtap0", "mode", "tap")
	run("-n", ns, "link", "set", "vtap0", "up")
	run("-n", ns, "addr", "add", "10.99.0.1/24", "dev", "vtap0")

	err := inNS(ns, func() error {
		var err error
		d, err = vnet.Open(vnet.Config{TAP: "vtap0", MAC: []byte{2, 0, 0, 0, 0, 2}})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return ns, d
}

// inNS runs fn on an OS thread that joined network namespace ns. The thread
// is never unlocked, so it exits with its goroutine instead of returning to
// the scheduler's pool in the wrong namespace.
func inNS(ns string, fn func() error) error {
	ch := make(chan error)
	go func() {
		runtime.LockOSThread()
		f, err := os.Open("/var/run/netns/" + ns)
		if err != nil {
			ch <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- os.NewSyscallError("setns", err)
			return
		}
		ch <- fn()
	}()
	return <-ch
}

func TestTAP(t *testing.T) {
	ns, d := inNetns(t)
	if d.Features()&vnet.FGuestCsum == 0 {
		t.Log("TAP refused TUNSETOFFLOAD; checksum offload not offered")
	}
	h, err := virtiotest.NewHarness(d, ^uint64(0), 4<<20, 1<<20, 64)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Activate(); err != nil {
		t.Fatal(err)
	}
	// RX: the namespace pings 10.99.0.2, so the kernel ARPs out of the TAP.
	bufs := map[uint32]uint64{}
	for range 8 {
		head, addrs, err := h.Drivers[0].Post(virtiotest.Buf{Len: 1526 + vnet.HeaderSize, Write: true})
		if err != nil {
			t.Fatal(err)
		}
		bufs[uint32(head)] = uint64(addrs[0])
	}
	h.Dev.Notify(0)
	// Sending UDP to 10.99.0.2 from inside the namespace makes the kernel
	// ARP for it out of the TAP.
	stopUDP := make(chan struct{})
	defer close(stopUDP)
	go inNS(ns, func() error {
		c, err := stdnet.Dial("udp4", "10.99.0.2:9")
		if err != nil {
			return err
		}
		defer c.Close()
		for {
			_, _ = c.Write([]byte("x"))
			select {
			case <-stopUDP:
				return nil
			case <-time.After(100 * time.Millisecond):
			}
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for found := false; !found; {
		if time.Now().After(deadline) {
			t.Fatal("no ARP request from the TAP")
		}
		e, ok := h.Drivers[0].Used()
		if !ok {
			time.Sleep(5 * time.Millisecond)
			continue
		}
		if e.Len < vnet.HeaderSize+42 {
			t.Fatalf("short rx frame %d", e.Len)
		}
		b := make([]byte, e.Len)
		_ = h.Mem.Read(memoryGPA(bufs[e.ID]), b)
		if b[10] != 1 || b[11] != 0 {
			t.Fatalf("num_buffers %v", b[10:12])
		}
		eth := b[vnet.HeaderSize:]
		head, addrs, err := h.Drivers[0].Post(virtiotest.Buf{Len: 1526 + vnet.HeaderSize, Write: true})
		if err != nil {
			t.Fatal(err)
		}
		bufs[uint32(head)] = uint64(addrs[0])
		h.Dev.Notify(0)
		// ARP request for 10.99.0.2: ethertype 0x0806, opcode 1, target IP.
		found = eth[12] == 0x08 && eth[13] == 0x06 && eth[21] == 1 && bytes.Equal(eth[38:42], []byte{10, 99, 0, 2})
	}
	if d.Stats.Snapshot().Requests == 0 {
		t.Fatal("no rx request counted")
	}
	// TX: the guest sends a broadcast ARP request; the namespace's TAP counts it.
	before := rxPackets(t, ns)
	f := frame(60)
	copy(f[6:12], []byte{2, 0, 0, 0, 0, 2})
	if _, _, err := h.Drivers[1].Post(virtiotest.Buf{Data: append(make([]byte, vnet.HeaderSize), f...)}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.WaitUsed(1, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	for i := 0; rxPackets(t, ns) <= before; i++ {
		if i > 100 {
			t.Fatalf("TAP rx packets stayed at %d", before)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if d.TxDropped.Load() != 0 {
		t.Fatal("tx dropped")
	}
}

func rxPackets(t *testing.T, ns string) int {
	out, err := exec.Command("ip", "-n", ns, "-s", "-o", "link", "show", "vtap0").CombinedOutput()
	if err != nil {
		t.Fatalf("ip link: %v %s", err, out)
	}
	// "... RX: bytes packets ... \    <bytes> <packets> ..."
	fields := strings.Fields(strings.ReplaceAll(string(out), "\\", " "))
	for i, f := range fields {
		if f == "RX:" {
			// header words follow until the numbers start
			for j := i + 1; j < len(fields); j++ {
				var n int
				if _, err := fmt.Sscanf(fields[j], "%d", &n); err == nil {
					var p int
					fmt.Sscanf(fields[j+1], "%d", &p)
					return p
				}
			}
		}
	}
	t.Fatalf("cannot parse %q", out)
	return 0
}

func memoryGPA(a uint64) memory.GPA { return memory.GPA(a) }
