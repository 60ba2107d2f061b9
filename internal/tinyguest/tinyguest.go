// Package tinyguest assembles small x86-64 guest programs for tests,
// benchmarks and `vmm probe` fixtures with the GNU assembler (binutils, which
// the README's set-up installs), producing flat binaries to load at a fixed
// guest physical address. Results are cached by content hash for the life of
// the process.
package tinyguest

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
)

var (
	mu    sync.Mutex
	cache = map[[32]byte][]byte{}
)

// Assemble assembles GNU-as source (AT&T syntax unless the source says
// `.intel_syntax noprefix`) linked at org and returns the flat binary. The
// source starts in 64-bit mode; it may switch with .code32/.code16.
func Assemble(src string, org uint64) ([]byte, error) {
	key := sha256.Sum256([]byte(fmt.Sprintf("%d\x00%s", org, src)))
	mu.Lock()
	if b, ok := cache[key]; ok {
		mu.Unlock()
		return b, nil
	}
	mu.Unlock()
	dir, err := os.MkdirTemp("", "tinyguest-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	s := filepath.Join(dir, "g.S")
	o := filepath.Join(dir, "g.o")
	elf := filepath.Join(dir, "g.elf")
	bin := filepath.Join(dir, "g.bin")
	if err := os.WriteFile(s, []byte(".code64\n"+src+"\n"), 0o644); err != nil {
		return nil, err
	}
	for _, args := range [][]string{
		{"as", "--64", "-o", o, s},
		{"ld", "-m", "elf_x86_64", "-static", "-nostdlib", "--no-warn-rwx-segments", "-Ttext", fmt.Sprintf("%#x", org), "-e", fmt.Sprintf("%#x", org), "-o", elf, o},
		{"objcopy", "-O", "binary", "-j", ".text", "-j", ".data", "-j", ".rodata", elf, bin},
	} {
		cmd := exec.Command(args[0], args[1:]...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil {
			if _, lerr := exec.LookPath(args[0]); lerr != nil {
				return nil, fmt.Errorf("%s not found: install binutils (apt-get install binutils): %w", args[0], lerr)
			}
			return nil, fmt.Errorf("%s: %v\n%s", args[0], err, stderr.String())
		}
	}
	b, err := os.ReadFile(bin)
	if err != nil {
		return nil, err
	}
	mu.Lock()
	cache[key] = b
	mu.Unlock()
	return b, nil
}

// EnterUserMode is the assembly that drops a raw guest (the VMM's GDT: user
// code 0x1b, user data 0x23; user-accessible identity map) from CPL0 to
// CPL3 with IOPL 3, on the given user stack, continuing at label.
// Kernel mode is emulated on hosts without VMX/SVM and user mode is not, so
// tiny guests do their loops there.
func EnterUserMode(stack uint64, label string) string {
	return fmt.Sprintf(`
	mov $%#x, %%rax        # user stack
	push $0x23             # ss
	push %%rax             # rsp
	push $0x3002           # rflags: IOPL 3
	push $0x1b             # cs: 64-bit user code
	lea %s(%%rip), %%rax
	push %%rax
	iretq
%s:
`, stack, label, label)
}
