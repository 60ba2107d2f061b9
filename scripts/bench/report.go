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
	fmt.Fprintf(w, "## Results of %s\n\n", date)
	fmt.Fprintf(w, "`go run ./scripts/bench` took %s. Medians, with (min–max, n=runs).\n\n", took.Round(time.Second))
	fmt.Fprintf(w, "### Machine\n\n%s\n", machine())
	fmt.Fprintf(w, "### VMMs\n\n")
	fmt.Fprintf(w, "- ours: `go build ./cmd/vmm` from this tree\n")
	fmt.Fprintf(w, "- QEMU: %s, `-M microvm -enable-kvm -cpu host`\n", b.qemuVer)
	fmt.Fprintf(w, "- gokvm: `go install %s@%s` (the newest version the Go module proxy serves), booting the same ELF images through its PVH loader\n\n", gokvmModule, gokvmVersion)
	if b.kernel.VMLinux != "" {
		fmt.Fprintf(w, "Linux guest: `%s` (PVH vmlinux), initramfs `%s`, %d MiB RAM, 1 vCPU, for all three. Command line (ours, read from its log; passed verbatim to the peers):\n\n```\n%s\n```\n\n",
			b.kernel.VMLinux, b.initramfs, b.opt.linuxMem, b.peerCmdline())
		if b.linuxSkipped != "" {
			fmt.Fprintf(w, "Budget: %s.\n\n", b.linuxSkipped)
		}
		if b.hugeNote != "" {
			fmt.Fprintf(w, "hugetlb backend: %s.\n\n", b.hugeNote)
		}
	}
	fmt.Fprintf(w, "### Table\n\n| Workload | ours | QEMU | gokvm | ours÷QEMU | ours÷gokvm |\n|---|---|---|---|---|---|\n")
	for _, r := range b.rows {
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s |\n", r.workload,
			r.format(vmmOurs), r.format(vmmQEMU), r.format(vmmGokvm),
			ratio(r.values[vmmOurs], r.values[vmmQEMU]), ratio(r.values[vmmOurs], r.values[vmmGokvm]))
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
