#!/usr/bin/env bash
# Run a command inside a throw-away VM booted with Debian's distro kernel
# (which ships VRF as a module) through virtme-ng, under software emulation.
#
# Usage: scripts/vm-run.sh [--rwdir DIR]... [--cached DIR]... [--] CMD [ARGS...]
#
# The guest sees the host filesystem (virtme-ng shares / read-only over 9p;
# /etc /home /opt /srv /usr /var /tmp get a guest-private tmpfs overlay, i.e.
# writable inside but never written back; /run and /dev/shm are guest tmpfs).
# Written back to the host: the repo, the cargo target dir
# (${CARGO_TARGET_DIR:-<repo>/target}) and every --rwdir DIR.
#
# The 9p shares are mounted without caching: a file's pages are dropped with
# its last user, so a binary exec'd straight from them is read again, page
# by page, at every exec (under TCG ~100 ms for a 1.2 MB static binary). The
# overlays above keep their files cached; --cached DIR puts DIR (a directory
# of binaries, e.g. the plugins) under such a read-only overlay too. DIR is
# then read-only in the guest and shows what it held at boot.
#
# Before CMD the guest loads vrf, veth and bridge (failing loudly if any is
# missing), brings lo up and makes sure /run/netns exists (`ip netns add`
# works: /run is a writable tmpfs). CMD runs as root in the current
# directory, with the host's PATH, HOME and KRAFTY_*/CARGO*/RUST*/NEXTEST_*/
# CNI_PATH variables forwarded, so e.g. `cargo nextest run` works.
#
# Exit status: CMD's exit status. 125 if the VM could not be started or CMD
# never ran (missing prerequisites, boot failure, module load failure);
# 124 on timeout; 2 on usage errors. CMD's stdout/stderr are passed through
# unchanged (virtme-ng keeps them separate); stdin is /dev/null.
#
# Notes: boot under TCG takes ~15s idle, 40s+ on a loaded host. Prefer
# building on the host and running the binaries in the VM (compiling under
# TCG is very slow). File locks do not cross the 9p share, so do not run
# cargo on the same target dir in the host and the guest at the same time.
#
# Environment:
#   KRAFTY_VM_KERNEL   kernel image (default: newest /boot/vmlinuz-*-amd64)
#   KRAFTY_VM_MEMORY   guest memory (default 2G)
#   KRAFTY_VM_CPUS     guest vCPUs (default 2)
#   KRAFTY_VM_TIMEOUT  seconds before the VM is killed (default 3600, 0 = none)
#   KRAFTY_VM_VERBOSE  1: show virtme-ng's command line and boot console
set -euo pipefail

prog=vm-run.sh
infra_fail=125

die() { echo "$prog: ERROR: $*" >&2; exit "$infra_fail"; }
usage() {
    sed -n '5p' "${BASH_SOURCE[0]}" | sed 's/^# //' >&2
    exit 2
}

# ---------------------------------------------------------------------------
# Guest side: the script re-executes itself inside the VM as
#   vm-run.sh --in-guest STATUS_FILE [--cached DIR]... -- CMD [ARGS...]
# ---------------------------------------------------------------------------
guest_main() {
    local status_file=$1
    shift
    local m rc
    local cached=()
    while [ "$1" = --cached ]; do
        cached+=("$2")
        shift 2
    done
    shift # --
    for m in vrf veth bridge; do
        if ! modprobe "$m"; then
            echo "$prog: ERROR: 'modprobe $m' failed in the VM (kernel $(uname -r));" \
                "is linux-image-amd64 installed with its /lib/modules tree?" >&2
            exit "$infra_fail"
        fi
    done
    # Handy for tests, not required: do not fail if absent.
    modprobe dummy 2>/dev/null || true
    ip link set lo up
    mkdir -p /run/netns
    # Read-only overlays keep the files of these directories in the guest's page cache.
    for m in ${cached[@]+"${cached[@]}"}; do
        mkdir -p /run/vm-run-empty
        if ! mount -t overlay vm-run-cached -o "ro,lowerdir=$m:/run/vm-run-empty" "$m"; then
            echo "$prog: ERROR: cannot mount a read-only overlay over $m (--cached)" >&2
            exit "$infra_fail"
        fi
    done

    # `|| rc=$?` keeps set -e from aborting on CMD's failure.
    rc=0
    "$@" || rc=$?
    # Record that CMD really ran (and its status) where the host can read it.
    echo "$rc" >"$status_file"
    sync
    exit "$rc"
}

if [ "${1:-}" = --in-guest ]; then
    if [ $# -lt 3 ]; then
        echo "$prog: bad --in-guest call" >&2
        exit "$infra_fail"
    fi
    status_file=$2
    shift 2
    # [--cached DIR]... -- CMD
    args=("$@")
    i=0
    while [ "${args[i]:-}" = --cached ] && [ $((i + 1)) -lt ${#args[@]} ]; do i=$((i + 2)); done
    if [ "${args[i]:-}" != -- ] || [ $((i + 1)) -ge ${#args[@]} ]; then
        echo "$prog: bad --in-guest call" >&2
        exit "$infra_fail"
    fi
    guest_main "$status_file" "$@"
fi

# ---------------------------------------------------------------------------
# Host side
# ---------------------------------------------------------------------------
self=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")
repo=$(cd "$(dirname "$self")/.." && pwd)

rwdirs=()
cached=()
while [ $# -gt 0 ]; do
    case $1 in
        --rwdir) [ $# -ge 2 ] || usage; rwdirs+=("$2"); shift 2 ;;
        --rwdir=*) rwdirs+=("${1#--rwdir=}"); shift ;;
        --cached) [ $# -ge 2 ] || usage; cached+=("$2"); shift 2 ;;
        --cached=*) cached+=("${1#--cached=}"); shift ;;
        --) shift; break ;;
        -h|--help) usage ;;
        -*) echo "$prog: unknown option $1" >&2; usage ;;
        *) break ;;
    esac
done
[ $# -gt 0 ] || usage

# --- prerequisites (fail loudly, naming what to install) --------------------
apt_hint="apt-get install qemu-system-x86 linux-image-amd64 busybox-static; pip install virtme-ng"
command -v vng >/dev/null 2>&1 || die "virtme-ng ('vng') not found in PATH ($apt_hint)"
command -v qemu-system-x86_64 >/dev/null 2>&1 || die "qemu-system-x86_64 not found ($apt_hint)"
command -v busybox >/dev/null 2>&1 || die "busybox not found (apt-get install busybox-static)"

kernel=${KRAFTY_VM_KERNEL:-}
if [ -z "$kernel" ]; then
    kernel=$(find /boot -maxdepth 1 -name 'vmlinuz-*-amd64' 2>/dev/null | sort -V | tail -n 1)
    [ -n "$kernel" ] || die "no /boot/vmlinuz-*-amd64 kernel image (apt-get install linux-image-amd64)"
fi
[ -r "$kernel" ] || die "kernel image $kernel missing or unreadable (apt-get install linux-image-amd64)"
kver=$(basename "$kernel")
kver=${kver#vmlinuz-}
moddir=/lib/modules/$kver
[ -d "$moddir" ] || die "no modules for kernel $kver in $moddir (apt-get install linux-image-amd64)"
[ -n "$(find "$moddir" -name 'vrf.ko*' -print -quit)" ] ||
    die "kernel $kver has no vrf module under $moddir (need Debian's linux-image-amd64)"

# --- directories the guest may write back to the host -----------------------
target_dir=${CARGO_TARGET_DIR:-$repo/target}
case $target_dir in /*) ;; *) target_dir=$PWD/$target_dir ;; esac
mkdir -p "$target_dir"
status_dir=$(mktemp -d "$target_dir/vm-run.XXXXXX")
trap 'rm -rf "$status_dir"' EXIT
status_file=$status_dir/status

vng_rw=()
declare -A seen=()
add_rw() {
    local d
    [ -d "$1" ] || die "--rwdir $1: not a directory"
    d=$(cd "$1" && pwd -P)
    [ -n "${seen[$d]:-}" ] && return 0
    seen[$d]=1
    vng_rw+=(--rwdir "$d")
}
add_rw "$repo"
# Only needed when the target dir lives outside the repo; a nested --rwdir
# would be a second, redundant share.
case $(cd "$target_dir" && pwd -P)/ in
    "$(cd "$repo" && pwd -P)"/*) ;;
    *) add_rw "$target_dir" ;;
esac
for d in "${rwdirs[@]}"; do add_rw "$d"; done

# --- directories kept in the guest's page cache (--cached) --------------------
cached_args=()
for d in "${cached[@]}"; do
    [ -d "$d" ] || die "--cached $d: not a directory"
    d=$(cd "$d" && pwd -P)
    case $d in
        *[:,]*) die "--cached $d: an overlay lower directory cannot contain ':' or ','" ;;
    esac
    cached_args+=(--cached "$d")
done

# --- environment forwarded to CMD --------------------------------------------
# virtme-ng gives the guest a fixed PATH/HOME and no host environment.
fwd_env=(PATH="$PATH" HOME="${HOME:-/root}")
while IFS= read -r var; do
    fwd_env+=("$var=${!var}")
done < <(compgen -e | grep -E '^(KRAFTY_|CARGO|RUST|NEXTEST_|CNI_PATH$)' | grep -vE '^KRAFTY_VM_' || true)

# virtme-ng runs --exec through /bin/sh (dash), so bash's printf %q ($'..')
# is not usable: single-quote every word POSIX-style instead.
shquote() {
    local w out=
    for w in "$@"; do
        out+="'${w//\'/\'\\\'\'}' "
    done
    printf '%s' "$out"
}
# The command goes to the guest in a file: what --exec gets travels on the guest
# kernel's command line, which holds 2048 bytes (a longer one panics the guest
# at boot, and the VM then hangs until the timeout).
shquote env "${fwd_env[@]}" bash "$self" --in-guest "$status_file" \
    ${cached_args[@]+"${cached_args[@]}"} -- "$@" >"$status_dir/command"
guest_cmd=$(shquote sh "$status_dir/command")

vng_args=(
    --run "$kernel"
    --disable-kvm   # KVM hangs on this host: TCG software emulation only
    --cpus "${KRAFTY_VM_CPUS:-2}"
    --memory "${KRAFTY_VM_MEMORY:-2G}"
    --cwd "$PWD"
    "${vng_rw[@]}"
    --exec "$guest_cmd"
)
[ "${KRAFTY_VM_VERBOSE:-0}" = 1 ] && vng_args=(--verbose "${vng_args[@]}")

timeout_s=${KRAFTY_VM_TIMEOUT:-3600}
runner=()
[ "$timeout_s" != 0 ] && runner=(timeout --kill-after=30 "$timeout_s")
[ "${KRAFTY_VM_VERBOSE:-0}" = 1 ] && echo "$prog: ${runner[*]} vng ${vng_args[*]}" >&2

# vng/qemu reopen /proc/self/fd/1 and /proc/self/fd/2 with O_TRUNC: when
# our stdout/stderr is a regular file this truncates it and writes from
# offset 0, clobbering whatever the caller had written before. Hand them
# FIFOs instead and copy to the real stdout/stderr (streaming).
fifo_dir=$(mktemp -d)
trap 'rm -rf "$status_dir" "$fifo_dir"' EXIT
mkfifo "$fifo_dir/out" "$fifo_dir/err"
cat <"$fifo_dir/out" &
cat_out=$!
cat <"$fifo_dir/err" >&2 &
cat_err=$!

vng_rc=0
start=$SECONDS
"${runner[@]}" vng "${vng_args[@]}" </dev/null >"$fifo_dir/out" 2>"$fifo_dir/err" || vng_rc=$?
wait "$cat_out" "$cat_err" || true

if [ ! -s "$status_file" ]; then
    # CMD never completed inside the guest: never report success.
    if [ "$vng_rc" = 124 ] && [ "$timeout_s" != 0 ]; then
        echo "$prog: ERROR: VM timed out after ${timeout_s}s (KRAFTY_VM_TIMEOUT)" >&2
        exit 124
    fi
    [ "$vng_rc" = "$infra_fail" ] && exit "$infra_fail" # guest setup already explained
    die "the VM did not run the command to completion (vng exit status $vng_rc," \
        "$((SECONDS - start))s); rerun with KRAFTY_VM_VERBOSE=1 to see the boot console"
fi
rc=$(cat "$status_file")
if [ "$rc" != "$vng_rc" ]; then
    echo "$prog: warning: vng exit status $vng_rc != command status $rc; using $rc" >&2
fi
exit "$rc"
