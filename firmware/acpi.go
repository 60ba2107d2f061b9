package firmware

import (
	"encoding/binary"
	"fmt"

	"github.com/vmmgo/vmm/memory"
)

// ACPIConfig describes the machine WriteACPI presents (ACPI 6.5). Zero
// fields take the Default* constants of the project layout.
type ACPIConfig struct {
	// Addr is where the RSDP goes, 16-byte aligned; the other tables follow
	// it up to Limit. Defaults: 0xE0000 and 0x100000 (the BIOS area the
	// kernel scans for the RSDP).
	Addr, Limit memory.GPA
	NCPUs       int
	LAPICAddr   memory.GPA
	IOAPICAddr  memory.GPA // IOAPIC id is NCPUs, GSI base 0
	PM1aEvtPort uint16     // 4-byte PM1a event block (PM1_STS, PM1_EN)
	PM1aCntPort uint16     // 2-byte PM1a control block (SCI_EN, SLP_TYP, SLP_EN)
	SCIIRQ      uint8
	ResetPort   uint16
	ResetValue  uint8
	// Serial lists 16550 ports to describe in the DSDT (PNP0501).
	Serial []SerialPort
	// PCI adds a PCI host bridge (PNP0A08) with bus 0, the config ports and
	// the 32-bit MMIO window to the DSDT.
	PCI bool
	// PCIIRQ, with PCI, routes INTA#..INTD# of every bus-0 slot to this GSI
	// (one wired-OR, level-triggered line) through a _PRT, so Linux need not
	// fall back to the Interrupt Line register ("PCI INT A: no GSI").
	PCIIRQ uint8
	// ECAM adds an MCFG entry for the ECAM window (bus 0 only) and reserves
	// it as a motherboard resource (PNP0C02) so Linux trusts it.
	ECAM bool
	// PVPanicPort, when non-zero, adds QEMU's pvpanic device (_HID
	// "QEMU0001", one I/O port): Linux's pvpanic driver writes the panic
	// event there before panic=-1 reboots, so the VMM can tell a panic from
	// a reboot.
	PVPanicPort uint16
	// I8042 sets the FADT IA-PC boot flag "8042 present".
	I8042 bool
	// NoPIC clears the MADT PCAT_COMPAT flag (no 8259 pair, e.g. split irqchip).
	NoPIC bool
}

// SerialPort is a 16550 UART at Port with an ISA IRQ.
type SerialPort struct {
	Port uint16
	IRQ  uint8
}

const (
	acpiOEMID      = "VMMGO "
	acpiOEMTableID = "VMMGOVMM"
	acpiCreatorID  = "VMGO"
	sdtHeaderSize  = 36
	rsdpSize       = 36
	facsSize       = 64
	fadtSize       = 276 // revision 6
)

func (c *ACPIConfig) defaults() {
	if c.Addr == 0 {
		c.Addr = DefaultRSDPAddr
	}
	if c.Limit == 0 {
		c.Limit = HighMemStart
	}
	if c.LAPICAddr == 0 {
		c.LAPICAddr = DefaultLAPICAddr
	}
	if c.IOAPICAddr == 0 {
		c.IOAPICAddr = DefaultIOAPICAddr
	}
	if c.PM1aEvtPort == 0 {
		c.PM1aEvtPort = DefaultPM1aEvtPort
	}
	if c.PM1aCntPort == 0 {
		c.PM1aCntPort = DefaultPM1aCntPort
	}
	if c.SCIIRQ == 0 {
		c.SCIIRQ = DefaultSCIIRQ
	}
	if c.ResetPort == 0 {
		c.ResetPort, c.ResetValue = DefaultResetPort, DefaultResetValue
	}
}

// sdtHeader returns the 36-byte System Description Table header (§5.2.6);
// length and checksum are filled by finishSDT.
func sdtHeader(sig string, rev byte) []byte {
	h := make([]byte, sdtHeaderSize)
	copy(h[0:4], sig)
	h[8] = rev
	copy(h[10:16], acpiOEMID)
	copy(h[16:24], acpiOEMTableID)
	binary.LittleEndian.PutUint32(h[24:], 1)
	copy(h[28:32], acpiCreatorID)
	binary.LittleEndian.PutUint32(h[32:], 1)
	return h
}

func acpiChecksum(b []byte) byte {
	var s byte
	for _, v := range b {
		s += v
	}
	return -s
}

func finishSDT(t []byte) []byte {
	binary.LittleEndian.PutUint32(t[4:], uint32(len(t)))
	t[9] = 0
	t[9] = acpiChecksum(t)
	return t
}

// gas encodes a Generic Address Structure (§5.2.3.2) for system I/O.
func gasIO(port uint16, bits, access byte) []byte {
	b := []byte{1, bits, 0, access}
	return binary.LittleEndian.AppendUint64(b, uint64(port))
}

// WriteACPI writes RSDP, XSDT, RSDT, FADT, FACS, DSDT, MADT (and MCFG) and
// returns the RSDP address, for boot_params.acpi_rsdp_addr and PVH's
// rsdp_paddr.
func WriteACPI(mem Memory, cfg ACPIConfig) (memory.GPA, error) {
	cfg.defaults()
	if cfg.NCPUs < 1 || cfg.NCPUs > 254 {
		return 0, fmt.Errorf("ACPI: %d CPUs, want 1..254 (8-bit APIC IDs, IOAPIC id = ncpus)", cfg.NCPUs)
	}
	if cfg.Addr%16 != 0 {
		return 0, fmt.Errorf("ACPI: RSDP address %v not 16-byte aligned", cfg.Addr)
	}
	base := uint64(cfg.Addr)
	var area []byte
	// place appends t at the next multiple of align and returns its address.
	place := func(t []byte, align uint64) uint64 {
		off := alignUp(uint64(len(area)), align)
		area = append(area, make([]byte, off-uint64(len(area)))...)
		area = append(area, t...)
		return base + off
	}
	place(make([]byte, rsdpSize), 16) // RSDP, filled at the end
	facs := place(buildFACS(), 64)
	dsdt := place(buildDSDT(&cfg), 16)
	fadt := place(buildFADT(&cfg, facs, dsdt), 16)
	tables := []uint64{fadt, place(buildMADT(&cfg), 16)}
	if cfg.ECAM {
		tables = append(tables, place(buildMCFG(), 16))
	}
	xsdt := sdtHeader("XSDT", 1)
	rsdt := sdtHeader("RSDT", 1)
	for _, t := range tables {
		xsdt = binary.LittleEndian.AppendUint64(xsdt, t)
		rsdt = binary.LittleEndian.AppendUint32(rsdt, uint32(t))
	}
	xsdtAddr := place(finishSDT(xsdt), 16)
	rsdtAddr := place(finishSDT(rsdt), 16)
	if base+uint64(len(area)) > uint64(cfg.Limit) {
		return 0, fmt.Errorf("ACPI: tables need [%#x, %#x), beyond the limit %v", base, base+uint64(len(area)), cfg.Limit)
	}
	// RSDP (§5.2.5.3), revision 2.
	r := area[:rsdpSize]
	copy(r[0:8], "RSD PTR ")
	copy(r[9:15], acpiOEMID)
	r[15] = 2
	binary.LittleEndian.PutUint32(r[16:], uint32(rsdtAddr))
	binary.LittleEndian.PutUint32(r[20:], rsdpSize)
	binary.LittleEndian.PutUint64(r[24:], xsdtAddr)
	r[8] = acpiChecksum(r[:20])
	r[32] = acpiChecksum(r)
	if err := write(mem, "ACPI tables", cfg.Addr, area); err != nil {
		return 0, err
	}
	return cfg.Addr, nil
}

// buildFACS: Firmware ACPI Control Structure (§5.2.10), version 2.
func buildFACS() []byte {
	f := make([]byte, facsSize)
	copy(f[0:4], "FACS")
	binary.LittleEndian.PutUint32(f[4:], facsSize)
	f[32] = 2
	return f
}

// FADT flags (§5.2.9 Table 5.10) and IA-PC boot architecture flags (Table 5.11).
const (
	fadtWBINVD        = 1 << 0
	fadtPwrButton     = 1 << 4 // no fixed power button
	fadtSlpButton     = 1 << 5 // no fixed sleep button
	fadtResetRegSup   = 1 << 10
	iapcLegacyDevs    = 1 << 0
	iapc8042          = 1 << 1
	iapcVGANotPresent = 1 << 2
)

// buildFADT: Fixed ACPI Description Table (§5.2.9), revision 6.5.
func buildFADT(c *ACPIConfig, facs, dsdt uint64) []byte {
	le := binary.LittleEndian
	t := append(sdtHeader("FACP", 6), make([]byte, fadtSize-sdtHeaderSize)...)
	le.PutUint32(t[36:], uint32(facs))
	le.PutUint32(t[40:], uint32(dsdt))
	le.PutUint16(t[46:], uint16(c.SCIIRQ))
	// SMI_CMD = 0: no SMI command port, the machine is always in ACPI mode.
	le.PutUint32(t[56:], uint32(c.PM1aEvtPort))
	le.PutUint32(t[64:], uint32(c.PM1aCntPort))
	t[88] = 4 // PM1_EVT_LEN
	t[89] = 2 // PM1_CNT_LEN
	boot := uint16(iapcVGANotPresent)
	if c.I8042 {
		boot |= iapc8042 | iapcLegacyDevs
	}
	le.PutUint16(t[109:], boot)
	le.PutUint32(t[112:], fadtWBINVD|fadtPwrButton|fadtSlpButton|fadtResetRegSup)
	copy(t[116:], gasIO(c.ResetPort, 8, 1))
	t[128] = c.ResetValue
	t[131] = 5 // FADT minor version: ACPI 6.5
	le.PutUint64(t[132:], facs)
	le.PutUint64(t[140:], dsdt)
	copy(t[148:], gasIO(c.PM1aEvtPort, 32, 3))
	copy(t[172:], gasIO(c.PM1aCntPort, 16, 2))
	return finishSDT(t)
}

// MADT structure types (§5.2.12).
const (
	madtLAPIC    = 0
	madtIOAPIC   = 1
	madtISO      = 2
	madtLAPICNMI = 4
	// ISO flags (Table 5.26): polarity bits 1:0, trigger mode bits 3:2.
	isoActiveHigh = 1
	isoLevel      = 3 << 2
)

// buildMADT: one enabled Local APIC per CPU, the IOAPIC (id = NCPUs, GSI
// base 0), overrides IRQ0 → GSI2 and the SCI (level, active high), and LINT1
// as NMI on every processor.
func buildMADT(c *ACPIConfig) []byte {
	le := binary.LittleEndian
	t := sdtHeader("APIC", 5)
	t = le.AppendUint32(t, uint32(c.LAPICAddr))
	flags := uint32(1) // PCAT_COMPAT
	if c.NoPIC {
		flags = 0
	}
	t = le.AppendUint32(t, flags)
	for i := 0; i < c.NCPUs; i++ {
		t = append(t, madtLAPIC, 8, byte(i), byte(i))
		t = le.AppendUint32(t, 1) // enabled
	}
	t = append(t, madtIOAPIC, 12, byte(c.NCPUs), 0)
	t = le.AppendUint32(t, uint32(c.IOAPICAddr))
	t = le.AppendUint32(t, 0)
	t = append(t, madtISO, 10, 0, 0)
	t = le.AppendUint32(t, 2)
	t = le.AppendUint16(t, 0) // conforms to the ISA bus: edge, high
	t = append(t, madtISO, 10, 0, c.SCIIRQ)
	t = le.AppendUint32(t, uint32(c.SCIIRQ))
	t = le.AppendUint16(t, isoActiveHigh|isoLevel)
	t = append(t, madtLAPICNMI, 6, 0xFF, 0, 0, 1) // all processors, flags 0, LINT1
	return finishSDT(t)
}

// buildMCFG: PCI Express memory-mapped configuration (PCI Firmware spec 3.2
// §4.1.2): one allocation, segment 0, buses 0..0.
func buildMCFG() []byte {
	le := binary.LittleEndian
	t := append(sdtHeader("MCFG", 1), make([]byte, 8)...)
	t = le.AppendUint64(t, uint64(ECAMBase))
	t = le.AppendUint16(t, 0)
	t = append(t, 0, 0, 0, 0, 0, 0)
	return finishSDT(t)
}

// buildDSDT: \_S5 for power-off, the serial ports, and optionally the PCI
// host bridge and the ECAM reservation.
func buildDSDT(c *ACPIConfig) []byte {
	t := sdtHeader("DSDT", 2) // revision 2: 64-bit AML integers
	// \_S5: SLP_TYP values for PM1a and PM1b, two reserved (§7.4.2).
	t = append(t, AMLName(`\_S5`, AMLPackage(AMLInt(SlpTypS5), AMLInt(SlpTypS5), AMLInt(0), AMLInt(0)))...)
	var devs []AML
	for i, s := range c.Serial {
		devs = append(devs, AMLDevice(fmt.Sprintf("COM%d", i+1),
			AMLName("_HID", AMLEisaID("PNP0501")),
			AMLName("_UID", AMLInt(uint64(i+1))),
			AMLName("_CRS", ResourceTemplate(ResIO(s.Port, 8), ResIRQ(s.IRQ)))))
	}
	if c.PVPanicPort != 0 {
		devs = append(devs, AMLDevice("PEVT",
			AMLName("_HID", AMLString("QEMU0001")),
			AMLName("_CRS", ResourceTemplate(ResIO(c.PVPanicPort, 1)))))
	}
	if c.PCI {
		devs = append(devs, AMLDevice("PCI0",
			AMLName("_HID", AMLEisaID("PNP0A08")),
			AMLName("_CID", AMLEisaID("PNP0A03")),
			AMLName("_ADR", AMLInt(0)),
			AMLName("_SEG", AMLInt(0)),
			AMLName("_BBN", AMLInt(0)),
			AMLName("_UID", AMLInt(0)),
			pciRoutingTable(c.PCIIRQ),
			AMLName("_CRS", ResourceTemplate(
				ResWordBusNumber(0, 0),
				ResIO(0xCF8, 8),
				ResWordIO(0x0000, 0x0CF7),
				ResWordIO(0x0D00, 0xFFFF),
				ResDWordMemory(uint32(PCIMMIOStart), uint32(PCIMMIOEnd-1))))))
	}
	if c.ECAM {
		devs = append(devs, AMLDevice("MRES",
			AMLName("_HID", AMLEisaID("PNP0C02")),
			AMLName("_UID", AMLInt(0)),
			AMLName("_CRS", ResourceTemplate(ResMemory32Fixed(uint32(ECAMBase), ECAMSize)))))
	}
	if len(devs) > 0 {
		t = append(t, AMLScope(`\_SB`, devs...)...)
	}
	return finishSDT(t)
}

// pciRoutingTable is _PRT (ACPI 6.x §6.2.13): for each slot 1..31 and pin
// A..D, Package{address (slot<<16 | 0xFFFF: any function), pin, source 0
// (a GSI, not a link device), GSI}. No table when gsi is 0.
func pciRoutingTable(gsi uint8) AML {
	if gsi == 0 {
		return nil
	}
	var entries []AML
	for slot := uint64(1); slot < 32; slot++ {
		for pin := uint64(0); pin < 4; pin++ {
			entries = append(entries, AMLPackage(AMLInt(slot<<16|0xffff), AMLInt(pin), AMLInt(0), AMLInt(uint64(gsi))))
		}
	}
	return AMLName("_PRT", AMLPackage(entries...))
}

// ReadACPITables follows the RSDP at rsdp through the XSDT (and the FADT to
// the DSDT and FACS) and returns every table by signature, checking each
// checksum and length. The VMM uses it for diagnostics, the tests to parse
// what WriteACPI wrote.
func ReadACPITables(mem Memory, rsdp memory.GPA) (map[string][]byte, error) {
	le := binary.LittleEndian
	r := make([]byte, rsdpSize)
	if err := mem.Read(rsdp, r); err != nil {
		return nil, fmt.Errorf("read RSDP: %w", err)
	}
	if string(r[:8]) != "RSD PTR " {
		return nil, fmt.Errorf("RSDP: bad signature %q", r[:8])
	}
	if acpiChecksum(r[:20]) != 0 || acpiChecksum(r) != 0 {
		return nil, fmt.Errorf("RSDP: bad checksum")
	}
	out := map[string][]byte{"RSDP": r}
	readSDT := func(addr uint64) ([]byte, error) {
		h := make([]byte, sdtHeaderSize)
		if err := mem.Read(memory.GPA(addr), h); err != nil {
			return nil, fmt.Errorf("read table header at %#x: %w", addr, err)
		}
		n := le.Uint32(h[4:])
		if n < sdtHeaderSize || n > 1<<20 {
			return nil, fmt.Errorf("table %q at %#x: bad length %d", h[:4], addr, n)
		}
		t := make([]byte, n)
		if err := mem.Read(memory.GPA(addr), t); err != nil {
			return nil, fmt.Errorf("read table %q at %#x: %w", h[:4], addr, err)
		}
		if acpiChecksum(t) != 0 {
			return nil, fmt.Errorf("table %q at %#x: bad checksum", h[:4], addr)
		}
		out[string(t[:4])] = t
		return t, nil
	}
	x, err := readSDT(le.Uint64(r[24:]))
	if err != nil {
		return nil, err
	}
	rs, err := readSDT(uint64(le.Uint32(r[16:])))
	if err != nil {
		return nil, err
	}
	if (len(x)-sdtHeaderSize)/8 != (len(rs)-sdtHeaderSize)/4 {
		return nil, fmt.Errorf("XSDT lists %d tables, RSDT %d", (len(x)-sdtHeaderSize)/8, (len(rs)-sdtHeaderSize)/4)
	}
	for i := sdtHeaderSize; i+8 <= len(x); i += 8 {
		if uint32(le.Uint64(x[i:])) != le.Uint32(rs[sdtHeaderSize+(i-sdtHeaderSize)/2:]) {
			return nil, fmt.Errorf("XSDT and RSDT entry %d differ", (i-sdtHeaderSize)/8)
		}
		if _, err := readSDT(le.Uint64(x[i:])); err != nil {
			return nil, err
		}
	}
	if f, ok := out["FACP"]; ok && len(f) >= 148 {
		if _, err := readSDT(le.Uint64(f[140:])); err != nil {
			return nil, fmt.Errorf("FADT X_DSDT: %w", err)
		}
		facs := make([]byte, facsSize)
		if err := mem.Read(memory.GPA(le.Uint64(f[132:])), facs); err != nil {
			return nil, fmt.Errorf("read FACS: %w", err)
		}
		out["FACS"] = facs
	}
	return out, nil
}
