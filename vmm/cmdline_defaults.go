package vmm

import (
	"strings"

	"github.com/sirupsen/logrus"
)

// Kernel command-line defaults for hosts whose KVM emulates guest kernel
// mode. There every kernel instruction costs ~1000x its native time, so
// what a stock kernel does once at boot "because it is cheap" (self-tests,
// scans of its own symbol table, watchdogs that compare wall time with
// progress) becomes minutes. The VMM adds each of these only on such hosts
// and only when the user's command line does not name the parameter; each
// is logged at info with what it was measured to save (docs/emulation.md,
// "Command-line defaults").

// kernelDefault is one such parameter.
type kernelDefault struct {
	param string // added as is, e.g. "cryptomgr.notests"
	// also lists other parameters that, on the user's command line, mean
	// the user chose for themselves (e.g. watchdog_thresh= for nowatchdog,
	// a flag that cannot be turned off by naming it).
	also []string
	why  string // logged: what it skips and what that cost
}

// names are the parameter names that count as "set by the user".
func (d kernelDefault) names() []string {
	n, _, _ := strings.Cut(d.param, "=")
	return append([]string{n}, d.also...)
}

// emulatedHostDefaults are measured on Debian's 6.1 kernels
// (linux-image-6.1.0-*-amd64 and -cloud-amd64), 1 vCPU, on a 2-core
// emulating host (docs/emulation.md has the numbers).
var emulatedHostDefaults = []kernelDefault{
	{"cryptomgr.notests", nil, "skip the crypto API's self-test of every built-in algorithm at registration"},
	{"initcall_blacklist=ftrace_check_for_weak_functions", nil, "skip ftrace's boot scan that looks up all ~40,000 traceable call sites in kallsyms (it only hides weak-function records from function tracing)"},
	{"nowatchdog", []string{"nosoftlockup", "nmi_watchdog", "watchdog_thresh", "softlockup_panic"}, "no soft/hard lockup watchdog: under emulation it reports false lockups, and each report unwinds and symbolizes stacks"},
	{"rcupdate.rcu_cpu_stall_suppress=1", nil, "no RCU CPU stall warnings: false positives under emulation, each one a costly stack dump"},
}

// clearCPUIDMax is the size of the buffer cpu_parse_early_param copies
// clearcpuid's value into (arch/x86/kernel/cpu/common.c: char arg[128]);
// a longer value is cut.
const clearCPUIDMax = 127

// emulatedHostCmdline returns cmdline with what a host that emulates
// guest kernel mode needs (emulatedKernelParams: features whose
// instructions its emulator lacks) and the defaults above, each only where
// cmdline does not set it. Parameters go before a " -- " (what follows it
// is init's). A user's clearcpuid= is merged with the VMM's: the kernel
// reads only the last clearcpuid=.
// With noDefaults (LinuxConfig.NoDefaultCmdline) only what the guest needs
// to run is added, none of the defaults.
func emulatedHostCmdline(cmdline string, noDefaults bool, log *logrus.Entry) string {
	kernel, initArgs, hasInit := strings.Cut(cmdline, " -- ")
	if strings.HasPrefix(cmdline, "-- ") {
		kernel, initArgs, hasInit = "", strings.TrimPrefix(cmdline, "-- "), true
	}
	set := paramNames(kernel)
	var add []string
	for _, p := range strings.Fields(emulatedKernelParams) {
		name, val, _ := strings.Cut(p, "=")
		if name == "clearcpuid" && set["clearcpuid"] {
			kernel = mergeClearCPUID(kernel, val, log)
			continue
		}
		add = append(add, p)
	}
	for _, d := range emulatedHostDefaults {
		if noDefaults {
			break
		}
		if n := setAny(set, d.names()); n != "" {
			log.WithField("param", n).Debug("emulating host: the command line sets this parameter; no default added")
			continue
		}
		log.WithField("param", d.param).Info("emulating host: kernel command-line default (" + d.why + ")")
		add = append(add, d.param)
	}
	out := strings.TrimSpace(kernel + " " + strings.Join(add, " "))
	if hasInit {
		out += " -- " + initArgs
	}
	return out
}

// setAny returns the first of names that set has, or "".
func setAny(set map[string]bool, names []string) string {
	for _, n := range names {
		if set[normParam(n)] {
			return n
		}
	}
	return ""
}

// normParam spells a parameter name as the kernel compares it: '-' and
// '_' are the same (kernel/params.c parameq).
func normParam(s string) string { return strings.ReplaceAll(s, "-", "_") }

// paramNames returns the names of the parameters on a kernel command line
// (double-quoted values may hold spaces).
func paramNames(cmdline string) map[string]bool {
	set := map[string]bool{}
	for _, tok := range splitCmdline(cmdline) {
		name, _, _ := strings.Cut(tok, "=")
		set[normParam(strings.Trim(name, `"`))] = true
	}
	return set
}

// splitCmdline splits at spaces outside double quotes (lib/cmdline.c
// next_arg).
func splitCmdline(s string) []string {
	var out []string
	var cur strings.Builder
	quoted := false
	for _, r := range s {
		switch {
		case r == '"':
			quoted = !quoted
			cur.WriteRune(r)
		case (r == ' ' || r == '\t' || r == '\n') && !quoted:
			if cur.Len() > 0 {
				out = append(out, cur.String())
				cur.Reset()
			}
		default:
			cur.WriteRune(r)
		}
	}
	if cur.Len() > 0 {
		out = append(out, cur.String())
	}
	return out
}

// mergeClearCPUID folds the VMM's clearcpuid bits into the user's last
// clearcpuid= (the only one the kernel reads), keeping the user's entries
// first and dropping duplicates.
func mergeClearCPUID(kernel, ours string, log *logrus.Entry) string {
	toks := splitCmdline(kernel)
	last := -1
	for i, t := range toks {
		if strings.HasPrefix(t, "clearcpuid=") {
			last = i
		}
	}
	if last < 0 {
		return kernel
	}
	user := strings.TrimPrefix(toks[last], "clearcpuid=")
	seen := map[string]bool{}
	var bits []string
	for _, b := range append(strings.Split(user, ","), strings.Split(ours, ",")...) {
		if b != "" && !seen[b] {
			seen[b] = true
			bits = append(bits, b)
		}
	}
	merged := strings.Join(bits, ",")
	if len(merged) > clearCPUIDMax {
		log.WithField("clearcpuid", merged).Warn("emulating host: the merged clearcpuid= is longer than the 127 bytes the kernel reads; features past that are not cleared and their instructions may stop the guest")
	}
	toks[last] = "clearcpuid=" + merged
	return strings.Join(toks, " ")
}
