// Package vmtest runs tests inside guests of this VMM from `go test`: the
// in-kernel KUnit suites of a Linux kernel, Go test binaries in guest
// userspace, or any boot whose outcome a test asserts on. It is meant to be
// imported by other Go projects (see docs/vmtest.md), in the spirit of
// u-root's hugelgupf/vmtest but with the VMM in-process instead of QEMU.
//
// It owns the harness: Options → a vmm.Machine booting Linux, the guest
// console in the test log line by line, a deadline with a vCPU dump, the
// mapping of the machine's outcome (power-off, reboot, panic, timeout) to
// pass or fail, artifacts kept on failure (console.log, result.txt,
// stats.txt, ktap.json, test-output.txt) in a directory named in the
// failure message, and initramfs assembly from host files (through
// internal/guestimage, the logic of scripts/mkinitramfs).
//
//   - Run(t, Options) boots and fails t unless the guest ends as wanted.
//   - KUnit(t, KUnitOptions) boots with kunit.enable=1
//     kunit_shutdown=poweroff [kunit.filter_glob=...], parses the KTAP
//     (vmm/vmtest/ktap) and reports each suite and case as a subtest; ExpectFail
//     declares cases that must fail, ResultsOnly returns the results for
//     the caller to assert on.
//   - GoTest(t, GoTestOptions) builds `go test -c`, runs it under the
//     guest agent (scripts/guest-agent) and reads its framed result
//     (vmm/vmtest/proto) from the console. Guest userspace needs hardware
//     virtualization: on hosts that emulate guest kernel mode it skips.
//   - Boot and RunKUnit are the same without a testing.T (`vmm kunit`).
//
// Every call builds its own machine, so parallel tests boot parallel
// guests. Tests skip only when the KVM device is absent (kvm/kvmtest).
package vmtest
