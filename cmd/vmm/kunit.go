package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/vmmgo/vmm/internal/guestimage"
	"github.com/vmmgo/vmm/kvm"
	"github.com/vmmgo/vmm/virtio"
	"github.com/vmmgo/vmm/vmm"
	"github.com/vmmgo/vmm/vmm/vmtest"
	"github.com/vmmgo/vmm/vmm/vmtest/ktap"
)

// runKUnit implements `vmm kunit`: boot a kernel with KUnit enabled, print
// per-test results as kunit.py does, exit 0 when all passed and 1 when any
// failed (other codes as for `vmm boot`).
func runKUnit(ctx context.Context, args []string, stdout, stderr io.Writer) (int, error) {
	fset := flag.NewFlagSet("kunit", flag.ContinueOnError)
	fset.SetOutput(stdout)
	kernel := fset.String("kernel", "", "kernel `file` with KUnit built in (default: the cached vmm guest kernel, built on first use)")
	suite := fset.String("suite", "", "kunit.filter_glob: a `glob` over suite names, or suite.case (default: all built-in suites)")
	timeoutV := seconds(10 * time.Minute)
	fset.Var(&timeoutV, "timeout", "stop the guest after this `duration` (a bare number is seconds) and dump vCPU state")
	timeout := (*time.Duration)(&timeoutV)
	asJSON := fset.Bool("json", false, "print the parsed results as JSON on stdout (progress goes to stderr)")
	cpus := fset.Int("cpus", 1, "number of vCPUs")
	mem := fset.String("memory", "256M", "guest RAM `size`")
	extra := fset.String("cmdline", "", "extra kernel command line")
	consoleLog := fset.String("console-log", "", "write the raw serial console to this `file`")
	kvmPath := fset.String("kvm", "/dev/kvm", "KVM device `path`")
	logLevel := fset.String("log-level", "warn", "log `level`: error, warn, info, debug, trace")
	private := fset.Bool("private-memory", false, "start guest RAM private, as for vmm boot (the kernel must share what its devices need)")
	var df deviceFlags
	fset.Func("disk", "virtio-blk disk: `path[,readonly][,serial=ID]` (repeatable; the first is /dev/vda), as for vmm boot", func(s string) error {
		d, err := parseDisk(s)
		if err != nil {
			return err
		}
		df.disks = append(df.disks, d)
		return nil
	})
	fset.Usage = func() {
		io.WriteString(fset.Output(), `Usage: vmm kunit [--kernel FILE] [--suite GLOB] [--timeout D] [--json]
                 [--private-memory] [--disk PATH[,readonly][,serial=ID]]...

Boots the kernel with kunit.enable=1 kunit_shutdown=poweroff (plus
kunit.filter_glob=GLOB), parses the KTAP it prints on the serial console and
reports each test like tools/testing/kunit/kunit.py.

--private-memory and --disk are those of vmm boot: suites that test the
protected-guest path (vmmgo_protected, whose block round trip writes to a disk from
pages it shares and unshares) run with
  vmm kunit --suite 'vmmgo*' --private-memory --disk scratch.img

Exit codes: 0 all tests passed (or were skipped), 1 a test failed or
crashed, no KTAP was found, or a VMM error; 2 usage error; 3 the guest
rebooted; 4 it panicked; 5 the --timeout watchdog fired; 6 interrupted.

Flags:
`)
		fset.PrintDefaults()
	}
	if err := parseFlags(fset, args); err != nil {
		return 2, err
	}
	if *cpus < 1 || *cpus > vmm.MaxCPUs {
		return 2, usagef("--cpus %d: must be between 1 and %d", *cpus, vmm.MaxCPUs)
	}
	size, err := parseSize(*mem)
	if err != nil {
		return 2, usagef("--memory: %v", err)
	}
	if *timeout <= 0 {
		return 2, usagef("--timeout must be positive")
	}
	log, err := setupLogging(stderr, *logLevel, "text")
	if err != nil {
		return 2, err
	}
	progress := stdout
	if *asJSON {
		progress = stderr
	}
	stamp := func(format string, a ...any) {
		fmt.Fprintf(progress, "[%s] %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, a...))
	}
	// Check the device before anything slow (a kernel build takes minutes).
	if sys, err := kvm.Open(*kvmPath); err != nil {
		return 1, err
	} else {
		sys.Close()
	}
	if *kernel == "" {
		stamp("Finding the cached guest kernel (building it if needed)...")
		k, err := guestimage.Kernel(ctx, stderr)
		if err != nil {
			return 1, fmt.Errorf("default kernel: %w (or give --kernel)", err)
		}
		*kernel = k.VMLinux
	}
	opts := vmtest.KUnitOptions{
		Options: vmtest.Options{Kernel: *kernel, Cmdline: *extra, CPUs: *cpus, Memory: size,
			Timeout: *timeout, KVMPath: *kvmPath, Log: log, PrivateMemory: *private},
		Filter: *suite,
	}
	if len(df.disks) > 0 {
		// Opened before the boot so that a bad --disk is reported at once;
		// the one boot takes them over.
		devs, err := df.open(log, stdout)
		if err != nil {
			return 1, err
		}
		var once sync.Once
		list := devs.list
		opts.OpenDevices = func() ([]virtio.Device, error) {
			var l []virtio.Device
			once.Do(func() { l, list = list, nil })
			if l == nil {
				return nil, errors.New("the --disk devices were handed to a machine already")
			}
			return l, nil
		}
		defer func() {
			for _, d := range list { // not handed to a machine
				d.Close()
			}
		}()
	}
	if *consoleLog != "" {
		f, err := os.Create(*consoleLog)
		if err != nil {
			return 1, fmt.Errorf("--console-log: %w", err)
		}
		defer f.Close()
		opts.Console = f
	}
	p := ktap.NewParser()
	pr := &kunitPrinter{stamp: stamp}
	var prog *kunitProgress
	p.OnStart = func(path []string, t *ktap.Test) { prog.printed(); pr.start(path, t) }
	p.OnResult = func(path []string, t *ktap.Test) { prog.printed(); pr.result(path, t) }
	filter := *suite
	if filter == "" {
		filter = "all suites"
	}
	stamp("Booting %s with KUnit (%s)...", *kernel, filter)
	start := time.Now()
	prog = newKUnitProgress(stamp, start)
	stopProgress := prog.run(progressEvery)
	kr, err := runKUnitGuest(ctx, opts, p, prog.line)
	stopProgress()
	if err != nil {
		return 1, err
	}
	elapsed := time.Since(start)
	stamp("%s", strings.Repeat("=", 60))
	res := kr.KTAP
	switch {
	case !res.Found:
		stamp("No KTAP output found (is KUnit built in? did the kernel boot?)")
	case res.Crash != "":
		stamp("Kernel crashed during the tests: %s", res.Crash)
	case !res.Complete:
		stamp("KTAP output incomplete")
	}
	for _, e := range res.ExecutorErrors {
		stamp("kunit executor: %s", e)
	}
	stamp("Testing complete. %s", res.Summary)
	stamp("Elapsed time: %.1fs total (boot and tests in the guest)", elapsed.Seconds())
	code := 0
	if kr.Outcome != vmm.OutcomePowerOff {
		reportResult(stderr, vmm.Result{Outcome: kr.Outcome, Detail: kr.Detail, Dump: kr.Dump})
		code = kr.Outcome.ExitCode()
		if code == 0 {
			code = 1
		}
	} else if !res.Found || !res.Complete || !res.Status.OK() || len(res.Root.Subtests) == 0 {
		code = 1
	}
	if *asJSON {
		out := struct {
			Kernel   string       `json:"kernel"`
			Filter   string       `json:"filter,omitempty"`
			Outcome  string       `json:"outcome"`
			Detail   string       `json:"detail,omitempty"`
			Seconds  float64      `json:"seconds"`
			ExitCode int          `json:"exit_code"`
			Results  *ktap.Result `json:"results"`
		}{*kernel, *suite, kr.Outcome.String(), kr.Detail, elapsed.Seconds(), code, res}
		b, err := json.MarshalIndent(out, "", "  ")
		if err != nil {
			return 1, fmt.Errorf("json: %w", err)
		}
		fmt.Fprintf(stdout, "%s\n", b)
	}
	return code, nil
}

// runKUnitGuest boots the KUnit guest (a variable for tests).
var runKUnitGuest = vmtest.RunKUnit

// progressEvery is how long `vmm kunit` stays silent before it says what
// the guest is doing.
var progressEvery = 15 * time.Second

// kunitProgress reports, on long silences, how long the guest has run and
// the last line its console printed (the boot stage).
type kunitProgress struct {
	stamp func(format string, a ...any)
	start time.Time

	mu         sync.Mutex
	last       string    // last console line
	quietSince time.Time // last output of ours
}

func newKUnitProgress(stamp func(string, ...any), start time.Time) *kunitProgress {
	return &kunitProgress{stamp: stamp, start: start, quietSince: start}
}

// line records a console line (vmtest's onLine).
func (k *kunitProgress) line(l string) {
	if l = strings.TrimSpace(l); l == "" {
		return
	}
	k.mu.Lock()
	k.last = l
	k.mu.Unlock()
}

// printed notes that a result line was just printed.
func (k *kunitProgress) printed() {
	k.mu.Lock()
	k.quietSince = time.Now()
	k.mu.Unlock()
}

// run calls tick on a timer; the returned function stops it.
func (k *kunitProgress) run(every time.Duration) func() {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(every / 4)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case now := <-t.C:
				k.tick(now, every)
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

// tick prints a progress line when nothing was printed for every: the
// time since the boot started and the last console line (the boot stage).
func (k *kunitProgress) tick(now time.Time, every time.Duration) {
	k.mu.Lock()
	quiet, last := now.Sub(k.quietSince), k.last
	if quiet >= every {
		k.quietSince = now
	}
	k.mu.Unlock()
	if quiet < every {
		return
	}
	stage := "no console output yet"
	if last != "" {
		if len(last) > 100 {
			last = last[:100] + "..."
		}
		stage = "console: " + last
	}
	k.stamp("... %s in the guest; %s", now.Sub(k.start).Round(time.Second), stage)
}

// kunitPrinter prints results as kunit.py does, as they arrive.
type kunitPrinter struct {
	stamp func(format string, a ...any)
}

func divider(text string, width int) string {
	pad := max(width-len(text)-2, 2)
	return strings.Repeat("=", pad/2) + " " + text + " " + strings.Repeat("=", pad-pad/2)
}

func (k *kunitPrinter) start(path []string, t *ktap.Test) {
	k.stamp("%s%s", strings.Repeat("  ", len(path)-1), divider(t.Name, 60-2*(len(path)-1)))
}

func (k *kunitPrinter) result(path []string, t *ktap.Test) {
	if len(t.Subtests) > 0 || t.Plan >= 0 {
		k.stamp("%s%s", strings.Repeat("  ", len(path)-1), divider(fmt.Sprintf("[%s] %s", t.Status, t.Name), 60-2*(len(path)-1)))
		return
	}
	// Cases line up under their suite's divider, as in kunit.py.
	indent := strings.Repeat("  ", max(len(path)-2, 0))
	if !t.Status.OK() {
		for _, l := range t.Log {
			k.stamp("%s%s", indent, strings.TrimSpace(l))
		}
	}
	line := fmt.Sprintf("%s[%s] %s", indent, t.Status, t.Name)
	if t.Directive != "" {
		line += " # " + t.Directive
	}
	k.stamp("%s", line)
}
