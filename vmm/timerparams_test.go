package vmm

import (
	"context"
	"os"
	"strings"
	"testing"
)

// TestLinuxTimerParams loads (without running) the guest kernel and checks
// the final command line: no_timer_check only on hosts that emulate guest
// kernel mode, with and without the default command line, and never twice
// when the user gives it too.
func TestLinuxTimerParams(t *testing.T) {
	k, _ := guestKernel(t)
	kernel, err := os.ReadFile(k.VMLinux)
	if err != nil {
		t.Fatal(err)
	}
	host, err := DetectHost(context.Background(), DefaultConfig().KVMPath)
	if err != nil {
		t.Fatal(err)
	}
	emu := host.Kind == HostEmulated
	for _, tc := range []struct {
		name string
		lc   LinuxConfig
		want int // no_timer_check occurrences on a host that does not emulate
	}{
		{"default command line", LinuxConfig{Cmdline: "quiet"}, 0},
		{"no default command line", LinuxConfig{Cmdline: "console=ttyS0", NoDefaultCmdline: true}, 0},
		{"user asks for it", LinuxConfig{Cmdline: "no_timer_check"}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Memory = 128 << 20
			m, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			tc.lc.Kernel = kernel
			bi, err := m.LoadLinux(tc.lc)
			if err != nil {
				t.Fatal(err)
			}
			want := tc.want
			if emu {
				want = 1
			}
			if n := strings.Count(" "+bi.Cmdline+" ", " no_timer_check "); n != want {
				t.Errorf("emulating host %v: command line %q has no_timer_check %d times, want %d", emu, bi.Cmdline, n, want)
			}
		})
	}
}
