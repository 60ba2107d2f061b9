#!/usr/bin/env bash
# Lint that runs (called by scripts/test.sh, and by `make lint`):
#   1. gofmt -l over every tracked Go file: lists nothing;
#   2. go vet ./...;
#   3. staticcheck, pinned to a release the module proxy serves;
#   4. with RACE=1 (the default), go test -race -short over every package:
#      -short skips the Linux-boot tests, which under the race detector's
#      5-10x slowdown do not fit the CI budget; everything else (pure tests,
#      tiny KVM guests, the fuzz seeds) runs.
# Exits non-zero on the first step that fails.
set -uo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
STATICCHECK=${STATICCHECK:-honnef.co/go/tools/cmd/staticcheck@v0.6.1}
RACE=${RACE:-1}
RACE_TIMEOUT=${RACE_TIMEOUT:-15m}

files=$(git ls-files '*.go')
unformatted=$(gofmt -l $files)
if [ -n "$unformatted" ]; then
	echo "lint: gofmt would change:" >&2
	echo "$unformatted" >&2
	exit 1
fi
"$GO" vet ./... || { echo "lint: go vet failed" >&2; exit 1; }
"$GO" run "$STATICCHECK" ./... || { echo "lint: staticcheck failed" >&2; exit 1; }
if [ "$RACE" = 1 ]; then
	"$GO" test -race -short -count=1 -timeout "$RACE_TIMEOUT" ./... || { echo "lint: go test -race failed" >&2; exit 1; }
fi
echo "lint: gofmt, go vet, staticcheck$([ "$RACE" = 1 ] && echo ', go test -race -short') clean"
