#!/bin/bash
# test-feat-resize.sh: `fastqcow resize` grows (also past the L1 table, at
# 512-byte clusters), takes qemu-img's +N/-N forms, and leaves images that
# read exactly like those `qemu-img resize` makes (qemu-img compare) and
# that `qemu-img check` finds clean: the new range reads as zeros even where
# a backing file or an old partial cluster would show through. Shrinking
# needs --shrink (without it: qemu-img's refusal and warning) and then
# drops what lies past the new end as `qemu-img resize --shrink` does
# (data, compressed and zero clusters; a snapshot keeps its own); growing
# again reads zeros there. --discard-data is accepted and changes nothing.
# Raw images too. amend -o size= shrinks the same way.
# SPDX-License-Identifier: MIT
set -u
: "${FASTQCOW:?FASTQCOW must point at the fastqcow tool}"
command -v qemu-img >/dev/null && command -v qemu-io >/dev/null ||
    { echo "SKIP: qemu-img/qemu-io not installed"; exit 77; }
T=$(mktemp -d "${TEST_TMPDIR:-/tmp}/feat-resize.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
cd "$T" || exit 1
fail=0
bad() { echo "FAIL: $*"; fail=1; }
F() { "$FASTQCOW" "$@"; }
vsize() { qemu-img info --output=json "$1" | awk -F': ' '/"virtual-size"/ { gsub(",", "", $2); print $2 + 0 }'; }

# both ARGS...: the same resize by both tools on copies of orig.qcow2
# (IMG stands for the file) must give the same exit status, output and
# messages (program names aside), size and content; --discard-data is
# fastqcow's alone (it changes nothing)
both() {
    cp orig.qcow2 q.qcow2; cp orig.qcow2 f.qcow2
    [ -e orig.raw ] && { cp orig.raw q.raw; cp orig.raw f.raw; }
    local a=("$@") qa=() fa=()
    for x in "${a[@]}"; do
        [ "$x" = --discard-data ] || qa+=("${x/IMG/q}")
        fa+=("${x/IMG/f}")
    done
    qemu-img resize "${qa[@]}" >q.out 2>q.err; qrc=$?
    F resize "${fa[@]}" >f.out 2>f.err; frc=$?
    [ $qrc = $frc ] || bad "resize $*: exit $frc, qemu-img $qrc"
    cmp -s q.out f.out || { bad "resize $*: output"; diff q.out f.out; }
    cmp -s <(sed 's/^qemu-img: //; s/ [qf]\.qcow2/ IMG/' q.err) <(sed 's/^fastqcow: //; s/ [qf]\.qcow2/ IMG/' f.err) ||
        { bad "resize $*: messages"; diff q.err f.err; }
    [ $qrc = 0 ] || return
    [ "$(vsize f.qcow2)" = "$(vsize q.qcow2)" ] || bad "resize $*: size $(vsize f.qcow2), qemu-img $(vsize q.qcow2)"
    qemu-img compare -q q.qcow2 f.qcow2 || bad "resize $*: content differs from qemu-img's"
    F compare -q q.qcow2 f.qcow2 || bad "resize $*: fastqcow reads them differently"
    qemu-img check -q f.qcow2 || { bad "resize $*: check"; qemu-img check f.qcow2 | head -5; }
}

qemu-img create -q -f qcow2 orig.qcow2 3M
qemu-io -c 'write -P 1 0 1M' -c 'write -P 2 2M 1M' orig.qcow2 >/dev/null
both IMG.qcow2 8M
both IMG.qcow2 +1G
both IMG.qcow2 3000k
both IMG.qcow2 1000
both IMG.qcow2 1M
both --shrink --discard-data IMG.qcow2 1M
both --shrink --discard-data IMG.qcow2 1536k
both --shrink --discard-data IMG.qcow2 -- -512k
both IMG.qcow2 -512k
both --discard-data IMG.qcow2 1M
both --shrink --discard-data IMG.qcow2 -3M
both -q IMG.qcow2 +64k
both -f raw IMG.qcow2 +1M

# shrink then grow: what was cut off must not come back
qemu-img create -q -f qcow2 orig.qcow2 3M
qemu-io -c 'write -P 3 0 3M' orig.qcow2 >/dev/null
cp orig.qcow2 g.qcow2
F resize --shrink g.qcow2 1000448 >/dev/null && F resize g.qcow2 3M >/dev/null
qemu-io -c 'read -P 3 0 1000448' -c 'read -P 0 1000448 2145280' g.qcow2 | grep -c '^read' | grep -q 2 ||
    bad "shrink + grow: old data came back"
qemu-img check -q g.qcow2 || bad "shrink + grow: check"
[ "$(stat -c %s g.qcow2)" -lt "$(stat -c %s orig.qcow2)" ] || bad "shrink did not trim the file"

# 512-byte clusters: an L1 entry maps 32 KiB, so growing grows the L1 table
qemu-img create -q -f qcow2 -o cluster_size=512 orig.qcow2 100k
qemu-io -c 'write -P 4 0 100k' orig.qcow2 >/dev/null
both IMG.qcow2 64M
both IMG.qcow2 100M
cp orig.qcow2 l.qcow2
F resize l.qcow2 64M >/dev/null && qemu-io -c 'write -P 5 60M 64k' l.qcow2 >/dev/null
qemu-io -c 'read -P 4 0 100k' -c 'read -P 5 60M 64k' -c 'read -P 0 100k 1M' l.qcow2 | grep -c '^read' | grep -q 3 ||
    bad "grown L1: data"
qemu-img check -q l.qcow2 || bad "grown L1: check after writes"
# extended L2 and a snapshot
qemu-img create -q -f qcow2 -o extended_l2=on orig.qcow2 1M
qemu-io -c 'write -P 6 0 1M' orig.qcow2 >/dev/null
qemu-img snapshot -c s orig.qcow2
both IMG.qcow2 300M
both --shrink --discard-data IMG.qcow2 512k

# a backing file larger than the image: the grown range reads zeros
qemu-img create -q -f qcow2 base.qcow2 4M
qemu-io -c 'write -P 7 0 4M' base.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 orig.qcow2 1M
qemu-io -c 'write -P 8 0 64k' orig.qcow2 >/dev/null
both IMG.qcow2 3M
both IMG.qcow2 8M
cp orig.qcow2 b.qcow2
F resize b.qcow2 4M >/dev/null
qemu-io -c 'read -P 8 0 64k' -c 'read -P 7 64k 960k' -c 'read -P 0 1M 3M' b.qcow2 | grep -c '^read' | grep -q 3 ||
    bad "grown overlay shows the backing file"
# compat=0.10 with a backing file: zeros are written as data (qemu-img
# refuses this one: "Failed to zero out new clusters")
qemu-img create -q -f qcow2 -o compat=0.10 -b base.qcow2 -F qcow2 v2.qcow2 1M
F resize v2.qcow2 2M >/dev/null || bad "resize of a compat=0.10 overlay"
qemu-io -c 'read -P 7 0 1M' -c 'read -P 0 1M 1M' v2.qcow2 | grep -c '^read' | grep -q 2 ||
    bad "grown compat=0.10 overlay shows the backing file"
qemu-img check -q v2.qcow2 || bad "grown compat=0.10 overlay: check"

# raw images
rm -f orig.qcow2
qemu-img create -q -f raw orig.raw 1M
qemu-io -f raw -c 'write -P 9 0 1M' orig.raw >/dev/null
for a in "-f raw IMG.raw 3M" "-f raw --shrink --discard-data IMG.raw 512k" "-f raw --shrink IMG.raw 512k" \
    "-f raw IMG.raw 512k"; do
    cp orig.raw q.raw; cp orig.raw f.raw
    qa=${a//IMG/q}
    qemu-img resize ${qa//--discard-data/} >/dev/null 2>&1; qrc=$?
    F resize ${a//IMG/f} >/dev/null 2>&1; frc=$?
    [ $qrc = $frc ] || bad "resize $a: exit $frc, qemu-img $qrc"
    cmp -s q.raw f.raw || bad "resize $a: raw files differ"
done

# --shrink drops data, compressed and zero clusters past the new end, with
# or without a backing file (whose data then shows through no more than in
# qemu-img's image)
qemu-img create -q -f qcow2 base.qcow2 4M
qemu-io -c 'write -P 7 0 4M' base.qcow2 >/dev/null
for b in "" "-b base.qcow2 -F qcow2"; do
    qemu-img create -q -f qcow2 $b orig.qcow2 4M
    qemu-io -c 'write -P 1 0 1M' -c 'write -c -P 3 1M 64k' -c 'write -z 2M 512k' orig.qcow2 >/dev/null
    both --shrink IMG.qcow2 3M
    both --shrink IMG.qcow2 1088k
    both --shrink IMG.qcow2 1M
    both --shrink IMG.qcow2 -- -3584k
    both --shrink IMG.qcow2 1000448
    both IMG.qcow2 1000448
done
# a snapshot keeps its data and its size
qemu-img create -q -f qcow2 orig.qcow2 4M
qemu-io -c 'write -P 1 0 1M' -c 'write -P 2 2M 1M' orig.qcow2 >/dev/null
qemu-img snapshot -c s orig.qcow2
both --shrink IMG.qcow2 2M
cp orig.qcow2 s.qcow2
F resize --shrink s.qcow2 2M >/dev/null || bad "shrink of an image with a snapshot"
qemu-io -c 'read -P 1 0 1M' -c 'read -P 0 1M 1M' s.qcow2 | grep -c '^read' | grep -q 2 ||
    bad "shrink with a snapshot: the active state"
qemu-img snapshot -a s s.qcow2
qemu-io -c 'read -P 1 0 1M' -c 'read -P 2 2M 1M' s.qcow2 | grep -c '^read' | grep -q 2 ||
    bad "shrink with a snapshot: the snapshot lost its data"
qemu-img check -q s.qcow2 || bad "shrink with a snapshot: check"
# extended L2: subclusters past the new end inside an allocated cluster
qemu-img create -q -f qcow2 -o extended_l2=on orig.qcow2 2M
qemu-io -c 'write -P 1 0 1M' -c 'write -P 2 1M 4k' orig.qcow2 >/dev/null
both --shrink IMG.qcow2 1040k
both --shrink IMG.qcow2 1026k
# 512-byte clusters, compat=0.10
qemu-img create -q -f qcow2 -o cluster_size=512,compat=0.10 orig.qcow2 1M
qemu-io -c 'write -P 1 0 100k' -c 'write -P 2 600k 1k' orig.qcow2 >/dev/null
both --shrink IMG.qcow2 100k
both --shrink IMG.qcow2 99k
# amend -o size shrinks the same way, as qemu-img amend does
qemu-img create -q -f qcow2 orig.qcow2 2M
qemu-io -c 'write -P 1 0 64k' -c 'write -P 2 1M 64k' orig.qcow2 >/dev/null
cp orig.qcow2 a.qcow2; cp orig.qcow2 qa.qcow2
F amend -o size=512k a.qcow2 && qemu-img amend -o size=512k qa.qcow2 || bad "amend size over data"
[ "$(vsize a.qcow2)" = 524288 ] || bad "amend size: $(vsize a.qcow2)"
qemu-img compare -q a.qcow2 qa.qcow2 || bad "amend size: content differs from qemu-img's"
qemu-img check -q a.qcow2 || bad "amend size: check"

# errors
qemu-img create -q -f qcow2 e.qcow2 1M
F resize e.qcow2 2>/dev/null && bad "resize without a size succeeded"
F resize e.qcow2 1x 2>/dev/null && bad "resize to 1x succeeded"
F resize e.qcow2 -- -2M 2>/dev/null && bad "resize below zero succeeded"
F resize nosuch.qcow2 2M 2>/dev/null && bad "resize of a missing file succeeded"

[ $fail = 0 ] && echo "PASS: resize"
# a compat=0.10 image with snapshots cannot change size (its snapshots
# record none): refused as qemu-img refuses it, the file unchanged
qemu-img create -q -f qcow2 -o compat=0.10 v2s.qcow2 8M
qemu-img snapshot -c s1 v2s.qcow2
cp v2s.qcow2 v2s.orig
for cmd in "resize v2s.qcow2 16M" "amend -o size=16M v2s.qcow2"; do
    out=$(F $cmd 2>&1) && bad "$cmd on a v2 image with snapshots succeeded"
    case $out in *"Can't resize a v2 image which has snapshots"*) ;; *) bad "$cmd: message: $out";; esac
    cmp -s v2s.qcow2 v2s.orig || bad "$cmd changed the file"
done

exit $fail
