package vmm

import (
	"strings"
	"testing"
)

// TestDisassembleSystemOps: the hypercall instructions and their group-7
// neighbours are named in dumps; what x86asm decodes still goes through it,
// and undecodable bytes still say so.
func TestDisassembleSystemOps(t *testing.T) {
	for _, tc := range []struct {
		code []byte
		mode int
		want string
	}{
		{[]byte{0x0f, 0x01, 0xc1, 0x90}, 64, "vmcall"},
		{[]byte{0x0f, 0x01, 0xd9, 0x90}, 64, "vmmcall"},
		{[]byte{0x0f, 0x01, 0xc1}, 32, "vmcall"},
		{[]byte{0x0f, 0x01, 0xd9}, 16, "vmmcall"},
		{[]byte{0x0f, 0x01, 0xca}, 64, "clac"},
		{[]byte{0x0f, 0x01, 0xd8}, 64, "vmrun"},
		{[]byte{0x0f, 0x01, 0xf8}, 64, "swapgs"}, // x86asm's own
		{[]byte{0x0f, 0x01, 0xd0}, 64, "xgetbv"},
		{[]byte{0xf4}, 64, "hlt"},
		{[]byte{0x0f, 0x01, 0x00}, 64, "sgdt"}, // mod != 11: the memory forms stay x86asm's
		{[]byte{0x0f, 0x01, 0xee}, 64, "unrecognized instruction"},
		{[]byte{0x0f, 0x0b}, 64, "ud2"},
	} {
		if got := disassemble(tc.code, tc.mode, 0x1000); !strings.Contains(got, tc.want) {
			t.Errorf("disassemble(% x, %d) = %q, want %q", tc.code, tc.mode, got, tc.want)
		}
	}
}
