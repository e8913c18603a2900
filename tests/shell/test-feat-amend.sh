#!/bin/bash
# test-feat-amend.sh: `fastqcow amend -o` changes compat (1.1 <-> 0.10,
# turning zero clusters into what version 2 can express), lazy_refcounts,
# refcount_bits (every width 1..64, up and down, cluster sizes 512 B to
# 2 MiB), size and the backing file like `qemu-img amend`: the same `info`
# output afterwards, the same guest data (qemu-img compare), a clean check,
# images both tools keep writing to, and qemu-img's refusals and messages
# (extended L2, zstd with compressed clusters, refcount widths compat=0.10
# cannot hold, refcounts a narrower width cannot hold, create-only
# options); a refused amend leaves the file as it was.
# SPDX-License-Identifier: MIT
set -u
. "$(dirname "${BASH_SOURCE[0]}")/sample-lib.sh" || exit 1   # sampling (FQ_TEST_SEED)
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

# mine OPTS WHAT: amend a copy of orig.qcow2 with fastqcow alone (where
# qemu-img is slow: it takes seconds per refcount width change at 64 KiB
# clusters, minutes at 2 MiB): it must succeed, check clean, show the
# refcount width asked for and read like the original
mine() {
    cp orig.qcow2 f.qcow2
    F amend -o "$1" f.qcow2 2>f.err || { bad "amend $1 ($2) failed"; cat f.err; return; }
    qemu-img check -q f.qcow2 || { bad "amend $1 ($2): check"; qemu-img check f.qcow2 | head; }
    local w
    w=$(echo "$1" | sed -n 's/.*refcount_bits=\([0-9]*\).*/\1/p')
    [ -z "$w" ] || qemu-img info f.qcow2 | grep -q "refcount bits: $w$" || bad "amend $1 ($2): info"
    qemu-img compare -q orig.qcow2 f.qcow2 || bad "amend $1 ($2): guest data differs"
}

kinds=("plain" "zeros" "zeros+backing" "v2" "v2+backing" "lazy" "snap" "zstd" "zstd+comp"
       "extl2" "refbits8" "4k")
# a sanitizer run (FQ_TEST_QUICK) takes every other kind of image, which
# half rotating with the seed (tests/shell/sample-lib.sh); "zeros+backing"
# and "v2+backing" always (the snapshot case below uses their base)
share=$(sample_share 1 2) n=0
for mk in "${kinds[@]}"; do
    n=$((n + 1))
    case $mk in *backing) ;; *) sample_pick $n "$share" || continue;; esac
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
    # qemu-img takes seconds per width change here: cross-check a few
    case $mk in
        v2*) both refcount_bits=64 "$mk"
             mine compat=1.1,refcount_bits=2,lazy_refcounts=on "$mk";;
        extl2|lazy|4k) both refcount_bits=64 "$mk"
             both compat=0.10,refcount_bits=16 "$mk";;
        *) mine refcount_bits=64 "$mk"
           mine refcount_bits=2 "$mk";;
    esac
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

# refcount widths: every width up and down from 16 (and from the extremes)
# at cluster sizes 512 B to 2 MiB, over data spread across several refcount
# blocks and L2 tables; the result must also take more writes from both tools
widths() {   # widths CLUSTER_SIZE FROM TO...: qemu-img amends a copy too below 64k
    local cs=$1 from=$2 to
    shift 2
    qemu-img create -q -f qcow2 -o cluster_size=$cs,refcount_bits=$from orig.qcow2 64M
    qemu-io -c 'write -P 1 0 1536k' -c 'write -P 2 9M 64k' -c 'write -z 20M 1M' \
            -c 'write -P 3 33M 1M' -c 'write -c -P 4 40M 512' -c 'write -P 5 62M 2M' \
            orig.qcow2 >/dev/null
    for to; do
        case $cs in
            512|4k) both refcount_bits=$to "c$cs-rb$from"
                    qemu-img info f.qcow2 | grep -q "refcount bits: $to$" || bad "c$cs $from -> $to: info"
                    qemu-img compare -q orig.qcow2 f.qcow2 || bad "c$cs $from -> $to: differs from the original";;
            *) mine refcount_bits=$to "c$cs-rb$from";;
        esac
        F io -c 'write -P 6 12M 3M' f.qcow2 >/dev/null && qemu-io -c 'write -P 7 50M 1M' f.qcow2 >/dev/null &&
            qemu-io -c 'read -P 6 12M 3M' -c 'read -P 7 50M 1M' -c 'read -P 1 0 1536k' f.qcow2 |
            grep -c '^read' | grep -q 3 || bad "c$cs $from -> $to: writes after the change"
        qemu-img check -q f.qcow2 || bad "c$cs $from -> $to: check after writes"
    done
}
if [ -n "${FQ_TEST_QUICK:-}" ]; then
    # a sanitizer run (FQ_TEST_QUICK): the extremes of each cluster size
    widths 512 16 1 64
    widths 64k 16 1 64
    widths 2M 64 1
elif [ -z "${FQ_TEST_FULL:-}" ]; then
    # every width from 16 at the smallest and the default cluster size,
    # the extremes elsewhere (FQ_TEST_FULL=1: every pair below)
    widths 512 16 1 2 4 8 32 64
    widths 512 64 1 16
    widths 4k 16 1 64
    widths 64k 16 1 2 4 8 32 64
    widths 2M 16 1 64
    widths 2M 64 1
else
    widths 512 16 1 2 4 8 32 64
    widths 512 1 2 64
    widths 512 64 1 16
    widths 4k 16 1 2 4 8 32 64
    widths 64k 16 1 2 4 8 32 64
    widths 64k 8 1 64
    widths 2M 16 1 2 4 8 32 64
    widths 2M 1 64
    widths 2M 64 1
fi

# refcounts the new width cannot hold: qemu-img's refusal and message,
# naming the first such cluster; the file stays as it was
refuse_width() {   # refuse_width OPTS
    cp orig.qcow2 q.qcow2; cp orig.qcow2 f.qcow2
    qemu-img amend -o "$1" q.qcow2 2>q.err; qrc=$?
    F amend -o "$1" f.qcow2 2>f.err; frc=$?
    [ $qrc = $frc ] && [ $frc != 0 ] || bad "amend $1: exit $frc, qemu-img $qrc"
    [ "$(sed 's/^qemu-img: //' q.err)" = "$(sed 's/^fastqcow: //' f.err)" ] ||
        { bad "amend $1: message"; cat q.err f.err; }
    cmp -s orig.qcow2 f.qcow2 || bad "amend $1: the refused amend changed the file"
}
qemu-img create -q -f qcow2 -o cluster_size=4k orig.qcow2 4M
qemu-io -c 'write -P 1 0 1M' orig.qcow2 >/dev/null
qemu-img snapshot -c s orig.qcow2
qemu-io -c 'write -P 2 512k 1M' orig.qcow2 >/dev/null
refuse_width refcount_bits=1
both refcount_bits=2 "snapshot"
cp f.qcow2 s.qcow2
F amend -o refcount_bits=64 s.qcow2 && F amend -o refcount_bits=2 s.qcow2 || bad "snapshot: 2 -> 64 -> 2"
qemu-img check -q s.qcow2 || bad "snapshot: check after 2 -> 64 -> 2"
F snapshot -a s s.qcow2 && qemu-io -c 'read -P 1 0 1M' s.qcow2 | grep -q '^read' ||
    bad "snapshot: reads wrong after width changes"
qemu-img check -q s.qcow2 || bad "snapshot: check after applying it"
# compressed clusters packed into one host cluster
qemu-img create -q -f qcow2 -o cluster_size=4k orig.qcow2 1M
qemu-io -c 'write -c -P 1 0 4k' -c 'write -c -P 2 4k 4k' -c 'write -c -P 3 8k 4k' orig.qcow2 >/dev/null
refuse_width refcount_bits=1
refuse_width refcount_bits=1,compat=1.1
both refcount_bits=4 "compressed"
# combinations: the order is sane, refusals change nothing
qemu-img create -q -f qcow2 -o refcount_bits=8,cluster_size=4k orig.qcow2 2M
qemu-io -c 'write -P 1 0 128k' -c 'write -z 1M 64k' orig.qcow2 >/dev/null
both compat=0.10 "rb8"
both compat=0.10,refcount_bits=16 "rb8"
both refcount_bits=16,compat=0.10,lazy_refcounts=off "rb8"
cp orig.qcow2 f.qcow2
F amend -o refcount_bits=16,compat=0.10,lazy_refcounts=on f.qcow2 2>/dev/null && bad "rb8: compat=0.10 with lazy refcounts"
cmp -s orig.qcow2 f.qcow2 || bad "rb8: a refused combined amend changed the file"
qemu-img create -q -f qcow2 -o compat=0.10,cluster_size=4k orig.qcow2 2M
qemu-io -c 'write -P 1 0 128k' orig.qcow2 >/dev/null
both refcount_bits=8 "v2"
both refcount_bits=16 "v2"
both compat=1.1,refcount_bits=1 "v2"
both compat=1.1,refcount_bits=64,lazy_refcounts=on "v2"
both compat=0.10,refcount_bits=4 "v2"
for o in refcount_bits=3 refcount_bits=128 refcount_bits=0 refcount_bits=x; do
    both $o "v2"
done

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
