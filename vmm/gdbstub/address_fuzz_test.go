package gdbstub

import (
	"net"
	"testing"
)

// FuzzParseAddress: the --gdb address never panics the parser, and what it
// accepts is something net.Listen understands the shape of.
func FuzzParseAddress(f *testing.F) {
	for _, s := range []string{"tcp:127.0.0.1:1234", "tcp::0", "tcp:[::1]:1234", "unix:/tmp/gdb.sock", "unix:",
		"tcp:host", "tcp:h:99999", "udp:x:1", ":", "", "tcp:[::1:1", "unix:@abstract"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		network, addr, err := ParseAddress(s)
		if err != nil {
			return
		}
		switch network {
		case "tcp":
			if _, _, err := net.SplitHostPort(addr); err != nil {
				t.Fatalf("ParseAddress(%q) accepted tcp address %q: %v", s, addr, err)
			}
		case "unix":
			if addr == "" {
				t.Fatalf("ParseAddress(%q) accepted an empty socket path", s)
			}
		default:
			t.Fatalf("ParseAddress(%q) = network %q", s, network)
		}
	})
}
