package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"
)

// parseFlags parses args into fs. --help prints the usage on fs.Output()
// (each command sets it to stdout, so `vmm boot --help | grep memory`
// works) and returns errHelp. A bad flag is one short usage error, with the
// flag the user probably meant ("did you mean --memory?"), never the whole
// usage text. Stray positional arguments are refused when maxArgs is 0.
func parseFlags(fs *flag.FlagSet, args []string) error {
	return parseFlagsArgs(fs, args, 0)
}

// parseFlagsArgs is parseFlags for commands that take up to maxArgs
// positional arguments (-1: any number).
func parseFlagsArgs(fs *flag.FlagSet, args []string, maxArgs int) error {
	out := fs.Output()
	fs.SetOutput(io.Discard) // the flag package's own message + usage dump
	err := fs.Parse(args)
	fs.SetOutput(out)
	if errors.Is(err, flag.ErrHelp) {
		fs.Usage()
		return errHelp
	}
	if err != nil {
		return usageError{flagError(fs, err)}
	}
	if maxArgs >= 0 && fs.NArg() > maxArgs {
		return usagef("unexpected argument %q", fs.Arg(maxArgs))
	}
	return nil
}

// flagError rewrites the flag package's error: an unknown flag gets the
// nearest defined ones (or a pointer for flags of other VMMs).
func flagError(fs *flag.FlagSet, err error) error {
	const undefined = "flag provided but not defined: -"
	msg := err.Error()
	name, ok := strings.CutPrefix(msg, undefined)
	if !ok {
		return err
	}
	if hint, ok := foreignFlags[name]; ok {
		return fmt.Errorf("unknown flag -%s: %s", name, hint)
	}
	if s := suggest(name, flagNames(fs)); len(s) > 0 {
		return fmt.Errorf("unknown flag --%s (did you mean --%s?)", name, strings.Join(s, " or --"))
	}
	return fmt.Errorf("unknown flag --%s", name)
}

// foreignFlags are flags of QEMU, Firecracker and Cloud Hypervisor that vmm
// does not accept, with what to use instead.
var foreignFlags = map[string]string{
	"hda":        "use --disk FILE (a virtio-blk disk, /dev/vda in the guest)",
	"cdrom":      "vmm has no CD-ROM; attach the image with --disk FILE,readonly",
	"display":    "vmm has no display: the console is the serial port on stdio (--console)",
	"vga":        "vmm has no display: the console is the serial port on stdio (--console)",
	"vnc":        "vmm has no display: the console is the serial port on stdio (--console)",
	"monitor":    "vmm has no monitor; --control-socket PATH serves pause/resume/dump/stop/stats (docs/cli.md, \"Control API\")",
	"qmp":        "vmm has no QMP; --control-socket PATH serves a JSON control API (docs/cli.md, \"Control API\")",
	"bios":       "vmm boots kernels directly (no firmware): --kernel FILE",
	"api-sock":   "vmm's API is --control-socket PATH (JSON lines, docs/cli.md \"Control API\"); the machine itself comes from flags or --config FILE",
	"api-socket": "vmm's API is --control-socket PATH (JSON lines, docs/cli.md \"Control API\"); the machine itself comes from flags or --config FILE",
	"nic":        "use --net tap=NAME[,mac=MAC] (or -netdev tap,id=N,ifname=NAME -device virtio-net-pci,netdev=N)",
	"daemonize":  "vmm runs in the foreground; run it under your service manager or with --console none &",
}

// flagNames lists the flags of fs.
func flagNames(fs *flag.FlagSet) []string {
	var names []string
	fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
	return names
}

// suggest returns the names closest to typed: within an edit distance of
// one for short names and two otherwise (a transposition counts one), or
// those typed is a prefix of; only the nearest, at most three.
func suggest(typed string, names []string) []string {
	type cand struct {
		name string
		d    int
	}
	var cs []cand
	limit := 1
	if len(typed) > 4 {
		limit = 2
	}
	for _, n := range names {
		d := editDistance(strings.ToLower(typed), n)
		switch {
		case d <= limit:
			cs = append(cs, cand{n, d})
		case len(typed) >= 3 && strings.HasPrefix(n, typed):
			cs = append(cs, cand{n, limit + 1})
		}
	}
	sort.SliceStable(cs, func(i, j int) bool {
		if cs[i].d != cs[j].d {
			return cs[i].d < cs[j].d
		}
		return cs[i].name < cs[j].name
	})
	var out []string
	for _, c := range cs {
		if len(out) == 3 || c.d > cs[0].d {
			break // only the nearest ones
		}
		out = append(out, c.name)
	}
	return out
}

// editDistance is the optimal string alignment distance between a and b:
// insertions, deletions, substitutions and adjacent transpositions cost 1.
func editDistance(a, b string) int {
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}

// seconds is a time.Duration flag that also takes a bare number of
// seconds: --timeout 30 is --timeout 30s.
type seconds time.Duration

func (s *seconds) String() string { return time.Duration(*s).String() }

func (s *seconds) Get() any { return time.Duration(*s) }

func (s *seconds) Set(v string) error {
	d, err := parseSeconds(v)
	if err != nil {
		return err
	}
	*s = seconds(d)
	return nil
}

// parseSeconds reads a Go duration ("90s", "1m30s") or a bare number of
// seconds ("30", "2.5").
func parseSeconds(v string) (time.Duration, error) {
	v = strings.TrimSpace(v)
	if f, err := strconv.ParseFloat(v, 64); err == nil {
		if f < 0 || f > float64(1<<62)/float64(time.Second) {
			return 0, fmt.Errorf("%q seconds is out of range", v)
		}
		return time.Duration(f * float64(time.Second)), nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("%q: want a duration such as 30s, 5m or 1h30m, or a number of seconds", v)
	}
	return d, nil
}

// printFlags lists the flags of fs like flag.PrintDefaults, except those in
// skip (listed separately by the caller).
func printFlags(w io.Writer, fs *flag.FlagSet, skip map[string]bool) {
	fs.VisitAll(func(f *flag.Flag) {
		if skip[f.Name] {
			return
		}
		printFlag(w, f)
	})
}

// printFlag writes one flag in flag.PrintDefaults's layout.
func printFlag(w io.Writer, f *flag.Flag) {
	var b strings.Builder
	fmt.Fprintf(&b, "  -%s", f.Name)
	name, usage := flag.UnquoteUsage(f)
	if name != "" {
		b.WriteString(" " + name)
	}
	if b.Len() <= 4 {
		b.WriteString("\t")
	} else {
		b.WriteString("\n    \t")
	}
	b.WriteString(strings.ReplaceAll(usage, "\n", "\n    \t"))
	if !isZeroFlag(f) {
		if _, ok := f.Value.(interface{ IsBoolFlag() bool }); !ok && isStringFlag(f) {
			fmt.Fprintf(&b, " (default %q)", f.DefValue)
		} else {
			fmt.Fprintf(&b, " (default %v)", f.DefValue)
		}
	}
	fmt.Fprintln(w, b.String())
}

func isZeroFlag(f *flag.Flag) bool {
	switch f.DefValue {
	case "", "0", "false", "0s", "[]":
		return true
	}
	return false
}

func isStringFlag(f *flag.Flag) bool {
	g, ok := f.Value.(flag.Getter)
	if !ok {
		return false
	}
	_, ok = g.Get().(string)
	return ok
}
