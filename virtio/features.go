package virtio

// Device-independent feature bits (virtio 1.2 §6 "Reserved Feature Bits").
const (
	FIndirectDesc   uint64 = 1 << 28 // VIRTIO_F_INDIRECT_DESC (§2.7.5.3)
	FRingEventIdx   uint64 = 1 << 29 // VIRTIO_F_EVENT_IDX (§2.7.7, §2.7.10)
	FVersion1       uint64 = 1 << 32 // VIRTIO_F_VERSION_1
	FAccessPlatform uint64 = 1 << 33 // VIRTIO_F_ACCESS_PLATFORM
	FRingPacked     uint64 = 1 << 34 // VIRTIO_F_RING_PACKED (not offered)
	FInOrder        uint64 = 1 << 35 // VIRTIO_F_IN_ORDER (not offered)
)

// CommonFeatures are the transport/ring features every device here offers
// in addition to its own: modern interface, event index, indirect tables.
const CommonFeatures = FVersion1 | FRingEventIdx | FIndirectDesc

// DeviceType is the virtio device ID (§5).
type DeviceType uint16

// Device IDs (virtio 1.2 §5).
const (
	TypeNet     DeviceType = 1
	TypeBlock   DeviceType = 2
	TypeConsole DeviceType = 3
	TypeRNG     DeviceType = 4
	TypeVsock   DeviceType = 19
)

func (t DeviceType) String() string {
	switch t {
	case TypeNet:
		return "net"
	case TypeBlock:
		return "block"
	case TypeConsole:
		return "console"
	case TypeRNG:
		return "rng"
	case TypeVsock:
		return "vsock"
	}
	return "type" + itoa(uint64(t))
}

func itoa(v uint64) string {
	if v == 0 {
		return "0"
	}
	var b [20]byte
	i := len(b)
	for v > 0 {
		i--
		b[i] = byte('0' + v%10)
		v /= 10
	}
	return string(b[i:])
}
