package firmware

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmmgo/vmm/memory"
)

func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(fixtureDir, name))
	if err != nil {
		t.Fatalf("fixture: %v", err)
	}
	return b
}

func mustE820(t testing.TB, size uint64) []E820Entry {
	t.Helper()
	m, err := DefaultE820(size)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestParseBzImageFixtures(t *testing.T) {
	for _, tc := range []struct {
		file, err string
	}{
		{"bzImage-gzip.bin", ""},
		{"bzImage-bad-magic.bin", "header magic"},
		{"bzImage-old-protocol.bin", "boot protocol 2.04 too old"},
		{"bzImage-truncated.bin", "setup_sects 3 puts the protected-mode kernel at 2048, beyond file size 768"},
	} {
		t.Run(tc.file, func(t *testing.T) {
			bz, err := ParseBzImage(readFixture(t, tc.file))
			if tc.err == "" {
				if err != nil {
					t.Fatal(err)
				}
				if bz.Header.Version != 0x020F || !bz.Header.Relocatable || bz.Header.InitSize != 0x400000 {
					t.Errorf("header = %+v", bz.Header)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.err)
			}
		})
	}
}

func TestParseBzImageMutations(t *testing.T) {
	good := readFixture(t, "bzImage-gzip.bin")
	le := binary.LittleEndian
	for _, tc := range []struct {
		name   string
		mutate func(b []byte) []byte
		err    string
	}{
		{"too short", func(b []byte) []byte { return b[:0x100] }, "too short for a setup header"},
		{"no 64-bit entry", func(b []byte) []byte { le.PutUint16(b[offXLoadflags:], 0); return b }, "XLF_KERNEL_64"},
		{"not loaded high", func(b []byte) []byte { b[offLoadflags] = 0; return b }, "LOADED_HIGH"},
		{"alignment", func(b []byte) []byte { le.PutUint32(b[offKernelAlign:], 0x300000); return b }, "not a power of two"},
		{"cmdline_size 0", func(b []byte) []byte { le.PutUint32(b[offCmdlineSize:], 0); return b }, "cmdline_size is 0"},
		{"payload beyond", func(b []byte) []byte { le.PutUint32(b[offPayloadLength:], 1<<30); return b }, "payload"},
		{"short header", func(b []byte) []byte { b[offJump+1] = 0x20; return b }, "before init_size"},
		{"setup_sects", func(b []byte) []byte { b[offSetupSects] = 200; return b }, "setup_sects 200"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseBzImage(tc.mutate(append([]byte(nil), good...)))
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("err = %v, want %q", err, tc.err)
			}
		})
	}
}

func TestLoadBzImage(t *testing.T) {
	const ram = 64 << 20
	mem := newFakeMem(ram)
	img := readFixture(t, "bzImage-gzip.bin")
	initrd := bytes.Repeat([]byte("initrd!!"), 1<<17) // 1 MiB
	e820 := mustE820(t, ram)
	cmdline := "console=ttyS0 reboot=k panic=-1"
	bi, err := Load(mem, img, initrd, Config{Cmdline: cmdline, E820: e820, RSDPAddr: 0xE0000})
	if err != nil {
		t.Fatal(err)
	}
	if bi.Protocol != ProtocolLinux64 || bi.Format != "bzImage" {
		t.Errorf("protocol %v format %q", bi.Protocol, bi.Format)
	}
	if bi.Entry != 0x100200 || bi.ParamAddr != uint64(DefaultBootParamsAddr) {
		t.Errorf("entry %#x param %#x", bi.Entry, bi.ParamAddr)
	}
	// Relocatable, aligned to 2 MiB, at least pref_address 16 MiB: the
	// kernel occupies up to 16 MiB + init_size 4 MiB.
	if bi.KernelEnd != 0x1400000 {
		t.Errorf("KernelEnd %#x, want 0x1400000", bi.KernelEnd)
	}
	want := uint64(ram - len(initrd))
	if bi.InitrdAddr != want || bi.InitrdSize != uint64(len(initrd)) {
		t.Errorf("initrd at %#x size %#x, want %#x", bi.InitrdAddr, bi.InitrdSize, want)
	}
	bz, _ := ParseBzImage(img)
	if !bytes.Equal(mem.b[0x100000:0x100000+len(bz.Kernel)], bz.Kernel) {
		t.Error("protected-mode kernel not at 0x100000")
	}
	if !bytes.Equal(mem.b[want:want+uint64(len(initrd))], initrd) {
		t.Error("initrd bytes differ")
	}
	if got := string(mem.b[0x20000 : 0x20000+len(cmdline)+1]); got != cmdline+"\x00" {
		t.Errorf("cmdline in memory %q", got)
	}
	bp, err := DecodeBootParams(mem.b[0x7000 : 0x7000+4096])
	if err != nil {
		t.Fatal(err)
	}
	if bp.TypeOfLoader != 0xFF || bp.Loadflags&(LoadflagLoadedHigh|LoadflagCanUseHeap) != LoadflagLoadedHigh|LoadflagCanUseHeap {
		t.Errorf("type_of_loader %#x loadflags %#x", bp.TypeOfLoader, bp.Loadflags)
	}
	if bp.Version != 0x020F || bp.BootFlag != 0xAA55 || bp.CmdlineSize != 2047 {
		t.Errorf("setup header not copied: %+v", bp)
	}
	if bp.CmdLinePtr != 0x20000 || bp.RamdiskImage != want || bp.RamdiskSize != uint64(len(initrd)) || bp.ACPIRSDPAddr != 0xE0000 {
		t.Errorf("boot_params = %+v", bp)
	}
	if len(bp.E820) != len(e820) {
		t.Fatalf("e820 %v", bp.E820)
	}
	for i := range e820 {
		if bp.E820[i] != e820[i] {
			t.Errorf("e820[%d] = %+v, want %+v", i, bp.E820[i], e820[i])
		}
	}
	if err := CheckE820(bp.E820); err != nil {
		t.Errorf("e820 read back: %v", err)
	}
}

func TestLoadBzImageLimits(t *testing.T) {
	img := readFixture(t, "bzImage-gzip.bin")
	const ram = 64 << 20
	e820 := mustE820(t, ram)
	t.Run("cmdline too long", func(t *testing.T) {
		_, err := Load(newFakeMem(ram), img, nil, Config{Cmdline: strings.Repeat("x", 2048), E820: e820})
		if err == nil || !strings.Contains(err.Error(), "limit of 2047 bytes") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("cmdline at limit", func(t *testing.T) {
		if _, err := Load(newFakeMem(ram), img, nil, Config{Cmdline: strings.Repeat("x", 2047), E820: e820}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("initrd too big", func(t *testing.T) {
		_, err := Load(newFakeMem(ram), img, make([]byte, 45<<20), Config{E820: e820})
		if err == nil || !strings.Contains(err.Error(), "does not fit") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("initrd_addr_max", func(t *testing.T) {
		low := append([]byte(nil), img...)
		binary.LittleEndian.PutUint32(low[offInitrdAddrMax:], 0x1FFFFFF)
		bi, err := Load(newFakeMem(ram), low, make([]byte, 3<<20+5), Config{E820: e820})
		if err != nil {
			t.Fatal(err)
		}
		if end := bi.InitrdAddr + bi.InitrdSize; end > 0x2000000 || bi.InitrdAddr%4096 != 0 || bi.InitrdAddr < bi.KernelEnd {
			t.Errorf("initrd [%#x, %#x) violates initrd_addr_max 0x1FFFFFF or alignment", bi.InitrdAddr, end)
		}
		if bi.InitrdAddr != alignDown(0x2000000-(3<<20+5), 4096) {
			t.Errorf("initrd at %#x, not as high as allowed", bi.InitrdAddr)
		}
	})
	t.Run("RAM too small for init_size", func(t *testing.T) {
		_, err := Load(newFakeMem(16<<20), img, nil, Config{E820: mustE820(t, 16<<20)})
		if err == nil || !strings.Contains(err.Error(), "init_size") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("non-relocatable loads at pref_address", func(t *testing.T) {
		nr := append([]byte(nil), img...)
		nr[offRelocatable] = 0
		bi, err := Load(newFakeMem(ram), nr, nil, Config{E820: e820})
		if err != nil {
			t.Fatal(err)
		}
		if bi.KernelStart != 0x1000000 || bi.Entry != 0x1000200 {
			t.Errorf("start %#x entry %#x", bi.KernelStart, bi.Entry)
		}
	})
}

func TestNotAKernel(t *testing.T) {
	_, err := Load(newFakeMem(1<<20), []byte("hello, I am not a kernel"), nil, Config{E820: mustE820(t, 4<<20)})
	if err == nil || !strings.Contains(err.Error(), "not a kernel: no HdrS magic and no ELF magic") {
		t.Fatalf("err = %v", err)
	}
	if _, err := Load(newFakeMem(1<<20), testVmlinux(), nil, Config{}); err == nil || !strings.Contains(err.Error(), "e820") {
		t.Fatalf("missing e820: err = %v", err)
	}
}

func TestLoadELFPVH(t *testing.T) {
	const ram = 64 << 20
	mem := newFakeMem(ram)
	for i := range mem.b[testELFPAddr : testELFPAddr+0x3000] {
		mem.b[testELFPAddr+i] = 0xAA // bss must be cleared
	}
	img := readFixture(t, "vmlinux-pvh.elf")
	e820 := mustE820(t, ram)
	initrd := []byte("0707010000") // any bytes
	bi, err := Load(mem, img, initrd, Config{Cmdline: "console=hvc0", E820: e820, RSDPAddr: 0xE0000})
	if err != nil {
		t.Fatal(err)
	}
	if bi.Protocol != ProtocolPVH || bi.Entry != testPVHEntry || bi.ParamAddr != 0x6000 {
		t.Fatalf("bootinfo %+v", bi)
	}
	text := img[0x1000:]
	if !bytes.Equal(mem.b[testELFPAddr:testELFPAddr+len(text)], text) {
		t.Error("segment not loaded at its physical address")
	}
	for i, b := range mem.b[testELFPAddr+len(text) : testELFPAddr+len(text)+0x2000] {
		if b != 0 {
			t.Fatalf("bss byte %d = %#x", i, b)
		}
	}
	si, err := ReadStartInfo(mem, 0x6000)
	if err != nil {
		t.Fatal(err)
	}
	if si.Magic != PVHStartInfoMagic || si.Version != 1 || si.CmdlinePaddr != 0x20000 || si.RSDPPaddr != 0xE0000 {
		t.Errorf("start_info %+v", si)
	}
	if si.NrModules != 1 {
		t.Fatalf("nr_modules %d", si.NrModules)
	}
	le := binary.LittleEndian
	mod := mem.b[si.ModlistPaddr:]
	if le.Uint64(mod) != bi.InitrdAddr || le.Uint64(mod[8:]) != uint64(len(initrd)) {
		t.Errorf("modlist %#x %#x, initrd at %#x", le.Uint64(mod), le.Uint64(mod[8:]), bi.InitrdAddr)
	}
	if !bytes.Equal(mem.b[bi.InitrdAddr:bi.InitrdAddr+uint64(len(initrd))], initrd) {
		t.Error("initrd not in memory")
	}
	if int(si.MemmapEntries) != len(e820) {
		t.Fatalf("memmap entries %d", si.MemmapEntries)
	}
	for i, e := range e820 {
		m := mem.b[si.MemmapPaddr+uint64(i)*24:]
		if le.Uint64(m) != e.Addr || le.Uint64(m[8:]) != e.Size || le.Uint32(m[16:]) != uint32(e.Type) {
			t.Errorf("memmap[%d] differs from %+v", i, e)
		}
	}
	if string(mem.b[0x20000:0x2000d]) != "console=hvc0\x00" {
		t.Error("cmdline")
	}
}

func TestLoadELFLinux64(t *testing.T) {
	const ram = 64 << 20
	for _, tc := range []struct {
		file  string
		noPVH bool
	}{{"vmlinux-nopvh.elf", false}, {"vmlinux-pvh.elf", true}} {
		t.Run(tc.file, func(t *testing.T) {
			mem := newFakeMem(ram)
			e820 := mustE820(t, ram)
			bi, err := Load(mem, readFixture(t, tc.file), nil, Config{Cmdline: "quiet", E820: e820, NoPVH: tc.noPVH})
			if err != nil {
				t.Fatal(err)
			}
			if bi.Protocol != ProtocolLinux64 || bi.Entry != testELFEntry || bi.ParamAddr != 0x7000 {
				t.Fatalf("bootinfo %+v", bi)
			}
			bp, err := DecodeBootParams(mem.b[0x7000:0x8000])
			if err != nil {
				t.Fatal(err)
			}
			if bp.BootFlag != 0xAA55 || bp.Version < 0x0206 || bp.TypeOfLoader != 0xFF || bp.CmdLinePtr != 0x20000 || len(bp.E820) != len(e820) {
				t.Errorf("boot_params %+v", bp)
			}
			if binary.LittleEndian.Uint32(mem.b[0x7000+offHeaderMagic:]) != hdrMagic {
				t.Error("no HdrS in synthesized header")
			}
		})
	}
}

func TestParseELFMalformed(t *testing.T) {
	good := readFixture(t, "vmlinux-pvh.elf")
	le := binary.LittleEndian
	ph := elfHdrSize
	for _, tc := range []struct {
		name   string
		mutate func(b []byte) []byte
		err    string
	}{
		{"short", func(b []byte) []byte { return b[:40] }, "shorter than"},
		{"32-bit", func(b []byte) []byte { b[4] = 1; return b }, "class 1"},
		{"big endian", func(b []byte) []byte { b[5] = 2; return b }, "little-endian"},
		{"arm64", func(b []byte) []byte { le.PutUint16(b[18:], 183); return b }, "EM_X86_64"},
		{"phdrs beyond", func(b []byte) []byte { le.PutUint64(b[32:], 1<<40); return b }, "program headers"},
		{"no phdrs", func(b []byte) []byte { le.PutUint16(b[56:], 0); return b }, "no program headers"},
		{"segment beyond", func(b []byte) []byte { le.PutUint64(b[ph+32:], 1<<20); le.PutUint64(b[ph+40:], 1<<20); return b }, "beyond file size"},
		{"filesz > memsz", func(b []byte) []byte { le.PutUint64(b[ph+40:], 1); return b }, "larger than p_memsz"},
		{"wraps", func(b []byte) []byte { le.PutUint64(b[ph+24:], ^uint64(0)-4); return b }, "wraps"},
		{"note desc size", func(b []byte) []byte { le.PutUint32(b[elfHdrSize+2*elfPhdrSize+4:], 3); return b }, "want 4 or 8"},
		{"note beyond", func(b []byte) []byte { le.PutUint32(b[elfHdrSize+2*elfPhdrSize:], 1000); return b }, "beyond the segment"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseELF(tc.mutate(append([]byte(nil), good...)))
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("err = %v, want %q", err, tc.err)
			}
		})
	}
	t.Run("segment below 1 MiB", func(t *testing.T) {
		b := append([]byte(nil), good...)
		le.PutUint64(b[ph+24:], 0x7000)
		_, err := Load(newFakeMem(64<<20), b, nil, Config{E820: mustE820(t, 64<<20)})
		if err == nil || !strings.Contains(err.Error(), "below") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("segment in the MMIO hole", func(t *testing.T) {
		b := append([]byte(nil), good...)
		le.PutUint64(b[ph+24:], 0xC0000000)
		_, err := Load(newFakeMem(64<<20), b, nil, Config{E820: mustE820(t, 64<<20)})
		if err == nil || !strings.Contains(err.Error(), "not in usable RAM") {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestVirtualEntry(t *testing.T) {
	b := readFixture(t, "vmlinux-nopvh.elf")
	binary.LittleEndian.PutUint64(b[24:], 0xffffffff81000010)
	e, err := ParseELF(b)
	if err != nil {
		t.Fatal(err)
	}
	if p, err := e.physEntry(); err != nil || p != testELFPAddr+0x10 {
		t.Fatalf("physEntry = %#x, %v", p, err)
	}
	binary.LittleEndian.PutUint64(b[24:], 0x5000)
	e, _ = ParseELF(b)
	if _, err := e.physEntry(); err == nil {
		t.Fatal("entry outside every segment accepted")
	}
}

// TestRealKernels parses and extracts real kernels when the machine has
// some: /boot/vmlinuz-*, the project's kernel cache (<user cache>/vmm/
// kernel-*/bzImage, scripts/guest-kernel), and $VMM_TEST_BZIMAGES
// (colon-separated). When a vmlinux sits next to the bzImage, the extracted
// ELF's PT_LOAD contents and PVH entry must match it byte for byte.
func TestRealKernels(t *testing.T) {
	files, _ := filepath.Glob("/boot/vmlinuz-*")
	if dir, err := os.UserCacheDir(); err == nil {
		c, _ := filepath.Glob(filepath.Join(dir, "vmm", "kernel-*", "bzImage"))
		files = append(files, c...)
	}
	if env := os.Getenv("VMM_TEST_BZIMAGES"); env != "" {
		files = append(files, strings.Split(env, ":")...)
	}
	if len(files) == 0 {
		t.Skip("no real kernel on this machine (/boot/vmlinuz-*, the vmm kernel cache, $VMM_TEST_BZIMAGES)")
	}
	for _, f := range files {
		t.Run(filepath.Base(filepath.Dir(f))+"/"+filepath.Base(f), func(t *testing.T) {
			img, err := os.ReadFile(f)
			if err != nil {
				t.Skipf("cannot read: %v", err)
			}
			bz, err := ParseBzImage(img)
			if err != nil {
				t.Fatal(err)
			}
			h := bz.Header
			if h.XLoadflags&XLFKernel64 == 0 || h.PayloadLength == 0 || h.CmdlineSize == 0 {
				t.Errorf("header %+v", h)
			}
			if testing.Short() {
				return
			}
			vml, codec, err := ExtractVmlinux(img)
			if err != nil {
				t.Fatalf("extract: %v", err)
			}
			e, err := ParseELF(vml)
			if err != nil {
				t.Fatalf("%s payload: %v", codec, err)
			}
			t.Logf("protocol %#x, relocatable %v, init_size %#x, %s payload -> %d bytes, PVH %v",
				h.Version, h.Relocatable, h.InitSize, codec, len(vml), e.HasPVH)
			const ram = 512 << 20
			m := mustE820(t, ram)
			if _, err := Load(newSparseMem(ram), img, []byte("initrd"), Config{E820: m, Cmdline: "console=ttyS0"}); err != nil {
				t.Errorf("Load bzImage: %v", err)
			}
			if _, err := Load(newSparseMem(ram), img, []byte("initrd"), Config{E820: m, Extract: true}); err != nil {
				t.Errorf("Load extracted: %v", err)
			}
			ref, err := os.ReadFile(filepath.Join(filepath.Dir(f), "vmlinux"))
			if err != nil {
				return
			}
			re, err := ParseELF(ref)
			if err != nil {
				t.Fatalf("reference vmlinux: %v", err)
			}
			if re.PVHEntry != e.PVHEntry || len(re.Segments) != len(e.Segments) {
				t.Fatalf("PVH entry %#x vs %#x, %d vs %d segments", e.PVHEntry, re.PVHEntry, len(e.Segments), len(re.Segments))
			}
			for i, s := range e.Segments {
				rs := re.Segments[i]
				if s.PAddr != rs.PAddr || s.MemSize != rs.MemSize ||
					!bytes.Equal(vml[s.Offset:s.Offset+s.FileSize], ref[rs.Offset:rs.Offset+rs.FileSize]) {
					t.Errorf("segment %d differs from the reference vmlinux", i)
				}
			}
		})
	}
}

var _ Memory = (*fakeMem)(nil)

// *memory.Guest is the Memory the VMM passes in.
var _ Memory = (*memory.Guest)(nil)
