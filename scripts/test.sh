#!/usr/bin/env bash
# The README's test command (via `make test`): lint (gofmt, vet,
# staticcheck, go test -race -short: scripts/lint.sh), the guest kernel and
# initramfs (built once, cached), the whole go test suite, then every fuzz
# target for a bounded time, with the hugetlb pages the tests need reserved
# and given back. Ends with a one-line summary of the test cases run
# ("N passed, N failed, N skipped") and the wall time of each phase.
#
# Budget (2-core host whose KVM emulates guest kernel mode, guest kernel
# cached): about 10 minutes quiet, under 30 with two CPU hogs beside it,
# plus the nested lane's core subset (scripts/test-nested.sh --core, at
# most 10 minutes, docs/nested.md).
# Guest Linux boots take most of it; they run one per two cores across all
# test processes (internal/hostspeed slots) with deadlines derived from the
# host's measured speed and load, so a busy machine makes the suite slower,
# not red. TEST_TIMEOUT is go test's per-package backstop, above any boot
# deadline: it only fires if something outside a guest hangs.
#
# Environment: GO, TEST_NESTED (0: skip the nested lane), TEST_HUGEPAGES (2 MiB pages, default 160), TEST_TIMEOUT
# (default 25m), FUZZTIME (scripts/fuzz.sh, default 5s), and for the boot
# tests VMM_TEST_GUEST_SLOTS / VMM_TEST_DEADLINE_SCALE (internal/hostspeed).
set -uo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
hugepages=${TEST_HUGEPAGES:-160}
timeout=${TEST_TIMEOUT:-25m}
log=$(mktemp /tmp/vmm-test-XXXXXX.json)
trap './scripts/hugepages.sh restore; rm -f "$log"' EXIT

begin=$SECONDS
phases=()
phase_start=$SECONDS
# phase NAME records the wall time since the previous phase ended.
phase() {
	phases+=("$1 $(((SECONDS - phase_start) / 60))m$(((SECONDS - phase_start) % 60))s")
	phase_start=$SECONDS
}
echo "test: load average at start: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) CPUs" >&2

./scripts/hugepages.sh reserve "$hugepages"
status=0
GO="$GO" ./scripts/lint.sh || status=$?
phase lint
if [ $status -eq 0 ]; then
	# Built before go test starts, so that a fresh machine's kernel build
	# (minutes) does not eat a test binary's -timeout.
	./scripts/guest-kernel/build.sh >/dev/null || status=$?
	[ $status -eq 0 ] && { "$GO" run ./scripts/mkinitramfs >/dev/null || status=$?; }
	phase "guest kernel"
fi
if [ $status -eq 0 ]; then
	# -json for the counts, printed as plain `go test` output as it runs.
	"$GO" test -json -timeout "$timeout" ./... | tee "$log" | "$GO" run ./scripts/testfmt
	status=${PIPESTATUS[0]}
	phase "go test"
fi
if [ $status -eq 0 ]; then
	GO=$GO ./scripts/fuzz.sh || status=$?
	phase fuzz
fi
# The hardware-KVM lane's core subset (docs/nested.md): guest userspace,
# hypercall exits and the APIC timer on a normal KVM, one level down under
# QEMU TCG. Its bound on the whole run comes from the load average
# (scripts/test-nested.sh). TEST_NESTED=0 leaves it out (said loudly: the
# suite then has not run the path users run).
if [ $status -eq 0 ]; then
	if [ "${TEST_NESTED:-1}" = 0 ]; then
		echo "test: TEST_NESTED=0: the hardware-KVM lane (scripts/test-nested.sh --core) NOT run" >&2
	else
		./scripts/hugepages.sh restore # L1 is a QEMU process: it needs RAM, not the host's hugetlb pool
		echo "test: nested lane (core subset), load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
		GO="$GO" ./scripts/test-nested.sh --core || status=$?
		phase nested
	fi
fi
./scripts/hugepages.sh restore
trap 'rm -f "$log"' EXIT
# The closing lines: test cases over the whole suite, time per phase.
if [ -s "$log" ]; then
	"$GO" run ./scripts/testfmt -summary <"$log"
fi
echo "test: $(IFS=,; echo "${phases[*]}" | sed 's/,/, /g'); total $(((SECONDS - begin) / 60))m$(((SECONDS - begin) % 60))s; load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
exit $status
