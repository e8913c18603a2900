#!/bin/bash
# test-bitmap-convert.sh: `fastqcow convert --bitmaps` copies persistent
# bitmaps as qemu-img convert --bitmaps does: the same names, granularities
# and flags (qemu-img info), the same bits (qemu-nbd -B + nbdinfo), a clean
# qemu-img check; --skip-broken-bitmaps and the refusals with qemu-img's
# messages and exit codes.
# SPDX-License-Identifier: MIT
set -u
: "${FASTQCOW:?FASTQCOW must point at the fastqcow tool}"
for t in qemu-img qemu-io qemu-nbd nbdinfo; do
    command -v $t >/dev/null || { echo "SKIP: $t not installed"; exit 77; }
done
T=$(mktemp -d "${TEST_TMPDIR:-/tmp}/bitmap-convert.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
cd "$T" || exit 1
fail=0
bad() { echo "FAIL: $*"; fail=1; }

qemu-img create -q -f qcow2 -o cluster_size=4k s.qcow2 24M
qemu-img bitmap --add s.qcow2 b0
qemu-img bitmap --add -g 512 s.qcow2 fine
qemu-img bitmap --add -g 1M s.qcow2 off
qemu-io -c 'write -P 1 1M 4k' -c 'write -P 2 9M 1k' -c 'write -z 15M 2M' -c 'write 24575k 1k' \
    s.qcow2 >/dev/null
qemu-img bitmap --disable s.qcow2 off

# tool OPTIONS... : convert with both, compare messages, exit codes, images
both() {
    rm -f q.qcow2 f.qcow2 q.raw f.raw
    qemu-img convert "$@" q.out >q.err 2>&1; qrc=$?
    "$FASTQCOW" convert "$@" f.out >f.err 2>&1; frc=$?
    sed -i 's/^qemu-img: /fastqcow: /; s/q\.out/OUT/g' q.err
    sed -i 's/f\.out/OUT/g' f.err
    [ $qrc = $frc ] || bad "convert $*: exit $frc, qemu-img $qrc"
    cmp -s q.err f.err || { bad "convert $*: messages"; diff q.err f.err; }
}
cmp_images() {
    qemu-img info q.out | sed -n '/bitmaps:/,/refcount/p' >qi
    qemu-img info f.out | sed -n '/bitmaps:/,/refcount/p' >fi
    [ -s qi ] && cmp -s qi fi || { bad "$1: bitmaps listed differently"; diff qi fi; }
    for b in $2; do
        nbdinfo --map=qemu:dirty-bitmap:$b -- [ qemu-nbd -r -B $b -f qcow2 q.out ] >q.map
        nbdinfo --map=qemu:dirty-bitmap:$b -- [ qemu-nbd -r -B $b -f qcow2 f.out ] >f.map
        [ -s q.map ] && cmp -s q.map f.map || { bad "$1: bitmap $b bits"; diff q.map f.map; }
    done
    qemu-img check -q f.out || bad "$1: qemu-img check"
    qemu-img compare -q s.qcow2 f.out || bad "$1: data"
}

both --bitmaps -O qcow2 s.qcow2
cmp_images "plain" "b0 fine off"
both --bitmaps -O qcow2 -o cluster_size=64k s.qcow2
cmp_images "64k clusters" "b0 fine off"
# a target that has one of the names already
qemu-img create -q -f qcow2 q.out 24M; qemu-img bitmap --add q.out fine
cp q.out f.out
qemu-img convert --bitmaps -n -O qcow2 s.qcow2 q.out 2>q.err; qrc=$?
"$FASTQCOW" convert --bitmaps -n -O qcow2 s.qcow2 f.out 2>f.err; frc=$?
sed -i 's/^qemu-img: /fastqcow: /' q.err
[ $qrc = $frc ] && [ $frc != 0 ] && grep -q "Failed to create bitmap .*: Bitmap already exists" f.err ||
    bad "existing bitmap: $frc $(cat f.err) / $qrc $(cat q.err)"

# refusals
both --bitmaps -O raw s.qcow2
both --skip-broken-bitmaps -O qcow2 s.qcow2
both --bitmaps -O qcow2 -o compat=0.10 s.qcow2
qemu-img create -q -f raw r.raw 8M
both --bitmaps -f raw -O qcow2 r.raw
# an inconsistent bitmap stops the copy, or is skipped with a warning
bash -c "qemu-io -c 'write 0 4k' -c 'sigraise 9' s.qcow2; :" >/dev/null 2>&1
qemu-img bitmap --remove s.qcow2 off   # qemu flagged the disabled one too
both --bitmaps -O qcow2 s.qcow2
both --bitmaps --skip-broken-bitmaps -O qcow2 s.qcow2
exit $fail
