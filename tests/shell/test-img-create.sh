#!/bin/bash
# test-img-create.sh: `fastqcow create` against qemu-img 7.2: the same
# "Formatting ..." line and errors for each option combination, images that
# `qemu-img check` finds clean, and `info --output=json` equal to qemu-img's.
# SPDX-License-Identifier: MIT
set -u
. "$(dirname "${BASH_SOURCE[0]}")/sample-lib.sh" || exit 1   # sampling (FQ_TEST_SEED)
: "${FASTQCOW:?FASTQCOW must point at the fastqcow tool}"
command -v qemu-img >/dev/null || { echo "SKIP: qemu-img not installed"; exit 77; }
T=$(mktemp -d "${TEST_TMPDIR:-/tmp}/img-create.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
mkdir "$T/f" "$T/q"
fail=0
bad() { echo "FAIL: $*"; fail=1; }

# Run both tools in their own directory on the same file name; compare
# stdout, stderr (modulo the program name) and the exit code.
both() {
    (cd "$T/q" && qemu-img create "$@" >../q.out 2>../q.err; echo $? >../q.rc)
    (cd "$T/f" && "$FASTQCOW" create "$@" >../f.out 2>../f.err; echo $? >../f.rc)
    sed -i -e 's/qemu-img/fastqcow/g' "$T/q.err"   # byte for byte: final newlines too
    for x in out err rc; do
        cmp -s "$T/q.$x" "$T/f.$x" || { bad "create $* ($x differs)"; diff "$T/q.$x" "$T/f.$x"; }
    done
}

# Compare `info --output=json` of the image we created with qemu-img's
# view of it, and with our view of qemu's image.
info_same() {
    local img=$1
    (cd "$T/f" && qemu-img info --output=json "$img" >../qi.json && "$FASTQCOW" info --output=json "$img" >../fi.json)
    cmp -s "$T/qi.json" "$T/fi.json" || { bad "info json of our $img"; diff "$T/qi.json" "$T/fi.json"; }
    (cd "$T/q" && qemu-img info --output=json "$img" | grep -v actual-size >../qi.json &&
        "$FASTQCOW" info --output=json "$img" | grep -v actual-size >../fi.json)
    cmp -s "$T/qi.json" "$T/fi.json" || { bad "info json of qemu's $img"; diff "$T/qi.json" "$T/fi.json"; }
    [ "${img%.raw}" != "$img" ] || qemu-img check "$T/f/$img" >"$T/chk.out" 2>&1 || { bad "qemu-img check of our $img"; cat "$T/chk.out"; }
}

# a sanitizer run (FQ_TEST_QUICK) creates with every other option set
# (which half rotating with the seed)
share=$(sample_share 1 2)
n=0
for opts in "" "cluster_size=512" "cluster_size=4k" "cluster_size=64k" "cluster_size=2M" \
    "compat=0.10" "compat=1.1" "compat=v2,cluster_size=1k" "compat=v3" \
    "refcount_bits=1" "refcount_bits=2" "refcount_bits=4" "refcount_bits=8" \
    "refcount_bits=32" "refcount_bits=64" "refcount_bits=64,cluster_size=512" \
    "lazy_refcounts=on" "lazy_refcounts=off" "lazy_refcounts=on,refcount_bits=1" \
    "extended_l2=on" "extended_l2=on,cluster_size=16k" "compression_type=zstd" \
    "cluster_size=8k,refcount_bits=2,lazy_refcounts=on,compat=1.1" \
    "preallocation=off" "preallocation=metadata,cluster_size=4k"; do
    n=$((n + 1))
    sample_pick $n "$share" || continue
    both -f qcow2 ${opts:+-o "$opts"} "img$n.qcow2" 3M
    [ "$(cat "$T/f.rc")" = 0 ] && info_same "img$n.qcow2"
done

# sizes and their suffixes (qemu rounds the virtual size up to 512 bytes);
# the image of each magnitude compared whole, the other spellings by their
# "Formatting ..." line, which gives the size (FQ_TEST_FULL=1: every image)
for size in 0 1000 1b 1k 1K 1.5M 64m 1G 1T 1P 0x100000 010 1.0 "+1M"; do
    n=$((n + 1))
    both -f qcow2 "img$n.qcow2" "$size"
    case $size in 1b|1K|64m|0x100000|010|1.0) [ -n "${FQ_TEST_FULL:-}" ] || continue ;; esac
    [ "$(cat "$T/f.rc")" = 0 ] && info_same "img$n.qcow2"
done
for size in 1M 1000 4k; do
    n=$((n + 1))
    both -f raw "img$n.raw" "$size"
    both "img$n.raw" "$size"
    [ "$(cat "$T/f.rc")" = 0 ] && info_same "img$n.raw"
done
both -q -f qcow2 quiet.qcow2 1M
both -f raw -o preallocation=falloc pre.raw 1M
# falloc and full reserve the disk blocks of every data cluster (as much
# as qemu-img's images take, within 10%), read as zeros, check clean
for mode in falloc full; do
    for cs in 64k 4k; do
        rm -f "$T/pf.qcow2" "$T/pq.qcow2"
        "$FASTQCOW" create -q -f qcow2 -o preallocation=$mode,cluster_size=$cs "$T/pf.qcow2" 8M || bad "create $mode $cs"
        qemu-img create -q -f qcow2 -o preallocation=$mode,cluster_size=$cs "$T/pq.qcow2" 8M
        f=$(du -k "$T/pf.qcow2" | cut -f1) q=$(du -k "$T/pq.qcow2" | cut -f1)
        [ $((f * 10)) -ge $((q * 9)) ] || bad "preallocation=$mode,cluster_size=$cs: $f KiB on disk, qemu-img $q KiB"
        qemu-img check -q "$T/pf.qcow2" || bad "preallocation=$mode,cluster_size=$cs: qemu-img check"
        qemu-img compare -q "$T/pf.qcow2" "$T/pq.qcow2" || bad "preallocation=$mode,cluster_size=$cs: content"
    done
done

# backing files: size taken from the backing image, relative names
both -q -f qcow2 base.qcow2 2M
both -f qcow2 -b base.qcow2 -F qcow2 over1.qcow2
both -f qcow2 -b base.qcow2 -F qcow2 -o cluster_size=4k over2.qcow2 3M
both -f qcow2 -o backing_file=base.qcow2,backing_fmt=qcow2 over3.qcow2
mkdir "$T/q/sub" "$T/f/sub"
both -f qcow2 -b ../base.qcow2 -F qcow2 sub/over4.qcow2
for i in 1 2 3; do info_same "over$i.qcow2"; done
info_same sub/over4.qcow2

# errors: message and exit code as qemu-img's
both -f qcow2 e.qcow2
both -f qcow2 e.qcow2 1x
both -f qcow2 e.qcow2 1.5
both -f qcow2 e.qcow2 8E
both -f qcow2 e.qcow2 1M 2M
both -f qcow2
both -f vmdkx e.qcow2 1M
both -f qcow2 -o foo=bar e.qcow2 1M
both -f raw -o cluster_size=4k e.raw 1M
both -f qcow2 -o size=2M e.qcow2 1M
both -f qcow2 -o cluster_size=3000 e.qcow2 1M
both -f qcow2 -o cluster_size=256 e.qcow2 1M
both -f qcow2 -o cluster_size=4M e.qcow2 1M
both -f qcow2 -o cluster_size=x e.qcow2 1M
both -f qcow2 -o refcount_bits=3 e.qcow2 1M
both -f qcow2 -o refcount_bits=128 e.qcow2 1M
both -f qcow2 -o refcount_bits=x e.qcow2 1M
both -f qcow2 -o compat=0.10,refcount_bits=8 e.qcow2 1M
both -f qcow2 -o compat=0.10,lazy_refcounts=on e.qcow2 1M
both -f qcow2 -o compat=0.10,extended_l2=on e.qcow2 1M
both -f qcow2 -o compat=0.10,compression_type=zstd e.qcow2 1M
both -f qcow2 -o extended_l2=on,cluster_size=4k e.qcow2 1M
both -f qcow2 -o compat=2 e.qcow2 1M
both -f qcow2 -o compression_type=lz4 e.qcow2 1M
both -f qcow2 -o lazy_refcounts=maybe e.qcow2 1M
both -f qcow2 -o preallocation=bad e.qcow2 1M
both -f qcow2 e.qcow2 1E
both -f qcow2 -b base.qcow2 e.qcow2
both -f qcow2 -b nonexist -F qcow2 e.qcow2 1M
both -f raw -b base.qcow2 -F qcow2 e.raw 1M

[ $fail = 0 ] && echo "PASS: create ($n images)"
exit $fail
