// Package pvmem is the paravirtual memory-conversion port: sixteen I/O
// ports (default base 0x0A50) through which a guest kernel asks the VMM to
// make ranges of its RAM private or shared. Conversions are accepted from
// guest kernel mode (CPL 0) only: the device asks the VMM for the
// requesting vCPU's CPL when a doorbell rings, because some hosts let guest
// user mode reach the ports whatever IOPL says. It is the transport that works on every KVM
// host, including the shadow-paging hosts where vmcall never exits (see
// docs/host-kvm.md); KVM_HC_MAP_GPA_RANGE is the other one. Both end in the one
// conversion routine, memory.Guest.Convert.
//
// Two interfaces: per-vCPU registers for one request (GPA, NPAGES, ATTRS,
// CONVERT, STATUS) and a request list in a shared page processed with one
// exit. The ABI, status codes and guest examples are in docs/pvmem.md.
// The device owns only its registers; it never touches guest memory except
// through the page-state-checked DeviceRead/DeviceWrite.
package pvmem
