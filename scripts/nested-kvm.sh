#!/usr/bin/env bash
# Runs a command inside an L1 Linux guest that has a normal hardware-style
# /dev/kvm: QEMU's software emulator (TCG) with SVM exposed runs Debian's
# kernel, which loads kvm_amd; our static `vmm` is on PATH there. This is
# the hardware-KVM lane of the test suite (`make test-nested`): on our
# development hosts /dev/kvm emulates guest kernel mode (docs/host-kvm.md),
# so guest userspace, vmcall/vmmcall exits and a native APIC timer can only
# be exercised one level down.
#
# Usage:
#   scripts/nested-kvm.sh [options] [--file HOST_PATH:GUEST_PATH]... -- COMMAND [ARGS...]
#
# COMMAND runs in L1 as root with /nested as its working directory, PATH
# holding vmm (/usr/local/bin) and busybox (/bin), stdin /dev/null, and the
# environment VMM_NESTED=1, HOME=/root, plus every VAR=VALUE given with
# --env. Its output (stdout and stderr) is streamed to this script's stdout;
# the script's own progress and stage times go to stderr.
#
# Options:
#   --file HOST:GUEST  copy a host file into L1 at GUEST (absolute path;
#                      parent directories are created). A dynamically
#                      linked ELF program also gets its shared libraries
#                      and loader (found with ldd).
#   --env VAR=VALUE    set VAR for COMMAND.
#   --timeout SECS     hard limit on the whole QEMU run (default 900, or
#                      $NESTED_KVM_TIMEOUT).
#   --memory MIB       L1 RAM in MiB (default 3072, or $NESTED_KVM_MEMORY).
#   --cpus N           L1 vCPUs (default 1, or $NESTED_KVM_CPUS): with 2,
#                      L1 wedged in 1 of 3 runs (docs/nested.md); with 1
#                      none of 3 did, and the suite was no slower.
#   --hugepages N      2 MiB pages L1 reserves for COMMAND (default 160).
#   --cpu MODEL        QEMU -cpu (default qemu64,+svm,+npt, or
#                      $NESTED_KVM_CPU): the fastest model measured here
#                      that gives L1 SVM with nested paging.
#   --vmm PATH         the static vmm binary to put on PATH (default: built
#                      from this tree with CGO_ENABLED=0 into the cache).
#
# Exit status: COMMAND's exit code (0..255) when it ran to the end, else
#   124  the --timeout fired (L1 was up: COMMAND did not finish in time;
#        the message says how far L1 got)
#   125  L1 itself failed: QEMU did not start, the kernel did not reach
#        /init, the KVM modules did not load or /dev/kvm is missing, or L1
#        ended without reporting COMMAND's exit code (a soft lockup in L1
#        panics it at once: softlockup_panic=1, docs/nested.md), or L1
#        wedged: its /init prints a heartbeat every 10 s and none came for
#        $NESTED_KVM_WEDGE seconds (default 120 x max(1, (load+1)/CPUs));
#        the last 40 lines of L1's console are repeated on stderr
#   2    usage error
# COMMAND's exit code is reported by L1's /init on the serial console as a
# line carrying a random per-run nonce, so COMMAND's own output cannot fake
# it. (A COMMAND that itself exits 124 or 125 is indistinguishable by code;
# the message on stderr tells which.)
#
# Everything L1 needs comes from Debian: qemu-system-x86 and busybox-static
# (installed with apt-get when missing, as root) and Debian's kernel image
# package (scripts/debian-kernel.sh). The L1 base initramfs (busybox, the
# kvm/kvm-amd/irqbypass/ccp/tun modules, /init) is cached under
# ${VMM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/vmm}/nested-<key>/.
set -euo pipefail
shopt -s lastpipe
cd "$(dirname "$0")/.."
root=$PWD

say() { echo "nested-kvm: $*" >&2; }
usage() { sed -n '10,12p' "$0" | sed 's/^# \{0,1\}//' >&2; say "see the comment at the top of $0"; exit 2; }
l1fail() { say "L1 failed: $*"; exit 125; }

files=() envs=()
timeout=${NESTED_KVM_TIMEOUT:-900}
memory=${NESTED_KVM_MEMORY:-3072}
cpus=${NESTED_KVM_CPUS:-1}
cpu=${NESTED_KVM_CPU:-qemu64,+svm,+npt}
hugepages=160
vmm_bin=""
while [[ $# -gt 0 ]]; do
	case "$1" in
	--file) [[ $# -ge 2 && $2 == *:/* ]] || { say "--file wants HOST_PATH:/GUEST_PATH"; usage; }; files+=("$2"); shift 2 ;;
	--env) [[ $# -ge 2 && $2 == [A-Za-z_]*=* ]] || { say "--env wants VAR=VALUE"; usage; }; envs+=("$2"); shift 2 ;;
	--timeout) [[ ${2:-} =~ ^[0-9]+$ ]] || usage; timeout=$2; shift 2 ;;
	--memory) [[ ${2:-} =~ ^[0-9]+$ ]] || usage; memory=$2; shift 2 ;;
	--cpus) [[ ${2:-} =~ ^[0-9]+$ ]] || usage; cpus=$2; shift 2 ;;
	--hugepages) [[ ${2:-} =~ ^[0-9]+$ ]] || usage; hugepages=$2; shift 2 ;;
	--cpu) [[ -n ${2:-} ]] || usage; cpu=$2; shift 2 ;;
	--vmm) [[ -n ${2:-} ]] || usage; vmm_bin=$2; shift 2 ;;
	-h | --help) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
	--) shift; break ;;
	*) say "unexpected argument '$1' (the command comes after --)"; usage ;;
	esac
done
[[ $# -ge 1 ]] || { say "no COMMAND after --"; usage; }
for f in "${files[@]}"; do
	[[ -f ${f%%:*} ]] || { say "--file $f: ${f%%:*} is not a regular file"; exit 2; }
done

cache=${VMM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/vmm}
mkdir -p "$cache"

# Debian packages: QEMU and a static busybox for L1's userspace.
need=()
command -v qemu-system-x86_64 >/dev/null 2>&1 || need+=(qemu-system-x86)
[[ -x /bin/busybox ]] && /bin/busybox --list 2>/dev/null | grep -qx insmod &&
	! ldd /bin/busybox >/dev/null 2>&1 || need+=(busybox-static)
command -v cpio >/dev/null 2>&1 || need+=(cpio)
if [[ ${#need[@]} -gt 0 ]]; then
	[[ $(id -u) -eq 0 ]] || l1fail "missing Debian packages ${need[*]}: run as root or apt-get install them"
	say "installing ${need[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y -qq --no-install-recommends "${need[@]}" >&2 ||
		{ apt-get update -qq >&2 && apt-get install -y -qq --no-install-recommends "${need[@]}" >&2; } ||
		l1fail "apt-get install ${need[*]} failed"
fi

kdir=$(./scripts/debian-kernel.sh amd64 | tail -n1) || l1fail "scripts/debian-kernel.sh failed"
kver=$(cat "$kdir/kver")
[[ -f $kdir/vmlinuz ]] || l1fail "$kdir has no vmlinuz"

# The modules L1 loads, in dependency order (kvm needs irqbypass, kvm-amd
# needs kvm and ccp; tun is for the tests' TAP devices).
modules="irqbypass ccp kvm kvm-amd tun"

# /init of L1 (cached in the base image): the per-run nonce, hugepage count
# and command come from /etc/nested/ in the per-run archive.
read -r -d '' init_script <<'EOF' || true
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/usr/local/bin:/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# The kernel found no /dev/console in the archive for init's stdio.
exec </dev/console >/dev/console 2>&1
mkdir -p /dev/pts /dev/shm /dev/hugepages /tmp /run /root
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs -o size=75% tmpfs /tmp
mount -t hugetlbfs hugetlbfs /dev/hugepages
nonce=$(cat /etc/nested/nonce)
say() { echo "NESTED-KVM-$nonce: $*"; }
say "l1-up $(cut -d' ' -f1 /proc/uptime)"
for m in $(cat /etc/nested/modules); do
	f=$(find /lib/modules -name "$m.ko" | head -n1)
	if [ -z "$f" ] || ! insmod "$f"; then
		say "l1-failed insmod $m failed"
		poweroff -f
	fi
done
if [ ! -c /dev/kvm ]; then
	say "l1-failed /dev/kvm missing after loading kvm-amd (does the CPU model have svm?)"
	poweroff -f
fi
ip link set lo up 2>/dev/null
# The hugetlb pool was reserved at boot (hugepages= on the command line,
# from unfragmented memory); no proactive compaction and no THP, so that
# kcompactd has nothing to do while the tests run (docs/nested.md, "L1
# wedges").
echo 0 >/proc/sys/vm/compaction_proactiveness 2>/dev/null
echo 1 >/proc/sys/vm/compact_unevictable_allowed 2>/dev/null
say "l1-ready $(cut -d' ' -f1 /proc/uptime) hugepages=$(cat /proc/sys/vm/nr_hugepages) thp=$(cat /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null)"
# A heartbeat for the host's wedge detector: an L1 that stops scheduling
# userspace stops printing these.
(while :; do say "hb $(cut -d' ' -f1 /proc/uptime)"; sleep 10; done) &
hb=$!
renice -n -20 -p $hb >/dev/null 2>&1
mkdir -p /nested
cd /nested
HOME=/root VMM_NESTED=1 sh /etc/nested/cmd </dev/null >/dev/console 2>&1
rc=$?
kill $hb 2>/dev/null
sync
say "exit $rc"
poweroff -f
EOF

key=$( {
	echo "nested-base v2"
	echo "$kdir $kver"
	sha256sum /bin/busybox
	echo "$modules"
	echo "$init_script"
} | sha256sum | cut -c1-16)
base_dir="$cache/nested-$key"
base="$base_dir/base.cpio"
if [[ ! -f $base ]]; then
	say "building the L1 base initramfs ($kver, busybox, modules: $modules)"
	tmp=$(mktemp -d "$cache/.nested-base.XXXXXX")
	trap 'rm -rf "$tmp"' EXIT
	r=$tmp/root
	mkdir -p "$r"/{bin,sbin,dev,proc,sys,tmp,etc/nested,usr/local/bin,lib/modules/"$kver"}
	cp /bin/busybox "$r/bin/busybox"
	printf '%s\n' "$init_script" >"$r/init"
	chmod 755 "$r/init"
	echo "$modules" >"$r/etc/nested/modules"
	for m in $modules; do
		f=$(find "$kdir/modules" -name "$m.ko" -o -name "$m.ko.xz" -o -name "$m.ko.zst" -o -name "$m.ko.gz" | head -n1)
		[[ -n $f ]] || l1fail "module $m not in $kdir/modules"
		case "$f" in
		*.ko) cp "$f" "$r/lib/modules/$kver/$m.ko" ;;
		*.xz) xz -dc "$f" >"$r/lib/modules/$kver/$m.ko" ;;
		*.zst) zstd -qdc "$f" >"$r/lib/modules/$kver/$m.ko" ;;
		*.gz) gzip -dc "$f" >"$r/lib/modules/$kver/$m.ko" ;;
		esac
	done
	(cd "$r" && find . -mindepth 1 | cpio -o -H newc --quiet) >"$tmp/base.cpio"
	mkdir -p "$base_dir"
	mv "$tmp/base.cpio" "$base"
	rm -rf "$tmp"
	trap - EXIT
fi

# The per-run part: vmm, the files, the command, the nonce.
run=$(mktemp -d /tmp/nested-kvm.XXXXXX)
trap 'rm -rf "$run"' EXIT
r=$run/root
mkdir -p "$r/usr/local/bin" "$r/etc/nested" "$r/dev"
if [[ -z $vmm_bin ]]; then
	vmm_bin="$cache/nested-vmm"
	CGO_ENABLED=0 go build -trimpath -o "$vmm_bin" ./cmd/vmm || l1fail "go build ./cmd/vmm failed"
fi
cp "$vmm_bin" "$r/usr/local/bin/vmm"
add_file() { # host guest
	mkdir -p "$r$(dirname "$2")"
	cp -L "$1" "$r$2"
}
for f in "${files[@]}"; do
	host=${f%%:*} guest=${f#*:}
	add_file "$host" "$guest"
	# A dynamically linked program also needs its libraries in L1.
	if ldd "$host" >/dev/null 2>&1; then
		ldd "$host" | awk '/=> \// {print $3} /^\t\/[^ ]+ \(/ {print $1}' | while read -r lib; do
			[[ -e $r$lib ]] || add_file "$lib" "$lib"
		done
	fi
done
nonce=$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')
echo "$nonce" >"$r/etc/nested/nonce"
echo "$hugepages" >"$r/etc/nested/hugepages"
{
	for e in "${envs[@]}"; do printf 'export %q\n' "$e"; done
	printf 'exec'
	printf ' %q' "$@"
	printf '\n'
} >"$r/etc/nested/cmd"
(cd "$r" && find . -mindepth 1 | cpio -o -H newc --quiet) >"$run/run.cpio"
# The kernel unpacks concatenated newc archives in turn.
cat "$base" "$run/run.cpio" >"$run/initrd.cpio"
rm -rf "$r"

# The wedge bound: L1's /init prints a heartbeat every 10 s of L1 time
# (TCG runs L1's clock at wall speed); an L1 that prints none for this
# long has stopped scheduling userspace. 120 s on a quiet host, scaled by
# the load (QEMU's vCPU threads get about CPUs/(load+1) of a core each).
load1=$(cut -d' ' -f1 /proc/loadavg)
wedge=${NESTED_KVM_WEDGE:-$(awk -v l="$load1" -v n="$(nproc)" 'BEGIN { s = (l + 1) / n; if (s < 1) s = 1; printf "%d", 120 * s }')}
say "L1: QEMU TCG -cpu $cpu -smp $cpus -m ${memory}M, Debian kernel $kver, timeout ${timeout}s, wedge bound ${wedge}s (load $load1)"
t0=$EPOCHREALTIME
elapsed() { echo "$EPOCHREALTIME $t0" | awk '{printf "%.1f", $1 - $2}'; }
state=start code="" l1_up="" l1_ready="" wedged=""
marker="NESTED-KVM-$nonce: "
# L1's kernel command line: softlockup_panic=1 ends a wedged L1 at once;
# loglevel=5 keeps the boot terse (KERN_INFO off) but prints warnings and
# the soft-lockup reports' stacks (KERN_DEFAULT); hugepages= reserves the
# pool from unfragmented memory at boot, transparent_hugepage=never keeps
# khugepaged and THP compaction out of the way.
append="console=ttyS0 panic=-1 softlockup_panic=1 loglevel=5 rdinit=/init hugepages=$hugepages transparent_hugepage=never"
mkfifo "$run/console"
set +e # QEMU's status is looked at below
timeout -k 10 "$timeout" qemu-system-x86_64 -accel tcg -cpu "$cpu" -smp "$cpus" -m "$memory" \
	-machine q35 -display none -monitor none -serial stdio -no-reboot -nodefaults \
	-kernel "$kdir/vmlinuz" -initrd "$run/initrd.cpio" \
	-append "$append" </dev/null >"$run/console" 2>&1 &
qpid=$!
exec 3<"$run/console"
tail_lines=() pending="" last_beat=$SECONDS
while :; do
	IFS= read -r -t 5 -u 3 line
	rrc=$?
	if [[ $rrc -gt 128 ]]; then
		# read timed out: keep a partial line for the next read.
		pending+=$line
		if [[ $state == ready && $((SECONDS - last_beat)) -ge $wedge ]]; then
			wedged=$((SECONDS - last_beat))
			say "L1 wedged: no heartbeat for ${wedged}s (bound ${wedge}s); stopping QEMU"
			kill -TERM "$qpid" 2>/dev/null
			break
		fi
		continue
	fi
	[[ $rrc -ne 0 && -z $line && -z $pending ]] && break # EOF
	line=${pending}${line%$'\r'}
	pending=""
	case "$line" in
	"$marker"*)
		msg=${line#"$marker"}
		last_beat=$SECONDS
		case "$msg" in
		hb*) ;;
		l1-up*) l1_up=$(elapsed); state=up; say "L1 /init after ${l1_up}s" ;;
		l1-ready*) l1_ready=$(elapsed); state=ready; say "L1 KVM ready after ${l1_ready}s (${msg#l1-ready })" ;;
		l1-failed*) state=failed; say "${msg#l1-failed }" ;;
		exit\ *) code=${msg#exit }; state=done ;;
		esac
		;;
	*)
		printf '%s\n' "$line"
		tail_lines+=("$line")
		[[ ${#tail_lines[@]} -gt 40 ]] && tail_lines=("${tail_lines[@]:1}")
		;;
	esac
	[[ $rrc -ne 0 ]] && break # EOF after a last unterminated line
done
exec 3<&-
wait "$qpid"
qrc=$?
set -e
total=$(elapsed)
case "$state" in
done)
	say "COMMAND exited $code; L1 /init ${l1_up}s, KVM ready ${l1_ready}s, whole run ${total}s"
	exit "$code"
	;;
esac
console_tail() {
	say "the last ${#tail_lines[@]} lines of L1's console:"
	printf '  | %s\n' "${tail_lines[@]}" >&2
}
if [[ -n $wedged ]]; then
	console_tail
	l1fail "L1 stopped making progress after ${total}s (L1 ready after ${l1_ready}s; no heartbeat for ${wedged}s)"
fi
if [[ $qrc -eq 124 || $qrc -eq 137 ]]; then
	console_tail
	if [[ $state == ready ]]; then
		say "timeout: COMMAND did not finish within ${timeout}s (L1 ready after ${l1_ready}s, heartbeats until the end)"
		exit 124
	fi
	say "timeout after ${timeout}s; L1 state: $state"
	exit 124
fi
console_tail
case "$state" in
start) l1fail "QEMU exited ($qrc) before L1 reached /init" ;;
up) l1fail "L1 reached /init but did not get KVM ready (QEMU exit $qrc)" ;;
failed) l1fail "L1 could not set up KVM (see above)" ;;
*) l1fail "L1 ended (QEMU exit $qrc) without reporting COMMAND's exit code" ;;
esac
