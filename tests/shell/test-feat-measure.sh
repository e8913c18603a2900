#!/bin/bash
# test-feat-measure.sh: `fastqcow measure` prints what `qemu-img measure`
# prints (human and json), for --size and for source images (sparse,
# zeroed, compressed, backing chains, raw), over target options (cluster
# size, refcount width, extended L2, compat, preallocation, backing file);
# and an image made by `fastqcow convert` fits in the required size.
# SPDX-License-Identifier: MIT
set -u
. "$(dirname "${BASH_SOURCE[0]}")/sample-lib.sh" || exit 1   # sampling (FQ_TEST_SEED)
: "${FASTQCOW:?FASTQCOW must point at the fastqcow tool}"
command -v qemu-img >/dev/null && command -v qemu-io >/dev/null ||
    { echo "SKIP: qemu-img/qemu-io not installed"; exit 77; }
T=$(mktemp -d "${TEST_TMPDIR:-/tmp}/feat-measure.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
cd "$T" || exit 1
fail=0
bad() { echo "FAIL: $*"; fail=1; }

same() {
    qemu-img measure "$@" >q.out 2>/dev/null; qrc=$?
    "$FASTQCOW" measure "$@" >f.out 2>/dev/null; frc=$?
    [ $qrc = $frc ] || bad "measure $*: exit $frc, qemu-img $qrc"
    cmp -s q.out f.out || { bad "measure $*"; diff q.out f.out; }
}

qemu-img create -q -f qcow2 sp.qcow2 10M
qemu-io -c 'write -P 1 1M 64k' -c 'write -z 3M 1M' -c 'write -P 2 5M 4k' -c 'write -P 3 5M 100k' sp.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b sp.qcow2 -F qcow2 top.qcow2 12M
qemu-io -c 'write -P 4 9M 64k' -c 'write -z 1M 64k' top.qcow2 >/dev/null
qemu-img convert -c -O qcow2 sp.qcow2 comp.qcow2
qemu-img create -q -f raw r.raw 10M
qemu-io -f raw -c 'write -P 5 0 1M' r.raw >/dev/null
qemu-img create -q -f qcow2 -o cluster_size=16k,extended_l2=on,compat=1.1 small.qcow2 1000000
qemu-io -c 'write -P 6 1000 3000' small.qcow2 >/dev/null

# a sanitizer run (FQ_TEST_QUICK) measures each pair of target options and
# source in one of the two outputs (which one rotating with the seed)
share=$(sample_share 1 2)
for out in human json; do
    n=0; [ $out = json ] && n=1
    for o in "" "-O raw" "-O qcow2" "-O qcow2 -o cluster_size=4k" "-O qcow2 -o cluster_size=512,refcount_bits=64" \
             "-O qcow2 -o cluster_size=2M,refcount_bits=1" "-O qcow2 -o extended_l2=on" "-O qcow2 -o compat=0.10" \
             "-O qcow2 -o preallocation=full" "-O qcow2 -o preallocation=metadata" \
             "-O qcow2 -o backing_file=sp.qcow2"; do
        for src in "--size 1G" "--size 1000" "--size 0" "--size 100T" "sp.qcow2" "top.qcow2" "comp.qcow2" \
                   "-f raw r.raw" "small.qcow2"; do
            n=$((n + 1))
            sample_pick $n "$share" && same --output=$out $o $src
        done
    done
done
# errors
same -O vmdk sp.qcow2
same --size 1G sp.qcow2
same
same -O qcow2 -o cluster_size=3000 --size 1G

# what fastqcow convert makes fits
for s in sp.qcow2 top.qcow2 small.qcow2; do
    "$FASTQCOW" convert -O qcow2 $s c.qcow2
    need=$("$FASTQCOW" measure -O qcow2 $s | awk '/required/ { print $3 }')
    [ "$(stat -c %s c.qcow2)" -le "$need" ] || bad "convert of $s: $(stat -c %s c.qcow2) bytes, measure: $need"
done

[ $fail = 0 ] && echo "PASS: measure"
exit $fail
