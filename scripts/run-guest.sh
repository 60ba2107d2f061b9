#!/usr/bin/env bash
# The README's "run" command: boot the default Linux guest.
#
# Builds (or takes from the cache) the guest kernel from Debian's
# linux-source-6.1 and an initramfs with u-root's tools and our /init, then
# boots it with `vmm boot` on the serial console. On a host with hardware
# virtualization the guest's /init prints its marker and powers the guest
# off (exit 0). On a host whose KVM emulates guest kernel mode (no VMX/SVM,
# see README "This host"), the kernel boots to `Run /init`, then /init's
# first system call faults and the kernel panics: we report that as the
# documented limit and exit 0 when the kernel got that far.
set -euo pipefail
cd "$(dirname "$0")/.."

vmm=${VMM:-bin/vmm}
kdir=$(./scripts/guest-kernel/build.sh | tail -n 1)
initrd=$(go run ./scripts/mkinitramfs | tail -n 1)
log=$(mktemp /tmp/vmm-run-XXXXXX.log)
echo "run: kernel $kdir/vmlinux, initramfs $initrd, console log $log" >&2

set +e
"$vmm" boot --kernel "$kdir/vmlinux" --initrd "$initrd" --cpus 2 --memory 512M \
	--timeout "${VMM_RUN_TIMEOUT:-10m}" --console-log "$log" "$@"
code=$?
set -e

if grep -q "VMM-GUEST-INIT: hello from userspace" "$log"; then
	echo "run: the guest's userspace ran and said hello (exit $code)" >&2
	exit "$code"
fi
if [ "$code" -eq 4 ] && grep -q "Run /init as init process" "$log" && grep -q "Attempted to kill init" "$log"; then
	echo "run: the kernel booted to 'Run /init'; /init died on its first system call," >&2
	echo "run: as it must on a host whose KVM emulates guest kernel mode (vmm probe; README 'This host')." >&2
	exit 0
fi
exit "$code"
