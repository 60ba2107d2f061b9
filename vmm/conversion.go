package vmm

import (
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/vmmgo/vmm/firmware"
	"github.com/vmmgo/vmm/internal/guestlog"
	"github.com/vmmgo/vmm/kvm"
	"github.com/vmmgo/vmm/memory"
	"github.com/vmmgo/vmm/vmm/devices/pvmem"
)

// Guest share/unshare requests reach memory.Guest.Convert through exactly
// one entry point per transport, all in this file, each counted (requests,
// refusals, pages changed, time spent) and logged the same way by convert:
//
//   - the KVM_HC_MAP_GPA_RANGE hypercall (KVM_EXIT_HYPERCALL, hardware KVM
//     hosts): mapGPARange;
//   - the pvmem port's register interface and request lists (docs/pvmem.md,
//     every host, including ours where vmcall never exits): the Convert
//     callback attachPVMem gives the device;
//   - the implicit conversion of KVM_EXIT_MEMORY_FAULT on VMs where KVM
//     enforces private memory: memoryFaultConvert.

// Transport names a way a guest asks for a conversion.
type Transport int

const (
	TransportHypercall     Transport = iota // KVM_HC_MAP_GPA_RANGE
	TransportPVMemRegister                  // pvmem CONVERT
	TransportPVMemList                      // pvmem LIST_CONVERT, per entry
	TransportMemoryFault                    // implicit, on KVM_EXIT_MEMORY_FAULT
	numTransports
)

func (t Transport) String() string {
	switch t {
	case TransportHypercall:
		return "hypercall"
	case TransportPVMemRegister:
		return "pvmem-register"
	case TransportPVMemList:
		return "pvmem-list"
	case TransportMemoryFault:
		return "memory-fault"
	}
	return "transport" + strconv.Itoa(int(t))
}

// TransportStats counts the conversions of one transport.
type TransportStats struct {
	Requests uint64 `json:"requests"`      // conversion requests, refused ones included
	Refused  uint64 `json:"refused"`       // requests refused (nothing changed)
	Pages    uint64 `json:"pages_changed"` // pages whose state flipped
	TimeNS   uint64 `json:"time_ns"`       // time spent converting
}

// ConversionStats is the conversion counters by transport, plus the pvmem
// requests refused before they became conversions because they came from
// guest user mode.
type ConversionStats struct {
	Hypercall     TransportStats `json:"hypercall"`
	PVMemRegister TransportStats `json:"pvmem_register"`
	PVMemList     TransportStats `json:"pvmem_list"`
	MemoryFault   TransportStats `json:"memory_fault"`
	NotKernelMode uint64         `json:"not_kernel_mode"`
	// UnprotectedDrivers counts virtio drivers refused because the guest
	// kernel lacks protected-guest support (--private-memory only).
	UnprotectedDrivers uint64 `json:"unprotected_drivers"`
}

type transportCounters struct {
	requests, refused, pages, nanos atomic.Uint64
}

func (c *transportCounters) snapshot() TransportStats {
	return TransportStats{Requests: c.requests.Load(), Refused: c.refused.Load(), Pages: c.pages.Load(), TimeNS: c.nanos.Load()}
}

// conversionCounters lives in the Machine.
type conversionCounters struct {
	by [numTransports]transportCounters
}

// convert is the one place a guest request reaches memory.Guest.Convert.
func (m *Machine) convert(vcpu int, t Transport, req memory.ConvertRequest) (memory.ConvertResult, error) {
	c := &m.conv.by[t]
	start := time.Now()
	res, err := m.mem.Convert(req)
	c.nanos.Add(uint64(time.Since(start)))
	c.requests.Add(1)
	if err != nil {
		c.refused.Add(1)
		if ok, n := m.convLimit.Allow(); ok {
			guestlog.Suppressed(m.log, n).WithFields(logrus.Fields{"vcpu": vcpu, "transport": t.String(), "request": req.String()}).
				WithError(err).Warn("guest share/unshare request refused")
		}
		return res, err
	}
	c.pages.Add(res.Changed)
	if m.log.Logger.IsLevelEnabled(logrus.TraceLevel) {
		m.log.WithFields(logrus.Fields{"vcpu": vcpu, "transport": t.String(), "request": req.String(), "changed": res.Changed}).
			Trace("guest share/unshare")
	}
	return res, nil
}

// Conversions returns the conversion counters by transport.
func (m *Machine) Conversions() ConversionStats {
	s := ConversionStats{
		Hypercall:     m.conv.by[TransportHypercall].snapshot(),
		PVMemRegister: m.conv.by[TransportPVMemRegister].snapshot(),
		PVMemList:     m.conv.by[TransportPVMemList].snapshot(),
		MemoryFault:   m.conv.by[TransportMemoryFault].snapshot(),
	}
	if m.pvmem != nil {
		s.NotKernelMode = m.pvmem.Stats().NotKernel
	}
	s.UnprotectedDrivers = m.unprotectedDrivers.Load()
	return s
}

// configureConversion decides whether KVM itself can enforce private memory
// and says so in the log. On a default VM type it cannot:
// KVM_CAP_MEMORY_ATTRIBUTES needs a VM type with private memory
// (docs/kvm-api.md §6) and guest_memfd in-place attributes are not in 6.18.
// Then privacy is enforced on the host side only: every device access goes
// through the page state. The attribute sink is also where the guest_memfd
// in-place conversion ioctl plugs in once the kernel has it; host access to
// a private page then faults (SIGBUS), which memory.Guest's device accesses
// already turn into the refused-access error.
func (m *Machine) configureConversion() {
	attrs, _ := m.vm.CheckExtension(kvm.CapMemoryAttributes)
	if attrs&int(kvm.MemoryAttributePrivate) != 0 {
		m.mem.SetAttributeSink(func(gpa, size uint64, private bool) error {
			a := uint64(0)
			if private {
				a = kvm.MemoryAttributePrivate
			}
			return m.vm.SetMemoryAttributes(gpa, size, a)
		})
		m.kvmEnforced = true
		m.log.Info("guest private memory: enforced by KVM (KVM_SET_MEMORY_ATTRIBUTES) and by device checks")
		return
	}
	m.log.Debug("guest private memory: KVM cannot enforce it on this VM type (no KVM_CAP_MEMORY_ATTRIBUTES PRIVATE); enforced by the VMM's device checks only")
}

// mapGPARange is the hypercall transport. It returns the value for
// hypercall.ret: 0, or -KVM_EINVAL for any refused request (the hypercall ABI
// has no finer codes; the reason is logged and counted).
func (m *Machine) mapGPARange(vcpu int, gpa, npages, attrs uint64) uint64 {
	req := memory.ConvertRequest{GPA: memory.GPA(gpa), NPages: npages, Attrs: attrs}
	if _, err := m.convert(vcpu, TransportHypercall, req); err != nil {
		return negErrno(kvm.KVMEINVAL)
	}
	return 0
}

// memoryFaultConvert is the implicit transport: KVM_EXIT_MEMORY_FAULT says
// the guest touched [gpa, gpa+size) with the other state than the page has;
// convert the pages it covers to what the access wanted (as QEMU does).
func (m *Machine) memoryFaultConvert(vcpu int, gpa, size uint64, private bool) error {
	start := gpa &^ (memory.PageSize - 1)
	end := (gpa + max(size, 1) + memory.PageSize - 1) &^ (memory.PageSize - 1)
	attrs := uint64(0)
	if private {
		attrs = memory.AttrPrivate
	}
	_, err := m.convert(vcpu, TransportMemoryFault, memory.ConvertRequest{GPA: memory.GPA(start), NPages: (end - start) / memory.PageSize, Attrs: attrs})
	return err
}

// ConversionStats is the page-state counters of guest RAM.
func (m *Machine) ConversionStats() memory.Stats { return m.mem.Stats() }

// Footprint is the host memory in use for guest RAM now.
func (m *Machine) Footprint() (memory.Usage, error) { return m.backend.Usage() }

// attachPVMem registers the paravirtual share/unshare port (docs/pvmem.md),
// the transport that works on every host. It claims pvmem.DecodePorts
// ports so that a 32-bit access at every register reaches the device.
func (m *Machine) attachPVMem() error {
	d, err := pvmem.New(m.mem, pvmem.Config{
		VCPUs: m.cfg.CPUs, ZeroOnConvert: m.cfg.ZeroOnConvert,
		Log: m.log.WithField("device", "pvmem"),
		Convert: func(vcpu int, t pvmem.Transport, req memory.ConvertRequest) (memory.ConvertResult, error) {
			if t == pvmem.TransportList {
				return m.convert(vcpu, TransportPVMemList, req)
			}
			return m.convert(vcpu, TransportPVMemRegister, req)
		},
		CPL:       m.vcpuCPL,
		AllowUser: m.cfg.TestUserConversions,
	})
	if err != nil {
		return err
	}
	m.pvmem = d
	return m.pio.Register("pvmem", PortPVMem, pvmem.DecodePorts, d)
}

// vcpuCPL is the current privilege level of vCPU id: SS.DPL, which is the
// CPL by definition (SDM Vol. 3A §5.5; KVM's own get_cpl reads it).
// KVM_GET_SREGS is a vCPU ioctl, so this must run on the vCPU's thread:
// pvmem calls it from the port exit, only when a conversion doorbell rings.
func (m *Machine) vcpuCPL(id int) (int, error) {
	if id < 0 || id >= len(m.vcpus) {
		return -1, fmt.Errorf("no vCPU %d", id)
	}
	s, err := m.vcpus[id].cpu.Sregs()
	if err != nil {
		return -1, err
	}
	return int(s.SS.DPL), nil
}

// Protected guests (--private-memory): what the VMM tells the guest kernel.

// swiotlbDefaultMiB is the bounce-buffer pool the VMM suggests for a
// protected guest of ram bytes: 1/32 of RAM within [8, 64] MiB (16 MiB for
// 512 MiB), small enough that private pages stay above 90 % of RAM and big
// enough for the virtio queues of a boot (the kernel's own default, 64 MiB,
// would be 12.5 % of a 512 MiB guest).
func swiotlbDefaultMiB(ram uint64) uint32 {
	mib := ram >> 20 / 32
	return uint32(min(max(mib, 8), 64))
}

// swiotlbSlabBytes is IO_TLB_SIZE (include/linux/swiotlb.h): swiotlb=<n>
// counts slabs of 2 KiB.
const swiotlbSlabBytes = 2048

// protectedMode is the CPUID announce of a machine: nil unless
// --private-memory. swiotlbMiB is what ECX suggests (0 = kernel default).
func (m *Machine) protectedMode(swiotlbMiB uint32) *firmware.ProtectedMode {
	if !m.cfg.PrivateMemory {
		return nil
	}
	return &firmware.ProtectedMode{PVMemPort: PortPVMem, SwiotlbMiB: swiotlbMiB} // the port attachPVMem registers
}

// protectedCmdline adds the swiotlb default to a protected guest's kernel
// command line unless the user set swiotlb= already, and returns the
// command line and the CPUID announce to match (ECX 0 when the user chose).
func (m *Machine) protectedCmdline(cmdline string) (string, *firmware.ProtectedMode) {
	if !m.cfg.PrivateMemory {
		return cmdline, nil
	}
	for _, f := range strings.Fields(cmdline) {
		if strings.HasPrefix(f, "swiotlb=") {
			return cmdline, m.protectedMode(0)
		}
	}
	mib := swiotlbDefaultMiB(m.cfg.Memory)
	slabs := uint64(mib) << 20 / swiotlbSlabBytes
	return strings.TrimSpace(fmt.Sprintf("%s swiotlb=%d", cmdline, slabs)), m.protectedMode(mib)
}

// guestShares reports whether the guest has shared any memory (with
// --private-memory it starts with none): a virtio driver negotiating
// before that has no shared memory for its DMA.
func (m *Machine) guestShares() bool { return m.mem.Stats().SharedPages > 0 }

// unprotectedDriver reports, once per machine and clearly, that the guest
// kernel drives a virtio device without protected-guest support: it did not
// accept VIRTIO_F_ACCESS_PLATFORM, negotiated before sharing any memory, or
// put a virtqueue in memory it had not shared. Without this a
// --private-memory guest sees only I/O errors.
func (m *Machine) unprotectedDriver(device, why string) {
	m.unprotectedOnce.Do(func() {
		m.log.WithFields(logrus.Fields{"device": device, "reason": why}).Error(
			"guest kernel lacks protected-guest support: with --private-memory all guest RAM starts private and the kernel " +
				"must share its DMA buffers and virtqueues (docs/conversion.md, \"Protected guests\"); this device stays " +
				"unusable. Boot a kernel with the project's protected-guest patch, or drop --private-memory")
	})
	m.unprotectedDrivers.Add(1)
}

// MemoryReport is the page-state counters and the host footprint of guest
// RAM, for state dumps (SIGUSR1, Ctrl-A s) while the guest runs.
func (m *Machine) MemoryReport() string {
	cs := m.mem.Stats()
	out := fmt.Sprintf("guest memory: %s %s, shared %d pages, private %d pages\n"+
		"conversions: to-private %d, to-shared %d, pages converted %d, refused %d, device accesses refused %d\n",
		m.backend.Kind(), formatSize(m.cfg.Memory), cs.SharedPages, cs.PrivatePages,
		cs.ToPrivate, cs.ToShared, cs.PagesConverted, cs.Refused, cs.DeviceRefused)
	out += m.Conversions().String()
	if u, err := m.backend.Usage(); err == nil {
		out += fmt.Sprintf("host footprint of guest RAM: %d bytes in use (resident %d, file blocks %d, hugetlb pages %d)\n",
			u.InUse, u.Resident, u.Allocated, u.HugePages)
	}
	return out
}

// String is one line per transport that saw requests, plus the CPL refusals.
func (s ConversionStats) String() string {
	var b strings.Builder
	for _, t := range []struct {
		name string
		c    TransportStats
	}{
		{TransportHypercall.String(), s.Hypercall}, {TransportPVMemRegister.String(), s.PVMemRegister},
		{TransportPVMemList.String(), s.PVMemList}, {TransportMemoryFault.String(), s.MemoryFault},
	} {
		if t.c.Requests == 0 {
			continue
		}
		fmt.Fprintf(&b, "conversions via %s: %d requests (%d refused), %d pages changed, %v\n",
			t.name, t.c.Requests, t.c.Refused, t.c.Pages, time.Duration(t.c.TimeNS))
	}
	if s.NotKernelMode > 0 {
		fmt.Fprintf(&b, "conversions refused because the guest asked from user mode: %d\n", s.NotKernelMode)
	}
	if s.UnprotectedDrivers > 0 {
		fmt.Fprintf(&b, "virtio drivers refused for lacking protected-guest support: %d\n", s.UnprotectedDrivers)
	}
	return b.String()
}
