package vmm

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/vmmgo/vmm/kvm"
	"github.com/vmmgo/vmm/memory"
)

// ProbeReport is what `vmm probe` prints: what this host's KVM offers the
// project, and whether it emulates guest kernel mode (docs/host-kvm.md).
type ProbeReport struct {
	Path       string
	APIVersion int
	Caps       []ProbeCap
	// Decoded views of the capabilities that are masks.
	GuestMemfdFlags int
	VMTypes         int
	HypercallMask   int
	MemoryAttrs     int
	HugePools       []memory.HugePool
	HugePoolErrs    []string
	PVMModule       bool // /sys/module/kvm_pvm exists

	// Kernel-mode emulation, measured with a tiny guest: the same loop of
	// ProbeLoops iterations at CPL0 and at CPL3.
	KernelLoop, UserLoop time.Duration
	Emulated             bool
	MeasureErr           error
}

// ProbeCap is one capability with its value and meaning.
type ProbeCap struct {
	Cap     kvm.Cap
	Value   int
	Err     error
	Meaning string
}

// probedCaps are the capabilities this project uses, in the order printed.
var probedCaps = []kvm.Cap{
	kvm.CapIRQChip, kvm.CapHLT, kvm.CapUserMemory, kvm.CapSetTSSAddr, kvm.CapExtCPUID,
	kvm.CapNrVCPUs, kvm.CapMaxVCPUs, kvm.CapPIT2, kvm.CapIOEventFD, kvm.CapIRQFD,
	kvm.CapSetIdentityMapAddr, kvm.CapIRQRouting, kvm.CapSignalMSI, kvm.CapDebugRegs,
	kvm.CapVCPUEvents, kvm.CapSetGuestDebug, kvm.CapImmediateExit, kvm.CapExitHypercall,
	kvm.CapUserMemory2, kvm.CapMemoryFaultInfo, kvm.CapMemoryAttributes, kvm.CapGuestMemfd,
	kvm.CapVMTypes, kvm.CapPreFaultMemory, kvm.CapGuestMemfdFlags,
}

// Probe opens the KVM device at path and fills a report. It returns an
// error only when KVM cannot be used at all (missing device, permission,
// wrong API version); everything else is recorded in the report.
func Probe(ctx context.Context, path string) (*ProbeReport, error) {
	r := &ProbeReport{Path: path}
	sys, err := kvm.Open(path)
	if err != nil {
		return nil, err
	}
	defer sys.Close()
	if r.APIVersion, err = sys.APIVersion(); err != nil {
		return nil, err
	}
	if r.APIVersion != 12 {
		return nil, fmt.Errorf("%s: KVM API version %d, this VMM needs 12", path, r.APIVersion)
	}
	vm, err := sys.CreateVM(kvm.VMTypeDefault)
	if err != nil {
		return nil, fmt.Errorf("create a VM: %w", err)
	}
	for _, c := range probedCaps {
		pc := ProbeCap{Cap: c, Meaning: c.Description()}
		// VM-scoped answers are the authoritative ones for guest_memfd flags
		// and memory attributes (they depend on the VM type).
		pc.Value, pc.Err = vm.CheckExtension(c)
		r.Caps = append(r.Caps, pc)
		switch c {
		case kvm.CapGuestMemfdFlags:
			r.GuestMemfdFlags = pc.Value
		case kvm.CapExitHypercall:
			r.HypercallMask = pc.Value
		case kvm.CapMemoryAttributes:
			r.MemoryAttrs = pc.Value
		}
	}
	vm.Close()
	if v, err := sys.CheckExtension(kvm.CapVMTypes); err == nil {
		r.VMTypes = v
	}
	for _, size := range []uint64{2 << 20, 1 << 30} {
		p, err := memory.ReadHugePool(size)
		if err != nil {
			r.HugePoolErrs = append(r.HugePoolErrs, fmt.Sprintf("%s pages: %v", formatSize(size), err))
			continue
		}
		r.HugePools = append(r.HugePools, p)
	}
	_, err = os.Stat("/sys/module/kvm_pvm")
	r.PVMModule = err == nil
	r.KernelLoop, r.UserLoop, r.MeasureErr = measureEmulation(ctx, path, ProbeLoops)
	r.Emulated = r.MeasureErr == nil && emulatedTimes(r.KernelLoop, ProbeLoops)
	return r, nil
}

// probeGuest is testdata/guests/probe.S assembled for 0x100000
// (TestProbeGuestMatchesSource re-assembles it and compares).
var probeGuest = []byte{
	0xe6, 0xf8, 0x8b, 0x0c, 0x25, 0x00, 0xf0, 0x1f, 0x00, 0xff, 0xc9, 0x75,
	0xfc, 0xe6, 0xf8, 0x48, 0xc7, 0xc0, 0x00, 0xf0, 0x07, 0x00, 0x6a, 0x23,
	0x50, 0x68, 0x02, 0x30, 0x00, 0x00, 0x6a, 0x1b, 0x48, 0x8d, 0x05, 0x03,
	0x00, 0x00, 0x00, 0x50, 0x48, 0xcf, 0xe6, 0xf8, 0x8b, 0x0c, 0x25, 0x00,
	0xf0, 0x1f, 0x00, 0xff, 0xc9, 0x75, 0xfc, 0xe6, 0xf8, 0x31, 0xc0, 0xe6,
	0xf4,
}

// markDevice records the host time of each write (a guest "timestamp").
type markDevice struct {
	mu    sync.Mutex
	marks []time.Time
}

func (d *markDevice) BusRead(_ int, _ uint64, data []byte) {
	for i := range data {
		data[i] = 0
	}
}

func (d *markDevice) BusWrite(_ int, _ uint64, _ []byte) {
	d.mu.Lock()
	if len(d.marks) < 1024 {
		d.marks = append(d.marks, time.Now())
	}
	d.mu.Unlock()
}

func (d *markDevice) times() []time.Time {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]time.Time(nil), d.marks...)
}

// PortMark is the timestamp-mark port of raw guests.
const PortMark = 0xf8

// ProbeLoops is the loop length `vmm probe` measures with; boot-time
// detection uses the shorter detectLoops (a few milliseconds when emulated).
const (
	ProbeLoops  = 100000
	detectLoops = 4000
)

// emulatedTimes decides from the kernel-mode loop time: a dec+jnz
// iteration takes about a nanosecond on any CPU that runs it natively and
// about 500 ns under this host's emulator (docs/host-kvm.md); 100 ns per
// iteration separates them. The user-mode loop is not part of the decision:
// on a loaded host it is the one most easily stretched by preemption, which
// once made a 20x ratio test call an emulating host native. Preemption can
// stretch a native kernel loop too, so callers take the fastest of several
// runs (HostEmulatesKernelMode).
func emulatedTimes(kernel time.Duration, loops int) bool {
	return kernel > time.Duration(loops)*100*time.Nanosecond
}

func measureEmulation(ctx context.Context, path string, loops int) (kernel, user time.Duration, err error) {
	cfg := DefaultConfig()
	cfg.KVMPath = path
	cfg.Memory = 2 << 20
	cfg.Timeout = 60 * time.Second
	m, err := New(cfg)
	if err != nil {
		return 0, 0, err
	}
	defer m.Close()
	marks := &markDevice{}
	if err := m.PIO().Register("mark", PortMark, 1, marks); err != nil {
		return 0, 0, err
	}
	if err := m.LoadRaw(RawImage{Data: probeGuest, Addr: 0x100000}); err != nil {
		return 0, 0, err
	}
	if err := m.Memory().Write(0x1ff000, []byte{byte(loops), byte(loops >> 8), byte(loops >> 16), byte(loops >> 24)}); err != nil {
		return 0, 0, err
	}
	res, err := m.Run(ctx)
	if err != nil {
		return 0, 0, err
	}
	if res.Outcome != OutcomePowerOff {
		return 0, 0, fmt.Errorf("probe guest ended with %v: %s\n%s", res.Outcome, res.Detail, res.Dump)
	}
	t := marks.times()
	if len(t) != 4 {
		return 0, 0, fmt.Errorf("probe guest wrote %d marks, want 4", len(t))
	}
	return t[1].Sub(t[0]), t[3].Sub(t[2]), nil
}

// WriteTo prints the report for people.
func (r *ProbeReport) WriteTo(w io.Writer) (int64, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "KVM device:        %s (API version %d)\n", r.Path, r.APIVersion)
	fmt.Fprintf(&b, "\nCapabilities (value on a default VM):\n")
	for _, c := range r.Caps {
		val := fmt.Sprint(c.Value)
		if c.Err != nil {
			val = "error: " + c.Err.Error()
		} else if c.Value == 0 {
			val = "absent"
		}
		fmt.Fprintf(&b, "  %-36s %-8s %s\n", fmt.Sprintf("%s (%d)", c.Cap, uint32(c.Cap)), val, c.Meaning)
	}
	fmt.Fprintf(&b, "\nguest_memfd flags:  %d = %s\n", r.GuestMemfdFlags, decodeGmemFlags(r.GuestMemfdFlags))
	fmt.Fprintf(&b, "VM types:           %#x = %s\n", r.VMTypes, decodeVMTypes(r.VMTypes))
	fmt.Fprintf(&b, "hypercall exits:    %#x = %s\n", r.HypercallMask, decodeHypercallMask(r.HypercallMask))
	privacy := "host-side only: KVM cannot make a page private on a default VM here (no KVM_CAP_MEMORY_ATTRIBUTES PRIVATE); the VMM refuses device access to private pages"
	if r.MemoryAttrs&int(kvm.MemoryAttributePrivate) != 0 {
		privacy = "KVM_SET_MEMORY_ATTRIBUTES(PRIVATE) available: enforced by KVM and by the VMM's device checks"
	}
	fmt.Fprintf(&b, "private memory:     %s\n", privacy)
	fmt.Fprintf(&b, "share/unshare:      in place (one allocation; hypercall KVM_HC_MAP_GPA_RANGE %s; port interface at %#x always)\n",
		map[bool]string{true: "enabled", false: "unavailable"}[r.HypercallMask&(1<<kvm.HCMapGPARange) != 0], PortPVMem)
	fmt.Fprintf(&b, "\nhugetlb pools:\n")
	for _, p := range r.HugePools {
		fmt.Fprintf(&b, "  %-5s total %d, free %d, reserved %d, surplus %d\n", formatSize(p.PageSize), p.Total, p.Free, p.Reserved, p.Surplus)
	}
	for _, e := range r.HugePoolErrs {
		fmt.Fprintf(&b, "  %s\n", e)
	}
	if len(r.HugePools) > 0 && r.HugePools[0].Total == 0 {
		fmt.Fprintf(&b, "  (reserve 2 MiB pages for --memory-backend hugetlb with: echo N > /proc/sys/vm/nr_hugepages)\n")
	}
	fmt.Fprintf(&b, "\nguest kernel mode:  ")
	switch {
	case r.MeasureErr != nil:
		fmt.Fprintf(&b, "could not measure: %v\n", r.MeasureErr)
	case r.Emulated:
		fmt.Fprintf(&b, "EMULATED (%d-iteration loop: %v at CPL0, %v at CPL3, %.0fx slower)\n", ProbeLoops, r.KernelLoop.Round(time.Microsecond), r.UserLoop.Round(time.Microsecond), float64(r.KernelLoop)/float64(max(r.UserLoop, 1)))
		fmt.Fprintf(&b, "                    this KVM emulates guest kernel code (no VMX/SVM): Linux boots slowly,\n")
		fmt.Fprintf(&b, "                    `vmm boot` picks --cpu-profile emulated, and vmcall never exits here\n")
	default:
		fmt.Fprintf(&b, "native (%d-iteration loop: %v at CPL0, %v at CPL3)\n", ProbeLoops, r.KernelLoop.Round(time.Microsecond), r.UserLoop.Round(time.Microsecond))
	}
	if r.PVMModule {
		fmt.Fprintf(&b, "kvm_pvm module:     loaded (shadow-paging PVM backend)\n")
	}
	n, err := io.WriteString(w, b.String())
	return int64(n), err
}

func decodeGmemFlags(v int) string {
	var s []string
	if v&int(kvm.GuestMemfdFlagMMAP) != 0 {
		s = append(s, "MMAP")
	}
	if v&int(kvm.GuestMemfdFlagInitShared) != 0 {
		s = append(s, "INIT_SHARED")
	}
	if len(s) == 0 {
		return "none (no mmap-able guest_memfd: --memory-backend guest_memfd unavailable)"
	}
	if v&3 == 3 {
		return strings.Join(s, "|") + " (--memory-backend guest_memfd available)"
	}
	return strings.Join(s, "|")
}

func decodeVMTypes(v int) string {
	names := []string{"DEFAULT", "SW_PROTECTED", "SEV", "SEV_ES", "SNP", "TDX"}
	var s []string
	for i, n := range names {
		if v&(1<<i) != 0 {
			s = append(s, n)
		}
	}
	if len(s) == 0 {
		return "none reported"
	}
	return strings.Join(s, ", ")
}

func decodeHypercallMask(v int) string {
	if v&(1<<kvm.HCMapGPARange) != 0 {
		return "KVM_HC_MAP_GPA_RANGE may exit to the VMM"
	}
	return "none"
}
