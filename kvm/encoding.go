package kvm

import "encoding/binary"

// le is the byte order of every KVM structure on x86_64.
var le = binary.LittleEndian

// decodeLE decodes fixed-size little-endian data from b into v.
func decodeLE(b []byte, v any) (int, error) { return binary.Decode(b, le, v) }

// encodeLE encodes v into b, little-endian.
func encodeLE(b []byte, v any) (int, error) { return binary.Encode(b, le, v) }
