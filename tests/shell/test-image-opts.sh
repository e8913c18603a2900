#!/bin/bash
# test-image-opts.sh: --image-opts (qemu's option lists as image names)
# on the subcommands that open images: `info` prints what qemu-img prints
# for a good list (human and json, with --backing-chain), and both refuse
# bad ones (the cache keys' values and combinations, unknown keys, keys a
# raw image has not, a missing file) with the same exit code and message,
# as `io` does for the same lists and for `open -o` / `reopen -o`;
# the cache keys reach the library (a tiny cache still reads and writes
# right: io, bench, check, compare, convert --target-image-opts, map,
# resize, snapshot, amend, measure, rebase, commit).
# SPDX-License-Identifier: MIT
set -u
: "${FASTQCOW:?FASTQCOW must point at the fastqcow tool}"
command -v qemu-img >/dev/null || { echo "SKIP: qemu-img not installed"; exit 77; }
command -v qemu-io >/dev/null || { echo "SKIP: qemu-io not installed"; exit 77; }
T=$(mktemp -d "${TEST_TMPDIR:-/tmp}/image-opts.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
cd "$T" || exit 1
fail=0
bad() { echo "FAIL: $*"; fail=1; }

# same exit code; on failure the same message (after the program's name),
# on success the same output
same() {
    qemu-img info "$@" >q.out 2>q.err; qrc=$?
    "$FASTQCOW" info "$@" >f.out 2>f.err; frc=$?
    [ $qrc = $frc ] || { bad "info $*: exit $frc, qemu-img $qrc"; cat f.err; return; }
    if [ $qrc = 0 ]; then
        cmp -s q.out f.out || { bad "info $*"; diff q.out f.out; }
    else
        sed 's/^qemu-img: //' q.err >q.msg
        sed 's/^fastqcow: //' f.err >f.msg
        cmp -s q.msg f.msg || { bad "info $* (message)"; diff q.msg f.msg; }
    fi
}

qemu-img create -q -f qcow2 base.qcow2 64M
qemu-io -c 'write -P 7 0 1M' -c 'write -P 8 32M 64k' base.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2
qemu-img create -q -f raw r.raw 1M
S="driver=qcow2,file.filename"

for spec in "$S=base.qcow2" "$S=top.qcow2,l2-cache-size=1M" "file.filename=base.qcow2" \
    "$S=base.qcow2,l2-cache-entry-size=4k,refcount-cache-size=1M,cache-clean-interval=5" \
    "$S=base.qcow2,cache-size=4M,file.driver=file,read-only=on" "driver=raw,file.filename=r.raw"; do
    same --image-opts "$spec"
    same --image-opts --output=json "$spec"
done
same --image-opts --backing-chain "$S=top.qcow2,l2-cache-size=64k"
for bad in "$S=base.qcow2,l2-cache-size=abc" "$S=base.qcow2,l2-cache-size=16E" \
    "$S=base.qcow2,cache-size=1M,l2-cache-size=2M" "$S=base.qcow2,cache-size=1M,refcount-cache-size=2M" \
    "$S=base.qcow2,cache-size=1M,l2-cache-size=512k,refcount-cache-size=256k" \
    "$S=base.qcow2,l2-cache-entry-size=1000" "$S=base.qcow2,l2-cache-entry-size=128k" \
    "$S=base.qcow2,cache-clean-interval=-1" "$S=base.qcow2,cache-clean-interval=x" \
    "$S=base.qcow2,foo=1" "$S=base.qcow2,file.foo=1" "file.filename=r.raw,l2-cache-size=1M" \
    "driver=qcow2" "$S=" "$S=missing.qcow2" "driver=nope,file.filename=base.qcow2"; do
    same --image-opts "$bad"
done

# the same lists, and those of the other keys, through io's --image-opts,
# `open -o` and `reopen -o` (one parser for all): qemu-io's messages
same_io() {
    qemu-io "$@" >q.out 2>&1; qrc=$?
    "$FASTQCOW" io "$@" >f.out 2>&1; frc=$?
    sed -i 's/^qemu-io: //' q.out
    sed -i 's/^fastqcow: //' f.out
    [ $qrc = $frc ] || { bad "io $*: exit $frc, qemu-io $qrc"; cat f.out; return; }
    cmp -s q.out f.out || { bad "io $*"; diff q.out f.out; }
}
for l in "$S=base.qcow2,l2-cache-size=abc" "$S=base.qcow2,cache-size=1M,l2-cache-size=2M" \
    "$S=base.qcow2,foo=1" "$S=base.qcow2,file.foo=1" "file.filename=r.raw,l2-cache-size=1M" \
    "driver=qcow2" "$S=" "driver=nope,file.filename=base.qcow2"; do
    same_io -c quit --image-opts "$l"
done
for l in "$S=base.qcow2,discard=bad" "$S=base.qcow2,detect-zeroes=bad" "$S=base.qcow2,node-name=1a" \
    "$S=base.qcow2,overlap-check=bad" "$S=base.qcow2,overlap-check.template=on" \
    "$S=base.qcow2,lazy-refcounts=maybe" "$S=base.qcow2,file.aio=sync" "$S=base.qcow2,file.aio=native" \
    "$S=base.qcow2,file.driver=bogus" "$S=base.qcow2,bogus" "format=qcow2,filename=base.qcow2" \
    "driver=file,filename=r.raw,l2-cache-size=1M" "driver=file,file.filename=r.raw" \
    "$S=missing.qcow2,foo=1" "$S=base.qcow2,l2-cache-entry-size=128k"; do
    same_io -c quit --image-opts "$l"
    same --image-opts "$l"
done
same_io -c 'open -o l2-cache-size=1M,bogus=1 base.qcow2'
same_io -c 'open -o driver=raw,lazy-refcounts=on r.raw'
same_io -c 'reopen -o node-name=x' base.qcow2
same_io -c 'reopen -o l2-cache-size=abc' base.qcow2
same_io -c 'reopen -o cache-size=1M,refcount-cache-size=2M' -c 'read -q -P 7 0 4k' base.qcow2

# tiny caches on every subcommand that opens an image: results as usual
tiny="l2-cache-size=1k,l2-cache-entry-size=512,refcount-cache-size=1"
run() { "$FASTQCOW" "$@" >out 2>err || { bad "$*: exit $?"; cat err; }; }
run io -c 'write -P 9 0 2M' -c 'write -P 10 40M 1M' -c 'read -P 9 0 2M' -c 'read -P 8 32M 64k' \
    --image-opts "$S=top.qcow2,$tiny"
run check --image-opts "$S=top.qcow2,$tiny"
run bench -c 200 -d 16 -s 4k -S 300k --image-opts "$S=top.qcow2,$tiny"
run map --image-opts "$S=top.qcow2,$tiny"
"$FASTQCOW" map top.qcow2 >plain.map
cmp -s out plain.map || bad "map with a tiny cache differs"
cp top.qcow2 copy.qcow2
run compare --image-opts "$S=top.qcow2,$tiny" "$S=copy.qcow2,cache-size=1M"
qemu-img create -q -f qcow2 dst.qcow2 64M
run convert -n -O qcow2 --target-image-opts top.qcow2 "$S=dst.qcow2,$tiny"
qemu-img compare top.qcow2 dst.qcow2 >/dev/null || bad "convert into a tiny-cache target"
qemu-img check dst.qcow2 >/dev/null || bad "qemu-img check after convert"
run resize --image-opts "$S=copy.qcow2,$tiny" +1M
run snapshot -c s1 --image-opts "$S=copy.qcow2,$tiny"
run amend -o lazy_refcounts=on --image-opts "$S=copy.qcow2,$tiny"
run measure -O qcow2 --image-opts "$S=copy.qcow2,$tiny"
run rebase -u -b base.qcow2 -F qcow2 --image-opts "$S=copy.qcow2,$tiny"
run commit -d --image-opts "$S=copy.qcow2,$tiny"
qemu-img check copy.qcow2 >/dev/null || bad "qemu-img check after the subcommands"
"$FASTQCOW" convert -O qcow2 --target-image-opts top.qcow2 "$S=x.qcow2" 2>err
grep -q -- "--target-image-opts requires use of -n flag" err || bad "convert --target-image-opts without -n"

[ $fail = 0 ] && echo "PASS: image-opts"
exit $fail
