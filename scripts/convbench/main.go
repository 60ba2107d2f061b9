// Command convbench measures in-place share/unshare (docs/conversion.md):
//
//   - the page-state tracker alone (memory.Guest.Convert, 4 KiB pages);
//   - end to end through the pvmem port from a tiny guest at CPL3, with the
//     register interface and with request lists, separately;
//   - the host footprint of guest RAM ÷ guest RAM touched, for in-place
//     conversion on every backend beside the two-backing discard baseline
//     (memory.DiscardBaseline), for each conversion sequence.
//
// Run as root on a host with /dev/kvm: go run ./scripts/convbench
// It reserves the 2 MiB huge pages it needs (only if the pool is short) and
// gives back exactly what it added. It prints one table and exits non-zero
// on any failure, including a footprint or content check that does not
// hold.
package main

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/vmmgo/vmm/internal/tinyguest"
	"github.com/vmmgo/vmm/kvm"
	"github.com/vmmgo/vmm/memory"
	"github.com/vmmgo/vmm/vmm"
)

var (
	footprintSize = flag.Uint64("footprint-mib", 64, "guest RAM per footprint run, MiB (a multiple of 2)")
	stormN        = flag.Int("storm", 20000, "conversions in the random storm of the footprint table")
	regN          = flag.Int("register-n", 20000, "conversions through the register interface")
	batchN        = flag.Int("batch-n", 1000000, "conversions through request lists (multiple of 256)")
)

func main() {
	flag.Parse()
	start := time.Now()
	restore, err := memory.ReserveHugePages(*footprintSize / 2)
	if err == nil {
		err = run()
	}
	if rerr := restore(); rerr != nil {
		err = errors.Join(err, rerr)
	}
	fmt.Printf("\ntotal time %v\n", time.Since(start).Round(time.Millisecond))
	if err != nil {
		fmt.Fprintf(os.Stderr, "convbench: %v\n", err)
		os.Exit(1)
	}
}

func run() error {
	host, _ := os.Hostname()
	fmt.Printf("convbench %s on %s (%s)\n\n", time.Now().Format("2006-01-02 15:04"), host, cpuModel())
	if err := trackerBench(); err != nil {
		return err
	}
	if err := guestBench(); err != nil {
		return err
	}
	return footprintTable()
}

// ---------------------------------------------------------------- tracker

func trackerBench() error {
	const size = 4 << 30 // unpopulated: the tracker never touches RAM
	b, err := memory.NewBackend(memory.KindMemfd, size, memory.Options{})
	if err != nil {
		return err
	}
	defer b.Close()
	g, err := memory.NewGuest(memory.Region{GPA: 0, Size: size, Backend: b})
	if err != nil {
		return err
	}
	pages := uint64(size / memory.PageSize)
	rng := rand.New(rand.NewPCG(1, 2))
	idx := make([]uint64, 1<<16)
	for i := range idx {
		idx[i] = rng.Uint64N(pages)
	}
	fmt.Printf("%-52s %14s %s\n", "tracker (memory.Guest.Convert, no guest)", "conversions/s", "notes")
	measure := func(name string, note string, f func(i int) memory.ConvertRequest) error {
		n := 0
		t0 := time.Now()
		for time.Since(t0) < 700*time.Millisecond {
			for j := 0; j < 4096; j++ {
				if _, err := g.Convert(f(n)); err != nil {
					return fmt.Errorf("tracker %s: %w", name, err)
				}
				n++
			}
		}
		d := time.Since(t0)
		fmt.Printf("  %-50s %14s %s\n", name, rate(float64(n)/d.Seconds()), note)
		return nil
	}
	if err := measure("random single 4 KiB pages, alternating direction", "4 GiB guest",
		func(i int) memory.ConvertRequest {
			return memory.ConvertRequest{GPA: memory.GPA(idx[i&(len(idx)-1)] * memory.PageSize), NPages: 1, Attrs: attrs(i&1 == 0)}
		}); err != nil {
		return err
	}
	if err := measure("4 KiB checkerboard, sequential", "every other page, flip per pass",
		func(i int) memory.ConvertRequest {
			p := uint64(i*2) % pages
			return memory.ConvertRequest{GPA: memory.GPA(p * memory.PageSize), NPages: 1, Attrs: attrs((uint64(i*2)/pages)%2 == 0)}
		}); err != nil {
		return err
	}
	t0 := time.Now()
	for i := 0; i < 16; i++ {
		if _, err := g.Convert(memory.ConvertRequest{GPA: 0, NPages: pages, Attrs: attrs(i%2 == 0)}); err != nil {
			return err
		}
	}
	d := time.Since(t0) / 16
	fmt.Printf("  %-50s %14s %s\n", "whole 4 GiB in one request", rate(float64(pages)/d.Seconds())+"*", fmt.Sprintf("*pages/s; %v per flip of %d pages", d.Round(time.Microsecond), pages))
	return nil
}

func attrs(private bool) uint64 {
	if private {
		return memory.AttrPrivate
	}
	return 0
}

// ---------------------------------------------------------------- guest

// markDev timestamps 4-byte writes (mark numbers) from the guest.
type markDev struct {
	mu    sync.Mutex
	marks map[uint32]time.Time
}

func (d *markDev) BusRead(_ int, _ uint64, data []byte) { clear(data) }
func (d *markDev) BusWrite(_ int, _ uint64, data []byte) {
	var b [4]byte
	copy(b[:], data)
	d.mu.Lock()
	d.marks[binary.LittleEndian.Uint32(b[:])] = time.Now()
	d.mu.Unlock()
}

const (
	guestOrg  = 0x100000
	guestList = 0x108000 // 256 entries of 32 bytes
	markPort  = 0x4f0
	convBase  = 0x200000 // pages converted by the guests: [2 MiB, 2 MiB + 256 pages)
)

// The guest drops to CPL3 with IOPL 3 and marks the start (1) and end (2)
// of its loop; a failed conversion ends it with the status as exit code.
// (a format string: the snippet's % signs are escaped.)
var guestHead = strings.ReplaceAll(tinyguest.EnterUserMode(0x110000, "user"), "%", "%%") + `
	mov $%#x, %%dx
	mov $1, %%eax
	out %%eax, %%dx
`

const guestTail = `
	mov $%#x, %%dx
	mov $2, %%eax
	out %%eax, %%dx
	xor %%eax, %%eax
	out %%eax, $0xf4
fail:
	out %%eax, $0xf4
`

// registerGuest: n conversions of one page each, 5 exits per conversion
// (GPA_LO, GPA_HI, NPAGES, ATTRS, CONVERT read), alternating direction.
func registerGuest(n int) string {
	return fmt.Sprintf(guestHead, markPort) + fmt.Sprintf(`
	mov $%d, %%r12
	xor %%r13d, %%r13d             # page index 0..255
	xor %%r14d, %%r14d             # attrs
1:	mov %%r13, %%rdi
	shl $12, %%rdi
	add $%#x, %%rdi
	mov $0xa53, %%dx
	mov %%edi, %%eax
	out %%eax, %%dx                # GPA_LO
	inc %%dx
	shr $32, %%rdi
	mov %%edi, %%eax
	out %%eax, %%dx                # GPA_HI
	inc %%dx
	mov $1, %%eax
	out %%eax, %%dx                # NPAGES
	inc %%dx
	mov %%r14d, %%eax
	out %%eax, %%dx                # ATTRS
	inc %%dx
	in %%dx, %%eax                 # CONVERT
	test %%eax, %%eax
	jnz fail
	inc %%r13
	cmp $256, %%r13
	jb 2f
	xor %%r13d, %%r13d
	xor $0x10, %%r14d
2:	dec %%r12
	jnz 1b
`, n, convBase) + fmt.Sprintf(guestTail, markPort)
}

// batchGuest: n conversions in lists of 256 one-page entries; one exit
// (LIST_CONVERT read) per list, the list address and count set once.
func batchGuest(n int) string {
	return fmt.Sprintf(guestHead, markPort) + fmt.Sprintf(`
	mov $%#x, %%rbx                # build the list: page i of the range
	xor %%ecx, %%ecx
3:	mov %%rcx, %%rax
	shl $12, %%rax
	add $%#x, %%rax
	mov %%rcx, %%rdi
	shl $5, %%rdi
	mov %%rax, (%%rbx,%%rdi)
	movq $1, 8(%%rbx,%%rdi)
	movq $0, 16(%%rbx,%%rdi)
	inc %%ecx
	cmp $256, %%ecx
	jb 3b
	mov $0xa59, %%dx
	mov %%ebx, %%eax
	out %%eax, %%dx                # LIST_LO
	inc %%dx
	xor %%eax, %%eax
	out %%eax, %%dx                # LIST_HI
	inc %%dx
	mov $256, %%eax
	out %%eax, %%dx                # LIST_COUNT
	inc %%dx                       # LIST_CONVERT
	mov $%d, %%r12
	xor %%r14d, %%r14d
1:	xor $0x10, %%r14               # flip every entry's direction
	xor %%ecx, %%ecx
4:	mov %%rcx, %%rdi
	shl $5, %%rdi
	mov %%r14, 16(%%rbx,%%rdi)
	inc %%ecx
	cmp $256, %%ecx
	jb 4b
	in %%dx, %%eax
	test %%eax, %%eax
	jnz fail
	dec %%r12
	jnz 1b
`, guestList, convBase, n/256) + fmt.Sprintf(guestTail, markPort)
}

func runGuest(src string) (time.Duration, memory.Stats, error) {
	code, err := tinyguest.Assemble(src, guestOrg)
	if err != nil {
		return 0, memory.Stats{}, err
	}
	cfg := vmm.DefaultConfig()
	cfg.Memory = 16 << 20
	cfg.Timeout = 60 * time.Second
	cfg.TestUserConversions = true // the guest converts from CPL3, natively
	m, err := vmm.New(cfg)
	if err != nil {
		return 0, memory.Stats{}, err
	}
	defer m.Close()
	marks := &markDev{marks: map[uint32]time.Time{}}
	if err := m.PIO().Register("mark", markPort, 4, marks); err != nil {
		return 0, memory.Stats{}, err
	}
	if err := m.LoadRaw(vmm.RawImage{Data: code, Addr: guestOrg}); err != nil {
		return 0, memory.Stats{}, err
	}
	res, err := m.Run(context.Background())
	if err != nil {
		return 0, memory.Stats{}, err
	}
	if res.Outcome != vmm.OutcomePowerOff || res.Code != 0 {
		return 0, memory.Stats{}, fmt.Errorf("guest ended with %v code %d (%s)\n%s", res.Outcome, int32(res.Code), res.Detail, res.Dump)
	}
	t1, ok1 := marks.marks[1]
	t2, ok2 := marks.marks[2]
	if !ok1 || !ok2 {
		return 0, memory.Stats{}, fmt.Errorf("guest marks missing: %v", marks.marks)
	}
	return t2.Sub(t1), m.ConversionStats(), nil
}

func guestBench() error {
	fmt.Printf("\n%-52s %14s %s\n", "end to end, tiny guest at CPL3 -> pvmem port", "conversions/s", "notes")
	d, st, err := runGuest(registerGuest(*regN))
	if err != nil {
		return fmt.Errorf("register interface: %w", err)
	}
	if st.ToPrivate+st.ToShared != uint64(*regN) {
		return fmt.Errorf("register interface: %d conversions recorded, want %d", st.ToPrivate+st.ToShared, *regN)
	}
	fmt.Printf("  %-50s %14s %s\n", "register interface (1 page, 5 port exits each)", rate(float64(*regN)/d.Seconds()),
		fmt.Sprintf("%d conversions in %v, %.1f µs per exit", *regN, d.Round(time.Millisecond), float64(d.Microseconds())/float64(5**regN)))
	n := *batchN / 256 * 256
	d, st, err = runGuest(batchGuest(n))
	if err != nil {
		return fmt.Errorf("request lists: %w", err)
	}
	if st.ToPrivate+st.ToShared != uint64(n) || st.PagesConverted != uint64(n) {
		return fmt.Errorf("request lists: %d conversions (%d pages changed) recorded, want %d", st.ToPrivate+st.ToShared, st.PagesConverted, n)
	}
	fmt.Printf("  %-50s %14s %s\n", "request lists (256 one-page entries, 1 exit each)", rate(float64(n)/d.Seconds()),
		fmt.Sprintf("%d conversions in %v, %.1f µs per list", n, d.Round(time.Millisecond), float64(d.Microseconds())/float64(n/256)))
	return nil
}

// ---------------------------------------------------------------- footprint

type sequence struct {
	name  string
	steps func(pages uint64, do func(first, n uint64, private bool) error) error
	// startPrivate: all RAM is private before the guest touches it (a
	// protected guest); otherwise it starts shared.
	startPrivate bool
}

// protectedBoot models what a protected Linux guest (vmm boot
// --private-memory, docs/conversion.md "Protected guests") does to its RAM,
// which starts private (sequence.startPrivate): the kernel shares its
// swiotlb pool (one contiguous run, 1/32 of RAM as the VMM suggests, at
// least 8 MiB, at most half of RAM here) and its virtqueue rings (one page
// each, scattered: 24 rings for blk, net, rng, console and vsock).
func protectedBoot(pages uint64, do func(uint64, uint64, bool) error) error {
	pool := min(max(pages/32, 8<<20/memory.PageSize), pages/2)
	if err := do(pages/4, pool, false); err != nil {
		return err
	}
	const rings = 24
	for i := uint64(0); i < rings; i++ {
		if err := do(pages/2+i*(pages/2)/rings, 1, false); err != nil {
			return err
		}
	}
	return nil
}

func sequences(storm int) []sequence {
	return []sequence{
		{name: "protected boot (swiotlb+rings)", steps: protectedBoot, startPrivate: true},
		{name: "4K checkerboard", steps: func(pages uint64, do func(uint64, uint64, bool) error) error {
			for p := uint64(0); p < pages; p += 2 {
				if err := do(p, 1, true); err != nil {
					return err
				}
			}
			return nil
		}},
		{name: "2M runs (every other 2M private)", steps: func(pages uint64, do func(uint64, uint64, bool) error) error {
			for p := uint64(0); p < pages; p += 1024 {
				if err := do(p, 512, true); err != nil {
					return err
				}
			}
			return nil
		}},
		{name: "whole-RAM flips (P,S,P)", steps: func(pages uint64, do func(uint64, uint64, bool) error) error {
			for _, priv := range []bool{true, false, true} {
				if err := do(0, pages, priv); err != nil {
					return err
				}
			}
			return nil
		}},
		{name: fmt.Sprintf("random storm (%d, 1-16 pages)", storm), steps: func(pages uint64, do func(uint64, uint64, bool) error) error {
			rng := rand.New(rand.NewPCG(7, 7))
			for i := 0; i < storm; i++ {
				first := rng.Uint64N(pages)
				if err := do(first, 1+rng.Uint64N(min(pages-first, 16)), rng.IntN(2) == 0); err != nil {
					return err
				}
			}
			return nil
		}},
	}
}

type kvmCtx struct {
	sys *kvm.System
	vm  *kvm.VM
}

func (k *kvmCtx) guestMemfd(size uint64) (memory.Backend, error) {
	fd, err := k.vm.CreateGuestMemfd(size, kvm.GuestMemfdFlagMMAP|kvm.GuestMemfdFlagInitShared)
	if err != nil {
		return nil, fmt.Errorf("guest_memfd: %w", err)
	}
	return memory.NewGuestMemfd(fd, size, memory.Options{})
}

func newBacking(k *kvmCtx, kind memory.Kind, size uint64) (memory.Backend, error) {
	if kind == memory.KindGuestMemfd {
		return k.guestMemfd(size)
	}
	return memory.NewBackend(kind, size, memory.Options{HugePageSize: memory.HugePage2M})
}

func footprintTable() error {
	size := *footprintSize << 20
	if size == 0 || size%memory.HugePage2M != 0 {
		return fmt.Errorf("-footprint-mib must be a positive multiple of 2")
	}
	pages := size / memory.PageSize
	sys, err := kvm.Open(kvm.DefaultPath)
	if err != nil {
		return err
	}
	defer sys.Close()
	vm, err := sys.CreateVM(kvm.VMTypeDefault)
	if err != nil {
		return err
	}
	defer vm.Close()
	k := &kvmCtx{sys: sys, vm: vm}

	fmt.Printf("\nfootprint: host memory for guest RAM / guest RAM touched (%d MiB, every page touched first)\n", size>>20)
	fmt.Printf("%-34s %-36s %9s %11s %8s %s\n", "sequence", "setup", "footprint", "time", "content", "notes")
	var failures []string
	for _, seq := range sequences(*stormN) {
		for _, kind := range []memory.Kind{memory.KindAnon, memory.KindMemfd, memory.KindHugetlb, memory.KindGuestMemfd} {
			r, err := inPlace(k, kind, size, pages, seq)
			if err != nil {
				return fmt.Errorf("%s, in place %s: %w", seq.name, kind, err)
			}
			fmt.Printf("%-34s %-36s %8.2fx %11v %8v %s\n", seq.name, "in place, "+string(kind), r.ratio, r.d.Round(time.Microsecond), r.kept, r.note)
			if r.ratio != 1.0 || !r.kept || r.bad != "" {
				failures = append(failures, fmt.Sprintf("%s / in place %s: footprint %.3fx, content kept %v %s", seq.name, kind, r.ratio, r.kept, r.bad))
			}
		}
		for _, shared := range []memory.Kind{memory.KindMemfd, memory.KindHugetlb} {
			r, err := baseline(k, shared, size, pages, seq)
			if err != nil {
				return fmt.Errorf("%s, baseline %s: %w", seq.name, shared, err)
			}
			fmt.Printf("%-34s %-36s %8.2fx %11v %8v %s\n", seq.name, "discard, "+string(shared)+" + guest_memfd", r.ratio, r.d.Round(time.Microsecond), r.kept, r.note)
		}
	}
	if len(failures) > 0 {
		return fmt.Errorf("in-place conversion did not hold:\n  %s", strings.Join(failures, "\n  "))
	}
	return nil
}

type result struct {
	ratio float64
	d     time.Duration
	kept  bool
	note  string
	bad   string
}

func inPlace(k *kvmCtx, kind memory.Kind, size, pages uint64, seq sequence) (result, error) {
	b, err := newBacking(k, kind, size)
	if err != nil {
		return result{}, err
	}
	defer b.Close()
	g, err := memory.NewGuestWithOptions(memory.GuestOptions{InitialPrivate: seq.startPrivate}, memory.Region{GPA: 0, Size: size, Backend: b})
	if err != nil {
		return result{}, err
	}
	mem := b.Bytes()
	for p := uint64(0); p < pages; p++ { // the guest touched all its RAM
		mem[p*memory.PageSize] = byte(p) | 1
	}
	u0, err := b.Usage()
	if err != nil {
		return result{}, err
	}
	pool0, _ := memory.ReadHugePool(memory.HugePage2M)
	t0 := time.Now()
	err = seq.steps(pages, func(first, n uint64, private bool) error {
		_, err := g.Convert(memory.ConvertRequest{GPA: memory.GPA(first * memory.PageSize), NPages: n, Attrs: attrs(private)})
		return err
	})
	d := time.Since(t0)
	if err != nil {
		return result{}, err
	}
	// The guest uses the pages after converting them: in place, that is
	// the same memory.
	kept := true
	for p := uint64(0); p < pages; p++ {
		kept = kept && mem[p*memory.PageSize] == byte(p)|1
	}
	u, err := b.Usage()
	if err != nil {
		return result{}, err
	}
	r := result{ratio: float64(u.InUse) / float64(size), d: d, kept: kept}
	if u.InUse != u0.InUse {
		r.bad = fmt.Sprintf("footprint changed %d -> %d bytes", u0.InUse, u.InUse)
	}
	st := g.Stats()
	r.note = fmt.Sprintf("%d requests, %d pages changed", st.ToPrivate+st.ToShared, st.PagesConverted)
	if kind == memory.KindHugetlb {
		pool1, _ := memory.ReadHugePool(memory.HugePage2M)
		r.note += fmt.Sprintf("; file %d huge pages, pool in use %d -> %d", u.HugePages, pool0.InUse(), pool1.InUse())
		if u.HugePages != u0.HugePages {
			r.bad += fmt.Sprintf(" huge pages %d -> %d", u0.HugePages, u.HugePages)
		}
	}
	return r, nil
}

func baseline(k *kvmCtx, shared memory.Kind, size, pages uint64, seq sequence) (result, error) {
	sb, err := newBacking(k, shared, size)
	if err != nil {
		return result{}, err
	}
	defer sb.Close()
	pb, err := k.guestMemfd(size)
	if err != nil {
		return result{}, err
	}
	defer pb.Close()
	d, err := memory.NewDiscardBaseline(sb, pb)
	if err != nil {
		return result{}, err
	}
	if seq.startPrivate {
		if err := d.Convert(0, pages, true); err != nil {
			return result{}, err
		}
	}
	for p := uint64(0); p < pages; p++ { // the guest touched all its RAM, on its current side
		if err := d.Touch(p, 1, byte(p)|1); err != nil {
			return result{}, err
		}
	}
	punches0 := d.Punches()
	t0 := time.Now()
	err = seq.steps(pages, func(first, n uint64, private bool) error {
		if err := d.Convert(first, n, private); err != nil {
			return err
		}
		return d.Touch(first, n, 1) // the guest uses what it converted
	})
	dur := time.Since(t0)
	if err != nil {
		return result{}, err
	}
	kept := true
	for p := uint64(0); p < pages; p++ {
		kept = kept && d.Read(p) == byte(p)|1
	}
	u, err := d.Usage()
	if err != nil {
		return result{}, err
	}
	return result{ratio: float64(u.InUse) / float64(size), d: dur, kept: kept,
		note: fmt.Sprintf("%d fallocate(PUNCH_HOLE)", d.Punches()-punches0)}, nil
}

// ---------------------------------------------------------------- helpers

func rate(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.2f M", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.1f k", v/1e3)
	}
	return fmt.Sprintf("%.0f", v)
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	n := strings.Count(string(b), "\nprocessor") + 1
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "model name") {
			if i := strings.Index(l, ":"); i >= 0 {
				return fmt.Sprintf("%d x %s", n, strings.TrimSpace(l[i+1:]))
			}
		}
	}
	return "unknown CPU"
}
