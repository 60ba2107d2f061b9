package vmm

import (
	"fmt"

	"github.com/sirupsen/logrus"
	"github.com/vmmgo/vmm/internal/guestlog"
	"github.com/vmmgo/vmm/kvm"
	"github.com/vmmgo/vmm/memory"
	"github.com/vmmgo/vmm/vmm/devices/pvmem"
)

// Guest share/unshare requests reach one routine, memory.Guest.Convert, from
// two transports: the KVM_HC_MAP_GPA_RANGE hypercall (KVM_EXIT_HYPERCALL,
// hardware KVM hosts) and the paravirtual port interface of docs/pvmem.md
// (every host, including ours where vmcall never exits).

// configureConversion decides whether KVM itself can enforce private memory
// and says so in the log. On a default VM type it cannot:
// KVM_CAP_MEMORY_ATTRIBUTES needs a VM type with private memory
// (docs/kvm-api.md §6) and guest_memfd in-place attributes are not in 6.18.
// Then privacy is enforced on the host side only: every device access goes
// through the page state.
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
	if _, err := m.mem.Convert(req); err != nil {
		m.conversionRefused(vcpu, "hypercall", req, err)
		return negErrno(kvm.KVMEINVAL)
	}
	return 0
}

func (m *Machine) conversionRefused(vcpu int, transport string, req memory.ConvertRequest, err error) {
	if ok, n := m.convLimit.Allow(); ok {
		guestlog.Suppressed(m.log, n).WithFields(logrus.Fields{"vcpu": vcpu, "transport": transport, "request": req.String()}).
			WithError(err).Warn("guest share/unshare request refused")
	}
}

// ConversionStats is the page-state counters of guest RAM.
func (m *Machine) ConversionStats() memory.Stats { return m.mem.Stats() }

// Footprint is the host memory in use for guest RAM now.
func (m *Machine) Footprint() (memory.Usage, error) { return m.backend.Usage() }

// attachPVMem registers the paravirtual share/unshare port (docs/pvmem.md),
// the transport that works on every host.
func (m *Machine) attachPVMem() error {
	d, err := pvmem.New(m.mem, pvmem.Config{VCPUs: m.cfg.CPUs, ZeroOnConvert: m.cfg.ZeroOnConvert,
		Log: m.log.WithField("device", "pvmem")})
	if err != nil {
		return err
	}
	m.pvmem = d
	return m.pio.Register("pvmem", PortPVMem, pvmem.NumPorts, d)
}

// MemoryReport is the page-state counters and the host footprint of guest
// RAM, for state dumps (SIGUSR1, Ctrl-A s) while the guest runs.
func (m *Machine) MemoryReport() string {
	cs := m.mem.Stats()
	out := fmt.Sprintf("guest memory: %s %s, shared %d pages, private %d pages\n"+
		"conversions: to-private %d, to-shared %d, pages converted %d, refused %d, device accesses refused %d\n",
		m.backend.Kind(), formatSize(m.cfg.Memory), cs.SharedPages, cs.PrivatePages,
		cs.ToPrivate, cs.ToShared, cs.PagesConverted, cs.Refused, cs.DeviceRefused)
	if u, err := m.backend.Usage(); err == nil {
		out += fmt.Sprintf("host footprint of guest RAM: %d bytes in use (resident %d, file blocks %d, hugetlb pages %d)\n",
			u.InUse, u.Resident, u.Allocated, u.HugePages)
	}
	return out
}
