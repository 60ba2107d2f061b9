// Package termio owns the VMM's interactive console plumbing on the host
// side: putting the controlling terminal into raw mode while a guest owns
// it (MakeRaw, restored on exit), and the QEMU-style escape sequence that
// lets the user talk to the VMM instead of the guest (EscapeFilter:
// Ctrl-A x quits, Ctrl-A s asks for a stats dump, Ctrl-A h prints help,
// Ctrl-A Ctrl-A sends one Ctrl-A to the guest).
//
// Raw mode follows cfmakeraw(3) (termios(3), "Raw mode") except that output
// post-processing (OPOST) stays on, as QEMU's stdio backend does: the
// guest's serial console already sends "\r\n", and the VMM's own log lines
// on stderr, which end in a bare "\n", still start at column 0.
package termio
