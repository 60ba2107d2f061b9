package firmware

import (
	"encoding/binary"
	"testing"
)

func TestCPUIDProtectedLeaves(t *testing.T) {
	host := append(sampleCPUID(), CPUIDEntry{Function: ProtectedCPUIDFeatures, EAX: 0xdead}) // a stale host entry
	p := Profile{Name: ProfileHost, Protected: &ProtectedMode{PVMemPort: 0xa50, SwiotlbMiB: 16}}
	es, err := p.Apply(host, 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range es {
		if e.Function == ProtectedCPUIDSignature || e.Function == ProtectedCPUIDFeatures {
			n++
		}
	}
	if n != 2 {
		t.Fatalf("%d protected-mode entries, want exactly 2", n)
	}
	sig := get(t, es, ProtectedCPUIDSignature, 0)
	var b [12]byte
	binary.LittleEndian.PutUint32(b[0:], sig.EBX)
	binary.LittleEndian.PutUint32(b[4:], sig.ECX)
	binary.LittleEndian.PutUint32(b[8:], sig.EDX)
	if sig.EAX != 0x40000101 || string(b[:]) != "VMMGoProtect" {
		t.Errorf("0x40000100 = %+v (%q)", sig, b[:])
	}
	if f := get(t, es, ProtectedCPUIDFeatures, 0); f.EAX != 1 || f.EBX != 0xa50 || f.ECX != 16 || f.EDX != 0 {
		t.Errorf("0x40000101 = %+v", f)
	}
	// KVM's own leaves are untouched, and without Protected nothing is added.
	if kvm := get(t, es, KVMCPUIDSignature, 0); kvm.EBX != 0x4b4d564b {
		t.Errorf("KVM signature leaf changed: %+v", kvm)
	}
	plain, _ := Profile{Name: ProfileHost}.Apply(sampleCPUID(), 0, 1)
	for _, e := range plain {
		if e.Function == ProtectedCPUIDSignature {
			t.Error("protected leaves without a ProtectedMode")
		}
	}
}
