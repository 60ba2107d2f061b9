#!/usr/bin/env bash
# The README's test command (via `make test`): vet, the whole go test suite,
# then every fuzz target for a bounded time, with the hugetlb pages the tests
# need reserved and given back. Ends with a one-line summary of the test
# cases run ("N passed, N failed, N skipped").
set -uo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
hugepages=${TEST_HUGEPAGES:-160}
timeout=${TEST_TIMEOUT:-28m}
log=$(mktemp /tmp/vmm-test-XXXXXX.json)
trap './scripts/hugepages.sh restore; rm -f "$log"' EXIT

./scripts/hugepages.sh reserve "$hugepages"
status=0
"$GO" vet ./... || status=$?
if [ $status -eq 0 ]; then
	# -json for the counts, printed as plain `go test` output as it runs.
	"$GO" test -json -timeout "$timeout" ./... | tee "$log" | "$GO" run ./scripts/testfmt
	status=${PIPESTATUS[0]}
fi
if [ $status -eq 0 ]; then
	GO=$GO ./scripts/fuzz.sh || status=$?
fi
./scripts/hugepages.sh restore
trap 'rm -f "$log"' EXIT
# The closing line: test cases over the whole suite.
if [ -s "$log" ]; then
	"$GO" run ./scripts/testfmt -summary <"$log"
fi
exit $status
