package vmm

import (
	"fmt"
	"testing"

	"github.com/sirupsen/logrus"
	"github.com/vmmgo/vmm/kvm"
	"github.com/vmmgo/vmm/kvm/kvmtest"
	"github.com/vmmgo/vmm/memory"
)

// TestTraceExitsHypercall: with TraceExits every KVM_EXIT_HYPERCALL gets a
// trace record with its number, arguments and the answer the guest gets
// (accepted, refused, not forwarded); without TraceExits none does. The
// exits are synthetic: vmcall never exits on hosts that emulate guest
// kernel mode (the nested lane runs real ones, internal/nested).
func TestTraceExitsHypercall(t *testing.T) {
	kvmtest.Open(t)
	for _, trace := range []bool{true, false} {
		t.Run(fmt.Sprint("trace=", trace), func(t *testing.T) {
			log, hook := traceLog()
			cfg := DefaultConfig()
			cfg.Memory = 64 << 20
			cfg.MemoryBackend = memory.KindMemfd
			cfg.TraceExits = trace
			cfg.Log = log
			m, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			v, err := m.newVCPU(0)
			if err != nil {
				t.Fatal(err)
			}
			m.vcpus = append(m.vcpus, v)
			v.run = kvm.NewRun(make([]byte, 4096+kvm.RunSize))
			calls := []struct {
				nr, gpa, n, attrs uint64
				ret               int64
			}{
				{kvm.HCMapGPARange, 0x200000, 2, memory.AttrPrivate, 0},
				{kvm.HCMapGPARange, 0x200800, 1, 0, -int64(kvm.KVMEINVAL)},
				{1, 0, 0, 0, -int64(kvm.KVMENOSYS)},
			}
			for _, c := range calls {
				v.run.PutHypercall(kvm.HypercallExit{Nr: c.nr, Args: [6]uint64{c.gpa, c.n, c.attrs}, Flags: kvm.HypercallExitLongMode})
				if !v.handleExit() {
					t.Fatal("the vCPU loop would stop on a hypercall exit")
				}
			}
			var got []string
			hook.mu.Lock()
			for _, e := range hook.entries {
				if e.Level == logrus.TraceLevel && e.Message == "exit" && e.Data["exit"] == "hypercall" {
					got = append(got, fmt.Sprintf("%v/%v/%v/%v", e.Data["nr"], e.Data["args"], e.Data["longmode"], e.Data["ret"]))
				}
			}
			hook.mu.Unlock()
			var want []string
			if trace {
				for _, c := range calls {
					want = append(want, fmt.Sprintf("%d/%#x,%#x,%#x/true/%d", c.nr, c.gpa, c.n, c.attrs, c.ret))
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("hypercall trace records %q, want %q", got, want)
			}
		})
	}
}

// traceLog is a trace-level logger that discards its output and keeps
// every entry in the returned hook.
func traceLog() (*logrus.Entry, *logCapture) {
	l := logrus.New()
	l.SetOutput(ioDiscard{})
	l.SetLevel(logrus.TraceLevel)
	hook := &logCapture{}
	l.AddHook(hook)
	return logrus.NewEntry(l), hook
}
