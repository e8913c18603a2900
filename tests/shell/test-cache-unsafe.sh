#!/bin/bash
# test-cache-unsafe.sh: cache=unsafe sends no flush to the disk, not even
# the ones qcow2 orders its metadata with (as qemu's unsafe mode), and
# the image is still whole once closed.
#  - `io -t unsafe -i threads` (the threads engine makes each flush an
#    fdatasync that strace sees): writes, an explicit flush, allocating
#    writes that grow the refcounts, close: no fsync/fdatasync at all;
#    the same with -t writeback does flush (the control);
#  - `convert` (target cache unsafe by default) and `convert -t writeback`
#    give images that qemu-img checks clean and compares identical.
# SPDX-License-Identifier: MIT
set -u
: "${FASTQCOW:?FASTQCOW must point at the fastqcow tool}"
command -v qemu-img >/dev/null || { echo "SKIP: qemu-img not installed"; exit 77; }
command -v strace >/dev/null || { echo "SKIP: strace not installed"; exit 77; }
T=$(mktemp -d "${TEST_TMPDIR:-/tmp}/cache-unsafe.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
cd "$T" || exit 1
fail=0
bad() { echo "FAIL: $*"; fail=1; }

# syncs CACHE FMT: the fsync/fdatasync calls of an io session in that mode
syncs() {
    rm -f img st
    qemu-img create -q -f "$2" -o size=64M img || { bad "create $2"; return; }
    # (LeakSanitizer cannot run under ptrace: the leak check is left to
    # the other tests)
    ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" \
        strace -f -qq -e trace=fsync,fdatasync,syncfs,sync -o st \
        "$FASTQCOW" io -t "$1" -i threads -f "$2" -c 'write -P 1 0 1M' -c flush \
        -c 'write -P 2 8M 4M' -c 'write -z 20M 1M' -c 'write -P 3 40M 64k' img >out 2>&1 ||
        { bad "io -t $1 ($2) failed"; cat out; }
    n=$(wc -l <st)
    if [ "$2" = qcow2 ]; then
        qemu-img check -q img || bad "qemu-img check after io -t $1"
    fi
    qemu-io -f "$2" -r -c 'read -P 1 0 1M' -c 'read -P 2 8M 4M' -c 'read -P 0 20M 1M' \
        -c 'read -P 3 40M 64k' img >out 2>&1 && ! grep -q 'fail' out ||
        { bad "content after io -t $1 ($2)"; cat out; }
}
for fmt in qcow2 raw; do
    syncs unsafe "$fmt"
    [ "$n" -eq 0 ] || { bad "io -t unsafe ($fmt) flushed $n times:"; cat st; }
    syncs writeback "$fmt"
    [ "$n" -ge 1 ] || bad "io -t writeback ($fmt) never flushed (the check above proves nothing)"
done

# convert, default (unsafe) and writeback targets
qemu-img create -q -f qcow2 src.qcow2 32M
qemu-io -c 'write -P 7 0 3M' -c 'write -P 8 9M 64k' -c 'write -z 12M 1M' src.qcow2 >/dev/null
for t in "" "-t writeback"; do
    rm -f dst.qcow2
    # shellcheck disable=SC2086
    "$FASTQCOW" convert $t -O qcow2 src.qcow2 dst.qcow2 || bad "convert $t"
    qemu-img check -q dst.qcow2 || bad "qemu-img check after convert $t"
    qemu-img compare -q src.qcow2 dst.qcow2 || bad "convert $t: contents differ"
done
exit $fail
