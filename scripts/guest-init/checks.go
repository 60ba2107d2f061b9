package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Checks /init runs before the command, each asked for by a kernel
// command-line parameter and reported on the console as one marker line
// ("VMM-GUEST-INIT: <check> ..."). The nested-KVM suite (internal/nested)
// uses them to test guest userspace without a shell:
//
//	vmm.sleep=<duration>       sleep (nanosleep), then report the monotonic
//	                           and wall-clock time that passed and the wall
//	                           clock (Unix seconds)
//	vmm.mount=<dev>,<dir>,<fs> mount dev on dir read-only
//	vmm.cat=<path>             print the file's contents (Go-quoted)
//	vmm.portecho=<name>        open the virtio-console port named name, read
//	                           one line and write back "echo:" + the line
//	vmm.vsockecho=<port>       listen on AF_VSOCK port, accept one stream,
//	                           read one line and write back "echo:" + it
//	vmm.ddread=<dev>,<MiB>     read MiB mebibytes from the start of block
//	                           device dev with O_DIRECT in 1 MiB requests
//	                           (like dd iflag=direct bs=1M), then report the
//	                           bytes, seconds, MiB/s and the CRC-32 (IEEE)
//	                           of what was read
//
// The two echo services run at the same time and each gives up after
// echoTimeout.
type checks struct {
	sleep     time.Duration
	mount     *mountSpec
	cat       string
	portEcho  string
	vsockEcho uint32
	ddRead    *ddSpec
}

type ddSpec struct {
	dev string
	mib int
}

type mountSpec struct{ dev, dir, fstype string }

const echoTimeout = 60 * time.Second

// checksFromCmdline parses the check parameters of a kernel command line
// (the last of each wins, as with vmm.run; nothing after "--").
func checksFromCmdline(cmdline string) (checks, error) {
	var c checks
	for _, p := range splitCmdline(cmdline) {
		if p == "--" {
			break
		}
		k, v, ok := strings.Cut(p, "=")
		if !ok {
			continue
		}
		switch k {
		case "vmm.sleep":
			d, err := time.ParseDuration(v)
			if err != nil || d < 0 {
				return c, fmt.Errorf("vmm.sleep=%s: want a duration like 1s", v)
			}
			c.sleep = d
		case "vmm.mount":
			f := strings.Split(v, ",")
			if len(f) != 3 || f[0] == "" || f[1] == "" || f[2] == "" {
				return c, fmt.Errorf("vmm.mount=%s: want dev,dir,fstype", v)
			}
			c.mount = &mountSpec{f[0], f[1], f[2]}
		case "vmm.cat":
			c.cat = v
		case "vmm.portecho":
			c.portEcho = v
		case "vmm.vsockecho":
			n, err := strconv.ParseUint(v, 10, 32)
			if err != nil {
				return c, fmt.Errorf("vmm.vsockecho=%s: want a port number", v)
			}
			c.vsockEcho = uint32(n)
		case "vmm.ddread":
			dev, n, ok := strings.Cut(v, ",")
			mib, err := strconv.Atoi(n)
			if !ok || dev == "" || err != nil || mib < 1 || mib > 1<<20 {
				return c, fmt.Errorf("vmm.ddread=%s: want dev,MiB (1 to 1048576)", v)
			}
			c.ddRead = &ddSpec{dev, mib}
		}
	}
	return c, nil
}

// echoReply is what the echo services answer to line (without its "\n").
func echoReply(line string) string { return "echo:" + line + "\n" }
