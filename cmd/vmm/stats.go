package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"sort"
	"time"

	"github.com/vmmgo/vmm/vmm"
)

// request sends one control request to a VMM's --control-socket and
// returns the raw JSON answer.
func request(ctx context.Context, sock, req string) ([]byte, error) {
	d := net.Dialer{Timeout: 5 * time.Second}
	c, err := d.DialContext(ctx, "unix", sock)
	if err != nil {
		return nil, fmt.Errorf("%w (is a VMM running with --control-socket %s?)", err, sock)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := io.WriteString(c, req+"\n"); err != nil {
		return nil, fmt.Errorf("send %s: %w", req, err)
	}
	raw, err := io.ReadAll(io.LimitReader(c, 4<<20))
	if err != nil {
		return nil, fmt.Errorf("read answer: %w", err)
	}
	return raw, nil
}

// runStats reads the counters of a running VMM from its --control-socket.
func runStats(ctx context.Context, args []string, stdout, stderr io.Writer) (int, error) {
	fs := flag.NewFlagSet("stats", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print the raw JSON snapshot")
	fs.Usage = func() {
		io.WriteString(fs.Output(), `Usage: vmm stats [--json] SOCKET

Prints the counters of a running VMM started with --control-socket SOCKET:
vCPU exits by reason, the shared/private page state and conversion
counters, the host footprint of guest RAM and the virtio transport counters.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0, errHelp
		}
		return 2, usageError{err}
	}
	if fs.NArg() != 1 {
		return 2, usagef("want exactly one socket path")
	}
	raw, err := request(ctx, fs.Arg(0), vmm.CtlStats)
	if err != nil {
		return 1, err
	}
	var s vmm.Snapshot
	if err := json.Unmarshal(raw, &s); err != nil {
		return 1, fmt.Errorf("%s does not answer with VMM stats: %w", fs.Arg(0), err)
	}
	if *asJSON {
		stdout.Write(raw)
		return 0, nil
	}
	writeSnapshot(stdout, s)
	return 0, nil
}

func writeSnapshot(w io.Writer, s vmm.Snapshot) {
	fmt.Fprintf(w, "state %s, up %s, %d vCPUs, %s guest RAM (%s)\n", s.State, s.Uptime, s.CPUs, sizeString(s.Memory), s.Backend)
	keys := make([]string, 0, len(s.Exits))
	for k := range s.Exits {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	fmt.Fprintln(w, "exits:")
	for _, k := range keys {
		fmt.Fprintf(w, "  %-28s %d\n", k, s.Exits[k])
	}
	p := s.Pages
	fmt.Fprintf(w, "pages: shared %d, private %d\n", p.SharedPages, p.PrivatePages)
	fmt.Fprintf(w, "conversions: to-private %d, to-shared %d, pages converted %d, refused %d, device accesses refused %d\n",
		p.ToPrivate, p.ToShared, p.PagesConverted, p.Refused, p.DeviceRefused)
	fmt.Fprint(w, s.Conversions.String())
	f := s.Footprint
	fmt.Fprintf(w, "host footprint of guest RAM: %d bytes in use (resident %d, file blocks %d, hugetlb pages %d)\n",
		f.InUse, f.Resident, f.Allocated, f.HugePages)
	v := s.Virtio
	if v.Devices > 0 {
		fmt.Fprintf(w, "virtio: %d devices (%d driven), %d notifies (%d via ioeventfd), %d MSIs (%d failed), %d INTx\n",
			v.Devices, v.DriverOK, v.Notifies, v.EventfdKicks, v.MSIs, v.MSIErrors, v.INTxAssertions)
	}
}

func sizeString(n uint64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%dG", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%dM", n>>20)
	}
	return fmt.Sprintf("%d bytes", n)
}

// runCtl sends pause, resume, dump or stop to a running VMM.
func runCtl(ctx context.Context, args []string, stdout, stderr io.Writer) (int, error) {
	fs := flag.NewFlagSet("ctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		io.WriteString(fs.Output(), `Usage: vmm ctl SOCKET pause|resume|dump|stop

Controls a running VMM started with --control-socket SOCKET:
  pause   park every vCPU (the guest stops running; its state stays)
  resume  let the vCPUs run again
  dump    print every vCPU's registers, instruction bytes and walk of RIP,
          the exit counters and the memory counters, without stopping
  stop    end the guest (the VMM exits with code 6)
`)
	}
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0, errHelp
		}
		return 2, usageError{err}
	}
	if fs.NArg() != 2 {
		return 2, usagef("want SOCKET and one of pause, resume, dump, stop")
	}
	cmd, err := vmm.ParseControl([]byte(fs.Arg(1)))
	if err != nil || cmd == vmm.CtlStats {
		return 2, usagef("%q: want pause, resume, dump or stop (vmm stats prints the counters)", fs.Arg(1))
	}
	raw, err := request(ctx, fs.Arg(0), cmd)
	if err != nil {
		return 1, err
	}
	var r vmm.ControlReply
	if err := json.Unmarshal(raw, &r); err != nil {
		return 1, fmt.Errorf("%s does not answer like a VMM control socket: %w", fs.Arg(0), err)
	}
	if !r.OK {
		return 1, fmt.Errorf("%s: %s", cmd, r.Error)
	}
	if r.Dump != "" {
		io.WriteString(stdout, r.Dump)
	}
	return 0, nil
}
