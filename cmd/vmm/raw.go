package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"

	"github.com/vmmgo/vmm/vmm"
)

func runRaw(ctx context.Context, args []string, stdout, stderr io.Writer) (int, error) {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stdout)
	var mf machineFlags
	mf.register(fs, "64M")
	image := fs.String("image", "", "raw guest image `file` (required)")
	addr := fs.String("addr", "0x100000", "guest physical `address` to load the image at")
	entry := fs.String("entry", "", "entry `address` (default: --addr)")
	fs.Usage = func() {
		io.WriteString(fs.Output(), `Usage: vmm run --image FILE [--addr ADDR] [--entry ADDR] [flags]

Loads a flat binary at a guest physical address and starts every vCPU there
in 64-bit long mode at CPL0: identity-mapped first 4 GiB (user-accessible),
GDT with kernel code 0x08, data 0x10, user code 0x1b, user data 0x23, no
interrupt controller (HLT stops a vCPU). RDI = vCPU index, RSI = vCPU count,
RSP = 0x80000 - index*0x1000. Ports: 0xf4 ends the guest with the value
written as the exit code; 0xe9 prints to stdout; 0xa50 converts memory
between shared and private (docs/pvmem.md).

Flags:
`)
		fs.PrintDefaults()
		io.WriteString(fs.Output(), exitCodeHelp)
	}
	if err := parseFlags(fs, args); err != nil {
		return 2, err
	}
	if *image == "" {
		return 2, usagef("--image is required")
	}
	load, err := strconv.ParseUint(*addr, 0, 64)
	if err != nil {
		return 2, usagef("--addr %q: not a number", *addr)
	}
	var start uint64
	if *entry != "" {
		if start, err = strconv.ParseUint(*entry, 0, 64); err != nil {
			return 2, usagef("--entry %q: not a number", *entry)
		}
	}
	cfg, err := mf.config(stderr)
	if err != nil {
		return 2, err
	}
	data, err := os.ReadFile(*image)
	if err != nil {
		return 1, fmt.Errorf("read image: %w", err)
	}
	cfg.Console = stdout
	m, err := vmm.New(cfg)
	if err != nil {
		return 1, err
	}
	defer m.Close()
	if err := m.LoadRaw(vmm.RawImage{Data: data, Addr: load, Entry: start}); err != nil {
		return 1, err
	}
	stopServices, err := mf.startServices(ctx, m, stderr)
	if err != nil {
		return 1, err
	}
	defer stopServices()
	stopDump := dumpOnSIGUSR1(m, stderr)
	defer stopDump()
	res, err := m.Run(ctx)
	if err != nil {
		return 1, err
	}
	reportResult(stderr, res)
	if mf.stats {
		printStats(stderr, m)
	}
	if res.Outcome == vmm.OutcomePowerOff && res.Code != 0 {
		return int(min(res.Code, 255)), nil
	}
	return res.Outcome.ExitCode(), nil
}

// reportResult says how the guest ended (on stderr: stdout is the guest's).
func reportResult(w io.Writer, res vmm.Result) {
	switch res.Outcome {
	case vmm.OutcomePowerOff, vmm.OutcomeHalted:
		if res.Code != 0 {
			fmt.Fprintf(w, "\r\nvmm: guest exited with code %d\r\n", res.Code)
		}
		return
	}
	fmt.Fprintf(w, "\r\nvmm: guest %v: %s\r\n", res.Outcome, res.Detail)
	if res.Dump != "" {
		fmt.Fprintf(w, "%s", crlf(res.Dump))
	}
}
