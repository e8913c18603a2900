#!/bin/bash
# test-io-seed.sh: `fastqcow io` -R SEED, content that depends on the seed
# and on each byte's absolute guest offset.
#  - written and read back through read/write, readv/writev (odd-sized
#    guarded iovecs, non-zero iov_off) and aio_*, at unaligned offsets, on
#    raw and fragmented qcow2, with every engine and cache mode;
#  - a wrong seed, a shifted read, and data really placed at the wrong
#    offset (copied there by qemu-io) all fail, with exit status 1;
#  - the content is a stable format: known bytes, and the same whether
#    written in one request or many.
# SPDX-License-Identifier: MIT
set -u
: "${FASTQCOW:?FASTQCOW must point at the fastqcow tool}"
command -v qemu-img >/dev/null && command -v qemu-io >/dev/null ||
    { echo "SKIP: qemu-img/qemu-io not installed"; exit 77; }
T=$(mktemp -d "${TEST_TMPDIR:-/tmp}/io-seed.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
cd "$T" || exit 1
fail=0
bad() { echo "FAIL: $*"; fail=1; }
ok() { "$FASTQCOW" io "$@" >out 2>&1 || { bad "expected success: io $*"; cat out; }; }
# must_fail IMG CMD: a single command that must fail verification
must_fail() {
    "$FASTQCOW" io -c "$2" "$1" >out 2>&1 && bad "expected failure: io -c '$2' $1"
    grep -q '^Pattern verification failed at offset' out || { bad "no failure line: io -c '$2' $1"; cat out; }
}

# known bytes: the format of the seeded content must not change
truncate -s 1M k.raw
ok -f raw -c 'write -q -R 1 0 64k' -c 'write -q -R 0xdeadbeef 1000 24' -c 'read -v 0 16' \
    -c 'read -v 1000 24' k.raw
grep -q '^00000000:  30 09 d2 8f 27 6c f4 6a 60 07 3a 8b 52 18 8c 55 ' out || bad "seed 1 bytes changed"
grep -q '^000003f8:  23 12 cf e4 80 65 a7 61 ' out || bad "seed 0xdeadbeef bytes changed"

# the same content whether written in one request or in many odd pieces
truncate -s 1M one.raw
truncate -s 1M many.raw
ok -f raw -c 'write -q -R 9 0 1M' one.raw
ok -f raw -c 'writev -q -R 9 0 1 2 3 4 5 100000' -c 'write -q -R 9 100015 333333' \
    -c 'aio_write -q -R 9 433348 3 7 11' -c 'aio_write -q -R 9 433369 615207' -c aio_flush many.raw
cmp -s one.raw many.raw || bad "seeded content depends on how it was written"

# misplaced data: seed content for offset 0 copied by qemu-io to offset 512
qemu-img create -q -f qcow2 m.qcow2 1M
qemu-io -c 'write -q -s one.raw 512 64k' m.qcow2 >/dev/null || bad "qemu-io write -s"
must_fail m.qcow2 'read -R 9 512 64k'
grep -q '^First mismatch at offset 512:' out || { bad "first mismatch not at 512"; cat out; }
must_fail m.qcow2 'readv -R 9 512 1 3 64k'
qemu-io -c 'write -q -s one.raw 0 64k' m.qcow2 >/dev/null || bad "qemu-io write -s at 0"
ok -c 'read -q -R 9 0 64k' -c 'readv -q -R 9 7 9 65511' m.qcow2
# fastqcow's -R writes equal the raw reference byte for byte
qemu-img create -q -f qcow2 w.qcow2 1M
ok -c 'writev -q -R 9 0 7 65529' w.qcow2
qemu-io -f raw -c 'write -q -z 64k 960k' one.raw >/dev/null
qemu-img compare -q -f raw -F qcow2 one.raw w.qcow2 || bad "qcow2 -R content differs from raw reference"

# wrong seed, shifted read, exit status
qemu-img create -q -f qcow2 s.qcow2 1M
ok -c 'write -q -R 1 4096 64k' s.qcow2
must_fail s.qcow2 'read -R 2 4096 64k'
must_fail s.qcow2 'read -R 1 4608 64k'
must_fail s.qcow2 'readv -R 1 4095 64k'
ok -c 'read -q -R 1 4608 63k' -c 'readv -q -R 1 4097 65535' s.qcow2
"$FASTQCOW" io -c 'aio_read -R 2 4096 4k' -c aio_flush s.qcow2 >out 2>&1 ||
    bad "aio_read -R mismatch must not change the exit status (qemu-io semantics)"
grep -q '^Pattern verification failed' out || bad "aio_read -R mismatch not reported"
"$FASTQCOW" io -c 'read -P 1 -R 1 0 1' s.qcow2 >out 2>&1 && bad "-P with -R accepted"
"$FASTQCOW" io -c 'write -R x 0 1' s.qcow2 >out 2>&1 && bad "bad seed accepted"

# every engine and cache mode, unaligned guarded iovecs over reversed clusters
qemu-img create -q -f qcow2 -o cluster_size=4k frag.qcow2 2M
for i in $(seq 127 -1 0); do echo "write -q -P 1 $((i * 4))k 4k"; done |
    qemu-io -t unsafe frag.qcow2 >/dev/null || bad "qemu-io frag.qcow2"
truncate -s 2M frag.raw
for img in frag.qcow2 frag.raw; do
    f=()
    [ $img = frag.raw ] && f=(-f raw)
    for eng in io_uring threads sync; do
        for cache in writeback none directsync; do
            cp $img x.img
            ok "${f[@]}" -i $eng -t $cache -c 'writev -q -R 3 4093 1 4095 8191 57714' \
                -c 'write -q -R 4 500000 300001' -c 'aio_write -q -R 5 1M 3 65533 13' \
                -c 'aio_write -q -R 6 1200000 4097 4099' -c aio_flush \
                -c 'read -q -R 3 4093 70001' -c 'readv -q -R 4 500000 300001' \
                -c 'readv -q -R 4 500001 2 299998' -c 'aio_read -q -R 5 1M 65549' \
                -c 'aio_read -q -R 6 1200000 8196' -c aio_flush -c 'read -q -R 6 1200001 8195' x.img
            grep -q 'Pattern verification failed' out && { bad "$img $eng/$cache"; cat out; }
            [ $img = frag.qcow2 ] && { qemu-img check -q x.img || bad "check $eng/$cache"; }
        done
    done
done

[ $fail = 0 ] && echo "PASS: io seed"
exit $fail
