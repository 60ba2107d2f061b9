package vmm

import (
	"encoding/binary"
	"fmt"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/vmmgo/vmm/firmware"
	"github.com/vmmgo/vmm/internal/tinyguest"
	"github.com/vmmgo/vmm/memory"
	"github.com/vmmgo/vmm/vmm/devices/pvmem"
)

// The hostile-guest tests of the pvmem port and the protected-mode CPUID
// announce, with one tiny guest: at CPL0 it reads the protected-mode CPUID
// leaves, programs a request and reads every pvmem register with a 32-bit
// `in` (CONVERT and LIST_CONVERT among them, which act), then drops to CPL3
// (IOPL 3: this host's KVM would let the port through even without it),
// reads the leaves again and tries to convert. Results go to protResults.
const (
	protResults = 0x200000
	protPage    = 0x300000 // the page the guest converts
	protList    = 0x302000
)

// Result slots (4-byte words from protResults).
const (
	protSlotCPUID0   = 0  // 0x40000100 at CPL0: eax ebx ecx edx
	protSlotCPUID1   = 4  // 0x40000101 at CPL0
	protSlotRegs     = 8  // inl of base+0 .. base+0xF at CPL0
	protSlotPast     = 24 // inl at base+0x10 (past the registers)
	protSlotByteF    = 25 // inb at base+0xF
	protSlotUCPUID0  = 26 // 0x40000100 at CPL3
	protSlotUCPUID1  = 30 // 0x40000101 at CPL3
	protSlotUConvert = 34 // inl CONVERT at CPL3 (ATTRS private)
	protSlotUList    = 35 // inl LIST_CONVERT at CPL3 (one valid entry)
	protSlotUState   = 36 // inl STATE at CPL3
	protSlots        = 37
)

func protGuest() string {
	port := func(off int) string { return fmt.Sprintf("mov $%#x, %%dx\n", PortPVMem+off) }
	slot := func(i int) string { return fmt.Sprintf("%#x", protResults+4*i) }
	cpuid := func(leaf uint32, s int) string {
		return fmt.Sprintf(`
	mov $%#x, %%eax
	xor %%ecx, %%ecx
	cpuid
	mov %%eax, %s
	mov %%ebx, %s
	mov %%ecx, %s
	mov %%edx, %s
`, leaf, slot(s), slot(s+1), slot(s+2), slot(s+3))
	}
	out := func(off int, v uint32) string {
		return port(off) + fmt.Sprintf("mov $%#x, %%eax\nout %%eax, %%dx\n", v)
	}
	in := func(off, s int) string { return port(off) + fmt.Sprintf("in %%dx, %%eax\nmov %%eax, %s\n", slot(s)) }
	src := cpuid(firmware.ProtectedCPUIDSignature, protSlotCPUID0) + cpuid(firmware.ProtectedCPUIDFeatures, protSlotCPUID1) +
		out(pvmem.RegGPALo, protPage) + out(pvmem.RegGPAHi, 0) + out(pvmem.RegNPages, 1) + out(pvmem.RegAttrs, 0) +
		out(pvmem.RegListLo, protList) + out(pvmem.RegListHi, 0) + out(pvmem.RegListCount, 0) +
		fmt.Sprintf(`
	mov $%#x, %%dx
	mov $%s, %%edi
	mov $16, %%ecx
1:	in %%dx, %%eax          # 32-bit read of every register in turn
	mov %%eax, (%%rdi)
	add $4, %%rdi
	inc %%dx
	loop 1b
`, PortPVMem, slot(protSlotRegs)) +
		in(pvmem.NumPorts, protSlotPast) +
		port(pvmem.RegState) + fmt.Sprintf("movl $0, %s\nin %%dx, %%al\nmov %%al, %s\n", slot(protSlotByteF), slot(protSlotByteF)) +
		out(pvmem.RegAttrs, uint32(memory.AttrPrivate)) + out(pvmem.RegListCount, 1) +
		tinyguest.EnterUserMode(0x7f000, "user") +
		cpuid(firmware.ProtectedCPUIDSignature, protSlotUCPUID0) + cpuid(firmware.ProtectedCPUIDFeatures, protSlotUCPUID1) +
		in(pvmem.RegConvert, protSlotUConvert) + in(pvmem.RegListConvert, protSlotUList) + in(pvmem.RegState, protSlotUState) + `
	xor %eax, %eax
	out %eax, $0xf4
`
	return src
}

func TestProtectedGuestPorts(t *testing.T) {
	for _, private := range []bool{true, false} {
		t.Run(fmt.Sprintf("private-memory=%v", private), func(t *testing.T) {
			cfg := smallConfig(memory.KindMemfd)
			cfg.PrivateMemory = private
			m := newRawMachine(t, cfg, protGuest())
			mem := m.Memory()
			// One list entry, in a page the guest shares for it (at CPL0 it
			// reads LIST_CONVERT with LIST_COUNT 0; the CPL3 try has 1).
			var e [pvmem.EntrySize]byte
			binary.LittleEndian.PutUint64(e[0:], protPage+memory.PageSize)
			binary.LittleEndian.PutUint64(e[8:], 1)
			binary.LittleEndian.PutUint64(e[24:], 0x77)
			if err := mem.Write(protList, e[:]); err != nil {
				t.Fatal(err)
			}
			if _, err := mem.Convert(memory.ConvertRequest{GPA: protList, NPages: 1}); err != nil {
				t.Fatal(err)
			}
			if private {
				// A shared page for the CPL3 list entry to make private.
				mem.Convert(memory.ConvertRequest{GPA: protPage + memory.PageSize, NPages: 1})
			}
			runMachine(t, m, OutcomePowerOff)
			var raw [protSlots * 4]byte
			if err := mem.Read(protResults, raw[:]); err != nil {
				t.Fatal(err)
			}
			w := func(i int) uint32 { return binary.LittleEndian.Uint32(raw[4*i:]) }
			sig := []byte(firmware.ProtectedSignature)
			for _, at := range []struct {
				name string
				s0   int
				s1   int
			}{{"CPL0", protSlotCPUID0, protSlotCPUID1}, {"CPL3", protSlotUCPUID0, protSlotUCPUID1}} {
				got := [4]uint32{w(at.s0), w(at.s0 + 1), w(at.s0 + 2), w(at.s0 + 3)}
				feat := [4]uint32{w(at.s1), w(at.s1 + 1), w(at.s1 + 2), w(at.s1 + 3)}
				signed := got[1] == binary.LittleEndian.Uint32(sig) && got[2] == binary.LittleEndian.Uint32(sig[4:]) && got[3] == binary.LittleEndian.Uint32(sig[8:])
				if at.name == "CPL3" && got == [4]uint32{} && feat == [4]uint32{} {
					// Measured on the shadow-paging development hosts: guest
					// user mode runs natively and its cpuid is not
					// intercepted (all zeros here). The guest kernel reads
					// the leaves at CPL0, where the table applies.
					t.Logf("CPL3: cpuid of the hypervisor range is not intercepted on this host (zeros)")
					continue
				}
				if private {
					if !signed || got[0] != firmware.ProtectedCPUIDFeatures {
						t.Errorf("%s: CPUID 0x40000100 = %#x, want 0x40000101 and %q", at.name, got, sig)
					}
					if feat != [4]uint32{firmware.ProtectedFeatureGuest, PortPVMem, 0, 0} {
						t.Errorf("%s: CPUID 0x40000101 = %#x, want [1 %#x 0 0]", at.name, feat, PortPVMem)
					}
				} else if signed {
					t.Errorf("%s: protected-mode signature without --private-memory", at.name)
				}
			}
			// 32-bit reads at every offset answer per docs/pvmem.md §2.
			einval := int32(pvmem.StatusInvalid)
			want := []uint32{pvmem.Magic, pvmem.Version,
				pvmem.FeatureRegisters | pvmem.FeatureBatch | pvmem.FeatureState,
				protPage, 0, 1, 0,
				0, 0, // CONVERT (to shared) and STATUS
				protList, 0, 0,
				uint32(einval), // LIST_CONVERT with LIST_COUNT 0
				0, pvmem.MaxBatch,
				pvmem.StateShared, // STATE: the page CONVERT just shared
			}
			for off, v := range want {
				if got := w(protSlotRegs + off); got != v {
					t.Errorf("inl base+%#x = %#x (%d), want %#x", off, got, int32(got), v)
				}
			}
			if got := w(protSlotPast); got != 0xffffffff {
				t.Errorf("inl base+0x10 = %#x, want all ones", got)
			}
			if got := w(protSlotByteF); got != pvmem.StateShared {
				t.Errorf("inb STATE = %#x", got)
			}
			// CPL3: both doorbells refused with -EPERM, nothing converted,
			// the list not even read (its status stays).
			if got := int64(int32(w(protSlotUConvert))); got != pvmem.StatusNotKernel {
				t.Errorf("CONVERT at CPL3 = %d, want %d", got, pvmem.StatusNotKernel)
			}
			if got := int64(int32(w(protSlotUList))); got != pvmem.StatusNotKernel {
				t.Errorf("LIST_CONVERT at CPL3 = %d, want %d", got, pvmem.StatusNotKernel)
			}
			if got := w(protSlotUState); got != pvmem.StateShared {
				t.Errorf("STATE at CPL3 = %#x, want shared (the refused request changed it?)", got)
			}
			for _, gpa := range []memory.GPA{protPage, protPage + memory.PageSize} {
				if p, _ := mem.IsPrivate(gpa); p {
					t.Errorf("page %v private after the CPL3 requests", gpa)
				}
			}
			mem.Read(protList+24, e[:8])
			if st := binary.LittleEndian.Uint64(e[:8]); st != 0x77 {
				t.Errorf("the refused list got status %#x written", st)
			}
			c := m.Conversions()
			if c.NotKernelMode != 2 || c.PVMemRegister.Requests != 1 || c.PVMemRegister.Refused != 0 || c.PVMemList.Requests != 0 {
				t.Errorf("conversion counters %+v: want 1 register conversion, 2 CPL refusals", c)
			}
		})
	}
}

func TestProtectedCmdline(t *testing.T) {
	for _, tc := range []struct {
		ram      uint64
		private  bool
		cmdline  string
		want     string
		wantMiB  uint32
		announce bool
	}{
		{512 << 20, true, "console=ttyS0", "console=ttyS0 swiotlb=8192", 16, true}, // 16 MiB of 2 KiB slabs
		{256 << 20, true, "", "swiotlb=4096", 8, true},
		{64 << 20, true, "quiet", "quiet swiotlb=4096", 8, true},  // at least 8 MiB
		{8 << 30, true, "quiet", "quiet swiotlb=32768", 64, true}, // at most 64 MiB
		{512 << 20, true, "swiotlb=1024,force quiet", "swiotlb=1024,force quiet", 0, true},
		{512 << 20, false, "quiet", "quiet", 0, false},
	} {
		m := &Machine{cfg: Config{Memory: tc.ram, PrivateMemory: tc.private}}
		got, pm := m.protectedCmdline(tc.cmdline)
		if got != tc.want || (pm != nil) != tc.announce || pm != nil && (pm.SwiotlbMiB != tc.wantMiB || pm.PVMemPort != PortPVMem) {
			t.Errorf("%d MiB private=%v %q: %q, %+v; want %q, %d MiB", tc.ram>>20, tc.private, tc.cmdline, got, pm, tc.want, tc.wantMiB)
		}
		// Private pages stay >= 90 % of RAM with the default pool.
		if tc.private && tc.ram >= 512<<20 && pm != nil && pm.SwiotlbMiB > 0 && uint64(pm.SwiotlbMiB)<<20*10 > tc.ram {
			t.Errorf("%d MiB: a %d MiB swiotlb leaves less than 90 %% private", tc.ram>>20, pm.SwiotlbMiB)
		}
	}
}

// TestUnprotectedDriverLogsOnce: however many devices and attempts, one
// clear error line, and a count of every refusal.
func TestUnprotectedDriverLogsOnce(t *testing.T) {
	var buf strings.Builder
	l := logrus.New()
	l.SetOutput(&buf)
	m := &Machine{log: logrus.NewEntry(l)}
	for i := 0; i < 5; i++ {
		m.unprotectedDriver(fmt.Sprintf("virtio-blk@%02x", i), "driver did not accept VIRTIO_F_ACCESS_PLATFORM")
	}
	if n := strings.Count(buf.String(), "lacks protected-guest support"); n != 1 {
		t.Errorf("%d log lines, want 1:\n%s", n, buf.String())
	}
	if !strings.Contains(buf.String(), "level=error") || !strings.Contains(buf.String(), "virtio-blk@00") {
		t.Errorf("log line: %s", buf.String())
	}
	if m.Conversions().UnprotectedDrivers != 5 {
		t.Errorf("unprotected drivers %d, want 5", m.Conversions().UnprotectedDrivers)
	}
}
