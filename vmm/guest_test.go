package vmm

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmmgo/vmm/internal/tinyguest"
	"github.com/vmmgo/vmm/kvm/kvmtest"
	"github.com/vmmgo/vmm/memory"
)

// Tiny guests start in 64-bit mode at CPL0 at rawOrg (see RawImage).
const rawOrg = 0x100000

// newRawMachine builds a machine for a tiny guest assembled from src. It
// fails (never skips) when /dev/kvm is present but does not work.
func newRawMachine(t testing.TB, cfg Config, src string) *Machine {
	t.Helper()
	kvmtest.Open(t) // skips only when /dev/kvm does not exist
	code, err := tinyguest.Assemble(src, rawOrg)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 20 * time.Second
	}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	if err := m.LoadRaw(RawImage{Data: code, Addr: rawOrg}); err != nil {
		t.Fatal(err)
	}
	return m
}

// runMachine runs m to its end and fails with the vCPU dump unless it
// ends with want.
func runMachine(t testing.TB, m *Machine, want Outcome) Result {
	t.Helper()
	res, err := m.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if res.Outcome != want {
		t.Fatalf("guest ended with %v (%s), want %v\n%s", res.Outcome, res.Detail, want, res.Dump)
	}
	return res
}

func smallConfig(backend memory.Kind) Config {
	c := DefaultConfig()
	c.Memory = 8 << 20
	c.MemoryBackend = backend
	return c
}

// TestGuestAndHostSeeEachOthersWrites runs on every backend: the guest reads
// a value the host wrote, writes its transformation back, and the host reads
// it through its own mapping of the same memory.
func TestGuestAndHostSeeEachOthersWrites(t *testing.T) {
	for _, backend := range []memory.Kind{memory.KindAnon, memory.KindMemfd, memory.KindHugetlb, memory.KindGuestMemfd} {
		t.Run(string(backend), func(t *testing.T) {
			cfg := smallConfig(backend)
			m := newRawMachine(t, cfg, `
				mov 0x200000, %rax       # host wrote a value here
				not %rax
				mov %rax, 0x200008       # guest answer
				movl $0x600d, 0x3ff000   # near the top of RAM
				xor %eax, %eax
				out %al, $0xf4`)
			host := []byte{1, 2, 3, 4, 5, 6, 7, 8}
			if err := m.Memory().Write(0x200000, host); err != nil {
				t.Fatal(err)
			}
			runMachine(t, m, OutcomePowerOff)
			got := make([]byte, 8)
			if err := m.Memory().Read(0x200008, got); err != nil {
				t.Fatal(err)
			}
			for i := range got {
				if got[i] != ^host[i] {
					t.Fatalf("guest wrote % x, want % x inverted", got, host)
				}
			}
			// The host's mapping of the backing itself (not only Guest.Read)
			// holds the guest's write.
			if b := m.Backend().Bytes(); b[0x3ff000] != 0x0d || b[0x3ff001] != 0x60 {
				t.Fatalf("backing mapping does not show the guest's write: % x", b[0x3ff000:0x3ff004])
			}
			if m.Backend().Kind() != backend {
				t.Fatalf("backend kind %v, want %v", m.Backend().Kind(), backend)
			}
		})
	}
}

// busRecorder records accesses with their size and data.
type busRecorder struct {
	mu     sync.Mutex
	log    []string
	answer []byte
}

func (r *busRecorder) BusRead(vcpu int, off uint64, data []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	copy(data, r.answer)
	r.log = append(r.log, "r"+hex(off)+"/"+hex(uint64(len(data))))
}

func (r *busRecorder) BusWrite(vcpu int, off uint64, data []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.log = append(r.log, "w"+hex(off)+"/"+hex(uint64(len(data)))+"="+string(data))
}

func TestPIOAndMMIOReachDevices(t *testing.T) {
	m := newRawMachine(t, smallConfig(memory.KindAnon), `
		mov $0x3f2, %dx
		mov $0x41, %al
		out %al, %dx              # 1-byte write "A" at offset 2
		mov $0x3f0, %dx
		mov $0x44434241, %eax
		out %eax, %dx             # 4-byte write "ABCD" at offset 0
		in %dx, %ax               # 2-byte read
		mov %ax, 0x200000
		movabs $0xd0000010, %rbx
		movl $0x5a595857, (%rbx)  # 4-byte MMIO write "WXYZ" at offset 0x10
		mov (%rbx), %rcx          # 8-byte MMIO read
		mov %rcx, 0x200008
		xor %eax, %eax
		out %al, $0xf4`)
	pio := &busRecorder{answer: []byte{0x34, 0x12}}
	mmio := &busRecorder{answer: []byte{1, 2, 3, 4, 5, 6, 7, 8}}
	if err := m.PIO().Register("rec", 0x3f0, 4, pio); err != nil {
		t.Fatal(err)
	}
	if err := m.MMIO().Register("rec", 0xd0000000, 0x100, mmio); err != nil {
		t.Fatal(err)
	}
	runMachine(t, m, OutcomePowerOff)
	if want := []string{"w2/1=A", "w0/4=ABCD", "r0/2"}; strings.Join(pio.log, ",") != strings.Join(want, ",") {
		t.Errorf("PIO accesses %v, want %v", pio.log, want)
	}
	if want := []string{"w10/4=WXYZ", "r10/8"}; strings.Join(mmio.log, ",") != strings.Join(want, ",") {
		t.Errorf("MMIO accesses %v, want %v", mmio.log, want)
	}
	got := make([]byte, 16)
	if err := m.Memory().Read(0x200000, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[:2], []byte{0x34, 0x12}) || !bytes.Equal(got[8:], []byte{1, 2, 3, 4, 5, 6, 7, 8}) {
		t.Errorf("guest received PIO % x and MMIO % x, want 34 12 and 01..08", got[:2], got[8:])
	}
}

func TestStringIO(t *testing.T) {
	m := newRawMachine(t, smallConfig(memory.KindAnon), `
		lea msg(%rip), %rsi
		mov $0x3f0, %dx
		mov $5, %rcx
		rep outsb                  # 5 one-byte writes
		lea buf(%rip), %rdi
		mov $3, %rcx
		rep insw                   # 3 two-byte reads
		mov buf(%rip), %rax
		mov %rax, 0x200000
		xor %eax, %eax
		out %al, $0xf4
	msg: .ascii "hello"
	buf: .quad 0`)
	rec := &busRecorder{answer: []byte{0xcd, 0xab}}
	if err := m.PIO().Register("rec", 0x3f0, 2, rec); err != nil {
		t.Fatal(err)
	}
	runMachine(t, m, OutcomePowerOff)
	want := "w0/1=h,w0/1=e,w0/1=l,w0/1=l,w0/1=o,r0/2,r0/2,r0/2"
	if got := strings.Join(rec.log, ","); got != want {
		t.Errorf("string I/O accesses\n got %s\nwant %s", got, want)
	}
	got := make([]byte, 8)
	m.Memory().Read(0x200000, got)
	if !bytes.Equal(got[:6], []byte{0xcd, 0xab, 0xcd, 0xab, 0xcd, 0xab}) {
		t.Errorf("rep insw stored % x", got)
	}
}

func TestWatchdogStopsSpinningGuestWithDump(t *testing.T) {
	cfg := smallConfig(memory.KindAnon)
	cfg.Timeout = 500 * time.Millisecond
	m := newRawMachine(t, cfg, `
		mov $0x1234, %r12
	spin: jmp spin`)
	start := time.Now()
	res := runMachine(t, m, OutcomeTimeout)
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("watchdog took %v", el)
	}
	for _, want := range []string{"vcpu 0 state", "rip=", "r12=0000000000001234", "disassembly: jmp", "exit counters",
		"walk of rip: gva 0x100007 -> gpa 0x100007: 4-level PML4E[0x0]@0x9000"} {
		if !strings.Contains(res.Dump, want) {
			t.Errorf("dump lacks %q:\n%s", want, res.Dump)
		}
	}
}

func TestKickInterruptsRunningVCPU(t *testing.T) {
	cfg := smallConfig(memory.KindAnon)
	cfg.CPUs = 2
	m := newRawMachine(t, cfg, `
		mov $0xabcd, %r13
	spin: jmp spin`)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan Result, 1)
	go func() {
		res, _ := m.Run(ctx)
		done <- res
	}()
	time.Sleep(200 * time.Millisecond)
	// A state dump kicks each vCPU out of KVM_RUN, reads its registers on its
	// own thread and lets it run on.
	dump := m.DumpState()
	if strings.Count(dump, "r13=000000000000abcd") != 2 {
		t.Fatalf("dump of running vCPUs:\n%s", dump)
	}
	select {
	case res := <-done:
		t.Fatalf("machine stopped after a dump: %v %s", res.Outcome, res.Detail)
	case <-time.After(100 * time.Millisecond):
	}
	cancel()
	select {
	case res := <-done:
		if res.Outcome != OutcomeStopped {
			t.Fatalf("outcome %v, want stopped", res.Outcome)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("cancel did not stop the vCPUs")
	}
}

func TestTripleFaultIsAPanic(t *testing.T) {
	m := newRawMachine(t, smallConfig(memory.KindAnon), `
		lidt zero(%rip)           # an empty IDT: any exception triple-faults
		ud2
	zero: .quad 0, 0`)
	res := runMachine(t, m, OutcomePanic)
	if !strings.Contains(res.Detail, "triple fault") {
		t.Errorf("detail %q", res.Detail)
	}
}

func TestInt3IsInjectedAsBreakpoint(t *testing.T) {
	// A #BP handler that records it ran; int3 at CPL0 cannot be emulated on
	// hosts that emulate kernel mode, and must still reach the guest.
	m := newRawMachine(t, smallConfig(memory.KindAnon), `
		lea handler(%rip), %rax
		lea idt(%rip), %rbx
		mov %ax, 48(%rbx)          # gate 3: offset 15:0
		movw $0x08, 50(%rbx)       # selector
		movw $0x8e00, 52(%rbx)     # present, interrupt gate
		shr $16, %rax
		mov %ax, 54(%rbx)          # offset 31:16
		shr $16, %rax
		mov %eax, 56(%rbx)         # offset 63:32
		lidt idtr(%rip)
		int3
		movq $0x77, 0x200008      # after the handler returned
		xor %eax, %eax
		out %al, $0xf4
	handler:
		movq $0x55, 0x200000
		iretq
	.align 16
	idtr: .word 16*4-1
		.quad idt
	.align 16
	idt: .fill 64, 1, 0`)
	runMachine(t, m, OutcomePowerOff)
	got := make([]byte, 16)
	m.Memory().Read(0x200000, got)
	if got[0] != 0x55 || got[8] != 0x77 {
		t.Fatalf("handler ran=%#x, resumed after int3=%#x", got[0], got[8])
	}
}

func TestUnknownPortsReadAllOnesAndDoNotStop(t *testing.T) {
	m := newRawMachine(t, smallConfig(memory.KindAnon), `
		mov $0x1234, %dx
		in %dx, %eax
		mov %eax, 0x200000
		out %eax, %dx
		xor %eax, %eax
		out %al, $0xf4`)
	runMachine(t, m, OutcomePowerOff)
	got := make([]byte, 4)
	m.Memory().Read(0x200000, got)
	if !bytes.Equal(got, []byte{0xff, 0xff, 0xff, 0xff}) {
		t.Fatalf("unknown port read % x, want all ones", got)
	}
	if m.PIO().Misses() != 2 {
		t.Fatalf("misses %d, want 2", m.PIO().Misses())
	}
}

func TestExitCodeFromGuest(t *testing.T) {
	m := newRawMachine(t, smallConfig(memory.KindAnon), `
		mov $42, %eax
		out %eax, $0xf4`)
	if res := runMachine(t, m, OutcomePowerOff); res.Code != 42 {
		t.Fatalf("code %d, want 42", res.Code)
	}
}

func TestUserModeGuest(t *testing.T) {
	// Drop to CPL3 with IOPL 3 and do port I/O from user mode.
	m := newRawMachine(t, smallConfig(memory.KindAnon), tinyguest.EnterUserMode(0x7f000, "user")+`
		mov %cs, %ax
		and $3, %eax
		out %eax, $0xf4           # exit code = CPL`)
	if res := runMachine(t, m, OutcomePowerOff); res.Code != 3 {
		t.Fatalf("exit code (CPL) %d, want 3", res.Code)
	}
}

func TestPauseResume(t *testing.T) {
	cfg := smallConfig(memory.KindAnon)
	cfg.CPUs = 2
	// Each vCPU counts at CPL3 in its own slot (native speed).
	m := newRawMachine(t, cfg, `
		mov %rdi, %rbx
		shl $3, %rbx
		add $0x200000, %rbx       # this vCPU's counter
		mov $0x7f000, %rax
		shl $12, %rdi
		sub %rdi, %rax            # per-vCPU user stack
		push $0x23
		push %rax
		push $0x3002
		push $0x1b
		lea user(%rip), %rax
		push %rax
		iretq
	user:
		incq (%rbx)
		jmp user`)
	if st := m.Snapshot().State; st != "created" {
		t.Errorf("state before Run %q, want created", st)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan Result, 1)
	go func() {
		res, _ := m.Run(ctx)
		done <- res
	}()
	counters := func() [2]uint64 {
		b := make([]byte, 16)
		if err := m.Memory().Read(0x200000, b); err != nil {
			t.Fatal(err)
		}
		return [2]uint64{leU64(b), leU64(b[8:])}
	}
	waitGrow := func(from [2]uint64) [2]uint64 {
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			c := counters()
			if c[0] > from[0] && c[1] > from[1] {
				return c
			}
			time.Sleep(5 * time.Millisecond)
		}
		t.Fatalf("counters did not grow from %v:\n%s", from, m.DumpState())
		return from
	}
	waitGrow([2]uint64{})
	if st := m.Snapshot().State; st != "running" {
		t.Errorf("state while running %q", st)
	}
	if err := m.Pause(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	if !m.Parked(0) || !m.Parked(1) {
		t.Fatal("vCPUs not parked after Pause")
	}
	if st := m.Snapshot().State; st != "paused" {
		t.Errorf("state after Pause %q, want paused", st)
	}
	a := counters()
	time.Sleep(50 * time.Millisecond)
	if b := counters(); a != b {
		t.Fatalf("counters moved while paused: %v -> %v", a, b)
	}
	// A paused vCPU's state can be read.
	if d := m.DumpState(); !strings.Contains(d, "vcpu 1 state") || !strings.Contains(d, "dpl=3") {
		t.Fatalf("dump while paused:\n%s", d)
	}
	// Resume only vCPU 1: vCPU 0 stays parked.
	m.ResumeVCPUs([]int{1})
	time.Sleep(50 * time.Millisecond)
	if c := counters(); c[0] != a[0] || c[1] == a[1] {
		t.Fatalf("after resuming vCPU 1 only: %v -> %v", a, c)
	}
	if st := m.Snapshot().State; st != "running" {
		t.Errorf("state with one of two vCPUs parked %q, want running", st)
	}
	m.Resume()
	waitGrow(counters())
	// Stop while paused ends parked vCPUs too.
	if err := m.Pause(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case res := <-done:
		if res.Outcome != OutcomeStopped {
			t.Fatalf("outcome %v", res.Outcome)
		}
		if st := m.Snapshot().State; st != OutcomeStopped.String() {
			t.Errorf("state after the stop %q, want %q", st, OutcomeStopped)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("stop did not end parked vCPUs")
	}
}

func leU64(b []byte) uint64 {
	var v uint64
	for i := 7; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	return v
}

// TestFwaitAtCPL0: Linux runs fwait on every thread exit; the emulator of
// this host cannot, and the VMM executes it (a no-op without a pending x87
// exception) so the guest goes on.
func TestFwaitAtCPL0(t *testing.T) {
	m := newRawMachine(t, smallConfig(memory.KindAnon), `
		fninit
		fwait
		mov $7, %eax
		out %eax, $0xf4`)
	if res := runMachine(t, m, OutcomePowerOff); res.Code != 7 {
		t.Fatalf("exit code %d, want 7", res.Code)
	}
}
