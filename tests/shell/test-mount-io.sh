#!/bin/bash
# test-mount-io.sh: the mounted file behaves as a regular file of the
# image's virtual size, checked against a raw model file given the same
# operations:
#  - dd writes of random data at unaligned offsets and lengths (buffered
#    and O_DIRECT), read back with cmp; fsync;
#  - fallocate --punch-hole and --zero-range (unaligned) read as zeros;
#  - fio verify jobs (crc32c; libaio O_DIRECT at depth 16, 1 MiB blocks
#    at depth 48 on an image opened with -t none, buffered psync with
#    mixed sizes);
#  - SEEK_DATA/SEEK_HOLE report what qemu-img map reports as data (read
#    by qemu-img map -f raw on the file), so cp --sparse=always and
#    qemu-img convert -f raw skip the holes;
#  - the size is fixed: truncate fails (EPERM), writes past the end fail
#    (EFBIG); with --growable truncate and writes past the end resize;
#  - SIGTERM drains, flushes, unmounts and exits 0; fusermount3 -u ends
#    the server with the image closed; after kill -9 the dead
#    mount is removed by fastqcow umount and the image opens with what was
#    fsync'ed.
# SPDX-License-Identifier: MIT
set -u
MT_NAME=mount-io
. "$TEST_SRCDIR/shell/mount-common.sh"

M=$((1 << 20))
qemu-img create -q -f qcow2 -o cluster_size=65536 img.qcow2 64M
truncate -s 64M model.raw
mnt img.qcow2 disk || { bad "mount"; exit 1; }
[ "$(stat -c %s disk)" = $((64 * M)) ] || bad "size $(stat -c %s disk), not the virtual size"

# put LEN random bytes at OFF in the mounted file and the model
put() {
    head -c "$2" /dev/urandom > chunk
    dd if=chunk of=disk bs=64k oflag=seek_bytes seek="$1" conv=notrunc status=none ${3:+oflag=$3} ||
        bad "dd write $2 at $1 ${3:-}"
    dd if=chunk of=model.raw bs=64k oflag=seek_bytes seek="$1" conv=notrunc status=none
}
put 0 1
put 4095 4099
put 65535 131075
put $((3 * M + 17)) $((M + 3))
put $((5 * M - 100)) 200
put $((63 * M + 12345)) $((M - 12345))   # up to the last byte
put $((8 * M)) $((2 * M)) direct
put $((12 * M)) $((3 * M))
cmp disk model.raw || bad "buffered read-back differs from the model"
cmp <(dd if=disk bs=1M iflag=direct status=none) model.raw || bad "O_DIRECT read-back differs"
sync disk && sync -d disk || bad "fsync, fdatasync"

# punch a hole and zero a range, unaligned, across clusters
fallocate --punch-hole -o $((12 * M + 1000)) -l $((M + 70000)) disk || bad "fallocate --punch-hole"
fallocate --punch-hole -o $((12 * M + 1000)) -l $((M + 70000)) model.raw
fallocate --zero-range -o $((3 * M + 5)) -l 300000 disk || bad "fallocate --zero-range"
fallocate --zero-range -o $((3 * M + 5)) -l 300000 model.raw
fallocate --punch-hole -o $((14 * M)) -l $M disk || bad "fallocate --punch-hole (whole clusters)"
fallocate --punch-hole -o $((14 * M)) -l $M model.raw
cmp disk model.raw || bad "read-back after fallocate differs from the model"

# fio verify jobs, on ranges of their own (the model gets their data after)
if command -v fio >/dev/null; then
    # 1 MiB writes and reads, 48 at once (an image of its own, opened
    # O_DIRECT): more than the export's huge-page buffers (FQ_MOUNT_RBUFS),
    # so writes are copied into them or not, reads answered from them or
    # from the slots
    qemu-img create -q -f qcow2 big.qcow2 48M
    if mnt -t none big.qcow2 bdisk; then
        fio --name=big --filename=bdisk --rw=randwrite --bs=1M --size=$((48 * M)) \
            --ioengine=libaio --iodepth=48 --direct=1 --verify=crc32c --verify_fatal=1 \
            --output=fio0.log >/dev/null 2>&1 || { bad "fio verify, 1 MiB at depth 48"; tail -5 fio0.log; }
        umnt bdisk
    else
        bad "mount big.qcow2"
    fi
    fio --name=dio --filename=disk --rw=randwrite --bs=4k --offset=$((32 * M)) --size=$((8 * M)) \
        --ioengine=libaio --iodepth=16 --direct=1 --verify=crc32c --verify_fatal=1 \
        --output=fio1.log >/dev/null 2>&1 || { bad "fio verify, libaio O_DIRECT"; tail -5 fio1.log; }
    fio --name=buf --filename=disk --rw=randwrite --bsrange=512-64k --offset=$((40 * M)) \
        --size=$((4 * M)) --ioengine=psync --verify=crc32c --verify_fatal=1 \
        --output=fio2.log >/dev/null 2>&1 || { bad "fio verify, buffered psync"; tail -5 fio2.log; }
    dd if=disk of=model.raw bs=1M skip=32 seek=32 count=12 conv=notrunc status=none
else
    echo "note: fio not installed, its verify jobs skipped"
fi

# a fixed size: truncate and writes past the end fail
truncate -s $((65 * M)) disk 2>err.log && bad "truncate grew a non-growable file"
grep -q "not permitted" err.log || { bad "truncate: not EPERM"; cat err.log; }
dd if=chunk of=disk bs=1 count=1 seek=$((64 * M)) conv=notrunc status=none 2>err.log &&
    bad "a write past the end succeeded"
grep -q "too large" err.log || { bad "write past the end: not EFBIG"; cat err.log; }
umnt disk
qemu-img check -q img.qcow2 || bad "qemu-img check after the writes"
qemu-img compare -q -f qcow2 -F raw img.qcow2 model.raw || bad "image differs from the model"

# SEEK_DATA/SEEK_HOLE against qemu-img map: qemu's raw driver takes the
# data ranges of the mounted file from lseek (as its convert does)
# datamap FILE [options]: qemu-img map's data ranges, adjacent ones merged
datamap() {
    local start len end=-1 out=""
    while read -r start len _; do
        case $start in 0x*|0) ;; *) continue ;; esac
        if [ $((start)) = "$end" ]; then
            out="${out%-*}-$((start + len))"
        else
            out="$out $((start))-$((start + len))"
        fi
        end=$((start + len))
    done < <(qemu-img map "$@")
    echo "$out"
}
want=$(datamap img.qcow2)
mnt -r img.qcow2 disk || { bad "mount -r"; exit 1; }
got=$(datamap -f raw disk)
[ -n "$want" ] && [ "$want" = "$got" ] || { bad "the data ranges of the mounted file differ from qemu-img map";
    echo "want:$want"; echo "got: $got"; }
cp --sparse=always disk copy.raw || bad "cp --sparse=always"
cmp copy.raw model.raw || bad "cp --sparse=always copied other data"
[ "$(stat -c %b copy.raw)" -lt $((40 * M / 512)) ] || bad "cp --sparse=always did not skip holes"
qemu-img convert -f raw -O qcow2 disk conv.qcow2 || bad "qemu-img convert -f raw of the mounted file"
qemu-img compare -q conv.qcow2 model.raw || bad "qemu-img convert read other data"
umnt disk

# --growable: truncate and writes past the end resize the image
qemu-img create -q -f qcow2 grow.qcow2 4M
mnt --growable grow.qcow2 gdisk || { bad "mount --growable"; exit 1; }
truncate -s 6M gdisk || bad "truncate -s 6M (growable)"
[ "$(stat -c %s gdisk)" = $((6 * M)) ] || bad "truncate did not grow the file"
head -c 70000 /dev/urandom > tail.bin
dd if=tail.bin of=gdisk bs=70000 oflag=seek_bytes seek=$((7 * M)) conv=notrunc status=none ||
    bad "write past the end (growable)"
[ "$(stat -c %s gdisk)" = $((7 * M + 70000)) ] || bad "the write did not grow the file"
cmp <(tail -c 70000 gdisk) tail.bin || bad "data written past the end differs"
truncate -s 5M gdisk || bad "truncate -s 5M (growable, shrink)"
umnt gdisk
qemu-img info grow.qcow2 | grep -q "($((5 * M)) bytes)" ||
    bad "virtual size after --growable resizes"
qemu-img check -q grow.qcow2 || bad "qemu-img check after --growable resizes"

# SIGTERM: in-flight work completes, the image is flushed and closed
"$FASTQCOW" mount --foreground img.qcow2 disk 2>term.log &
spid=$!
MT_PIDS+=($spid)
for _ in $(seq 100); do is_mounted disk && break; sleep 0.05; done
head -c $M /dev/urandom > last.bin
dd if=last.bin of=disk bs=1M seek=50 conv=notrunc status=none || bad "write before SIGTERM"
kill -TERM $spid
wait $spid || { bad "SIGTERM: exit code $?"; cat term.log; }
is_mounted disk && bad "still mounted after SIGTERM"
qemu-img check -q img.qcow2 || bad "qemu-img check after SIGTERM"
qemu-img convert -O raw img.qcow2 full.raw
cmp -i $((50 * M)):0 -n $M full.raw last.bin ||
    bad "data written before SIGTERM is lost"

# fusermount3 -u: the server sees the unmount, closes the image and exits
if command -v fusermount3 >/dev/null; then
    mnt img.qcow2 disk || bad "mount before fusermount3 -u"
    dd if=last.bin of=disk bs=1M seek=51 conv=notrunc status=none || bad "write before fusermount3 -u"
    fusermount3 -u disk || bad "fusermount3 -u"
    p=${MT_PID_OF[disk]}
    for _ in $(seq 200); do alive "$p" || break; sleep 0.05; done
    alive "$p" && bad "the server still runs 10 s after fusermount3 -u"
    qemu-img check -q img.qcow2 || bad "qemu-img check after fusermount3 -u"
    qemu-img convert -O raw img.qcow2 full.raw
    cmp -i $((51 * M)):0 -n $M full.raw last.bin || bad "data written before fusermount3 -u is lost"
fi

# kill -9: the dead mount is removed by fastqcow umount; the image opens
# and holds what was fsync'ed
"$FASTQCOW" mount --foreground img.qcow2 disk 2>/dev/null &
spid=$!
MT_PIDS+=($spid)
for _ in $(seq 100); do is_mounted disk && break; sleep 0.05; done
dd if=last.bin of=disk bs=1M seek=20 conv=notrunc,fsync status=none || bad "write + fsync before kill"
dd if=/dev/urandom of=disk bs=64k count=4 seek=600 conv=notrunc status=none
exec 3>&2 2>/dev/null    # no "Killed" job message
kill -9 $spid
wait $spid
exec 2>&3 3>&-
F umount disk || bad "umount of a dead mount"
is_mounted disk && bad "the dead mount is still there"
qemu-img check img.qcow2 >check.log 2>&1; rc=$?
[ $rc = 0 ] || [ $rc = 3 ] || { bad "image after kill -9: qemu-img check exit $rc"; cat check.log; }
qemu-img convert -O raw img.qcow2 full.raw
cmp -i $((20 * M)):0 -n $M full.raw last.bin ||
    bad "fsync'ed data lost after kill -9"
[ $fail = 0 ] && echo "PASS"
exit $fail
