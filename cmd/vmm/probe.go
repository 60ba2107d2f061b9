package main

import (
	"context"
	"flag"
	"io"

	"github.com/vmmgo/vmm/vmm"
)

func runProbe(ctx context.Context, args []string, stdout, stderr io.Writer) (int, error) {
	fs := flag.NewFlagSet("probe", flag.ContinueOnError)
	fs.SetOutput(stdout)
	path := fs.String("kvm", "/dev/kvm", "KVM device `path`")
	fs.Usage = func() {
		io.WriteString(fs.Output(), `Usage: vmm probe [--kvm PATH]

Reports the KVM API version, every capability this VMM uses with its value
and meaning, the guest_memfd flags, VM types and hypercall exit mask, the
hugetlb pools, how guest private memory is enforced, and whether this host
emulates guest kernel mode (measured with a tiny guest). Exits non-zero
when KVM cannot be used, saying why.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return 2, err
	}
	r, err := vmm.Probe(ctx, *path)
	if err != nil {
		return 1, err
	}
	_, err = r.WriteTo(stdout)
	return 0, err
}
