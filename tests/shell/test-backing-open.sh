#!/bin/bash
# test-backing-open.sh: how backing chains are opened.
# Formats: a backing file whose format the image does not
# record (as images made before backing formats were required are) is
# refused with a clear message unless the user names the format or asks
# for probing (--backing-format FMT|probe, FASTQCOW_BACKING_FORMAT); the
# image then reads as qemu reads it. A raw disk that starts with qcow2's
# magic is never taken for qcow2 unless probing is asked for.
# Loops: a chain that comes back to one of its files, under any name
# (absolute path, ./name, a symlink), is refused with qemu's message by
# every subcommand, info --backing-chain printing nothing; rebase and
# create never make one; a long chain
# (70 images) opens, and one past the limit fails naming the file.
# SPDX-License-Identifier: MIT
set -u
: "${FASTQCOW:?FASTQCOW must point at the fastqcow tool}"
command -v qemu-img >/dev/null && command -v qemu-io >/dev/null && command -v python3 >/dev/null ||
    { echo "SKIP: qemu-img/qemu-io/python3 not installed"; exit 77; }
T=$(mktemp -d "${TEST_TMPDIR:-/tmp}/backing-open.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
cd "$T" || exit 1
fail=0
bad() { echo "FAIL: $*"; fail=1; }
F() { "$FASTQCOW" "$@"; }
# drop the backing-format extension from the header of $1 (turn it into
# an unknown extension, which is kept as is)
unrecord() {
    python3 - "$1" <<'PY'
import struct, sys
p = sys.argv[1]
d = bytearray(open(p, 'rb').read())
off = struct.unpack('>I', d[100:104])[0]
while True:
    t, l = struct.unpack('>II', d[off:off + 8])
    if t == 0:
        break
    if t == 0xe2792aca:
        d[off:off + 4] = struct.pack('>I', 0x6a6a6a6a)
    off += 8 + ((l + 7) & ~7)
open(p, 'wb').write(d)
PY
}

# raw and qcow2 backing files, overlays that do not record their format
truncate -s 4M base.raw
qemu-io -f raw -c 'write -P 0x3c 0 1M' -c 'write -P 0x4d 3M 512k' base.raw >/dev/null
qemu-img create -q -f qcow2 base.qcow2 4M
qemu-io -c 'write -P 0x5e 1M 1M' base.qcow2 >/dev/null
for b in raw qcow2; do
    qemu-img create -q -f qcow2 -b base.$b -F $b top-$b.qcow2 4M
    qemu-io -c 'write -P 0x6f 512k 64k' top-$b.qcow2 >/dev/null
    qemu-img convert -O raw top-$b.qcow2 want-$b.raw
    unrecord top-$b.qcow2
    F info top-$b.qcow2 | grep -q '^backing file format' && bad "$b: the format is still recorded"
    # refused by default, with a message that says what to do
    out=$(F io -c 'read 0 4k' top-$b.qcow2 2>&1) && bad "$b: opened without a backing format"
    case $out in *"records no backing format"*"--backing-format"*) ;; *) bad "$b: message: $out";; esac
    F compare -q top-$b.qcow2 want-$b.raw 2>/dev/null && bad "$b: compare opened it"
    # named or probed: read as qemu reads it
    F --backing-format $b compare -q -F raw top-$b.qcow2 want-$b.raw || bad "$b: --backing-format $b"
    F --backing-format=probe compare -q -F raw top-$b.qcow2 want-$b.raw || bad "$b: --backing-format=probe"
    FASTQCOW_BACKING_FORMAT=probe F compare -q -F raw top-$b.qcow2 want-$b.raw ||
        bad "$b: FASTQCOW_BACKING_FORMAT=probe"
    F --backing-format probe convert -O raw top-$b.qcow2 got.raw && cmp -s got.raw want-$b.raw ||
        bad "$b: convert with probing"
    F --backing-format probe map --output=json top-$b.qcow2 >/dev/null || bad "$b: map with probing"
done

# a raw guest disk whose first bytes are a qcow2 header: read as raw when
# the user says raw, as qcow2 only when probing is asked for
qemu-img create -q -f qcow2 inner.qcow2 1M
cp inner.qcow2 disk.raw && truncate -s 4M disk.raw
qemu-img create -q -f qcow2 -b disk.raw -F raw top.qcow2 4M
qemu-img convert -O raw top.qcow2 want.raw
unrecord top.qcow2
F io -c 'read 0 4k' top.qcow2 >/dev/null 2>&1 && bad "magic disk: opened without a format"
F --backing-format raw compare -q -F raw top.qcow2 want.raw || bad "magic disk: --backing-format raw"
F info --backing-chain top.qcow2 >chain.out 2>&1 && bad "magic disk: info --backing-chain probed"
grep -q 'records no backing format' chain.out || bad "magic disk: info --backing-chain message"
F --backing-format probe info --backing-chain top.qcow2 >chain.out 2>&1
sed -n '/^image: disk.raw/,$p' chain.out | grep -q '^file format: qcow2' ||
    bad "magic disk: probing should see qcow2"
F --backing-format raw info --backing-chain top.qcow2 >chain.out 2>&1
sed -n '/^image: disk.raw/,$p' chain.out | grep -q '^file format: raw' ||
    bad "magic disk: --backing-format raw should see raw"
# a format recorded in the image is used without any option
qemu-img create -q -f qcow2 -b base.raw -F raw rec.qcow2 4M
F compare -q -F raw rec.qcow2 base.raw || bad "recorded format"

# bad option values
F --backing-format vmdk info top.qcow2 >/dev/null 2>&1 && bad "--backing-format vmdk accepted"
F --backing-format >/dev/null 2>&1 && bad "--backing-format without a value accepted"
# loops under other names
mkdir lp && cd lp || exit 1
qemu-img create -q -f qcow2 a.qcow2 1M
qemu-img create -q -f qcow2 -b a.qcow2 -F qcow2 b.qcow2
ln -s b.qcow2 c.qcow2
for name in "$PWD/b.qcow2" ./c.qcow2 b.qcow2 "../lp/b.qcow2"; do
    qemu-img rebase -u -b "$name" -F qcow2 a.qcow2
    for cmd in "info --backing-chain" "io -c read0" "map" "compare b.qcow2" "convert -O raw"; do
        case $cmd in
        "io -c read0") args=(io -c 'read 0 4k' b.qcow2) ;;
        "convert -O raw") args=(convert -O raw b.qcow2 out.raw) ;;
        *) read -ra args <<<"$cmd"; args+=(b.qcow2) ;;
        esac
        out=$(timeout 20 "$FASTQCOW" "${args[@]}" 2>&1); rc=$?
        want=1; [ "${args[0]}" = compare ] && want=2    # compare: 2 on errors
        [ $rc = $want ] || bad "loop via '$name': $cmd exit $rc"
        case $out in
        *"creates an infinite loop"*) ;;
        *) bad "loop via '$name': $cmd: ${out:0:200}" ;;
        esac
        [ ${#out} -lt 600 ] || bad "loop via '$name': $cmd printed ${#out} bytes"
    done
done
# no command makes a loop: rebase onto the image itself or onto an image
# whose chain holds it, create over its own backing file
qemu-img rebase -u -b "" a.qcow2
qemu-img create -q -f qcow2 s.qcow2 1M
qemu-img create -q -f qcow2 -b s.qcow2 -F qcow2 s2.qcow2
cp s.qcow2 s.orig
for cmd in "rebase -b s.qcow2 -F qcow2 s.qcow2" "rebase -u -b ./s.qcow2 -F qcow2 s.qcow2" \
           "rebase -b s2.qcow2 -F qcow2 s.qcow2" "create -q -f qcow2 -b s.qcow2 -F qcow2 s.qcow2 1M" \
           "create -q -f qcow2 -b ./c.qcow2 -F qcow2 b.qcow2 1M"; do
    cp b.qcow2 b.orig
    read -ra args <<<"$cmd"
    timeout 20 "$FASTQCOW" "${args[@]}" >/dev/null 2>&1 && bad "'$cmd' succeeded"
    cmp -s s.qcow2 s.orig && cmp -s b.qcow2 b.orig || bad "'$cmd' changed an image"
done
cd .. || exit 1
# a chain of 70 images opens and reads through to the bottom
qemu-img create -q -f qcow2 d0.qcow2 1M
qemu-io -c 'write -P 0x77 0 4k' d0.qcow2 >/dev/null
# (-u: qemu-img need not open the chain below each new image, which made
# the loop quadratic; the size it would have read is given instead)
for i in $(seq 1 69); do qemu-img create -q -f qcow2 -u -b d$((i - 1)).qcow2 -F qcow2 d$i.qcow2 1M; done
F io -c 'read -P 0x77 0 4k' d69.qcow2 | grep -q 'verification failed' && bad "70-deep chain content"
F io -c 'read -P 0x77 0 4k' d69.qcow2 >/dev/null 2>&1 || bad "70-deep chain refused"
[ "$(F info --backing-chain d69.qcow2 | grep -c '^image:')" = 70 ] || bad "70-deep info --backing-chain"
exit $fail
