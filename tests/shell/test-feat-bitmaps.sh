#!/bin/bash
# test-feat-bitmaps.sh: persistent dirty bitmaps that qemu-img made.
# fastqcow keeps them: after a write and close none is "in use", qemu-img
# check stays clean, qemu-img lists them and can remove them (the exact
# bits are checked by test-bitmap-track.sh); a damaged bitmap directory is dropped by clearing the bitmaps bit
# (leaked clusters at worst, never a write into it). `info` lists them as
# qemu-img does (human and json). `measure` reports the
# bytes the bitmaps need ("bitmaps size") as qemu-img does.
# SPDX-License-Identifier: MIT
set -u
: "${FASTQCOW:?FASTQCOW must point at the fastqcow tool}"
command -v qemu-img >/dev/null && command -v qemu-io >/dev/null && command -v python3 >/dev/null ||
    { echo "SKIP: qemu-img/qemu-io/python3 not installed"; exit 77; }
T=$(mktemp -d "${TEST_TMPDIR:-/tmp}/feat-bitmaps.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
cd "$T" || exit 1
fail=0
bad() { echo "FAIL: $*"; fail=1; }
F() { "$FASTQCOW" "$@"; }

for opts in "" "cluster_size=4k" "cluster_size=2M,refcount_bits=64" "extended_l2=on"; do
    tag="[${opts:-defaults}]"
    rm -f a.qcow2
    qemu-img create -q -f qcow2 ${opts:+-o $opts} a.qcow2 100M
    qemu-io -c 'write -P 7 0 1M' a.qcow2 >/dev/null
    qemu-img bitmap --add a.qcow2 b0
    qemu-img bitmap --add -g 512k a.qcow2 a-bitmap-with-a-longer-name
    qemu-img bitmap --add -g 4k --disable a.qcow2 fine
    # measure: bitmaps size for several targets
    for t in "" "-o cluster_size=4k" "-o cluster_size=2M" "-o compat=0.10"; do
        qemu-img measure -O qcow2 $t a.qcow2 >q.out; F measure -O qcow2 $t a.qcow2 >f.out
        cmp -s q.out f.out || { bad "$tag measure $t"; diff q.out f.out; }
        qemu-img measure --output=json -O qcow2 $t a.qcow2 >q.out
        F measure --output=json -O qcow2 $t a.qcow2 >f.out
        cmp -s q.out f.out || { bad "$tag measure --output=json $t"; diff q.out f.out; }
    done
    # info lists them as qemu-img does, before and after a write
    infos() {
        for o in human json; do
            qemu-img info --output=$o a.qcow2 >q.out; F info --output=$o a.qcow2 >f.out
            cmp -s q.out f.out || { bad "$tag info --output=$o ($1)"; diff q.out f.out | head -20; }
        done
    }
    infos "as made"
    # reading changes nothing
    cp a.qcow2 before.qcow2
    F io -r -c 'read -P 7 0 1M' a.qcow2 >/dev/null || bad "$tag read"
    cmp -s a.qcow2 before.qcow2 || bad "$tag a read-only open changed the file"
    # a write: no bitmap left in use, nothing leaked
    F io -c 'write -P 9 1M 64k' a.qcow2 >/dev/null || bad "$tag write"
    qemu-img check -q a.qcow2 || { bad "$tag qemu-img check after a write"; qemu-img check a.qcow2 | head -5; }
    F check a.qcow2 >/dev/null || bad "$tag fastqcow check after a write"
    n=$(qemu-img info --output=json a.qcow2 | python3 -c '
import json, sys
bm = json.load(sys.stdin)["format-specific"]["data"].get("bitmaps", [])
print(sum("in-use" in b["flags"] for b in bm), len(bm))')
    [ "$n" = "0 3" ] || bad "$tag bitmaps in use / listed: $n (want 0 3)"
    infos "after a write"
    qemu-io -c 'read -P 7 0 1M' -c 'read -P 9 1M 64k' a.qcow2 | grep -q 'verification failed' &&
        bad "$tag content"
    # qemu can drop them again, and then the image is clean
    for b in b0 a-bitmap-with-a-longer-name fine; do
        qemu-img bitmap --remove a.qcow2 $b || bad "$tag qemu-img bitmap --remove $b"
    done
    qemu-img check -q a.qcow2 || bad "$tag qemu-img check after removing the bitmaps"
done

# a damaged directory (pointing into the L1 table) is never written: the
# bitmaps bit is cleared instead and the image stays free of corruption
qemu-img create -q -f qcow2 d.qcow2 64M
qemu-img bitmap --add d.qcow2 b0
python3 - d.qcow2 <<'PY'
import struct, sys
p = sys.argv[1]
d = bytearray(open(p, 'rb').read())
l1 = struct.unpack('>Q', d[40:48])[0]
off = struct.unpack('>I', d[100:104])[0]
while True:
    t, l = struct.unpack('>II', d[off:off + 8])
    if t == 0:
        break
    if t == 0x23852875:
        d[off + 24:off + 32] = struct.pack('>Q', l1)
    off += 8 + ((l + 7) & ~7)
open(p, 'wb').write(d)
PY
F io -c 'write -P 5 0 64k' d.qcow2 >/dev/null || bad "damaged directory: write refused"
qemu-img check -q d.qcow2 2>/dev/null; rc=$?
[ $rc = 0 ] || [ $rc = 3 ] || bad "damaged directory: qemu-img check exit $rc"
qemu-io -c 'read -P 5 0 64k' d.qcow2 2>/dev/null | grep -q 'verification failed' && bad "damaged directory: content"
exit $fail
