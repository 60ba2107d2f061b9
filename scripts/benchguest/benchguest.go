package benchguest

import (
	"bytes"
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Bytes the guest writes to COM1's transmit register (port 0x3f8).
const (
	Marker    = 0x1e // first VM exit: the guest is running
	EndMarker = 0x1f // the exit loop is over; power-off follows
)

// Ports the guest uses.
const (
	PortCOM1     = 0x3f8 // start and end markers
	PortLoop     = 0x3ff // 16550 scratch register: the exit loop
	PortQEMUExit = 0xf4  // QEMU isa-debug-exit (iobase=0xf4,iosize=4)
	PortACPIPM1a = 0x604 // SLP_TYP=5|SLP_EN: our VMM's ACPI power-off
)

// LoadAddr is where guest.ld links the image (PVH loads PT_LOAD at p_paddr).
const LoadAddr = 0x100000

// MaxLoops bounds Options.Loops (a 32-bit ECX count).
const MaxLoops = 1<<31 - 1

//go:embed guest.S
var guestSource []byte

//go:embed guest.ld
var linkerScript []byte

// Options selects a guest variant.
type Options struct {
	// Loops is the number of port writes to PortLoop (VM exits) between
	// the markers.
	Loops int
	// User runs the loop at CPL3 in long mode (each `out` a full world
	// switch even where KVM emulates guest kernel mode) instead of at CPL0
	// in 32-bit protected mode.
	User bool
	// Idle halts with interrupts off after Marker instead of looping and
	// powering off (for sampling the VMM's footprint while a guest runs).
	Idle bool
}

// Name is a short file-name-safe description of the variant.
func (o Options) Name() string {
	switch {
	case o.Idle:
		return "idle"
	case o.User:
		return fmt.Sprintf("user-%d", o.Loops)
	default:
		return fmt.Sprintf("kernel-%d", o.Loops)
	}
}

func (o Options) validate() error {
	if o.Loops < 0 || o.Loops > MaxLoops {
		return fmt.Errorf("benchguest: loops %d out of range [0, %d]", o.Loops, MaxLoops)
	}
	if o.Idle && (o.User || o.Loops != 0) {
		return errors.New("benchguest: an idle guest has no loop")
	}
	return nil
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// Build assembles the variant into dir (created if missing) and returns the
// ELF's path. The file name carries a hash of the sources and options, so an
// existing file is reused.
func Build(ctx context.Context, dir string, opt Options) (string, error) {
	if err := opt.validate(); err != nil {
		return "", err
	}
	defs := []string{
		fmt.Sprintf("LOOPS=%d", opt.Loops),
		fmt.Sprintf("USER=%d", b2i(opt.User)),
		fmt.Sprintf("IDLE=%d", b2i(opt.Idle)),
	}
	h := sha256.New()
	h.Write(guestSource)
	h.Write([]byte{0})
	h.Write(linkerScript)
	h.Write([]byte(strings.Join(defs, ",")))
	out := filepath.Join(dir, fmt.Sprintf("benchguest-%s-%s.elf", opt.Name(), hex.EncodeToString(h.Sum(nil))[:12]))
	if _, err := os.Stat(out); err == nil {
		return out, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("benchguest: %w", err)
	}
	tmp, err := os.MkdirTemp(dir, ".build-")
	if err != nil {
		return "", fmt.Errorf("benchguest: %w", err)
	}
	defer os.RemoveAll(tmp)
	src := filepath.Join(tmp, "guest.S")
	lds := filepath.Join(tmp, "guest.ld")
	obj := filepath.Join(tmp, "guest.o")
	elfPath := filepath.Join(tmp, "guest.elf")
	if err := os.WriteFile(src, guestSource, 0o644); err != nil {
		return "", fmt.Errorf("benchguest: %w", err)
	}
	if err := os.WriteFile(lds, linkerScript, 0o644); err != nil {
		return "", fmt.Errorf("benchguest: %w", err)
	}
	asArgs := []string{"--64"}
	for _, d := range defs {
		asArgs = append(asArgs, "--defsym", d)
	}
	asArgs = append(asArgs, "-o", obj, src)
	steps := [][]string{
		append([]string{"as"}, asArgs...),
		{"ld", "-m", "elf_x86_64", "-static", "-nostdlib", "--no-warn-rwx-segments", "-T", lds, "-o", elfPath, obj},
	}
	for _, args := range steps {
		cmd := exec.CommandContext(ctx, args[0], args[1:]...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil {
			if _, lerr := exec.LookPath(args[0]); lerr != nil {
				return "", fmt.Errorf("benchguest: %s not found (apt-get install binutils): %w", args[0], lerr)
			}
			return "", fmt.Errorf("benchguest: %s: %w: %s", args[0], err, strings.TrimSpace(stderr.String()))
		}
	}
	if err := os.Rename(elfPath, out); err != nil {
		return "", fmt.Errorf("benchguest: %w", err)
	}
	return out, nil
}
