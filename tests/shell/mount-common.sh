# mount-common.sh: sourced by the test-mount-*.sh tests. Skips (77) where
# FUSE cannot be used; mounts through `fastqcow mount --pid-file` and keeps
# every server's pid, so that the EXIT trap unmounts and kills whatever a
# failed test left (nothing stays mounted or running).
# SPDX-License-Identifier: MIT
: "${FASTQCOW:?FASTQCOW must point at the fastqcow tool}"
command -v qemu-img >/dev/null || { echo "SKIP: qemu-img not installed"; exit 77; }
if [ ! -c /dev/fuse ]; then
    echo "SKIP: FUSE unavailable (no /dev/fuse)"; exit 77
fi
if [ "$(id -u)" -ne 0 ] && ! command -v fusermount3 >/dev/null; then
    echo "SKIP: FUSE unavailable (not root and no fusermount3)"; exit 77
fi
if [ "$(id -u)" -eq 0 ] && ! { exec 9<>/dev/fuse; } 2>/dev/null; then
    echo "SKIP: FUSE unavailable (/dev/fuse cannot be opened)"; exit 77
fi
exec 9>&-

T=$(mktemp -d "${TEST_TMPDIR:-/tmp}/${MT_NAME:-mount}.XXXXXX") || exit 1
MT_MOUNTS=()
MT_PIDS=()
declare -A MT_PID_OF
fail=0
bad() { echo "FAIL: $*"; fail=1; }
F() { "$FASTQCOW" "$@"; }

# alive PID: the process exists and has not exited (a zombie has)
alive() { local st; st=$(ps -o stat= -p "$1" 2>/dev/null) && [ "${st#Z}" = "$st" ]; }

mt_cleanup() {
    local f p
    for f in "${MT_MOUNTS[@]}"; do
        if grep -qF " $f " /proc/self/mountinfo 2>/dev/null; then
            echo "cleanup: $f was left mounted"
            fusermount3 -u -z "$f" 2>/dev/null || umount -l "$f" 2>/dev/null
        fi
    done
    for p in "${MT_PIDS[@]}"; do
        alive "$p" && { echo "cleanup: server $p was left running"; kill -9 "$p"; }
    done
    rm -rf "$T"
}
trap mt_cleanup EXIT
cd "$T" || exit 1

# mnt [options] IMAGE FILE: mount in the background; the server's pid goes
# to MT_PIDS. Returns fastqcow mount's exit code.
mnt() {
    local file=${*: -1} pidf
    pidf="$T/.pid.$RANDOM$RANDOM"
    MT_MOUNTS+=("$(cd "$(dirname "$file")" && pwd)/$(basename "$file")")
    F mount --pid-file "$pidf" "$@" || return
    MT_PIDS+=("$(cat "$pidf")")
    MT_PID_OF[$file]=$(cat "$pidf")
}
# umnt FILE: fastqcow umount, which returns once the server has closed
# the image and exited.
umnt() {
    F umount "$1" || bad "umount $1"
    local p=${MT_PID_OF[$1]:-}
    [ -n "$p" ] && alive "$p" && bad "umount $1 returned before the server exited"
}
# is_mounted FILE
is_mounted() { grep -qF " $(cd "$(dirname "$1")" && pwd)/$(basename "$1") " /proc/self/mountinfo; }
