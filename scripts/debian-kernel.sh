#!/usr/bin/env bash
# Fetch Debian's own kernel image package and unpack it into the cache.
#
# Usage: scripts/debian-kernel.sh [amd64 | cloud-amd64]   (default: amd64)
#
# Resolves the flavour's metapackage (linux-image-amd64 or
# linux-image-cloud-amd64) to the kernel package it depends on today,
# downloads that .deb with `apt-get download` (nothing is installed on the
# host) and unpacks it once into
#
#   ${VMM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/vmm}/debian-kernel-<package>_<version>/
#
# which then holds:
#   vmlinuz   the kernel as Debian ships it (a bzImage, unmodified)
#   modules/  its lib/modules/<kver> tree (as shipped: .ko files may be
#             compressed)
#   kver      the kernel release string (uname -r inside that kernel)
#   package   "<package> <version>"
# Progress goes to stderr; the last line on stdout is that directory.
# A finished directory is reused without asking apt (offline runs work once
# it exists). Environment: VMM_DEBIAN_KERNEL_PACKAGE pins a package name
# (e.g. linux-image-6.1.0-50-amd64-unsigned) instead of the metapackage's.
set -euo pipefail

flavour=${1:-amd64}
case "$flavour" in
amd64 | cloud-amd64) ;;
-h | --help) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
*) echo "debian-kernel: unknown flavour '$flavour' (amd64 or cloud-amd64)" >&2; exit 2 ;;
esac
cache=${VMM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/vmm}
say() { echo "debian-kernel: $*" >&2; }
die() { echo "debian-kernel: error: $*" >&2; exit 1; }

# The newest finished unpack of this flavour, for offline reuse.
newest_cached() {
	local d best=""
	for d in "$cache"/debian-kernel-linux-image-*-"$flavour"*_*/; do
		[[ -f $d/vmlinuz && -f $d/kver ]] || continue
		case "$(basename "$d")" in *-"$flavour"_* | *-"$flavour"-unsigned_*) best=${d%/} ;; esac
	done
	[[ -n $best ]] && echo "$best"
}

command -v apt-cache >/dev/null 2>&1 || {
	d=$(newest_cached) && { echo "$d"; exit 0; }
	die "no apt-cache on this host: cannot resolve Debian's kernel package"
}

resolve() {
	local pkg=${VMM_DEBIAN_KERNEL_PACKAGE:-}
	if [[ -z $pkg ]]; then
		pkg=$(apt-cache depends "linux-image-$flavour" 2>/dev/null |
			awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
	fi
	[[ -n $pkg ]] || return 1
	local ver
	ver=$(apt-cache policy "$pkg" 2>/dev/null | awk '/Candidate:/ {print $2; exit}')
	[[ -n $ver && $ver != "(none)" ]] || return 1
	echo "$pkg $ver"
}

if ! pv=$(resolve); then
	say "package lists do not know linux-image-$flavour; running apt-get update"
	if [[ $(id -u) -eq 0 ]]; then
		apt-get update -qq >&2 || say "apt-get update failed"
	fi
	pv=$(resolve) || {
		d=$(newest_cached) && { say "using cached $d"; echo "$d"; exit 0; }
		die "cannot resolve linux-image-$flavour to a kernel package (apt-get update as root, or set VMM_DEBIAN_KERNEL_PACKAGE)"
	}
fi
read -r pkg ver <<<"$pv"
out="$cache/debian-kernel-${pkg}_${ver}"
if [[ -f $out/vmlinuz && -f $out/kver ]]; then
	echo "$out"
	exit 0
fi

mkdir -p "$cache"
exec 9>"$cache/.debian-kernel.lock"
flock 9
if [[ -f $out/vmlinuz && -f $out/kver ]]; then
	echo "$out"
	exit 0
fi
tmp=$(mktemp -d "$cache/.debian-kernel.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
# apt-get download drops privileges to _apt where it can write the folder.
chmod a+rwx "$tmp"
say "downloading $pkg $ver"
(cd "$tmp" && apt-get download -q "$pkg=$ver" >&2) || die "apt-get download $pkg=$ver failed"
deb=$(ls "$tmp"/*.deb 2>/dev/null | head -n1)
[[ -n $deb ]] || die "apt-get download left no .deb"
say "unpacking $(basename "$deb")"
dpkg-deb -x "$deb" "$tmp/root" || die "dpkg-deb -x $deb failed"
img=$(ls "$tmp"/root/boot/vmlinuz-* 2>/dev/null | head -n1)
[[ -n $img ]] || die "$pkg has no /boot/vmlinuz-*"
kver=${img##*/vmlinuz-}
mkdir -p "$tmp/out"
mv "$img" "$tmp/out/vmlinuz"
if [[ -d $tmp/root/lib/modules/$kver ]]; then
	mv "$tmp/root/lib/modules/$kver" "$tmp/out/modules"
else
	mkdir "$tmp/out/modules"
fi
[[ -f $tmp/root/boot/config-$kver ]] && mv "$tmp/root/boot/config-$kver" "$tmp/out/config"
echo "$kver" >"$tmp/out/kver"
echo "$pkg $ver" >"$tmp/out/package"
rm -rf "$out"
mv "$tmp/out" "$out"
say "done: $out ($kver)"
echo "$out"
