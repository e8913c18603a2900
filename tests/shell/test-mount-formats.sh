#!/bin/bash
# test-mount-formats.sh: images of every kind read through the mount equal
# to `qemu-img convert -O raw` of the image: a three-layer backing chain
# (raw <- qcow2 <- qcow2 with extended L2 and subcluster writes), zlib and
# zstd compressed clusters, a compat=0.10 image, a raw image. Writes at
# unaligned offsets through the mount over the chain's top (copy on write
# from the backing files, inside subclusters) and over compressed clusters
# leave images qemu-img check finds clean and qemu reads equal to a model.
# SPDX-License-Identifier: MIT
set -u
MT_NAME=mount-formats
. "$TEST_SRCDIR/shell/mount-common.sh"
command -v qemu-io >/dev/null || { echo "SKIP: qemu-io not installed"; exit 77; }

M=$((1 << 20))
q() { qemu-io "$@" >/dev/null || bad "qemu-io $*"; }
# the chain
truncate -s 16M base.raw
q -f raw -c "write -P 0x11 0 3M" -c "write -P 0x12 5M 1M" -c "write -P 0x13 $((15 * M + 512)) 1000" base.raw
qemu-img create -q -f qcow2 -b base.raw -F raw mid.qcow2
q -c "write -P 0x21 1M 1M" -c "write -z 5M 64k" -c "write -P 0x22 $((9 * M + 4096)) 70000" mid.qcow2
qemu-img create -q -f qcow2 -o extended_l2=on -b mid.qcow2 -F qcow2 top.qcow2
q -c "write -P 0x31 $((2 * M + 2048)) 4096" -c "write -P 0x32 $((12 * M)) 2048" -c "discard $((1 * M)) 64k" top.qcow2
# compressed (zlib, zstd), compat=0.10
head -c $((4 * M)) /dev/urandom > rnd
{ cat rnd; yes fastqcow | head -c $((4 * M)); } > src.raw
truncate -s 12M src.raw
qemu-img convert -q -c -O qcow2 src.raw zlib.qcow2
qemu-img convert -q -c -O qcow2 -o compression_type=zstd src.raw zstd.qcow2
qemu-img convert -q -O qcow2 -o compat=0.10 src.raw v2.qcow2
cp src.raw plain.raw

# check_read IMAGE [mount options]: the mounted file reads as qemu reads IMAGE
check_read() {
    local img=$1
    shift
    qemu-img convert -O raw "$img" ref.raw
    : > disk
    mnt -r "$@" "$img" disk || { bad "mount $img"; return; }
    cmp disk ref.raw || bad "$img reads differently through the mount"
    umnt disk
}
check_read top.qcow2
check_read mid.qcow2
check_read zlib.qcow2
check_read zstd.qcow2
check_read v2.qcow2
check_read plain.raw -f raw

# write_model IMAGE: unaligned writes through the mount and into a model
write_model() {
    local img=$1 off len
    qemu-img convert -O raw "$img" model.raw
    : > disk
    mnt "$img" disk || { bad "mount $img"; return; }
    for off in 100 $((M + 4000)) $((2 * M + 1)) $((5 * M - 7)) $((9 * M + 60000)) $((11 * M + 333)); do
        len=$(( (off % 9973) * 13 + 1 ))
        head -c $len /dev/urandom > chunk
        dd if=chunk of=disk bs=64k oflag=seek_bytes seek=$off conv=notrunc status=none ||
            bad "$img: write $len at $off"
        dd if=chunk of=model.raw bs=64k oflag=seek_bytes seek=$off conv=notrunc status=none
    done
    cmp disk model.raw || bad "$img: read-back through the mount differs"
    umnt disk
    qemu-img check -q "$img" || bad "$img: qemu-img check after writes through the mount"
    qemu-img compare -q -F raw "$img" model.raw || bad "$img: qemu reads other data than was written"
}
write_model top.qcow2
write_model zlib.qcow2
write_model v2.qcow2
[ $fail = 0 ] && echo "PASS"
exit $fail
