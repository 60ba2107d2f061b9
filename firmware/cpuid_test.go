package firmware

import (
	"testing"
)

func sampleCPUID() []CPUIDEntry {
	all := ^uint32(0)
	return []CPUIDEntry{
		{Function: 0, EAX: 0x1f, EBX: 0x756e6547, EDX: 0x49656e69, ECX: 0x6c65746e}, // GenuineIntel
		{Function: 1, EAX: 0x906ea, EBX: 0x00100800, ECX: all &^ cpuid1Hypervisor, EDX: 0x178bfbff &^ cpuid1EDXHTT},
		{Function: 4, Index: 0, Flags: 1, EAX: 0x121}, // L1 data
		{Function: 4, Index: 1, Flags: 1, EAX: 0x143}, // L2 unified
		{Function: 4, Index: 2, Flags: 1, EAX: 0x163}, // L3 unified
		{Function: 4, Index: 3, Flags: 1, EAX: 0},     // no more
		{Function: 7, Index: 0, Flags: 1, EBX: all, ECX: all, EDX: all},
		{Function: 7, Index: 1, Flags: 1, EAX: all},
		{Function: 0xB, Index: 0, Flags: 1},
		{Function: 0xB, Index: 1, Flags: 1},
		{Function: 0xB, Index: 2, Flags: 1},
		{Function: 0xD, Index: 0, Flags: 1, EAX: 0x2e7},
		{Function: 0xD, Index: 1, Flags: 1, EAX: 0xf},
		{Function: 0x40000000, EAX: 0x40000001},
		{Function: 0x40000001, EAX: 0x01ffffff},
		{Function: 0x80000001, ECX: all, EDX: all},
	}
}

func get(t *testing.T, es []CPUIDEntry, fn, idx uint32) CPUIDEntry {
	t.Helper()
	e := findCPUID(es, fn, idx)
	if e == nil {
		t.Fatalf("leaf %#x.%d missing", fn, idx)
	}
	return *e
}

func TestCPUIDEmulated(t *testing.T) {
	p, err := ProfileByName("emulated")
	if err != nil {
		t.Fatal(err)
	}
	in := sampleCPUID()
	es, err := p.Apply(in, 2, 4)
	if err != nil {
		t.Fatal(err)
	}
	if in[1].ECX&cpuid1Hypervisor != 0 || in[1].ECX&cpuid1CX16 == 0 {
		t.Fatal("Apply modified its input")
	}
	l1 := get(t, es, 1, 0)
	if l1.EBX>>24 != 2 || l1.EBX>>16&0xff != 4 || l1.EBX&0xffff != 0x0800 || l1.EDX&cpuid1EDXHTT == 0 {
		t.Errorf("leaf 1 EBX %#x EDX %#x", l1.EBX, l1.EDX)
	}
	for name, bit := range map[string]uint32{"CX16": cpuid1CX16, "XSAVE": cpuid1XSAVE, "OSXSAVE": cpuid1OSXSAVE,
		"POPCNT": cpuid1POPCNT, "AVX": cpuid1AVX, "F16C": cpuid1F16C, "FMA": cpuid1FMA, "RDRAND": cpuid1RDRAND,
		"AES": cpuid1AES, "SSE4.2": cpuid1SSE42} {
		if l1.ECX&bit != 0 {
			t.Errorf("leaf 1 ECX %s still set", name)
		}
	}
	if l1.ECX&cpuid1Hypervisor == 0 || l1.ECX&(1<<0) == 0 || l1.ECX&(1<<19) == 0 || l1.ECX&(1<<22) == 0 {
		t.Errorf("leaf 1 ECX %#x: hypervisor, SSE3, SSE4.1 and MOVBE must stay", l1.ECX)
	}
	l7 := get(t, es, 7, 0)
	for name, bit := range map[string]uint32{"SMEP": cpuid7SMEP, "SMAP": cpuid7SMAP, "AVX2": cpuid7AVX2,
		"AVX512F": cpuid7AVX512F, "AVX512VL": cpuid7AVX512VL, "RDSEED": cpuid7RDSEED} {
		if l7.EBX&bit != 0 {
			t.Errorf("leaf 7 EBX %s still set", name)
		}
	}
	if l7.EBX&(1<<9) == 0 || l7.EBX&(1<<0) == 0 { // ERMS, FSGSBASE kept
		t.Errorf("leaf 7 EBX %#x lost unrelated bits", l7.EBX)
	}
	if l7.ECX&cpuid7cPKU != 0 || l7.EDX&cpuid7dAVX512FP16 != 0 || get(t, es, 7, 1).EAX&cpuid71AVXVNNI != 0 {
		t.Error("leaf 7 ECX/EDX/subleaf 1 not cleared")
	}
	if findCPUID(es, 0xD, 0) != nil {
		t.Error("leaf 0xD kept")
	}
	kvm := get(t, es, KVMCPUIDFeatures, 0)
	for name, bit := range map[string]uint32{"PV_UNHALT": KVMFeaturePVUnhalt, "PV_SEND_IPI": KVMFeaturePVSendIPI,
		"PV_SCHED_YIELD": KVMFeaturePVSchedYield, "HC_MAP_GPA_RANGE": KVMFeatureHCMapGPARange} {
		if kvm.EAX&bit != 0 {
			t.Errorf("KVM feature %s still set", name)
		}
	}
	if kvm.EAX&KVMFeatureClocksource2 == 0 || kvm.EAX&KVMFeatureClocksourceStable == 0 {
		t.Error("kvmclock features lost")
	}
	if e := get(t, es, 0x80000001, 0); e.ECX&cpuidExtFMA4 != 0 || e.ECX&cpuidExtABM != 0 || e.ECX&1 == 0 {
		t.Errorf("0x80000001 ECX %#x", e.ECX)
	}
	sig := get(t, es, KVMCPUIDSignature, 0)
	b := []byte{byte(sig.EBX), byte(sig.EBX >> 8), byte(sig.EBX >> 16), byte(sig.EBX >> 24),
		byte(sig.ECX), byte(sig.ECX >> 8), byte(sig.ECX >> 16), byte(sig.ECX >> 24),
		byte(sig.EDX), byte(sig.EDX >> 8), byte(sig.EDX >> 16), byte(sig.EDX >> 24)}
	if string(b) != "KVMKVMKVM\x00\x00\x00" || sig.EAX != KVMCPUIDFeatures {
		t.Errorf("signature %q", b)
	}
	// Topology: x2APIC ID and levels.
	for idx, want := range map[uint32][3]uint32{0: {0, 1, 1 << 8}, 1: {2, 4, 2<<8 | 1}, 2: {0, 0, 2}} {
		e := get(t, es, 0xB, idx)
		if e.EDX != 2 || e.EAX != want[0] || e.EBX != want[1] || e.ECX != want[2] {
			t.Errorf("leaf 0xB.%d = %+v", idx, e)
		}
	}
	if e := get(t, es, 4, 2); e.EAX>>26 != 3 || e.EAX>>14&0xfff != 3 {
		t.Errorf("L3 leaf 4 EAX %#x", e.EAX)
	}
	if e := get(t, es, 4, 0); e.EAX>>26 != 3 || e.EAX>>14&0xfff != 0 {
		t.Errorf("L1 leaf 4 EAX %#x", e.EAX)
	}
	if e := get(t, es, 4, 3); e.EAX != 0 {
		t.Errorf("terminating leaf 4 changed: %#x", e.EAX)
	}
	// Asking for the hypercall exit sets HC_MAP_GPA_RANGE again.
	p.MapGPARange = true
	es, _ = p.Apply(in, 0, 1)
	if get(t, es, KVMCPUIDFeatures, 0).EAX&KVMFeatureHCMapGPARange == 0 {
		t.Error("MapGPARange not honoured")
	}
	if get(t, es, 1, 0).EDX&cpuid1EDXHTT != 0 {
		t.Error("HTT set for one CPU")
	}
}

func TestCPUIDHost(t *testing.T) {
	p, _ := ProfileByName("host")
	in := sampleCPUID()
	in = in[:len(in)-3] // no KVM leaves: Apply adds them
	es, err := p.Apply(append(in, CPUIDEntry{Function: 0x80000001}), 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	l1 := get(t, es, 1, 0)
	if l1.ECX&cpuid1CX16 == 0 || l1.ECX&cpuid1XSAVE == 0 || l1.ECX&cpuid1Hypervisor == 0 {
		t.Errorf("host profile changed leaf 1 ECX %#x", l1.ECX)
	}
	if get(t, es, 7, 0).EBX != ^uint32(0) || findCPUID(es, 0xD, 1) == nil {
		t.Error("host profile cleared features")
	}
	if get(t, es, KVMCPUIDSignature, 0).EBX != 0x4b4d564b {
		t.Error("KVM signature not added")
	}
	if findCPUID(es, KVMCPUIDFeatures, 0) == nil {
		t.Error("KVM features leaf not added")
	}
	if _, err := ProfileByName("fast"); err == nil {
		t.Error("unknown profile accepted")
	}
	if _, err := p.Apply(in, 2, 2); err == nil {
		t.Error("vCPU 2 of 2 accepted")
	}
}

// TestCPUIDTSCDeadline: the TSC-deadline bit (leaf 1 ECX bit 24) is set
// exactly when the profile asks for it, with either profile, and nothing
// else in leaf 1 ECX changes with it.
func TestCPUIDTSCDeadline(t *testing.T) {
	for _, name := range []string{ProfileHost, ProfileEmulated} {
		p, _ := ProfileByName(name)
		in := sampleCPUID()
		for i := range in {
			if in[i].Function == 1 {
				in[i].ECX &^= cpuid1TSCDeadline // as KVM_GET_SUPPORTED_CPUID reports it
			}
		}
		without, err := p.Apply(in, 0, 1)
		if err != nil {
			t.Fatal(err)
		}
		p.TSCDeadline = true
		with, err := p.Apply(in, 0, 1)
		if err != nil {
			t.Fatal(err)
		}
		a, b := get(t, without, 1, 0).ECX, get(t, with, 1, 0).ECX
		if a&cpuid1TSCDeadline != 0 {
			t.Errorf("%s: TSC-deadline set without TSCDeadline: ECX %#x", name, a)
		}
		if b&cpuid1TSCDeadline == 0 {
			t.Errorf("%s: TSC-deadline not set with TSCDeadline: ECX %#x", name, b)
		}
		if a|cpuid1TSCDeadline != b {
			t.Errorf("%s: ECX %#x without, %#x with: only bit 24 may differ", name, a, b)
		}
	}
}
