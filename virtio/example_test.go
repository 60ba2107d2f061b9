package virtio_test

import (
	"bytes"
	"fmt"

	"github.com/vmmgo/vmm/virtio"
	"github.com/vmmgo/vmm/virtio/virtiotest"
)

// The device side of a split virtqueue: a (fake) driver posts a request
// with a readable and a writable buffer (Post makes it available); the device pops the chain, reads
// the request through the bounds- and state-checked memory, writes its
// answer and publishes the used element.
func ExampleQueue() {
	mem := virtiotest.NewMemory(1 << 20)
	drv, err := virtiotest.NewDriver(mem, 0x1000, 8, 0x4000)
	if err != nil {
		fmt.Println(err)
		return
	}
	q, err := virtio.NewQueue(mem, drv.Cfg, virtio.FVersion1)
	if err != nil {
		fmt.Println(err)
		return
	}
	head, _, err := drv.Post(virtiotest.Buf{Data: []byte("ping")}, virtiotest.Buf{Len: 8, Write: true})
	if err != nil {
		fmt.Println(err)
		return
	}

	var c virtio.Chain
	ok, err := q.Pop(&c)
	fmt.Println("popped:", ok, err, "readable", c.ReadableLen, "writable", c.WritableLen)
	req := make([]byte, c.ReadableLen)
	if _, err := c.ReadAt(mem, req, 0); err != nil {
		fmt.Println(err)
		return
	}
	n, _ := c.WriteAt(mem, bytes.ToUpper(req), 0)
	if err := q.PushUsed(c.Head, uint32(n)); err != nil {
		fmt.Println(err)
		return
	}
	u, ok := drv.Used()
	fmt.Println("used:", ok, u.ID == uint32(head), u.Len)
	ok, err = q.Pop(&c)
	fmt.Println("more:", ok, err)
	// Output:
	// popped: true <nil> readable 4 writable 8
	// used: true true 4
	// more: false <nil>
}

// Kicker is how Notify, on a vCPU thread, wakes a device's worker without
// blocking: a pending bit per queue and a one-slot channel.
func ExampleKicker() {
	k := virtio.NewKicker()
	k.Kick(0)
	k.Kick(2)
	k.Kick(2) // coalesced
	<-k.C
	fmt.Printf("pending queues %#b\n", k.Take())
	fmt.Printf("then %#b\n", k.Take())
	// Output:
	// pending queues 0b101
	// then 0b0
}
