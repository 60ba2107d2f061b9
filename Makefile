# The two commands of the README:
#   make run    boot the default Linux guest (builds the VMM, the guest kernel
#               and initramfs first, all from Debian packages and Go modules)
#   make test   run the whole test suite (installs what the tests need,
#               reserves hugetlb pages for them and gives them back), then
#               every fuzz target for FUZZTIME (5s) each: scripts/fuzz.sh
GO      ?= go
BIN     := bin/vmm
VERSION := $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
# Hugetlb pages (2 MiB) the tests reserve while they run.
TEST_HUGEPAGES ?= 400
# go test -timeout per package: a backstop above every guest deadline
# (scripts/test.sh explains the budget).
TEST_TIMEOUT   ?= 25m

.PHONY: all build run test test-short test-nested test-debian lint bench setup guest-kernel initramfs clean

all: build

# Static (CGO_ENABLED=0): nothing of libc mapped into the VMM process.
build:
	CGO_ENABLED=0 $(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/vmm

setup:
	./scripts/setup.sh

guest-kernel: setup
	./scripts/guest-kernel/build.sh

run: setup build
	./scripts/run-guest.sh

test: setup
	GO=$(GO) TEST_HUGEPAGES=$(TEST_HUGEPAGES) TEST_TIMEOUT=$(TEST_TIMEOUT) ./scripts/test.sh

# The hardware-KVM lane: the tests that need guest userspace, vmcall exits
# and a native APIC timer, inside an L1 Linux under QEMU TCG with SVM
# (scripts/nested-kvm.sh, scripts/test-nested.sh): the whole suite, about
# 10 minutes here while TestNestedVirtioUserspace still hangs to its bound
# (docs/nested.md). make test runs its core subset (test-nested.sh --core).
test-nested: setup
	GO=$(GO) ./scripts/test-nested.sh

# Debian's stock kernel (scripts/debian-kernel.sh) booted to its root mount:
# many minutes on hosts that emulate guest kernel mode (docs/emulation.md).
test-debian:
	VMM_TEST_DEBIAN=1 $(GO) test ./vmm -run TestDebianKernelBoots -count=1 -v -timeout 60m

test-short:
	$(GO) test -short ./...

# gofmt, go vet, staticcheck (v0.6.1 = 2025.1.1, as the module proxy serves
# it) and go test -race -short; RACE=0 for the static checks alone.
lint:
	GO=$(GO) ./scripts/lint.sh

# make bench BENCHFLAGS=-hogs=2: the same run beside two CPU hogs.
bench: setup build
	$(GO) run ./scripts/bench -doc docs/benchmarks.md $(BENCHFLAGS)

clean:
	rm -rf bin
