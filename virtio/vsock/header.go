package vsock

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// HeaderSize is sizeof(struct virtio_vsock_hdr) (§5.10.6).
const HeaderSize = 44

// Operations (§5.10.6).
const (
	OpInvalid       = 0
	OpRequest       = 1
	OpResponse      = 2
	OpRST           = 3
	OpShutdown      = 4
	OpRW            = 5
	OpCreditUpdate  = 6
	OpCreditRequest = 7

	TypeStream = 1

	ShutdownRcv  = 1
	ShutdownSend = 2

	HostCID = 2

	// EventTransportReset is VIRTIO_VSOCK_EVENT_TRANSPORT_RESET (§5.10.6.8).
	EventTransportReset = 0
)

// Header is struct virtio_vsock_hdr.
type Header struct {
	SrcCID, DstCID   uint64
	SrcPort, DstPort uint32
	Len              uint32
	Type             uint16
	Op               uint16
	Flags            uint32
	BufAlloc         uint32
	FwdCnt           uint32
}

// ErrHeader reports an invalid packet header from the guest.
var ErrHeader = errors.New("invalid virtio_vsock_hdr")

// MaxPayload bounds one packet's payload (Linux uses 64 KiB buffers).
const MaxPayload = 64 << 10

// ParseHeader decodes a guest packet header and checks it against the
// payload bytes that follow it in the chain (§5.10.6.1).
func ParseHeader(b []byte, payload uint32, guestCID uint64) (Header, error) {
	if len(b) < HeaderSize {
		return Header{}, fmt.Errorf("%w: %d bytes", ErrHeader, len(b))
	}
	le := binary.LittleEndian
	h := Header{
		SrcCID: le.Uint64(b[0:]), DstCID: le.Uint64(b[8:]),
		SrcPort: le.Uint32(b[16:]), DstPort: le.Uint32(b[20:]),
		Len: le.Uint32(b[24:]), Type: le.Uint16(b[28:]), Op: le.Uint16(b[30:]),
		Flags: le.Uint32(b[32:]), BufAlloc: le.Uint32(b[36:]), FwdCnt: le.Uint32(b[40:]),
	}
	switch {
	case h.SrcCID != guestCID:
		return h, fmt.Errorf("%w: src_cid %d is not the guest's %d", ErrHeader, h.SrcCID, guestCID)
	case h.DstCID != HostCID:
		return h, fmt.Errorf("%w: dst_cid %d is not the host", ErrHeader, h.DstCID)
	case h.Len > MaxPayload || h.Len > payload:
		return h, fmt.Errorf("%w: len %d with %d payload bytes", ErrHeader, h.Len, payload)
	case h.Op == OpInvalid || h.Op > OpCreditRequest:
		return h, fmt.Errorf("%w: op %d", ErrHeader, h.Op)
	case h.Op != OpRW && h.Len != 0:
		return h, fmt.Errorf("%w: op %d with payload", ErrHeader, h.Op)
	case h.Op == OpShutdown && h.Flags&^(ShutdownRcv|ShutdownSend) != 0:
		return h, fmt.Errorf("%w: shutdown flags %#x", ErrHeader, h.Flags)
	}
	return h, nil
}

// Marshal encodes h into b (at least HeaderSize bytes).
func (h Header) Marshal(b []byte) {
	le := binary.LittleEndian
	le.PutUint64(b[0:], h.SrcCID)
	le.PutUint64(b[8:], h.DstCID)
	le.PutUint32(b[16:], h.SrcPort)
	le.PutUint32(b[20:], h.DstPort)
	le.PutUint32(b[24:], h.Len)
	le.PutUint16(b[28:], h.Type)
	le.PutUint16(b[30:], h.Op)
	le.PutUint32(b[32:], h.Flags)
	le.PutUint32(b[36:], h.BufAlloc)
	le.PutUint32(b[40:], h.FwdCnt)
}
