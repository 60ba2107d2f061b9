package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// pattern is something to watch for in a VMM's output.
type pattern struct {
	name   string
	stderr bool   // watch stderr instead of stdout
	text   []byte // exact bytes
	// action when seen: record only, sample the footprint and stop the
	// VMM, or note a failure and stop the VMM after a grace period (to
	// collect the rest of its message).
	action action
}

type action int

const (
	actRecord action = iota
	actSampleStop
	actFail
)

// runSpec is one VMM process to run and watch.
type runSpec struct {
	argv    []string
	pty     bool // give the process a pseudo-terminal as stdin (gokvm exits only then)
	watch   []pattern
	timeout time.Duration
	guestKB uint64 // guest RAM size, to find its mapping in smaps
	// sampleDelay: wait this long after an actSampleStop pattern before
	// sampling (lets the process settle).
	sampleDelay time.Duration
	// reportBeforeStop: at an actSampleStop pattern, send our VMM SIGUSR1
	// and wait (a few seconds at most) for its state dump, whose memory
	// report (shared/private pages, conversions) ends up in stderr.
	reportBeforeStop bool
}

// runResult is what one run measured.
type runResult struct {
	seen      map[string]time.Duration // pattern name -> time since start
	exited    bool
	exitAt    time.Duration
	exitCode  int
	timedOut  bool
	failure   string // the failure pattern's context (first lines)
	footprint *footprint
	stdout    []byte
	stderr    []byte
}

type event struct {
	p  pattern
	at time.Duration
}

// watcher copies one pipe into a buffer and reports patterns as they appear.
type watcher struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	pats  []pattern
	found []bool
}

func (w *watcher) run(r io.Reader, start time.Time, ev chan<- event) {
	chunk := make([]byte, 4096)
	for {
		n, err := r.Read(chunk)
		if n > 0 {
			now := time.Since(start)
			w.mu.Lock()
			prev := w.buf.Len()
			w.buf.Write(chunk[:n])
			all := w.buf.Bytes()
			for i, p := range w.pats {
				if w.found[i] {
					continue
				}
				from := max(0, prev-len(p.text)+1)
				if bytes.Contains(all[from:], p.text) {
					w.found[i] = true
					ev <- event{p, now}
				}
			}
			w.mu.Unlock()
		}
		if err != nil {
			return
		}
	}
}

func (w *watcher) bytes() []byte {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]byte(nil), w.buf.Bytes()...)
}

// openPTY returns a pseudo-terminal pair (pts(4) / posix_openpt(3)).
func openPTY() (master, slave *os.File, err error) {
	mfd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("open /dev/ptmx: %w", err)
	}
	master = os.NewFile(uintptr(mfd), "/dev/ptmx")
	if err := unix.IoctlSetPointerInt(mfd, unix.TIOCSPTLCK, 0); err != nil {
		master.Close()
		return nil, nil, os.NewSyscallError("ioctl(TIOCSPTLCK)", err)
	}
	n, err := unix.IoctlGetUint32(mfd, unix.TIOCGPTN)
	if err != nil {
		master.Close()
		return nil, nil, os.NewSyscallError("ioctl(TIOCGPTN)", err)
	}
	slave, err = os.OpenFile("/dev/pts/"+strconv.Itoa(int(n)), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		master.Close()
		return nil, nil, fmt.Errorf("open pts: %w", err)
	}
	return master, slave, nil
}

// runVMM starts the process, watches its output, and stops it when a
// stopping pattern is seen, on timeout, or when ctx ends.
func runVMM(ctx context.Context, spec runSpec) (runResult, error) {
	res := runResult{seen: map[string]time.Duration{}}
	cmd := exec.Command(spec.argv[0], spec.argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var master *os.File
	if spec.pty {
		m, s, err := openPTY()
		if err != nil {
			return res, err
		}
		master = m
		defer master.Close()
		defer s.Close()
		cmd.Stdin = s
		// Drain what the VMM might echo to the terminal.
		go io.Copy(io.Discard, master)
	} else {
		devnull, err := os.Open(os.DevNull)
		if err != nil {
			return res, err
		}
		defer devnull.Close()
		cmd.Stdin = devnull
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return res, err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return res, err
	}
	var outW, errW watcher
	for _, p := range spec.watch {
		if p.stderr {
			errW.pats = append(errW.pats, p)
		} else {
			outW.pats = append(outW.pats, p)
		}
	}
	outW.found = make([]bool, len(outW.pats))
	errW.found = make([]bool, len(errW.pats))
	ev := make(chan event, len(spec.watch)+1)

	start := time.Now()
	if err := cmd.Start(); err != nil {
		return res, fmt.Errorf("start %s: %w", spec.argv[0], err)
	}
	var pipes sync.WaitGroup
	pipes.Add(2)
	go func() { defer pipes.Done(); outW.run(stdout, start, ev) }()
	go func() { defer pipes.Done(); errW.run(stderr, start, ev) }()
	waitc := make(chan error, 1)
	go func() {
		pipes.Wait() // Wait closes the pipes: read them to EOF first
		waitc <- cmd.Wait()
	}()

	kill := func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	timer := time.NewTimer(spec.timeout)
	defer timer.Stop()
	var grace <-chan time.Time
	done := false
	for !done {
		select {
		case e := <-ev:
			if _, ok := res.seen[e.p.name]; !ok {
				res.seen[e.p.name] = e.at
			}
			switch e.p.action {
			case actSampleStop:
				if spec.sampleDelay > 0 {
					time.Sleep(spec.sampleDelay)
				}
				if fp, err := readFootprint(cmd.Process.Pid, spec.guestKB); err == nil {
					res.footprint = &fp
				}
				if spec.reportBeforeStop {
					waitReport(cmd.Process.Pid, &errW)
				}
				kill()
			case actFail:
				if grace == nil {
					res.failure = e.p.name
					grace = time.After(700 * time.Millisecond)
				}
			}
		case <-grace:
			kill()
		case err := <-waitc:
			res.exitAt = time.Since(start)
			res.exited = true
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				res.exitCode = ee.ExitCode()
			}
			done = true
		case <-timer.C:
			res.timedOut = true
			kill()
		case <-ctx.Done():
			kill()
			<-waitc
			return res, ctx.Err()
		}
	}
	// Patterns found in the last chunks before exit.
	for {
		select {
		case e := <-ev:
			if _, ok := res.seen[e.p.name]; !ok {
				res.seen[e.p.name] = e.at
			}
			if e.p.action == actFail && res.failure == "" {
				res.failure = e.p.name
			}
			continue
		default:
		}
		break
	}
	res.stdout = outW.bytes()
	res.stderr = errW.bytes()
	return res, nil
}

// footprint is the VMM's memory use at one moment, from /proc/PID/smaps.
type footprint struct {
	TotalRSS uint64 // bytes, all mappings (hugetlb pages are not in Rss)
	GuestRSS uint64 // bytes of the guest-RAM mapping resident (incl. hugetlb)
	VMMRSS   uint64 // TotalRSS minus the guest mapping's Rss
	GuestMap string // the mapping taken as guest RAM
}

// readFootprint parses smaps. The guest-RAM mapping is the VMA whose size is
// exactly the guest RAM size (every VMM here maps it in one piece); failing
// that, the smallest VMA at least that big.
func readFootprint(pid int, guestKB uint64) (footprint, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		return footprint{}, err
	}
	defer f.Close()
	type vma struct {
		header             string
		size, rss, hugetlb uint64
	}
	var vmas []vma
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		if !strings.HasSuffix(fields[0], ":") {
			vmas = append(vmas, vma{header: line})
			continue
		}
		if len(vmas) == 0 || len(fields) < 2 {
			continue
		}
		v, err := strconv.ParseUint(fields[1], 10, 64)
		if err != nil {
			continue
		}
		cur := &vmas[len(vmas)-1]
		switch fields[0] {
		case "Size:":
			cur.size = v
		case "Rss:":
			cur.rss = v
		case "Shared_Hugetlb:", "Private_Hugetlb:":
			cur.hugetlb += v
		}
	}
	if err := sc.Err(); err != nil {
		return footprint{}, err
	}
	var fp footprint
	guest := -1
	for i, v := range vmas {
		fp.TotalRSS += v.rss << 10
		if v.size == guestKB {
			guest = i
		}
	}
	if guest < 0 {
		for i, v := range vmas {
			if v.size >= guestKB && (guest < 0 || v.size < vmas[guest].size) {
				guest = i
			}
		}
	}
	if guest < 0 {
		return fp, fmt.Errorf("no mapping of %d KiB in /proc/%d/smaps", guestKB, pid)
	}
	g := vmas[guest]
	fp.GuestRSS = (g.rss + g.hugetlb) << 10
	fp.VMMRSS = fp.TotalRSS - g.rss<<10
	fp.GuestMap = g.header
	return fp, nil
}

// memoryReportEnd is the last line of our VMM's memory report
// (vmm.Machine.MemoryReport), which the SIGUSR1 state dump ends with.
var memoryReportEnd = []byte("host footprint of guest RAM:")

// waitReport asks our VMM for its state dump (SIGUSR1) and waits up to
// five seconds for the memory report to reach stderr.
func waitReport(pid int, stderr *watcher) {
	if syscall.Kill(pid, syscall.SIGUSR1) != nil {
		return
	}
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if bytes.Contains(stderr.bytes(), memoryReportEnd) {
			return
		}
	}
}
