#!/bin/bash
# test-img-convert.sh: `fastqcow convert` round trips qcow2 -> raw -> qcow2
# (with backing chains, compressed sources, -W, -m, -n, -S, -o) checked with
# `qemu-img compare` and `qemu-img check`; zero ranges must stay holes.
# SPDX-License-Identifier: MIT
set -u
: "${FASTQCOW:?FASTQCOW must point at the fastqcow tool}"
command -v qemu-img >/dev/null && command -v qemu-io >/dev/null ||
    { echo "SKIP: qemu-img/qemu-io not installed"; exit 77; }
T=$(mktemp -d "${TEST_TMPDIR:-/tmp}/img-convert.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
cd "$T" || exit 1
fail=0
bad() { echo "FAIL: $*"; fail=1; }

# conv ARGS... SRC DST: convert with fastqcow, then the guest views must be
# identical and a qcow2 target clean.
conv() {
    local src=${*: -2:1} dst=${*: -1}
    "$FASTQCOW" convert "$@" >c.out 2>&1 || { bad "convert $*"; cat c.out; return; }
    qemu-img compare "$src" "$dst" >/dev/null || bad "convert $*: qemu-img compare differs"
    case $dst in *.qcow2) qemu-img check -q "$dst" || bad "convert $*: target not clean";; esac
}
# bytes of guest data allocated in an image
databytes() {
    qemu-img map --output=json "$@" | awk -F'"length": ' '/"data": true/ { n += $2 + 0 } END { print n + 0 }'
}

qemu-img create -q -f qcow2 base.qcow2 8M
qemu-io -c 'write -P 1 0 1M' -c 'write -P 2 3M 512k' -c 'write -P 3 7M 4k' base.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2
qemu-io -c 'write -P 5 64k 64k' -c 'write -z 128k 64k' -c 'write -P 6 2M 100k' \
    -c 'discard 3M 64k' -c 'write -P 0 5M 1M' -c 'write -P 7 6M 512' top.qcow2 >/dev/null
qemu-img convert -c -O qcow2 base.qcow2 comp.qcow2

conv -O raw top.qcow2 t.raw
conv -f raw -O qcow2 t.raw t.qcow2
conv -O qcow2 top.qcow2 t2.qcow2
conv -O qcow2 -o cluster_size=4k,refcount_bits=1 t.qcow2 t3.qcow2
conv -O qcow2 -o cluster_size=2M,compat=0.10 t3.qcow2 t4.qcow2
conv -O qcow2 -o extended_l2=on,lazy_refcounts=on t4.qcow2 t5.qcow2
conv -O raw t5.qcow2 t5.raw
cmp -s t.raw t5.raw || bad "raw images differ after the round trip"
conv -O raw comp.qcow2 comp.raw
conv -W -m 16 -O qcow2 top.qcow2 w.qcow2
conv -m 1 -O qcow2 top.qcow2 m1.qcow2
conv -S 0 -O qcow2 top.qcow2 full.qcow2
conv -S 64k -f qcow2 -O raw top.qcow2 s.raw

# zero data (written or unallocated) must not be allocated in the target
qemu-img convert -O qcow2 top.qcow2 ref.qcow2
ref=$(databytes ref.qcow2)
for img in t2.qcow2 m1.qcow2 w.qcow2; do
    [ "$(databytes $img)" = "$ref" ] || bad "$img: $(databytes $img) bytes allocated, qemu-img convert: $ref"
    [ "$(databytes --start-offset=5M --max-length=1M $img)" = 0 ] || bad "$img: zero range written"
done
[ "$(du -k t.raw | cut -f1)" -lt 4096 ] || bad "raw target is not sparse ($(du -k t.raw))"
[ "$(databytes full.qcow2)" = 8388608 ] || bad "-S 0 target is not fully allocated"
# in-order writes: the target's data clusters follow guest order
qemu-img map --output=json t2.qcow2 | awk -F'"offset": ' 'NF > 1 { o = $2 + 0; if (o < last) exit 1; last = o }' ||
    bad "convert without -W wrote out of order"

# -n: an existing target that has data where the source reads as zeros
qemu-img create -q -f qcow2 n.qcow2 8M
qemu-io -c 'write -P 9 0 8M' n.qcow2 >/dev/null
conv -n -O qcow2 top.qcow2 n.qcow2
qemu-img create -q -f raw n.raw 8M
conv -n top.qcow2 n.raw

# data runs longer than one write through the page cache (written in
# pieces there, whole with -t none): a different byte every 64k, runs
# crossing the pieces' bounds, a zero run between two data runs
qemu-io -c 'write -P 11 0 64k' -c 'write -P 12 64k 200k' -c 'write -P 13 264k 300k' \
    -c 'write -P 14 564k 460k' -c 'write -P 15 1M 1M' -c 'write -z 1600k 64k' \
    -c 'write -P 16 3M 1000k' n.qcow2 >/dev/null
conv -O raw n.qcow2 w.raw
conv -t none -O raw n.qcow2 w2.raw
conv -O qcow2 n.qcow2 w.qcow2
cmp -s w.raw w2.raw || bad "long data runs: the page-cache and O_DIRECT targets differ"

# progress output and errors
"$FASTQCOW" convert -p -O raw top.qcow2 p.raw >p.out || bad "convert -p"
grep -q '(100.00/100%)' p.out || bad "convert -p printed no progress"
"$FASTQCOW" convert -O raw nonexist.qcow2 x.raw 2>/dev/null && bad "convert from a missing file succeeded"
"$FASTQCOW" convert -m 17 -O raw top.qcow2 x.raw 2>/dev/null && bad "convert -m 17 succeeded"
"$FASTQCOW" convert -O vmdkx top.qcow2 x.raw 2>/dev/null && bad "convert -O vmdkx succeeded"
"$FASTQCOW" convert top.qcow2 2>/dev/null && bad "convert with one file name succeeded"
"$FASTQCOW" convert -n -O qcow2 top.qcow2 missing.qcow2 2>/dev/null && bad "convert -n to a missing target succeeded"

[ $fail = 0 ] && echo "PASS: convert"
exit $fail
