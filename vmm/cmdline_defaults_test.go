package vmm

import (
	"io"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"
)

func TestEmulatedHostCmdline(t *testing.T) {
	log := logrus.New()
	log.SetOutput(io.Discard)
	hook := test.NewLocal(log)
	e := logrus.NewEntry(log)

	got := emulatedHostCmdline("console=ttyS0 quiet", false, e)
	if !strings.HasPrefix(got, "console=ttyS0 quiet clearcpuid=") {
		t.Errorf("user parameters first, then the VMM's: %q", got)
	}
	if strings.Contains(got, "noxsave") {
		t.Errorf("noxsave is unknown to 6.1 and redundant with clearcpuid: %q", got)
	}
	for _, d := range emulatedHostDefaults {
		if !strings.Contains(" "+got+" ", " "+d.param+" ") {
			t.Errorf("default %q missing from %q", d.param, got)
		}
	}
	infos := 0
	for _, en := range hook.AllEntries() {
		if en.Level == logrus.InfoLevel {
			infos++
		}
	}
	if infos != len(emulatedHostDefaults) {
		t.Errorf("%d info logs for %d defaults", infos, len(emulatedHostDefaults))
	}

	// The user's own setting wins, with '-' and '_' alike.
	got = emulatedHostCmdline("watchdog_thresh=10 cryptomgr.notests=0 rcupdate.rcu-cpu-stall-suppress=0 initcall_blacklist=foo", false, e)
	for _, p := range []string{"cryptomgr.notests", "rcupdate.rcu_cpu_stall_suppress", "initcall_blacklist"} {
		if n := strings.Count(strings.ReplaceAll(got, "-", "_"), p); n != 1 {
			t.Errorf("%s appears %d times in %q, want the user's only", p, n, got)
		}
	}
	if strings.Contains(got, "nowatchdog") {
		t.Errorf("watchdog_thresh= set by the user, nowatchdog added anyway: %q", got)
	}
	if got := emulatedHostCmdline("console=ttyS0", true, e); strings.Contains(got, "nowatchdog") || !strings.Contains(got, "clearcpuid=") {
		t.Errorf("no defaults: want clearcpuid= only: %q", got)
	}

	// Parameters go before "--" (the rest is init's).
	got = emulatedHostCmdline("console=ttyS0 -- single foo=bar", false, e)
	kernel, initArgs, ok := strings.Cut(got, " -- ")
	if !ok || initArgs != "single foo=bar" || !strings.Contains(kernel, "clearcpuid=") || strings.Contains(initArgs, "clearcpuid") {
		t.Errorf("init arguments not kept apart: %q", got)
	}
	if got := emulatedHostCmdline("-- x", false, e); !strings.HasSuffix(got, " -- x") || !strings.HasPrefix(got, "clearcpuid=") {
		t.Errorf("leading --: %q", got)
	}

	// A user's clearcpuid= is merged: the kernel reads only the last one.
	got = emulatedHostCmdline("clearcpuid=1,129 root=/dev/vda", false, e)
	if strings.Count(got, "clearcpuid=") != 1 || !strings.Contains(got, "clearcpuid=1,129,137,140,") {
		t.Errorf("clearcpuid not merged: %q", got)
	}

	// Quoted values with spaces are one parameter.
	if names := paramNames(`dyndbg="file foo.c +p" nowatchdog`); !names["dyndbg"] || !names["nowatchdog"] || names["foo.c"] {
		t.Errorf("paramNames: %v", names)
	}
}

func TestClearCPUIDFitsTheKernelBuffer(t *testing.T) {
	_, v, _ := strings.Cut(emulatedKernelParams, "clearcpuid=")
	v, _, _ = strings.Cut(v, " ")
	if len(v) > clearCPUIDMax {
		t.Fatalf("clearcpuid value is %d bytes; the kernel reads %d", len(v), clearCPUIDMax)
	}
}
