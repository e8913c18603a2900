#!/bin/bash
# test-img-compare.sh: `fastqcow compare` must print what qemu-img 7.2
# compare prints and exit with the same code: identical images in different
# formats and layouts, a content mismatch (reported at 512-byte
# granularity), size mismatches with zero and non-zero tails, -s, -q, and
# errors.
# SPDX-License-Identifier: MIT
set -u
: "${FASTQCOW:?FASTQCOW must point at the fastqcow tool}"
command -v qemu-img >/dev/null && command -v qemu-io >/dev/null ||
    { echo "SKIP: qemu-img/qemu-io not installed"; exit 77; }
T=$(mktemp -d "${TEST_TMPDIR:-/tmp}/img-compare.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
cd "$T" || exit 1
fail=0
bad() { echo "FAIL: $*"; fail=1; }

same() {
    qemu-img compare "$@" >q.out 2>/dev/null; qrc=$?
    "$FASTQCOW" compare "$@" >f.out 2>/dev/null; frc=$?
    [ $qrc = $frc ] || bad "compare $*: exit $frc, qemu-img $qrc"
    cmp -s q.out f.out || { bad "compare $*"; diff q.out f.out; }
}
qio() { qemu-io "$@" >/dev/null || bad "qemu-io $*"; }

qemu-img create -q -f qcow2 a.qcow2 4M
qio -c 'write -P 1 1M 64k' -c 'write -P 2 3M 100k' -c 'write -z 2M 64k' a.qcow2
qemu-img convert -O raw a.qcow2 a.raw
qemu-img convert -O qcow2 -o cluster_size=4k a.qcow2 a4k.qcow2
qemu-img convert -c -O qcow2 a.qcow2 ac.qcow2
qemu-img create -q -f qcow2 -b a.qcow2 -F qcow2 over.qcow2
qemu-img create -q -f qcow2 -b a.qcow2 -F qcow2 over2.qcow2
qio -c 'write -P 1 1100000 1' over2.qcow2            # same data: still identical
qemu-img create -q -f qcow2 -b a.qcow2 -F qcow2 diff.qcow2
qio -c 'write -P 9 1100000 1' diff.qcow2
qemu-img create -q -f qcow2 -b a.qcow2 -F qcow2 diff0.qcow2
qio -c 'write -z 3M 4k' diff0.qcow2                   # data -> zeros
qemu-img create -q -f qcow2 -b a.qcow2 -F qcow2 big.qcow2 5M
qemu-img create -q -f qcow2 -b a.qcow2 -F qcow2 bigz.qcow2 5M
qio -c 'write -z 4M 64k' bigz.qcow2
qemu-img create -q -f qcow2 -b a.qcow2 -F qcow2 bigd.qcow2 5M
qio -c 'write -P 3 4200000 1' bigd.qcow2
qemu-img create -q -f qcow2 e1.qcow2 4M
qemu-img create -q -f raw e2.raw 4M
qemu-img create -q -f qcow2 small.qcow2 3M

for b in a.raw a4k.qcow2 ac.qcow2 over.qcow2 over2.qcow2 diff.qcow2 diff0.qcow2 big.qcow2 \
    bigz.qcow2 bigd.qcow2 small.qcow2; do
    same a.qcow2 "$b"
    same "$b" a.qcow2
done
same e1.qcow2 e2.raw
same -f qcow2 -F raw a.qcow2 a.raw
same -f qcow2 -F raw a.qcow2 a.qcow2
same -s a.qcow2 big.qcow2
same -s a.qcow2 a.raw
same -s diff.qcow2 bigd.qcow2
# -s also compares allocation status (qemu's block status, with its EOF bit)
for i in 1 2 3 4; do qemu-img create -q -f qcow2 s$i.qcow2 4M; done
qio -c 'write -P 1 1M 64k' -c 'write -z 2M 64k' s1.qcow2
qio -c 'write -P 1 1M 64k' s2.qcow2
qio -c 'write -P 1 1M 64k' -c 'write -P 0 2M 64k' s3.qcow2
qio -c 'write -P 1 1M 64k' -c 'write -z 2M 64k' -c 'write -P 0 3M 64k' s4.qcow2
qemu-img create -q -f qcow2 -b s1.qcow2 -F qcow2 s5.qcow2
for i in 2 3 4 5; do same -s s1.qcow2 s$i.qcow2; same -s s$i.qcow2 s1.qcow2; done
same -s a.qcow2 over.qcow2
same -s a.qcow2 a4k.qcow2
same -s a.qcow2 ac.qcow2
same -s diff.qcow2 over.qcow2
same -q a.qcow2 diff.qcow2
same -q a.qcow2 a.raw
same a.qcow2 nonexist.qcow2
same -f qcow2 a.raw a.qcow2
same a.qcow2
same -p a.qcow2 a.qcow2 a.raw
"$FASTQCOW" compare -p a.qcow2 a.raw >p.out || bad "compare -p"
grep -q 'Images are identical.' p.out || bad "compare -p output"

[ $fail = 0 ] && echo "PASS: compare"
exit $fail
