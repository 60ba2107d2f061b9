#!/usr/bin/env bash
# hugepages.sh reserve N | restore
# Reserves N 2 MiB hugetlb pages for the tests (remembering the old value in
# $HUGEPAGES_STATE) and gives them back afterwards. Needs root; without root
# it says so and the tests that need hugetlb pages fail with the reservation
# command in their message.
set -euo pipefail
state=${HUGEPAGES_STATE:-/tmp/vmm-hugepages.old}
f=/proc/sys/vm/nr_hugepages
case "${1:-}" in
reserve)
	want=${2:?usage: hugepages.sh reserve N}
	old=$(cat "$f")
	[ -f "$state" ] || echo "$old" >"$state"
	if [ "$old" -lt "$want" ]; then
		if ! echo "$want" >"$f" 2>/dev/null; then
			echo "hugepages: cannot reserve $want 2 MiB pages (not root?): echo $want > $f" >&2
			exit 0
		fi
		got=$(cat "$f")
		echo "hugepages: reserved $got 2 MiB pages (was $old)" >&2
		if [ "$got" -lt "$want" ]; then
			echo "hugepages: only $got of $want: free memory is short or fragmented; hugetlb tests may fail." >&2
			echo "hugepages: as root try: sync; echo 3 > /proc/sys/vm/drop_caches; echo 1 > /proc/sys/vm/compact_memory; then again" >&2
		fi
	fi
	;;
restore)
	if [ -f "$state" ]; then
		old=$(cat "$state")
		echo "$old" >"$f" 2>/dev/null || true
		rm -f "$state"
		echo "hugepages: restored nr_hugepages to $old" >&2
	fi
	;;
*)
	echo "usage: hugepages.sh reserve N | restore" >&2
	exit 2
	;;
esac
