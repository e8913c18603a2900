#!/bin/bash
# test-img-check.sh: `fastqcow check` against qemu-img 7.2 check on the same
# images: clean, leaked clusters, a refcount too low (corruption), both,
# fragmented and compressed; human and json output, -q, exit codes
# (0/2/3/63), and -r leaks|all leaving an image qemu-img finds clean.
# SPDX-License-Identifier: MIT
set -u
: "${FASTQCOW:?FASTQCOW must point at the fastqcow tool}"
command -v qemu-img >/dev/null && command -v qemu-io >/dev/null && command -v python3 >/dev/null ||
    { echo "SKIP: qemu-img/qemu-io/python3 not installed"; exit 77; }
T=$(mktemp -d "${TEST_TMPDIR:-/tmp}/img-check.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
cd "$T" || exit 1
mkdir q f
fail=0
bad() { echo "FAIL: $*"; fail=1; }

# Run qemu-img on a copy of the image (checks may repair) and ours on
# another, under the same name; compare stdout, stderr (modulo the program
# name) and the exit code. Our copy stays in f/img for further checks.
same() {
    local img=${*: -1}
    cp "$img" q/img && cp "$img" f/img
    set -- "${@:1:$#-1}"
    (cd q && qemu-img check "$@" img >../q.out 2>../q.err; echo $? >../q.rc)
    (cd f && "$FASTQCOW" check "$@" img >../f.out 2>../f.err; echo $? >../f.rc)
    sed -i 's/qemu-img/fastqcow/g' q.err
    cmp -s q.rc f.rc || bad "check $* $img: exit $(cat f.rc), qemu-img $(cat q.rc)"
    cmp -s q.out f.out || { bad "check $* $img (stdout)"; diff q.out f.out; }
    cmp -s q.err f.err || { bad "check $* $img (stderr)"; diff q.err f.err; }
}

# set_refcount FILE CLUSTER VALUE: poke a 16-bit refcount entry.
set_refcount() {
    python3 - "$@" <<'EOF'
import struct, sys
f = open(sys.argv[1], 'r+b')
hdr = f.read(104)
cbits = struct.unpack('>I', hdr[20:24])[0]
rt = struct.unpack('>Q', hdr[48:56])[0]
cl, val = int(sys.argv[2]), int(sys.argv[3])
per_block = (1 << cbits) // 2
f.seek(rt + 8 * (cl // per_block))
rb = struct.unpack('>Q', f.read(8))[0]
f.seek(rb + 2 * (cl % per_block))
f.write(struct.pack('>H', val))
EOF
}

qemu-img create -q -f qcow2 clean.qcow2 4M
qemu-io -c 'write -P 1 0 128k' -c 'write -P 2 1M 64k' -c 'write -z 2M 64k' clean.qcow2 >/dev/null
qemu-img create -q -f qcow2 empty.qcow2 1M
cp clean.qcow2 leak.qcow2
truncate -s $((10 * 65536)) leak.qcow2
set_refcount leak.qcow2 8 1
set_refcount leak.qcow2 9 1
cp clean.qcow2 corrupt.qcow2
set_refcount corrupt.qcow2 3 0         # the L1 table's cluster
cp leak.qcow2 both.qcow2
set_refcount both.qcow2 3 0
qemu-img create -q -f qcow2 rev.qcow2 1M
for i in 3 2 1 0; do qemu-io -c "write -P $i $((i * 64))k 64k" rev.qcow2 >/dev/null; done
qemu-img convert -c -O qcow2 rev.qcow2 comp.qcow2
qemu-img create -q -f qcow2 -o cluster_size=512,refcount_bits=16 c512.qcow2 256k
qemu-io -c 'write -P 1 0 20k' c512.qcow2 >/dev/null
qemu-img create -q -f raw r.raw 1M

for img in clean.qcow2 empty.qcow2 leak.qcow2 corrupt.qcow2 both.qcow2 rev.qcow2 comp.qcow2 c512.qcow2; do
    same "$img"
    same --output=json "$img"
    same -q "$img"
done
same r.raw
same --output=json -f raw r.raw
same -r foo clean.qcow2
same --output=yaml clean.qcow2

# repairs: same report as qemu-img, and qemu-img agrees the result is clean
same -r leaks leak.qcow2
qemu-img check f/img >/dev/null || bad "qemu-img check after check -r leaks"
same -r leaks --output=json leak.qcow2
same -r all leak.qcow2
for img in corrupt.qcow2 both.qcow2; do
    cp "$img" f.img
    "$FASTQCOW" check -r all f.img >f.out 2>&1; rc=$?
    [ $rc = 0 ] || { bad "check -r all $img: exit $rc"; cat f.out; }
    qemu-img check f.img >q.out 2>&1 || { bad "qemu-img check after check -r all $img"; cat q.out; }
    qemu-io -c 'read -P 1 0 128k' -c 'read -P 2 1M 64k' -c 'read -P 0 2M 64k' f.img >/dev/null ||
        bad "data changed by check -r all $img"
done

[ $fail = 0 ] && echo "PASS: check"
exit $fail
