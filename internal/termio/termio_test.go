package termio

import (
	"fmt"
	"os"
	"reflect"
	"testing"

	"golang.org/x/sys/unix"
)

// openPTY returns the master and slave of a new pseudo-terminal.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	fd := int(m.Fd())
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		t.Fatalf("unlockpt: %v", err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("ptsname: %v", err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open slave: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return m, s
}

func TestMakeRawRestoresPTY(t *testing.T) {
	_, s := openPTY(t)
	fd := int(s.Fd())
	if !IsTerminal(fd) {
		t.Fatal("pty slave is not a terminal")
	}
	before, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	if before.Lflag&unix.ICANON == 0 || before.Lflag&unix.ECHO == 0 {
		t.Fatalf("fresh pty not in cooked mode: lflag %#x", before.Lflag)
	}
	restore, err := MakeRaw(fd)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	if raw.Lflag&(unix.ICANON|unix.ECHO|unix.ISIG|unix.IEXTEN) != 0 {
		t.Errorf("raw lflag %#x still has ICANON/ECHO/ISIG/IEXTEN", raw.Lflag)
	}
	if raw.Iflag&(unix.ICRNL|unix.IXON) != 0 {
		t.Errorf("raw iflag %#x still has ICRNL/IXON", raw.Iflag)
	}
	if raw.Oflag&unix.OPOST == 0 {
		t.Errorf("OPOST cleared")
	}
	if raw.Cflag&unix.CSIZE != unix.CS8 || raw.Cc[unix.VMIN] != 1 || raw.Cc[unix.VTIME] != 0 {
		t.Errorf("cflag %#x VMIN %d VTIME %d", raw.Cflag, raw.Cc[unix.VMIN], raw.Cc[unix.VTIME])
	}
	if err := restore(); err != nil {
		t.Fatal(err)
	}
	if err := restore(); err != nil {
		t.Fatalf("second restore: %v", err)
	}
	after, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(before, after) {
		t.Fatalf("terminal mode not restored:\nbefore %+v\nafter  %+v", before, after)
	}
}

// TestRawModeBehaviour checks raw mode through the line discipline: a
// Ctrl-C and a byte without newline reach the reader at once, unechoed.
func TestRawModeBehaviour(t *testing.T) {
	m, s := openPTY(t)
	restore, err := MakeRaw(int(s.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	defer restore()
	if _, err := m.Write([]byte{0x03, 'a'}); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 8)
	n, err := s.Read(buf) // VMIN=1: returns without a newline
	if err != nil {
		t.Fatal(err)
	}
	got := buf[:n]
	if n < 2 {
		n2, err := s.Read(buf[n:])
		if err != nil {
			t.Fatal(err)
		}
		got = buf[:n+n2]
	}
	if string(got) != "\x03a" {
		t.Fatalf("slave read %q, want \\x03a (no signal, no line buffering)", got)
	}
	// Nothing was echoed back to the master: make sure by writing a
	// marker from the slave and reading it first.
	if _, err := s.Write([]byte("M")); err != nil {
		t.Fatal(err)
	}
	n, err = m.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	if string(buf[:n]) != "M" {
		t.Fatalf("master read %q: input was echoed", buf[:n])
	}
}

func TestMakeRawNotATerminal(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if IsTerminal(int(r.Fd())) {
		t.Fatal("pipe is a terminal")
	}
	restore, err := MakeRaw(int(r.Fd()))
	if err != nil {
		t.Fatalf("MakeRaw on a pipe: %v", err)
	}
	if err := restore(); err != nil {
		t.Fatal(err)
	}
	if _, err := MakeRaw(-1); err == nil {
		t.Fatal("MakeRaw(-1) succeeded")
	}
}
