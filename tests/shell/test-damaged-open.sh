#!/bin/bash
# test-damaged-open.sh: damaged images open as qemu opens them.
#
# A base image (qemu-img, qemu-io) gets one piece of damage per class: a
# refcount table entry that is unaligned, points into the header, past the
# end of the file, or has reserved bits; a snapshot table entry whose
# lengths run past the table or the file; an L1 or L2 entry that is
# unaligned or past the end (controls). For each, the same commands run
# through qemu-img / qemu-io and through fastqcow on copies: info, check,
# snapshot -l, map, reads with a pattern (read-only and read-write), a write
# into a cluster the image owns alone, a write that needs a new cluster
# (refcounts), info again (corrupt bit). Their standard output, standard
# error and exit code must be the same byte for byte, once timings and
# program names are filtered; where fastqcow differs on purpose
# (docs/COMPATIBILITY.md, "Damaged images") only the exit code and the
# corrupt bit are compared. Then `check -r all` must leave an image
# qemu-img finds clean, with the guest data of the damaged image (qemu-img
# compare against the base; the snapshot classes keep the snapshot).
# SPDX-License-Identifier: MIT
set -u
. "$(dirname "${BASH_SOURCE[0]}")/sample-lib.sh" || exit 1   # sampling (FQ_TEST_SEED)
: "${FASTQCOW:?FASTQCOW must point at the fastqcow tool}"
command -v qemu-img >/dev/null && command -v qemu-io >/dev/null && command -v python3 >/dev/null ||
    { echo "SKIP: qemu-img/qemu-io/python3 not installed"; exit 77; }
T=$(mktemp -d "${TEST_TMPDIR:-/tmp}/damaged-open.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
cd "$T" || exit 1
fail=0
bad() { echo "FAIL: $*"; fail=1; }

# the base: 64 KiB clusters, data at 0 (2 clusters) and 1M, a snapshot
# whose table is the last thing in the file in base-snap
qemu-img create -q -f qcow2 base.qcow2 4M
qemu-io -c 'write -P 0x11 0 128k' -c 'write -P 0x22 1M 64k' base.qcow2 >/dev/null
cp base.qcow2 base-snap.qcow2
qemu-img snapshot -c s1 base-snap.qcow2

# damage IMG CLASS OUT: write a damaged copy
damage() {
    python3 - "$@" <<'PY'
import struct, sys
src, kind, dst = sys.argv[1:4]
b = bytearray(open(src, 'rb').read())
be64 = lambda o: struct.unpack_from('>Q', b, o)[0]
put64 = lambda o, v: struct.pack_into('>Q', b, o, v)
l1, rt, snap = be64(40), be64(48), be64(64)
l2 = be64(l1) & 0x00fffffffffffe00
if kind == 'rt-unaligned': put64(rt, be64(rt) + 0x200)
elif kind == 'rt-header': put64(rt, 0x200)
elif kind == 'rt-eof': put64(rt, 0x10000000)
elif kind == 'rt-reserved': put64(rt, be64(rt) | 1)
elif kind == 'rt1-unaligned': put64(rt + 8, 0x10000200)
elif kind == 'rt1-eof': put64(rt + 8, 0x10000000)
elif kind == 'rt-huge': put64(rt, 0x0100000000000000)
elif kind == 'rt-huger': put64(rt, 0x1000000000000000)
elif kind == 'l1-unaligned': put64(l1, be64(l1) + 0x200)
elif kind == 'l2-unaligned': put64(l2, be64(l2) + 0x200)
elif kind == 'l2-eof': put64(l2, (1 << 63) | 0x10000000)
elif kind == 'snap-extra-long': struct.pack_into('>I', b, snap + 36, 1000)
elif kind == 'snap-id-long': struct.pack_into('>H', b, snap + 12, 60000)
elif kind == 'snap-name-long': struct.pack_into('>H', b, snap + 14, 65535)
elif kind == 'snap-past-eof':
    struct.pack_into('>H', b, snap + 14, 65535)
    del b[snap + 100:]
else: sys.exit('unknown damage ' + kind)
open(dst, 'wb').write(b)
PY
}

# filter: timings, program names, the disk usage (file sizes may differ
# once written)
filt() {
    sed -E -e 's/^[0-9.]+ [KMGT]?i?B, [0-9]+ ops; .*/TIMING/' \
        -e 's/^(qemu-img|qemu-io|fastqcow|fastqcow io): //' \
        -e '/^disk size:/d'
}

# run WHO DIR CMD...: run the tool in DIR; WHO is q (qemu) or f (fastqcow);
# the command's first word is img or io
run() {
    local who=$1 dir=$2 tool=$3; shift 3
    local -a cmd
    if [ "$who" = q ]; then
        [ "$tool" = img ] && cmd=(qemu-img) || cmd=(qemu-io)
    else
        [ "$tool" = img ] && cmd=("$FASTQCOW") || cmd=("$FASTQCOW" io)
    fi
    (cd "$dir" && timeout 60 "${cmd[@]}" "$@" >out 2>err </dev/null; echo $? >rc)
    filt <"$dir/out" >"$dir/out.f"; filt <"$dir/err" >"$dir/err.f"
}

# same CLASS STEP EXACT TOOL ARGS...: run on both copies, compare
same() {
    local cls=$1 step=$2 exact=$3; shift 3
    run q "q" "$@"; run f "f" "$@"
    if ! cmp -s q/rc f/rc; then
        bad "$cls $step: exit $(cat f/rc), qemu $(cat q/rc)"
        diff q/err.f f/err.f | head -5
    elif [ "$exact" = 1 ] && { ! cmp -s q/out.f f/out.f || ! cmp -s q/err.f f/err.f; }; then
        bad "$cls $step: output differs from qemu's"
        diff q/out.f f/out.f | head -10; diff q/err.f f/err.f | head -10
    fi
}

# classes: NAME BASE WRITES: 1 the writes as qemu's; 0 the same outcome
# (rt-eof: both refuse the write that needs a refcount and mark the image
# corrupt, each with its own reason: a block past the end of the file); - the writes succeed where qemu
# refuses them (an entry's lengths make qemu's snapshot table overlap an
# L2 table the image uses: fastqcow protects the tables it uses); c a
# control (damage in an L1 or L2 table, not the subject here): exit codes
# and the corrupt bit only, no repair expected (qemu-img has none either)
# a sanitizer run (FQ_TEST_QUICK) takes every other class (which half
# rotating with the seed; each kind of the list has two or more in a row)
share=$(sample_share 1 2)
n=0
while read -r cls base wexact; do
    n=$((n + 1)); sample_pick $n "$share" || continue
    rm -rf q f; mkdir q f
    damage "$base.qcow2" "$cls" "dmg.qcow2" || { bad "$cls: damage"; continue; }
    cp dmg.qcow2 q/w.qcow2; cp dmg.qcow2 f/w.qcow2
    ex=1; [ "$wexact" = c ] && ex=0
    same "$cls" info 1 img info w.qcow2
    same "$cls" check $ex img check w.qcow2
    [ "$base" = base-snap ] && same "$cls" snapshot-list 1 img snapshot -l w.qcow2
    same "$cls" map $ex img map --output=json w.qcow2
    same "$cls" read-ro $ex io -r -c 'read -P 0x11 0 128k' -c 'read -P 0x22 1M 64k' -c 'read -P 0 2M 64k' w.qcow2
    same "$cls" read-rw $ex io -c 'read -P 0x11 0 128k' -c 'read -P 0x22 1M 64k' w.qcow2
    if [ "$wexact" = c ]; then
        # controls (damage in the L1 or L2 tables): the same outcomes
        same "$cls" write-owned 0 io -c 'write -P 0x44 0 4k' w.qcow2
        same "$cls" info-after 0 img info w.qcow2
        continue
    elif [ "$wexact" = - ]; then
        # the writes succeed (see above); the data read back
        run f f io -c 'write -P 0x44 0 4k' -c 'write -P 0x55 2M 4k' -c 'read -P 0x44 0 4k' \
            -c 'read -P 0x11 4k 124k' -c 'read -P 0x55 2M 4k' w.qcow2
        [ "$(cat f/rc)" = 0 ] || { bad "$cls: writes fail"; head -3 f/err; }
    else
        same "$cls" write-owned 1 io -c 'write -P 0x44 0 4k' -c 'read -P 0x44 0 4k' w.qcow2
        same "$cls" write-new "$wexact" io -c 'write -P 0x55 2M 4k' w.qcow2
        same "$cls" info-after 1 img info w.qcow2
    fi
    # repair: a fresh copy; qemu-img check finds it clean, the data are
    # those of the damaged image
    cp dmg.qcow2 f/r.qcow2; cp dmg.qcow2 q/r.qcow2
    (cd f && timeout 60 "$FASTQCOW" check -r all r.qcow2 >rep 2>&1); rc=$?
    [ $rc -eq 0 ] || { bad "$cls: check -r all exits $rc"; head -5 f/rep; }
    qemu-img check f/r.qcow2 >f/qc 2>&1 || { bad "$cls: qemu-img check after check -r all"; head -5 f/qc; }
    qemu-img compare -q "$base.qcow2" f/r.qcow2 >f/cmp 2>&1 ||
        { bad "$cls: the repaired image reads differently"; head -3 f/cmp; }
    if [ "$base" = base-snap ]; then
        [ "$(qemu-img snapshot -l f/r.qcow2 | wc -l)" = "$(qemu-img snapshot -l dmg.qcow2 | wc -l)" ] ||
            bad "$cls: the repair lost a snapshot"
    fi
done <<'LIST'
rt-unaligned base 1
rt-header base 1
rt-reserved base 1
rt1-unaligned base 1
rt1-eof base 1
rt-eof base 0
rt-huge base 0
rt-huger base 0
l1-unaligned base c
l2-unaligned base c
l2-eof base c
snap-extra-long base-snap 1
snap-id-long base-snap 1
snap-name-long base-snap -
snap-past-eof base-snap -
LIST
[ $fail -eq 0 ] && echo "PASS: damaged images open, read, refuse and repair as expected"
exit $fail
