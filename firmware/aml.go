package firmware

import (
	"encoding/binary"
	"fmt"
)

// A tiny AML encoder for the DSDT (ACPI 6.5 §20.2 "AML Grammar Definition"),
// covering what the project needs: names, integers, strings, packages,
// buffers (resource templates), scopes, devices and EISA IDs.

// AML opcodes (§20.2.5).
const (
	amlZeroOp       = 0x00
	amlOneOp        = 0x01
	amlNameOp       = 0x08
	amlBytePrefix   = 0x0A
	amlWordPrefix   = 0x0B
	amlDWordPrefix  = 0x0C
	amlStringPrefix = 0x0D
	amlQWordPrefix  = 0x0E
	amlScopeOp      = 0x10
	amlBufferOp     = 0x11
	amlPackageOp    = 0x12
	amlMethodOp     = 0x14
	amlReturnOp     = 0xA4
	amlExtOpPrefix  = 0x5B
	amlDeviceOp     = 0x82 // after ExtOpPrefix
	amlRootChar     = '\\'
	amlDualName     = 0x2E
	amlMultiName    = 0x2F
)

// AML is an encoded term.
type AML []byte

// amlPkgLength encodes a PkgLength (§20.2.4) for a body of n bytes; the
// encoded length counts the PkgLength bytes themselves.
func amlPkgLength(n int) []byte {
	for extra := 0; extra <= 3; extra++ {
		total := n + 1 + extra
		switch {
		case extra == 0 && total < 0x40:
			return []byte{byte(total)}
		case extra > 0 && total < 1<<(4+8*extra):
			b := []byte{byte(extra<<6 | total&0xf)}
			for i := 0; i < extra; i++ {
				b = append(b, byte(total>>(4+8*i)))
			}
			return b
		}
	}
	panic(fmt.Sprintf("firmware: AML package of %d bytes exceeds the 28-bit PkgLength", n))
}

// amlNameString encodes a name path such as `\_SB_.COM1`, `_S5_` or `\_S5`
// (segments shorter than 4 characters are padded with '_').
func amlNameString(path string) []byte {
	var out []byte
	for len(path) > 0 && (path[0] == '\\' || path[0] == '^') {
		out = append(out, path[0])
		path = path[1:]
	}
	var segs [][]byte
	start := 0
	for i := 0; i <= len(path); i++ {
		if i == len(path) || path[i] == '.' {
			s := []byte(path[start:i])
			if len(s) == 0 || len(s) > 4 {
				panic(fmt.Sprintf("firmware: bad AML name segment %q", s))
			}
			for len(s) < 4 {
				s = append(s, '_')
			}
			segs = append(segs, s)
			start = i + 1
		}
	}
	switch len(segs) {
	case 1:
	case 2:
		out = append(out, amlDualName)
	default:
		out = append(out, amlMultiName, byte(len(segs)))
	}
	for _, s := range segs {
		out = append(out, s...)
	}
	return out
}

// AMLInt encodes an integer with the shortest prefix.
func AMLInt(v uint64) AML {
	switch {
	case v == 0:
		return AML{amlZeroOp}
	case v == 1:
		return AML{amlOneOp}
	case v <= 0xff:
		return AML{amlBytePrefix, byte(v)}
	case v <= 0xffff:
		return binary.LittleEndian.AppendUint16(AML{amlWordPrefix}, uint16(v))
	case v <= 0xffffffff:
		return binary.LittleEndian.AppendUint32(AML{amlDWordPrefix}, uint32(v))
	}
	return binary.LittleEndian.AppendUint64(AML{amlQWordPrefix}, v)
}

// AMLString encodes an ASCII string constant.
func AMLString(s string) AML {
	return append(append(AML{amlStringPrefix}, s...), 0)
}

// AMLName encodes Name(path, value).
func AMLName(path string, value AML) AML {
	return append(append(AML{amlNameOp}, amlNameString(path)...), value...)
}

// AMLPackage encodes Package(){elems...}.
func AMLPackage(elems ...AML) AML {
	body := []byte{byte(len(elems))}
	for _, e := range elems {
		body = append(body, e...)
	}
	return append(append(AML{amlPackageOp}, amlPkgLength(len(body))...), body...)
}

// AMLBuffer encodes Buffer(){data}.
func AMLBuffer(data []byte) AML {
	body := append([]byte(AMLInt(uint64(len(data)))), data...)
	return append(append(AML{amlBufferOp}, amlPkgLength(len(body))...), body...)
}

func amlBlock(op []byte, path string, prefix []byte, terms []AML) AML {
	body := append(amlNameString(path), prefix...)
	for _, t := range terms {
		body = append(body, t...)
	}
	return append(append(AML(op), amlPkgLength(len(body))...), body...)
}

// AMLScope encodes Scope(path){terms}.
func AMLScope(path string, terms ...AML) AML {
	return amlBlock([]byte{amlScopeOp}, path, nil, terms)
}

// AMLDevice encodes Device(path){terms}.
func AMLDevice(path string, terms ...AML) AML {
	return amlBlock([]byte{amlExtOpPrefix, amlDeviceOp}, path, nil, terms)
}

// AMLMethodReturn encodes Method(path, 0){Return(value)}.
func AMLMethodReturn(path string, value AML) AML {
	return amlBlock([]byte{amlMethodOp}, path, []byte{0}, []AML{append(AML{amlReturnOp}, value...)})
}

// AMLEisaID encodes EisaId("PNP0501") (§19.6.35): three 5-bit letters and
// four hex digits packed big-endian into a DWORD.
func AMLEisaID(id string) AML {
	if len(id) != 7 {
		panic(fmt.Sprintf("firmware: EISA ID %q is not 7 characters", id))
	}
	c := func(i int) uint32 { return uint32(id[i]-'@') & 0x1f }
	hex := func(i int) uint32 {
		b := id[i]
		switch {
		case b >= '0' && b <= '9':
			return uint32(b - '0')
		case b >= 'A' && b <= 'F':
			return uint32(b - 'A' + 10)
		}
		panic(fmt.Sprintf("firmware: EISA ID %q has a non-hex product digit", id))
	}
	b0 := byte(c(0)<<2 | c(1)>>3)
	b1 := byte(c(1)<<5 | c(2))
	b2 := byte(hex(3)<<4 | hex(4))
	b3 := byte(hex(5)<<4 | hex(6))
	return AML{amlDWordPrefix, b0, b1, b2, b3}
}

// Resource descriptors for _CRS buffers (ACPI 6.5 §6.4).

// ResIO is an I/O port descriptor (Decode16, fixed base).
func ResIO(base uint16, length uint8) []byte {
	return []byte{0x47, 0x01, byte(base), byte(base >> 8), byte(base), byte(base >> 8), 1, length}
}

// ResIRQ is an IRQ descriptor without flags (edge, active high).
func ResIRQ(irq uint8) []byte {
	m := uint16(1) << (irq & 15)
	return []byte{0x22, byte(m), byte(m >> 8)}
}

// ResWordBusNumber is a Word Address Space descriptor for a bus range.
func ResWordBusNumber(min, max uint16) []byte {
	return resWord(2, 0x0C, 0, min, max)
}

// ResWordIO is a Word Address Space descriptor for an I/O range.
func ResWordIO(min, max uint16) []byte {
	return resWord(1, 0x0C, 3, min, max) // producer, fixed min/max; entire range
}

func resWord(typ, gflags, tflags byte, min, max uint16) []byte {
	b := []byte{0x88, 13, 0, typ, gflags, tflags}
	for _, v := range []uint16{0, min, max, 0, max - min + 1} {
		b = binary.LittleEndian.AppendUint16(b, v)
	}
	return b
}

// ResDWordMemory is a DWord Address Space descriptor for a memory window
// (read/write, non-cacheable).
func ResDWordMemory(min, max uint32) []byte {
	b := []byte{0x87, 23, 0, 0, 0x0C, 0x01}
	for _, v := range []uint32{0, min, max, 0, max - min + 1} {
		b = binary.LittleEndian.AppendUint32(b, v)
	}
	return b
}

// ResourceTemplate closes descriptors with an End Tag (checksum 0 = ignore).
func ResourceTemplate(descs ...[]byte) AML {
	var b []byte
	for _, d := range descs {
		b = append(b, d...)
	}
	return AMLBuffer(append(b, 0x79, 0x00))
}

// ResMemory32Fixed is a 32-bit fixed memory range descriptor (read/write).
func ResMemory32Fixed(base, length uint32) []byte {
	b := []byte{0x86, 9, 0, 1}
	b = binary.LittleEndian.AppendUint32(b, base)
	return binary.LittleEndian.AppendUint32(b, length)
}
