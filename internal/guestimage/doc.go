// Package guestimage provides the guest kernel and initramfs that the VMM's
// Linux-boot tests and the CLI boot, built on demand from this machine's
// package registries and cached outside the repository.
//
// It owns:
//   - the cache directory (CacheDir), shared with the shell scripts:
//     ${VMM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/vmm};
//   - Kernel, which runs scripts/guest-kernel/build.sh (Debian's
//     linux-source-6.1 + scripts/guest-kernel/config.fragment, cached as
//     kernel-<hash>/) and returns the paths of vmlinux, bzImage, System.map
//     and .config;
//   - Initramfs, which builds scripts/guest-init as a static /init, writes an
//     uncompressed newc cpio with u-root's cpio package (in-kernel
//     decompression is emulated, hence slow, on no-VMX hosts; see
//     docs/host-kvm.md) and caches it as initramfs-<hash>.cpio.
//
// Both need the repository's source tree (scripts/ and the Go module) at run
// time; it is found from VMM_SOURCE_DIR, the working directory or, failing
// those, this package's own source location.
//
// The guest /init prints MarkerHello and MarkerExitPrefix+"<code>" on the
// console and powers off; harnesses match those lines.
package guestimage
