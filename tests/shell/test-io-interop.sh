#!/bin/bash
# test-io-interop.sh: data written by `fastqcow io` reads back with qemu-io
# and the other way round, on raw and on fragmented qcow2 images (clusters
# allocated in reverse, 4k and 64k clusters, a backing chain), with every
# I/O engine and cache mode, through read/write, readv/writev and aio_*.
# The qcow2 results must pass `qemu-img check`.
# SPDX-License-Identifier: MIT
set -u
: "${FASTQCOW:?FASTQCOW must point at the fastqcow tool}"
command -v qemu-img >/dev/null && command -v qemu-io >/dev/null ||
    { echo "SKIP: qemu-img/qemu-io not installed"; exit 77; }
T=$(mktemp -d "${TEST_TMPDIR:-/tmp}/io-interop.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
cd "$T" || exit 1
fail=0
bad() { echo "FAIL: $*"; fail=1; }
fq() { "$FASTQCOW" io "$@" >out 2>&1 || { bad "fastqcow io $*"; cat out; }; }
qio() { qemu-io "$@" >out 2>&1 || { bad "qemu-io $*"; cat out; }; }
check() { qemu-img check -q "$1" || bad "qemu-img check $1 ($2)"; }

# qcow2 with 4k clusters written backwards by qemu: host order is reversed
qemu-img create -q -f qcow2 -o cluster_size=4k rev.qcow2 2M
for i in $(seq 127 -1 0); do echo "write -q -P $((i % 250 + 1)) $((i * 4))k 4k"; done |
    qemu-io -t unsafe rev.qcow2 >/dev/null || bad "qemu-io rev.qcow2"
qemu-img create -q -f qcow2 plain.qcow2 8M
truncate -s 8M plain.raw
qemu-img create -q -f qcow2 base.qcow2 8M
qio -c 'write -P 0x11 0 8M' base.qcow2
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 over.qcow2

for eng in io_uring threads sync; do
    for cache in writeback none writethrough unsafe; do
        o=(-i "$eng" -t "$cache")
        tag="$eng/$cache"

        # fastqcow writes across reversed 4k clusters, qemu-io verifies
        cp rev.qcow2 a.qcow2
        fq "${o[@]}" -c 'write -P 0xa1 3k 10k' -c 'writev -P 0xa2 100k 1k 513 7 4k 60k' \
            -c 'aio_write -P 0xa3 300k 64k' -c 'aio_write -P 0xa4 400k 3 5 4096' -c aio_flush \
            -c 'write -z 500k 12k' -c 'write -P 0xa5 1000k 1M' a.qcow2
        qio -c 'read -P 1 0 3k' -c 'read -P 0xa1 3k 10k' -c 'read -P 4 13k 3k' \
            -c 'read -P 0xa2 100k 67080' -c 'read -P 0xa3 300k 64k' -c 'read -P 0xa4 400k 4104' \
            -c 'read -P 0 500k 12k' -c 'read -P 0xa5 1000k 1M' -c 'read -P 125 496k 4k' -c 'read -P 0 512k 4k' a.qcow2
        check a.qcow2 "$tag"

        # qemu-io writes, fastqcow verifies through every read path
        cp rev.qcow2 b.qcow2
        qio -c 'write -P 0xb1 5k 9k' -c 'write -P 0xb2 64k 200k' -c 'write -z 1M 8k' b.qcow2
        fq "${o[@]}" -c 'read -P 0xb1 5k 9k' -c 'readv -P 0xb2 64k 1 4095 100k 92k 1k 3k' \
            -c 'aio_read -P 0xb2 70k 7 130k' -c 'aio_read -P 2 4k 1k' -c aio_flush \
            -c 'read -P 0 1M 8k' -c 'read -P 2 4k 1k' -c 'read -P 1 0 4k' b.qcow2

        # raw and an empty qcow2: large unaligned requests
        for img in plain.raw plain.qcow2; do
            f=()
            [ $img = plain.raw ] && f=(-f raw)
            cp $img c.$img
            fq "${o[@]}" "${f[@]}" -c 'write -P 0xc1 1 3M' -c 'writev -P 0xc2 5M 1 511 1M 3' c.$img
            qio "${f[@]}" -c 'read -P 0 0 1' -c 'read -P 0xc1 1 3M' -c 'read -P 0 3145729 1M' \
                -c 'read -P 0xc2 5M 1049091' c.$img
            qio "${f[@]}" -c 'write -P 0xc3 7M 65537' c.$img
            fq "${o[@]}" "${f[@]}" -c 'read -P 0xc3 7M 65537' -c 'readv -P 0xc3 7M 3 65534' c.$img
        done
        check c.plain.qcow2 "$tag"

        # backing chain: partial writes over the backing file
        cp over.qcow2 d.qcow2
        fq "${o[@]}" -c 'write -P 0xd1 100 1000' -c 'write -P 0xd2 70k 4k' d.qcow2
        qio -c 'read -P 0x11 0 100' -c 'read -P 0xd1 100 1000' -c 'read -P 0x11 1100 64436' \
            -c 'read -P 0x11 64k 6k' -c 'read -P 0xd2 70k 4k' -c 'read -P 0x11 74k 8118k' d.qcow2
        check d.qcow2 "$tag"
    done
done

[ $fail = 0 ] && echo "PASS: io interop"
exit $fail
