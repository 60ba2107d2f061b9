package vmm

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// HostKind says how this host's KVM runs guest kernel mode (CPL0). It
// decides the CPUID profile and kernel command-line defaults for Linux
// guests, the bzImage extraction default, and how the gdb stub steps.
type HostKind string

// Host kinds. HostAuto (the zero value) makes the machine decide with
// DetectHost the first time it needs to know.
const (
	HostAuto HostKind = ""
	// HostNative: hardware virtualization (VMX/SVM): guest kernel code
	// runs natively.
	HostNative HostKind = "native"
	// HostEmulated: KVM without VMX/SVM (kvm_pvm; README, "This host"): guest
	// kernel code runs in KVM's instruction emulator, guest user mode
	// natively.
	HostEmulated HostKind = "emulated"
)

// ParseHostKind accepts "auto" (or ""), "native" and "emulated".
func ParseHostKind(s string) (HostKind, error) {
	switch s {
	case "", "auto":
		return HostAuto, nil
	case string(HostNative), string(HostEmulated):
		return HostKind(s), nil
	}
	return HostAuto, fmt.Errorf("host kind %q: want auto, native or emulated", s)
}

// HostSignals are the cheap facts DetectHost decides from.
type HostSignals struct {
	// VMX, SVM and Hypervisor are the flags of the first CPU in
	// /proc/cpuinfo: the host kernel clears vmx/svm when the feature is
	// absent or disabled, and hypervisor means this host is itself a VM.
	VMX, SVM, Hypervisor bool
	// Modules are the KVM vendor modules present under /sys/module
	// (kvm_intel, kvm_amd, kvm_pvm; built-in ones appear there too through
	// their parameters): the one present is what backs /dev/kvm.
	Modules []string
	// Err is why the signals could not be read (then they decide nothing).
	Err error
	// flagsRead is set once /proc/cpuinfo was read (DetectHost skips it
	// when kvm_pvm alone decides).
	flagsRead bool
}

// kvmVendorModules are the modules that can back /dev/kvm on x86.
var kvmVendorModules = []string{"kvm_intel", "kvm_amd", "kvm_pvm"}

// hostRoot prefixes /proc and /sys in tests.
var hostRoot = "/"

// ReadHostSignals reads /sys/module and /proc/cpuinfo's first flags line
// (about 100 µs: the kernel asks every CPU for its frequency to print
// /proc/cpuinfo), no VM created.
func ReadHostSignals() HostSignals {
	s := readModules()
	s.readFlags()
	return s
}

// readModules fills Modules only.
func readModules() HostSignals {
	var s HostSignals
	for _, m := range kvmVendorModules {
		if _, err := os.Stat(filepath.Join(hostRoot, "sys/module", m)); err == nil {
			s.Modules = append(s.Modules, m)
		}
	}
	return s
}

// readFlags fills the CPU flags (or Err) from /proc/cpuinfo.
func (s *HostSignals) readFlags() {
	f, err := os.Open(filepath.Join(hostRoot, "proc/cpuinfo"))
	if err != nil {
		s.Err = err
		return
	}
	defer f.Close()
	s.flagsRead = true
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 8192), 1<<20)
	for sc.Scan() {
		k, v, ok := bytes.Cut(sc.Bytes(), []byte(":"))
		if !ok || string(bytes.TrimSpace(k)) != "flags" {
			continue
		}
		for _, fl := range strings.Fields(string(v)) {
			switch fl {
			case "vmx":
				s.VMX = true
			case "svm":
				s.SVM = true
			case "hypervisor":
				s.Hypervisor = true
			}
		}
		return
	}
	if err := sc.Err(); err != nil {
		s.Err = fmt.Errorf("/proc/cpuinfo: %w", err)
	} else {
		s.Err = fmt.Errorf("/proc/cpuinfo has no flags line")
	}
}

func (s HostSignals) has(module string) bool {
	for _, m := range s.Modules {
		if m == module {
			return true
		}
	}
	return false
}

// String is the signals in one line, for logs and `vmm probe`.
func (s HostSignals) String() string {
	if s.Err != nil {
		return "unreadable: " + s.Err.Error()
	}
	var fl []string
	for _, f := range []struct {
		name string
		on   bool
	}{{"vmx", s.VMX}, {"svm", s.SVM}, {"hypervisor", s.Hypervisor}} {
		if f.on {
			fl = append(fl, f.name)
		}
	}
	flags, mods := "none of vmx/svm/hypervisor", "none of "+strings.Join(kvmVendorModules, "/")
	if !s.flagsRead {
		flags = "not read (not needed)"
	}
	if len(fl) > 0 {
		flags = strings.Join(fl, " ")
	}
	if len(s.Modules) > 0 {
		mods = strings.Join(s.Modules, " ")
	}
	return fmt.Sprintf("CPU flags: %s; KVM modules: %s", flags, mods)
}

// Decide maps the signals to a host kind, or HostAuto with the reason
// when they are ambiguous:
//   - kvm_pvm alone backs /dev/kvm: emulated (PVM runs a non-PVM guest's
//     kernel mode in KVM's instruction emulator);
//   - kvm_intel alone with the vmx flag, or kvm_amd alone with svm: native;
//   - anything else (several backends, none visible, a vendor module
//     without its CPU flag): ambiguous.
func (s HostSignals) Decide() (HostKind, string) {
	if s.Err != nil {
		return HostAuto, "host signals unreadable: " + s.Err.Error()
	}
	intel, amd, pvm := s.has("kvm_intel"), s.has("kvm_amd"), s.has("kvm_pvm")
	switch {
	case pvm && !intel && !amd:
		return HostEmulated, "kvm_pvm backs /dev/kvm (no kvm_intel/kvm_amd): guest kernel mode runs in KVM's instruction emulator"
	case intel && !amd && !pvm && s.VMX:
		return HostNative, "kvm_intel backs /dev/kvm and the CPU has vmx: hardware virtualization"
	case amd && !intel && !pvm && s.SVM:
		return HostNative, "kvm_amd backs /dev/kvm and the CPU has svm: hardware virtualization"
	}
	return HostAuto, "ambiguous host signals (" + s.String() + ")"
}

// HostDecision is a host kind and why it was chosen.
type HostDecision struct {
	Kind    HostKind
	Reason  string
	Signals HostSignals
	// Measured is set when the signals were ambiguous and the timing probe
	// decided; KernelLoop and UserLoop are its fastest runs.
	Measured             bool
	KernelLoop, UserLoop time.Duration
}

// String is the decision in one line: "emulated (reason)".
func (d HostDecision) String() string { return fmt.Sprintf("%s (%s)", d.Kind, d.Reason) }

// DetectHost decides the host kind from the cheap signals and measures
// with tiny probe guests only when they are ambiguous (a few milliseconds;
// see MeasureHost). path is the KVM device the measurement uses.
func DetectHost(ctx context.Context, path string) (HostDecision, error) {
	s := readModules()
	if len(s.Modules) != 1 || s.Modules[0] != "kvm_pvm" {
		// kvm_pvm alone decides without the CPU flags; everything else
		// needs them.
		s.readFlags()
	}
	d := HostDecision{Signals: s}
	d.Kind, d.Reason = s.Decide()
	if d.Kind != HostAuto {
		return d, nil
	}
	k, u, err := MeasureHost(ctx, path, detectLoops, detectRuns)
	if err != nil {
		return d, fmt.Errorf("%s, and the timing probe failed: %w", d.Reason, err)
	}
	d.Measured, d.KernelLoop, d.UserLoop = true, k, u
	d.Kind = HostNative
	if emulatedTimes(k, u, detectLoops) {
		d.Kind = HostEmulated
	}
	d.Reason = fmt.Sprintf("%s; measured: the fastest %d-iteration loop took %v at CPL0 and %v at CPL3",
		d.Reason, detectLoops, k.Round(time.Microsecond), u.Round(time.Microsecond))
	return d, nil
}

// detectRuns bounds the probe guests DetectHost runs when it must measure.
const detectRuns = 5

// MeasureHost runs the probe guest up to runs times with a loops-iteration
// loop at CPL0 and at CPL3 and returns the fastest time of each. It stops
// early once a run shows native kernel mode: preemption only ever makes a
// loop slower, so one fast CPL0 loop settles it.
func MeasureHost(ctx context.Context, path string, loops, runs int) (kernel, user time.Duration, err error) {
	for i := 0; i < runs; i++ {
		k, u, err := measureEmulation(ctx, path, loops)
		if err != nil {
			return 0, 0, err
		}
		if i == 0 || k < kernel {
			kernel = k
		}
		if i == 0 || u < user {
			user = u
		}
		if !emulatedTimes(kernel, user, loops) {
			break
		}
	}
	return kernel, user, nil
}

// hostState is a machine's resolved host decision (Config.Host or
// DetectHost), made the first time something needs it.
type hostState struct {
	once sync.Once
	d    HostDecision
}

// host resolves Config.Host once per machine and logs the decision.
func (m *Machine) host() HostDecision {
	m.hostKind.once.Do(func() {
		d := &m.hostKind.d
		if m.cfg.Host != HostAuto {
			d.Kind, d.Reason = m.cfg.Host, "set by the configuration"
			m.log.WithField("host", d.Kind).Debug("host kind set by the configuration")
			return
		}
		var err error
		*d, err = DetectHost(context.Background(), m.cfg.KVMPath)
		if err != nil {
			d.Kind, d.Reason = HostNative, err.Error()+"; assuming native"
			m.log.WithError(err).Warn("cannot tell whether this host's KVM emulates guest kernel mode; assuming native")
			return
		}
		m.log.WithField("host", d.Kind).WithField("why", d.Reason).Info("host kind detected")
	})
	return m.hostKind.d
}

// hostEmulated says whether this machine treats its host as one whose KVM
// emulates guest kernel mode (Config.Host, or detected).
func (m *Machine) hostEmulated() bool { return m.host().Kind == HostEmulated }

// Host is the machine's host decision (resolving Config.Host if needed).
func (m *Machine) Host() HostDecision { return m.host() }
