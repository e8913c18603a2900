#!/bin/bash
# test-bitmap-track.sh: persistent dirty bitmaps kept true by fastqcow.
# qemu-img adds bitmaps; fastqcow writes, zeroes and discards at known
# offsets; qemu-nbd -B exports each bitmap and nbdinfo must show exactly
# the granules those requests touched as dirty (at each bitmap's
# granularity), qemu-img check stays clean, no bitmap is left in use, a
# disabled bitmap keeps the bits qemu gave it, and a process killed (-9)
# in the middle of writing leaves its enabled bitmaps in use.
# SPDX-License-Identifier: MIT
set -u
: "${FASTQCOW:?FASTQCOW must point at the fastqcow tool}"
for t in qemu-img qemu-io qemu-nbd nbdinfo python3; do
    command -v $t >/dev/null || { echo "SKIP: $t not installed"; exit 77; }
done
T=$(mktemp -d "${TEST_TMPDIR:-/tmp}/bitmap-track.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
cd "$T" || exit 1
fail=0
bad() { echo "FAIL: $*"; fail=1; }
F() { "$FASTQCOW" "$@"; }

# dirty extents of bitmap $2 of image $1 as qemu-nbd exports them
dirty() {
    nbdinfo --map=qemu:dirty-bitmap:$2 -- [ qemu-nbd -r -B "$2" -f qcow2 "$1" ] |
        awk '$3 == 1 { print $1, $2 }'
}
# the extents requests "OFF LEN ..." dirty at granularity $1, disk size $2
expect() {
    python3 -c '
import sys
g, size = int(sys.argv[1]), int(sys.argv[2])
bits = set()
for a in sys.argv[3:]:
    off, ln = map(int, a.split(":"))
    bits.update(range(off // g, (min(off + ln, size) - 1) // g + 1))
runs, prev = [], None
for b in sorted(bits):
    if runs and b == prev + 1:
        runs[-1][1] += g
    else:
        runs.append([b * g, g])
    prev = b
for s, l in runs:
    print(s, min(l, size - s))
' "$@"
}
inuse() {
    qemu-img info --output=json -U "$1" | python3 -c '
import json, sys
bm = json.load(sys.stdin)["format-specific"]["data"].get("bitmaps", [])
print(" ".join(sorted(b["name"] for b in bm if "in-use" in b["flags"])) or "none")'
}

M=$((1024 * 1024))
for opts in "" "cluster_size=512"; do
    tag="[${opts:-defaults}]"
    rm -f a.qcow2
    size=$((64 * M + 4096 + 512))
    qemu-img create -q -f qcow2 ${opts:+-o $opts} a.qcow2 $size
    qemu-img bitmap --add -g 64k a.qcow2 b0
    qemu-img bitmap --add -g 512 a.qcow2 fine
    qemu-img bitmap --add -g 1M a.qcow2 coarse
    qemu-img bitmap --add -g 4k a.qcow2 off
    # qemu dirties "off" at 3M, then it is disabled: fastqcow keeps it so
    qemu-io -c 'write -P 1 3M 8k' a.qcow2 >/dev/null
    qemu-img bitmap --disable a.qcow2 off
    qemu-img bitmap --clear a.qcow2 b0
    qemu-img bitmap --clear a.qcow2 fine
    qemu-img bitmap --clear a.qcow2 coarse
    off_before=$(dirty a.qcow2 off)
    [ "$off_before" = "3145728 8192" ] || bad "$tag qemu's disabled bitmap: $off_before"

    reqs="1048576:65536 5243392:1024 20971520:131072 41943040:65536 67108864:4608 100:1"
    F io -c 'write -P 7 1M 64k' -c 'write -P 8 5243392 1k' -c 'write -z 20M 128k' \
        -c 'discard 40M 64k' -c 'write -P 9 64M 4608' -c 'write -P 3 100 1' a.qcow2 >/dev/null ||
        bad "$tag fastqcow io"
    qemu-img check -q a.qcow2 || { bad "$tag qemu-img check"; qemu-img check a.qcow2 | head; }
    [ "$(inuse a.qcow2)" = none ] || bad "$tag in use after close: $(inuse a.qcow2)"
    for b in b0:65536 fine:512 coarse:1048576; do
        name=${b%%:*} g=${b#*:}
        got=$(dirty a.qcow2 $name)
        want=$(expect $g $size $reqs)
        [ "$got" = "$want" ] || { bad "$tag bitmap $name"; diff <(echo "$want") <(echo "$got") | head; }
    done
    [ "$(dirty a.qcow2 off)" = "$off_before" ] || bad "$tag the disabled bitmap changed"
    # a second session adds to the first; a read-only one changes nothing
    F io -c 'write -P 5 30M 4k' a.qcow2 >/dev/null || bad "$tag second write"
    cp a.qcow2 ro.qcow2
    F io -r -c 'read 0 64k' a.qcow2 >/dev/null
    cmp -s a.qcow2 ro.qcow2 || bad "$tag a read-only open changed the file"
    got=$(dirty a.qcow2 b0)
    want=$(expect 65536 $size $reqs 31457280:4096)
    [ "$got" = "$want" ] || { bad "$tag second session"; diff <(echo "$want") <(echo "$got") | head; }
    qemu-img check -q a.qcow2 || bad "$tag qemu-img check after the second session"
    qemu-io -c 'read -P 7 1M 64k' -c 'read -P 5 30M 4k' -c 'read -P 9 64M 4608' a.qcow2 |
        grep -q 'verification failed' && bad "$tag content"
done

# resize: the bitmaps follow the disk as qemu-img resize makes them follow
for sz in 300M 2G; do
    rm -f rq.qcow2 rf.qcow2
    qemu-img create -q -f qcow2 rq.qcow2 1G
    qemu-img bitmap --add -g 512 rq.qcow2 b
    qemu-io -c 'write 1M 4k' -c 'write 260M 50M' -c 'write 900M 1M' rq.qcow2 >/dev/null
    cp rq.qcow2 rf.qcow2
    qemu-img resize -q --shrink rq.qcow2 $sz
    "$FASTQCOW" resize -q --shrink rf.qcow2 $sz || bad "resize $sz"
    qemu-img check -q rf.qcow2 || bad "resize $sz: qemu-img check"
    [ "$(dirty rq.qcow2 b)" = "$(dirty rf.qcow2 b)" ] || bad "resize $sz: bits differ"
done

# killed in the middle: the enabled bitmaps stay in use, the disabled one not
rm -f k.qcow2
qemu-img create -q -f qcow2 k.qcow2 64M
qemu-img bitmap --add k.qcow2 on
qemu-img bitmap --add --disable k.qcow2 off
"$FASTQCOW" io -c 'write -P 1 0 1M' -c 'sleep 20000' k.qcow2 >io.out 2>&1 &
pid=$!
for _ in $(seq 600); do
    out=$(qemu-io -U -r -c 'read -P 1 0 1M' k.qcow2 2>&1)
    case $out in *failed*) ;; read*) break;; esac
    sleep 0.1
done
[ "$(inuse k.qcow2)" = on ] || bad "kill -9: in use while open: $(inuse k.qcow2)"
kill -9 $pid; wait $pid 2>/dev/null
[ "$(inuse k.qcow2)" = on ] || bad "kill -9: in use after the kill: $(inuse k.qcow2)"
qemu-img check -q k.qcow2; rc=$?
[ $rc = 0 ] || [ $rc = 3 ] || bad "kill -9: qemu-img check exit $rc"
# the next read-write open leaves the inconsistent one alone
F io -c 'write -P 2 1M 64k' k.qcow2 >/dev/null || bad "kill -9: write after"
[ "$(inuse k.qcow2)" = on ] || bad "kill -9: in use after a later session: $(inuse k.qcow2)"
qemu-img check -q k.qcow2; rc=$?
[ $rc = 0 ] || [ $rc = 3 ] || bad "kill -9: qemu-img check exit $rc after a later session"
exit $fail
