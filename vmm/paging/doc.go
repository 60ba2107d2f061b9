// Package paging walks x86 guest page tables in software: it turns a guest
// virtual (linear) address into a guest physical address the way the MMU
// would, given the vCPU's CR0, CR3, CR4 and EFER, and records every entry it
// visited so that crash reports can print "the walk of RIP".
//
// It owns only the translation logic. It reads guest memory through a
// caller-supplied function (typically (*memory.Guest).Read wrapped to take a
// uint64) and imports neither kvm nor vmm, so it is tested against page
// tables built in a byte slice.
//
// Supported modes (Intel SDM Vol. 3A, chapter 4 "Paging"):
//   - CR0.PG=0: no paging, linear == physical (§4.1.1);
//   - 32-bit paging, with 4 MiB pages when CR4.PSE=1 (PSE-36 high bits) (§4.3);
//   - PAE paging, with 2 MiB pages (§4.4);
//   - 4-level paging (IA-32e), with 1 GiB and 2 MiB pages (§4.5);
//   - 5-level paging when CR4.LA57=1 (§4.5).
//
// The walker is read-only: it never sets Accessed or Dirty bits and it does
// not enforce access rights (a debugger may write to read-only text); the
// rights are reported in Walk instead. PAE PDPTEs are read from memory at
// CR3 rather than from the processor's PDPTE registers, which only differs
// when the guest changed them without reloading CR3.
package paging
