package vmm

import (
	"fmt"

	"github.com/vmmgo/vmm/firmware"
	"github.com/vmmgo/vmm/kvm"
)

// CPUID profile names (firmware.ProfileByName); ProfileAuto picks
// "emulated" on hosts whose KVM emulates guest kernel mode (Config.Host,
// m.hostEmulated), else "host".
const (
	ProfileAuto     = ""
	ProfileHost     = firmware.ProfileHost
	ProfileEmulated = firmware.ProfileEmulated
)

// cpuidProfile resolves a profile name (ProfileAuto follows the host kind).
func (m *Machine) cpuidProfile(name string) (firmware.Profile, error) {
	if name == ProfileAuto {
		name = ProfileHost
		if m.hostEmulated() {
			name = ProfileEmulated
		}
		m.log.WithField("host", m.host().String()).Infof("CPUID profile %s", name)
	}
	p, err := firmware.ProfileByName(name)
	if err != nil {
		return p, err
	}
	m.cpuProfileName = name
	// KVM_FEATURE_HC_MAP_GPA_RANGE tells the guest that vmcall reaches the
	// VMM. Where KVM emulates guest kernel mode, vmcall never exits
	// (docs/host-kvm.md) although the exit can be enabled: a guest that
	// believed the bit would hang on its first share, so it is not
	// advertised there and guests use the pvmem port.
	p.MapGPARange = m.hypercallExit && !m.hostEmulated()
	p.Protected = m.protectedMode(0) // LoadLinux refines ECX (protectedCmdline)
	if m.irqchip {
		n, err := m.vm.CheckExtension(kvm.CapTSCDeadlineTimer)
		p.TSCDeadline = err == nil && n > 0
	}
	return p, nil
}

// setCPUID gives vCPU v what profile makes of KVM_GET_SUPPORTED_CPUID.
func (m *Machine) setCPUID(v *vcpu, p firmware.Profile) error {
	if m.supportedCPUID == nil {
		es, err := m.sys.SupportedCPUID()
		if err != nil {
			return fmt.Errorf("KVM_GET_SUPPORTED_CPUID: %w", err)
		}
		for _, e := range es {
			m.supportedCPUID = append(m.supportedCPUID, firmware.CPUIDEntry{Function: e.Function, Index: e.Index,
				Flags: e.Flags, EAX: e.EAX, EBX: e.EBX, ECX: e.ECX, EDX: e.EDX})
		}
	}
	out, err := p.Apply(m.supportedCPUID, v.id, m.cfg.CPUs)
	if err != nil {
		return err
	}
	es := make([]kvm.CPUIDEntry, len(out))
	for i, e := range out {
		es[i] = kvm.CPUIDEntry{Function: e.Function, Index: e.Index, Flags: e.Flags, EAX: e.EAX, EBX: e.EBX, ECX: e.ECX, EDX: e.EDX}
	}
	if err := v.cpu.SetCPUID2(es); err != nil {
		return fmt.Errorf("vcpu %d: KVM_SET_CPUID2: %w", v.id, err)
	}
	return nil
}

// emulatedKernelParams is the guest-side half of the "emulated" profile.
// On a host whose KVM emulates guest kernel mode (kvm_pvm here) the guest's
// CPUID leaf 1 and 7 answers do not come from KVM_SET_CPUID2 (measured: the
// guest reads the host CPU's XSAVE and POPCNT bits whatever the table says;
// the hypervisor leaves 0x4000000x do follow the table), so the kernel must
// also be told on its command line not to use what the emulator cannot
// execute. clearcpuid takes X86_FEATURE_* bit numbers (word*32+bit,
// arch/x86/include/asm/cpufeatures.h; names only since 6.2); clearing a
// feature also clears what depends on it (cpuid-deps.c). The list must stay
// under the 128 bytes cpu_parse_early_param reads. SSSE3 is cleared for
// Debian's kernels: their built-in BLAKE2s (CONFIG_CRYPTO_BLAKE2S_X86, the
// random driver's hash) runs pshufb & co. after kernel_fpu_begin, which the
// emulator lacks (docs/emulation.md). (No "noxsave": 6.1
// clears XSAVE for it in cpu_parse_early_param, as for clearcpuid's 154,
// and then reports it as an unknown parameter.)
const emulatedKernelParams = "clearcpuid=" +
	"129,137,140,141,148,150,151,153,154,156,157,158," + // 1.ECX: PCLMULQDQ SSSE3 FMA CX16 SSE4.2 MOVBE POPCNT AES XSAVE AVX F16C RDRAND
	"291,293,295,296,304,306,307,308,317" // 7.0.EBX: BMI1 AVX2 SMEP BMI2 AVX512F RDSEED ADX SMAP SHA
