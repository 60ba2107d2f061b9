#!/usr/bin/env bash
# Installs the Debian packages the project's build, tests and guest images
# need, if they are missing. Idempotent; safe to run on every `make`.
set -euo pipefail

if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
	echo "setup: this is not a Debian-based system (no dpkg-query/apt-get)." >&2
	echo "setup: install the equivalents of these Debian 12 packages yourself, then run 'make build' and 'go test ./...':" >&2
	echo "setup:   binutils gdb e2fsprogs iproute2 cpio linux-source-6.1 bc flex bison libelf-dev libssl-dev make gcc xz-utils ccache" >&2
	exit 1
fi
need=()
have() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
for p in binutils gdb e2fsprogs iproute2 cpio \
	linux-source-6.1 bc flex bison libelf-dev libssl-dev make gcc xz-utils ccache; do
	have "$p" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
	if [ "$(id -u)" != 0 ]; then
		echo "setup: missing Debian packages: ${need[*]}" >&2
		echo "setup: run as root, or: sudo apt-get install -y ${need[*]}" >&2
		exit 1
	fi
	echo "setup: installing ${need[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	# An update is needed on a fresh machine (empty package lists).
	apt-get update -qq >&2 || {
		echo "setup: apt-get update failed: check the network and /etc/apt/sources.list, then run 'make setup' again" >&2
		exit 1
	}
	apt-get install -y -qq --no-install-recommends "${need[@]}" >&2 || {
		echo "setup: apt-get install ${need[*]} failed (see apt's message above)." >&2
		echo "setup: linux-source-6.1 is in Debian 12 (bookworm); on another release install its linux-source-* and" >&2
		echo "setup: point VMM_KERNEL_SOURCE at its tarball (scripts/guest-kernel/build.sh), or install the missing packages by hand." >&2
		exit 1
	}
fi
