#!/bin/bash
# test-img-info.sh: `fastqcow info` (human and json, --backing-chain) must
# print exactly what qemu-img 7.2 prints for images made by qemu-img,
# including dirty, corrupt and compat=0.10 images and backing chains.
# SPDX-License-Identifier: MIT
set -u
: "${FASTQCOW:?FASTQCOW must point at the fastqcow tool}"
command -v qemu-img >/dev/null || { echo "SKIP: qemu-img not installed"; exit 77; }
T=$(mktemp -d "${TEST_TMPDIR:-/tmp}/img-info.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
cd "$T" || exit 1
fail=0
bad() { echo "FAIL: $*"; fail=1; }

same() {
    qemu-img info "$@" >q.out 2>q.err; qrc=$?
    "$FASTQCOW" info "$@" >f.out 2>f.err; frc=$?
    [ $qrc = $frc ] || bad "info $*: exit $frc, qemu-img $qrc"
    cmp -s q.out f.out || { bad "info $*"; diff q.out f.out; }
}

qemu-img create -q -f qcow2 plain.qcow2 3M
qemu-io -c 'write -P 1 0 128k' plain.qcow2 >/dev/null
qemu-img create -q -f qcow2 -o compat=0.10,cluster_size=4k v2.qcow2 1M
qemu-img create -q -f qcow2 -o extended_l2=on,compression_type=zstd,lazy_refcounts=on,refcount_bits=64 v3.qcow2 5G
qemu-img create -q -f qcow2 -o cluster_size=512,refcount_bits=1 small.qcow2 1000
qemu-img create -q -f raw r.raw 1M
truncate -s 1000 odd.raw
printf 'x' | dd of=r.raw bs=1 seek=4096 conv=notrunc 2>/dev/null
qemu-img create -q -f qcow2 -o lazy_refcounts=on dirty.qcow2 1M
printf '\001' | dd of=dirty.qcow2 bs=1 seek=79 conv=notrunc 2>/dev/null
qemu-img create -q -f qcow2 corrupt.qcow2 1M
printf '\002' | dd of=corrupt.qcow2 bs=1 seek=79 conv=notrunc 2>/dev/null
mkdir sub
qemu-img create -q -f qcow2 -b plain.qcow2 -F qcow2 mid.qcow2 4M
qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2
qemu-img create -q -f qcow2 -b ../top.qcow2 -F qcow2 sub/deep.qcow2
qemu-img create -q -f qcow2 -b "$T/r.raw" -F raw abs.qcow2
qemu-img create -q -f qcow2 -u -b missing.qcow2 -F qcow2 orphan.qcow2 1M

for img in plain.qcow2 v2.qcow2 v3.qcow2 small.qcow2 r.raw odd.raw dirty.qcow2 corrupt.qcow2 \
    mid.qcow2 top.qcow2 sub/deep.qcow2 abs.qcow2 orphan.qcow2 "$T/top.qcow2"; do
    same "$img"
    same --output=json "$img"
    same -U --output=human "$img"
done
same -f raw plain.qcow2
same -f qcow2 --output=json plain.qcow2
for img in top.qcow2 sub/deep.qcow2 abs.qcow2; do
    same --backing-chain "$img"
    same --backing-chain --output=json "$img"
done
# errors: exit codes only (qemu-img repeats "Could not open" in its message)
same nonexist.qcow2
same -f qcow2 r.raw
same --output=xml plain.qcow2
same plain.qcow2 v2.qcow2
same

[ $fail = 0 ] && echo "PASS: info"
exit $fail
