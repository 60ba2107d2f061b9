package virtio_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"github.com/vmmgo/vmm/memory"
	"github.com/vmmgo/vmm/virtio"
	"github.com/vmmgo/vmm/virtio/virtiotest"
)

const allFeatures = virtio.CommonFeatures

func setup(t testing.TB, size uint16, features uint64) (*virtiotest.Memory, *virtiotest.Driver, *virtio.Queue) {
	t.Helper()
	mem := virtiotest.NewMemory(1 << 20)
	drv, err := virtiotest.NewDriver(mem, 0x1000, size, 512<<10)
	if err != nil {
		t.Fatal(err)
	}
	q, err := virtio.NewQueue(mem, drv.Cfg, features)
	if err != nil {
		t.Fatal(err)
	}
	return mem, drv, q
}

func readChain(t *testing.T, mem virtio.GuestMemory, ds []virtio.Desc) []byte {
	t.Helper()
	var out []byte
	for _, d := range ds {
		b := make([]byte, d.Len)
		if err := mem.DeviceRead(d.Addr, b); err != nil {
			t.Fatal(err)
		}
		out = append(out, b...)
	}
	return out
}

func TestQueueConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg virtio.QueueConfig
		ok  bool
	}{
		{virtio.QueueConfig{Size: 256, Desc: 0x1000, Avail: 0x2000, Used: 0x3000}, true},
		{virtio.QueueConfig{Size: 32768, Desc: 0, Avail: 2, Used: 4}, true},
		{virtio.QueueConfig{Size: 0, Desc: 0x1000, Avail: 0x2000, Used: 0x3000}, false},
		{virtio.QueueConfig{Size: 100, Desc: 0x1000, Avail: 0x2000, Used: 0x3000}, false},
		{virtio.QueueConfig{Size: 65535, Desc: 0x1000, Avail: 0x2000, Used: 0x3000}, false},
		{virtio.QueueConfig{Size: 16, Desc: 0x1008, Avail: 0x2000, Used: 0x3000}, false},
		{virtio.QueueConfig{Size: 16, Desc: 0x1000, Avail: 0x2001, Used: 0x3000}, false},
		{virtio.QueueConfig{Size: 16, Desc: 0x1000, Avail: 0x2000, Used: 0x3002}, false},
		{virtio.QueueConfig{Size: 16, Desc: 0xffff_ffff_ffff_fff0, Avail: 0x2000, Used: 0x3000}, false},
	} {
		if err := tc.cfg.Validate(); (err == nil) != tc.ok {
			t.Errorf("%+v: err=%v, want ok=%v", tc.cfg, err, tc.ok)
		}
	}
}

func TestPopDirectAndIndirect(t *testing.T) {
	for _, indirect := range []bool{false, true} {
		mem, drv, q := setup(t, 16, allFeatures)
		post := drv.Post
		if indirect {
			post = drv.PostIndirect
		}
		hdr := []byte("header--")
		body := bytes.Repeat([]byte{0xab}, 5000)
		head, addrs, err := post(virtiotest.Buf{Data: hdr}, virtiotest.Buf{Data: body},
			virtiotest.Buf{Len: 100, Write: true}, virtiotest.Buf{Len: 1, Write: true})
		if err != nil {
			t.Fatal(err)
		}
		var c virtio.Chain
		ok, err := q.Pop(&c)
		if !ok || err != nil {
			t.Fatalf("indirect=%v Pop = %v, %v", indirect, ok, err)
		}
		if c.Head != head || len(c.Readable) != 2 || len(c.Writable) != 2 ||
			c.ReadableLen != 8+5000 || c.WritableLen != 101 || c.Err != nil {
			t.Fatalf("chain %+v", c)
		}
		if got := readChain(t, mem, c.Readable); !bytes.Equal(got, append(hdr, body...)) {
			t.Fatal("readable content differs")
		}
		if c.Writable[0].Addr != addrs[2] || c.Writable[1].Addr != addrs[3] {
			t.Fatalf("writable addrs %+v, want %v %v", c.Writable, addrs[2], addrs[3])
		}
		if ok, err := q.Pop(&c); ok || err != nil {
			t.Fatalf("second Pop = %v, %v; want empty", ok, err)
		}
		if err := q.PushUsed(head, 42); err != nil {
			t.Fatal(err)
		}
		u, ok := drv.Used()
		if !ok || u.ID != uint32(head) || u.Len != 42 {
			t.Fatalf("used %+v %v", u, ok)
		}
	}
}

func TestChainReadWriteAt(t *testing.T) {
	mem, drv, q := setup(t, 8, allFeatures)
	if _, _, err := drv.Post(virtiotest.Buf{Data: []byte("abc")}, virtiotest.Buf{Data: []byte("defgh")},
		virtiotest.Buf{Len: 2, Write: true}, virtiotest.Buf{Len: 4, Write: true}); err != nil {
		t.Fatal(err)
	}
	var c virtio.Chain
	if ok, err := q.Pop(&c); !ok || err != nil {
		t.Fatal(ok, err)
	}
	p := make([]byte, 4)
	if n, err := c.ReadAt(mem, p, 2); n != 4 || err != nil || string(p) != "cdef" {
		t.Fatalf("ReadAt = %d %v %q", n, err, p)
	}
	if n, err := c.ReadAt(mem, p, 6); n != 2 || err == nil {
		t.Fatalf("short ReadAt = %d %v", n, err)
	}
	if n, err := c.WriteAt(mem, []byte("WXYZ"), 1); n != 4 || err != nil {
		t.Fatalf("WriteAt = %d %v", n, err)
	}
	got := readChain(t, mem, c.Writable)
	if string(got[1:5]) != "WXYZ" {
		t.Fatalf("writable = %q", got)
	}
	if n, err := c.WriteAt(mem, []byte("123"), 5); n != 1 || err == nil {
		t.Fatalf("overlong WriteAt = %d %v", n, err)
	}
}

func TestMalformedChains(t *testing.T) {
	const size = 8
	memSize := uint64(1 << 20)
	type build func(d *virtiotest.Driver) uint16
	raw := func(descs ...virtiotest.RawDesc) build {
		return func(d *virtiotest.Driver) uint16 {
			for i, r := range descs {
				d.WriteDesc(uint16(i), r)
			}
			return 0
		}
	}
	buf := uint64(0x80000)
	indirect := func(table ...virtiotest.RawDesc) build {
		return func(d *virtiotest.Driver) uint16 {
			a, err := d.WriteIndirectTable(table)
			if err != nil {
				panic(err)
			}
			d.WriteDesc(0, virtiotest.RawDesc{Addr: uint64(a), Len: uint32(16 * len(table)), Flags: virtio.DescFIndirect})
			return 0
		}
	}
	many := make([]virtiotest.RawDesc, size+1)
	for i := range many {
		many[i] = virtiotest.RawDesc{Addr: buf, Len: 1, Flags: virtio.DescFNext, Next: uint16(i + 1)}
	}
	many[size].Flags = 0
	for _, tc := range []struct {
		name     string
		features uint64
		b        build
		head     uint16
		want     error
	}{
		{"loop", allFeatures, raw(
			virtiotest.RawDesc{Addr: buf, Len: 4, Flags: virtio.DescFNext, Next: 1},
			virtiotest.RawDesc{Addr: buf, Len: 4, Flags: virtio.DescFNext, Next: 0}), 0, virtio.ErrChainLoop},
		{"self loop", allFeatures, raw(
			virtiotest.RawDesc{Addr: buf, Len: 4, Flags: virtio.DescFNext, Next: 0}), 0, virtio.ErrChainLoop},
		{"next out of range", allFeatures, raw(
			virtiotest.RawDesc{Addr: buf, Len: 4, Flags: virtio.DescFNext, Next: size + 3}), 0, virtio.ErrDescIndex},
		{"head out of range", allFeatures, raw(), size + 1, virtio.ErrDescIndex},
		{"addr beyond RAM", allFeatures, raw(
			virtiotest.RawDesc{Addr: memSize - 2, Len: 4}), 0, virtio.ErrChainRange},
		{"addr wraps", allFeatures, raw(
			virtiotest.RawDesc{Addr: ^uint64(0) - 1, Len: 4}), 0, virtio.ErrChainRange},
		{"readable after writable", allFeatures, raw(
			virtiotest.RawDesc{Addr: buf, Len: 4, Flags: virtio.DescFNext | virtio.DescFWrite, Next: 1},
			virtiotest.RawDesc{Addr: buf, Len: 4}), 0, virtio.ErrChainOrder},
		{"zero descriptors", allFeatures, raw(
			virtiotest.RawDesc{Addr: buf, Len: 0, Flags: virtio.DescFNext, Next: 1},
			virtiotest.RawDesc{Addr: buf, Len: 0}), 0, virtio.ErrChainEmpty},
		{"total too big", allFeatures, raw(
			virtiotest.RawDesc{Addr: 0, Len: 0xffff_fff0, Flags: virtio.DescFNext, Next: 1},
			virtiotest.RawDesc{Addr: 0, Len: 0xffff_fff0}), 0, virtio.ErrChainTooBig},
		{"indirect not negotiated", virtio.FVersion1, indirect(virtiotest.RawDesc{Addr: buf, Len: 4}), 0, virtio.ErrIndirect},
		{"indirect zero length", allFeatures, raw(
			virtiotest.RawDesc{Addr: buf, Len: 0, Flags: virtio.DescFIndirect}), 0, virtio.ErrIndirect},
		{"indirect length not multiple of 16", allFeatures, raw(
			virtiotest.RawDesc{Addr: buf, Len: 24, Flags: virtio.DescFIndirect}), 0, virtio.ErrIndirect},
		{"indirect with next", allFeatures, raw(
			virtiotest.RawDesc{Addr: buf, Len: 16, Flags: virtio.DescFIndirect | virtio.DescFNext, Next: 1},
			virtiotest.RawDesc{Addr: buf, Len: 4}), 0, virtio.ErrIndirect},
		{"nested indirect", allFeatures, indirect(
			virtiotest.RawDesc{Addr: buf, Len: 16, Flags: virtio.DescFIndirect}), 0, virtio.ErrIndirect},
		{"indirect loop", allFeatures, indirect(
			virtiotest.RawDesc{Addr: buf, Len: 4, Flags: virtio.DescFNext, Next: 1},
			virtiotest.RawDesc{Addr: buf, Len: 4, Flags: virtio.DescFNext, Next: 0}), 0, virtio.ErrChainLoop},
		{"indirect next out of table", allFeatures, indirect(
			virtiotest.RawDesc{Addr: buf, Len: 4, Flags: virtio.DescFNext, Next: 5}), 0, virtio.ErrDescIndex},
		{"indirect table too long", allFeatures, indirect(many...), 0, virtio.ErrChainTooLong},
		{"indirect table beyond RAM", allFeatures, raw(
			virtiotest.RawDesc{Addr: memSize - 16, Len: 32, Flags: virtio.DescFIndirect}), 0, virtio.ErrChainRange},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mem := virtiotest.NewMemory(int(memSize))
			drv, err := virtiotest.NewDriver(mem, 0x1000, size, 64<<10)
			if err != nil {
				t.Fatal(err)
			}
			q, err := virtio.NewQueue(mem, drv.Cfg, tc.features)
			if err != nil {
				t.Fatal(err)
			}
			q.SetMaxChainBytes(1 << 31)
			head := tc.b(drv)
			if tc.head != 0 {
				head = tc.head
			}
			drv.Publish(head)
			var c virtio.Chain
			ok, err := q.Pop(&c)
			var ce *virtio.ChainError
			if !ok || !errors.As(err, &ce) || !errors.Is(err, tc.want) {
				t.Fatalf("Pop = %v, %v; want ChainError wrapping %v", ok, err, tc.want)
			}
			if head < size {
				u, ok := drv.Used()
				if !ce.Returned || !ok || u.ID != uint32(head) || u.Len != 0 {
					t.Fatalf("malformed chain not returned empty: returned=%v used=%+v %v", ce.Returned, u, ok)
				}
			} else if ce.Returned {
				t.Fatal("out-of-range head reported as returned")
			}
			// The queue keeps serving.
			good, _, err := drv.Post(virtiotest.Buf{Data: []byte("ok")})
			if err != nil {
				t.Fatal(err)
			}
			if ok, err := q.Pop(&c); !ok || err != nil || c.Head != good {
				t.Fatalf("queue did not recover: %v %v %+v", ok, err, c)
			}
		})
	}
}

func TestPrivatePageChain(t *testing.T) {
	mem, drv, q := setup(t, 8, allFeatures)
	priv := memory.GPA(0xf0000)
	mem.SetPrivate(priv, memory.PageSize, true)
	hits := mem.PrivateHits.Load()
	head, _, err := drv.Post(virtiotest.Buf{Data: []byte("hdr")}, virtiotest.Buf{Addr: priv + 100, Len: 8192, Write: true})
	if err != nil {
		t.Fatal(err)
	}
	var c virtio.Chain
	ok, err := q.Pop(&c)
	if !ok || err != nil || c.Head != head {
		t.Fatalf("Pop = %v %v", ok, err)
	}
	if !errors.Is(c.Err, memory.ErrPrivate) {
		t.Fatalf("chain Err = %v, want ErrPrivate", c.Err)
	}
	if mem.PrivateHits.Load() == hits {
		t.Fatal("private page not checked through the memory API")
	}
	// A buffer straddling into a private page is also caught.
	mem.SetPrivate(priv, memory.PageSize, false)
	mem.SetPrivate(priv+memory.PageSize, memory.PageSize, true)
	if _, _, err := drv.Post(virtiotest.Buf{Addr: priv + 4000, Len: 200, Write: true}); err != nil {
		t.Fatal(err)
	}
	if ok, err := q.Pop(&c); !ok || err != nil || !errors.Is(c.Err, memory.ErrPrivate) {
		t.Fatalf("straddling buffer: %v %v %v", ok, err, c.Err)
	}
}

func TestAvailIndexRunaway(t *testing.T) {
	_, drv, q := setup(t, 8, allFeatures)
	drv.SetAvailIdx(9)
	var c virtio.Chain
	if _, err := q.Pop(&c); !errors.Is(err, virtio.ErrQueueBroken) || !errors.Is(err, virtio.ErrAvailIndex) {
		t.Fatalf("Pop = %v, want ErrQueueBroken/ErrAvailIndex", err)
	}
	if !q.Broken() {
		t.Fatal("queue not marked broken")
	}
	if _, err := q.Pop(&c); !errors.Is(err, virtio.ErrQueueBroken) {
		t.Fatal("broken queue served again")
	}
}

func TestNotifySuppression(t *testing.T) {
	// Without event index: VIRTQ_AVAIL_F_NO_INTERRUPT and VIRTQ_USED_F_NO_NOTIFY.
	_, drv, q := setup(t, 8, virtio.FVersion1)
	if !q.ShouldNotify() {
		t.Fatal("should notify by default")
	}
	drv.SetNoInterrupt(true)
	if q.ShouldNotify() {
		t.Fatal("notified despite NO_INTERRUPT")
	}
	q.DisableNotify()
	if drv.UsedFlags()&virtio.UsedFNoNotify == 0 {
		t.Fatal("DisableNotify did not set NO_NOTIFY")
	}
	if q.EnableNotify() {
		t.Fatal("EnableNotify reported work on an empty ring")
	}
	if drv.UsedFlags() != 0 {
		t.Fatal("EnableNotify did not clear NO_NOTIFY")
	}
	if _, _, err := drv.Post(virtiotest.Buf{Data: []byte{1}}); err != nil {
		t.Fatal(err)
	}
	if !q.EnableNotify() {
		t.Fatal("EnableNotify missed pending work")
	}

	// With event index (§2.7.10).
	_, drv, q = setup(t, 8, allFeatures)
	var c virtio.Chain
	for i := range 4 {
		if _, _, err := drv.Post(virtiotest.Buf{Data: []byte{byte(i)}}); err != nil {
			t.Fatal(err)
		}
	}
	drv.SetUsedEvent(2) // driver wants an interrupt once used.idx passes 2
	var notes []bool
	for range 4 {
		if ok, err := q.Pop(&c); !ok || err != nil {
			t.Fatal(ok, err)
		}
		if err := q.PushUsed(c.Head, 0); err != nil {
			t.Fatal(err)
		}
		notes = append(notes, q.ShouldNotify())
	}
	// First call always notifies; then used 2 (no), 3 (crosses event 2: yes), 4 (no).
	if want := []bool{true, false, true, false}; !equalBools(notes, want) {
		t.Fatalf("notifications %v, want %v", notes, want)
	}
	if q.EnableNotify() {
		t.Fatal("EnableNotify reported work")
	}
	if drv.AvailEvent() != 4 {
		t.Fatalf("avail_event = %d, want 4", drv.AvailEvent())
	}
}

func equalBools(a, b []bool) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestNeedEventWrap(t *testing.T) {
	for _, tc := range []struct {
		event, newIdx, old uint16
		want               bool
	}{
		{0, 1, 0, true},
		{1, 1, 0, false},
		{0xffff, 0, 0xffff, true},
		{0xfffe, 1, 0xfffd, true},
		{5, 3, 1, false},
	} {
		if got := virtio.NeedEvent(tc.event, tc.newIdx, tc.old); got != tc.want {
			t.Errorf("needEvent(%d,%d,%d) = %v", tc.event, tc.newIdx, tc.old, got)
		}
	}
}

// TestConcurrentRing runs the fake driver and the device on two goroutines
// over one ring; with -race it checks that the index accesses are properly
// synchronised (the ring-index atomics) and that no element is lost,
// duplicated or read before it is published.
func TestConcurrentRing(t *testing.T) {
	const size = 16
	n := 20000
	if testing.Short() {
		n = 2000
	}
	mem, drv, q := setup(t, size, allFeatures)
	done := make(chan error, 1)
	stop := make(chan struct{})
	go func() { // device
		var c virtio.Chain
		var b [8]byte
		for served := 0; served < n; {
			select {
			case <-stop:
				done <- errors.New("device stopped early")
				return
			default:
			}
			ok, err := q.Pop(&c)
			if err != nil {
				done <- err
				return
			}
			if !ok {
				if !q.EnableNotify() {
					time.Sleep(time.Microsecond)
				}
				continue
			}
			if err := mem.DeviceRead(c.Readable[0].Addr, b[:]); err != nil {
				done <- err
				return
			}
			v := binary.LittleEndian.Uint64(b[:])
			binary.LittleEndian.PutUint64(b[:], v*3)
			if err := mem.DeviceWrite(c.Writable[0].Addr, b[:]); err != nil {
				done <- err
				return
			}
			if err := q.PushUsed(c.Head, 8); err != nil {
				done <- err
				return
			}
			q.ShouldNotify()
			served++
		}
		done <- nil
	}()
	deadline := time.Now().Add(60 * time.Second)
	sent, got := 0, 0
	inflight := map[uint32]uint64{}
	for got < n {
		if time.Now().After(deadline) {
			close(stop)
			t.Fatalf("timeout: sent %d got %d", sent, got)
		}
		for sent < n && drv.FreeDescs() >= 2 {
			var b [8]byte
			binary.LittleEndian.PutUint64(b[:], uint64(sent+1))
			head, addrs, err := drv.Post(virtiotest.Buf{Data: b[:]}, virtiotest.Buf{Len: 8, Write: true})
			if err != nil {
				t.Fatal(err)
			}
			inflight[uint32(head)] = uint64(sent+1)<<20 | uint64(addrs[1])
			sent++
			if drv.FreeDescs() < 2 {
				break
			}
		}
		e, ok := drv.Used()
		if !ok {
			continue
		}
		info, found := inflight[e.ID]
		if !found || e.Len != 8 {
			t.Fatalf("unexpected used %+v", e)
		}
		delete(inflight, e.ID)
		var b [8]byte
		if err := mem.Read(memory.GPA(info&(1<<20-1)), b[:]); err != nil {
			t.Fatal(err)
		}
		if v := binary.LittleEndian.Uint64(b[:]); v != (info>>20)*3 {
			t.Fatalf("entry %d: device wrote %d, want %d", e.ID, v, (info>>20)*3)
		}
		got++
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestIndexAtomicsFallback checks the path for a GuestMemory without atomics.
func TestIndexAtomicsFallback(t *testing.T) {
	mem := virtiotest.NewMemory(1 << 20)
	drv, err := virtiotest.NewDriver(mem, 0x1000, 8, 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	q, err := virtio.NewQueue(plainMem{mem}, drv.Cfg, allFeatures)
	if err != nil {
		t.Fatal(err)
	}
	head, _, _ := drv.Post(virtiotest.Buf{Data: []byte("x")})
	var c virtio.Chain
	if ok, err := q.Pop(&c); !ok || err != nil || c.Head != head {
		t.Fatal(ok, err)
	}
	if err := q.PushUsed(head, 1); err != nil {
		t.Fatal(err)
	}
	if u, ok := drv.Used(); !ok || u.ID != uint32(head) {
		t.Fatal("used not published")
	}
}

type plainMem struct{ m *virtiotest.Memory }

// checkMem offers copies and CheckShared, no AtomicMemory.
type checkMem struct{ m *virtiotest.Memory }

func (p checkMem) DeviceRead(g memory.GPA, b []byte) error  { return p.m.DeviceRead(g, b) }
func (p checkMem) DeviceWrite(g memory.GPA, b []byte) error { return p.m.DeviceWrite(g, b) }
func (p checkMem) CheckShared(g memory.GPA, n uint64) error { return p.m.CheckShared(g, n) }

// TestPrivateProbePaths checks the page-state probe through each memory
// flavour: CheckShared, and one-byte DeviceReads per page.
func TestPrivateProbePaths(t *testing.T) {
	for name, wrap := range map[string]func(*virtiotest.Memory) virtio.GuestMemory{
		"checkshared": func(m *virtiotest.Memory) virtio.GuestMemory { return checkMem{m} },
		"bytewise":    func(m *virtiotest.Memory) virtio.GuestMemory { return plainMem{m} },
	} {
		mem := virtiotest.NewMemory(1 << 20)
		drv, err := virtiotest.NewDriver(mem, 0x1000, 8, 64<<10)
		if err != nil {
			t.Fatal(err)
		}
		q, err := virtio.NewQueue(wrap(mem), drv.Cfg, allFeatures)
		if err != nil {
			t.Fatal(err)
		}
		mem.SetPrivate(0x82000, 4096, true)
		var c virtio.Chain
		for _, tc := range []struct {
			addr memory.GPA
			n    uint32
			want error
		}{
			{0x80000, 0x1000, nil},
			{0x81f00, 0x200, memory.ErrPrivate},  // straddles into the private page
			{0x80000, 0x5000, memory.ErrPrivate}, // covers it
			{0x83000, 0x1000, nil},
			{0xff000, 0x2000, virtio.ErrChainRange}, // runs off the end of RAM
		} {
			if _, _, err := drv.Post(virtiotest.Buf{Addr: tc.addr, Len: tc.n, Write: true}); err != nil {
				t.Fatal(err)
			}
			ok, err := q.Pop(&c)
			if !ok {
				t.Fatalf("%s: nothing popped", name)
			}
			got := err
			if got == nil {
				got = c.Err
			}
			if tc.want == nil && got != nil || tc.want != nil && !errors.Is(got, tc.want) {
				t.Errorf("%s: %v+%#x: %v, want %v", name, tc.addr, tc.n, got, tc.want)
			}
			if err == nil {
				_ = q.PushUsed(c.Head, 0)
			}
			for {
				if _, ok := drv.Used(); !ok {
					break
				}
			}
		}
	}
}

func (p plainMem) DeviceRead(g memory.GPA, b []byte) error  { return p.m.DeviceRead(g, b) }
func (p plainMem) DeviceWrite(g memory.GPA, b []byte) error { return p.m.DeviceWrite(g, b) }
