#!/bin/bash
# test-alloc-ahead.sh: allocating writes in flight together extend the
# image file ahead of them (allocated blocks, so that the data writes are
# not extending writes); the extension never touches a cluster in use and
# is cut at close. Many 4 KiB copy-on-write writes at depth 32 over a
# backing image, and 64 KiB writes in random order into a new image, must
# leave exactly what qemu-img bench leaves with the same requests (content
# and file size), and a clean image.
# SPDX-License-Identifier: MIT
set -u
: "${FASTQCOW:?FASTQCOW must point at the fastqcow tool}"
command -v qemu-img >/dev/null && command -v qemu-io >/dev/null ||
    { echo "SKIP: qemu-img/qemu-io not installed"; exit 77; }
T=$(mktemp -d "${TEST_TMPDIR:-/tmp}/alloc-ahead.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
cd "$T" || exit 1
fail=0
bad() { echo "FAIL: $*"; fail=1; }
end_offset() { qemu-img check --output=json "$1" | sed -n 's/.*"image-end-offset": \([0-9]*\).*/\1/p'; }

qemu-img create -q -f qcow2 base.qcow2 64M
qemu-io -c 'write -P 0x3c 0 64M' base.qcow2 >/dev/null
for t in "-d 32 -s 4k -S 1114112 -c 57" "-d 16 -s 64k -S 196608 -c 300" "-d 8 -s 1M -c 40"; do
    for over in overlay fresh; do
        rm -f f.qcow2 q.qcow2
        if [ $over = overlay ]; then
            qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 f.qcow2 64M
        else
            qemu-img create -q -f qcow2 f.qcow2 64M
        fi
        cp f.qcow2 q.qcow2
        "$FASTQCOW" bench -w -t none -f qcow2 --pattern=0x71 $t f.qcow2 >/dev/null || bad "$over $t: fastqcow bench"
        qemu-img bench -w -t none -f qcow2 --pattern=0x71 $t q.qcow2 >/dev/null
        qemu-img check -q f.qcow2 || bad "$over $t: qemu-img check"
        qemu-img compare -q f.qcow2 q.qcow2 || bad "$over $t: content differs from qemu-img bench's"
        e=$(end_offset f.qcow2) s=$(stat -c %s f.qcow2)
        [ "$s" -le "$e" ] || bad "$over $t: file is $s bytes, its last cluster ends at $e (not cut at close)"
    done
done
exit $fail
