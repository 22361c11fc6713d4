#!/usr/bin/env bash
# The corrected shell recipe of kernel-findings §2, as a baseline for bench_create.py.
#
# Each guest's mount namespace is cloned from the HOST namespace with unshare(1), as the 2006
# thread's recipe does, so its cost grows with every mount the host has (every existing mirror
# included; findings §4). The guest is kept alive by a bind of its nsfs file, like mirrormount.
#
#   recipe.sh setup                    BASE (self-bind, private, unbindable), the holder dir
#   recipe.sh create NAME              one guest: mirror + namespace + pivot_root
#   recipe.sh fill PREFIX FROM TO      guests PREFIX{FROM..TO}; prints "NAME SECONDS" per guest
#   recipe.sh destroy NAME             unmount the mirror and release the namespace
#
# Env: RECIPE_BASE (/container), RECIPE_NS (/run/recipe-ns), RECIPE_ROOTFS (/).
# Needs root. ONLY run it inside a throwaway namespace (bench_create.py uses mirrormount.sandbox):
# it changes the mount table of the namespace it runs in.
set -euo pipefail

BASE=${RECIPE_BASE:-/container}
NSDIR=${RECIPE_NS:-/run/recipe-ns}
ROOTFS=${RECIPE_ROOTFS:-/}
OLD=.old                      # put_old, a directory of the rootfs (created by setup)
NCPU=$(nproc)

die() { echo "recipe.sh: $*" >&2; exit 1; }

setup() {
    mkdir -p "$BASE" "$NSDIR"
    [ -d "$ROOTFS/$OLD" ] || mkdir "$ROOTFS/$OLD"
    # The recipe's BASE: a bind onto itself, private, unbindable (pruned from every rbind).
    mount --bind "$BASE" "$BASE"
    mount --make-private "$BASE"
    mount --make-unbindable "$BASE"
    # Where the nsfs binds live: its own tmpfs, private and unbindable (findings §5, §5b), so
    # an rbind of / never drags the holders into a mirror.
    mount -t tmpfs -o mode=0700 recipe-ns "$NSDIR"
    mount --make-private "$NSDIR"
    mount --make-unbindable "$NSDIR"
}

# The guest side: runs as the first process of a mount namespace unshared from the host's.
# shellcheck disable=SC2016
GUEST_SCRIPT='
set -e
m=$1; old=$2
mount --make-private /                  # not recursive: only the root mount
mount --bind "$m/$old" "$m/$old"
mount --make-private "$m/$old"          # put_old must not be shared
cd "$m"
pivot_root . "$old"
cd /
mount --make-rprivate "/$old"           # findings §3: the detach must propagate nowhere
umount -l "/$old"
echo ok
exec sleep 2147483647                   # until the host has bound /proc/PID/ns/mnt
'

create() {
    local name=$1 m="$BASE/$1" holder="$NSDIR/$1" attempt pin fd pid line
    mkdir "$m"
    mount --rbind "$ROOTFS" "$m"
    mount --make-rprivate "$m"          # leave the host's peer groups first ...
    mount --make-rshared "$m"           # ... then a fresh peer group per mount
    : > "$holder"
    # findings §6: an nsfs bind made outside the initial namespace can fail with EINVAL (the
    # new namespace's id is not above ours; ids are handed out in per-CPU batches). Throw that
    # namespace away and build a fresh one pinned to another CPU; remember the CPU that worked.
    local good= first
    [ -r "$NSDIR/.cpu" ] && read -r good < "$NSDIR/.cpu"
    first=${good:-0}
    for attempt in 1 2 3 4 5 6 7 8; do
        pin=()
        if [ -n "$good" ] && [ "$attempt" = 1 ]; then
            pin=(taskset -c "$good")
        elif [ "$attempt" -gt 1 ]; then
            good=$(( (first + attempt - 1) % NCPU )); pin=(taskset -c "$good")
        fi
        exec {fd}< <(exec "${pin[@]}" unshare --mount --propagation unchanged -- \
                        /bin/sh -c "$GUEST_SCRIPT" guest "$m" "$OLD")
        pid=$!
        line=
        read -r -u "$fd" line || true
        # The guest's put_old bind propagated to the host's mirror: remove it from here.
        umount "$m/$OLD" 2>/dev/null || true
        if [ "$line" != ok ]; then
            kill "$pid" 2>/dev/null || true
            exec {fd}<&-
            die "create $name: the guest side failed"
        fi
        if mount --bind "/proc/$pid/ns/mnt" "$holder" 2>/dev/null; then
            kill "$pid"
            exec {fd}<&-
            if [ "$attempt" -gt 1 ]; then
                echo "$good" > "$NSDIR/.cpu"
                echo "recipe.sh: $name: nsfs bind needed $attempt attempts" >&2
            fi
            return 0
        fi
        kill "$pid"
        exec {fd}<&-
    done
    die "create $name: binding /proc/$pid/ns/mnt failed $attempt times"
}

destroy() {
    local name=$1 m="$BASE/$1" holder="$NSDIR/$1"
    umount "$holder" 2>/dev/null || true
    rm -f "$holder"
    # Private first, so the detach does not propagate into the guest's copies (findings §3).
    mount --make-rprivate "$m"
    umount -l "$m"
    rmdir "$m"
}

fill() {
    local prefix=$1 from=$2 to=$3 i t0 t1
    for ((i = from; i <= to; i++)); do
        t0=$EPOCHREALTIME
        create "$prefix$i"
        t1=$EPOCHREALTIME
        echo "$prefix$i $(( (${t1/./} - ${t0/./}) ))e-6"
    done
}

[ "$(id -u)" = 0 ] || die "needs root"
cmd=${1:-}; shift || true
case $cmd in
    setup) setup ;;
    create) [ $# -ge 1 ] || die "usage: create NAME"; for n in "$@"; do create "$n"; done ;;
    destroy) [ $# -ge 1 ] || die "usage: destroy NAME"; for n in "$@"; do destroy "$n"; done ;;
    fill) [ $# -eq 3 ] || die "usage: fill PREFIX FROM TO"; fill "$@" ;;
    *) die "usage: recipe.sh setup | create NAME... | destroy NAME... | fill PREFIX FROM TO" ;;
esac
