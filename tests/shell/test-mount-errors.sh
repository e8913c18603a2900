#!/bin/bash
# test-mount-errors.sh: bad input to `fastqcow mount` and `umount` gets a
# clear message and a non-zero exit, and leaves nothing mounted, running
# or created: FILE a directory, a missing parent directory, an image that
# does not open (missing, not an image, corrupt header), a second mount on
# the same FILE (the first keeps serving), no FUSE device (a mount
# namespace where /dev/fuse is a plain file), conflicting options, bad
# --image-opts; umount
# of a file that is not mounted or not served by fastqcow.
# SPDX-License-Identifier: MIT
set -u
MT_NAME=mount-errors
. "$TEST_SRCDIR/shell/mount-common.sh"

qemu-img create -q -f qcow2 img.qcow2 16M
# refused ERRPATTERN FILE -- ARGS: mount ARGS fails naming the problem
refused() {
    local pat=$1 file=$2
    shift 3
    if F mount "$@" >out.log 2>&1; then
        bad "mount $* succeeded"
        F umount "$file" 2>/dev/null
        return
    fi
    grep -q "$pat" out.log || { bad "mount $*: message does not say '$pat'"; cat out.log; }
    local path
    path="$(cd "$(dirname "$file")" 2>/dev/null && pwd)/$(basename "$file")"
    [ "$(grep -cF " $path " /proc/self/mountinfo)" = "${MOUNTED:-0}" ] && return
    bad "mount $*: left $file mounted"
}
mkdir dir
refused "is a directory" dir -- img.qcow2 dir
refused "Could not create" nodir/f -- img.qcow2 nodir/f
[ -e nodir ] && bad "a missing parent was created"
refused "No such file" f1 -- missing.qcow2 f1
[ -e f1 ] && bad "the FILE created for a failed mount was left"
head -c 1M /dev/urandom > junk.qcow2
printf 'QFI\xfb' | dd of=junk.qcow2 conv=notrunc status=none
refused "Could not open 'junk.qcow2': " f1 -- -f qcow2 junk.qcow2 f1
[ -e f1 ] && bad "the FILE created for a failed mount was left"
: > keep
refused "No such file" keep -- missing.qcow2 keep
[ -e keep ] || bad "an existing FILE was removed by a failed mount"
refused "exclude" keep -- --growable -r img.qcow2 keep
refused "needs IMAGE and FILE" keep -- img.qcow2
refused "does not support the option 'bogus'" keep -- --image-opts driver=qcow2,file.filename=img.qcow2,bogus=1 keep
refused "A block device must be specified" keep -- --image-opts driver=qcow2 keep
F mount --frobnicate img.qcow2 keep >/dev/null 2>&1 && bad "an unknown option was accepted"

# a second mount on the same file
mnt img.qcow2 keep || bad "mount"
qemu-img create -q -f qcow2 other.qcow2 16M
MOUNTED=1 refused "already a mount point" keep -- other.qcow2 keep
[ "$(stat -c %s keep)" = $((16 << 20)) ] || bad "the first mount stopped serving"
dd if=/dev/zero of=keep bs=4k count=1 conv=notrunc status=none || bad "the first mount refuses writes"
umnt keep
is_mounted keep && bad "still mounted"

# umount of files that are not fastqcow mounts
F umount keep >out.log 2>&1 && bad "umount of an unmounted file succeeded"
grep -q "not mounted" out.log || { bad "umount: message"; cat out.log; }
F umount / >out.log 2>&1 && bad "umount / succeeded"
grep -q "not served by fastqcow" out.log || { bad "umount /: message"; cat out.log; }

# no FUSE device: /dev/fuse replaced by a plain file in a mount namespace
if [ "$(id -u)" = 0 ] && command -v unshare >/dev/null && unshare -m true 2>/dev/null; then
    : > nofuse
    unshare -m bash -c 'mount --bind nofuse /dev/fuse && exec "$0" mount img.qcow2 f2' "$FASTQCOW" \
        >out.log 2>&1 && bad "mount without a FUSE device succeeded"
    grep -q "FUSE is not available" out.log || { bad "no /dev/fuse: message"; cat out.log; }
    [ -e f2 ] && bad "the FILE created for a failed mount was left"
else
    echo "note: cannot hide /dev/fuse here (needs root and unshare), that case skipped"
fi
[ $fail = 0 ] && echo "PASS"
exit $fail
