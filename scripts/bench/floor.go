package main

import (
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/vmmgo/vmm/scripts/benchguest"
)

//go:embed floor/floor.c
var floorSource []byte

// buildFloor compiles floor/floor.c with gcc into the cache (keyed by the
// source's hash), static where libc.a exists so that it maps no libc.
func buildFloor(ctx context.Context, cache string) (string, error) {
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		return "", fmt.Errorf("the floor (scripts/bench/floor/floor.c) needs gcc: apt-get install gcc (%w)", err)
	}
	sum := sha256.Sum256(floorSource)
	bin := filepath.Join(cache, "floor-"+hex.EncodeToString(sum[:6]))
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	src := bin + ".c"
	if err := os.WriteFile(src, floorSource, 0o644); err != nil {
		return "", err
	}
	if _, err := run(ctx, "", nil, gcc, "-O2", "-static", "-Wall", "-Werror", "-o", bin, src); err != nil {
		if _, err2 := run(ctx, "", nil, gcc, "-O2", "-Wall", "-Werror", "-o", bin, src); err2 != nil {
			return "", fmt.Errorf("build the floor: %w", err2)
		}
	}
	return bin, nil
}

// qemuTinyArgv is QEMU's command line for the benchmark guest.
func (b *bench) qemuTinyArgv(cpu, elf string) []string {
	return []string{b.qemu, "-M", "microvm", "-enable-kvm", "-cpu", cpu, "-m", fmt.Sprintf("%dM", b.opt.tinyMem),
		"-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio", "-no-reboot",
		"-device", "isa-debug-exit,iobase=0xf4,iosize=4", "-kernel", elf}
}

// qemuCPUs are the -cpu models tried, best first: the host model exposes
// the most; this host's KVM refuses the IA32_ARCH_CAPABILITIES MSR (0x10a)
// that QEMU 7.2 sets for it ("failed to set MSR 0x10a", an assertion
// abort), so the next candidate drops that feature; max and the base
// model are the fallbacks.
var qemuCPUs = []string{"host", "host,-arch-capabilities", "max,-arch-capabilities", "qemu64"}

// chooseQEMUCPU runs the benchmark guest (no loop) under each candidate
// model and keeps the first that reaches the end marker. It fails when
// none does: QEMU is installed, so a bench without it measures nothing.
func (b *bench) chooseQEMUCPU(ctx context.Context) error {
	elf, err := b.guest(ctx, benchguest.Options{})
	if err != nil {
		return err
	}
	var tried []string
	for _, cpu := range qemuCPUs {
		res, err := runVMM(ctx, runSpec{argv: b.qemuTinyArgv(cpu, elf), watch: markers, timeout: 60 * time.Second})
		if err != nil {
			return err
		}
		if _, ok := res.seen["end"]; ok {
			b.qemuCPU = cpu
			b.qemuCPUNote = "the first model that ran the benchmark guest"
			if len(tried) > 0 {
				b.qemuCPUNote += "; refused: " + strings.Join(tried, "; ")
			}
			return nil
		}
		why := lastLines(strings.TrimSpace(string(res.stderr)), 2)
		if why == "" {
			why = fmt.Sprintf("exit status %d, no end marker", res.exitCode)
		}
		tried = append(tried, fmt.Sprintf("-cpu %s: %s", cpu, why))
	}
	return fmt.Errorf("QEMU is installed but runs the benchmark guest with none of its CPU models:\n  %s", strings.Join(tried, "\n  "))
}

// recordCmd keeps the first command line of each VMM per workload kind.
func (b *bench) recordCmd(kind, vmm string, argv []string) {
	key := kind + "\x00" + vmm
	if b.cmdSeen == nil {
		b.cmdSeen = map[string]bool{}
	}
	if b.cmdSeen[key] {
		return
	}
	b.cmdSeen[key] = true
	q := make([]string, len(argv))
	for i, a := range argv {
		q[i] = shellQuote(a)
	}
	b.cmdlines = append(b.cmdlines, fmt.Sprintf("%s, %s: %s", kind, vmm, strings.Join(q, " ")))
}

func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_=,./:+@", r))
	}) < 0 {
		return s
	}
	return strconv.Quote(s)
}

// requiredRows are the workloads every VMM must run on any host KVM can
// run at all (the benchmark guest at CPL0 uses nothing but port I/O).
var requiredRows = []string{"Start-up: process start → first guest port write", "Exit cost per port write, loop at CPL0", "Footprint: VMM RSS outside guest RAM, benchmark guest"}

// peersRan fails the run when a VMM produced no number for a required
// workload, naming what it said.
func (b *bench) peersRan() error {
	var bad []string
	for _, r := range b.rows {
		req := false
		for _, p := range requiredRows {
			req = req || strings.HasPrefix(r.workload, p)
		}
		if !req {
			continue
		}
		for _, v := range vmmNames {
			if len(r.values[v]) == 0 {
				bad = append(bad, fmt.Sprintf("%s did not run %q: %s", v, r.workload, r.notes[v]))
			}
		}
	}
	if len(bad) > 0 {
		return errors.New("a VMM that is installed did not run:\n  " + strings.Join(bad, "\n  "))
	}
	return nil
}
