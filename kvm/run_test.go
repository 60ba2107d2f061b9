package kvm

import (
	"bytes"
	"errors"
	"slices"
	"testing"
)

// pageRun returns a synthetic run area shaped like a real vCPU mapping: the
// kvm_run page followed by the PIO data page.
func pageRun() *Run { return NewRun(make([]byte, 2*4096)) }

func TestRunIODecode(t *testing.T) {
	r := pageRun()
	want := IOExit{Direction: IOOut, Size: 1, Port: 0x3f8, Count: 4, DataOffset: 4096, Data: []byte("ABCD")}
	if err := r.PutIO(want); err != nil {
		t.Fatal(err)
	}
	if r.ExitReason() != ExitIO {
		t.Fatalf("exit reason %v", r.ExitReason())
	}
	got, err := r.IO()
	if err != nil {
		t.Fatal(err)
	}
	if got.Direction != want.Direction || got.Size != 1 || got.Port != 0x3f8 || got.Count != 4 ||
		got.DataOffset != 4096 || !bytes.Equal(got.Data, want.Data) {
		t.Fatalf("IO() = %+v, want %+v", got, want)
	}
	// Data aliases the page: an IN handler writes straight into it.
	got.Data[0] = 'Z'
	if r.Bytes()[4096] != 'Z' {
		t.Fatal("IO().Data does not alias the run area")
	}
	// And cannot be grown past its length into the rest of the page.
	if cap(got.Data) != 4 {
		t.Fatalf("cap(Data) = %d, want 4", cap(got.Data))
	}
	if s := r.String(); s != "KVM_EXIT_IO out port 0x3f8 size 1 count 4 data 5a 42 43 44" {
		t.Fatalf("String() = %q", s)
	}
}

func TestRunIOCorrupt(t *testing.T) {
	base := IOExit{Direction: IOIn, Size: 2, Port: 0x70, Count: 1, DataOffset: 4096, Data: []byte{0, 0}}
	tests := []struct {
		name string
		mut  func(b []byte)
	}{
		{"direction 2", func(b []byte) { b[RunOffIODirection] = 2 }},
		{"size 3", func(b []byte) { b[RunOffIOSize] = 3 }},
		{"size 8", func(b []byte) { b[RunOffIOSize] = 8 }},
		{"count 0", func(b []byte) { le.PutUint32(b[RunOffIOCount:], 0) }},
		{"data_offset beyond the area", func(b []byte) { le.PutUint64(b[RunOffIODataOffset:], 8192) }},
		{"data_offset huge", func(b []byte) { le.PutUint64(b[RunOffIODataOffset:], ^uint64(0)-1) }},
		{"data_offset inside struct kvm_run", func(b []byte) { le.PutUint64(b[RunOffIODataOffset:], 0) }},
		{"count overruns the page", func(b []byte) { le.PutUint32(b[RunOffIOCount:], 2049) }},
		{"count max", func(b []byte) { le.PutUint32(b[RunOffIOCount:], ^uint32(0)) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := pageRun()
			if err := r.PutIO(base); err != nil {
				t.Fatal(err)
			}
			tc.mut(r.Bytes())
			if _, err := r.IO(); !errors.Is(err, ErrCorruptExit) {
				t.Fatalf("IO() error = %v, want ErrCorruptExit", err)
			}
		})
	}
	// Exactly filling the page is fine: 1024 dwords at 4096.
	r := pageRun()
	if err := r.PutIO(IOExit{Direction: IOIn, Size: 4, Count: 1024, DataOffset: 4096, Data: make([]byte, 4096)}); err != nil {
		t.Fatal(err)
	}
	if io, err := r.IO(); err != nil || len(io.Data) != 4096 {
		t.Fatalf("full page: %v, len %d", err, len(io.Data))
	}
}

func TestRunMMIO(t *testing.T) {
	r := pageRun()
	want := MMIOExit{PhysAddr: 0xd0000010, IsWrite: true, Len: 4, Data: []byte{0xef, 0xbe, 0xad, 0xde}}
	if err := r.PutMMIO(want); err != nil {
		t.Fatal(err)
	}
	got, err := r.MMIO()
	if err != nil {
		t.Fatal(err)
	}
	if got.PhysAddr != want.PhysAddr || !got.IsWrite || got.Len != 4 || !bytes.Equal(got.Data, want.Data) || cap(got.Data) != 4 {
		t.Fatalf("MMIO() = %+v", got)
	}
	for _, l := range []uint32{0, 9, 1 << 31} {
		le.PutUint32(r.Bytes()[RunOffMMIOLen:], l)
		if _, err := r.MMIO(); !errors.Is(err, ErrCorruptExit) {
			t.Errorf("len %d: error %v, want ErrCorruptExit", l, err)
		}
	}
}

func TestRunHypercall(t *testing.T) {
	r := pageRun()
	want := HypercallExit{Nr: HCMapGPARange, Args: [6]uint64{0x100000, 16, MapGPARangeEncrypted, 4, 5, 6}, Flags: HypercallExitLongMode}
	r.PutHypercall(want)
	if r.ExitReason() != ExitHypercall {
		t.Fatalf("exit %v", r.ExitReason())
	}
	got := r.Hypercall()
	if got != want || !got.LongMode() {
		t.Fatalf("Hypercall() = %+v, want %+v", got, want)
	}
	r.SetHypercallRet(HypercallErrno(KVMEINVAL))
	if le.Uint64(r.Bytes()[88:]) != 0xffffffffffffffea {
		t.Fatalf("ret bytes = %#x", le.Uint64(r.Bytes()[88:]))
	}
	if r.Hypercall().Ret != uint64(0xffffffffffffffea) {
		t.Fatal("Ret not read back")
	}
}

func TestRunMemoryFault(t *testing.T) {
	r := pageRun()
	r.PutMemoryFault(MemoryFaultExit{Flags: MemoryExitFlagPrivate, GPA: 0x200000, Size: 0x1000})
	m := r.MemoryFault()
	if r.ExitReason() != ExitMemoryFault || m.GPA != 0x200000 || m.Size != 0x1000 || !m.Private() {
		t.Fatalf("MemoryFault() = %+v", m)
	}
	// The raw offsets of the shared doc §3.1.
	b := r.Bytes()
	if le.Uint32(b[8:]) != 39 || le.Uint64(b[32:]) != 8 || le.Uint64(b[40:]) != 0x200000 || le.Uint64(b[48:]) != 0x1000 {
		t.Fatal("memory_fault not at offsets 32/40/48")
	}
	err := &MemoryFaultError{Exit: m, Err: errors.New("boom")}
	if err.Error() == "" || errors.Unwrap(err).Error() != "boom" {
		t.Fatal("MemoryFaultError does not unwrap")
	}
}

func TestRunInternalError(t *testing.T) {
	// Layout written by the kernel's prepare_emulation_failure_exit for
	// "popcnt rax, rax" (f3 48 0f b8 c0): flags, insn_size + bytes, then
	// five exit-info words.
	r := pageRun()
	b := r.Bytes()
	le.PutUint32(b[8:], uint32(ExitInternalError))
	le.PutUint32(b[32:], InternalErrorEmulation)
	le.PutUint32(b[36:], 8)
	le.PutUint64(b[40:], InternalErrorEmulationFlagInsnBytes)
	b[48] = 5
	copy(b[49:64], []byte{0xf3, 0x48, 0x0f, 0xb8, 0xc0, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90})
	for i := 3; i < 8; i++ {
		le.PutUint64(b[40+8*i:], uint64(i))
	}
	e, err := r.InternalError()
	if err != nil {
		t.Fatal(err)
	}
	if e.Suberror != InternalErrorEmulation || e.NData != 8 || len(e.Data) != 8 || e.Flags != 1 ||
		!bytes.Equal(e.InsnBytes, []byte{0xf3, 0x48, 0x0f, 0xb8, 0xc0}) || e.Data[7] != 7 {
		t.Fatalf("InternalError() = %+v", e)
	}

	// Corruptions.
	b[48] = 16
	if _, err := r.InternalError(); !errors.Is(err, ErrCorruptExit) {
		t.Errorf("insn_size 16: %v", err)
	}
	b[48] = 5
	le.PutUint32(b[36:], 17)
	if _, err := r.InternalError(); !errors.Is(err, ErrCorruptExit) {
		t.Errorf("ndata 17: %v", err)
	}
	le.PutUint32(b[36:], 2)
	if _, err := r.InternalError(); !errors.Is(err, ErrCorruptExit) {
		t.Errorf("flag with ndata 2: %v", err)
	}

	// A non-emulation suberror: data only.
	r2 := pageRun()
	if err := r2.PutInternalError(InternalErrorExit{Suberror: InternalErrorDeliveryEv, Data: []uint64{0xa, 0xb}}); err != nil {
		t.Fatal(err)
	}
	e2, err := r2.InternalError()
	if err != nil || e2.Suberror != 3 || !slices.Equal(e2.Data, []uint64{0xa, 0xb}) || e2.InsnBytes != nil || e2.Flags != 0 {
		t.Fatalf("delivery error: %+v, %v", e2, err)
	}

	// Encoder round trip with instruction bytes.
	r3 := pageRun()
	if err := r3.PutInternalError(InternalErrorExit{Suberror: InternalErrorEmulation, InsnBytes: []byte{0xcc}}); err != nil {
		t.Fatal(err)
	}
	e3, err := r3.InternalError()
	if err != nil || !bytes.Equal(e3.InsnBytes, []byte{0xcc}) || e3.NData != 3 {
		t.Fatalf("round trip: %+v, %v", e3, err)
	}
}

func TestRunOtherExits(t *testing.T) {
	r := pageRun()
	r.PutDebug(DebugExit{Exception: 1, PC: 0x1002, DR6: 0xffff4ff0, DR7: 0x400})
	if d := r.Debug(); r.ExitReason() != ExitDebug || d != (DebugExit{1, 0x1002, 0xffff4ff0, 0x400}) {
		t.Fatalf("Debug() = %+v", d)
	}
	r.PutFailEntry(FailEntryExit{HardwareReason: 0x80000021, CPU: 1})
	if f := r.FailEntry(); r.ExitReason() != ExitFailEntry || f != (FailEntryExit{0x80000021, 1}) {
		t.Fatalf("FailEntry() = %+v", f)
	}
	if err := r.PutSystemEvent(SystemEventExit{Type: SystemEventReset, Data: []uint64{7, 8}}); err != nil {
		t.Fatal(err)
	}
	s := r.SystemEvent()
	if s.Type != SystemEventReset || s.NData != 2 || s.Flags != 7 || !slices.Equal(s.Data, []uint64{7, 8}) {
		t.Fatalf("SystemEvent() = %+v", s)
	}
	le.PutUint32(r.Bytes()[RunOffSystemEventNData:], 1000)
	if s := r.SystemEvent(); len(s.Data) != 16 || s.NData != 1000 {
		t.Fatalf("ndata 1000: clamped to %d", len(s.Data))
	}
}

func TestRunHeaderFlags(t *testing.T) {
	r := pageRun()
	b := r.Bytes()
	r.SetImmediateExit(true)
	r.SetRequestInterruptWindow(true)
	if b[0] != 1 || b[1] != 1 || !r.ImmediateExit() || !r.RequestInterruptWindow() {
		t.Fatalf("header bytes % x", b[:4])
	}
	r.SetImmediateExit(false)
	if b[0] != 1 || b[1] != 0 || r.ImmediateExit() {
		t.Fatalf("clearing immediate_exit touched request_interrupt_window: % x", b[:4])
	}
	b[12], b[13] = 1, 1
	le.PutUint16(b[14:], 3)
	le.PutUint64(b[16:], 0xf)
	le.PutUint64(b[24:], 0xfee00900)
	if !r.ReadyForInterruptInjection() || !r.IFFlag() || r.Flags() != 3 || r.CR8() != 0xf || r.ApicBase() != 0xfee00900 {
		t.Fatal("header accessors")
	}
	// An unaligned or short buffer still works (non-atomic path).
	odd := NewRun(make([]byte, 9)[1:])
	odd.SetImmediateExit(true)
	if !odd.ImmediateExit() {
		t.Fatal("unaligned immediate_exit")
	}
	empty := NewRun(nil)
	empty.SetImmediateExit(true)
	if empty.ImmediateExit() || empty.ExitReason() != 0 {
		t.Fatal("empty run")
	}
}

func TestRunShortBuffers(t *testing.T) {
	// Nothing may panic, whatever the length.
	for n := 0; n <= 128; n++ {
		b := make([]byte, n)
		for i := range b {
			b[i] = 0xff
		}
		decodeAll(NewRun(b))
	}
}

func TestSynthErrors(t *testing.T) {
	r := pageRun()
	if err := r.PutIO(IOExit{Size: 1, Count: 2, DataOffset: 4096, Data: []byte{1}}); err == nil {
		t.Error("PutIO with short data succeeded")
	}
	if err := r.PutIO(IOExit{Size: 1, Count: 1, DataOffset: 100, Data: []byte{1}}); err == nil {
		t.Error("PutIO inside struct kvm_run succeeded")
	}
	if err := r.PutMMIO(MMIOExit{Len: 9, Data: make([]byte, 9)}); err == nil {
		t.Error("PutMMIO len 9 succeeded")
	}
	if err := r.PutInternalError(InternalErrorExit{Suberror: 1, InsnBytes: make([]byte, 16)}); err == nil {
		t.Error("PutInternalError with 16 bytes succeeded")
	}
	if err := r.PutSystemEvent(SystemEventExit{Data: make([]uint64, 17)}); err == nil {
		t.Error("PutSystemEvent with 17 words succeeded")
	}
}

// decodeAll calls every decoder, as a VMM's exit loop might.
func decodeAll(r *Run) {
	_ = r.String()
	_ = r.ExitReason().String()
	if io, err := r.IO(); err == nil {
		_ = io.Data[len(io.Data)-1]
	}
	if m, err := r.MMIO(); err == nil {
		_ = m.Data[len(m.Data)-1]
	}
	_ = r.Hypercall()
	_ = r.MemoryFault()
	if e, err := r.InternalError(); err == nil && len(e.Data) > int(e.NData) {
		panic("InternalError data longer than ndata")
	}
	if s := r.SystemEvent(); len(s.Data) > internalMaxData {
		panic("SystemEvent data longer than 16")
	}
	_ = r.FailEntry()
	_ = r.Debug()
	_ = r.ReadyForInterruptInjection()
	_ = r.IFFlag()
	_ = r.ImmediateExit()
}

// FuzzRunDecode feeds arbitrary run areas to every decoder: none may
// panic, and whatever IO/MMIO return must lie inside the buffer.
func FuzzRunDecode(f *testing.F) {
	seed := func(put func(r *Run)) []byte {
		r := NewRun(make([]byte, 4096+64))
		put(r)
		return r.Bytes()
	}
	f.Add(seed(func(r *Run) {
		_ = r.PutIO(IOExit{Direction: IOOut, Size: 1, Port: 0x10, Count: 4, DataOffset: 4096, Data: []byte("ABCD")})
	}))
	f.Add(seed(func(r *Run) { _ = r.PutMMIO(MMIOExit{PhysAddr: 0x1000, Len: 8, Data: make([]byte, 8)}) }))
	f.Add(seed(func(r *Run) { r.PutHypercall(HypercallExit{Nr: 12}) }))
	f.Add(seed(func(r *Run) { _ = r.PutInternalError(InternalErrorExit{Suberror: 1, InsnBytes: []byte{0xcc}}) }))
	f.Add(seed(func(r *Run) { _ = r.PutSystemEvent(SystemEventExit{Type: 1, Data: []uint64{1}}) }))
	f.Add([]byte{})
	f.Add(make([]byte, 57))
	f.Fuzz(func(t *testing.T, b []byte) {
		r := NewRun(b)
		decodeAll(r)
		if io, err := r.IO(); err == nil {
			if io.DataOffset < RunSize || io.DataOffset+uint64(len(io.Data)) > uint64(len(b)) ||
				len(io.Data) != int(io.Size)*int(io.Count) {
				t.Fatalf("IO() accepted out-of-range data: %+v (len %d)", io, len(b))
			}
		}
		if m, err := r.MMIO(); err == nil && (m.Len == 0 || m.Len > 8 || len(m.Data) != int(m.Len)) {
			t.Fatalf("MMIO() accepted len %d", m.Len)
		}
		if e, err := r.InternalError(); err == nil && len(e.InsnBytes) > 15 {
			t.Fatalf("InternalError() returned %d instruction bytes", len(e.InsnBytes))
		}
	})
}
