package pvmem

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"syscall"
	"testing"

	"github.com/vmmgo/vmm/memory"
)

const mib = 1 << 20

// testGuest: RAM at [0, 8M) and [12M, 16M) on memfd backings.
func testGuest(t testing.TB) *memory.Guest {
	t.Helper()
	var regions []memory.Region
	for _, r := range []struct{ gpa, size uint64 }{{0, 8 * mib}, {12 * mib, 4 * mib}} {
		b, err := memory.NewBackend(memory.KindMemfd, r.size, memory.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		regions = append(regions, memory.Region{GPA: memory.GPA(r.gpa), Size: r.size, Backend: b})
	}
	g, err := memory.NewGuest(regions...)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// guestConvert is the conversion entry point the tests pass: the Guest's
// routine itself (the VMM passes its counted one).
func guestConvert(g *memory.Guest) func(int, Transport, memory.ConvertRequest) (memory.ConvertResult, error) {
	return func(_ int, _ Transport, req memory.ConvertRequest) (memory.ConvertResult, error) {
		return g.Convert(req)
	}
}

func kernelCPL(int) (int, error) { return 0, nil }

func newDev(t testing.TB, g *memory.Guest, vcpus int) *Device {
	t.Helper()
	d, err := New(g, Config{VCPUs: vcpus, Convert: guestConvert(g), CPL: kernelCPL})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func rd(d *Device, vcpu int, reg uint64) uint32 {
	var b [4]byte
	d.BusRead(vcpu, reg, b[:])
	return binary.LittleEndian.Uint32(b[:])
}

func wr(d *Device, vcpu int, reg uint64, v uint32) {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], v)
	d.BusWrite(vcpu, reg, b[:])
}

func setReq(d *Device, vcpu int, gpa uint64, npages, attrs uint32) {
	wr(d, vcpu, RegGPALo, uint32(gpa))
	wr(d, vcpu, RegGPAHi, uint32(gpa>>32))
	wr(d, vcpu, RegNPages, npages)
	wr(d, vcpu, RegAttrs, attrs)
}

func private(t *testing.T, g *memory.Guest, gpa uint64) bool {
	t.Helper()
	p, err := g.IsPrivate(memory.GPA(gpa))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestIdentification(t *testing.T) {
	d := newDev(t, testGuest(t), 1)
	if v := rd(d, 0, RegMagic); v != Magic {
		t.Errorf("MAGIC = %#x", v)
	}
	var b [4]byte
	d.BusRead(0, RegMagic, b[:])
	if string(b[:]) != "PVMC" {
		t.Errorf("MAGIC bytes %q", b[:])
	}
	if rd(d, 0, RegVersion) != Version || rd(d, 0, RegFeatures) != FeatureRegisters|FeatureBatch|FeatureState || rd(d, 0, RegMaxBatch) != MaxBatch {
		t.Error("VERSION/FEATURES/MAX_BATCH wrong")
	}
	wr(d, 0, RegMagic, 0) // read-only: ignored
	if rd(d, 0, RegMagic) != Magic {
		t.Error("MAGIC writable")
	}
	zg := testGuest(t)
	z, _ := New(zg, Config{VCPUs: 1, ZeroOnConvert: true, Convert: guestConvert(zg), CPL: kernelCPL})
	if rd(z, 0, RegFeatures)&FeatureZero == 0 {
		t.Error("FeatureZero not advertised")
	}
	// Bad vCPU index and bad sizes: all ones, counted.
	if rd(d, 1, RegMagic) != 0xffffffff || rd(d, -1, RegMagic) != 0xffffffff {
		t.Error("unknown vCPU did not read all ones")
	}
	b8 := make([]byte, 8)
	d.BusRead(0, RegMagic, b8)
	if binary.LittleEndian.Uint64(b8) != ^uint64(0) {
		t.Error("8-byte read not all ones")
	}
	if s := d.Stats(); s.BadAccess != 3 {
		t.Errorf("BadAccess = %d", s.BadAccess)
	}
	// Offsets past the 16 registers (the 3 extra decoded ports).
	for off := uint64(NumPorts); off < DecodePorts; off++ {
		if rd(d, 0, off) != 0xffffffff {
			t.Errorf("read at base+%#x not all ones", off)
		}
		wr(d, 0, off, 0)
	}
	if s := d.Stats(); s.BadAccess != 3+2*(DecodePorts-NumPorts) {
		t.Errorf("BadAccess = %d", s.BadAccess)
	}
	g := testGuest(t)
	for _, tc := range []struct {
		name string
		mem  Memory
		cfg  Config
	}{
		{"no memory", nil, Config{VCPUs: 1, Convert: guestConvert(g), CPL: kernelCPL}},
		{"0 vCPUs", g, Config{Convert: guestConvert(g), CPL: kernelCPL}},
		{"no entry point", g, Config{VCPUs: 1, CPL: kernelCPL}},
		{"no CPL", g, Config{VCPUs: 1, Convert: guestConvert(g)}},
	} {
		if _, err := New(tc.mem, tc.cfg); err == nil {
			t.Errorf("New with %s succeeded", tc.name)
		}
	}
}

// TestStateRegister: STATE reads the VMM's view of the page at GPA.
func TestStateRegister(t *testing.T) {
	g := testGuest(t)
	d := newDev(t, g, 2)
	g.Convert(memory.ConvertRequest{GPA: 12*mib + 0x5000, NPages: 1, Attrs: memory.AttrPrivate})
	for _, tc := range []struct {
		gpa  uint64
		want uint32
	}{
		{0, StateShared},
		{12*mib + 0x5000, StatePrivate},
		{12*mib + 0x5fff, StatePrivate}, // any address in the page
		{12*mib + 0x6000, StateShared},
		{9 * mib, StateNotRAM},
		{1 << 40, StateNotRAM},
	} {
		wr(d, 1, RegGPALo, uint32(tc.gpa))
		wr(d, 1, RegGPAHi, uint32(tc.gpa>>32))
		if got := rd(d, 1, RegState); got != tc.want {
			t.Errorf("STATE at %#x = %#x, want %#x", tc.gpa, got, tc.want)
		}
	}
	if notRAM := uint32(StateNotRAM); int64(int32(notRAM)) != StatusOutOfRange {
		t.Errorf("STATE not-RAM %#x is not -ERANGE", notRAM)
	}
	wr(d, 1, RegState, 1) // read-only
	if rd(d, 1, RegState) != StateNotRAM || g.Stats().PrivatePages != 1 {
		t.Error("a STATE write did something")
	}
}

// TestCPLRule: conversions only from guest kernel mode. A doorbell rung at
// CPL3 (or from a vCPU whose CPL cannot be read) gets -EPERM in STATUS,
// reads or converts nothing, and leaves other registers alone.
func TestCPLRule(t *testing.T) {
	g := testGuest(t)
	cpl := map[int]int{0: 3, 1: 0}
	var cplErr error
	calls := 0
	d, err := New(g, Config{VCPUs: 2, Convert: guestConvert(g), CPL: func(v int) (int, error) {
		calls++
		return cpl[v], cplErr
	}})
	if err != nil {
		t.Fatal(err)
	}
	const list = 0x10000
	putList(t, g, list, []entry{{0x20000, 1, memory.AttrPrivate, 7}})
	setReq(d, 0, 0x30000, 1, uint32(memory.AttrPrivate))
	if calls != 0 {
		t.Errorf("CPL read %d times while only registers were written", calls)
	}
	if st := rd(d, 0, RegConvert); int64(int32(st)) != StatusNotKernel {
		t.Errorf("CONVERT read at CPL3: STATUS %d", int32(st))
	}
	wr(d, 0, RegConvert, 1)
	if st := rd(d, 0, RegStatus); int64(int32(st)) != StatusNotKernel {
		t.Errorf("CONVERT write at CPL3: STATUS %d", int32(st))
	}
	if st := runList(d, 0, list, 1); int64(st) != StatusNotKernel || rd(d, 0, RegListDone) != 0 {
		t.Errorf("LIST_CONVERT at CPL3: %d, done %d", st, rd(d, 0, RegListDone))
	}
	if got := statuses(t, g, list, 1); got[0] != 7 {
		t.Errorf("a refused list got its status written: %d", got[0])
	}
	if s := g.Stats(); s.PrivatePages != 0 || s.ToPrivate != 0 {
		t.Errorf("a CPL3 request converted something: %+v", s)
	}
	if rd(d, 0, RegGPALo) != 0x30000 || rd(d, 0, RegState) != StateShared {
		t.Error("registers and STATE still work at CPL3")
	}
	// The same requests from vCPU 1 at CPL0 succeed.
	setReq(d, 1, 0x30000, 1, uint32(memory.AttrPrivate))
	if st := rd(d, 1, RegConvert); st != 0 || !private(t, g, 0x30000) {
		t.Errorf("CPL0 convert: %d", int32(st))
	}
	if st := runList(d, 1, list, 1); st != 0 || !private(t, g, 0x20000) {
		t.Errorf("CPL0 list: %d", st)
	}
	// A CPL that cannot be read is refused too.
	cplErr = errors.New("KVM_GET_SREGS failed")
	setReq(d, 1, 0x40000, 1, uint32(memory.AttrPrivate))
	if st := rd(d, 1, RegConvert); int64(int32(st)) != StatusNotKernel || private(t, g, 0x40000) {
		t.Errorf("unreadable CPL: %d", int32(st))
	}
	if s := d.Stats(); s.NotKernel != 4 || s.Single != 1 || s.Batches != 1 {
		t.Errorf("device stats %+v", s)
	}
	// AllowUser (tests and benchmarks only) never asks.
	u, err := New(g, Config{VCPUs: 1, Convert: guestConvert(g), AllowUser: true, CPL: func(int) (int, error) {
		t.Error("CPL read with AllowUser")
		return 3, nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	setReq(u, 0, 0x50000, 1, uint32(memory.AttrPrivate))
	if st := rd(u, 0, RegConvert); st != 0 {
		t.Errorf("AllowUser convert: %d", int32(st))
	}
}

func TestRegisterConvert(t *testing.T) {
	g := testGuest(t)
	d := newDev(t, g, 2)
	setReq(d, 0, 12*mib+0x3000, 4, uint32(memory.AttrPrivate))
	if rd(d, 0, RegGPALo) != 12*mib+0x3000 || rd(d, 0, RegNPages) != 4 || rd(d, 0, RegAttrs) != 0x10 {
		t.Error("registers do not read back")
	}
	wr(d, 0, RegConvert, 1)
	if st := rd(d, 0, RegStatus); st != 0 {
		t.Fatalf("STATUS = %#x", st)
	}
	for p := uint64(0); p < 6; p++ {
		want := p >= 3 && p < 7
		if got := private(t, g, 12*mib+p*0x1000); got != want {
			t.Errorf("page %d private=%v", p, got)
		}
	}
	// Read-to-convert: one exit fewer.
	wr(d, 0, RegAttrs, 0)
	if st := rd(d, 0, RegConvert); st != 0 || private(t, g, 12*mib+0x3000) {
		t.Errorf("read CONVERT = %#x", st)
	}
	// Registers are per vCPU.
	setReq(d, 1, 0x5000, 1, uint32(memory.AttrPrivate))
	if rd(d, 0, RegGPALo) != 12*mib+0x3000 {
		t.Error("vCPU 1 wrote vCPU 0's GPA")
	}
	if st := rd(d, 1, RegConvert); st != 0 || !private(t, g, 0x5000) {
		t.Errorf("vCPU 1 convert: %#x", st)
	}
	// 1- and 2-byte accesses: zero-extended writes, low-byte reads.
	d.BusWrite(0, RegNPages, []byte{0x34, 0x12})
	if rd(d, 0, RegNPages) != 0x1234 {
		t.Errorf("16-bit write: %#x", rd(d, 0, RegNPages))
	}
	d.BusWrite(0, RegNPages, []byte{7})
	one := []byte{0}
	d.BusRead(0, RegNPages, one)
	if rd(d, 0, RegNPages) != 7 || one[0] != 7 {
		t.Error("8-bit access")
	}
	// 64-bit GPA through LO/HI.
	setReq(d, 0, 1<<40, 1, uint32(memory.AttrPrivate))
	if rd(d, 0, RegGPAHi) != 1<<8 || rd(d, 0, RegGPALo) != 0 {
		t.Error("GPA_HI")
	}
}

func TestRegisterErrors(t *testing.T) {
	g := testGuest(t)
	d := newDev(t, g, 1)
	for _, tc := range []struct {
		gpa    uint64
		npages uint32
		attrs  uint32
		want   int64
	}{
		{0x1001, 1, 0x10, StatusInvalid},
		{0, 0, 0x10, StatusInvalid},
		{0, 1, 0x30, StatusInvalid},
		{0, 1, 0x13, StatusInvalid},
		{9 * mib, 1, 0x10, StatusOutOfRange},
		{8*mib - 0x1000, 2, 0x10, StatusOutOfRange},
		{1 << 40, 1, 0x10, StatusOutOfRange},
		{^uint64(0) &^ 0xfff, 2, 0x10, StatusInvalid},
	} {
		setReq(d, 0, tc.gpa, tc.npages, tc.attrs)
		if st := rd(d, 0, RegConvert); st != uint32(tc.want) {
			t.Errorf("gpa %#x npages %d attrs %#x: STATUS %#x (%d), want %d", tc.gpa, tc.npages, tc.attrs, st, int32(st), tc.want)
		}
	}
	if s := g.Stats(); s.PrivatePages != 0 || s.Refused != 8 {
		t.Errorf("guest stats %+v", s)
	}
	setReq(d, 0, 0, 1, 0x10)
	wr(d, 0, RegConvert, 2)
	if st := rd(d, 0, RegStatus); st != uint32(0xffffffea) || private(t, g, 0) {
		t.Errorf("CONVERT=2: STATUS %#x", st)
	}
	if s := d.Stats(); s.Failed != 9 || s.Single != 8 {
		t.Errorf("device stats %+v", s)
	}
}

func TestStatusMapping(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want int64
	}{
		{nil, 0},
		{fmt.Errorf("x: %w", memory.ErrInvalid), -22},
		{fmt.Errorf("x: %w", memory.ErrOutOfRange), -34},
		{fmt.Errorf("sink: %w", syscall.EAGAIN), -16},
		{errors.New("boom"), -5},
	} {
		if got := Status(tc.err); got != tc.want {
			t.Errorf("Status(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
	// A failing attribute sink reaches the guest as BUSY.
	g := testGuest(t)
	g.SetAttributeSink(func(gpa, size uint64, private bool) error {
		return fmt.Errorf("KVM_SET_MEMORY_ATTRIBUTES: %w", syscall.EAGAIN)
	})
	d := newDev(t, g, 1)
	setReq(d, 0, 0, 1, 0x10)
	if st := rd(d, 0, RegConvert); int32(st) != -16 {
		t.Errorf("sink EAGAIN: STATUS %d", int32(st))
	}
}

type entry struct{ gpa, npages, attrs, status uint64 }

func putList(t *testing.T, g *memory.Guest, at uint64, es []entry) {
	t.Helper()
	b := make([]byte, len(es)*EntrySize)
	for i, e := range es {
		binary.LittleEndian.PutUint64(b[i*32:], e.gpa)
		binary.LittleEndian.PutUint64(b[i*32+8:], e.npages)
		binary.LittleEndian.PutUint64(b[i*32+16:], e.attrs)
		binary.LittleEndian.PutUint64(b[i*32+24:], e.status)
	}
	if err := g.Write(memory.GPA(at), b); err != nil {
		t.Fatal(err)
	}
}

func statuses(t *testing.T, g *memory.Guest, at uint64, n int) []int64 {
	t.Helper()
	b := make([]byte, n*EntrySize)
	if err := g.Read(memory.GPA(at), b); err != nil {
		t.Fatal(err)
	}
	out := make([]int64, n)
	for i := range out {
		out[i] = int64(binary.LittleEndian.Uint64(b[i*32+24:]))
	}
	return out
}

func runList(d *Device, vcpu int, at uint64, n uint32) int32 {
	wr(d, vcpu, RegListLo, uint32(at))
	wr(d, vcpu, RegListHi, uint32(at>>32))
	wr(d, vcpu, RegListCount, n)
	return int32(rd(d, vcpu, RegListConvert))
}

func TestBatch(t *testing.T) {
	g := testGuest(t)
	d := newDev(t, g, 1)
	const list = 0x100000 - 64 // straddles two pages
	sentinel := uint64(0xdead)
	putList(t, g, list, []entry{
		{0x200000, 512, memory.AttrPrivate | memory.AttrPageSize2M, sentinel},
		{12 * mib, 1, memory.AttrPrivate, sentinel},
		{0x200000, 1, 0, sentinel},
	})
	if st := runList(d, 0, list, 3); st != 0 || rd(d, 0, RegListDone) != 3 || rd(d, 0, RegStatus) != 0 {
		t.Fatalf("list status %d done %d", st, rd(d, 0, RegListDone))
	}
	if got := statuses(t, g, list, 3); fmt.Sprint(got) != "[0 0 0]" {
		t.Errorf("entry statuses %v", got)
	}
	if n, _ := g.PrivatePagesIn(0, 8*mib); n != 511 || !private(t, g, 12*mib) || private(t, g, 0x200000) {
		t.Errorf("state after list: %d private in low RAM", n)
	}
	// Written by the guest, ignored on input (a stale status).
	// A failing entry stops the list; later entries are not processed.
	putList(t, g, list, []entry{
		{0x500000, 1, memory.AttrPrivate, sentinel},
		{9 * mib, 1, memory.AttrPrivate, sentinel},
		{0x501000, 1, memory.AttrPrivate, sentinel},
	})
	if st := runList(d, 0, list, 3); int64(st) != StatusOutOfRange || rd(d, 0, RegListDone) != 1 {
		t.Errorf("failing list: status %d done %d", st, rd(d, 0, RegListDone))
	}
	if got := statuses(t, g, list, 3); fmt.Sprint(got) != fmt.Sprint([]int64{0, StatusOutOfRange, StatusNotProcessed}) {
		t.Errorf("entry statuses %v", got)
	}
	if !private(t, g, 0x500000) || private(t, g, 0x501000) {
		t.Error("entries around the failure")
	}
	// Count checks.
	if st := runList(d, 0, list, 0); int64(st) != StatusInvalid {
		t.Errorf("count 0: %d", st)
	}
	if st := runList(d, 0, list, MaxBatch+1); int64(st) != StatusListTooBig {
		t.Errorf("count %d: %d", MaxBatch+1, st)
	}
	// The list outside RAM, in a hole, wrapping.
	for _, at := range []uint64{9 * mib, 8*mib - 32, 1 << 50, ^uint64(0) - 31} {
		if st := runList(d, 0, at, 2); int64(st) != StatusListFault {
			t.Errorf("list at %#x: %d", at, st)
		}
	}
	if s := g.Stats(); s.PrivatePages != 511+1+1 {
		t.Errorf("refused lists converted something: %+v", s)
	}
}

func TestBatchListPrivate(t *testing.T) {
	g := testGuest(t)
	d := newDev(t, g, 1)
	const list = 0x10000
	putList(t, g, list, []entry{{0x20000, 1, memory.AttrPrivate, 7}})
	g.Convert(memory.ConvertRequest{GPA: list + 0x1000 - 0x1000, NPages: 1, Attrs: memory.AttrPrivate})
	if st := runList(d, 0, list, 1); int64(st) != StatusListPrivate || private(t, g, 0x20000) {
		t.Errorf("list in a private page: status %d", st)
	}
	// A list whose first entry makes the list's own page private: the
	// conversions happen, the status write-back is refused and reported,
	// and the private page is not written.
	g.Convert(memory.ConvertRequest{GPA: list, NPages: 1})
	putList(t, g, list, []entry{{list, 1, memory.AttrPrivate, 7}, {0x30000, 1, memory.AttrPrivate, 7}})
	if st := runList(d, 0, list, 2); int64(st) != StatusListPrivate || rd(d, 0, RegListDone) != 2 {
		t.Errorf("self-privatising list: status %d done %d", st, rd(d, 0, RegListDone))
	}
	if got := statuses(t, g, list, 2); fmt.Sprint(got) != "[7 7]" {
		t.Errorf("statuses written into a private page: %v", got)
	}
	if !private(t, g, list) || !private(t, g, 0x30000) {
		t.Error("conversions lost")
	}
}

// vCPUs convert concurrently through the device (run with -race).
func TestConcurrentVCPUs(t *testing.T) {
	g := testGuest(t)
	const vcpus = 4
	d := newDev(t, g, vcpus)
	var wg sync.WaitGroup
	for v := 0; v < vcpus; v++ {
		wg.Add(1)
		go func(v int) {
			defer wg.Done()
			list := uint64(0x700000 + v*0x1000)
			for i := 0; i < 500; i++ {
				gpa := uint64(v*0x100000 + (i%64)*0x1000)
				setReq(d, v, gpa, 1, uint32(memory.AttrPrivate))
				if st := rd(d, v, RegConvert); st != 0 {
					t.Errorf("vcpu %d: %d", v, int32(st))
					return
				}
				b := make([]byte, 32)
				binary.LittleEndian.PutUint64(b, gpa)
				binary.LittleEndian.PutUint64(b[8:], 1)
				if err := g.Write(memory.GPA(list), b); err != nil {
					t.Error(err)
					return
				}
				if st := runList(d, v, list, 1); st != 0 {
					t.Errorf("vcpu %d list: %d", v, st)
					return
				}
			}
		}(v)
	}
	wg.Wait()
	if s := d.Stats(); s.Single != vcpus*500 || s.Batches != vcpus*500 || s.Failed != 0 {
		t.Errorf("stats %+v", s)
	}
	if s := g.Stats(); s.PrivatePages != 0 {
		t.Errorf("%d pages left private", s.PrivatePages)
	}
}

// FuzzBatch feeds arbitrary list bytes, counts and list addresses, with
// part of RAM private, and checks the device never panics and reports
// consistently.
func FuzzBatch(f *testing.F) {
	seed := make([]byte, 64)
	binary.LittleEndian.PutUint64(seed, 0x3000)
	binary.LittleEndian.PutUint64(seed[8:], 1)
	binary.LittleEndian.PutUint64(seed[16:], 0x10)
	f.Add(seed, uint32(2), uint64(0x10000))
	f.Add(seed, uint32(300), uint64(0x10000))
	f.Add(seed, uint32(1), uint64(0x7f000))
	f.Add([]byte{}, uint32(0), uint64(9*mib))
	g := testGuest(f)
	g.Convert(memory.ConvertRequest{GPA: 0x7f000, NPages: 1, Attrs: memory.AttrPrivate})
	d := newDev(f, g, 1)
	f.Fuzz(func(t *testing.T, data []byte, count uint32, at uint64) {
		if len(data) > MaxBatch*EntrySize {
			data = data[:MaxBatch*EntrySize]
		}
		g.Write(memory.GPA(at), data) // may fail: the list may be anywhere
		st := runList(d, 0, at, count)
		done := rd(d, 0, RegListDone)
		if done > count || done > MaxBatch {
			t.Fatalf("done %d of %d", done, count)
		}
		switch int64(st) {
		case StatusOK:
			if done != count {
				t.Fatalf("OK with %d of %d done", done, count)
			}
		case StatusInvalid, StatusOutOfRange, StatusListFault, StatusListPrivate, StatusListTooBig, StatusBusy, StatusIO:
		default:
			t.Fatalf("unexpected status %d", st)
		}
		if uint32(st) != rd(d, 0, RegStatus) {
			t.Fatal("STATUS register disagrees")
		}
		// Keep the fixed private page private, everything else shared.
		g.Convert(memory.ConvertRequest{GPA: 0, NPages: 8 * mib / 0x1000})
		g.Convert(memory.ConvertRequest{GPA: 12 * mib, NPages: 4 * mib / 0x1000})
		g.Convert(memory.ConvertRequest{GPA: 0x7f000, NPages: 1, Attrs: memory.AttrPrivate})
	})
}
