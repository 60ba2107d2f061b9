package firmware

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"
	"testing"

	"github.com/vmmgo/vmm/memory"
)

func TestDefaultE820(t *testing.T) {
	for _, tc := range []struct {
		ram  uint64
		want []E820Entry
	}{
		{64 << 20, []E820Entry{
			{0, 0x9FC00, E820RAM}, {0x9FC00, 0x400, E820Reserved}, {0xE0000, 0x20000, E820Reserved},
			{0x100000, 64<<20 - 0x100000, E820RAM}}},
		{5 << 30, []E820Entry{
			{0, 0x9FC00, E820RAM}, {0x9FC00, 0x400, E820Reserved}, {0xE0000, 0x20000, E820Reserved},
			{0x100000, 0xC0000000 - 0x100000, E820RAM}, {1 << 32, 5<<30 - 0xC0000000, E820RAM}}},
	} {
		m, err := DefaultE820(tc.ram)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(m) != fmt.Sprint(tc.want) {
			t.Errorf("DefaultE820(%#x) = %v, want %v", tc.ram, m, tc.want)
		}
		if err := CheckE820(m); err != nil {
			t.Error(err)
		}
		var total uint64
		for _, e := range m {
			if e.Type == E820RAM {
				total += e.Size
			}
		}
		if total != tc.ram-0x100000+0x9FC00 {
			t.Errorf("usable RAM %#x for %#x of RAM", total, tc.ram)
		}
	}
	if _, err := DefaultE820(1 << 20); err == nil {
		t.Error("1 MiB of RAM accepted")
	}
}

func TestCheckE820(t *testing.T) {
	for _, tc := range []struct {
		m   []E820Entry
		err string
	}{
		{nil, "empty"},
		{[]E820Entry{{0x1000, 0, E820RAM}}, "size 0"},
		{[]E820Entry{{0, 0x2000, E820RAM}, {0x1000, 0x1000, E820RAM}}, "overlaps"},
		{[]E820Entry{{0x5000, 0x1000, E820RAM}, {0, 0x1000, E820RAM}}, "precedes"},
		{[]E820Entry{{^uint64(0) - 5, 0x1000, E820RAM}}, "wraps"},
	} {
		if err := CheckE820(tc.m); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("CheckE820(%v) = %v, want %q", tc.m, err, tc.err)
		}
	}
	s := SortE820([]E820Entry{{0x5000, 0x1000, E820RAM}, {0, 0x1000, E820Reserved}})
	if s[0].Addr != 0 || CheckE820(s) != nil {
		t.Errorf("SortE820 = %v", s)
	}
}

func TestCmdline(t *testing.T) {
	c, err := ParseCmdline(`console=ttyS0 root=/dev/vda  quiet foo="a b c" console=hvc0 -- init arg`)
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := c.Get("console"); v != "hvc0" {
		t.Errorf("console = %q (last one wins)", v)
	}
	if v, _ := c.Get("foo"); v != "a b c" {
		t.Errorf("foo = %q", v)
	}
	if _, ok := c.Get("quiet"); !ok {
		t.Error("quiet missing")
	}
	if fmt.Sprint(c.Init) != "[init arg]" {
		t.Errorf("init args %v", c.Init)
	}
	c.Set("console", "ttyS1")
	c.Add("virtio_mmio.device", "4K@0xd0000000:5")
	want := `root=/dev/vda quiet foo="a b c" console=ttyS1 virtio_mmio.device=4K@0xd0000000:5 -- init arg`
	if got := c.String(); got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if _, err := ParseCmdline(`foo="unterminated`); err == nil {
		t.Error("unterminated quote accepted")
	}
	if err := CheckCmdline("a\x00b", 10); err == nil {
		t.Error("NUL accepted")
	}
	if err := CheckCmdline(strings.Repeat("x", 256), CmdlineSizeOld); err == nil || !strings.Contains(err.Error(), "255") {
		t.Errorf("old limit: %v", err)
	}
}

func TestGDT(t *testing.T) {
	mem := newFakeMem(0x1000)
	limit, err := BuildGDT(mem, DefaultGDTAddr, GDT64)
	if err != nil {
		t.Fatal(err)
	}
	if limit != 31 || DefaultGDTAddr+memory.GPA(limit)+1 > DefaultIDTAddr {
		t.Errorf("limit %d overlaps the IDT", limit)
	}
	for i, want := range GDT64 {
		if got := binary.LittleEndian.Uint64(mem.b[int(DefaultGDTAddr)+8*i:]); got != want {
			t.Errorf("GDT[%d] = %#x, want %#x", i, got, want)
		}
	}
	cs := SegmentFromDescriptor(GDTCode64, SelectorCode64)
	if cs.L != 1 || cs.DB != 0 || cs.DPL != 0 || cs.Type != 0xb || cs.Present != 1 || cs.S != 1 || cs.G != 1 || cs.Limit != 0xffffffff || cs.Base != 0 {
		t.Errorf("code64 = %+v", cs)
	}
	ds := SegmentFromDescriptor(GDTData, SelectorData)
	if ds.L != 0 || ds.DB != 1 || ds.Type != 3 {
		t.Errorf("data = %+v", ds)
	}
	cs32 := SegmentFromDescriptor(GDTPVH[SelectorCode32/8], SelectorCode32)
	if cs32.L != 0 || cs32.DB != 1 || cs32.Type != 0xb {
		t.Errorf("PVH code32 = %+v", cs32)
	}
	uc := SegmentFromDescriptor(GDT64User[SelectorUserCode/8], SelectorUserCode)
	ud := SegmentFromDescriptor(GDT64User[SelectorUserData/8], SelectorUserData)
	if uc.DPL != 3 || uc.L != 1 || ud.DPL != 3 || ud.Type != 3 {
		t.Errorf("user segments %+v %+v", uc, ud)
	}
	tss := SegmentFromDescriptor(GDTTSS, SelectorTSS)
	if tss.Type != 0xb || tss.S != 0 || tss.Limit != 0x67 || tss.Present != 1 {
		t.Errorf("TSS = %+v", tss)
	}
	if l, err := WriteIDT(mem, DefaultIDTAddr, 32); err != nil || l != 511 {
		t.Errorf("IDT limit %d, %v", l, err)
	}
	if _, err := BuildGDT(newFakeMem(0x100), 0x500, GDT64); err == nil {
		t.Error("GDT outside memory accepted")
	}
}

func TestIdentityPageTables(t *testing.T) {
	for _, user := range []bool{false, true} {
		mem := newFakeMem(0x20000)
		end, err := BuildIdentityPageTables(mem, DefaultPML4Addr, 4<<30, user)
		if err != nil {
			t.Fatal(err)
		}
		if end != 0xF000 {
			t.Errorf("tables end at %v, want 0xf000", end)
		}
		for _, va := range []uint64{0, 0x7000, 0x100200, 0x1234567, 3<<30 + 5, 0xFEE00000, 4<<30 - 1} {
			pa, err := Translate(mem, DefaultPML4Addr, va)
			if err != nil || uint64(pa) != va {
				t.Errorf("translate %#x = %v, %v", va, pa, err)
			}
		}
		if _, err := Translate(mem, DefaultPML4Addr, 4<<30); err == nil {
			t.Error("4 GiB mapped by a 4 GiB identity map")
		}
		// Every level carries U/S exactly when asked.
		for _, a := range []int{0x9000, 0xA000, 0xB000, 0xB000 + 8*511, 0xE000 + 8*511} {
			e := binary.LittleEndian.Uint64(mem.b[a:])
			if (e&PTEUser != 0) != user || e&(PTEPresent|PTEWritable) != PTEPresent|PTEWritable {
				t.Errorf("user=%v: entry at %#x = %#x", user, a, e)
			}
		}
	}
	if _, err := BuildIdentityPageTables(newFakeMem(0x20000), 0x9001, 1<<30, false); err == nil {
		t.Error("unaligned PML4 accepted")
	}
	if _, err := BuildIdentityPageTables(newFakeMem(0x20000), 0x9000, 1<<40, false); err == nil {
		t.Error("1 TiB accepted")
	}
	// 1 GiB needs a single PD.
	end, _ := BuildIdentityPageTables(newFakeMem(0x20000), 0x9000, 1, false)
	if end != 0xC000 {
		t.Errorf("1-byte map ends at %v", end)
	}
}

func TestAMLEncoding(t *testing.T) {
	for _, tc := range []struct {
		name      string
		got, want []byte
	}{
		// Reference bytes as iasl emits them.
		{"_S5", AMLName(`\_S5`, AMLPackage(AMLInt(5), AMLInt(5), AMLInt(0), AMLInt(0))),
			[]byte{0x08, '\\', '_', 'S', '5', '_', 0x12, 0x08, 0x04, 0x0A, 0x05, 0x0A, 0x05, 0x00, 0x00}},
		{"PNP0501", AMLEisaID("PNP0501"), []byte{0x0C, 0x41, 0xD0, 0x05, 0x01}},
		{"PNP0A03", AMLEisaID("PNP0A03"), []byte{0x0C, 0x41, 0xD0, 0x0A, 0x03}},
		{"dual name", amlNameString(`\_SB.PCI0`), []byte{'\\', 0x2E, '_', 'S', 'B', '_', 'P', 'C', 'I', '0'}},
		{"ints", append(append(AMLInt(0x1234), AMLInt(0x12345678)...), AMLInt(1<<40)...),
			[]byte{0x0B, 0x34, 0x12, 0x0C, 0x78, 0x56, 0x34, 0x12, 0x0E, 0, 0, 0, 0, 0, 1, 0, 0}},
		{"pkglen 62", amlPkgLength(62), []byte{0x3F}},
		{"pkglen 63", amlPkgLength(63), []byte{0x41, 0x04}},
		{"pkglen 5000", amlPkgLength(5000), []byte{0x8B, 0x38, 0x01}}, // 5003 = 0x138B, two extra bytes
		{"io", ResIO(0x3F8, 8), []byte{0x47, 0x01, 0xF8, 0x03, 0xF8, 0x03, 0x01, 0x08}},
		{"irq4", ResIRQ(4), []byte{0x22, 0x10, 0x00}},
	} {
		if !bytes.Equal(tc.got, tc.want) {
			t.Errorf("%s: % x, want % x", tc.name, tc.got, tc.want)
		}
	}
}

// walkAML checks that a term list is well formed for the subset the encoder
// emits: every PkgLength must end exactly where its parent ends.
func walkAML(b []byte) error {
	pkg := func(b []byte) (int, int, error) { // (total length, bytes of the encoding)
		if len(b) == 0 {
			return 0, 0, fmt.Errorf("missing PkgLength")
		}
		n := int(b[0] >> 6)
		if len(b) < 1+n {
			return 0, 0, fmt.Errorf("truncated PkgLength")
		}
		if n == 0 {
			return int(b[0] & 0x3f), 1, nil
		}
		v := int(b[0] & 0xf)
		for i := 0; i < n; i++ {
			v |= int(b[1+i]) << (4 + 8*i)
		}
		return v, 1 + n, nil
	}
	name := func(b []byte) int {
		i := 0
		for i < len(b) && (b[i] == '\\' || b[i] == '^') {
			i++
		}
		switch {
		case i < len(b) && b[i] == 0x2E:
			return i + 9
		case i < len(b) && b[i] == 0x2F:
			return i + 2 + 4*int(b[i+1])
		}
		return i + 4
	}
	var term func(b []byte) (int, error)
	block := func(b []byte, op int, inner func([]byte) error) (int, error) {
		l, n, err := pkg(b[op:])
		if err != nil {
			return 0, err
		}
		if op+l > len(b) {
			return 0, fmt.Errorf("package of %d bytes overruns its parent (%d left)", l, len(b)-op)
		}
		return op + l, inner(b[op+n : op+l])
	}
	terms := func(b []byte) error {
		for len(b) > 0 {
			n, err := term(b)
			if err != nil {
				return err
			}
			b = b[n:]
		}
		return nil
	}
	term = func(b []byte) (int, error) {
		switch b[0] {
		case 0x00, 0x01, 0xFF:
			return 1, nil
		case 0x0A:
			return 2, nil
		case 0x0B:
			return 3, nil
		case 0x0C:
			return 5, nil
		case 0x0E:
			return 9, nil
		case 0x0D:
			i := bytes.IndexByte(b, 0)
			if i < 0 {
				return 0, fmt.Errorf("unterminated string")
			}
			return i + 1, nil
		case 0x08:
			n := 1 + name(b[1:])
			m, err := term(b[n:])
			return n + m, err
		case 0x10:
			return block(b, 1, func(body []byte) error { return terms(body[name(body):]) })
		case 0x12:
			return block(b, 1, func(body []byte) error { return terms(body[1:]) })
		case 0x11:
			return block(b, 1, func(body []byte) error {
				n, err := term(body)
				if err != nil {
					return err
				}
				if body[n-1] != byte(len(body)-n) && len(body)-n <= 0xff {
					return fmt.Errorf("buffer size %d, %d bytes follow", body[n-1], len(body)-n)
				}
				return nil
			})
		case 0x5B:
			if len(b) > 1 && b[1] == 0x82 {
				return block(b, 2, func(body []byte) error { return terms(body[name(body):]) })
			}
		}
		return 0, fmt.Errorf("unexpected AML opcode %#x", b[0])
	}
	return terms(b)
}

func TestWriteACPI(t *testing.T) {
	mem := newFakeMem(1 << 20)
	cfg := ACPIConfig{NCPUs: 4, Serial: []SerialPort{{COM1Port, COM1IRQ}}, PCI: true, ECAM: true, I8042: true, PVPanicPort: 0x505, PCIIRQ: 10}
	rsdp, err := WriteACPI(mem, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if rsdp != DefaultRSDPAddr {
		t.Errorf("RSDP at %v", rsdp)
	}
	tabs, err := ReadACPITables(mem, rsdp)
	if err != nil {
		t.Fatal(err)
	}
	for _, sig := range []string{"RSDP", "XSDT", "RSDT", "FACP", "FACS", "DSDT", "APIC", "MCFG"} {
		if _, ok := tabs[sig]; !ok {
			t.Errorf("table %s missing", sig)
		}
	}
	le := binary.LittleEndian
	f := tabs["FACP"]
	if len(f) != fadtSize || f[8] != 6 || f[131] != 5 {
		t.Errorf("FADT length %d revision %d.%d", len(f), f[8], f[131])
	}
	if le.Uint16(f[46:]) != 9 || le.Uint32(f[56:]) != 0x600 || le.Uint32(f[64:]) != 0x604 || f[88] != 4 || f[89] != 2 {
		t.Errorf("FADT PM fields: sci %d evt %#x cnt %#x", le.Uint16(f[46:]), le.Uint32(f[56:]), le.Uint32(f[64:]))
	}
	if le.Uint32(f[112:])&fadtResetRegSup == 0 || f[116] != 1 || le.Uint64(f[120:]) != 0xCF9 || f[128] != 6 {
		t.Errorf("FADT reset register")
	}
	if f[172] != 1 || le.Uint64(f[176:]) != 0x604 || f[173] != 16 {
		t.Errorf("X_PM1a_CNT_BLK % x", f[172:184])
	}
	if le.Uint16(f[109:])&iapc8042 == 0 {
		t.Error("8042 flag")
	}
	// MADT: entries walk exactly to the end.
	m := tabs["APIC"]
	if le.Uint32(m[36:]) != uint32(DefaultLAPICAddr) {
		t.Error("LAPIC address")
	}
	var lapics, isos int
	var ioapicID byte = 0xff
	for p := 44; p < len(m); {
		typ, n := m[p], int(m[p+1])
		if n < 2 || p+n > len(m) {
			t.Fatalf("MADT entry at %d: length %d", p, n)
		}
		switch typ {
		case madtLAPIC:
			if int(m[p+3]) != lapics || le.Uint32(m[p+4:]) != 1 {
				t.Errorf("LAPIC entry %d: % x", lapics, m[p:p+n])
			}
			lapics++
		case madtIOAPIC:
			ioapicID = m[p+2]
			if le.Uint32(m[p+4:]) != uint32(DefaultIOAPICAddr) || le.Uint32(m[p+8:]) != 0 {
				t.Errorf("IOAPIC % x", m[p:p+n])
			}
		case madtISO:
			src, gsi, flags := m[p+3], le.Uint32(m[p+4:]), le.Uint16(m[p+8:])
			if !(src == 0 && gsi == 2 && flags == 0) && !(src == 9 && gsi == 9 && flags == 0xD) {
				t.Errorf("ISO %d -> %d flags %#x", src, gsi, flags)
			}
			isos++
		}
		p += n
	}
	if lapics != 4 || ioapicID != 4 || isos != 2 {
		t.Errorf("MADT: %d LAPICs, IOAPIC id %d, %d overrides", lapics, ioapicID, isos)
	}
	mc := tabs["MCFG"]
	if len(mc) != 60 || le.Uint64(mc[44:]) != uint64(ECAMBase) || mc[54] != 0 || mc[55] != 0 {
		t.Errorf("MCFG % x", mc)
	}
	d := tabs["DSDT"]
	if err := walkAML(d[sdtHeaderSize:]); err != nil {
		t.Errorf("DSDT AML: %v", err)
	}
	for _, want := range [][]byte{
		{0x08, '\\', '_', 'S', '5', '_', 0x12, 0x08, 0x04, 0x0A, 0x05, 0x0A, 0x05, 0x00, 0x00},
		[]byte("COM1"), {0x0C, 0x41, 0xD0, 0x05, 0x01}, ResIO(0x3F8, 8), ResIRQ(4),
		[]byte("PCI0"), ResMemory32Fixed(uint32(ECAMBase), ECAMSize),
		[]byte("_PRT"),
		// slot 31 pin D -> GSI 10: Package(4){0x1fffff, 3, 0, 10}; PkgLength counts itself
		{0x12, 0x0c, 0x04, 0x0c, 0xff, 0xff, 0x1f, 0x00, 0x0a, 0x03, 0x00, 0x0a, 0x0a},
		[]byte("PEVT"), append([]byte{0x0D}, "QEMU0001\x00"...), ResIO(0x505, 1),
	} {
		if !bytes.Contains(d, want) {
			t.Errorf("DSDT lacks % x", want)
		}
	}
	if string(tabs["FACS"][:4]) != "FACS" || (le.Uint64(f[132:]))%64 != 0 {
		t.Error("FACS")
	}
	// Corrupting a byte must break a checksum.
	mem.b[int(rsdp)+rsdpSize+facsSize+50] ^= 1
	if _, err := ReadACPITables(mem, rsdp); err == nil {
		t.Error("corrupted tables pass the checksum")
	}
}

func TestWriteACPIErrors(t *testing.T) {
	if _, err := WriteACPI(newFakeMem(1<<20), ACPIConfig{NCPUs: 0}); err == nil {
		t.Error("0 CPUs accepted")
	}
	if _, err := WriteACPI(newFakeMem(1<<20), ACPIConfig{NCPUs: 2, Addr: 0xE0008}); err == nil {
		t.Error("unaligned RSDP accepted")
	}
	_, err := WriteACPI(newFakeMem(1<<20), ACPIConfig{NCPUs: 200, Addr: 0xFFC00})
	if err == nil || !strings.Contains(err.Error(), "beyond the limit") {
		t.Errorf("overflowing area: %v", err)
	}
	// Minimal machine: no serial, no PCI: \_S5 alone.
	mem := newFakeMem(1 << 20)
	rsdp, err := WriteACPI(mem, ACPIConfig{NCPUs: 1})
	if err != nil {
		t.Fatal(err)
	}
	tabs, err := ReadACPITables(mem, rsdp)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := tabs["MCFG"]; ok {
		t.Error("MCFG without ECAM")
	}
	if err := walkAML(tabs["DSDT"][sdtHeaderSize:]); err != nil {
		t.Error(err)
	}
}

func TestMPTable(t *testing.T) {
	for _, n := range []int{1, 3, 64} {
		mem := newFakeMem(1 << 20)
		end, err := WriteMPTable(mem, DefaultMPTableAddr, n)
		if err != nil {
			t.Fatal(err)
		}
		f := mem.b[DefaultMPTableAddr : DefaultMPTableAddr+16]
		if string(f[:4]) != "_MP_" || acpiChecksum(f) != 0 || f[9] != 4 {
			t.Fatalf("floating pointer % x", f)
		}
		le := binary.LittleEndian
		ct := le.Uint32(f[4:])
		tl := int(le.Uint16(mem.b[ct+4:]))
		tab := mem.b[ct : int(ct)+tl]
		if string(tab[:4]) != "PCMP" || acpiChecksum(tab) != 0 || uint64(ct)+uint64(tl) != uint64(end) {
			t.Fatalf("config table sig %q checksum %d end %v", tab[:4], acpiChecksum(tab), end)
		}
		count := int(le.Uint16(tab[34:]))
		cpus, seen := 0, 0
		for p := mpHeaderSize; p < len(tab); seen++ {
			switch tab[p] {
			case mpEntryCPU:
				if int(tab[p+1]) != cpus || (tab[p+3]&mpCPUBSP != 0) != (cpus == 0) || tab[p+3]&mpCPUEnabled == 0 {
					t.Errorf("CPU entry % x", tab[p:p+20])
				}
				cpus++
				p += 20
			default:
				p += 8
			}
		}
		if cpus != n || seen != count {
			t.Errorf("n=%d: %d CPU entries, %d entries seen, header says %d", n, cpus, seen, count)
		}
	}
	if _, err := WriteMPTable(newFakeMem(1<<20), 0xF0001, 1); err == nil {
		t.Error("unaligned address accepted")
	}
}

func TestSparseMem(t *testing.T) {
	m := newSparseMem(1 << 20)
	if err := m.Write(sparseChunk-3, []byte("abcdefgh")); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 10)
	if err := m.Read(sparseChunk-4, b); err != nil || string(b) != "\x00abcdefgh\x00" {
		t.Fatalf("%q %v", b, err)
	}
	if err := m.Write(1<<20-2, []byte("abc")); err == nil {
		t.Fatal("write past the end accepted")
	}
}
