package gdbstub

import (
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
)

// Framing (GDB manual, "Overview" of the Remote Serial Protocol): a packet
// is $payload#cc where cc is the modulo-256 sum of the payload bytes in two
// lower-case hex digits. The receiver answers + (good) or - (resend) until
// QStartNoAckMode. A 0x03 byte outside a packet is an interrupt request.

// maxPacket is the largest payload accepted, and advertised as PacketSize.
// Larger packets are dropped without buffering them.
const maxPacket = 0x4000

type itemKind uint8

const (
	itemPacket    itemKind = iota // a packet with a valid checksum
	itemBadPacket                 // checksum mismatch or oversized
	itemAck                       // '+'
	itemNak                       // '-'
	itemInterrupt                 // 0x03 outside a packet
)

type item struct {
	kind    itemKind
	payload []byte
}

// parser splits the client's byte stream into items. Memory is bounded by
// maxPacket.
type parser struct {
	state    int // 0 idle, 1 in payload, 2 first checksum digit, 3 second
	buf      []byte
	sum      byte
	cs       byte
	oversize bool
}

const (
	psIdle = iota
	psPayload
	psCheck1
	psCheck2
)

// feed consumes one byte and returns an item when one completes.
func (p *parser) feed(c byte) (item, bool) {
	switch p.state {
	case psIdle:
		switch c {
		case '$':
			p.state, p.buf, p.sum, p.oversize = psPayload, p.buf[:0], 0, false
		case '+':
			return item{kind: itemAck}, true
		case '-':
			return item{kind: itemNak}, true
		case 0x03:
			return item{kind: itemInterrupt}, true
		}
		// Anything else between packets is noise: ignore it.
	case psPayload:
		if c == '#' {
			p.state = psCheck1
			return item{}, false
		}
		if c == '$' {
			// A new packet start inside a packet: the previous one was
			// truncated. Restart, as gdbserver does.
			p.buf, p.sum, p.oversize = p.buf[:0], 0, false
			return item{}, false
		}
		p.sum += c
		if len(p.buf) >= maxPacket {
			p.oversize = true
		} else {
			p.buf = append(p.buf, c)
		}
	case psCheck1:
		p.cs = c
		p.state = psCheck2
	case psCheck2:
		p.state = psIdle
		want, err := strconv.ParseUint(string([]byte{p.cs, c}), 16, 8)
		if err != nil || byte(want) != p.sum || p.oversize {
			return item{kind: itemBadPacket}, true
		}
		payload := make([]byte, len(p.buf))
		copy(payload, p.buf)
		return item{kind: itemPacket, payload: payload}, true
	}
	return item{}, false
}

func checksum(p []byte) byte {
	var s byte
	for _, c := range p {
		s += c
	}
	return s
}

// frame wraps a reply payload as $payload#cc.
func frame(payload []byte) []byte {
	out := make([]byte, 0, len(payload)+4)
	out = append(out, '$')
	out = append(out, payload...)
	return fmt.Appendf(out, "#%02x", checksum(payload))
}

// escape applies binary-data escaping (GDB manual, "Overview": '#', '$',
// '}' and '*' become '}' followed by the byte xor 0x20).
func escape(dst, src []byte) []byte {
	for _, c := range src {
		switch c {
		case '#', '$', '}', '*':
			dst = append(dst, '}', c^0x20)
		default:
			dst = append(dst, c)
		}
	}
	return dst
}

var errBadEscape = errors.New("binary data ends with an escape byte")

// unescape undoes escape.
func unescape(src []byte) ([]byte, error) {
	out := make([]byte, 0, len(src))
	for i := 0; i < len(src); i++ {
		c := src[i]
		if c == '}' {
			i++
			if i == len(src) {
				return nil, errBadEscape
			}
			c = src[i] ^ 0x20
		}
		out = append(out, c)
	}
	return out, nil
}

// parseHex parses a hex number of at most 64 bits (GDB sends addresses and
// lengths in big-endian hex without a prefix).
func parseHex(s []byte) (uint64, error) {
	if len(s) == 0 || len(s) > 16 {
		return 0, fmt.Errorf("bad hex number %q", truncate(s))
	}
	v, err := strconv.ParseUint(string(s), 16, 64)
	if err != nil {
		return 0, fmt.Errorf("bad hex number %q", truncate(s))
	}
	return v, nil
}

// parseThread parses a thread-id: hex, "-1" (all) or "0" (any).
func parseThread(s []byte) (int64, error) {
	if string(s) == "-1" {
		return -1, nil
	}
	v, err := parseHex(s)
	if err != nil || v > 1<<31 {
		return 0, fmt.Errorf("bad thread id %q", truncate(s))
	}
	return int64(v), nil
}

// decodeHex decodes hex-encoded bytes (register and memory contents).
func decodeHex(s []byte) ([]byte, error) {
	out := make([]byte, hex.DecodedLen(len(s)))
	if _, err := hex.Decode(out, s); err != nil {
		return nil, fmt.Errorf("bad hex data: %w", err)
	}
	return out, nil
}

func truncate(s []byte) []byte {
	if len(s) > 32 {
		return s[:32]
	}
	return s
}
