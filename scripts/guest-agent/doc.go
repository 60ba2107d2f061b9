// Command guest-agent is the /init of a vmtest Go-test guest (started by
// the kernel as rdinit=/vmtest/agent; see vmm/vmtest.GoTest).
//
// It mounts /proc, /sys, /dev and /tmp, runs /vmtest/test (a binary built
// with `go test -c`) with the arguments listed in /vmtest/args (one per
// line) and VMTEST_IN_GUEST=1 in its environment, and reports over the
// serial console in the framed line protocol of vmm/vmtest/proto:
//
//	VMTEST-BEGIN: v1
//	VMTEST-OUT: <each line the test printed>
//	VMTEST-RESULT: exit=<code>
//
// then powers the guest off. The exit code is the test binary's, 128+n if
// it died of signal n, 127 if it could not be started.
//
// Guest user mode must be able to make system calls, so this only works on
// hosts with hardware virtualization (docs/host-kvm.md).
package main
