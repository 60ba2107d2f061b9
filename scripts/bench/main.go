package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vmmgo/vmm/internal/guestimage"
	"github.com/vmmgo/vmm/scripts/benchguest"
)

// The VMMs, in table column order.
const (
	vmmOurs  = "ours"
	vmmQEMU  = "QEMU"
	vmmGokvm = "gokvm"
	// vmmFloor is scripts/bench/floor/floor.c: raw KVM ioctls and nothing else,
	// the lower bound of start-up, exit cost and footprint.
	vmmFloor = "floor"
)

var vmmNames = []string{vmmOurs, vmmQEMU, vmmGokvm, vmmFloor}

type options struct {
	reps, exitReps, linuxReps int
	n1, n2                    int
	tinyMem, linuxMem         int // MiB
	linuxTimeout              time.Duration
	skipLinux                 bool
	backends                  []string
	outDir                    string
	convTimeout               time.Duration
	budget                    time.Duration
	began                     time.Time
	// hogs CPU-bound processes (yes >/dev/null) run beside the whole
	// bench; doc is the markdown file whose results section for this run's
	// label the report replaces.
	hogs int
	doc  string
}

// bench holds the tools and what was measured.
type bench struct {
	opt     options
	root    string
	cache   string
	ours    string
	qemu    string
	qemuVer string
	gokvm   string
	floor   string
	// qemuCPU is the -cpu model QEMU runs the benchmark guest with here
	// (chooseQEMUCPU), qemuCPUNote how it was chosen.
	qemuCPU, qemuCPUNote string
	// cmdlines are the exact command lines, in run order, one per VMM and
	// workload kind (the first run of each).
	cmdlines  []string
	cmdSeen   map[string]bool
	logf      func(string, ...any)
	rows      []*row
	failures  []failureNote
	linuxCmd  string
	kernel    guestimage.KernelImages
	initramfs string
	convbench string
	hugeNote  string
	// linuxSkipped says which boots the budget dropped.
	linuxSkipped string
	// protected is what the protected boots (--private-memory) reported.
	protected []protectedStats
}

// row is one line of the results table: one quantity for each VMM.
type row struct {
	workload string
	kind     string // "time" or "bytes"
	values   map[string]sample
	notes    map[string]string // why a VMM has no value
}

func newRow(workload, kind string) *row {
	return &row{workload: workload, kind: kind, values: map[string]sample{}, notes: map[string]string{}}
}

// failureNote is how a VMM failed a workload, with its own words.
type failureNote struct {
	vmm, workload, message string
}

func main() {
	var o options
	var backends string
	flag.IntVar(&o.reps, "reps", 5, "repetitions of the start-up and footprint runs")
	flag.IntVar(&o.exitReps, "exit-reps", 3, "repetitions of each exit-loop run")
	flag.IntVar(&o.linuxReps, "linux-reps", 2, "repetitions of each Linux boot")
	flag.IntVar(&o.n1, "n1", 5000, "exits in the short exit-loop guest")
	flag.IntVar(&o.n2, "n2", 50000, "exits in the long exit-loop guest")
	flag.IntVar(&o.tinyMem, "tiny-mem", 128, "guest RAM (MiB) for the benchmark guest")
	flag.IntVar(&o.linuxMem, "linux-mem", 256, "guest RAM (MiB) for the Linux boots")
	flag.DurationVar(&o.linuxTimeout, "linux-timeout", 240*time.Second, "bound on each Linux boot")
	flag.BoolVar(&o.skipLinux, "skip-linux", false, "skip the Linux boots")
	flag.StringVar(&backends, "backends", "anon,memfd,hugetlb,guest_memfd", "our memory backends for the Linux boot")
	flag.StringVar(&o.outDir, "out", "", "directory for the PNG chart (default: docs/ of the source tree)")
	flag.DurationVar(&o.convTimeout, "conv-timeout", 180*time.Second, "bound on scripts/convbench")
	flag.DurationVar(&o.budget, "budget", 14*time.Minute, "whole-run budget: Linux boots after the first round are skipped when the next one would overrun it")
	flag.IntVar(&o.hogs, "hogs", 0, "run this many CPU hogs (`yes >/dev/null`) during the whole run, killed at its end")
	flag.StringVar(&o.doc, "doc", "", "also write the report into this markdown `file`, replacing its results section for the same load (quiet or N CPU hogs)")
	flag.Parse()
	o.backends = strings.Split(backends, ",")
	if o.n2 <= o.n1 || o.n1 < 0 || o.reps < 1 || o.exitReps < 1 || o.linuxReps < 1 {
		fmt.Fprintln(os.Stderr, "bench: want 0 <= n1 < n2 and positive repetitions")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := realMain(ctx, o); err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		os.Exit(1)
	}
}

func realMain(ctx context.Context, o options) error {
	began := time.Now()
	o.began = began
	b := &bench{opt: o, logf: func(f string, a ...any) {
		fmt.Fprintf(os.Stderr, "[%6.1fs] "+f+"\n", append([]any{time.Since(began).Seconds()}, a...)...)
	}}
	var err error
	if b.root, err = guestimage.SourceDir(); err != nil {
		return err
	}
	b.cache = filepath.Join(guestimage.CacheDir(), "bench")
	if err := os.MkdirAll(b.cache, 0o755); err != nil {
		return err
	}
	if o.outDir == "" {
		o.outDir = filepath.Join(b.root, "docs")
		b.opt.outDir = o.outDir
	}
	if b.ours, err = buildOurs(ctx, b.root, b.cache); err != nil {
		return err
	}
	stopHogs, err := startHogs(o.hogs)
	if err != nil {
		return err
	}
	defer stopHogs()
	if b.qemu, b.qemuVer, err = ensureQEMU(ctx, b.logf); err != nil {
		return err
	}
	if b.gokvm, err = ensureGokvm(ctx, b.cache, b.logf); err != nil {
		return err
	}
	if b.floor, err = buildFloor(ctx, b.cache); err != nil {
		return err
	}
	b.logf("tools: ours %s; %s (%s); gokvm %s@%s; floor %s", b.ours, b.qemu, b.qemuVer, gokvmModule, gokvmVersion, b.floor)
	if err := b.chooseQEMUCPU(ctx); err != nil {
		return err
	}
	b.logf("QEMU CPU model: -cpu %s (%s)", b.qemuCPU, b.qemuCPUNote)

	if err := b.startup(ctx); err != nil {
		return err
	}
	if err := b.exitCost(ctx); err != nil {
		return err
	}
	if err := b.idleFootprint(ctx); err != nil {
		return err
	}
	if !o.skipLinux {
		if err := b.linux(ctx); err != nil {
			return err
		}
	}
	b.convBench(ctx)

	date := time.Now().Format("2006-01-02")
	name := "bench-" + date
	if o.hogs > 0 {
		name += fmt.Sprintf("-%dhogs", o.hogs) // beside the quiet run's chart
	}
	png := filepath.Join(o.outDir, name+".png")
	if err := writeChart(png, b); err != nil {
		return fmt.Errorf("chart: %w", err)
	}
	b.logf("wrote %s", png)
	stopHogs()
	var rep strings.Builder
	b.report(&rep, date, filepath.Base(png), time.Since(began))
	os.Stdout.WriteString(rep.String())
	if o.doc != "" {
		if err := replaceResults(o.doc, loadLabel(o.hogs), rep.String()); err != nil {
			return fmt.Errorf("update %s: %w", o.doc, err)
		}
		b.logf("updated %s", o.doc)
	}
	return b.peersRan()
}

// tinyArgv is the command line that boots the benchmark guest ELF.
func (b *bench) tinyArgv(vmm, elf string) []string {
	mem := fmt.Sprintf("%dM", b.opt.tinyMem)
	switch vmm {
	case vmmOurs:
		return []string{b.ours, "boot", "--kernel", elf, "-m", mem}
	case vmmQEMU:
		return b.qemuTinyArgv(b.qemuCPU, elf)
	case vmmFloor:
		return []string{b.floor, elf, strconv.Itoa(b.opt.tinyMem)}
	default:
		return []string{b.gokvm, "boot", "-k", elf, "-m", mem, "-p", "console=ttyS0"}
	}
}

// markers are the benchmark guest's two COM1 bytes.
var markers = []pattern{
	{name: "marker", text: []byte{benchguest.Marker}},
	{name: "end", text: []byte{benchguest.EndMarker}},
}

func (b *bench) guest(ctx context.Context, opt benchguest.Options) (string, error) {
	return benchguest.Build(ctx, filepath.Join(b.cache, "guests"), opt)
}

// tinyRun runs the benchmark guest once and checks it behaved.
func (b *bench) tinyRun(ctx context.Context, vmm, elf string, watch []pattern, delay time.Duration) (runResult, error) {
	spec := runSpec{argv: b.tinyArgv(vmm, elf), pty: vmm == vmmGokvm, watch: watch,
		timeout: 120 * time.Second, guestKB: uint64(b.opt.tinyMem) << 10, sampleDelay: delay}
	b.recordCmd("benchmark guest", vmm, spec.argv)
	res, err := runVMM(ctx, spec)
	if err != nil {
		return res, err
	}
	if res.timedOut {
		return res, fmt.Errorf("%s timed out; stderr: %s", vmm, lastLines(string(res.stderr), 5))
	}
	if _, ok := res.seen["marker"]; !ok {
		return res, fmt.Errorf("%s: no start marker; exit %d; stderr: %s", vmm, res.exitCode, lastLines(string(res.stderr), 5))
	}
	return res, nil
}

// startup: workload 1.
func (b *bench) startup(ctx context.Context) error {
	elf, err := b.guest(ctx, benchguest.Options{})
	if err != nil {
		return err
	}
	first := newRow("Start-up: process start → first guest port write seen on stdout", "time")
	exit := newRow("Start-up: process start → process exit (guest powers off at once)", "time")
	b.logf("start-up: %d runs per VMM", b.opt.reps)
	for i := 0; i < b.opt.reps; i++ {
		for _, v := range vmmNames {
			res, err := b.tinyRun(ctx, v, elf, markers, 0)
			if err != nil {
				first.notes[v] = err.Error()
				continue
			}
			first.values[v] = append(first.values[v], secs(res.seen["marker"]))
			exit.values[v] = append(exit.values[v], secs(res.exitAt))
		}
	}
	b.rows = append(b.rows, first, exit)
	return nil
}

// exitCost: workload 2, with the loop at CPL0 and at CPL3.
func (b *bench) exitCost(ctx context.Context) error {
	for _, user := range []bool{false, true} {
		mode := "CPL0 (32-bit kernel mode: emulated here)"
		if user {
			mode = "CPL3 (64-bit user mode: native here)"
		}
		r := newRow("Exit cost per port write, loop at "+mode, "time")
		var elfs [2]string
		for i, n := range []int{b.opt.n1, b.opt.n2} {
			e, err := b.guest(ctx, benchguest.Options{Loops: n, User: user})
			if err != nil {
				return err
			}
			elfs[i] = e
		}
		b.logf("exit cost %s: N=%d and N=%d, %d runs each per VMM", mode, b.opt.n1, b.opt.n2, b.opt.exitReps)
		for i := 0; i < b.opt.exitReps; i++ {
			for _, v := range vmmNames {
				var t [2]float64
				ok := true
				for j := range elfs {
					res, err := b.tinyRun(ctx, v, elfs[j], markers, 0)
					if err == nil {
						if _, seen := res.seen["end"]; !seen {
							err = fmt.Errorf("no end marker: %s", tinyFailure(res))
						}
					}
					if err != nil {
						r.notes[v] = err.Error()
						ok = false
						break
					}
					// Marker to end marker: the loop alone, without
					// start-up and power-off.
					t[j] = secs(res.seen["end"] - res.seen["marker"])
				}
				if ok {
					r.values[v] = append(r.values[v], (t[1]-t[0])/float64(b.opt.n2-b.opt.n1))
				}
			}
		}
		b.rows = append(b.rows, r)
	}
	return nil
}

// idleFootprint: workload 4 at the end of workload 1's guest (idle variant).
func (b *bench) idleFootprint(ctx context.Context) error {
	elf, err := b.guest(ctx, benchguest.Options{Idle: true})
	if err != nil {
		return err
	}
	r := newRow(fmt.Sprintf("Footprint: VMM RSS outside guest RAM, benchmark guest running (%d MiB RAM)", b.opt.tinyMem), "bytes")
	watch := []pattern{{name: "marker", text: []byte{benchguest.Marker}, action: actSampleStop}}
	reps := min(b.opt.reps, 3)
	b.logf("footprint (idle guest): %d runs per VMM", reps)
	for i := 0; i < reps; i++ {
		for _, v := range vmmNames {
			res, err := b.tinyRun(ctx, v, elf, watch, 500*time.Millisecond)
			if err != nil {
				r.notes[v] = err.Error()
				continue
			}
			if res.footprint == nil {
				r.notes[v] = "smaps could not be read or no guest-RAM mapping found"
				continue
			}
			r.values[v] = append(r.values[v], float64(res.footprint.VMMRSS))
		}
	}
	b.rows = append(b.rows, r)
	return nil
}

// tinyFailure says why the benchmark guest did not finish, in the VMM's words.
func tinyFailure(res runResult) string {
	if l := lineWith(res.stdout, "err:"); l != "" {
		return l
	}
	if res.timedOut {
		return "timed out"
	}
	return fmt.Sprintf("exit status %d: %s", res.exitCode, lastLines(strings.TrimSpace(string(res.stderr)), 2))
}

var cmdlineRE = regexp.MustCompile(`cmdline="((?:[^"\\]|\\.)*)"`)

// linux: workload 3 (and 4 at "Run /init").
func (b *bench) linux(ctx context.Context) error {
	var err error
	b.logf("guest kernel and initramfs (internal/guestimage)")
	if b.kernel, err = guestimage.Kernel(ctx, nil); err != nil {
		return err
	}
	if b.initramfs, err = guestimage.Initramfs(ctx, guestimage.InitramfsOptions{}); err != nil {
		return err
	}
	restore := b.reserveHugePages()
	defer restore()

	mem := fmt.Sprintf("%dM", b.opt.linuxMem)
	guestKB := uint64(b.opt.linuxMem) << 10
	watch := []pattern{
		{name: "init", text: []byte("Run /init as init process"), action: actSampleStop},
		{name: "kernel panic", text: []byte("Kernel panic"), action: actFail},
		{name: "KVM internal error", stderr: true, text: []byte("KVM internal error"), action: actFail},
		{name: "gokvm vCPU stopped", text: []byte("CPU 0 exits"), action: actFail},
	}
	boot := map[string]*row{}
	foot := map[string]*row{}
	var order []string
	for _, be := range b.opt.backends {
		boot[be] = newRow(fmt.Sprintf("Linux boot: process start → \"Run /init\" (ours: %s memory)", be), "time")
		foot[be] = newRow(fmt.Sprintf("Footprint: VMM RSS outside guest RAM at \"Run /init\" (ours: %s memory)", be), "bytes")
		order = append(order, be)
	}
	// The protected boot (--private-memory, issue 14) on the first backend:
	// its own rows, ours only (the peers have no such mode).
	protBoot := newRow(fmt.Sprintf("Protected Linux boot (--private-memory, %s memory): process start → \"Run /init\"", order[0]), "time")
	protConv := newRow("Protected Linux boot: time in the VMM's conversions up to \"Run /init\"", "time")
	type job struct {
		vmm, backend string
		protected    bool
	}
	var jobs []job
	for _, be := range order {
		jobs = append(jobs, job{vmm: vmmOurs, backend: be})
	}
	jobs = append(jobs, job{vmm: vmmOurs, backend: order[0], protected: true})
	// The floor cannot boot Linux (no devices, no boot protocol).
	jobs = append(jobs, job{vmm: vmmQEMU, backend: order[0]}, job{vmm: vmmGokvm, backend: order[0]})
	b.logf("Linux boot: %d runs of %d configurations, %v bound each", b.opt.linuxReps, len(jobs), b.opt.linuxTimeout)
	longest := 60 * time.Second // guess until a boot has been timed
	skipped := 0
	for i := 0; i < b.opt.linuxReps; i++ {
		for _, j := range jobs {
			// Keep one convbench run's worth of time in reserve.
			if i > 0 && time.Since(b.opt.began)+longest+30*time.Second > b.opt.budget {
				skipped++
				continue
			}
			var argv []string
			switch j.vmm {
			case vmmOurs:
				argv = []string{b.ours, "boot", "--kernel", b.kernel.VMLinux, "--initrd", b.initramfs, "-m", mem,
					"--memory-backend", j.backend, "--log-level", "info"}
				if j.protected {
					argv = append(argv, "--private-memory")
				}
			case vmmQEMU:
				argv = []string{b.qemu, "-M", "microvm", "-enable-kvm", "-cpu", b.qemuCPU, "-m", mem,
					"-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio", "-no-reboot",
					"-kernel", b.kernel.VMLinux, "-initrd", b.initramfs, "-append", b.peerCmdline()}
			default:
				argv = []string{b.gokvm, "boot", "-k", b.kernel.VMLinux, "-i", b.initramfs, "-m", mem, "-p", b.peerCmdline()}
			}
			kind := "Linux, " + j.backend
			if j.protected {
				kind += ", --private-memory"
			}
			b.logf("  run %d: %s (%s)", i+1, j.vmm, kind)
			b.recordCmd(kind, j.vmm, argv)
			t0 := time.Now()
			res, err := runVMM(ctx, runSpec{argv: argv, pty: j.vmm == vmmGokvm, watch: watch,
				timeout: b.opt.linuxTimeout, guestKB: guestKB, reportBeforeStop: j.protected})
			if err != nil {
				return err
			}
			longest = max(longest, time.Since(t0))
			if j.vmm == vmmOurs && b.linuxCmd == "" {
				if m := cmdlineRE.FindSubmatch(res.stderr); m != nil {
					if s, err := strconv.Unquote(`"` + string(m[1]) + `"`); err == nil {
						b.linuxCmd = s
					}
				}
			}
			r, f := boot[j.backend], foot[j.backend]
			if j.protected {
				at, ok := res.seen["init"]
				ps, perr := parseProtected(res.stdout, res.stderr)
				switch {
				case ok && perr == nil:
					protBoot.values[vmmOurs] = append(protBoot.values[vmmOurs], secs(at))
					protConv.values[vmmOurs] = append(protConv.values[vmmOurs], secs(ps.vmmTime))
					b.protected = append(b.protected, ps)
					b.logf("    Run /init after %s; %s", fmtDur(secs(at)), ps)
				case ok:
					msg := "reached Run /init, but " + perr.Error()
					b.logf("    %s", msg)
					protBoot.values[vmmOurs] = append(protBoot.values[vmmOurs], secs(at))
					protConv.notes[vmmOurs] = msg
					b.addFailure(j.vmm, "Protected Linux boot", msg)
				default:
					msg := describeFailure(j.vmm, res, b.opt.linuxTimeout)
					b.logf("    no Run /init: %s", msg)
					protBoot.notes[vmmOurs], protConv.notes[vmmOurs] = msg, "no Run /init"
					b.addFailure(j.vmm, "Protected Linux boot", msg)
				}
				continue
			}
			if at, ok := res.seen["init"]; ok {
				r.values[j.vmm] = append(r.values[j.vmm], secs(at))
				if res.footprint != nil {
					f.values[j.vmm] = append(f.values[j.vmm], float64(res.footprint.VMMRSS))
				}
				b.logf("    Run /init after %s", fmtDur(secs(at)))
				continue
			}
			msg := describeFailure(j.vmm, res, b.opt.linuxTimeout)
			b.logf("    no Run /init: %s", msg)
			r.notes[j.vmm] = msg
			f.notes[j.vmm] = "no Run /init"
			b.addFailure(j.vmm, "Linux boot", msg)
		}
	}
	if skipped > 0 {
		b.linuxSkipped = fmt.Sprintf("%d Linux boots after the first round were skipped to stay within the %v budget (the longest boot took %v)",
			skipped, b.opt.budget, longest.Round(time.Second))
		b.logf("%s", b.linuxSkipped)
	}
	for _, be := range order {
		b.rows = append(b.rows, boot[be])
	}
	b.rows = append(b.rows, protBoot, protConv)
	for _, be := range order {
		b.rows = append(b.rows, foot[be])
	}
	return nil
}

func (b *bench) addFailure(vmm, workload, msg string) {
	for _, f := range b.failures {
		if f.vmm == vmm && f.workload == workload && stampRE.ReplaceAllString(f.message, "") == stampRE.ReplaceAllString(msg, "") {
			return
		}
	}
	b.failures = append(b.failures, failureNote{vmm, workload, msg})
}

// peerCmdline is the command line our VMM booted with (read from its log),
// so the peers get exactly the same one.
func (b *bench) peerCmdline() string {
	if b.linuxCmd != "" {
		return b.linuxCmd
	}
	// Our VMM has not run (or logged) yet: the same defaults by hand
	// (vmm.DefaultCmdline + the emulated-CPU parameters of vmm/cpuid.go).
	return "console=ttyS0 earlyprintk=serial,ttyS0,115200 panic=-1 reboot=acpi no_timer_check " +
		"noxsave clearcpuid=129,140,141,148,150,151,153,154,156,157,158,291,293,295,296,304,306,307,308,317"
}

// stampRE matches a kernel log timestamp ("[   12.345678]").
var stampRE = regexp.MustCompile(`\[\s*[0-9]+\.[0-9]+\]`)

var qemuCodeRE = regexp.MustCompile(`<([0-9a-f]{2})>`)

// describeFailure says in the VMM's own words why a boot did not reach
// "Run /init", with the last console line the kernel printed.
func describeFailure(vmm string, res runResult, bound time.Duration) string {
	console := lastConsoleLine(res.stdout)
	var what string
	switch {
	case res.failure == "KVM internal error":
		lines := strings.Split(strings.ReplaceAll(string(res.stderr), "\r", ""), "\n")
		var keep []string
		for _, l := range lines {
			if strings.Contains(l, "KVM internal error") || strings.Contains(l, "emulation failure") {
				keep = append(keep, strings.TrimSpace(l))
			}
		}
		what = strings.Join(keep, "; ")
		if m := qemuCodeRE.FindSubmatch(res.stderr); m != nil {
			what += fmt.Sprintf(" (instruction byte at EIP: %s)", m[1])
		}
		what += "; QEMU then stays paused (killed by the bench)"
	case res.failure == "gokvm vCPU stopped":
		for _, l := range strings.Split(strings.ReplaceAll(string(res.stdout), "\r", ""), "\n") {
			if strings.HasPrefix(strings.TrimSpace(l), "err:") {
				what = strings.TrimSpace(l)
			}
		}
		what += "; gokvm then hangs (killed by the bench)"
	case res.failure == "kernel panic":
		what = "kernel panic: " + lineWith(res.stdout, "Kernel panic")
	case res.timedOut:
		what = fmt.Sprintf("no \"Run /init\" within %v (killed)", bound)
	default:
		what = fmt.Sprintf("exited with status %d: %s", res.exitCode, lastLines(strings.TrimSpace(string(res.stderr)), 2))
	}
	if console != "" {
		what += fmt.Sprintf(" — last console line: %q", console)
	}
	return what
}

func lineWith(b []byte, s string) string {
	for _, l := range strings.Split(strings.ReplaceAll(string(b), "\r", ""), "\n") {
		if strings.Contains(l, s) {
			return strings.TrimSpace(l)
		}
	}
	return ""
}

// lastConsoleLine is the last kernel log line ("[   12.345] ...") on stdout.
func lastConsoleLine(b []byte) string {
	lines := strings.Split(strings.ReplaceAll(string(b), "\r", ""), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		l := strings.TrimSpace(lines[i])
		if strings.HasPrefix(l, "[") && strings.Contains(l, "]") {
			return l
		}
	}
	return ""
}

// reserveHugePages makes sure the hugetlb backend has 2 MiB pages for one
// guest, raising vm.nr_hugepages by the shortfall (root) and returning a
// function that puts the old value back.
func (b *bench) reserveHugePages() func() {
	need := uint64(b.opt.linuxMem) / 2
	useHuge := false
	for _, be := range b.opt.backends {
		useHuge = useHuge || be == "hugetlb"
	}
	if !useHuge {
		return func() {}
	}
	const knob = "/proc/sys/vm/nr_hugepages"
	total, free, err := hugePool()
	if err != nil {
		b.hugeNote = "could not read the huge page pool: " + err.Error()
		return func() {}
	}
	if free >= need {
		b.hugeNote = fmt.Sprintf("2 MiB huge pages: %d free of %d reserved, %d needed", free, total, need)
		return func() {}
	}
	want := total + need - free
	if err := os.WriteFile(knob, []byte(strconv.FormatUint(want, 10)), 0o644); err != nil {
		b.hugeNote = fmt.Sprintf("only %d free 2 MiB pages and could not reserve more: %v", free, err)
		return func() {}
	}
	b.hugeNote = fmt.Sprintf("raised vm.nr_hugepages from %d to %d for the run, restored afterwards", total, want)
	b.logf("%s", b.hugeNote)
	return func() {
		_ = os.WriteFile(knob, []byte(strconv.FormatUint(total, 10)), 0o644)
	}
}

func hugePool() (total, free uint64, err error) {
	data, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, 0, err
	}
	for _, l := range strings.Split(string(data), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.ParseUint(f[1], 10, 64)
		switch f[0] {
		case "HugePages_Total:":
			total = v
		case "HugePages_Free:":
			free = v
		}
	}
	return total, free, nil
}

// convBench: workload 5, scripts/convbench's own output.
func (b *bench) convBench(ctx context.Context) {
	dir := filepath.Join(b.root, "scripts", "convbench")
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		b.convbench = "scripts/convbench does not exist in this tree: no memory-conversion numbers."
		b.logf("%s", b.convbench)
		return
	}
	gobin, err := goTool()
	if err != nil {
		b.convbench = err.Error()
		return
	}
	b.logf("memory conversion: go run ./scripts/convbench (bound %v)", b.opt.convTimeout)
	cctx, cancel := context.WithTimeout(ctx, b.opt.convTimeout)
	defer cancel()
	out, err := run(cctx, b.root, nil, gobin, "run", "./scripts/convbench")
	if err != nil {
		b.convbench = fmt.Sprintf("go run ./scripts/convbench failed: %v", err)
		return
	}
	b.convbench = strings.TrimSpace(out)
}
