#!/usr/bin/env bash
# The nested suite (`make test-nested`): the tests that need a hardware-style
# KVM (guest userspace, vmcall/vmmcall exits, the APIC timer), run inside the
# L1 guest of scripts/nested-kvm.sh. On the host it builds everything L1
# cannot (L1 has no Go toolchain and no source tree):
#   - the project's guest kernel (scripts/guest-kernel/build.sh), its vmlinux
#     stripped of debug info (L1 holds it in RAM), as $VMM_GUEST_KERNEL;
#   - the guest /init and the vmtest agent, as $VMM_GUEST_INIT and
#     $VMTEST_AGENT;
#   - static test binaries of ./vmm and ./vmm/vmtest (CGO_ENABLED=0 go test -c)
# and copies them in with the tools the tests call (mkfs.ext4; as, ld and
# objcopy for the tiny raw guests). Inside L1 the tests whose names start
# with TestNested (they skip elsewhere: VMM_NESTED=1 only there) and the
# existing tests with a hardware-host branch run; every L2 console is in the
# log of a failing test.
#
# Exit status: 0 when every test passed, 1 when one failed, or
# scripts/nested-kvm.sh's 124 (timeout) / 125 (L1 did not come up).
# Environment: GO (default go), NESTED_SUITE_TIMEOUT (seconds, default 1200).
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
say() { echo "test-nested: $*" >&2; }
t0=$EPOCHREALTIME

work=$(mktemp -d /tmp/vmm-test-nested.XXXXXX)
trap 'rm -rf "$work"' EXIT
kdir=$(./scripts/guest-kernel/build.sh | tail -n1)
mkdir -p "$work/kernel" "$work/bin"
objcopy --strip-debug "$kdir/vmlinux" "$work/kernel/vmlinux"
cp "$kdir/bzImage" "$kdir/System.map" "$kdir/.config" "$work/kernel/"
export CGO_ENABLED=0 GOOS=linux GOARCH=amd64
"$GO" build -trimpath -ldflags=-s\ -w -o "$work/bin/guest-init" ./scripts/guest-init
"$GO" build -trimpath -ldflags=-s\ -w -o "$work/bin/guest-agent" ./scripts/guest-agent
"$GO" test -c -o "$work/bin/vmm.test" ./vmm
"$GO" test -c -o "$work/bin/vmtest.test" ./vmm/vmtest
say "built the guest images and test binaries in $(echo "$EPOCHREALTIME $t0" | awk '{printf "%.0f", $1 - $2}')s"

# What runs in L1. Each binary's own -test.timeout bounds it; the suite's
# QEMU run is bounded by nested-kvm.sh --timeout.
cat >"$work/suite.sh" <<'EOF'
export PATH=/usr/local/bin:/bin:/sbin:/usr/bin:/usr/sbin
export VMM_GUEST_KERNEL=/nested/kernel VMM_GUEST_INIT=/nested/bin/guest-init VMTEST_AGENT=/nested/bin/guest-agent
status=0
start=$(cut -d' ' -f1 /proc/uptime)
run() {
	name=$1
	shift
	s=$(cut -d' ' -f1 /proc/uptime)
	"$@" || status=1
	echo "test-nested: $name took $(awk -v s="$s" '{printf "%.1f", $1 - s}' /proc/uptime)s"
}
run vmm /nested/bin/vmm.test -test.v -test.timeout 12m \
	-test.run '^(TestNested.*|TestLinuxVirtioDevices|TestLinuxTimerParams|TestTraceExitsHypercall)$'
run vmtest /nested/bin/vmtest.test -test.v -test.timeout 6m -test.run '^TestNestedGoTest$'
echo "test-nested: suite inside L1 took $(awk -v s="$start" '{printf "%.1f", $1 - s}' /proc/uptime)s"
exit $status
EOF

files=()
for f in "$work"/kernel/* "$work"/kernel/.config; do files+=(--file "$f:/nested/kernel/$(basename "$f")"); done
for f in "$work"/bin/*; do files+=(--file "$f:/nested/bin/$(basename "$f")"); done
files+=(--file "$work/suite.sh:/nested/suite.sh")
files+=(--file "$(command -v mkfs.ext4):/sbin/mkfs.ext4")
[[ -f /etc/mke2fs.conf ]] && files+=(--file /etc/mke2fs.conf:/etc/mke2fs.conf)
for tool in as ld objcopy; do files+=(--file "$(command -v $tool):/usr/bin/$tool"); done

rc=0
./scripts/nested-kvm.sh --timeout "${NESTED_SUITE_TIMEOUT:-1200}" "${files[@]}" -- sh /nested/suite.sh || rc=$?
say "whole nested suite: $(echo "$EPOCHREALTIME $t0" | awk '{printf "%.0f", $1 - $2}')s, exit $rc"
exit $rc
