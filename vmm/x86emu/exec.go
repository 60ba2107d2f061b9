package x86emu

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/vmmgo/vmm/kvm"
	"github.com/vmmgo/vmm/vmm/paging"
)

// CPU is the vCPU state an instruction reads and may change: Execute
// advances Regs.RIP past an instruction it completes. Sregs is only read.
type CPU struct {
	Regs  kvm.Regs
	Sregs kvm.Sregs
}

// Env is the rest of the vCPU: SSE control state and guest physical memory.
type Env interface {
	// MXCSR returns MXCSR and MXCSR_MASK (FXSAVE image bytes 24..31; a
	// mask of 0 means the architectural default 0xFFBF).
	MXCSR() (value, mask uint32, err error)
	// SetMXCSR loads MXCSR. Execute checks reserved bits first.
	SetMXCSR(v uint32) error
	// ReadPhys and WritePhys access guest physical memory (page tables
	// and operands).
	ReadPhys(gpa uint64, p []byte) error
	WritePhys(gpa uint64, p []byte) error
}

// Exception vectors Execute may raise (SDM Vol. 3A §6.15).
const (
	VectorDE = 0
	VectorUD = 6
	VectorNM = 7
	VectorSS = 12
	VectorGP = 13
	VectorPF = 14
	VectorAC = 17
)

// Exception is an exception the instruction raises instead of completing:
// the caller delivers it with RIP left on the instruction (all of these are
// faults) and, for #PF, CR2 set to Addr.
type Exception struct {
	Vector       uint8
	HasErrorCode bool
	ErrorCode    uint32
	Addr         uint64 // #PF: the linear address (CR2)
	Reason       string
}

func (e *Exception) Error() string {
	name := map[uint8]string{VectorDE: "#DE", VectorUD: "#UD", VectorNM: "#NM", VectorSS: "#SS", VectorGP: "#GP", VectorPF: "#PF", VectorAC: "#AC"}[e.Vector]
	if name == "" {
		name = fmt.Sprintf("vector %d", e.Vector)
	}
	s := name
	if e.HasErrorCode {
		s += fmt.Sprintf("(%#x)", e.ErrorCode)
	}
	if e.Vector == VectorPF {
		s += fmt.Sprintf(" at %#x", e.Addr)
	}
	if e.Reason != "" {
		s += ": " + e.Reason
	}
	return s
}

func fault(vector uint8, code uint32, reason string) *Exception {
	return &Exception{Vector: vector, HasErrorCode: vector == VectorGP || vector == VectorSS || vector == VectorPF || vector == VectorAC, ErrorCode: code, Reason: reason}
}

// Control and flag bits (SDM Vol. 3A §2.5, Vol. 1 §3.4.3).
const (
	cr0PE     = 1 << 0
	cr0EM     = 1 << 2
	cr0TS     = 1 << 3
	cr0WP     = 1 << 16
	cr0AM     = 1 << 18
	cr4OSFXSR = 1 << 9
	cr4LA57   = 1 << 12
	cr4SMAP   = 1 << 21
	eferLMA   = 1 << 10
	flagRF    = 1 << 16
	flagVM    = 1 << 17
	flagAC    = 1 << 18

	// DefaultMXCSRMask is MXCSR_MASK when FXSAVE stores 0 (SDM Vol. 1
	// §11.6.6): every bit but DAZ (6) and bits 31:16 writable.
	DefaultMXCSRMask = 0xffbf
)

// Mode returns the code size of cpu (16, 32 or 64) from CR0.PE, EFLAGS.VM,
// EFER.LMA and CS.L/CS.D.
func (c *CPU) Mode() int {
	switch {
	case c.Sregs.CR0&cr0PE == 0 || c.Regs.RFLAGS&flagVM != 0:
		return 16
	case c.Sregs.EFER&eferLMA != 0 && c.Sregs.CS.L != 0:
		return 64
	case c.Sregs.CS.DB != 0:
		return 32
	}
	return 16
}

// CPL is the current privilege level (SS.DPL, as KVM keeps it; 0 in real
// mode, 3 in virtual-8086 mode).
func (c *CPU) CPL() int {
	switch {
	case c.Sregs.CR0&cr0PE == 0:
		return 0
	case c.Regs.RFLAGS&flagVM != 0:
		return 3
	}
	return int(c.Sregs.SS.DPL & 3)
}

// Execute decodes the instruction in code (the bytes at CS:RIP; more than
// the instruction is fine) and executes it on cpu and env.
//   - Completed: err is nil, exc is nil, cpu.Regs.RIP is past it.
//   - An architectural exception: exc says which; cpu is unchanged and
//     nothing was written to memory or MXCSR. The caller injects it.
//   - Not handled (errors.Is(err, ErrUnsupported)), truncated bytes, or a
//     failure to read or write the state: err; cpu is unchanged.
func Execute(cpu *CPU, env Env, code []byte) (in Inst, exc *Exception, err error) {
	in, err = Decode(code, cpu.Mode())
	if err != nil {
		return in, nil, err
	}
	if in.Lock {
		return in, fault(VectorUD, 0, "LOCK prefix"), nil
	}
	switch in.Op {
	case OpLDMXCSR, OpSTMXCSR:
		exc, err = execMXCSR(cpu, env, in)
	default:
		return in, nil, fmt.Errorf("%w: %v", ErrUnsupported, in.Op)
	}
	if err != nil || exc != nil {
		return in, exc, err
	}
	cpu.Regs.RIP += uint64(in.Len)
	if cpu.Mode() != 64 {
		cpu.Regs.RIP &= 0xffff_ffff
	}
	cpu.Regs.RFLAGS &^= flagRF // cleared when an instruction completes
	return in, nil, nil
}

// execMXCSR runs LDMXCSR / STMXCSR (SDM Vol. 2B LDMXCSR, Vol. 2C STMXCSR):
// #UD with CR0.EM or without CR4.OSFXSR, #NM with CR0.TS, the memory
// operand's faults, then (LDMXCSR) #GP(0) for bits outside MXCSR_MASK.
func execMXCSR(cpu *CPU, env Env, in Inst) (*Exception, error) {
	cr0, cr4 := cpu.Sregs.CR0, cpu.Sregs.CR4
	switch {
	case cr0&cr0EM != 0:
		return fault(VectorUD, 0, "CR0.EM is set"), nil
	case cr4&cr4OSFXSR == 0:
		return fault(VectorUD, 0, "CR4.OSFXSR is clear"), nil
	case cr0&cr0TS != 0:
		return fault(VectorNM, 0, "CR0.TS is set"), nil
	}
	write := in.Op == OpSTMXCSR
	var buf [4]byte
	acc, exc, err := resolve(cpu, env, in, len(buf), write)
	if err != nil || exc != nil {
		return exc, err
	}
	val, mask, err := env.MXCSR()
	if err != nil {
		return nil, err
	}
	if write {
		binary.LittleEndian.PutUint32(buf[:], val)
		return nil, acc.write(env, buf[:])
	}
	if err := acc.read(env, buf[:]); err != nil {
		return nil, err
	}
	v := binary.LittleEndian.Uint32(buf[:])
	if mask == 0 {
		mask = DefaultMXCSRMask
	}
	if v&^mask != 0 {
		return fault(VectorGP, 0, fmt.Sprintf("MXCSR value %#x sets reserved bits %#x (MXCSR_MASK %#x)", v, v&^mask, mask)), nil
	}
	return nil, env.SetMXCSR(v)
}

// access is a memory operand checked and translated: the physical pieces
// (at most two, when it crosses a page) and the paging entries to mark
// accessed/dirty once the access happens.
type access struct {
	pieces []piece
}

type piece struct {
	gpa   uint64
	n     int
	walk  paging.Walk
	write bool
}

func (a access) read(env Env, p []byte) error {
	off := 0
	for _, pc := range a.pieces {
		if err := env.ReadPhys(pc.gpa, p[off:off+pc.n]); err != nil {
			return fmt.Errorf("read memory operand at gpa %#x: %w", pc.gpa, err)
		}
		off += pc.n
	}
	return a.markUsed(env)
}

func (a access) write(env Env, p []byte) error {
	off := 0
	for _, pc := range a.pieces {
		if err := env.WritePhys(pc.gpa, p[off:off+pc.n]); err != nil {
			return fmt.Errorf("write memory operand at gpa %#x: %w", pc.gpa, err)
		}
		off += pc.n
	}
	return a.markUsed(env)
}

// Paging-entry bits the processor sets as it uses a translation.
const (
	pteAccessed = 1 << 5
	pteDirty    = 1 << 6
)

// markUsed sets the accessed bit in every paging entry of each piece's
// walk and the dirty bit in the leaf of a written one, as the processor
// does (SDM Vol. 3A §4.8). The update is a plain read-modify-write of the
// entry: not atomic against another vCPU changing the same entry at the
// same moment.
func (a access) markUsed(env Env) error {
	for _, pc := range a.pieces {
		w := pc.walk
		size := 8
		if w.Mode == paging.Mode32 {
			size = 4
		}
		for i, e := range w.Entries {
			if w.Mode == paging.ModePAE && e.Name == "PDPTE" {
				continue // PAE PDPTEs have no accessed bit
			}
			leaf := i == len(w.Entries)-1
			set := uint64(pteAccessed)
			if leaf && pc.write {
				set |= pteDirty
			}
			if e.Value&set == set {
				continue
			}
			var b [8]byte
			binary.LittleEndian.PutUint64(b[:], e.Value|set)
			if err := env.WritePhys(e.GPA, b[:size]); err != nil {
				return fmt.Errorf("set accessed/dirty in %s at gpa %#x: %w", e.Name, e.GPA, err)
			}
		}
	}
	return nil
}

// regValue reads a general-purpose register by number.
func regValue(r *kvm.Regs, n Reg, next uint64) uint64 {
	switch n {
	case RegNone:
		return 0
	case RegRIP:
		return next
	}
	return [...]uint64{r.RAX, r.RCX, r.RDX, r.RBX, r.RSP, r.RBP, r.RSI, r.RDI,
		r.R8, r.R9, r.R10, r.R11, r.R12, r.R13, r.R14, r.R15}[n]
}

// EffectiveAddress is the operand's offset within its segment.
func EffectiveAddress(cpu *CPU, in Inst) uint64 {
	m := in.Mem
	next := cpu.Regs.RIP + uint64(in.Len)
	ea := regValue(&cpu.Regs, m.Base, next) + regValue(&cpu.Regs, m.Index, next)*uint64(m.Scale) + uint64(m.Disp)
	switch m.AddrSize {
	case 16:
		ea &= 0xffff
	case 32:
		ea &= 0xffff_ffff
	}
	return ea
}

// segmentOf is the segment an operand uses: the override, else SS for a
// stack-based address (base rSP or rBP; BP in 16-bit forms), else DS.
func segmentOf(m MemOperand) Seg {
	if m.Seg != SegDefault {
		return m.Seg
	}
	if m.Base == RSP || m.Base == RBP {
		return SegSS
	}
	return SegDS
}

func segReg(s *kvm.Sregs, seg Seg) kvm.Segment {
	return [...]kvm.Segment{s.ES, s.CS, s.SS, s.DS, s.FS, s.GS}[seg]
}

// resolve checks the operand of n bytes against segmentation and paging
// and returns its physical pieces, or the exception the access raises.
func resolve(cpu *CPU, env Env, in Inst, n int, write bool) (access, *Exception, error) {
	seg := segmentOf(in.Mem)
	segFault := uint8(VectorGP)
	if seg == SegSS {
		segFault = VectorSS
	}
	ea := EffectiveAddress(cpu, in)
	sr := segReg(&cpu.Sregs, seg)
	var linear uint64
	mode := cpu.Mode()
	if mode == 64 {
		if seg == SegFS || seg == SegGS {
			linear = sr.Base + ea
		} else {
			linear = ea
		}
		bits := uint(48)
		if cpu.Sregs.CR4&cr4LA57 != 0 {
			bits = 57
		}
		if !paging.Canonical(linear, bits) || !paging.Canonical(linear+uint64(n)-1, bits) {
			return access{}, fault(segFault, 0, fmt.Sprintf("non-canonical address %#x", linear)), nil
		}
	} else {
		if exc := checkSegment(cpu, sr, seg, ea, n, write, segFault); exc != nil {
			return access{}, exc, nil
		}
		linear = (sr.Base + ea) & 0xffff_ffff
	}
	cpl := cpu.CPL()
	if cpl == 3 && cpu.Sregs.CR0&cr0AM != 0 && cpu.Regs.RFLAGS&flagAC != 0 && linear%uint64(n) != 0 {
		return access{}, fault(VectorAC, 0, fmt.Sprintf("unaligned %d-byte access at %#x", n, linear)), nil
	}
	var acc access
	pcpu := paging.CPU{CR0: cpu.Sregs.CR0, CR3: cpu.Sregs.CR3, CR4: cpu.Sregs.CR4, EFER: cpu.Sregs.EFER}
	for off := 0; off < n; {
		addr := linear + uint64(off)
		if mode != 64 {
			addr &= 0xffff_ffff
		}
		chunk := min(n-off, int(0x1000-addr&0xfff))
		gpa, walk, err := paging.Translate(env.ReadPhys, pcpu, addr)
		if exc := pageFault(cpu, walk, err, addr, write, cpl); exc != nil {
			return access{}, exc, nil
		}
		if err != nil {
			return access{}, nil, fmt.Errorf("translate %#x: %w", addr, err)
		}
		acc.pieces = append(acc.pieces, piece{gpa: gpa, n: chunk, walk: walk, write: write})
		off += chunk
	}
	return acc, nil, nil
}

// checkSegment applies protected/real-mode segmentation (SDM Vol. 3A §5.3,
// §3.4.5.1): an unusable segment, a write to a read-only or code segment,
// a read of an execute-only one, or an offset outside the limit (expand-up
// or expand-down) fault.
func checkSegment(cpu *CPU, sr kvm.Segment, seg Seg, ea uint64, n int, write bool, vector uint8) *Exception {
	name := seg.String()
	if cpu.Sregs.CR0&cr0PE != 0 && cpu.Regs.RFLAGS&flagVM == 0 {
		if sr.Unusable != 0 || sr.Present == 0 {
			return fault(vector, 0, name+" is unusable")
		}
		code := sr.Type&8 != 0
		switch {
		case write && (code || sr.Type&2 == 0):
			return fault(vector, 0, "write to a read-only "+name)
		case !write && code && sr.Type&2 == 0:
			return fault(vector, 0, "read of an execute-only "+name)
		}
		if !code && sr.Type&4 != 0 {
			// Expand-down: valid offsets are limit+1 .. 0xffff or 0xffffffff.
			top := uint64(0xffff)
			if sr.DB != 0 {
				top = 0xffff_ffff
			}
			if ea <= uint64(sr.Limit) || ea+uint64(n)-1 > top {
				return fault(vector, 0, fmt.Sprintf("offset %#x outside expand-down %s", ea, name))
			}
			return nil
		}
	}
	if ea+uint64(n)-1 > uint64(sr.Limit) {
		return fault(vector, 0, fmt.Sprintf("offset %#x beyond the %s limit %#x", ea, name, sr.Limit))
	}
	return nil
}

// Page-fault error code bits (SDM Vol. 3A §4.7).
const (
	pfPresent = 1 << 0
	pfWrite   = 1 << 1
	pfUser    = 1 << 2
	pfRsvd    = 1 << 3
)

// pageFault returns the #PF a data access raises, if any: a not-present
// or reserved-bit entry on the walk, or rights the access lacks (user
// access to a supervisor page, a write to a read-only page at CPL3 or with
// CR0.WP, a supervisor access to a user page under SMAP with EFLAGS.AC
// clear).
func pageFault(cpu *CPU, w paging.Walk, err error, addr uint64, write bool, cpl int) *Exception {
	code := uint32(0)
	if write {
		code |= pfWrite
	}
	user := cpl == 3
	if user {
		code |= pfUser
	}
	pf := func(c uint32, why string) *Exception {
		e := fault(VectorPF, c, why)
		e.Addr = addr
		return e
	}
	switch {
	case errors.Is(err, paging.ErrNotPresent):
		return pf(code, "page not present")
	case errors.Is(err, paging.ErrReserved):
		return pf(code|pfPresent|pfRsvd, "reserved bit in a paging entry")
	case err != nil:
		return nil
	}
	if w.Mode == paging.ModeNone {
		return nil
	}
	switch {
	case user && !w.User:
		return pf(code|pfPresent, "user access to a supervisor page")
	case write && !w.Writable && (user || cpu.Sregs.CR0&cr0WP != 0):
		return pf(code|pfPresent, "write to a read-only page")
	case !user && w.User && cpu.Sregs.CR4&cr4SMAP != 0 && cpu.Regs.RFLAGS&flagAC == 0:
		return pf(code|pfPresent, "supervisor access to a user page with SMAP")
	}
	return nil
}
