package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/vmmgo/vmm/vmm"
)

// controlReply is vmm.ControlReply with the result left raw.
type controlReply struct {
	API    int               `json:"api"`
	OK     bool              `json:"ok"`
	Result json.RawMessage   `json:"result"`
	Error  *vmm.ControlError `json:"error"`
}

// request sends one control request (docs/control-api.md) to a VMM's
// --control-socket and returns the reply's raw result.
func request(ctx context.Context, sock, op string) (json.RawMessage, error) {
	d := net.Dialer{Timeout: 5 * time.Second}
	c, err := d.DialContext(ctx, "unix", sock)
	if err != nil {
		return nil, fmt.Errorf("%w (is a VMM running with --control-socket %s?)", err, sock)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(15 * time.Second))
	req, _ := json.Marshal(vmm.ControlRequest{API: vmm.ControlAPIVersion, Op: op})
	if _, err := c.Write(append(req, '\n')); err != nil {
		return nil, fmt.Errorf("send %s: %w", op, err)
	}
	line, err := bufio.NewReader(io.LimitReader(c, 16<<20)).ReadBytes('\n')
	if err != nil && len(line) == 0 {
		return nil, fmt.Errorf("read the answer to %s: %w", op, err)
	}
	var r controlReply
	if err := json.Unmarshal(line, &r); err != nil || r.API == 0 {
		return nil, fmt.Errorf("%s does not answer like a VMM control socket (%q)", sock, bytes.TrimSpace(line))
	}
	if !r.OK {
		if r.Error == nil {
			return nil, fmt.Errorf("%s failed", op)
		}
		return nil, fmt.Errorf("%s: %s", op, r.Error.Message)
	}
	return r.Result, nil
}

// runStats reads the counters of a running VMM from its --control-socket.
func runStats(ctx context.Context, args []string, stdout, stderr io.Writer) (int, error) {
	fs := flag.NewFlagSet("stats", flag.ContinueOnError)
	fs.SetOutput(stdout)
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
	if err := parseFlagsArgs(fs, args, 1); err != nil {
		return 2, err
	}
	if fs.NArg() != 1 {
		return 2, usagef("want exactly one socket path")
	}
	raw, err := request(ctx, fs.Arg(0), vmm.CtlStats)
	if err != nil {
		return 1, err
	}
	var s vmm.Stats
	if err := json.Unmarshal(raw, &s); err != nil {
		return 1, fmt.Errorf("%s does not answer with VMM stats: %w", fs.Arg(0), err)
	}
	if *asJSON {
		var b bytes.Buffer
		if err := json.Indent(&b, raw, "", "  "); err != nil {
			return 1, err
		}
		b.WriteByte('\n')
		stdout.Write(b.Bytes())
		return 0, nil
	}
	writeSnapshot(stdout, s)
	return 0, nil
}

func writeSnapshot(w io.Writer, s vmm.Stats) {
	up := (time.Duration(s.UptimeSeconds * float64(time.Second))).Round(time.Millisecond)
	fmt.Fprintf(w, "state %s, up %s, %d vCPUs, %s guest RAM (%s)\n", s.State, up, s.CPUs, sizeString(s.MemoryBytes), s.MemoryBackend)
	fmt.Fprintln(w, "exits:")
	for _, k := range s.ExitReasons() {
		fmt.Fprintf(w, "  %-28s %d\n", k, s.Exits[k])
	}
	p := s.Pages
	fmt.Fprintf(w, "pages: shared %d, private %d\n", p.SharedPages, p.PrivatePages)
	fmt.Fprintf(w, "conversions: to-private %d, to-shared %d, pages converted %d, refused %d, device accesses refused %d\n",
		p.ToPrivate, p.ToShared, p.PagesConverted, p.Refused, p.DeviceRefused)
	fmt.Fprint(w, s.Conversions.String())
	f := s.Footprint
	fmt.Fprintf(w, "host footprint of guest RAM: %d bytes in use (resident %d, file blocks %d, hugetlb pages %d)\n",
		f.InUseBytes, f.ResidentBytes, f.AllocatedBytes, f.HugePages)
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
	fs.SetOutput(stdout)
	fs.Usage = func() {
		io.WriteString(fs.Output(), `Usage: vmm ctl SOCKET pause|resume|dump|stop|info

Controls a running VMM started with --control-socket SOCKET:
  pause   park every vCPU (the guest stops running; its state stays)
  resume  let the vCPUs run again
  dump    print every vCPU's registers, instruction bytes and walk of RIP,
          the exit counters and the memory counters, without stopping
  stop    end the guest (the VMM exits with code 6)
  info    print the control API version and its operations

The protocol (JSON lines, versioned, any number of clients at once) is in
docs/control-api.md.
`)
	}
	if err := parseFlagsArgs(fs, args, 2); err != nil {
		return 2, err
	}
	if fs.NArg() != 2 {
		return 2, usagef("want SOCKET and one of pause, resume, dump, stop, info")
	}
	cmd := fs.Arg(1)
	switch cmd {
	case vmm.CtlPause, vmm.CtlResume, vmm.CtlDump, vmm.CtlStop, vmm.CtlInfo:
	default:
		return 2, usagef("%q: want pause, resume, dump, stop or info (vmm stats prints the counters)", cmd)
	}
	raw, err := request(ctx, fs.Arg(0), cmd)
	if err != nil {
		return 1, err
	}
	switch cmd {
	case vmm.CtlDump:
		var d vmm.Dump
		if err := json.Unmarshal(raw, &d); err != nil {
			return 1, fmt.Errorf("dump: %w", err)
		}
		io.WriteString(stdout, d.Text)
	case vmm.CtlInfo:
		var i vmm.Info
		if err := json.Unmarshal(raw, &i); err != nil {
			return 1, fmt.Errorf("info: %w", err)
		}
		fmt.Fprintf(stdout, "control API %d: %s\n", i.API, strings.Join(i.Ops, ", "))
	}
	return 0, nil
}
