package main

import (
	"strings"
)

// Marker lines printed on the console; test harnesses match them.
const (
	MarkerHello      = "VMM-GUEST-INIT: hello from userspace"
	MarkerExitPrefix = "VMM-GUEST-INIT: exit "
	// RunParam is the kernel command-line parameter naming the command to run.
	RunParam = "vmm.run"
)

// splitCmdline splits a kernel command line into parameters the way the
// kernel's next_arg() does (lib/cmdline.c / kernel/params.c): spaces separate
// parameters except inside double quotes, and the quotes themselves are
// removed ("a=\"b c\"" and "\"a=b c\"" both give a=b c).
func splitCmdline(s string) []string {
	var out []string
	var cur strings.Builder
	inQuote, have := false, false
	for _, r := range s {
		switch {
		case r == '"':
			inQuote = !inQuote
			have = true
		case !inQuote && (r == ' ' || r == '\t' || r == '\n'):
			if have {
				out = append(out, cur.String())
				cur.Reset()
				have = false
			}
		default:
			cur.WriteRune(r)
			have = true
		}
	}
	if have {
		out = append(out, cur.String())
	}
	return out
}

// commandFromCmdline returns the argv to run: the fields of the last
// vmm.run= parameter before a "--" separator, or nil when there is none.
func commandFromCmdline(cmdline string) []string {
	var argv []string
	for _, p := range splitCmdline(cmdline) {
		if p == "--" {
			break
		}
		if v, ok := strings.CutPrefix(p, RunParam+"="); ok {
			argv = strings.Fields(v)
		}
	}
	if len(argv) == 0 {
		return nil
	}
	return argv
}

// exitLine formats the exit marker for code.
func exitLine(code int) string {
	return MarkerExitPrefix + itoa(code)
}

// itoa avoids pulling strconv's float tables into the tiny init; it handles
// the negative codes os.ProcessState.ExitCode can return.
func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	neg := n < 0
	u := uint64(n)
	if neg {
		u = uint64(-n)
	}
	var b [21]byte
	i := len(b)
	for u > 0 {
		i--
		b[i] = byte('0' + u%10)
		u /= 10
	}
	if neg {
		i--
		b[i] = '-'
	}
	return string(b[i:])
}
