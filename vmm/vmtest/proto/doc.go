// Package proto is the line protocol between vmtest's guest agent
// (scripts/guest-agent, /init of a Go-test guest) and the host side in
// vmm/vmtest. It owns the frame format and nothing else; it imports only
// the standard library so the agent stays tiny.
//
// The agent writes, on the serial console, whole lines of the form
//
//	VMTEST-BEGIN: v1
//	VMTEST-OUT: <one line of the test binary's stdout/stderr>
//	VMTEST-RESULT: exit=<decimal exit code>
//
// then powers the guest off. Kernel messages share the console, so frames
// are told apart by their prefix; everything else on the console is kernel
// noise to the host. A frame line may be preceded by a CR or by kernel text
// that interrupted it: the decoder looks for the prefix anywhere in a line.
package proto
