#!/usr/bin/env bash
# Installs the Debian packages the project's build, tests and guest images
# need, if they are missing. Idempotent; safe to run on every `make`.
set -euo pipefail

need=()
have() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
for p in binutils gdb e2fsprogs iproute2 cpio \
	linux-source-6.1 bc flex bison libelf-dev libssl-dev make gcc xz-utils; do
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
	apt-get update -qq >&2
	apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
fi
