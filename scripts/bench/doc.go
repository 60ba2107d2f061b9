// Command bench compares this project's VMM with QEMU, gokvm and the floor
// (floor/floor.c: raw KVM ioctls and nothing else, built with gcc in the
// run) on the same host in one run, and writes a markdown table to stdout and a PNG chart
// (docs/bench-<date>.png):
//
//	go run ./scripts/bench [-reps 5] [-linux-reps 2] [-skip-linux] ...
//
// It installs or builds the peers itself: QEMU from Debian's
// qemu-system-x86 (apt-get when missing), gokvm with `go install` at a
// pinned version into the cache directory, our VMM with `go build ./cmd/vmm`.
// QEMU's -cpu model is chosen in the run (the first of qemuCPUs that runs
// the benchmark guest: this host's KVM refuses QEMU's -cpu host MSR 0x10a).
// Every exact command line goes into the report; the run fails (exit 1,
// after printing the report) when an installed VMM produced no number for
// start-up, the CPL0 exit loop or the idle footprint.
// The guests are the PVH benchmark guest of scripts/benchguest and the
// cached guest kernel and initramfs of internal/guestimage.
//
// Workloads (docs/benchmarks.md explains each measurement):
//  1. start-up: process start to the guest's first port write appearing on
//     the VMM's stdout, and to process exit when the guest powers off at once;
//  2. exit cost: (t(N2) - t(N1)) / (N2 - N1) over guests doing N port writes,
//     with the loop at CPL0 and at CPL3;
//  3. Linux boot: process start to "Run /init" on the serial console, for
//     each of our memory backends, with the failure message of a peer that
//     does not get there;
//  4. footprint: the VMM's RSS outside the guest-RAM mapping, sampled from
//     /proc/PID/smaps while the guest runs (idle guest; at "Run /init");
//  5. memory conversion: the output of scripts/convbench when it exists.
package main
