#!/bin/bash
# test-feat-snapshot.sh: internal snapshots interoperate both ways.
# Snapshots `fastqcow snapshot -c` takes are listed and applied by
# qemu-img; qemu-img's are listed (byte for byte the same table, also in
# `info`), applied and deleted by fastqcow; after every step the image is
# clean for `qemu-img check` and every snapshot and the active state read
# back exactly (against raw copies). Covers extended L2, compat=0.10, small
# clusters, compressed clusters, backing files, resized images and errors.
# SPDX-License-Identifier: MIT
set -u
. "$(dirname "${BASH_SOURCE[0]}")/sample-lib.sh" || exit 1   # sampling (FQ_TEST_SEED)
: "${FASTQCOW:?FASTQCOW must point at the fastqcow tool}"
command -v qemu-img >/dev/null && command -v qemu-io >/dev/null ||
    { echo "SKIP: qemu-img/qemu-io not installed"; exit 77; }
T=$(mktemp -d "${TEST_TMPDIR:-/tmp}/feat-snapshot.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
cd "$T" || exit 1
fail=0
bad() { echo "FAIL: $*"; fail=1; }
F() { "$FASTQCOW" "$@"; }
clean() { qemu-img check -q "$1" || { bad "$2: qemu-img check"; qemu-img check "$1" 2>&1 | head -5; }; }
# the active state of $1 must equal raw file $2
same() {
    qemu-img compare -q -f qcow2 -F raw "$1" "$2" || bad "$3: $1 differs from $2"
    F compare -q -f qcow2 -F raw "$1" "$2" || bad "$3: fastqcow reads $1 differently from $2"
}
# snapshot tables and info output as qemu-img prints them
lists() {
    qemu-img snapshot -l "$1" >q.out; F snapshot -l "$1" >f.out
    cmp -s q.out f.out || { bad "snapshot -l $1"; diff q.out f.out; }
    for o in human json; do
        qemu-img info --output=$o "$1" >q.out; F info --output=$o "$1" >f.out
        cmp -s q.out f.out || { bad "info --output=$o $1"; diff q.out f.out; }
    done
}
# write random patterns with qemu-io ($1 = seed) and keep a raw copy
scribble() {
    local img=$1 seed=$2 size=$3 cs=$4 cmds=() i
    RANDOM=$seed
    for i in 1 2 3 4 5 6; do
        cmds+=(-c "write -P $((RANDOM % 250 + 1)) $(( (RANDOM * 32768 + RANDOM) % (size / cs) * cs )) $(( (RANDOM % 3 + 1) * cs ))")
    done
    cmds+=(-c "write -z $(( (RANDOM * 32768 + RANDOM) % (size / cs) * cs )) $cs")
    qemu-io -f qcow2 "${cmds[@]}" "$img" >/dev/null 2>&1
}

# a sanitizer run (FQ_TEST_QUICK) takes every other layout (which half
# rotating with the seed)
share=$(sample_share 1 2)
n=0
for opts in "" "cluster_size=4k" "extended_l2=on" "compat=0.10" "cluster_size=512,refcount_bits=4" \
            "refcount_bits=64,lazy_refcounts=on"; do
    n=$((n + 1)); sample_pick $n "$share" || continue
    tag="[${opts:-defaults}]"
    size=4M; cs=65536
    case $opts in *cluster_size=4k*) cs=4096;; *cluster_size=512*) cs=512; size=1M;; esac
    qemu-img create -q -f qcow2 ${opts:+-o $opts} a.qcow2 $size
    scribble a.qcow2 1 $(qemu-img info a.qcow2 | awk -F'[(]' '/virtual size/ { print $2 + 0 }') $cs
    qemu-img convert -O raw a.qcow2 s1.raw
    # ours, seen by qemu
    F snapshot -c one a.qcow2 || bad "$tag snapshot -c one"
    clean a.qcow2 "$tag after -c one"
    qemu-img snapshot -l a.qcow2 | grep -q ' one ' || bad "$tag qemu-img does not list ours"
    scribble a.qcow2 2 $(stat -c %s s1.raw) $cs
    qemu-img convert -O raw a.qcow2 s2.raw
    # qemu's, seen by us
    qemu-img snapshot -c two a.qcow2
    lists a.qcow2
    F io -c "write -P 7 0 $cs" a.qcow2 >/dev/null
    clean a.qcow2 "$tag after writing over two snapshots"
    qemu-img snapshot -a one a.qcow2 || bad "$tag qemu-img snapshot -a one (ours)"
    same a.qcow2 s1.raw "$tag qemu applied ours"
    clean a.qcow2 "$tag after qemu applied ours"
    F snapshot -a two a.qcow2 || bad "$tag snapshot -a two (qemu's)"
    same a.qcow2 s2.raw "$tag we applied qemu's"
    clean a.qcow2 "$tag after we applied qemu's"
    F snapshot -a 1 a.qcow2 || bad "$tag snapshot -a by ID"
    same a.qcow2 s1.raw "$tag applied by ID"
    F snapshot -d one a.qcow2 || bad "$tag snapshot -d one"
    clean a.qcow2 "$tag after -d one"
    same a.qcow2 s1.raw "$tag active state after deleting its origin"
    qemu-img snapshot -a two a.qcow2 && same a.qcow2 s2.raw "$tag qemu applies two after our delete"
    F snapshot -c three a.qcow2
    qemu-img snapshot -d two a.qcow2
    lists a.qcow2
    F snapshot -d three a.qcow2
    clean a.qcow2 "$tag after deleting every snapshot"
    same a.qcow2 s2.raw "$tag no snapshots left"
    [ -z "$(qemu-img snapshot -l a.qcow2)" ] || bad "$tag snapshots left over"
    qemu-img check a.qcow2 | grep -q leaked && bad "$tag leaked clusters"
done

# compressed clusters and a backing file
qemu-img create -q -f qcow2 base.qcow2 2M
qemu-io -c 'write -P 1 0 2M' base.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2
qemu-io -c 'write -c -P 2 0 64k' -c 'write -c -P 3 64k 64k' -c 'write -P 4 1M 64k' top.qcow2 >/dev/null
qemu-img convert -O raw top.qcow2 t1.raw
F snapshot -c c1 top.qcow2
F io -c 'write -P 5 0 4k' -c 'write -c -P 6 64k 64k' -c 'write -z 1M 64k' top.qcow2 >/dev/null
clean top.qcow2 "compressed + backing after writes"
qemu-img convert -O raw top.qcow2 t2.raw
F snapshot -a c1 top.qcow2 && same top.qcow2 t1.raw "compressed + backing: applied"
clean top.qcow2 "compressed + backing: applied"
qemu-img snapshot -l top.qcow2 | grep -q c1 || bad "compressed + backing: lost the snapshot"
F snapshot -d c1 top.qcow2 && clean top.qcow2 "compressed + backing: deleted"
same top.qcow2 t1.raw "compressed + backing: after delete"

# the virtual size is part of a snapshot
qemu-img create -q -f qcow2 r.qcow2 1M
qemu-io -c 'write -P 8 0 1M' r.qcow2 >/dev/null
F snapshot -c small r.qcow2
qemu-img resize -q r.qcow2 3M
qemu-io -c 'write -P 9 2M 64k' r.qcow2 >/dev/null
qemu-img snapshot -c big r.qcow2
F snapshot -a small r.qcow2
[ "$(qemu-img info --output=json r.qcow2 | awk -F': ' '/"virtual-size"/ { print $2 + 0 }')" = 1048576 ] ||
    bad "applying a smaller snapshot kept the size"
clean r.qcow2 "size: applied small"
F snapshot -a big r.qcow2
qemu-io -c 'read -P 9 2M 64k' -c 'read -P 8 0 1M' r.qcow2 | grep -c '^read' | grep -q 2 || bad "size: applied big"
clean r.qcow2 "size: applied big"

# errors, as qemu-img reports them
qemu-img create -q -f qcow2 e.qcow2 1M
F snapshot -c x e.qcow2
F snapshot -a nosuch e.qcow2 2>/dev/null && bad "-a nosuch succeeded"
F snapshot -d nosuch e.qcow2 2>err && bad "-d nosuch succeeded"
grep -q "snapshot not found" err || bad "-d nosuch: $(cat err)"
F snapshot -d 1 e.qcow2 2>/dev/null && bad "-d by ID succeeded (qemu-img deletes by name)"
F snapshot -l -c y e.qcow2 2>/dev/null && bad "-l -c succeeded"
qemu-img create -q -f qcow2 -o refcount_bits=1 one.qcow2 1M
qemu-io -c 'write 0 64k' one.qcow2 >/dev/null
F snapshot -c x one.qcow2 2>/dev/null && bad "a snapshot with 1-bit refcounts succeeded"
clean one.qcow2 "1-bit refcounts after the refused snapshot"
qemu-img create -q -f raw raw.img 1M
F snapshot -c x raw.img 2>/dev/null && bad "snapshot of a raw image succeeded"
[ -z "$(F snapshot -l raw.img)" ] || bad "raw image lists snapshots"
F snapshot -c '' e.qcow2 || bad "empty snapshot name"
lists e.qcow2

[ $fail = 0 ] && echo "PASS: snapshots"
exit $fail
