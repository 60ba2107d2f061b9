package gdbstub

import (
	"bytes"
	"encoding/binary"
	"encoding/xml"
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"
)

func feedAll(p *parser, s string) []item {
	var out []item
	for i := 0; i < len(s); i++ {
		if it, ok := p.feed(s[i]); ok {
			out = append(out, it)
		}
	}
	return out
}

func TestParser(t *testing.T) {
	big := strings.Repeat("a", maxPacket+1)
	bigSum := checksum([]byte(big))
	for _, tc := range []struct {
		in   string
		want []item
	}{
		{"$g#67", []item{{kind: itemPacket, payload: []byte("g")}}},
		{"$g#68", []item{{kind: itemBadPacket}}},
		{"$g#6G", []item{{kind: itemBadPacket}}},
		{"$qC#B4", []item{{kind: itemPacket, payload: []byte("qC")}}}, // upper-case digits are fine
		{"+-\x03junk", []item{{kind: itemAck}, {kind: itemNak}, {kind: itemInterrupt}}},
		{"$m1,\x03#", nil}, // 0x03 inside a packet is data; incomplete
		{"$abc$g#67", []item{{kind: itemPacket, payload: []byte("g")}}},
		{"$#00", []item{{kind: itemPacket, payload: []byte{}}}},
		{"$" + big + "#" + strconv.FormatUint(uint64(bigSum)|0x100, 16)[1:], []item{{kind: itemBadPacket}}},
	} {
		var p parser
		got := feedAll(&p, tc.in)
		if len(got) != len(tc.want) {
			t.Errorf("%.20q: got %d items %v, want %v", tc.in, len(got), got, tc.want)
			continue
		}
		for i := range got {
			if got[i].kind != tc.want[i].kind || !bytes.Equal(got[i].payload, tc.want[i].payload) {
				t.Errorf("%.20q: item %d = %v, want %v", tc.in, i, got[i], tc.want[i])
			}
		}
		if cap(p.buf) > maxPacket+1 {
			t.Errorf("%.20q: buffer grew to %d", tc.in, cap(p.buf))
		}
	}
}

func TestFrameAndEscape(t *testing.T) {
	if got := string(frame([]byte("OK"))); got != "$OK#9a" {
		t.Fatalf("frame: %q", got)
	}
	raw := []byte{0, '#', '$', '}', '*', 0x03, 0xff, 'a'}
	esc := escape(nil, raw)
	if bytes.ContainsAny(esc, "#$*") || !bytes.HasPrefix(esc, []byte{0, '}', '#' ^ 0x20}) {
		t.Fatalf("escape: %q", esc)
	}
	back, err := unescape(esc)
	if err != nil || !bytes.Equal(back, raw) {
		t.Fatalf("unescape: %q %v", back, err)
	}
	if _, err := unescape([]byte("ab}")); !errors.Is(err, errBadEscape) {
		t.Fatalf("trailing escape: %v", err)
	}
}

func TestParseAddress(t *testing.T) {
	for _, tc := range []struct {
		in, network, addr string
		ok                bool
	}{
		{"tcp:127.0.0.1:1234", "tcp", "127.0.0.1:1234", true},
		{"tcp::1234", "tcp", ":1234", true},
		{"tcp:[::1]:0", "tcp", "[::1]:0", true},
		{"unix:/tmp/gdb.sock", "unix", "/tmp/gdb.sock", true},
		{"tcp:localhost", "", "", false},
		{"tcp:host:port", "", "", false},
		{"tcp:host:65536", "", "", false},
		{"unix:", "", "", false},
		{"udp:1.2.3.4:5", "", "", false},
		{"1234", "", "", false},
		{"", "", "", false},
	} {
		n, a, err := ParseAddress(tc.in)
		if (err == nil) != tc.ok || n != tc.network || a != tc.addr {
			t.Errorf("ParseAddress(%q) = %q, %q, %v", tc.in, n, a, err)
		}
	}
}

func TestEncodeDR7(t *testing.T) {
	var slots [4]HWSlot
	slots[0] = HWSlot{Enabled: true, Addr: 0x1000, Len: 1, Kind: HWExec}
	slots[1] = HWSlot{Enabled: true, Addr: 0x2004, Len: 4, Kind: HWWrite}
	slots[3] = HWSlot{Enabled: true, Addr: 0x3008, Len: 8, Kind: HWAccess}
	dr7, err := EncodeDR7(slots)
	if err != nil {
		t.Fatal(err)
	}
	// G0 (bit 1); G1 (bit 3), R/W1=01 (bits 21:20), LEN1=11 (bits 23:22);
	// G3 (bit 7), R/W3=11 (bits 29:28), LEN3=10 (bits 31:30).
	want := uint64(1<<1 | 1<<3 | 0b01<<20 | 0b11<<22 | 1<<7 | 0b11<<28 | 0b10<<30)
	if dr7 != want {
		t.Fatalf("DR7 %#x, want %#x", dr7, want)
	}
	d, err := NewDebugRegs(slots)
	if err != nil || d.DR != [4]uint64{0x1000, 0x2004, 0, 0x3008} || d.DR7 != want || !d.Enabled() {
		t.Fatalf("NewDebugRegs: %+v %v", d, err)
	}
	if (DebugRegs{}).Enabled() {
		t.Fatal("zero DebugRegs enabled")
	}
	for _, bad := range []HWSlot{
		{Enabled: true, Addr: 0x1000, Len: 2, Kind: HWExec},
		{Enabled: true, Addr: 0x1002, Len: 4, Kind: HWWrite},
		{Enabled: true, Addr: 0x1000, Len: 3, Kind: HWWrite},
		{Enabled: true, Addr: 0x1000, Len: 1, Kind: HWKind(9)},
	} {
		if _, err := EncodeDR7([4]HWSlot{2: bad}); !errors.Is(err, ErrBadSlot) {
			t.Errorf("%+v: %v", bad, err)
		}
	}
	// A read watchpoint uses R/W=11 since x86 has no read-only breakpoint.
	dr7, _ = EncodeDR7([4]HWSlot{{Enabled: true, Addr: 0x10, Len: 2, Kind: HWRead}})
	if dr7 != 1<<1|0b11<<16|0b01<<18 {
		t.Fatalf("read watch DR7 %#x", dr7)
	}
}

func TestSplitRange(t *testing.T) {
	for _, tc := range []struct {
		addr, n uint64
		want    [][2]uint64
	}{
		{0x1000, 8, [][2]uint64{{0x1000, 8}}},
		{0x1000, 16, [][2]uint64{{0x1000, 8}, {0x1008, 8}}},
		{0x1001, 7, [][2]uint64{{0x1001, 1}, {0x1002, 2}, {0x1004, 4}}},
		{0x1003, 3, [][2]uint64{{0x1003, 1}, {0x1004, 2}}},
		{0x1006, 4, [][2]uint64{{0x1006, 2}, {0x1008, 2}}},
	} {
		got, err := splitRange(tc.addr, tc.n)
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("split(%#x, %d) = %v %v, want %v", tc.addr, tc.n, got, err, tc.want)
		}
	}
	for _, n := range []uint64{0, maxWatchLen + 1, 1 << 63} {
		if _, err := splitRange(0, n); err == nil {
			t.Errorf("split length %d: no error", n)
		}
	}
}

func TestDebugStopEvent(t *testing.T) {
	var slots [4]HWSlot
	slots[0] = HWSlot{Enabled: true, Addr: 0x1000, Len: 1, Kind: HWExec, Report: 0x1000}
	slots[1] = HWSlot{Enabled: true, Addr: 0x2000, Len: 8, Kind: HWWrite, Report: 0x1ffe}
	d, err := NewDebugRegs(slots)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		exc  uint32
		dr6  uint64
		want StopEvent
	}{
		{3, 0, StopEvent{VCPU: 2, Reason: ReasonSWBreak}},
		{1, 1 << 0, StopEvent{VCPU: 2, Reason: ReasonHWBreak}},
		{1, 1<<1 | DR6BS, StopEvent{VCPU: 2, Reason: ReasonWatch, Addr: 0x1ffe, WatchKind: HWWrite}},
		{1, DR6BS, StopEvent{VCPU: 2, Reason: ReasonStep}},
		{1, 1 << 2, StopEvent{VCPU: 2, Reason: ReasonSignal, Signal: SIGTRAP}}, // disabled slot
	} {
		if got := d.StopEvent(2, tc.exc, tc.dr6); got != tc.want {
			t.Errorf("exc %d dr6 %#x: %+v, want %+v", tc.exc, tc.dr6, got, tc.want)
		}
	}
}

func TestRegisterLayout(t *testing.T) {
	// GDB's amd64 numbering: these positions are what GDB's own
	// 64bit-core.xml / 64bit-sse.xml / 64bit-segments.xml produce.
	for n, name := range map[int]string{0: "rax", 1: "rbx", 6: "rbp", 7: "rsp", 15: "r15", 16: "rip", 17: "eflags",
		18: "cs", 23: "gs", 24: "st0", 31: "st7", 32: "fctrl", 39: "fop", 40: "xmm0", 55: "xmm15", 56: "mxcsr",
		57: "fs_base", 58: "gs_base", 59: "k_gs_base", 60: "cr0", 65: "efer"} {
		if regTable[n].name != name {
			t.Errorf("register %d is %s, want %s", n, regTable[n].name, name)
		}
	}
	if regsSize != 16*8+8+4+6*4+8*10+8*4+16*16+4+9*8 {
		t.Errorf("g block is %d bytes", regsSize)
	}
	// Every field is distinct: setting register n changes only its bytes.
	for n := range regTable {
		var r Registers
		size := regTable[n].bits / 8
		if err := setReg(&r, n, bytes.Repeat([]byte{0xa5}, size)); err != nil {
			t.Fatal(err)
		}
		b := marshalRegs(&r)
		off := 0
		for m := 0; m < n; m++ {
			off += regTable[m].bits / 8
		}
		if bytes.Count(b, []byte{0xa5}) != size || !bytes.Equal(b[off:off+size], bytes.Repeat([]byte{0xa5}, size)) {
			t.Errorf("register %s does not own bytes %d..%d", regTable[n].name, off, off+size)
		}
	}
	r := Registers{RAX: 0x1122334455667788, RIP: 0xffffffff81000000, EFLAGS: 0x246, EFER: 0xd01, MXCSR: 0x1f80}
	r.ST[3][9] = 0x40
	r.XMM[15][0] = 0x77
	b := marshalRegs(&r)
	if binary.LittleEndian.Uint64(b) != r.RAX {
		t.Fatal("rax not little-endian first")
	}
	var back Registers
	if err := unmarshalRegs(&back, b); err != nil || back != r {
		t.Fatalf("round trip: %v", err)
	}
	if err := unmarshalRegs(&back, b[:9]); err == nil {
		t.Fatal("partial register accepted")
	}
	back = Registers{}
	if err := unmarshalRegs(&back, b[:8]); err != nil || back.RAX != r.RAX || back.RIP != 0 {
		t.Fatalf("prefix: %v", err)
	}
	if err := unmarshalRegs(&back, append(b, 0)); err == nil {
		t.Fatal("long block accepted")
	}
}

func TestTargetXML(t *testing.T) {
	var doc struct {
		Arch     string `xml:"architecture"`
		Features []struct {
			Name string `xml:"name,attr"`
			Regs []struct {
				Name   string `xml:"name,attr"`
				Bits   int    `xml:"bitsize,attr"`
				Regnum int    `xml:"regnum,attr"`
			} `xml:"reg"`
		} `xml:"feature"`
	}
	if err := xml.Unmarshal([]byte(targetXML), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Arch != "i386:x86-64" {
		t.Fatalf("architecture %q", doc.Arch)
	}
	next, bits := 0, 0
	names := map[string]bool{}
	for _, f := range doc.Features {
		names[f.Name] = true
		for _, r := range f.Regs {
			if r.Regnum != next || r.Name != regTable[next].name {
				t.Fatalf("register %s has number %d, want %d (%s)", r.Name, r.Regnum, next, regTable[next].name)
			}
			next++
			bits += r.Bits
		}
	}
	if next != len(regTable) || bits != regsSize*8 {
		t.Fatalf("%d registers, %d bits", next, bits)
	}
	for _, f := range []string{"org.gnu.gdb.i386.core", "org.gnu.gdb.i386.sse", "org.gnu.gdb.i386.segments"} {
		if !names[f] {
			t.Errorf("missing feature %s", f)
		}
	}
}

func TestTagWord(t *testing.T) {
	// All empty.
	if AbridgedTagWord(0xffff) != 0 || FullTagWord(0, 0, [8][10]byte{}) != 0xffff {
		t.Fatal("empty tag words")
	}
	var st [8][10]byte
	// TOP=7 (fsw bits 13:11): ST0 is physical R7, ST1 is R0.
	fsw := uint16(7 << 11)
	binary.LittleEndian.PutUint64(st[0][:8], 1<<63) // ST0 = 1.0: valid
	binary.LittleEndian.PutUint16(st[0][8:], 0x3fff)
	// ST1 all zero: zero class.
	full := FullTagWord(1<<7|1<<0, fsw, st)
	// R7 valid (00), R0 zero (01), the rest empty (11).
	want := uint16(0xffff)
	want &^= 3 << 14 // R7 = 00
	want &^= 3 << 0
	want |= 1 << 0 // R0 = 01
	if full != want {
		t.Fatalf("full tag %#04x, want %#04x", full, want)
	}
	if AbridgedTagWord(full) != 1<<7|1<<0 {
		t.Fatalf("abridged %#x", AbridgedTagWord(full))
	}
}

func TestSWBreakpoints(t *testing.T) {
	mem := []byte("0123456789")
	read := func(a uint64, p []byte) error {
		if a+uint64(len(p)) > uint64(len(mem)) {
			return errors.New("out of range")
		}
		copy(p, mem[a:])
		return nil
	}
	write := func(a uint64, p []byte) error {
		if a+uint64(len(p)) > uint64(len(mem)) {
			return errors.New("out of range")
		}
		copy(mem[a:], p)
		return nil
	}
	var b SWBreakpoints
	if err := b.Insert(3, read, write); err != nil {
		t.Fatal(err)
	}
	if err := b.Insert(3, read, write); err != nil || mem[3] != Int3 || !b.Has(3) || b.Has(4) {
		t.Fatalf("insert: %q %v", mem, err)
	}
	if err := b.Insert(20, read, write); err == nil || b.Has(20) {
		t.Fatal("insert out of range")
	}
	got := slices.Clone(mem)
	b.Shadow(0, got)
	if string(got) != "0123456789" {
		t.Fatalf("shadow: %q", got)
	}
	got = slices.Clone(mem[4:])
	b.Shadow(4, got)
	if string(got) != "456789" {
		t.Fatalf("shadow past: %q", got)
	}
	in := []byte("abc")
	out := b.Patch(2, in)
	if string(in) != "abc" || string(out) != "a\xccc" {
		t.Fatalf("patch: in %q out %q", in, out)
	}
	if err := write(2, out); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(b.Addrs(), []uint64{3}) {
		t.Fatalf("addrs %v", b.Addrs())
	}
	if err := b.Remove(3, write); err != nil || string(mem) != "01abc56789" || b.Has(3) {
		t.Fatalf("remove: %q %v", mem, err)
	}
	if err := b.Remove(3, write); err != nil {
		t.Fatal(err)
	}
}
