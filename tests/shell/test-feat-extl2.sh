#!/bin/bash
# test-feat-extl2.sh: extended L2 (subclusters) zeroing and discard,
# against a raw model, qemu's reading and qemu-io's result.
# On images qemu-img made with extended_l2=on (plain, over a raw backing
# file, with an internal snapshot, with compressed clusters), fastqcow
# writes zeros and discards ranges that start or end inside clusters:
# whole subclusters change only their L2 bits (no data written, the host
# cluster kept, as qemu keeps it), partial subclusters are written as
# zeros, discards of partial clusters change nothing (qemu discards whole
# clusters only), compressed clusters are rewritten. After each image:
# `qemu-img check` clean (no leaks), qemu-img and fastqcow read it equal to
# the model, `qemu-img map` shows what qemu-io's copy shows, a snapshot
# still reads as it was taken. A whole allocated cluster zeroed without
# unmap keeps its host cluster, as qemu-io leaves it.
# SPDX-License-Identifier: MIT
set -u
: "${FASTQCOW:?FASTQCOW must point at the fastqcow tool}"
command -v qemu-img >/dev/null && command -v qemu-io >/dev/null ||
    { echo "SKIP: qemu-img/qemu-io not installed"; exit 77; }
T=$(mktemp -d "${TEST_TMPDIR:-/tmp}/feat-extl2.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
cd "$T" || exit 1
fail=0
bad() { echo "FAIL: $*"; fail=1; }
F() { "$FASTQCOW" "$@"; }
clean() { qemu-img check -q "$1" || { bad "$2: qemu-img check"; qemu-img check "$1" 2>&1 | head -8; }; }
same() {
    qemu-img compare -q -f qcow2 -F raw "$1" "$2" || bad "$3: qemu-img reads $1 unlike $2"
    F compare -q -f qcow2 -F raw "$1" "$2" || bad "$3: fastqcow reads $1 unlike $2"
}
# host offset that qemu-img map reports for guest offset $2 of $1 ("none")
host_of() {
    qemu-img map --output=json "$1" | python3 -c '
import json, sys
off = int(sys.argv[1])
for e in json.load(sys.stdin):
    if e["start"] <= off < e["start"] + e["length"]:
        print(e.get("offset", "none") if e["depth"] == 0 else "none"); break' "$2"
}
# zero `len` bytes at `off` in the model (raw file $1)
mz() { qemu-io -f raw -c "write -z $2 $3" "$1" >/dev/null; }
# run the same zeroing/discard commands on the image (fastqcow), on its
# copy $img.q (qemu-io) and on the model
run_ops() {
    local img=$1 raw=$2 sc=$3 tag=$4 cs=$((32 * $3))
    B() { F io "$@" "$img" >/dev/null || bad "$tag io $*"; qemu-io "$@" "$img.q" >/dev/null; }
    # write-zeroes: subcluster-aligned inside a cluster, unaligned across
    # clusters, and with unmap two that together cover a whole cluster
    B -c "write -z $((sc)) $((3 * sc))"
    mz "$raw" $((sc)) $((3 * sc))
    B -c "write -z $((cs + 100)) $((cs + 5 * sc))"
    mz "$raw" $((cs + 100)) $((cs + 5 * sc))
    B -c "write -z -u $((4 * cs + 2 * sc)) $((30 * sc))" -c "write -z -u $((4 * cs)) $((2 * sc))"
    mz "$raw" $((4 * cs)) $cs
    # discards of parts of clusters: nothing changes
    B -c "discard $((5 * cs + 4 * sc)) $((8 * sc))"
    B -c "discard $((6 * cs + sc + 7)) $((3 * sc))"
    B -c "discard $((7 * cs)) $((sc * 16))" -c "discard $((7 * cs + 16 * sc)) $((16 * sc))"
    # a whole cluster discarded: zeros (over the backing file too)
    B -c "discard $((8 * cs)) $cs"
    mz "$raw" $((8 * cs)) $cs
}

for variant in plain backing snapshot compressed; do
    for csz in 65536 16384; do
        sc=$((csz / 32)); tag="[$variant c$csz]"
        size=$((16 * csz))
        rm -f a.qcow2 a.qcow2.q base.raw m.raw snap.raw
        case $variant in
        backing)
            truncate -s $size base.raw
            qemu-io -f raw -c "write -P 0x5b 0 $size" base.raw >/dev/null
            qemu-img create -q -f qcow2 -o extended_l2=on,cluster_size=$csz -b base.raw -F raw a.qcow2 $size
            ;;
        compressed)
            truncate -s $size src.raw
            qemu-io -f raw -c "write -P 0x11 0 $((8 * csz))" src.raw >/dev/null
            qemu-img convert -c -O qcow2 -o extended_l2=on,cluster_size=$csz src.raw a.qcow2
            rm -f src.raw
            ;;
        *)
            qemu-img create -q -f qcow2 -o extended_l2=on,cluster_size=$csz a.qcow2 $size
            ;;
        esac
        # data in most clusters, in pieces (subclusters allocated one by one)
        qemu-io -f qcow2 -c "write -P 0xa1 0 $((2 * csz))" -c "write -P 0xa2 $((4 * csz)) $((3 * csz))" \
            -c "write -P 0xa3 $((7 * csz + 3 * sc)) $((20 * sc))" a.qcow2 >/dev/null
        if [ "$variant" = snapshot ]; then
            qemu-img snapshot -c s1 a.qcow2
            qemu-img convert -O raw a.qcow2 snap.raw
        fi
        qemu-img convert -O raw a.qcow2 m.raw
        cp a.qcow2 a.qcow2.q
        run_ops a.qcow2 m.raw $sc "$tag"
        clean a.qcow2 "$tag"
        same a.qcow2 m.raw "$tag"
        # zeroed subclusters keep their host cluster: the image maps as
        # qemu-io's copy does
        [ "$(qemu-img map --output=json a.qcow2)" = "$(qemu-img map --output=json a.qcow2.q)" ] ||
            { bad "$tag maps unlike qemu-io's"; diff <(qemu-img map --output=json a.qcow2.q) \
                <(qemu-img map --output=json a.qcow2) | head -10; }
        [ "$(host_of a.qcow2 $((4 * csz)))" != none ] || bad "$tag zeroing in two dropped the host cluster"
        if [ "$variant" = snapshot ]; then
            qemu-img snapshot -a s1 a.qcow2 || bad "$tag snapshot -a"
            clean a.qcow2 "$tag after apply"
            same a.qcow2 snap.raw "$tag snapshot content"
        fi
    done
done

# write-zeroes within one subcluster only writes zeros there; a partial
# discard inside one subcluster changes nothing
qemu-img create -q -f qcow2 -o extended_l2=on e.qcow2 1M
qemu-io -c 'write -P 0x77 0 64k' e.qcow2 >/dev/null
F io -c 'write -z 100 200' -c 'discard 4096 1000' e.qcow2 >/dev/null || bad "sub-subcluster ops"
qemu-io -c 'read -P 0x77 0 100' -c 'read -P 0 100 200' -c 'read -P 0x77 300 65236' e.qcow2 |
    grep -q 'verification failed' && bad "sub-subcluster ops changed the wrong bytes"
clean e.qcow2 "sub-subcluster ops"

# write-zeroes of a whole allocated cluster without unmap keeps its host
# cluster with every subcluster zero, as qemu-io's does: the two images
# map the same
qemu-img create -q -f qcow2 -o extended_l2=on k.qcow2 1M
qemu-io -c 'write -P 0x31 0 256k' k.qcow2 >/dev/null
cp k.qcow2 kq.qcow2
ops=(-c 'write -z 0 64k' -c 'write -z 64k 100k' -c 'write -z -u 192k 64k')
F io "${ops[@]}" k.qcow2 >/dev/null || bad "whole-cluster write -z"
qemu-io "${ops[@]}" kq.qcow2 >/dev/null
[ "$(host_of k.qcow2 0)" = 327680 ] || bad "write -z dropped the host cluster ($(host_of k.qcow2 0))"
[ "$(qemu-img map --output=json k.qcow2)" = "$(qemu-img map --output=json kq.qcow2)" ] ||
    { bad "whole-cluster write -z maps unlike qemu-io's"; diff <(qemu-img map --output=json kq.qcow2) \
        <(qemu-img map --output=json k.qcow2); }
qemu-img compare -q k.qcow2 kq.qcow2 || bad "whole-cluster write -z: the data differs from qemu-io's"
clean k.qcow2 "whole-cluster write -z"

exit $fail
