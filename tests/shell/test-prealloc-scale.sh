#!/bin/bash
# test-prealloc-scale.sh: `create -o preallocation=metadata` with 512-byte
# clusters, where an image has thousands of L2 tables and refcount blocks
# and the refcount table must grow: qemu-img check finds it clean, its
# content is qemu-img's, and its map (allocation and zero status, host
# offsets left out) is qemu-img's where the refcount table needs no growth
# (qemu-img grows it in steps of its own; the layouts differ only there).
# A 64 MiB image (about 100,000 tables and blocks) is checked as well.
# SPDX-License-Identifier: MIT
set -u
: "${FASTQCOW:?FASTQCOW must point at the fastqcow tool}"
command -v qemu-img >/dev/null && command -v python3 >/dev/null ||
    { echo "SKIP: qemu-img/python3 not installed"; exit 77; }
T=$(mktemp -d "${TEST_TMPDIR:-/tmp}/prealloc-scale.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
cd "$T" || exit 1
fail=0
bad() { echo "FAIL: $*"; fail=1; }

# map IMG: the map's runs (qemu-img's format; qemu-img map itself takes
# seconds at 512-byte clusters), host offsets left out, adjacent runs of
# the same status merged
map() {
    "$FASTQCOW" map --output=json "$1" | python3 -c '
import json, sys
out = []
for e in json.load(sys.stdin):
    k = (e["present"], e["zero"], e["data"], e["depth"])
    if out and out[-1][0] == k and out[-1][1] + out[-1][2] == e["start"]:
        out[-1][2] += e["length"]
    else:
        out.append([k, e["start"], e["length"]])
for o in out:
    print(*o)'
}

for rb in 1 16 64; do
    size=2M
    o=cluster_size=512,refcount_bits=$rb,preallocation=metadata
    "$FASTQCOW" create -q -f qcow2 -o $o f.qcow2 $size || { bad "create $o $size"; continue; }
    qemu-img create -q -f qcow2 -o $o q.qcow2 $size
    qemu-img check f.qcow2 >out 2>&1 || { bad "$o $size: qemu-img check"; head -5 out; }
    qemu-img compare -q f.qcow2 q.qcow2 || bad "$o $size: content differs from qemu-img's"
    if [ $rb != 64 ]; then
        map f.qcow2 >f.map
        map q.qcow2 >q.map
        cmp -s f.map q.map || { bad "$o $size: map differs from qemu-img's"; diff f.map q.map | head -5; }
    fi
done

# thousands of tables: clean, every guest cluster allocated
"$FASTQCOW" create -q -f qcow2 -o cluster_size=512,refcount_bits=64,preallocation=metadata big.qcow2 64M ||
    bad "create 64M"
qemu-img check big.qcow2 >out 2>&1 || { bad "64M: qemu-img check"; head -5 out; }
grep -q "^131072/131072 = 100.00% allocated" out || { bad "64M: not all allocated"; cat out; }
# and the falloc mode at 4 KiB clusters, which also writes the data
"$FASTQCOW" create -q -f qcow2 -o cluster_size=4k,preallocation=falloc fa.qcow2 16M || bad "create falloc"
qemu-img check -q fa.qcow2 || bad "falloc: qemu-img check"
qemu-img create -q -f qcow2 z.qcow2 16M
qemu-img compare -q fa.qcow2 z.qcow2 || bad "falloc: does not read as zeros"

[ $fail = 0 ] && echo "PASS: preallocation at scale"
exit $fail
