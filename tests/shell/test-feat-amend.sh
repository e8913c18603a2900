#!/bin/bash
# test-feat-amend.sh: `fastqcow amend -o` changes compat (1.1 <-> 0.10,
# turning zero clusters into what version 2 can express), lazy_refcounts,
# size and the backing file like `qemu-img amend`: the same `info` output
# afterwards, the same guest data (qemu-img compare), a clean check, and
# qemu-img's refusals (extended L2, zstd with compressed clusters, other
# refcount widths, create-only options).
# SPDX-License-Identifier: MIT
set -u
: "${FASTQCOW:?FASTQCOW must point at the fastqcow tool}"
command -v qemu-img >/dev/null && command -v qemu-io >/dev/null ||
    { echo "SKIP: qemu-img/qemu-io not installed"; exit 77; }
T=$(mktemp -d "${TEST_TMPDIR:-/tmp}/feat-amend.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
cd "$T" || exit 1
fail=0
bad() { echo "FAIL: $*"; fail=1; }
F() { "$FASTQCOW" "$@"; }

# both OPTS: amend copies of orig.qcow2 with both tools
both() {
    cp orig.qcow2 q.qcow2; cp orig.qcow2 f.qcow2
    qemu-img amend -o "$1" q.qcow2 >/dev/null 2>&1; qrc=$?
    F amend -o "$1" f.qcow2 >/dev/null 2>f.err; frc=$?
    [ $qrc = $frc ] || { bad "amend $1 ($2): exit $frc, qemu-img $qrc"; cat f.err; }
    [ $qrc = 0 ] || return
    qemu-img info q.qcow2 | grep -v -e '^image:' -e '^disk size:' >q.out
    qemu-img info f.qcow2 | grep -v -e '^image:' -e '^disk size:' >f.out
    cmp -s q.out f.out || { bad "amend $1 ($2): info"; diff q.out f.out; }
    qemu-img compare -q q.qcow2 f.qcow2 || bad "amend $1 ($2): guest data differs"
    F compare -q q.qcow2 f.qcow2 || bad "amend $1 ($2): fastqcow reads them differently"
    qemu-img check -q f.qcow2 || { bad "amend $1 ($2): check"; qemu-img check f.qcow2 | head; }
    F info f.qcow2 >/dev/null || bad "amend $1 ($2): fastqcow info"
}

for mk in "plain" "zeros" "zeros+backing" "v2" "v2+backing" "lazy" "snap" "zstd" "zstd+comp" \
          "extl2" "refbits8" "4k"; do
    o=""; b=""
    case $mk in
        v2*) o="-o compat=0.10";;
        lazy) o="-o lazy_refcounts=on";;
        zstd*) o="-o compression_type=zstd";;
        extl2) o="-o extended_l2=on";;
        refbits8) o="-o refcount_bits=8";;
        4k) o="-o cluster_size=4k";;
    esac
    case $mk in *backing*)
        qemu-img create -q -f qcow2 base.qcow2 2M
        qemu-io -c 'write -P 1 0 2M' base.qcow2 >/dev/null
        b="-b base.qcow2 -F qcow2";;
    esac
    qemu-img create -q -f qcow2 $o $b orig.qcow2 2M
    cmds=(-c 'write -P 2 0 128k' -c 'write -P 3 1M 64k')
    case $mk in
        zeros*) cmds+=(-c 'write -z 512k 128k' -c 'write -P 4 768k 64k' -c 'write -z 768k 64k');;
        zstd+comp) cmds+=(-c 'write -c -P 5 1536k 64k');;
        snap) cmds+=(-c 'write -z 64k 64k');;
    esac
    qemu-io "${cmds[@]}" orig.qcow2 >/dev/null
    [ $mk = snap ] && qemu-img snapshot -c s orig.qcow2
    both compat=0.10 "$mk"
    both compat=1.1 "$mk"
    both lazy_refcounts=on "$mk"
    both lazy_refcounts=off "$mk"
    both compat=1.1,lazy_refcounts=on "$mk"
    both size=4M "$mk"
done
# zero clusters inside a snapshot are expanded too: the snapshot reads the same
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 orig.qcow2 2M
qemu-io -c 'write -P 2 0 128k' -c 'write -z 64k 64k' -c 'write -z 1M 64k' orig.qcow2 >/dev/null
qemu-img snapshot -c s orig.qcow2
qemu-io -c 'write -P 3 0 2M' orig.qcow2 >/dev/null
cp orig.qcow2 q.qcow2; cp orig.qcow2 f.qcow2
qemu-img amend -o compat=0.10 q.qcow2 && F amend -o compat=0.10 f.qcow2 || bad "downgrade with a snapshot"
qemu-img snapshot -a s q.qcow2 && qemu-img snapshot -a s f.qcow2
qemu-img compare -q q.qcow2 f.qcow2 || bad "downgraded snapshot reads differently"
qemu-img check -q f.qcow2 || bad "downgraded snapshot: check"

# a compat=0.10 snapshot without extra data (old qemu wrote none): the
# upgrade rewrites the table with the virtual size, as version 3 requires
if command -v python3 >/dev/null; then
    qemu-img create -q -f qcow2 -o compat=0.10 old.qcow2 1M
    qemu-io -c 'write -P 9 0 64k' old.qcow2 >/dev/null
    qemu-img snapshot -c s old.qcow2
    qemu-io -c 'write -P 8 0 64k' old.qcow2 >/dev/null
    python3 - old.qcow2 <<'PY'
import struct, sys
f = open(sys.argv[1], 'r+b')
h = f.read(72)
nb, so = struct.unpack('>IQ', h[60:72])
f.seek(so)
d = f.read(65536)
out, p = b'', 0
for i in range(nb):
    l1o, l1s, il, nl, ds, dn, vc, vs, ex = struct.unpack('>QIHHIIQII', d[p:p + 40])
    ident = d[p + 40 + ex:p + 40 + ex + il]
    name = d[p + 40 + ex + il:p + 40 + ex + il + nl]
    e = struct.pack('>QIHHIIQII', l1o, l1s, il, nl, ds, dn, vc, vs, 0) + ident + name
    out += e + b'\0' * (-len(e) % 8)
    p = (p + 40 + ex + il + nl + 7) // 8 * 8
f.seek(so)
f.write(out + b'\0' * (p - len(out)))
PY
    F amend -o compat=1.1 old.qcow2 || bad "upgrade with an old snapshot table"
    qemu-img check -q old.qcow2 || bad "upgrade with an old snapshot table: check"
    F snapshot -l old.qcow2 | grep -q ' s ' || bad "upgrade lost the snapshot"
    qemu-img snapshot -a s old.qcow2 && qemu-io -c 'read -P 9 0 64k' old.qcow2 | grep -q '^read' ||
        bad "upgraded old snapshot reads wrong"
    qemu-img info --output=json old.qcow2 | grep -q '"compat": "1.1"' || bad "not upgraded"
fi

# downgrade, then back
qemu-img create -q -f qcow2 orig.qcow2 2M
qemu-io -c 'write -P 6 0 64k' -c 'write -z 64k 64k' orig.qcow2 >/dev/null
F amend -o compat=0.10 orig.qcow2 && F amend -o compat=1.1,lazy_refcounts=on orig.qcow2 ||
    bad "downgrade and upgrade"
qemu-img info orig.qcow2 | grep -q 'lazy refcounts: true' || bad "upgrade with lazy refcounts"
qemu-io -c 'read -P 6 0 64k' -c 'read -P 0 64k 64k' orig.qcow2 | grep -c '^read' | grep -q 2 ||
    bad "downgrade and upgrade: data"
qemu-img check -q orig.qcow2 || bad "downgrade and upgrade: check"

# the backing file: qemu-img 7.2 refuses (rebase does it)
qemu-img create -q -f qcow2 b1.qcow2 1M
qemu-img create -q -f qcow2 b2.qcow2 1M
qemu-img create -q -f qcow2 -b b1.qcow2 -F qcow2 orig.qcow2
both backing_file=b2.qcow2,backing_fmt=qcow2 "backing"
both backing_fmt=raw "backing"

# refusals and usage errors
qemu-img create -q -f qcow2 e.qcow2 1M
for o in cluster_size=4k extended_l2=on compression_type=zstd preallocation=full foo=bar compat=0.9 \
         lazy_refcounts=maybe; do
    F amend -o $o e.qcow2 2>/dev/null && bad "amend -o $o succeeded"
done
F amend e.qcow2 2>/dev/null && bad "amend without -o succeeded"
F amend -o compat=0.10,lazy_refcounts=on e.qcow2 2>/dev/null && bad "compat=0.10 with lazy refcounts"
qemu-img create -q -f raw e.raw 1M
F amend -f raw -o size=2M e.raw 2>/dev/null && bad "amend of a raw image succeeded"
F amend -o help e.qcow2 | grep -q '^Amend options' || bad "amend -o help"
qemu-img check -q e.qcow2 || bad "refusals left the image unclean"

[ $fail = 0 ] && echo "PASS: amend"
exit $fail
