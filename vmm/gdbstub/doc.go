// Package gdbstub is a GDB remote-serial-protocol server for the VMM: it
// lets `gdb` (target remote) debug a guest as a multi-threaded process
// whose threads are the vCPUs.
//
// It owns the protocol (GDB manual, appendix "GDB Remote Serial Protocol"):
// packet framing, checksums and acknowledgements, QStartNoAckMode, the
// amd64 target description served through qXfer:features:read, register
// and memory access, software and hardware breakpoints and watchpoints
// (Z0..Z4), all-stop execution control (c, s, vCont, Ctrl-C), thread
// queries, detach and kill. It also owns the pure x86 helpers a KVM
// implementation needs: the DR7 encoding of four debug-register slots,
// decoding a KVM_EXIT_DEBUG into a stop event, and the bookkeeping of
// int3 software breakpoints.
//
// It imports neither vmm nor kvm. The VMM implements Target over its
// vCPUs and calls Server.Notify when a vCPU stops; see Target for how each
// method maps onto KVM ioctls.
//
// Execution model: all-stop. When any vCPU stops (breakpoint, step,
// watchpoint) the server stops all of them through Target.Stop before
// reporting. Stops that raced with the first one are kept and reported on
// the next resume, as gdbserver does. Breakpoints and watchpoints belong to
// the client: they are removed when it detaches or disconnects. Detach
// ('D') resumes the guest; a dropped connection leaves it as it was
// (stopped or running) for the next client.
package gdbstub
