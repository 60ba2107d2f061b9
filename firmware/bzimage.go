package firmware

import (
	"encoding/binary"
	"fmt"
)

// Offsets of the setup header in a bzImage and in boot_params
// (Documentation/arch/x86/boot.rst, "The Real-Mode Kernel Header").
const (
	hdrStart          = 0x1F1
	offSetupSects     = 0x1F1
	offBootFlag       = 0x1FE
	offJump           = 0x200
	offHeaderMagic    = 0x202
	offVersion        = 0x206
	offTypeOfLoader   = 0x210
	offLoadflags      = 0x211
	offCode32Start    = 0x214
	offRamdiskImage   = 0x218
	offRamdiskSize    = 0x21C
	offHeapEndPtr     = 0x224
	offCmdLinePtr     = 0x228
	offInitrdAddrMax  = 0x22C
	offKernelAlign    = 0x230
	offRelocatable    = 0x234
	offXLoadflags     = 0x236
	offCmdlineSize    = 0x238
	offPayloadOffset  = 0x248
	offPayloadLength  = 0x24C
	offPrefAddress    = 0x258
	offInitSize       = 0x260
	hdrMaxEnd         = 0x290      // boot_params reserves 0x1F1..0x290 for the header
	hdrMagic          = 0x53726448 // "HdrS"
	bootFlagMagic     = 0xAA55
	minProtocol64     = 0x0206
	defaultInitrdMax  = 0x37FFFFFF // initrd_addr_max before protocol 2.03
	defaultSetupSects = 4
)

// loadflags and xloadflags bits (boot.rst).
const (
	LoadflagLoadedHigh    = 0x01
	LoadflagKeepSegs      = 0x40
	LoadflagCanUseHeap    = 0x80
	XLFKernel64           = 0x01 // 64-bit entry at load address + 0x200
	XLFCanBeLoadedAbove4G = 0x02
)

// SetupHeader is the part of the bzImage header the loader uses.
type SetupHeader struct {
	SetupSects      uint8
	BootFlag        uint16
	Version         uint16 // boot protocol version, e.g. 0x020F
	Loadflags       uint8
	Code32Start     uint32
	InitrdAddrMax   uint32
	KernelAlignment uint32
	Relocatable     bool
	XLoadflags      uint16
	CmdlineSize     uint32
	PayloadOffset   uint32
	PayloadLength   uint32
	PrefAddress     uint64
	InitSize        uint32
	// Raw is the header as found in the file, from 0x1F1 to its end
	// (0x202 + the byte at 0x201), copied into boot_params.
	Raw []byte
}

// BzImage is a parsed bzImage.
type BzImage struct {
	Header SetupHeader
	// Kernel is the protected-mode kernel: the file from (setup_sects+1)*512.
	Kernel []byte
}

func le16(b []byte, off int) uint16 { return binary.LittleEndian.Uint16(b[off:]) }
func le32(b []byte, off int) uint32 { return binary.LittleEndian.Uint32(b[off:]) }
func le64(b []byte, off int) uint64 { return binary.LittleEndian.Uint64(b[off:]) }

// hasHdrS reports whether img carries the "HdrS" setup header magic.
func hasHdrS(img []byte) bool {
	return len(img) >= offHeaderMagic+4 && le32(img, offHeaderMagic) == hdrMagic
}

// ParseBzImage validates a bzImage for the 64-bit boot protocol: "HdrS"
// magic, protocol >= 2.06, XLF_KERNEL_64, setup and payload inside the file.
func ParseBzImage(img []byte) (*BzImage, error) {
	if len(img) < offHeaderMagic+4 {
		return nil, fmt.Errorf("bzImage: file of %d bytes too short for a setup header (need %d)", len(img), offHeaderMagic+4)
	}
	if m := le32(img, offHeaderMagic); m != hdrMagic {
		return nil, fmt.Errorf("bzImage: header magic %#08x, want %#08x (\"HdrS\")", m, hdrMagic)
	}
	if len(img) < offVersion+2 {
		return nil, fmt.Errorf("bzImage: file of %d bytes ends inside the setup header (before the version at %#x)", len(img), offVersion)
	}
	var h SetupHeader
	h.Version = le16(img, offVersion)
	h.BootFlag = le16(img, offBootFlag)
	if h.Version < minProtocol64 {
		return nil, fmt.Errorf("bzImage: boot protocol %d.%02d too old, need 2.06 or later for 64-bit entry",
			h.Version>>8, h.Version&0xff)
	}
	hdrEnd := offHeaderMagic + int(img[offJump+1])
	if hdrEnd > hdrMaxEnd {
		hdrEnd = hdrMaxEnd
	}
	if hdrEnd < offInitSize+4 && h.Version >= 0x020A {
		// Protocol 2.10 defines fields up to init_size; the jump must cover them.
		return nil, fmt.Errorf("bzImage: setup header ends at %#x, before init_size at %#x required by protocol %d.%02d",
			hdrEnd, offInitSize, h.Version>>8, h.Version&0xff)
	}
	if hdrEnd < offCmdlineSize+4 {
		return nil, fmt.Errorf("bzImage: setup header ends at %#x, before cmdline_size at %#x", hdrEnd, offCmdlineSize)
	}
	if len(img) < hdrEnd {
		return nil, fmt.Errorf("bzImage: setup header ends at %#x beyond file size %d", hdrEnd, len(img))
	}
	h.Raw = append([]byte(nil), img[hdrStart:hdrEnd]...)
	h.SetupSects = img[offSetupSects]
	h.Loadflags = img[offLoadflags]
	h.Code32Start = le32(img, offCode32Start)
	h.InitrdAddrMax = le32(img, offInitrdAddrMax)
	h.KernelAlignment = le32(img, offKernelAlign)
	h.Relocatable = img[offRelocatable] != 0
	h.XLoadflags = le16(img, offXLoadflags)
	h.CmdlineSize = le32(img, offCmdlineSize)
	if hdrEnd >= offPayloadLength+4 {
		h.PayloadOffset = le32(img, offPayloadOffset)
		h.PayloadLength = le32(img, offPayloadLength)
	}
	if hdrEnd >= offInitSize+4 {
		h.PrefAddress = le64(img, offPrefAddress)
		h.InitSize = le32(img, offInitSize)
	}
	if h.XLoadflags&XLFKernel64 == 0 {
		return nil, fmt.Errorf("bzImage: xloadflags %#x lacks XLF_KERNEL_64: no 64-bit entry point", h.XLoadflags)
	}
	if h.Loadflags&LoadflagLoadedHigh == 0 {
		return nil, fmt.Errorf("bzImage: loadflags %#x lacks LOADED_HIGH: zImage (low-loaded) kernels are not supported", h.Loadflags)
	}
	if h.KernelAlignment != 0 && h.KernelAlignment&(h.KernelAlignment-1) != 0 {
		return nil, fmt.Errorf("bzImage: kernel_alignment %#x is not a power of two", h.KernelAlignment)
	}
	if h.CmdlineSize == 0 {
		return nil, fmt.Errorf("bzImage: cmdline_size is 0")
	}
	sects := int(h.SetupSects)
	if sects == 0 {
		sects = defaultSetupSects
	}
	kstart := (sects + 1) * 512
	if kstart >= len(img) {
		return nil, fmt.Errorf("bzImage: setup_sects %d puts the protected-mode kernel at %d, beyond file size %d",
			h.SetupSects, kstart, len(img))
	}
	if h.PayloadLength != 0 {
		end := uint64(kstart) + uint64(h.PayloadOffset) + uint64(h.PayloadLength)
		if end > uint64(len(img)) {
			return nil, fmt.Errorf("bzImage: payload [%#x +%#x) beyond protected-mode kernel of %d bytes",
				h.PayloadOffset, h.PayloadLength, len(img)-kstart)
		}
	}
	return &BzImage{Header: h, Kernel: img[kstart:]}, nil
}

// Payload returns the compressed vmlinux inside the protected-mode kernel
// (payload_offset/payload_length, protocol 2.08+).
func (b *BzImage) Payload() ([]byte, error) {
	h := b.Header
	if h.Version < 0x0208 || h.PayloadLength == 0 {
		return nil, fmt.Errorf("bzImage: protocol %d.%02d has no payload_offset/payload_length", h.Version>>8, h.Version&0xff)
	}
	// ParseBzImage checked the bounds.
	return b.Kernel[h.PayloadOffset : uint64(h.PayloadOffset)+uint64(h.PayloadLength)], nil
}

// cmdlineLimit is the protocol's command-line limit without the NUL.
func (h *SetupHeader) cmdlineLimit() uint32 {
	if h.Version < 0x0206 {
		return CmdlineSizeOld
	}
	return h.CmdlineSize
}

// initrdMax is the highest address the initrd may occupy (inclusive).
func (h *SetupHeader) initrdMax() uint64 {
	if h.Version < 0x0203 || h.InitrdAddrMax == 0 {
		return defaultInitrdMax
	}
	return uint64(h.InitrdAddrMax)
}
