package net

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// HeaderSize is sizeof(struct virtio_net_hdr) with VERSION_1 (§5.1.6).
const HeaderSize = 12

// virtio_net_hdr flags and gso types (§5.1.6).
const (
	HdrFNeedsCsum = 1
	HdrFDataValid = 2
	HdrFRscInfo   = 4

	GSONone  = 0
	GSOTCPv4 = 1
	GSOUDP   = 3
	GSOTCPv6 = 4
	GSOUDPL4 = 5
	GSOECN   = 0x80
)

// Header is struct virtio_net_hdr.
type Header struct {
	Flags      uint8
	GSOType    uint8
	HdrLen     uint16
	GSOSize    uint16
	CsumStart  uint16
	CsumOffset uint16
	NumBuffers uint16
}

// ErrHeader reports an invalid virtio_net_hdr from the guest.
var ErrHeader = errors.New("invalid virtio_net_hdr")

// ParseHeader decodes a header and validates it against the frame length
// that follows it and the negotiated features (§5.1.6.2: the driver may
// only ask for offloads the device offered).
func ParseHeader(b []byte, frameLen int, features uint64) (Header, error) {
	if len(b) < HeaderSize {
		return Header{}, fmt.Errorf("%w: %d bytes", ErrHeader, len(b))
	}
	le := binary.LittleEndian
	h := Header{
		Flags: b[0], GSOType: b[1], HdrLen: le.Uint16(b[2:]), GSOSize: le.Uint16(b[4:]),
		CsumStart: le.Uint16(b[6:]), CsumOffset: le.Uint16(b[8:]), NumBuffers: le.Uint16(b[10:]),
	}
	if h.Flags&^(HdrFNeedsCsum|HdrFDataValid) != 0 {
		return h, fmt.Errorf("%w: flags %#x", ErrHeader, h.Flags)
	}
	if h.Flags&HdrFNeedsCsum != 0 {
		if features&FCsum == 0 {
			return h, fmt.Errorf("%w: NEEDS_CSUM without VIRTIO_NET_F_CSUM", ErrHeader)
		}
		if int(h.CsumStart)+int(h.CsumOffset)+2 > frameLen {
			return h, fmt.Errorf("%w: checksum at %d+%d beyond frame of %d", ErrHeader, h.CsumStart, h.CsumOffset, frameLen)
		}
	}
	switch h.GSOType &^ GSOECN {
	case GSONone:
		if h.GSOType&GSOECN != 0 {
			return h, fmt.Errorf("%w: ECN without GSO", ErrHeader)
		}
	case GSOTCPv4, GSOTCPv6:
		var want uint64 = FHostTSO4
		if h.GSOType&^GSOECN == GSOTCPv6 {
			want = FHostTSO6
		}
		if features&want == 0 || h.GSOType&GSOECN != 0 && features&FHostECN == 0 {
			return h, fmt.Errorf("%w: gso type %#x not negotiated", ErrHeader, h.GSOType)
		}
		if h.GSOSize == 0 || h.Flags&HdrFNeedsCsum == 0 {
			return h, fmt.Errorf("%w: TSO without gso_size or NEEDS_CSUM", ErrHeader)
		}
	default:
		return h, fmt.Errorf("%w: gso type %#x", ErrHeader, h.GSOType)
	}
	return h, nil
}

// Marshal encodes h.
func (h Header) Marshal(b []byte) {
	le := binary.LittleEndian
	b[0], b[1] = h.Flags, h.GSOType
	le.PutUint16(b[2:], h.HdrLen)
	le.PutUint16(b[4:], h.GSOSize)
	le.PutUint16(b[6:], h.CsumStart)
	le.PutUint16(b[8:], h.CsumOffset)
	le.PutUint16(b[10:], h.NumBuffers)
}
