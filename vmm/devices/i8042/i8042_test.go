package i8042

import (
	"testing"
)

type rig struct {
	t      testing.TB
	c      *Controller
	data   *Port
	cmd    *Port
	level  bool
	edges  int
	resets int
}

func newRig(t testing.TB) *rig {
	r := &rig{t: t}
	r.c = New(Options{
		Reset: func() { r.resets++ },
		IRQ1: func(l bool) {
			if l == r.level {
				t.Errorf("IRQ1 callback with unchanged level %v", l)
			}
			r.level = l
			if l {
				r.edges++
			}
		},
	})
	r.data, r.cmd = r.c.DataPort(), r.c.CommandPort()
	return r
}

func (r *rig) status() uint8 {
	var b [1]byte
	r.cmd.BusRead(0, 0, b[:])
	return b[0]
}

func (r *rig) readData() uint8 {
	var b [1]byte
	r.data.BusRead(0, 0, b[:])
	return b[0]
}

// waitWrite is Linux's i8042_wait_write: IBF must be clear.
func (r *rig) waitWrite() {
	if r.status()&strIBF != 0 {
		r.t.Fatal("IBF set: Linux would time out writing")
	}
}

// waitRead is i8042_wait_read without the 500 ms timeout: OBF must be set
// at once, or the driver would stall.
func (r *rig) waitRead() {
	if r.status()&strOBF == 0 {
		r.t.Fatal("OBF clear where Linux waits for a reply: it would time out")
	}
}

// command is Linux's __i8042_command: command, parameters, replies.
func (r *rig) command(cmd uint8, params []byte, nreply int) []byte {
	r.waitWrite()
	r.cmd.BusWrite(0, 0, []byte{cmd})
	for _, p := range params {
		r.waitWrite()
		r.data.BusWrite(0, 0, []byte{p})
	}
	var out []byte
	for range nreply {
		r.waitRead()
		out = append(out, r.readData())
	}
	return out
}

func (r *rig) flush() int {
	n := 0
	for r.status()&strOBF != 0 {
		if n++; n > 16 {
			r.t.Fatal("flush: more than I8042_BUFFER_SIZE bytes")
		}
		r.readData()
	}
	return n
}

// kbdCommand is what libps2 does for atkbd: send the byte, the reply
// arrives through IRQ 1 and the handler reads it.
func (r *rig) kbdCommand(b uint8, nreply int) []byte {
	r.waitWrite()
	r.data.BusWrite(0, 0, []byte{b})
	var out []byte
	for range nreply {
		if !r.level {
			r.t.Fatalf("keyboard reply to %#x not signalled on IRQ 1", b)
		}
		st := r.status()
		if st&strOBF == 0 || st&strAUXDATA != 0 {
			r.t.Fatalf("status %#x in the IRQ handler", st)
		}
		out = append(out, r.readData())
	}
	if r.level {
		r.t.Fatalf("IRQ 1 still high after reading the reply to %#x", b)
	}
	return out
}

func eq(a, b []byte) bool { return string(a) == string(b) }

// TestLinuxProbe replays drivers/input/serio/i8042.c and atkbd.c as
// documented in doc.go; every wait must succeed immediately.
func TestLinuxProbe(t *testing.T) {
	r := newRig(t)
	// i8042_controller_check.
	if n := r.flush(); n != 0 {
		t.Fatalf("flushed %d bytes from a fresh controller", n)
	}
	// i8042_controller_selftest (only with i8042.reset, cheap anyway).
	if got := r.command(cmdSelfTest, nil, 1); got[0] != retSelfTestOK {
		t.Fatalf("self-test = %#x", got[0])
	}
	// i8042_controller_init: two equal CTR reads.
	c1 := r.command(cmdReadCTR, nil, 1)[0]
	c2 := r.command(cmdReadCTR, nil, 1)[0]
	if c1 != c2 || c1&ctrXLATE == 0 {
		t.Fatalf("CTR reads %#x, %#x", c1, c2)
	}
	if r.status()&strKEYLOCK == 0 {
		t.Fatal("keylock active")
	}
	ctr := (c1 | ctrKBDDIS) &^ ctrKBDINT
	r.command(cmdWriteCTR, []byte{ctr}, 0)
	if got := r.command(cmdReadCTR, nil, 1)[0]; got != ctr {
		t.Fatalf("CTR = %#x after writing %#x", got, ctr)
	}
	r.flush()

	// i8042_check_aux: loop test fails at once without AUXDATA.
	r.flush()
	r.command(cmdAUXLoop, []byte{0x5A}, 0)
	r.waitRead()
	if r.status()&strAUXDATA != 0 {
		t.Fatal("AUX loop reply carries AUXDATA: the driver would find an AUX port")
	}
	// __i8042_command returns -1 ("auxerr") here without reading the byte:
	// the keyboard's 0xFE (resend, for the unknown command 0x5A) stays in
	// the buffer and becomes the reply to the AUX test, which must fail the
	// driver's check (nonzero, not 0xFA/0xFF).
	param := r.command(cmdAUXTest, nil, 1)[0]
	if param != kbdResend {
		t.Fatalf("AUX test read %#x, want the keyboard's 0xFE", param)
	}
	if r.status()&strOBF == 0 {
		t.Fatal("AUX test answer missing")
	}

	// i8042_setup_kbd: enable the port; any stale byte is drained by the
	// interrupt handler.
	ctr = (ctr &^ ctrKBDDIS) | ctrKBDINT
	r.command(cmdWriteCTR, []byte{ctr}, 0)
	for r.level {
		r.readData()
	}
	if r.status()&strOBF != 0 {
		t.Fatal("output buffer not empty after the IRQ handler ran")
	}

	// atkbd_probe / atkbd_activate.
	if got := r.kbdCommand(kbdGetID, 3); !eq(got, []byte{kbdACK, 0xAB, 0x41}) {
		t.Fatalf("GETID = % x, want fa ab 41 (translated)", got)
	}
	for _, seq := range [][]byte{{kbdDisable}, {kbdSetLEDs, 0}, {kbdSetRep, 0x2B}, {kbdEnable}} {
		for _, b := range seq {
			if got := r.kbdCommand(b, 1); got[0] != kbdACK {
				t.Fatalf("reply to %#x = %#x", b, got[0])
			}
		}
	}
	if got := r.kbdCommand(kbdReset, 2); !eq(got, []byte{kbdACK, kbdBATOK}) {
		t.Fatalf("reset = % x", got)
	}
	if got := r.kbdCommand(0x5A, 1); got[0] != kbdResend {
		t.Fatalf("unknown keyboard command reply = %#x", got[0])
	}
	if r.resets != 0 {
		t.Fatal("probe reset the machine")
	}
	if st := r.c.Stats(); st.QueueOverflows != 0 || st.BadAccesses != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestUntranslatedID(t *testing.T) {
	r := newRig(t)
	r.command(cmdWriteCTR, []byte{ctrKBDINT | ctrSYS}, 0)
	if got := r.kbdCommand(kbdGetID, 3); !eq(got, []byte{kbdACK, 0xAB, 0x83}) {
		t.Fatalf("GETID = % x", got)
	}
	if got := r.kbdCommand(kbdScanSet, 1); got[0] != kbdACK {
		t.Fatal("F0 not acked")
	}
	if got := r.kbdCommand(0, 2); !eq(got, []byte{kbdACK, 2}) {
		t.Fatalf("scancode set query = % x", got)
	}
}

func TestInterfaceTestsAndPorts(t *testing.T) {
	r := newRig(t)
	if got := r.command(cmdKbdTest, nil, 1)[0]; got != 0 {
		t.Fatalf("keyboard interface test = %#x", got)
	}
	r.command(cmdAUXEnable, nil, 0)
	if r.command(cmdReadCTR, nil, 1)[0]&ctrAUXDIS != 0 {
		t.Fatal("0xA8 did not clear AUXDIS")
	}
	r.command(cmdAUXDisable, nil, 0)
	if r.command(cmdReadCTR, nil, 1)[0]&ctrAUXDIS == 0 {
		t.Fatal("0xA7 did not set AUXDIS")
	}
	r.command(cmdKbdDisable, nil, 0)
	if r.command(cmdReadCTR, nil, 1)[0]&ctrKBDDIS == 0 {
		t.Fatal("0xAD did not set KBDDIS")
	}
	r.command(cmdKbdEnable, nil, 0)
	if r.command(cmdReadCTR, nil, 1)[0]&ctrKBDDIS != 0 {
		t.Fatal("0xAE did not clear KBDDIS")
	}
	if r.status()&strCMDDAT == 0 {
		t.Fatal("CMD/DATA status bit not set after a command")
	}
	// 0xD2 places a byte in the output buffer as if from the keyboard.
	r.command(cmdWriteKbdOB, []byte{0x42}, 0)
	if got := r.readData(); got != 0x42 {
		t.Fatalf("0xD2 echo = %#x", got)
	}
	if r.status()&strCMDDAT != 0 {
		t.Fatal("CMD/DATA status bit set after a data write")
	}
	// Reading an empty output buffer returns the last byte.
	if got := r.readData(); got != 0x42 {
		t.Fatalf("empty read = %#x", got)
	}
	// Internal RAM.
	r.command(cmdWriteCTR+5, []byte{0x99}, 0)
	if got := r.command(cmdReadCTR+5, nil, 1)[0]; got != 0x99 {
		t.Fatalf("RAM[5] = %#x", got)
	}
	// Wide and offset accesses are counted, reads give all ones past byte 0.
	b := make([]byte, 2)
	r.cmd.BusRead(0, 0, b)
	if b[1] != 0xFF {
		t.Fatalf("wide status read = % x", b)
	}
	r.data.BusWrite(0, 1, []byte{0})
	if st := r.c.Stats(); st.BadAccesses != 2 {
		t.Fatalf("BadAccesses = %d", st.BadAccesses)
	}
}

func TestReset(t *testing.T) {
	r := newRig(t)
	// Linux reboot=k: kb_wait() then outb(0xfe, 0x64).
	r.waitWrite()
	r.cmd.BusWrite(0, 0, []byte{cmdPulseReset})
	if r.resets != 1 {
		t.Fatalf("0xFE: %d resets", r.resets)
	}
	r.cmd.BusWrite(0, 0, []byte{0xFF}) // pulse nothing
	if r.resets != 1 {
		t.Fatal("0xFF reset the machine")
	}
	// Output port write with bit 0 clear.
	r.command(cmdWriteOut, []byte{0xDE}, 0)
	if r.resets != 2 {
		t.Fatalf("0xD1 0xDE: %d resets", r.resets)
	}
	r.command(cmdWriteOut, []byte{0xDF}, 0)
	if r.resets != 2 {
		t.Fatal("0xD1 0xDF reset the machine")
	}
	if got := r.command(cmdReadOutput, nil, 1)[0]; got&outResetLine == 0 || got&outA20 == 0 {
		t.Fatalf("output port = %#x", got)
	}
	if st := r.c.Stats(); st.Resets != 2 {
		t.Fatalf("Resets = %d", st.Resets)
	}
}

func TestQueueBounded(t *testing.T) {
	r := newRig(t)
	for range 40 {
		r.cmd.BusWrite(0, 0, []byte{cmdReadCTR})
	}
	if n := r.flush(); n != queueSize {
		t.Fatalf("flushed %d, want %d", n, queueSize)
	}
	if st := r.c.Stats(); st.QueueOverflows != 40-queueSize {
		t.Fatalf("QueueOverflows = %d", st.QueueOverflows)
	}
}
