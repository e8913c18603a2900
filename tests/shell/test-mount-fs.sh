#!/bin/bash
# test-mount-fs.sh: a file system on the mounted file. mkfs.ext4 makes an
# ext4 file system holding a directory tree (mke2fs -d: no loop device)
# on a qcow2 image served by `fastqcow mount`; e2fsck -fn finds it clean
# through the mount; after `fastqcow umount` qemu-img check finds the image
# clean; mounted again read-only (--image-opts ...,read-only=on), debugfs
# reads the tree back equal to the original, and writes are refused (EROFS).
# SPDX-License-Identifier: MIT
set -u
MT_NAME=mount-fs
. "$TEST_SRCDIR/shell/mount-common.sh"
for p in mkfs.ext4 e2fsck debugfs; do
    command -v $p >/dev/null || { echo "SKIP: $p not installed (e2fsprogs)"; exit 77; }
done

# the tree: text, random data of odd sizes, an empty file, nested dirs,
# a symlink
mkdir -p tree/a/b/c tree/empty
cp -r "$TEST_SRCDIR/shell" tree/a/
head -c 3000001 /dev/urandom > tree/a/b/big
head -c 12345 /dev/urandom > tree/a/b/c/odd
: > tree/a/zero
ln -s b/big tree/a/link

qemu-img create -q -f qcow2 -o cluster_size=65536 img.qcow2 128M
mnt img.qcow2 disk || { bad "mount"; exit 1; }
mkfs.ext4 -q -F -d tree -L fqtest disk || bad "mkfs.ext4 -d on the mounted file"
e2fsck -fn disk >e2fsck.log 2>&1 || { bad "e2fsck -fn through the mount"; cat e2fsck.log; }
umnt disk
is_mounted disk && bad "still mounted after umount"
[ -e disk ] && bad "the file made by mount was not removed"
out=$(qemu-img check img.qcow2 2>&1) || { bad "qemu-img check after umount"; echo "$out"; }

# read back read-only (the image named as --image-opts)
: > disk
mnt --image-opts driver=qcow2,file.filename=img.qcow2,cache.direct=on,read-only=on disk ||
    { bad "mount --image-opts ...,read-only=on"; exit 1; }
[ "$(stat -c %s disk)" = $((128 << 20)) ] || bad "size is not the virtual size"
mkdir out
debugfs -R "rdump / out" disk >debugfs.log 2>&1 || { bad "debugfs rdump"; cat debugfs.log; }
diff -r tree/a out/a >/dev/null || bad "the tree read back differs"
[ -d out/empty ] || bad "the empty directory is missing"
[ "$(readlink out/a/link)" = b/big ] || bad "the symlink differs"
e2fsck -fn disk >/dev/null 2>&1 || bad "e2fsck -fn on the read-only mount"
[ "$(stat -c %A disk)" = "-r--r--r--" ] || bad "read-only mount shows mode $(stat -c %A disk)"
if dd if=/dev/zero of=disk bs=512 count=1 conv=notrunc 2>err.log; then
    bad "a write on the read-only mount succeeded"
else
    grep -q "Read-only file system" err.log || { bad "not EROFS"; cat err.log; }
fi
umnt disk
[ -e disk ] || bad "an existing FILE was removed"
qemu-img check -q img.qcow2 || bad "qemu-img check after the read-only mount"
[ $fail = 0 ] && echo "PASS"
exit $fail
