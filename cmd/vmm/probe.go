package main

import (
	"context"
	"flag"
	"io"

	"github.com/vmmgo/vmm/vmm"
)

func runProbe(ctx context.Context, args []string, stdout, stderr io.Writer) (int, error) {
	fs := flag.NewFlagSet("probe", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("kvm", "/dev/kvm", "KVM device `path`")
	fs.Usage = func() {
		io.WriteString(fs.Output(), `Usage: vmm probe [--kvm PATH]

Reports the KVM API version, every capability this VMM uses with its value
and meaning, the guest_memfd flags, VM types and hypercall exit mask, the
hugetlb pools, how guest private memory is enforced, and whether this host
emulates guest kernel mode: the host kind that vmm boot decides from the CPU
flags and the KVM vendor module, and the measurement with a tiny guest.
Exits non-zero when KVM cannot be used, saying why.

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

// hostFlagHelp documents --host.
const hostFlagHelp = "how this host's KVM runs guest kernel mode: auto (decided once from the CPU flags and the KVM vendor module; timed with probe guests only when those are ambiguous; see vmm probe), native, emulated"

// decideHost resolves --host into cfg.Host once for the process, logging
// the decision and why at info level.
func decideHost(ctx context.Context, flag string, cfg *vmm.Config) error {
	h, err := vmm.ParseHostKind(flag)
	if err != nil {
		return usagef("--host: %v", err)
	}
	if h == vmm.HostAuto {
		d, err := vmm.DetectHost(ctx, cfg.KVMPath)
		if err != nil {
			return err
		}
		cfg.Log.WithField("why", d.Reason).Infof("host kind: %s", d.Kind)
		h = d.Kind
	} else {
		cfg.Log.Infof("host kind: %s (--host)", h)
	}
	cfg.Host = h
	return nil
}

// parseFlags parses and rejects stray positional arguments; --help exits 0
// through errHelp.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return errHelp
		}
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	return nil
}
