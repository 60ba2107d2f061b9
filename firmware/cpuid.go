package firmware

import (
	"encoding/binary"
	"fmt"
	"math/bits"
)

// CPUIDEntry mirrors one kvm_cpuid_entry2 (KVM API doc §4.46
// KVM_GET_SUPPORTED_CPUID) without importing kvm: the VMM copies fields.
type CPUIDEntry struct {
	Function, Index, Flags uint32
	EAX, EBX, ECX, EDX     uint32
}

// KVM_CPUID_FLAG_SIGNIFCANT_INDEX: the entry applies only to this Index.
const CPUIDFlagSignificantIndex = 1

// KVM paravirtual leaves (Documentation/virt/kvm/x86/cpuid.rst).
const (
	KVMCPUIDSignature = 0x40000000
	KVMCPUIDFeatures  = 0x40000001

	KVMFeatureClocksource       = 1 << 0
	KVMFeatureNopIODelay        = 1 << 1
	KVMFeatureClocksource2      = 1 << 3
	KVMFeatureAsyncPF           = 1 << 4
	KVMFeatureStealTime         = 1 << 5
	KVMFeaturePVEOI             = 1 << 6
	KVMFeaturePVUnhalt          = 1 << 7 // guest side: KVM_HC_KICK_CPU (vmcall)
	KVMFeaturePVTLBFlush        = 1 << 9
	KVMFeaturePVSendIPI         = 1 << 11 // guest side: KVM_HC_SEND_IPI (vmcall)
	KVMFeaturePVSchedYield      = 1 << 13 // guest side: KVM_HC_SCHED_YIELD (vmcall)
	KVMFeatureMSIExtDestID      = 1 << 15
	KVMFeatureHCMapGPARange     = 1 << 16 // guest side: KVM_HC_MAP_GPA_RANGE (vmcall)
	KVMFeatureClocksourceStable = 1 << 24
)

// CPUID bits the "emulated" profile clears (Intel SDM Vol. 2A CPUID, AMD APM
// Vol. 3 App. E). The host here runs guest kernel mode in KVM's instruction
// emulator, which does not implement these instructions; Linux uses each of
// them in kernel mode once CPUID advertises it (docs/host-kvm.md).
const (
	// Leaf 1 ECX.
	cpuid1PCLMULQDQ  = 1 << 1  // pclmulqdq: crc/ghash crypto paths
	cpuid1FMA        = 1 << 12 // VEX-encoded; the emulator decodes no VEX
	cpuid1CX16       = 1 << 13 // cmpxchg16b: SLUB lockless freelists
	cpuid1SSE42      = 1 << 20 // crc32 instruction: crc32c-intel, ext4 metadata csums
	cpuid1POPCNT     = 1 << 23 // popcnt: hweight*()
	cpuid1AES        = 1 << 25 // aesenc/aesdec: aesni crypto
	cpuid1XSAVE      = 1 << 26 // xsave/xrstor: FPU context switch
	cpuid1OSXSAVE    = 1 << 27 // mirrors CR4.OSXSAVE; meaningless without XSAVE
	cpuid1AVX        = 1 << 28 // VEX-encoded
	cpuid1F16C       = 1 << 29 // VEX-encoded
	cpuid1RDRAND     = 1 << 30 // rdrand (0f c7 /6): not in the emulator's group 9
	cpuid1Hypervisor = 1 << 31
	cpuid1EDXHTT     = 1 << 28

	// Leaf 7 subleaf 0 EBX.
	cpuid7BMI1       = 1 << 3 // VEX-encoded
	cpuid7AVX2       = 1 << 5
	cpuid7SMEP       = 1 << 7 // with SMAP: the kernel's clac/stac pairing
	cpuid7BMI2       = 1 << 8 // VEX-encoded
	cpuid7AVX512F    = 1 << 16
	cpuid7AVX512DQ   = 1 << 17
	cpuid7RDSEED     = 1 << 18 // rdseed (0f c7 /7 reg): not emulated
	cpuid7ADX        = 1 << 19 // adcx/adox: crypto bignum paths
	cpuid7SMAP       = 1 << 20 // clac/stac (0f 01 ca/cb): not emulated
	cpuid7AVX512IFMA = 1 << 21
	cpuid7AVX512PF   = 1 << 26
	cpuid7AVX512ER   = 1 << 27
	cpuid7AVX512CD   = 1 << 28
	cpuid7SHA        = 1 << 29 // sha1/sha256 instructions: crypto
	cpuid7AVX512BW   = 1 << 30
	cpuid7AVX512VL   = 1 << 31
	// Leaf 7 subleaf 0 ECX.
	cpuid7cAVX512VBMI    = 1 << 1
	cpuid7cPKU           = 1 << 3 // rdpkru/wrpkru on context switch
	cpuid7cOSPKE         = 1 << 4
	cpuid7cAVX512VBMI2   = 1 << 6
	cpuid7cGFNI          = 1 << 8
	cpuid7cVAES          = 1 << 9
	cpuid7cVPCLMULQDQ    = 1 << 10
	cpuid7cAVX512VNNI    = 1 << 11
	cpuid7cAVX512BITALG  = 1 << 12
	cpuid7cAVX512VPOPCNT = 1 << 14
	// Leaf 7 subleaf 0 EDX.
	cpuid7dAVX5124VNNIW = 1 << 2
	cpuid7dAVX5124FMAPS = 1 << 3
	cpuid7dAVX512VP2I   = 1 << 8
	cpuid7dAMXBF16      = 1 << 22
	cpuid7dAVX512FP16   = 1 << 23
	cpuid7dAMXTILE      = 1 << 24
	cpuid7dAMXINT8      = 1 << 25
	// Leaf 7 subleaf 1 EAX.
	cpuid71AVXVNNI    = 1 << 4
	cpuid71AVX512BF16 = 1 << 5
	// Leaf 0x80000001 ECX (AMD).
	cpuidExtABM  = 1 << 5  // lzcnt and popcnt
	cpuidExtXOP  = 1 << 11 // XOP-encoded
	cpuidExtFMA4 = 1 << 16 // VEX-encoded
	cpuidExtTBM  = 1 << 21 // XOP-encoded
)

const (
	emulatedClear1ECX = cpuid1PCLMULQDQ | cpuid1FMA | cpuid1CX16 | cpuid1SSE42 | cpuid1POPCNT |
		cpuid1AES | cpuid1XSAVE | cpuid1OSXSAVE | cpuid1AVX | cpuid1F16C | cpuid1RDRAND
	emulatedClear7EBX = cpuid7BMI1 | cpuid7AVX2 | cpuid7SMEP | cpuid7BMI2 | cpuid7AVX512F |
		cpuid7AVX512DQ | cpuid7RDSEED | cpuid7ADX | cpuid7SMAP | cpuid7AVX512IFMA | cpuid7AVX512PF |
		cpuid7AVX512ER | cpuid7AVX512CD | cpuid7SHA | cpuid7AVX512BW | cpuid7AVX512VL
	emulatedClear7ECX = cpuid7cAVX512VBMI | cpuid7cPKU | cpuid7cOSPKE | cpuid7cAVX512VBMI2 |
		cpuid7cGFNI | cpuid7cVAES | cpuid7cVPCLMULQDQ | cpuid7cAVX512VNNI | cpuid7cAVX512BITALG |
		cpuid7cAVX512VPOPCNT
	emulatedClear7EDX = cpuid7dAVX5124VNNIW | cpuid7dAVX5124FMAPS | cpuid7dAVX512VP2I |
		cpuid7dAMXBF16 | cpuid7dAVX512FP16 | cpuid7dAMXTILE | cpuid7dAMXINT8
	emulatedClear71EAX  = cpuid71AVXVNNI | cpuid71AVX512BF16
	emulatedClearExtECX = cpuidExtABM | cpuidExtXOP | cpuidExtFMA4 | cpuidExtTBM
	// PV features whose guest side issues vmcall, which never exits on this
	// host (the vCPU would spin on it for ever).
	emulatedClearKVM = KVMFeaturePVUnhalt | KVMFeaturePVSendIPI | KVMFeaturePVSchedYield | KVMFeatureHCMapGPARange
)

// Profile names.
const (
	ProfileHost     = "host"
	ProfileEmulated = "emulated"
)

// Profile turns the host's supported CPUID (KVM_GET_SUPPORTED_CPUID) into
// what one vCPU sees.
type Profile struct {
	Name string
	// Emulated applies the "emulated" restrictions (see the constants above).
	Emulated bool
	// MapGPARange advertises KVM_FEATURE_HC_MAP_GPA_RANGE (0x40000001 EAX bit
	// 16): set it when the VMM enabled KVM_CAP_EXIT_HYPERCALL for
	// KVM_HC_MAP_GPA_RANGE. Otherwise "emulated" clears the bit and "host"
	// leaves what KVM reported.
	MapGPARange bool
	// Protected, when set, announces protected mode in the leaves
	// 0x40000100-0x40000101 (see ProtectedMode).
	Protected *ProtectedMode
}

// ProfileByName returns the "host" or "emulated" profile.
func ProfileByName(name string) (Profile, error) {
	switch name {
	case ProfileHost:
		return Profile{Name: name}, nil
	case ProfileEmulated:
		return Profile{Name: name, Emulated: true}, nil
	}
	return Profile{}, fmt.Errorf("CPUID profile %q: want %q or %q", name, ProfileHost, ProfileEmulated)
}

// find returns the entry for (fn, index), honouring the significant-index flag.
func findCPUID(es []CPUIDEntry, fn, index uint32) *CPUIDEntry {
	for i := range es {
		e := &es[i]
		if e.Function == fn && (e.Flags&CPUIDFlagSignificantIndex == 0 || e.Index == index) {
			return e
		}
	}
	return nil
}

// Apply returns a copy of entries as vCPU vcpuID of ncpus should see them:
// APIC IDs and topology (one package, ncpus cores, one thread per core),
// the hypervisor bit, the KVM signature leaf, and the profile's restrictions.
func (p Profile) Apply(entries []CPUIDEntry, vcpuID, ncpus int) ([]CPUIDEntry, error) {
	if ncpus < 1 || ncpus > 255 || vcpuID < 0 || vcpuID >= ncpus {
		return nil, fmt.Errorf("CPUID: vCPU %d of %d out of range (1..255 CPUs)", vcpuID, ncpus)
	}
	es := make([]CPUIDEntry, 0, len(entries)+2)
	for _, e := range entries {
		if p.Emulated && e.Function == 0xD {
			continue // XSAVE state enumeration: emptied with XSAVE
		}
		es = append(es, e)
	}
	id := uint32(vcpuID)
	coreBits := uint32(bits.Len32(uint32(ncpus - 1))) // x2APIC ID bits for the core level
	vendorAMD := false
	if e := findCPUID(es, 0, 0); e != nil {
		var v [12]byte
		binary.LittleEndian.PutUint32(v[0:], e.EBX)
		binary.LittleEndian.PutUint32(v[4:], e.EDX)
		binary.LittleEndian.PutUint32(v[8:], e.ECX)
		vendorAMD = string(v[:]) == "AuthenticAMD"
	}
	for i := range es {
		e := &es[i]
		switch e.Function {
		case 1:
			// EBX[31:24] initial APIC ID, [23:16] logical processors per package.
			e.EBX = e.EBX&0x0000ffff | id<<24 | uint32(ncpus)<<16
			if ncpus > 1 {
				e.EDX |= cpuid1EDXHTT
			} else {
				e.EDX &^= cpuid1EDXHTT
			}
			e.ECX |= cpuid1Hypervisor
			if p.Emulated {
				e.ECX &^= emulatedClear1ECX
			}
		case 4:
			// EAX[31:26] cores per package - 1; [25:14] threads sharing the
			// cache - 1: L1/L2 private, L3 shared by the package.
			if e.EAX&0x1f == 0 {
				break // no more caches
			}
			share := uint32(0)
			if e.EAX>>5&7 >= 3 {
				share = uint32(ncpus - 1)
			}
			e.EAX = e.EAX&0x3fff | min(uint32(ncpus-1), 63)<<26 | (share&0xfff)<<14
		case 7:
			if p.Emulated {
				switch e.Index {
				case 0:
					e.EBX &^= emulatedClear7EBX
					e.ECX &^= emulatedClear7ECX
					e.EDX &^= emulatedClear7EDX
				case 1:
					e.EAX &^= emulatedClear71EAX
				}
			}
		case 0xB, 0x1F:
			// Extended topology (SDM CPUID leaf 0BH): level 0 SMT (1 thread),
			// level 1 core (ncpus), then invalid; EDX = x2APIC ID.
			switch e.Index {
			case 0:
				e.EAX, e.EBX, e.ECX = 0, 1, 1<<8
			case 1:
				e.EAX, e.EBX, e.ECX = coreBits, uint32(ncpus), 2<<8|1
			default:
				e.EAX, e.EBX, e.ECX = 0, 0, e.Index&0xff
			}
			e.EDX = id
		case 0x80000001:
			if p.Emulated {
				e.ECX &^= emulatedClearExtECX
			}
		case 0x80000008:
			if vendorAMD { // ECX[7:0]: number of physical threads - 1
				e.ECX = e.ECX&^0xff | uint32(ncpus-1)&0xff
			}
		}
	}
	sig := findCPUID(es, KVMCPUIDSignature, 0)
	if sig == nil {
		es = append(es, CPUIDEntry{Function: KVMCPUIDSignature})
		sig = &es[len(es)-1]
	}
	// "KVMKVMKVM\0\0\0" and the highest KVM leaf.
	sig.EAX, sig.EBX, sig.ECX, sig.EDX = KVMCPUIDFeatures, 0x4b4d564b, 0x564b4d56, 0x4d
	feat := findCPUID(es, KVMCPUIDFeatures, 0)
	if feat == nil {
		es = append(es, CPUIDEntry{Function: KVMCPUIDFeatures})
		feat = &es[len(es)-1]
	}
	if p.Emulated {
		feat.EAX &^= emulatedClearKVM
	}
	if p.MapGPARange {
		feat.EAX |= KVMFeatureHCMapGPARange
	}
	return p.Protected.apply(es), nil
}

// The protected-mode leaves: a hypervisor range of our own above KVM's
// (0x40000000-0x40000001), found by its signature like "KVMKVMKVM".
const (
	ProtectedCPUIDSignature = 0x40000100 // EAX = highest leaf, EBX:ECX:EDX = "VMMGoProtect"
	ProtectedCPUIDFeatures  = 0x40000101 // EAX = features, EBX = pvmem port, ECX = swiotlb MiB
	ProtectedSignature      = "VMMGoProtect"
	// ProtectedFeatureGuest (0x40000101 EAX bit 0): all guest RAM is private
	// to the host's device models at boot; the guest must share what its
	// devices access (swiotlb pool, virtqueues).
	ProtectedFeatureGuest = 1 << 0
)

// ProtectedMode is what a protected guest (--private-memory) is told in
// CPUID (docs/conversion.md, "Protected guests").
type ProtectedMode struct {
	PVMemPort  uint16 // 0x40000101 EBX: base I/O port of pvmem (docs/pvmem.md)
	SwiotlbMiB uint32 // 0x40000101 ECX: suggested swiotlb size, 0 = kernel default
}

// apply adds or replaces the two protected-mode leaves; nil adds nothing.
// The entries of 0x400001xx are the VMM's own, so any the host reported
// are replaced.
func (pm *ProtectedMode) apply(es []CPUIDEntry) []CPUIDEntry {
	if pm == nil {
		return es
	}
	out := es[:0:0]
	for _, e := range es {
		if e.Function != ProtectedCPUIDSignature && e.Function != ProtectedCPUIDFeatures {
			out = append(out, e)
		}
	}
	sig := []byte(ProtectedSignature)
	return append(out,
		CPUIDEntry{Function: ProtectedCPUIDSignature, EAX: ProtectedCPUIDFeatures,
			EBX: binary.LittleEndian.Uint32(sig[0:]), ECX: binary.LittleEndian.Uint32(sig[4:]), EDX: binary.LittleEndian.Uint32(sig[8:])},
		CPUIDEntry{Function: ProtectedCPUIDFeatures, EAX: ProtectedFeatureGuest, EBX: uint32(pm.PVMemPort), ECX: pm.SwiotlbMiB})
}
