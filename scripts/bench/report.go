package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"
)

// machine describes the host: nproc, free -h, kernel, CPU model.
func machine() string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "- CPUs (nproc): %d\n", runtime.NumCPU())
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(data), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				fmt.Fprintf(&sb, "- CPU model: %s\n", strings.TrimSpace(v))
				break
			}
		}
		flags := ""
		for _, l := range strings.Split(string(data), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "flags" {
				flags = " " + v + " "
				break
			}
		}
		fmt.Fprintf(&sb, "- CPU flags: hypervisor=%v vmx=%v svm=%v\n",
			strings.Contains(flags, " hypervisor "), strings.Contains(flags, " vmx "), strings.Contains(flags, " svm "))
	}
	if data, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		fmt.Fprintf(&sb, "- Kernel: Linux %s\n", strings.TrimSpace(string(data)))
	}
	if _, err := os.Stat("/sys/module/kvm_pvm"); err == nil {
		fmt.Fprintf(&sb, "- KVM: kvm_pvm loaded (guest kernel mode is emulated, see docs/host-kvm.md)\n")
	}
	if out, err := exec.Command("free", "-h").Output(); err == nil {
		fmt.Fprintf(&sb, "- `free -h`:\n\n```\n%s\n```\n", strings.TrimRight(string(out), "\n"))
	}
	if data, err := os.ReadFile("/proc/loadavg"); err == nil {
		fmt.Fprintf(&sb, "- Load average at the end: %s (the host is shared)\n", strings.Join(strings.Fields(string(data))[:3], " "))
	}
	return sb.String()
}

func (r *row) format(v string) string {
	s, ok := r.values[v]
	if !ok || len(s) == 0 {
		if n := r.notes[v]; n != "" {
			return "n/a: " + shorten(n, 90)
		}
		return "–"
	}
	f := fmtDur
	if r.kind == "bytes" {
		f = fmtMiB
	}
	return fmtSpread(s, f)
}

func shorten(s string, n int) string {
	s = strings.ReplaceAll(s, "|", "/")
	s = strings.ReplaceAll(s, "\n", " ")
	if len([]rune(s)) <= n {
		return s
	}
	return string([]rune(s)[:n]) + "…"
}

// report writes the markdown results.
func (b *bench) report(w io.Writer, date, png string, took time.Duration) {
	fmt.Fprintf(w, "## Results of %s (%s)\n\n", date, loadLabel(b.opt.hogs))
	fmt.Fprintf(w, "`go run ./scripts/bench` took %s. Medians, with (min–max, n=runs).\n\n", took.Round(time.Second))
	fmt.Fprintf(w, "### Machine\n\n%s\n", machine())
	fmt.Fprintf(w, "### VMMs\n\n")
	fmt.Fprintf(w, "- ours: `go build ./cmd/vmm` from this tree\n")
	fmt.Fprintf(w, "- QEMU: %s, `-M microvm -enable-kvm -cpu %s` (%s)\n", b.qemuVer, b.qemuCPU, b.qemuCPUNote)
	fmt.Fprintf(w, "- gokvm: `go install %s@%s` (the newest version the Go module proxy serves), booting the same ELF images through its PVH loader\n", gokvmModule, gokvmVersion)
	fmt.Fprintf(w, "- floor: `scripts/bench/floor/floor.c` built with gcc in this run: raw KVM ioctls, one vCPU, a KVM_RUN loop that decodes only the benchmark guest's port writes (the lower bound; it cannot boot Linux)\n\n")
	if len(b.cmdlines) > 0 {
		fmt.Fprintf(w, "Exact command lines (the first run of each; the bench varies only the guest file):\n\n```\n%s\n```\n\n", strings.Join(b.cmdlines, "\n"))
	}
	if b.kernel.VMLinux != "" {
		fmt.Fprintf(w, "Linux guest: `%s` (PVH vmlinux), initramfs `%s`, %d MiB RAM, 1 vCPU, for all three. Command line (ours, read from its log; passed verbatim to the peers):\n\n```\n%s\n```\n\n",
			b.kernel.VMLinux, b.initramfs, b.opt.linuxMem, b.peerCmdline())
		if b.linuxSkipped != "" {
			fmt.Fprintf(w, "Budget: %s.\n\n", b.linuxSkipped)
		}
		if b.hugeNote != "" {
			fmt.Fprintf(w, "hugetlb backend: %s.\n\n", b.hugeNote)
		}
		if len(b.protected) > 0 {
			fmt.Fprintf(w, "Protected boots (`--private-memory`), at \"Run /init\" (the VMM's SIGUSR1 memory report; guest: the kernel's own \"vmmgo: boot conversions\" line):\n\n")
			for i, p := range b.protected {
				fmt.Fprintf(w, "- run %d: %s\n", i+1, p)
			}
			fmt.Fprintln(w)
		}
	}
	fmt.Fprintf(w, "### Goals\n\n| Goal | measured | verdict |\n|---|---|---|\n")
	for _, g := range b.goals() {
		fmt.Fprintf(w, "| %s | %s | %s |\n", g.name, g.measured, g.verdict)
	}
	fmt.Fprintf(w, "\n### Table\n\n| Workload | ours | QEMU | gokvm | floor | ours÷QEMU | ours÷gokvm | ours÷floor |\n|---|---|---|---|---|---|---|---|\n")
	for _, r := range b.rows {
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %s |\n", r.workload,
			r.format(vmmOurs), r.format(vmmQEMU), r.format(vmmGokvm), r.format(vmmFloor),
			ratio(r.values[vmmOurs], r.values[vmmQEMU]), ratio(r.values[vmmOurs], r.values[vmmGokvm]),
			ratio(r.values[vmmOurs], r.values[vmmFloor]))
	}
	fmt.Fprintf(w, "\nExit cost = (t(N2) − t(N1)) / (N2 − N1) with N1 = %d, N2 = %d, t = time between the guest's start and end markers on stdout; one estimate per pair of runs.\n\n", b.opt.n1, b.opt.n2)
	if len(b.failures) > 0 {
		fmt.Fprintf(w, "### How runs failed (exact messages)\n\n")
		for _, f := range b.failures {
			fmt.Fprintf(w, "- **%s**, %s: %s\n", f.vmm, f.workload, f.message)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "### Memory conversion (scripts/convbench)\n\n")
	if strings.Contains(b.convbench, "\n") {
		fmt.Fprintf(w, "```\n%s\n```\n\n", b.convbench)
	} else {
		fmt.Fprintf(w, "%s\n\n", b.convbench)
	}
	fmt.Fprintf(w, "![benchmark chart](%s)\n", png)
}

// goal is one line of the goals table.
type goal struct{ name, measured, verdict string }

// goals compares the medians with the project's targets (issue 17):
// start-up at most 1/5 of QEMU's, exit cost at most 1.10x the floor at CPL0
// and CPL3, VMM RSS outside guest RAM at most 5 MiB beside the idle
// benchmark guest and 6 MiB at "Run /init".
func (b *bench) goals() []goal {
	find := func(prefix string) *row {
		for _, r := range b.rows {
			if strings.HasPrefix(r.workload, prefix) {
				return r
			}
		}
		return nil
	}
	var out []goal
	vs := func(name, prefix, peer string, limit float64) {
		r := find(prefix)
		if r == nil || len(r.values[vmmOurs]) == 0 || len(r.values[peer]) == 0 {
			out = append(out, goal{name, "not measured", "–"})
			return
		}
		q := r.values[vmmOurs].median() / r.values[peer].median()
		out = append(out, goal{name, fmt.Sprintf("%.2f× (%s vs %s)", q, r.format(vmmOurs), r.format(peer)), verdict(q <= limit)})
	}
	abs := func(name, prefix string, limit float64) {
		r := find(prefix)
		if r == nil || len(r.values[vmmOurs]) == 0 {
			out = append(out, goal{name, "not measured", "–"})
			return
		}
		out = append(out, goal{name, r.format(vmmOurs), verdict(r.values[vmmOurs].median() <= limit)})
	}
	vs("start-up ≤ 0.20× QEMU", "Start-up: process start → first guest port write", vmmQEMU, 0.20)
	vs("exit cost, CPL0 loop ≤ 1.10× floor", "Exit cost per port write, loop at CPL0", vmmFloor, 1.10)
	vs("exit cost, CPL3 loop ≤ 1.10× floor", "Exit cost per port write, loop at CPL3", vmmFloor, 1.10)
	abs("VMM RSS outside guest RAM, idle benchmark guest ≤ 5 MiB", "Footprint: VMM RSS outside guest RAM, benchmark guest", 5<<20)
	abs("VMM RSS outside guest RAM at \"Run /init\" (anon) ≤ 6 MiB", "Footprint: VMM RSS outside guest RAM at \"Run /init\"", 6<<20)
	// Issue 14: a protected boot keeps >= 90 % of RAM private and no device
	// access is refused in normal operation (every run must meet it).
	if len(b.protected) == 0 {
		out = append(out, goal{"protected boot: private pages ≥ 90 % of RAM, device accesses refused = 0", "not measured", "–"})
	} else {
		ok := true
		var ms []string
		for _, p := range b.protected {
			ok = ok && p.privatePct() >= 90 && p.deviceRefused == 0 && p.shared > 0
			ms = append(ms, fmt.Sprintf("%.1f %% private, %d shared pages, %d refused", p.privatePct(), p.shared, p.deviceRefused))
		}
		out = append(out, goal{"protected boot: private pages ≥ 90 % of RAM, device accesses refused = 0", strings.Join(ms, "; "), verdict(ok)})
	}
	return out
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "**missed**"
}
