// Command guest-init is the /init of the vmm test initramfs.
//
// It is a tiny static Go program (built with CGO_ENABLED=0 by
// scripts/mkinitramfs) that turns a booted guest kernel into a test result:
//
//  1. mounts /proc, /sys and /dev (devtmpfs), and /tmp (tmpfs);
//  2. prints "VMM-GUEST-INIT: hello from userspace" on /dev/console;
//  3. runs the checks asked for on the kernel command line (vmm.sleep=,
//     vmm.mount=, vmm.cat=, vmm.portecho=, vmm.vsockecho=; see checks.go),
//     each reported as a "VMM-GUEST-INIT: <check> ..." line;
//  4. runs the command given on the kernel command line (read only when it
//     is PID 1) as
//     vmm.run=<command> (quote it when it has arguments:
//     vmm.run="ls -l /"), or else the arguments the kernel passes to init
//     after "--" on the command line;
//  5. prints "VMM-GUEST-INIT: exit <code>" (0 when nothing was run, 127 when
//     the command could not be started, 128+n when it died of signal n);
//  6. syncs and powers the machine off with reboot(LINUX_REBOOT_CMD_POWER_OFF).
//
// When it is not PID 1 (run on the host by a developer or a test, or by
// itself as vmm.run=/init) it mounts nothing, ignores /proc/cmdline and does
// not power off: it only prints the markers and runs the command given as
// its arguments, on stdout, and exits with the command's exit code.
//
// If power-off fails it says so and exits, which makes the kernel panic
// ("Attempted to kill init"): either way the VMM sees the guest stop.
//
// The marker lines are a contract with the VMM's test harnesses; see
// MarkerHello and MarkerExitPrefix.
package main
