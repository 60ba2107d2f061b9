#!/usr/bin/env bash
# Build the vmm test guest kernel from Debian's linux-source-6.1 package, cached.
#
# Usage: scripts/guest-kernel/build.sh [--print-key | --print-dir | --help]
#
#   (no argument)  make sure the kernel for the current inputs is in the cache,
#                  building it if needed; progress goes to stderr, and the last
#                  line on stdout is the cache directory, which holds
#                  vmlinux, bzImage, .config, System.map, build.log and key.txt.
#   --print-key    print the cache key (hash) of the current inputs and exit.
#   --print-dir    print the cache directory for the current inputs and exit
#                  (whether or not it has been built).
#
# Cache: ${VMM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/vmm}/kernel-<hash>/.
# The hash covers this recipe's version, config.fragment (and
# protected.fragment, merged after it when present), everything under
# kunit/ and patches/, the linux-source package version and the compiler
# version. A build happens in a temporary directory that is renamed into place
# only when complete, so an interrupted build never counts as a cache hit.
#
# Environment:
#   VMM_CACHE_DIR          cache root (see above)
#   VMM_KERNEL_SOURCE      kernel source tarball (default /usr/src/linux-source-6.1.tar.xz)
#   VMM_KERNEL_JOBS        make -j value (default: nproc)
#   VMM_KERNEL_INPUT_DIR   directory holding config.fragment, protected.fragment,
#                          kunit/, patches/
#                          (default: the directory of this script; tests point
#                          it at a modified copy)
#   VMM_KERNEL_KEEP_WORK=1 keep the build tree after a successful build
#   VMM_KERNEL_NO_INSTALL=1 fail instead of running apt-get when tools are missing
set -euo pipefail

# Bump when the recipe below changes in a way that changes its output.
RECIPE_VERSION=1

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
INPUT_DIR=${VMM_KERNEL_INPUT_DIR:-$SCRIPT_DIR}
CACHE_ROOT=${VMM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/vmm}
SOURCE_PKG=linux-source-6.1
SOURCE_TARBALL=${VMM_KERNEL_SOURCE:-/usr/src/linux-source-6.1.tar.xz}
JOBS=${VMM_KERNEL_JOBS:-$(nproc)}
# ccache, where installed, makes a rebuild after a small configuration or
# patch change take minutes instead of a full build (make V=... unchanged).
KMAKE=()
if command -v ccache >/dev/null 2>&1; then
	KMAKE=(CC="ccache gcc" HOSTCC="ccache gcc")
fi
APT_PACKAGES=(linux-source-6.1 bc flex bison libelf-dev libssl-dev gcc make
	binutils xz-utils perl python3 util-linux)

START=$(date +%s)
say() { printf '[guest-kernel %4ds] %s\n' "$(($(date +%s) - START))" "$*" >&2; }
die() { printf 'guest-kernel: error: %s\n' "$*" >&2; exit 1; }

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//' >&2; }

mode=build
case "${1:-}" in
"") ;;
--print-key) mode=key ;;
--print-dir) mode=dir ;;
-h | --help) usage; exit 0 ;;
*) usage; die "unknown argument: $1" ;;
esac

[[ -f $INPUT_DIR/config.fragment ]] || die "missing $INPUT_DIR/config.fragment"

# fragments lists the configuration fragments in the order they are merged:
# config.fragment, then protected.fragment (the protected-guest options that
# go with patches/, kept apart from the base configuration) if present.
fragments() {
	echo "$INPUT_DIR/config.fragment"
	[[ ! -f $INPUT_DIR/protected.fragment ]] || echo "$INPUT_DIR/protected.fragment"
}

# ---------------------------------------------------------------- tools ----

# missing_tools lists what the build needs and is not installed.
missing_tools() {
	local m=()
	[[ -f $SOURCE_TARBALL ]] || m+=("$SOURCE_TARBALL")
	local c
	for c in bc flex bison gcc make ld readelf xz perl tar flock sha256sum; do
		command -v "$c" >/dev/null 2>&1 || m+=("$c")
	done
	[[ -f /usr/include/gelf.h ]] || m+=("gelf.h (libelf-dev)")
	[[ -f /usr/include/openssl/ssl.h ]] || m+=("openssl/ssl.h (libssl-dev)")
	printf '%s\n' "${m[@]}"
}

ensure_tools() {
	local missing
	missing=$(missing_tools)
	[[ -z $missing ]] && return 0
	say "missing: $(echo "$missing" | tr '\n' ' ')"
	[[ ${VMM_KERNEL_NO_INSTALL:-} != 1 ]] ||
		die "missing build tools and VMM_KERNEL_NO_INSTALL=1; install: ${APT_PACKAGES[*]}"
	if [[ -n ${VMM_KERNEL_SOURCE:-} && ! -f $SOURCE_TARBALL ]]; then
		die "VMM_KERNEL_SOURCE=$SOURCE_TARBALL does not exist"
	fi
	command -v apt-get >/dev/null 2>&1 ||
		die "no apt-get on this host; install the equivalent of: ${APT_PACKAGES[*]}"
	local sudo=()
	if [[ $(id -u) -ne 0 ]]; then
		command -v sudo >/dev/null 2>&1 ||
			die "not root and no sudo; as root run: apt-get install ${APT_PACKAGES[*]}"
		sudo=(sudo -n)
	fi
	export DEBIAN_FRONTEND=noninteractive
	say "apt-get update"
	"${sudo[@]}" apt-get update -q >&2 || die "apt-get update failed"
	say "apt-get install ${APT_PACKAGES[*]}"
	"${sudo[@]}" apt-get install -y -q --no-install-recommends "${APT_PACKAGES[@]}" >&2 ||
		die "apt-get install ${APT_PACKAGES[*]} failed"
	missing=$(missing_tools)
	[[ -z $missing ]] || die "still missing after apt-get install: $(echo "$missing" | tr '\n' ' ')"
}

# ------------------------------------------------------------ cache key ----

# source_version names the kernel source: the Debian package version when the
# default tarball is used, else the tarball's size and mtime.
source_version() {
	if [[ -z ${VMM_KERNEL_SOURCE:-} ]] &&
		v=$(dpkg-query -W -f='${Version}' "$SOURCE_PKG" 2>/dev/null) && [[ -n $v ]]; then
		echo "$SOURCE_PKG $v"
	elif [[ -f $SOURCE_TARBALL ]]; then
		stat -c "tarball $(basename "$SOURCE_TARBALL") %s %Y" "$SOURCE_TARBALL"
	else
		return 1
	fi
}

# key_material prints everything the cache key covers, one item a line, in a
# fixed order; the key is its sha256.
key_material() {
	echo "recipe $RECIPE_VERSION"
	source_version || die "kernel source not found ($SOURCE_TARBALL); run without --print-key to install it"
	echo "cc $(gcc --version 2>/dev/null | head -n1 || echo none)"
	(
		cd "$INPUT_DIR"
		local d inputs=(config.fragment)
		[[ ! -f protected.fragment ]] || inputs+=(protected.fragment)
		for d in kunit patches; do [[ -e $d ]] && inputs+=("$d"); done
		find "${inputs[@]}" -type f | LC_ALL=C sort |
			while IFS= read -r f; do echo "file $f $(sha256sum <"$f" | cut -d' ' -f1)"; done
	)
}

cache_key() { key_material | sha256sum | cut -c1-16; }

# --------------------------------------------------------------- build ----

# fragment_check verifies that every option of the fragment is in .config as
# asked; it prints the offending ones and fails otherwise.
fragment_check() {
	local cfg=$1 bad=() line name
	while IFS= read -r line; do
		if [[ $line =~ ^(CONFIG_[A-Za-z0-9_]+)=(.*)$ ]]; then
			name=${BASH_REMATCH[1]}
			if [[ ${BASH_REMATCH[2]} == n ]]; then
				grep -q "^$name=" "$cfg" && bad+=("$name (want n, got $(grep "^$name=" "$cfg"))")
			elif ! grep -qxF -- "$line" "$cfg"; then
				bad+=("$name (want ${BASH_REMATCH[2]}, got $(grep -E "^(# )?$name[= ]" "$cfg" || echo unset/absent))")
			fi
		elif [[ $line =~ ^#\ (CONFIG_[A-Za-z0-9_]+)\ is\ not\ set$ ]]; then
			name=${BASH_REMATCH[1]}
			grep -q "^$name=" "$cfg" && bad+=("$name (want not set, got $(grep "^$name=" "$cfg"))")
		fi
	done < <(fragments | xargs -d '\n' cat)
	if ((${#bad[@]})); then
		printf 'guest-kernel: fragment option not honoured: %s\n' "${bad[@]}" >&2
		return 1
	fi
}

# replace_file writes stdin to $1 through a new inode, so that a tree made of
# hard links to the pristine source never has a shared file modified.
replace_file() {
	local tmp="$1.vmm-new"
	cat >"$tmp"
	mv -f "$tmp" "$1"
}

# pristine_source extracts the tarball once per source version and prints the
# tree's path. Build trees are hard-linked copies of it.
pristine_dir() { echo "$CACHE_ROOT/src/$(source_version | tr -c 'A-Za-z0-9.+\n-' '_')"; }

pristine_source() {
	local dir tmp
	dir=$(pristine_dir)
	if [[ ! -f $dir/Makefile ]]; then
		say "extracting $SOURCE_TARBALL"
		mkdir -p "$CACHE_ROOT/src"
		tmp=$(mktemp -d "$CACHE_ROOT/src/.extract.XXXXXX")
		tar -xf "$SOURCE_TARBALL" -C "$tmp" || { rm -rf "$tmp"; die "cannot extract $SOURCE_TARBALL"; }
		local top
		top=$(find "$tmp" -mindepth 1 -maxdepth 1 -type d | head -n1)
		[[ -n $top && -f $top/Makefile ]] || { rm -rf "$tmp"; die "unexpected layout in $SOURCE_TARBALL"; }
		rm -rf "$dir"
		mv "$top" "$dir"
		rm -rf "$tmp"
	fi
	echo "$dir"
}

# write_gdbinit writes $1/vmlinux-gdb.gdb for gdb's source lines: the
# build tree the DWARF names is deleted after the build, so gdb is pointed
# at the pristine source ($2) instead, and first at $1/src, which holds the
# files the recipe adds or patches (docs/debugging.md).
write_gdbinit() {
	local out=$1 src=$2 build_dir
	build_dir=$( (readelf --debug-dump=info "$out/vmlinux" 2>/dev/null || true) |
		grep -m1 DW_AT_comp_dir | sed 's/.*: //') || true
	if [[ -z $build_dir ]]; then
		say "vmlinux names no build directory (no DWARF?): no gdb source paths"
		return 0
	fi
	{
		echo "# Source paths for gdb, written by scripts/guest-kernel/build.sh:"
		echo "#   gdb -x $out/vmlinux-gdb.gdb $out/vmlinux"
		echo "# (or let gdb load it: add-auto-load-safe-path $out)"
		if [[ -d $out/src ]]; then echo "directory $out/src"; fi
		echo "set substitute-path $build_dir $src"
	} | replace_file "$out/vmlinux-gdb.gdb"
}

build() {
	local key=$1 out=$2 tmp src tree log t0
	tmp=$(mktemp -d "$CACHE_ROOT/.kernel-$key.XXXXXX")
	# shellcheck disable=SC2064
	trap "rm -rf '$tmp'" EXIT
	log="$tmp/out/build.log"
	mkdir -p "$tmp/out"
	key_material >"$tmp/out/key.txt"
	src=$(pristine_source)
	# One fixed build path (under a lock shared by all keys): compiler caches
	# hit across builds and the DWARF in vmlinux names a stable directory
	# (docs/debugging.md: gdb source lines).
	tree="$CACHE_ROOT/build/linux"
	exec 7>"$CACHE_ROOT/.kernel-build.lock"
	flock 7
	rm -rf "$tree"
	mkdir -p "$CACHE_ROOT/build"
	say "preparing build tree $tree"
	cp -al "$src" "$tree" 2>/dev/null || cp -a "$src" "$tree"

	# Our own KUnit suite: a new file plus Kconfig/Makefile lines.
	cp "$INPUT_DIR/kunit/vmm_kunit_test.c" "$tree/lib/vmm_kunit_test.c"
	cat "$tree/lib/Kconfig.debug" "$INPUT_DIR/kunit/Kconfig" | replace_file "$tree/lib/Kconfig.debug"
	cat "$tree/lib/Makefile" "$INPUT_DIR/kunit/Makefile" | replace_file "$tree/lib/Makefile"
	local p
	for p in "$INPUT_DIR"/patches/*.patch; do
		[[ -f $p ]] || continue
		say "applying $(basename "$p")"
		# --backup-if-mismatch off, and patch writes new files: hard links stay intact.
		patch -d "$tree" -p1 --no-backup-if-mismatch --forward <"$p" >>"$log" 2>&1 ||
			die "patch $p failed (see $log)"
	done

	t0=$(date +%s)
	local frags
	mapfile -t frags < <(fragments)
	say "make tinyconfig + $(fragments | xargs -d '\n' -n1 basename | paste -sd+) + olddefconfig"
	{
		make -C "$tree" "${KMAKE[@]}" tinyconfig
		(cd "$tree" && KCONFIG_CONFIG=.config scripts/kconfig/merge_config.sh -m .config "${frags[@]}")
		make -C "$tree" "${KMAKE[@]}" olddefconfig
	} >>"$log" 2>&1 || { tail -n 30 "$log" >&2; die "configuration failed (see $log)"; }
	fragment_check "$tree/.config" || die "config.fragment not fully applied (see above)"
	say "config verified: all $(fragments | xargs -d '\n' cat | grep -cE '^(CONFIG_|# CONFIG_.* is not set)') fragment options set as asked"

	say "make -j$JOBS vmlinux bzImage (log: $log)"
	# Progress: kbuild's one-line-per-step output on stderr, everything in the log.
	if ! make -C "$tree" "${KMAKE[@]}" -j"$JOBS" vmlinux bzImage 2>&1 | tee -a "$log" >&2; then
		die "kernel build failed (see $log)"
	fi
	say "kernel built in $(($(date +%s) - t0))s"

	cp "$tree/vmlinux" "$tree/System.map" "$tree/.config" "$tmp/out/"
	cp "$tree/arch/x86/boot/bzImage" "$tmp/out/bzImage"
	# What gdb cannot find in the pristine source: files added or patched.
	local f
	for f in lib/vmm_kunit_test.c $(sed -n 's|^+++ b/\([^[:space:]]*\).*|\1|p' "$INPUT_DIR"/patches/*.patch 2>/dev/null); do
		[[ -f $tree/$f ]] || continue
		mkdir -p "$tmp/out/src/$(dirname "$f")"
		cp "$tree/$f" "$tmp/out/src/$f"
	done
	if [[ ${VMM_KERNEL_KEEP_WORK:-} == 1 ]]; then
		write_gdbinit "$tmp/out" "$CACHE_ROOT/work-kernel-$key" # the tree itself, kept below
	else
		write_gdbinit "$tmp/out" "$src"
	fi
	if grep -qx CONFIG_PVH=y "$tree/.config"; then
		readelf -n "$tmp/out/vmlinux" | grep -q 'Xen.*0x00000012' ||
			die "CONFIG_PVH=y but vmlinux has no XEN_ELFNOTE_PHYS32_ENTRY (0x12) note"
	fi
	{
		echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) in $(($(date +%s) - t0))s with -j$JOBS"
		# `times` must run in this shell (not a pipeline or $(...) subshell)
		# to see the children's CPU time.
		times >"$tmp/times"
		echo "cpu time of all child processes so far (user sys): $(tail -n1 "$tmp/times")"
		ls -l "$tmp/out"
	} >>"$log"

	if [[ ${VMM_KERNEL_KEEP_WORK:-} == 1 ]]; then
		mv "$tree" "$CACHE_ROOT/work-kernel-$key"
		say "kept build tree in $CACHE_ROOT/work-kernel-$key"
	fi
	rm -rf "$tree"
	rm -rf "$out"
	mv "$tmp/out" "$out"
	rm -rf "$tmp"
	trap - EXIT
}

# ---------------------------------------------------------------- main ----

if [[ $mode == key ]]; then
	cache_key
	exit 0
fi
if [[ $mode == dir ]]; then
	echo "$CACHE_ROOT/kernel-$(cache_key)"
	exit 0
fi

# Fast path: a finished cache entry is a hit with no tool checks.
complete() { [[ -f $1/vmlinux && -f $1/bzImage && -f $1/System.map && -f $1/.config ]]; }
if source_version >/dev/null 2>&1; then
	out="$CACHE_ROOT/kernel-$(cache_key)"
	if complete "$out"; then
		say "cache hit"
		# Entries built before the gdb file existed get it now.
		if [[ ! -f $out/vmlinux-gdb.gdb ]]; then
			work="$CACHE_ROOT/work-${out##*/}" # a build tree kept with VMM_KERNEL_KEEP_WORK=1
			src=$(pristine_dir) # not extracted here: a cache hit stays fast
			if [[ -d $work ]]; then
				write_gdbinit "$out" "$work"
			elif [[ -f $src/Makefile ]]; then
				write_gdbinit "$out" "$src"
			fi
		fi
		echo "$out"
		exit 0
	fi
fi

mkdir -p "$CACHE_ROOT"
# One builder per key: a second caller waits, then finds the cache filled.
# Before the tools are installed the key may still change (the source package
# version is part of it), so lock on a global lock while installing.
exec 8>"$CACHE_ROOT/.kernel-install.lock"
flock 8
ensure_tools
flock -u 8
key=$(cache_key)
out="$CACHE_ROOT/kernel-$key"
exec 9>"$CACHE_ROOT/.kernel-$key.lock"
if ! flock -n 9; then
	say "another build of kernel-$key is running; waiting for it"
	flock 9
fi
if complete "$out"; then
	say "cache hit (built by a concurrent run)"
else
	# We hold the lock: temporary trees of this key are leftovers of a run
	# that was killed.
	for stale in "$CACHE_ROOT"/.kernel-"$key".*; do
		[[ -d $stale ]] || continue
		say "removing stale $stale"
		rm -rf "$stale"
	done
	say "building kernel-$key ($(source_version))"
	build "$key" "$out"
	say "done: vmlinux $(stat -c %s "$out/vmlinux") bytes, bzImage $(stat -c %s "$out/bzImage") bytes"
fi
echo "$out"
