package firmware

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"fmt"
	"math/rand"

	"github.com/vmmgo/vmm/memory"
)

// fakeMem is a byte-slice guest memory from GPA 0, bounds-checked like
// *memory.Guest.
type fakeMem struct{ b []byte }

func newFakeMem(size int) *fakeMem { return &fakeMem{b: make([]byte, size)} }

func (m *fakeMem) check(gpa memory.GPA, n int) error {
	if uint64(gpa) > uint64(len(m.b)) || uint64(n) > uint64(len(m.b))-uint64(gpa) {
		return fmt.Errorf("[%v +%d): %w", gpa, n, memory.ErrOutOfRange)
	}
	return nil
}

func (m *fakeMem) Read(gpa memory.GPA, p []byte) error {
	if err := m.check(gpa, len(p)); err != nil {
		return err
	}
	copy(p, m.b[gpa:])
	return nil
}

func (m *fakeMem) Write(gpa memory.GPA, p []byte) error {
	if err := m.check(gpa, len(p)); err != nil {
		return err
	}
	copy(m.b[gpa:], p)
	return nil
}

// Test images, built in code; gen_test.go writes them to testdata/firmware.

const (
	testELFPAddr   = 0x1000000
	testELFEntry   = 0x1000000
	testPVHEntry   = 0x1000040
	testSetupSects = 3
)

// x86ish returns deterministic, compressible bytes built from a small set
// of instruction-like snippets, many E8/E9 rel32 patterns among them (so the
// x86 BCJ filter has work to do), with occasional random bytes and long runs
// (so LZ codecs use every match length and distance class).
func x86ish(n int, seed int64) []byte {
	r := rand.New(rand.NewSource(seed))
	snippets := make([][]byte, 64)
	for i := range snippets {
		s := make([]byte, 2+r.Intn(12))
		r.Read(s)
		snippets[i] = s
	}
	b := make([]byte, 0, n+600)
	for len(b) < n {
		switch k := r.Intn(16); {
		case k < 4:
			b = append(b, 0xE8|byte(r.Intn(2)))
			b = binary.LittleEndian.AppendUint32(b, uint32(int32(r.Intn(1<<20)-1<<19)))
		case k < 12:
			b = append(b, snippets[r.Intn(len(snippets))]...)
		case k < 14:
			b = append(b, byte(r.Intn(256)))
		case k == 14:
			b = append(b, make([]byte, r.Intn(600))...)
		default:
			if len(b) > 64 { // a copy from far back
				from := r.Intn(len(b) - 32)
				b = append(b, b[from:from+8+r.Intn(24)]...)
			}
		}
	}
	return b[:n]
}

// buildELF makes an ELF64 x86-64 executable with one PT_LOAD segment of text
// (memsz = filesz + bss) at testELFPAddr and, when pvh, a PT_NOTE with
// XEN_ELFNOTE_PHYS32_ENTRY (8-byte descriptor, as Linux emits it).
func buildELF(text []byte, bss uint64, pvh bool) []byte {
	le := binary.LittleEndian
	var note []byte
	if pvh {
		note = le.AppendUint32(note, 4)  // namesz "Xen\0"
		note = le.AppendUint32(note, 8)  // descsz
		note = le.AppendUint32(note, 18) // XEN_ELFNOTE_PHYS32_ENTRY
		note = append(note, "Xen\x00"...)
		note = le.AppendUint64(note, testPVHEntry)
	}
	nph := 1
	if pvh {
		nph = 2
	}
	textOff := uint64(0x1000)
	noteOff := uint64(elfHdrSize + nph*elfPhdrSize)
	h := make([]byte, textOff)
	copy(h, "\x7fELF")
	h[4], h[5], h[6] = elfClass64, elfData2LSB, 1
	le.PutUint16(h[16:], 2) // ET_EXEC
	le.PutUint16(h[18:], elfMachineX86)
	le.PutUint32(h[20:], 1)
	le.PutUint64(h[24:], testELFEntry)
	le.PutUint64(h[32:], elfHdrSize)
	le.PutUint16(h[52:], elfHdrSize)
	le.PutUint16(h[54:], elfPhdrSize)
	le.PutUint16(h[56:], uint16(nph))
	ph := h[elfHdrSize:]
	le.PutUint32(ph[0:], ptLoad)
	le.PutUint32(ph[4:], 5)
	le.PutUint64(ph[8:], textOff)
	le.PutUint64(ph[16:], 0xffffffff81000000)
	le.PutUint64(ph[24:], testELFPAddr)
	le.PutUint64(ph[32:], uint64(len(text)))
	le.PutUint64(ph[40:], uint64(len(text))+bss)
	le.PutUint64(ph[48:], 0x200000)
	if pvh {
		ph = ph[elfPhdrSize:]
		le.PutUint32(ph[0:], ptNote)
		le.PutUint64(ph[8:], noteOff)
		le.PutUint64(ph[32:], uint64(len(note)))
		le.PutUint64(ph[40:], uint64(len(note)))
		le.PutUint64(ph[48:], 4)
		copy(h[noteOff:], note)
	}
	return append(h, text...)
}

// withSizeTrailer appends the 4-byte little-endian size, as size_append does.
func withSizeTrailer(compressed []byte, size int) []byte {
	return binary.LittleEndian.AppendUint32(append([]byte(nil), compressed...), uint32(size))
}

func gzipBytes(b []byte) []byte {
	var buf bytes.Buffer
	w, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

// buildBzImage makes a bzImage of protocol 2.15: boot sector and setup
// (testSetupSects sectors), then a protected-mode part holding payload at
// payload_offset 0x100 (with some stub code before it).
func buildBzImage(payload []byte) []byte {
	le := binary.LittleEndian
	setup := make([]byte, (testSetupSects+1)*512)
	setup[offSetupSects] = testSetupSects
	le.PutUint16(setup[offBootFlag:], bootFlagMagic)
	setup[offJump] = 0xEB
	setup[offJump+1] = 0x6A // header ends at 0x26C
	le.PutUint32(setup[offHeaderMagic:], hdrMagic)
	le.PutUint16(setup[offVersion:], 0x020F)
	setup[offLoadflags] = LoadflagLoadedHigh
	le.PutUint32(setup[offCode32Start:], 0x100000)
	le.PutUint32(setup[offInitrdAddrMax:], 0x7fffffff)
	le.PutUint32(setup[offKernelAlign:], 0x200000)
	setup[offRelocatable] = 1
	setup[offRelocatable+1] = 21 // min_alignment
	le.PutUint16(setup[offXLoadflags:], XLFKernel64|XLFCanBeLoadedAbove4G)
	le.PutUint32(setup[offCmdlineSize:], 2047)
	pm := make([]byte, 0x100)
	for i := range pm {
		pm[i] = 0x90
	}
	le.PutUint32(setup[offPayloadOffset:], uint32(len(pm)))
	le.PutUint32(setup[offPayloadLength:], uint32(len(payload)))
	pm = append(pm, payload...)
	pm = append(pm, make([]byte, 64)...) // trailing stub code
	le.PutUint64(setup[offPrefAddress:], 0x1000000)
	le.PutUint32(setup[offInitSize:], 0x400000)
	return append(setup, pm...)
}

// testVmlinux is the ELF every bzImage fixture carries.
func testVmlinux() []byte { return buildELF(x86ish(60000, 1), 0x3000, true) }

// sparseMem is a bounds-checked guest memory of size bytes that only
// allocates the 64 KiB chunks written (for fuzzing: fast per iteration).
type sparseMem struct {
	size   uint64
	chunks map[uint64][]byte
}

const sparseChunk = 64 << 10

func newSparseMem(size uint64) *sparseMem { return &sparseMem{size: size, chunks: map[uint64][]byte{}} }

func (m *sparseMem) access(gpa memory.GPA, p []byte, write bool) error {
	if uint64(gpa) > m.size || uint64(len(p)) > m.size-uint64(gpa) {
		return fmt.Errorf("[%v +%d): %w", gpa, len(p), memory.ErrOutOfRange)
	}
	a := uint64(gpa)
	for len(p) > 0 {
		base, off := a/sparseChunk*sparseChunk, a%sparseChunk
		c := m.chunks[base]
		if c == nil {
			if !write {
				n := min(uint64(len(p)), sparseChunk-off)
				clear(p[:n])
				p, a = p[n:], a+n
				continue
			}
			c = make([]byte, sparseChunk)
			m.chunks[base] = c
		}
		var n int
		if write {
			n = copy(c[off:], p)
		} else {
			n = copy(p, c[off:])
		}
		p, a = p[n:], a+uint64(n)
	}
	return nil
}

func (m *sparseMem) Read(gpa memory.GPA, p []byte) error  { return m.access(gpa, p, false) }
func (m *sparseMem) Write(gpa memory.GPA, p []byte) error { return m.access(gpa, p, true) }
