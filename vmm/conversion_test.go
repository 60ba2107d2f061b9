package vmm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmmgo/vmm/internal/tinyguest"
	"github.com/vmmgo/vmm/memory"
	"github.com/vmmgo/vmm/vmm/devices/pvmem"
)

// End-to-end share/unshare with tiny guests (docs/pvmem.md,
// docs/conversion.md). The guest sets up in kernel mode, drops to CPL3
// with IOPL 3 (kernel mode is emulated on the development hosts, user mode
// is native) and drives the pvmem port with request lists. At checkpoints
// it writes to a test port; the host, on the vCPU thread while the guest
// waits, checks the footprint of guest RAM, the hugetlb pool, every page's
// state against a model of the same conversions, and the guest's pattern.

// Fixed guest addresses of the conversion guests. Everything the guest
// needs (code, request list, user stack, failure record) lives in
// [convGuestLo, convGuestHi) and stays shared; so do the boot structures.
const (
	convGuestLo    = rawOrg   // code and data
	convList       = 0x108000 // request list: MaxBatch entries, 2 pages
	convFail       = 0x10a000 // failure record: gpa, status
	convUserStack  = 0x110000 // top of the CPL3 stack
	convGuestHi    = 0x110000
	convCodeMax    = convList - convGuestLo
	convCheckpoint = 0x4f0 // test port: a write is a checkpoint
	convPatternKey = 0x5a17c0de00000000
)

// convReserved are the pages the guest needs shared: GDT/IDT page, page
// tables (PML4, PDPT, 4 PDs), the kernel stack (RawStack) and the guest's
// own area.
var convReserved = [][2]uint64{{0, 0x1000}, {LayoutPML4, 0xf000}, {RawStack - 0x2000, RawStack}, {convGuestLo, convGuestHi}}

// convertibleRanges is guest RAM minus convReserved, sorted.
func convertibleRanges(regions []memory.Region) [][2]uint64 {
	var out [][2]uint64
	for _, r := range regions {
		cur, end := uint64(r.GPA), uint64(r.End())
		for _, res := range convReserved {
			if res[1] <= cur || res[0] >= end {
				continue
			}
			if res[0] > cur {
				out = append(out, [2]uint64{cur, res[0]})
			}
			cur = max(cur, res[1])
		}
		if cur < end {
			out = append(out, [2]uint64{cur, end})
		}
	}
	return out
}

// convStep is one step of a conversion guest. Each has its assembly (a
// call of a routine of convRoutines) and its effect on the host's model.
type convStep struct {
	kind  string // fill, board, runs, whole, storm, verify, checkpoint, private-prologue
	attrs uint64 // AttrPrivate or 0
	n     uint64 // storm length / checkpoint number
}

type convProgram struct {
	ranges  [][2]uint64
	steps   []convStep
	rngSeed uint64
	private bool // the machine starts with PrivateMemory
}

func (p *convProgram) totalPages() uint64 {
	var n uint64
	for _, r := range p.ranges {
		n += (r[1] - r[0]) / memory.PageSize
	}
	return n
}

// source renders the guest.
func (p *convProgram) source() string {
	var b strings.Builder
	b.WriteString(tinyguest.EnterUserMode(convUserStack, "user"))
	fmt.Fprintf(&b, `
	xor %%r15d, %%r15d
	mov $%#x, %%rdi          # touch the list and failure pages now, so that
	mov $%#x, %%ecx          # the footprint after the pattern is final
	xor %%eax, %%eax
	rep stosq
`, convList, (convUserStack-convList)/8)
	for _, s := range p.steps {
		switch s.kind {
		case "private-prologue":
			b.WriteString("\tcall private_prologue\n")
		case "fill", "verify":
			fmt.Fprintf(&b, "\tcall %s\n", s.kind)
		case "board", "runs", "whole":
			fmt.Fprintf(&b, "\tmov $%#x, %%r14\n\tcall %s\n", s.attrs, s.kind)
		case "storm":
			fmt.Fprintf(&b, "\tmov $%d, %%r12\n\tcall storm\n", s.n)
		case "checkpoint":
			fmt.Fprintf(&b, "\tmov $%d, %%r15\n\tmov %%r15d, %%eax\n\tmov $%#x, %%dx\n\tout %%eax, %%dx\n", s.n, convCheckpoint)
		default:
			panic("unknown step " + s.kind)
		}
	}
	b.WriteString("\txor %eax, %eax\n\tout %eax, $0xf4\n\tjmp .\n")
	fmt.Fprintf(&b, convRoutines, convList, convList, convFail, convFail, convList, convList, convList, convList, convList, convFail)
	fmt.Fprintf(&b, ".align 8\nrngstate: .quad %#x\ntotalpages: .quad %d\npatternkey: .quad %#x\nlistcount: .quad 0\nranges: .quad %d\n",
		p.rngSeed, p.totalPages(), uint64(convPatternKey), len(p.ranges))
	for _, r := range p.ranges {
		fmt.Fprintf(&b, "\t.quad %#x, %#x\n", r[0], r[1])
	}
	return b.String()
}

// convRoutines are the CPL3 routines of the conversion guests. Register
// use: add/flush/listconv/conv1 clobber rax, rcx, rdx, rsi, rdi, r11;
// loops keep their state in rbx, r8, r9, r10, r12, r13, r14; r15 is the
// number of the last checkpoint (for failure codes).
const convRoutines = `
# add(rdi gpa, rsi npages, rdx attrs): append to the request list, flush when full
add:
	mov listcount(%%rip), %%rax
	mov %%rax, %%rcx
	shl $5, %%rcx
	add $%#x, %%rcx
	mov %%rdi, (%%rcx)
	mov %%rsi, 8(%%rcx)
	mov %%rdx, 16(%%rcx)
	movq $0, 24(%%rcx)
	inc %%rax
	mov %%rax, listcount(%%rip)
	cmp $256, %%rax
	jb 1f
	call flush
1:	ret

# listconv(rdi list gpa, esi count) -> eax status (LIST_CONVERT read)
listconv:
	mov $0xa59, %%dx
	mov %%edi, %%eax
	out %%eax, %%dx
	inc %%dx
	mov %%rdi, %%rax
	shr $32, %%rax
	out %%eax, %%dx
	inc %%dx
	mov %%esi, %%eax
	out %%eax, %%dx
	inc %%dx
	in %%dx, %%eax
	ret

# conv1(rdi gpa, rsi npages, rdx attrs) -> eax status (register interface)
conv1:
	mov %%rdx, %%r11
	mov $0xa53, %%dx
	mov %%edi, %%eax
	out %%eax, %%dx
	inc %%dx
	mov %%rdi, %%rax
	shr $32, %%rax
	out %%eax, %%dx
	inc %%dx
	mov %%esi, %%eax
	out %%eax, %%dx
	inc %%dx
	mov %%r11d, %%eax
	out %%eax, %%dx
	inc %%dx
	in %%dx, %%eax
	ret

# flush: convert the pending list; any failure ends the guest with 0x200|phase
flush:
	mov listcount(%%rip), %%rsi
	test %%rsi, %%rsi
	jz 1f
	mov $%#x, %%edi
	call listconv
	test %%eax, %%eax
	jnz convfail
	movq $0, listcount(%%rip)
1:	ret
convfail:
	mov %%rax, %#x+8
	mov %%r15d, %%eax
	or $0x200, %%eax
	out %%eax, $0xf4
	jmp .

# fill: every convertible page gets qwords (gpa ^ patternkey)
fill:
	mov patternkey(%%rip), %%r10
	lea ranges(%%rip), %%rbx
	mov (%%rbx), %%r8
	add $8, %%rbx
1:	test %%r8, %%r8
	jz 9f
	mov (%%rbx), %%rdi
	mov 8(%%rbx), %%r9
2:	cmp %%r9, %%rdi
	jae 3f
	mov %%rdi, %%rax
	xor %%r10, %%rax
	mov $512, %%ecx
	rep stosq
	jmp 2b
3:	add $16, %%rbx
	dec %%r8
	jmp 1b
9:	ret

# verify: the pattern is intact, else exit 0x100|phase with the gpa recorded
verify:
	mov patternkey(%%rip), %%r10
	lea ranges(%%rip), %%rbx
	mov (%%rbx), %%r8
	add $8, %%rbx
1:	test %%r8, %%r8
	jz 9f
	mov (%%rbx), %%rdi
	mov 8(%%rbx), %%r9
2:	cmp %%r9, %%rdi
	jae 3f
	mov %%rdi, %%rax
	xor %%r10, %%rax
	mov $512, %%ecx
	repe scasq
	jne 4f
	jmp 2b
3:	add $16, %%rbx
	dec %%r8
	jmp 1b
4:	sub $8, %%rdi
	mov %%rdi, %#x
	mov %%r15d, %%eax
	or $0x100, %%eax
	out %%eax, $0xf4
	jmp .
9:	ret

# board(r14 attrs): every even 4 KiB page
board:
	lea ranges(%%rip), %%rbx
	mov (%%rbx), %%r8
	add $8, %%rbx
1:	test %%r8, %%r8
	jz 9f
	mov (%%rbx), %%r12
	mov 8(%%rbx), %%r13
2:	cmp %%r13, %%r12
	jae 3f
	bt $12, %%r12
	jc 4f
	mov %%r12, %%rdi
	mov $1, %%esi
	mov %%r14, %%rdx
	call add
4:	add $0x1000, %%r12
	jmp 2b
3:	add $16, %%rbx
	dec %%r8
	jmp 1b
9:	call flush
	ret

# runs(r14 attrs): the convertible part of every even 2 MiB block, hint 2M
runs:
	lea ranges(%%rip), %%rbx
	mov (%%rbx), %%r8
	add $8, %%rbx
1:	test %%r8, %%r8
	jz 9f
	mov (%%rbx), %%r12
	mov 8(%%rbx), %%r13
2:	cmp %%r13, %%r12
	jae 3f
	mov %%r12, %%r9
	and $-0x200000, %%r9
	add $0x200000, %%r9
	cmp %%r13, %%r9
	cmova %%r13, %%r9
	bt $21, %%r12
	jc 4f
	mov %%r12, %%rdi
	mov %%r9, %%rsi
	sub %%r12, %%rsi
	shr $12, %%rsi
	mov %%r14, %%rdx
	or $1, %%rdx
	call add
4:	mov %%r9, %%r12
	jmp 2b
3:	add $16, %%rbx
	dec %%r8
	jmp 1b
9:	call flush
	ret

# whole(r14 attrs): every convertible range in one entry each
whole:
	lea ranges(%%rip), %%rbx
	mov (%%rbx), %%r8
	add $8, %%rbx
1:	test %%r8, %%r8
	jz 9f
	mov (%%rbx), %%rdi
	mov 8(%%rbx), %%rsi
	sub %%rdi, %%rsi
	shr $12, %%rsi
	mov %%r14, %%rdx
	call add
	add $16, %%rbx
	dec %%r8
	jmp 1b
9:	call flush
	ret

# rand: xorshift64 (13, 7, 17) -> rax; clobbers rcx
rand:
	mov rngstate(%%rip), %%rax
	mov %%rax, %%rcx
	shl $13, %%rcx
	xor %%rcx, %%rax
	mov %%rax, %%rcx
	shr $7, %%rcx
	xor %%rcx, %%rax
	mov %%rax, %%rcx
	shl $17, %%rcx
	xor %%rcx, %%rax
	mov %%rax, rngstate(%%rip)
	ret

# storm(r12 count): a random page, 1..16 pages clipped to its range,
# random direction (bit 63 of the second draw)
storm:
1:	test %%r12, %%r12
	jz 9f
	call rand
	xor %%edx, %%edx
	divq totalpages(%%rip)
	lea ranges(%%rip), %%rbx
	add $8, %%rbx
2:	mov 8(%%rbx), %%r9
	sub (%%rbx), %%r9
	shr $12, %%r9
	cmp %%r9, %%rdx
	jb 3f
	sub %%r9, %%rdx
	add $16, %%rbx
	jmp 2b
3:	sub %%rdx, %%r9
	mov %%rdx, %%r13
	shl $12, %%r13
	add (%%rbx), %%r13
	call rand
	mov %%rax, %%r10
	and $15, %%eax
	inc %%rax
	cmp %%r9, %%rax
	cmova %%r9, %%rax
	mov %%rax, %%rsi
	mov %%r13, %%rdi
	xor %%edx, %%edx
	bt $63, %%r10
	jnc 4f
	mov $0x10, %%edx
4:	call add
	dec %%r12
	jmp 1b
9:	call flush
	ret

# private_prologue: with all RAM private, a request list is refused with
# -EACCES (-13) and nothing is converted; the guest then shares its list
# pages with the register interface.
private_prologue:
	mov ranges+8(%%rip), %%rax
	mov %%rax, %#x
	movq $1, %#x+8
	movq $0, %#x+16
	mov $%#x, %%edi
	mov $1, %%esi
	call listconv
	cmp $-13, %%eax
	jne 8f
	mov $%#x, %%edi
	mov $2, %%esi
	xor %%edx, %%edx
	call conv1
	test %%eax, %%eax
	jnz 8f
	ret
8:	mov %%rax, %#x+8
	mov $0x300, %%eax
	out %%eax, $0xf4
	jmp .
`

// convModel is the host's independent record of what the guest asked for:
// one bool per 4 KiB page of the address space up to the end of RAM.
type convModel []bool

func (p *convProgram) apply(m convModel, s convStep) {
	set := func(gpa, n uint64, private bool) {
		for i := gpa / memory.PageSize; i < gpa/memory.PageSize+n; i++ {
			m[i] = private
		}
	}
	priv := s.attrs&memory.AttrPrivate != 0
	switch s.kind {
	case "private-prologue":
		set(convList, 2, false)
	case "board":
		for _, r := range p.ranges {
			for g := r[0]; g < r[1]; g += memory.PageSize {
				if g&(1<<12) == 0 {
					set(g, 1, priv)
				}
			}
		}
	case "runs":
		for _, r := range p.ranges {
			for g := r[0]; g < r[1]; {
				end := min(g&^(2<<20-1)+2<<20, r[1])
				if g&(1<<21) == 0 {
					set(g, (end-g)/memory.PageSize, priv)
				}
				g = end
			}
		}
	case "whole":
		for _, r := range p.ranges {
			set(r[0], (r[1]-r[0])/memory.PageSize, priv)
		}
	case "storm":
		x := p.rngSeed
		next := func() uint64 { x ^= x << 13; x ^= x >> 7; x ^= x << 17; return x }
		total := p.totalPages()
		for i := uint64(0); i < s.n; i++ {
			idx := next() % total
			ri := 0
			for idx >= (p.ranges[ri][1]-p.ranges[ri][0])/memory.PageSize {
				idx -= (p.ranges[ri][1] - p.ranges[ri][0]) / memory.PageSize
				ri++
			}
			left := (p.ranges[ri][1]-p.ranges[ri][0])/memory.PageSize - idx
			r2 := next()
			set(p.ranges[ri][0]+idx*memory.PageSize, min(r2&15+1, left), r2>>63 == 1)
		}
		p.rngSeed = x // a later storm continues the sequence
	}
}

// expected returns the model state at every checkpoint.
func (p *convProgram) expected(ramEnd uint64) map[uint64]convModel {
	m := make(convModel, ramEnd/memory.PageSize)
	if p.private {
		for i := range m {
			m[i] = true
		}
	}
	out := map[uint64]convModel{}
	seed := p.rngSeed
	for _, s := range p.steps {
		if s.kind == "checkpoint" {
			out[s.n] = append(convModel(nil), m...)
			continue
		}
		p.apply(m, s)
	}
	p.rngSeed = seed
	return out
}

// convRun is one conversion guest with its host-side checks.
type convRun struct {
	t       *testing.T
	m       *Machine
	prog    *convProgram
	want    map[uint64]convModel
	pattern bool // the program fills and verifies the pattern

	mu       sync.Mutex
	seen     []uint64
	base     memory.Usage
	pool     memory.HugePool
	poolOK   bool
	fails    []string
	interval map[uint64]time.Duration
	last     time.Time
}

func (c *convRun) errorf(format string, args ...any) {
	c.mu.Lock()
	c.fails = append(c.fails, fmt.Sprintf(format, args...))
	c.mu.Unlock()
}

func (c *convRun) BusRead(_ int, _ uint64, data []byte) { clear(data) }

// BusWrite runs on the vCPU thread while the guest waits at a checkpoint.
func (c *convRun) BusWrite(_ int, _ uint64, data []byte) {
	var b [4]byte
	copy(b[:], data)
	k := uint64(binary.LittleEndian.Uint32(b[:]))
	now := time.Now()
	c.mu.Lock()
	c.seen = append(c.seen, k)
	if !c.last.IsZero() {
		c.interval[k] = now.Sub(c.last)
	}
	c.last = now
	c.mu.Unlock()

	u, err := c.m.Footprint()
	if err != nil {
		c.errorf("checkpoint %d: footprint: %v", k, err)
		return
	}
	hp := c.m.Backend().PageSize()
	var pool memory.HugePool
	if c.m.Backend().Kind() == memory.KindHugetlb {
		if pool, err = memory.ReadHugePool(hp); err != nil {
			c.errorf("checkpoint %d: %v", k, err)
		}
	}
	if k == 1 {
		c.base, c.pool, c.poolOK = u, pool, err == nil
	} else {
		if u.InUse != c.base.InUse || u.Resident != c.base.Resident || u.Allocated != c.base.Allocated || u.HugePages != c.base.HugePages {
			c.errorf("checkpoint %d: host footprint of guest RAM changed: %+v, after the pattern it was %+v", k, u, c.base)
		}
		if c.poolOK && pool.Free != c.pool.Free {
			c.errorf("checkpoint %d: hugetlb pool free pages %d, %d after the pattern (file holds %d -> %d huge pages)", k, pool.Free, c.pool.Free, c.base.HugePages, u.HugePages)
		}
	}
	want, ok := c.want[k]
	if !ok {
		c.errorf("checkpoint %d is not in the program", k)
		return
	}
	mem := c.m.Memory()
	bad := 0
	for _, r := range mem.Regions() {
		for g := uint64(r.GPA); g < uint64(r.End()); g += memory.PageSize {
			got, err := mem.IsPrivate(memory.GPA(g))
			if err != nil || got != want[g/memory.PageSize] {
				if bad++; bad <= 5 {
					c.errorf("checkpoint %d: page %#x private=%v (err %v), the guest's requests say %v", k, g, got, err, want[g/memory.PageSize])
				}
			}
		}
	}
	if c.pattern {
		page := make([]byte, memory.PageSize)
		bad = 0
		for _, r := range c.prog.ranges {
			for g := r[0]; g < r[1]; g += memory.PageSize {
				if err := mem.Read(memory.GPA(g), page); err != nil {
					c.errorf("checkpoint %d: host read %#x: %v", k, g, err)
					return
				}
				v := g ^ convPatternKey
				for i := 0; i < len(page); i += 8 {
					if binary.LittleEndian.Uint64(page[i:]) != v {
						if bad++; bad <= 3 {
							c.errorf("checkpoint %d: host reads %#x at %#x, the guest wrote %#x", k, binary.LittleEndian.Uint64(page[i:]), g+uint64(i), v)
						}
						break
					}
				}
			}
		}
	}
}

// runConvGuest builds the machine, runs prog and checks every checkpoint.
func runConvGuest(t *testing.T, cfg Config, prog *convProgram, pattern bool) *convRun {
	t.Helper()
	if cfg.Timeout == 0 {
		cfg.Timeout = 60 * time.Second
	}
	cfg.PrivateMemory = prog.private
	// The guest source needs the RAM layout, which New decides: build a
	// throwaway layout the same way (ramRegions) first.
	var regions []memory.Region
	for _, r := range ramRegions(cfg.Memory) {
		regions = append(regions, memory.Region{GPA: memory.GPA(r[0]), Size: r[1]})
	}
	prog.ranges = convertibleRanges(regions)
	src := prog.source()
	code, err := tinyguest.Assemble(src, rawOrg)
	if err != nil {
		t.Fatal(err)
	}
	if len(code) > convCodeMax {
		t.Fatalf("conversion guest is %d bytes, more than the %d bytes below its request list", len(code), convCodeMax)
	}
	m := newRawMachine(t, cfg, src)
	last := m.Memory().Regions()[len(m.Memory().Regions())-1]
	c := &convRun{t: t, m: m, prog: prog, want: prog.expected(uint64(last.End())), pattern: pattern, interval: map[uint64]time.Duration{}}
	if err := m.PIO().Register("checkpoint", convCheckpoint, 4, c); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	res := runMachine(t, m, OutcomePowerOff)
	if res.Code != 0 {
		fail := make([]byte, 16)
		_ = m.Memory().Read(convFail, fail)
		t.Fatalf("guest failed with code %#x (0x100 pattern, 0x200 conversion, 0x300 private prologue | checkpoint): gpa %#x, status %d",
			res.Code, binary.LittleEndian.Uint64(fail), int64(binary.LittleEndian.Uint64(fail[8:])))
	}
	t.Logf("%s: guest ran %v; checkpoints %v", cfg.MemoryBackend, time.Since(start).Round(time.Millisecond), c.seen)
	var want []uint64
	for _, s := range prog.steps {
		if s.kind == "checkpoint" {
			want = append(want, s.n)
		}
	}
	if fmt.Sprint(c.seen) != fmt.Sprint(want) {
		t.Errorf("checkpoints %v, want %v", c.seen, want)
	}
	for _, f := range c.fails {
		t.Error(f)
	}
	return c
}

// fullProgram: pattern, checkerboard, 2 MiB runs, whole-RAM flips back and
// forth, a random storm, each followed by the guest's pattern check and a
// host checkpoint.
func fullProgram(stormN uint64, private bool) *convProgram {
	P := memory.AttrPrivate
	steps := []convStep{}
	if private {
		steps = append(steps, convStep{kind: "private-prologue"})
	}
	cp := uint64(0)
	check := func(s ...convStep) {
		steps = append(steps, s...)
		cp++
		steps = append(steps, convStep{kind: "verify"}, convStep{kind: "checkpoint", n: cp})
	}
	steps = append(steps, convStep{kind: "fill"})
	cp++
	steps = append(steps, convStep{kind: "checkpoint", n: cp})
	check(convStep{kind: "board", attrs: P})
	check(convStep{kind: "board"})
	check(convStep{kind: "runs", attrs: P})
	check(convStep{kind: "whole"})
	for i := 0; i < 3; i++ {
		check(convStep{kind: "whole", attrs: P})
		check(convStep{kind: "whole"})
	}
	check(convStep{kind: "storm", n: stormN})
	check(convStep{kind: "whole"})
	return &convProgram{steps: steps, rngSeed: 0x9e3779b97f4a7c15, private: private}
}

// needHugePages makes n 2 MiB pages available for the test and gives back
// what it raised afterwards.
func needHugePages(t testing.TB, n uint64) {
	t.Helper()
	restore, err := memory.ReserveHugePages(n)
	t.Cleanup(func() {
		if err := restore(); err != nil {
			t.Errorf("give back huge pages: %v", err)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
}

var allBackends = []memory.Kind{memory.KindAnon, memory.KindMemfd, memory.KindHugetlb, memory.KindGuestMemfd}

// convConfig is a machine for the conversion guests, which drive pvmem
// from CPL3 (native speed on hosts that emulate kernel mode): they need the
// test-only TestUserConversions; TestPVMemCPLRule checks the default.
func convConfig(t *testing.T, backend memory.Kind) Config {
	cfg := smallConfig(backend)
	cfg.Memory = 16 << 20
	cfg.TestUserConversions = true
	if backend == memory.KindHugetlb {
		needHugePages(t, cfg.Memory/memory.HugePage2M)
	}
	return cfg
}

// TestConversionSequencesInPlace runs, on every backend, a 4 KiB
// checkerboard over all convertible RAM, 2 MiB runs, whole-RAM flips back
// and forth and a 100,000-conversion random storm through pvmem request
// lists from CPL3. After each: the state of every page is what the guest
// asked for, the host footprint and the hugetlb pool are unchanged and the
// pattern the guest wrote first is intact (checked by guest and host).
func TestConversionSequencesInPlace(t *testing.T) {
	for _, backend := range allBackends {
		t.Run(string(backend), func(t *testing.T) {
			cfg := convConfig(t, backend)
			prog := fullProgram(100000, false)
			c := runConvGuest(t, cfg, prog, true)
			st := c.m.ConversionStats()
			ps := c.m.pvmem.Stats()
			if st.Refused != 0 || ps.Failed != 0 || st.DeviceRefused != 0 {
				t.Errorf("refusals in a valid run: memory %+v, pvmem %+v", st, ps)
			}
			if ps.Entries < 100000 || st.ToPrivate+st.ToShared != ps.Entries {
				t.Errorf("pvmem processed %d entries, memory saw %d conversions; want >= 100000 and equal", ps.Entries, st.ToPrivate+st.ToShared)
			}
			if st.PrivatePages != 0 {
				t.Errorf("%d pages still private after the final flip to shared", st.PrivatePages)
			}
			if c.base.InUse == 0 || c.base.InUse > cfg.Memory {
				t.Errorf("footprint after the pattern %+v: want the touched RAM, at most %d", c.base, cfg.Memory)
			}
			t.Logf("footprint %d KiB of %d KiB RAM, %d conversions (%d pages changed) in %d lists; storm took %v",
				c.base.InUse>>10, cfg.Memory>>10, ps.Entries, st.PagesConverted, ps.Batches, c.interval[uint64(len(c.seen)-1)])
		})
	}
}

// TestConversionPrivateMemoryMode: with Config.PrivateMemory the guest
// starts private, a request list in its (private) page is refused, it
// shares its list pages with the register interface and then every
// sequence works.
func TestConversionPrivateMemoryMode(t *testing.T) {
	for _, backend := range allBackends {
		t.Run(string(backend), func(t *testing.T) {
			cfg := convConfig(t, backend)
			prog := fullProgram(20000, true)
			c := runConvGuest(t, cfg, prog, true)
			st := c.m.ConversionStats()
			if st.DeviceRefused != 1 {
				t.Errorf("device refusals %d, want 1 (the list read while the list page was private)", st.DeviceRefused)
			}
			// Reserved pages other than the list stay private.
			if p, _ := c.m.Memory().IsPrivate(convGuestLo); !p {
				t.Errorf("guest code page shared at the end; only the list was shared")
			}
			if p, _ := c.m.Memory().IsPrivate(convList); p {
				t.Errorf("list page private at the end")
			}
		})
	}
}

// TestConversionIsolation: a device asked to read and write a private page
// is refused and the page is untouched; a request list in a private page is
// refused (-EACCES) without converting anything or writing statuses; the
// VMM keeps running and the next requests succeed.
func TestConversionIsolation(t *testing.T) {
	for _, backend := range allBackends {
		t.Run(string(backend), func(t *testing.T) {
			cfg := convConfig(t, backend)
			const X, Y, Z = 0x200000, 0x300000, 0x400000
			const pat = 0x1122334455667788
			src := fmt.Sprintf(`
	mov $%#x, %%rax
	push $0x23
	push %%rax
	push $0x3002
	push $0x1b
	lea user(%%rip), %%rax
	push %%rax
	iretq
user:
	mov $%#x, %%rax               # pattern in X
	mov $%#x, %%rdi
	mov $512, %%ecx
	rep stosq
	mov $%#x, %%rdi               # X private
	mov $1, %%esi
	mov $0x10, %%edx
	call conv1
	test %%eax, %%eax
	jnz fail1
	mov $1, %%eax
	mov $%#x, %%dx
	out %%eax, %%dx               # checkpoint 1: host device access to X
	mov $%#x, %%rdi               # Y private
	mov $1, %%esi
	mov $0x10, %%edx
	call conv1
	test %%eax, %%eax
	jnz fail2
	mov $%#x, %%rbx               # list in Y: make Z private
	movq $%#x, (%%rbx)
	movq $1, 8(%%rbx)
	movq $0x10, 16(%%rbx)
	movq $0x5a5a, 24(%%rbx)
	mov %%rbx, %%rdi
	mov $1, %%esi
	call listconv
	cmp $-13, %%eax
	jne fail3
	cmpq $0x5a5a, 24(%%rbx)       # no status written into the private page
	jne fail4
	mov $2, %%eax
	mov $%#x, %%dx
	out %%eax, %%dx               # checkpoint 2
	mov $%#x, %%rdi               # X shared again
	mov $1, %%esi
	xor %%edx, %%edx
	call conv1
	test %%eax, %%eax
	jnz fail5
	mov $%#x, %%rbx               # a list in a shared page: Z private, Z shared
	movq $%#x, (%%rbx)
	movq $1, 8(%%rbx)
	movq $0x10, 16(%%rbx)
	movq $-1, 24(%%rbx)
	movq $%#x, 32(%%rbx)
	movq $1, 40(%%rbx)
	movq $0, 48(%%rbx)
	movq $-1, 56(%%rbx)
	mov %%rbx, %%rdi
	mov $2, %%esi
	call listconv
	test %%eax, %%eax
	jnz fail6
	cmpq $0, 24(%%rbx)
	jne fail6
	cmpq $0, 56(%%rbx)
	jne fail6
	mov $3, %%eax
	mov $%#x, %%dx
	out %%eax, %%dx               # checkpoint 3
	xor %%eax, %%eax
	out %%eax, $0xf4
fail1: mov $1, %%eax
	out %%eax, $0xf4
fail2: mov $2, %%eax
	out %%eax, $0xf4
fail3: mov %%eax, 0x10a008
	mov $3, %%eax
	out %%eax, $0xf4
fail4: mov $4, %%eax
	out %%eax, $0xf4
fail5: mov $5, %%eax
	out %%eax, $0xf4
fail6: mov $6, %%eax
	out %%eax, $0xf4
`, convUserStack, uint64(pat), X, X, convCheckpoint, Y, Y, Z, convCheckpoint, X, convList, Z, Z, convCheckpoint) + isolationRoutines
			m := newRawMachine(t, cfg, src)
			mem := m.Memory()
			var cpErrs []string
			var mu sync.Mutex
			errorf := func(f string, a ...any) {
				mu.Lock()
				cpErrs = append(cpErrs, fmt.Sprintf(f, a...))
				mu.Unlock()
			}
			var st0 memory.Stats
			dev := &funcDevice{write: func(k uint32) {
				switch k {
				case 1:
					buf := make([]byte, 64)
					for i := range buf {
						buf[i] = 0xee
					}
					if err := mem.DeviceRead(X+8, buf); !errors.Is(err, memory.ErrPrivate) {
						errorf("device read of private page X: err %v, want ErrPrivate", err)
					}
					for _, v := range buf {
						if v != 0xee {
							errorf("refused device read filled the buffer: % x", buf[:16])
							break
						}
					}
					junk := make([]byte, 64)
					for i := range junk {
						junk[i] = 0xcc
					}
					if err := mem.DeviceWrite(X+8, junk); !errors.Is(err, memory.ErrPrivate) {
						errorf("device write to private page X: err %v, want ErrPrivate", err)
					}
					// A device access that straddles into X is refused too.
					if err := mem.DeviceWrite(X-8, junk[:16]); !errors.Is(err, memory.ErrPrivate) {
						errorf("device write straddling into X: err %v, want ErrPrivate", err)
					}
					if err := mem.Read(X, buf); err != nil {
						errorf("host read: %v", err)
					}
					for i := 0; i < len(buf); i += 8 {
						if binary.LittleEndian.Uint64(buf[i:]) != pat {
							errorf("private page X changed: % x", buf[:16])
							break
						}
					}
					st := mem.Stats()
					if got := st.DeviceRefused; got != 3 {
						errorf("device refusals after three refused accesses: %d, want 3", got)
					}
					st0 = st
				case 2:
					st := mem.Stats()
					if p, _ := mem.IsPrivate(Z); p {
						errorf("Z became private from a list the VMM may not read")
					}
					if st.DeviceRefused != st0.DeviceRefused+1 {
						errorf("device refusals %d, want %d (+1 for the list in a private page)", st.DeviceRefused, st0.DeviceRefused+1)
					}
					b := make([]byte, 8)
					_ = mem.Read(Y+24, b)
					if binary.LittleEndian.Uint64(b) != 0x5a5a {
						errorf("status written into private list page: %#x", binary.LittleEndian.Uint64(b))
					}
				case 3:
					buf := make([]byte, 16)
					if err := mem.DeviceRead(X, buf); err != nil || binary.LittleEndian.Uint64(buf) != pat {
						errorf("device read of X after it was shared again: % x, %v", buf, err)
					}
				}
			}}
			if err := m.PIO().Register("checkpoint", convCheckpoint, 4, dev); err != nil {
				t.Fatal(err)
			}
			res := runMachine(t, m, OutcomePowerOff)
			if res.Code != 0 {
				b := make([]byte, 8)
				_ = m.Memory().Read(convFail+8, b)
				t.Fatalf("guest failed at step %d (status %d)", res.Code, int32(binary.LittleEndian.Uint32(b)))
			}
			for _, e := range cpErrs {
				t.Error(e)
			}
			if got := dev.writes; fmt.Sprint(got) != "[1 2 3]" {
				t.Errorf("checkpoints %v, want [1 2 3]", got)
			}
			ps := m.pvmem.Stats()
			if ps.Failed != 1 {
				t.Errorf("pvmem failed requests %d, want 1 (the list in a private page)", ps.Failed)
			}
			if st := mem.Stats(); st.PrivatePages != 1 {
				t.Errorf("private pages at the end %d, want 1 (Y)", st.PrivatePages)
			}
		})
	}
}

const isolationRoutines = `
listconv:
	mov $0xa59, %dx
	mov %edi, %eax
	out %eax, %dx
	inc %dx
	mov %rdi, %rax
	shr $32, %rax
	out %eax, %dx
	inc %dx
	mov %esi, %eax
	out %eax, %dx
	inc %dx
	in %dx, %eax
	ret
conv1:
	mov %rdx, %r11
	mov $0xa53, %dx
	mov %edi, %eax
	out %eax, %dx
	inc %dx
	mov %rdi, %rax
	shr $32, %rax
	out %eax, %dx
	inc %dx
	mov %esi, %eax
	out %eax, %dx
	inc %dx
	mov %r11d, %eax
	out %eax, %dx
	inc %dx
	in %dx, %eax
	ret
`

// funcDevice calls write with each 4-byte value written to it.
type funcDevice struct {
	write  func(uint32)
	writes []uint32 // only the vCPU thread appends; read after Run
}

func (f *funcDevice) BusRead(_ int, _ uint64, data []byte) { clear(data) }
func (f *funcDevice) BusWrite(_ int, _ uint64, data []byte) {
	var b [4]byte
	copy(b[:], data)
	v := binary.LittleEndian.Uint32(b[:])
	f.writes = append(f.writes, v)
	f.write(v)
}

// TestConversionCheckerboardAt8GiB: a 4 KiB checkerboard across 8 GiB of
// unpopulated memfd-backed guest RAM, driven by the guest through request
// lists (about 2 million conversions), with host-side mprotect hardening on
// and off. Hardening must degrade gracefully (vm.max_map_count), the
// software check stays the authority, and nothing gets populated.
func TestConversionCheckerboardAt8GiB(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: 8 GiB checkerboard")
	}
	for _, harden := range []bool{false, true} {
		t.Run(fmt.Sprintf("harden=%v", harden), func(t *testing.T) {
			cfg := smallConfig(memory.KindMemfd)
			cfg.Memory = 8 << 30
			cfg.Harden = harden
			cfg.TestUserConversions = true // the guest converts from CPL3
			cfg.Timeout = 120 * time.Second
			P := memory.AttrPrivate
			prog := &convProgram{steps: []convStep{
				{kind: "checkpoint", n: 1},
				{kind: "board", attrs: P},
				{kind: "checkpoint", n: 2},
				{kind: "board"},
				{kind: "checkpoint", n: 3},
			}}
			c := runConvGuest(t, cfg, prog, false)
			st := c.m.ConversionStats()
			ps := c.m.pvmem.Stats()
			if st.Refused != 0 || ps.Failed != 0 {
				t.Errorf("refusals: memory %+v, pvmem %+v", st, ps)
			}
			half := prog.totalPages() / 2
			if ps.Entries < 2*half {
				t.Errorf("%d conversions, want >= %d", ps.Entries, 2*half)
			}
			if c.base.InUse > 64<<20 {
				t.Errorf("footprint %d MiB for an unpopulated 8 GiB guest", c.base.InUse>>20)
			}
			if harden {
				if st.Hardened || st.HardenFallback == "" {
					t.Errorf("hardening active=%v fallback=%q after a 4 KiB checkerboard of 8 GiB; want a graceful fallback", st.Hardened, st.HardenFallback)
				}
			} else if st.Hardened || st.HardenFallback != "" {
				t.Errorf("hardening active=%v fallback=%q without Harden", st.Hardened, st.HardenFallback)
			}
			t.Logf("8 GiB checkerboard: %d conversions in %d lists; to private %v, back %v; hardening fallback: %q",
				ps.Entries, ps.Batches, c.interval[2].Round(time.Millisecond), c.interval[3].Round(time.Millisecond), st.HardenFallback)
		})
	}
}

// A tiny check of the guest generator itself: the model of a storm
// converts roughly as many pages to each side, and stays in RAM.
func TestConvProgramModel(t *testing.T) {
	regions := []memory.Region{{GPA: 0, Size: 16 << 20}}
	p := &convProgram{ranges: convertibleRanges(regions), rngSeed: 1, steps: []convStep{{kind: "storm", n: 1000}, {kind: "checkpoint", n: 1}}}
	for _, r := range p.ranges {
		for _, res := range convReserved {
			if r[0] < res[1] && res[0] < r[1] {
				t.Fatalf("range %#x overlaps reserved %#x", r, res)
			}
		}
	}
	m := p.expected(16 << 20)[1]
	n := 0
	for i, v := range m {
		if v {
			n++
			for _, res := range convReserved {
				if g := uint64(i) * memory.PageSize; g >= res[0] && g < res[1] {
					t.Fatalf("storm touched reserved page %#x", g)
				}
			}
		}
	}
	if n == 0 || n == len(m) {
		t.Fatalf("storm left %d of %d pages private", n, len(m))
	}
	if convFail-convList != pvmem.MaxBatch*pvmem.EntrySize {
		t.Fatalf("request list area %#x bytes, a full list is %#x", convFail-convList, pvmem.MaxBatch*pvmem.EntrySize)
	}
}
