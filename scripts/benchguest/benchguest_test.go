package benchguest

import (
	"bytes"
	"context"
	"debug/elf"
	"encoding/binary"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/vmmgo/vmm/kvm/kvmtest"
	"github.com/vmmgo/vmm/vmm"
)

func needBinutils(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"as", "ld"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (binutils): %v", tool, err)
		}
	}
}

// TestELFLayout checks what the three VMMs rely on: ELF64, the PT_NOTE
// program header first (gokvm's pvh.CheckPVH stops at the first PVH note
// while walking headers in order), a XEN_ELFNOTE_PHYS32_ENTRY note (type 18,
// name "Xen") whose 32-bit descriptor is the address of _start, and one
// PT_LOAD at LoadAddr.
func TestELFLayout(t *testing.T) {
	needBinutils(t)
	for _, opt := range []Options{{Loops: 0}, {Loops: 1000, User: true}, {Idle: true}} {
		path, err := Build(context.Background(), t.TempDir(), opt)
		if err != nil {
			t.Fatal(err)
		}
		f, err := elf.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		if f.Class != elf.ELFCLASS64 || f.Machine != elf.EM_X86_64 {
			t.Fatalf("%s: class %v machine %v", opt.Name(), f.Class, f.Machine)
		}
		if len(f.Progs) < 2 || f.Progs[0].Type != elf.PT_NOTE {
			t.Fatalf("%s: first program header is not PT_NOTE: %v", opt.Name(), f.Progs)
		}
		note := make([]byte, f.Progs[0].Filesz)
		if _, err := f.Progs[0].ReadAt(note, 0); err != nil {
			t.Fatal(err)
		}
		if len(note) < 20 {
			t.Fatalf("note too short: %d bytes", len(note))
		}
		namesz, descsz, typ := binary.LittleEndian.Uint32(note), binary.LittleEndian.Uint32(note[4:]), binary.LittleEndian.Uint32(note[8:])
		if namesz != 4 || descsz != 4 || typ != 18 || !bytes.Equal(note[12:16], []byte("Xen\x00")) {
			t.Fatalf("note header namesz=%d descsz=%d type=%d name=%q", namesz, descsz, typ, note[12:16])
		}
		entry := binary.LittleEndian.Uint32(note[16:])
		syms, err := f.Symbols()
		if err != nil {
			t.Fatal(err)
		}
		var start uint64
		for _, s := range syms {
			if s.Name == "_start" {
				start = s.Value
			}
		}
		if start == 0 || uint64(entry) != start {
			t.Fatalf("PVH entry %#x, _start %#x", entry, start)
		}
		var loads int
		for _, p := range f.Progs {
			if p.Type == elf.PT_LOAD {
				loads++
				if p.Paddr != LoadAddr {
					t.Fatalf("PT_LOAD at %#x, want %#x", p.Paddr, LoadAddr)
				}
			}
		}
		if loads != 1 {
			t.Fatalf("%d PT_LOAD segments", loads)
		}
		f.Close()
	}
}

func TestBuildCachesAndValidates(t *testing.T) {
	needBinutils(t)
	dir := t.TempDir()
	a, err := Build(context.Background(), dir, Options{Loops: 7})
	if err != nil {
		t.Fatal(err)
	}
	b, err := Build(context.Background(), dir, Options{Loops: 7})
	if err != nil || a != b {
		t.Fatalf("second build: %q %v, want %q", b, err, a)
	}
	c, err := Build(context.Background(), dir, Options{Loops: 8})
	if err != nil || c == a {
		t.Fatalf("different loop count gave %q (%v)", c, err)
	}
	for _, bad := range []Options{{Loops: -1}, {Idle: true, Loops: 3}, {Idle: true, User: true}} {
		if _, err := Build(context.Background(), dir, bad); err == nil {
			t.Fatalf("Build(%+v) accepted", bad)
		}
	}
}

// TestBootsInOurVMM boots each looping variant with the vmm package (as
// `vmm boot --kernel` does) and checks the serial output is exactly the two
// markers, that the guest powered off, and that the exit count grows with
// Loops.
func TestBootsInOurVMM(t *testing.T) {
	needBinutils(t)
	kvmtest.Open(t)
	dir := t.TempDir()
	for _, opt := range []Options{{Loops: 0}, {Loops: 2000}, {Loops: 2000, User: true}} {
		t.Run(opt.Name(), func(t *testing.T) {
			path, err := Build(context.Background(), dir, opt)
			if err != nil {
				t.Fatal(err)
			}
			kernel, err := readFile(path)
			if err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			cfg := vmm.DefaultConfig()
			cfg.Memory = 64 << 20
			cfg.Console = &out
			cfg.Timeout = 60 * time.Second
			m, err := vmm.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			if _, err := m.LoadLinux(vmm.LinuxConfig{Kernel: kernel}); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			res, err := m.Run(ctx)
			if err != nil {
				t.Fatalf("run: %v\n%s", err, m.DumpState())
			}
			if res.Outcome != vmm.OutcomePowerOff {
				t.Fatalf("outcome %v, want power-off\n%s", res.Outcome, m.DumpState())
			}
			if got := out.Bytes(); !bytes.Equal(got, []byte{Marker, EndMarker}) {
				t.Fatalf("serial output %q, want %q", got, []byte{Marker, EndMarker})
			}
			// Marker, the loop, EndMarker, 0xf4 and the ACPI write: each one
			// port-I/O exit.
			io := m.Stats()["KVM_EXIT_IO"]
			if want := uint64(opt.Loops) + 4; io != want {
				t.Fatalf("%d I/O exits, want %d (counters %v)", io, want, m.Stats())
			}
		})
	}
}

func readFile(p string) ([]byte, error) { return os.ReadFile(p) }
