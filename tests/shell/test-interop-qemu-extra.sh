#!/bin/bash
# test-interop-qemu-extra.sh: images qemu makes with unusual option combos
# (16k clusters + refcount_bits=64 + extended_l2, 2M clusters + zstd +
# extended_l2, refcount_bits=1, refcount_bits=8 + lazy refcounts, compat
# 0.10, a partial last cluster, internal snapshots taken at different
# virtual sizes, a 4-deep chain mixing raw / qcow2 / compressed with relative
# backing names in other directories, raw backing files shorter, longer and
# of an odd length, a dirty lazy-refcounts image left by a killed qemu-io,
# the corrupt bit, encryption without its key, an external data file).
# Reads must match
# qemu-img convert byte for byte, `map`/`info`/`snapshot -l` must print what
# qemu-img prints, `check` must exit as qemu-img check does; writes by
# `fastqcow io` must read back like the same commands run by qemu-io and
# leave images `qemu-img check` finds clean.
# SPDX-License-Identifier: MIT
set -u
. "$(dirname "${BASH_SOURCE[0]}")/sample-lib.sh" || exit 1   # sampling (FQ_TEST_SEED)
: "${FASTQCOW:?FASTQCOW must point at the fastqcow tool}"
command -v qemu-img >/dev/null && command -v qemu-io >/dev/null ||
    { echo "SKIP: qemu-img/qemu-io not installed"; exit 77; }
T=$(mktemp -d "${TEST_TMPDIR:-/tmp}/interop-extra.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
cd "$T" || exit 1
fail=0
bad() { echo "FAIL: $*"; fail=1; }
Q() { qemu-io "$@" >/dev/null 2>&1 || bad "qemu-io $*"; }
norm() { sed 's/^qemu-img: /fastqcow: /'; }

# a sanitizer run (FQ_TEST_QUICK) compares map and info in one of the two
# outputs per image (which one rotating with the seed)
share=$(sample_share 1 2) nreads=0

# read side: raw conversion, compare, check exit code, map and info output
reads() {
    local img=$1 tag=$2 o qr fr
    nreads=$((nreads + 1))
    rm -f ref.raw fq.raw
    qemu-img convert -O raw "$img" ref.raw || { bad "$tag: qemu-img convert"; return; }
    "$FASTQCOW" convert -O raw "$img" fq.raw >out 2>&1 || { bad "$tag: convert"; cat out; }
    cmp -s ref.raw fq.raw || bad "$tag: convert -O raw differs from qemu-img convert"
    "$FASTQCOW" compare -q "$img" ref.raw || bad "$tag: compare with the raw copy"
    qemu-img check "$img" >/dev/null 2>&1; qr=$?
    "$FASTQCOW" check "$img" >/dev/null 2>&1; fr=$?
    [ $qr = $fr ] || bad "$tag: check exit $fr, qemu-img $qr"
    for o in human json; do
        [ $o = json ] && ! sample_pick $nreads "$share" && continue
        [ $o = human ] && ! sample_pick $((nreads + 1)) "$share" && continue
        qemu-img map --output=$o "$img" 2>&1 | norm >q.map
        "$FASTQCOW" map --output=$o "$img" >f.map 2>&1
        cmp -s q.map f.map || { bad "$tag: map --output=$o"; diff q.map f.map | head -5; }
        qemu-img info --output=$o "$img" >q.info 2>&1
        "$FASTQCOW" info --output=$o "$img" >f.info 2>&1
        cmp -s q.info f.info || { bad "$tag: info --output=$o"; diff q.info f.info | head -5; }
    done
}

# write side: the same commands through fastqcow io and qemu-io on copies
writes() {
    local img=$1 tag=$2 d a=() c
    shift 2
    d=$(dirname "$img")
    for c in "$@"; do a+=(-c "$c"); done
    cp "$img" "$d/w-f.qcow2" && cp "$img" "$d/w-q.qcow2"
    "$FASTQCOW" io "${a[@]}" "$d/w-f.qcow2" >out 2>&1 || { bad "$tag: fastqcow io"; grep -i fail out | head -3; }
    qemu-io "${a[@]}" "$d/w-q.qcow2" >/dev/null 2>&1 || bad "$tag: qemu-io"
    qemu-img check -q "$d/w-f.qcow2" || bad "$tag: qemu-img check after fastqcow io"
    qemu-img compare -q "$d/w-f.qcow2" "$d/w-q.qcow2" || bad "$tag: content differs from qemu-io's"
    rm -f "$d/w-f.qcow2" "$d/w-q.qcow2"
}

# ---- option combos qemu can make ----
qemu-img create -q -f qcow2 -o cluster_size=16k,refcount_bits=64,extended_l2=on e16.qcow2 4M
qemu-img create -q -f qcow2 -o cluster_size=2M,compression_type=zstd,extended_l2=on e2m.qcow2 64M
qemu-img create -q -f qcow2 -o cluster_size=4k,refcount_bits=1 r1.qcow2 8M
qemu-img create -q -f qcow2 -o cluster_size=8k,refcount_bits=8,lazy_refcounts=on r8.qcow2 8M
qemu-img create -q -f qcow2 -o compat=0.10,cluster_size=16k v2.qcow2 8M
W=('write -P 0x11 0 100k' 'write -z 200k 64k' 'write -c -P 0x22 2M 2M' 'write -P 0x33 1000 3000'
   'write -z -u 300k 5k' 'discard 150k 40k')
WF=('write -P 0x55 0 4k' 'write -P 0x56 1k 70k' 'write -z 10k 3k' 'write -z 2M 64k'
    'write -P 0x57 2100k 5k' 'discard 2200k 128k' 'write -z -u 190k 20k' 'write -P 0x5a 2M 100'
    'discard 0 1k' 'discard 3M 1M')
# with extended L2 a discard of whole subclusters zeroes them where qemu 7.2
# ignores anything short of a cluster: discards there are cluster aligned
WX=('write -P 0x55 0 4k' 'write -P 0x56 1k 70k' 'write -z 10k 3k' 'write -z 2M 64k'
    'write -P 0x57 2100k 5k' 'write -z -u 190k 20k' 'write -P 0x5a 2M 100' 'discard 2M 2M')
for i in e16 e2m r1 r8 v2; do
    a=(); for c in "${W[@]}"; do a+=(-c "$c"); done
    qemu-io "${a[@]}" $i.qcow2 >/dev/null 2>&1 || bad "qemu-io $i"
    reads $i.qcow2 $i
    case $i in e*) writes $i.qcow2 $i "${WX[@]}" ;; *) writes $i.qcow2 $i "${WF[@]}" ;; esac
done
qemu-img create -q -f qcow2 part.qcow2 1000001
Q -c 'write -P 0x11 0 100k' -c 'write -P 0x46 999000 1001' part.qcow2
reads part.qcow2 part
writes part.qcow2 part 'write -P 0x55 990000 10448' 'write -z 0 5000' 'discard 64k 64k'

# ---- zstd + extended L2 + snapshots taken at different virtual sizes ----
qemu-img create -q -f qcow2 -o compression_type=zstd,extended_l2=on,cluster_size=32k s.qcow2 4M
Q -c 'write -P 1 0 1M' -c 'write -c -P 2 1M 256k' -c 'write -z 2M 64k' s.qcow2
qemu-img snapshot -c s1 s.qcow2
qemu-img resize -q s.qcow2 10M
Q -c 'write -P 3 8M 1M' -c 'write -P 4 100k 4k' -c 'write -z 1M 4k' s.qcow2
qemu-img snapshot -c s2 s.qcow2
qemu-img resize -q --shrink s.qcow2 3M
Q -c 'write -P 5 0 8k' s.qcow2
qemu-img snapshot -l s.qcow2 >q.snap
"$FASTQCOW" snapshot -l s.qcow2 >f.snap 2>&1
cmp -s q.snap f.snap || bad "snapshot -l"
reads s.qcow2 snap
for sn in s1 s2; do
    cp s.qcow2 a.qcow2 && cp s.qcow2 b.qcow2
    "$FASTQCOW" snapshot -a $sn a.qcow2 || bad "snapshot -a $sn"
    qemu-img snapshot -a $sn b.qcow2
    qemu-img compare -q a.qcow2 b.qcow2 || bad "snapshot -a $sn: content"
    qemu-img check -q a.qcow2 || bad "snapshot -a $sn: qemu-img check"
done
cp s.qcow2 sw.qcow2 && qemu-img resize -q sw.qcow2 10M
writes sw.qcow2 snap-writes 'write -P 0x71 0 100' 'write -P 0x72 1M 70k' 'write -z 1050k 10k' \
    'discard 2M 64k' 'write -z -u 100k 32k' 'write -c -P 0x73 4M 32k' 'write -P 0x74 4M 1'

# ---- a 4-deep chain: raw <- qcow2 <- qcow2 (4k) <- compressed zstd copy ----
mkdir -p d1 d2 d3
truncate -s 6M d1/base.raw
Q -f raw -c 'write -P 0x01 0 6M' d1/base.raw
qemu-img create -q -f qcow2 -b ../d1/base.raw -F raw d2/mid.qcow2 8M
Q -c 'write -P 0x02 1M 1M' -c 'write -z 3M 512k' d2/mid.qcow2
qemu-img create -q -f qcow2 -o cluster_size=4k -b mid.qcow2 -F qcow2 d2/mid2.qcow2 10M
Q -c 'write -P 0x03 1536k 8k' -c 'write -c -P 0x04 5M 64k' -c 'discard 1M 4k' d2/mid2.qcow2
qemu-img convert -c -O qcow2 -o compression_type=zstd -B ../d2/mid2.qcow2 -F qcow2 d2/mid2.qcow2 d3/top.qcow2
reads d3/top.qcow2 chain-top
reads d2/mid2.qcow2 chain-mid2
for o in human json; do
    qemu-img info --backing-chain --output=$o d3/top.qcow2 >q.info
    "$FASTQCOW" info --backing-chain --output=$o d3/top.qcow2 >f.info 2>&1
    cmp -s q.info f.info || bad "info --backing-chain --output=$o"
done
CW=('write -P 0x61 1000 100' 'write -P 0x62 5243880 100' 'write -z 1540k 1k' 'write -z 1M 4k'
    'discard 5M 4k' 'write -z -u 2M 6k' 'write -P 0x64 5242880 1')
writes d2/mid2.qcow2 chain-mid2 "${CW[@]}"
writes d3/top.qcow2 chain-top "${CW[@]}"
"$FASTQCOW" convert -O qcow2 d3/top.qcow2 flat.qcow2 || bad "convert flattening the chain"
qemu-img info flat.qcow2 | grep -q '^backing file' && bad "flattened image has a backing file"
qemu-img compare -q flat.qcow2 d3/top.qcow2 || bad "flattened chain differs"

# ---- raw backing files shorter than, longer than and of an odd length ----
truncate -s 1000k short.raw && Q -f raw -c 'write -P 0x51 0 1000k' short.raw
truncate -s 1000001 odd.raw && Q -f raw -c 'write -P 0x52 0 999424' odd.raw
truncate -s 10M long.raw && Q -f raw -c 'write -P 0x53 0 10M' long.raw
for b in short odd long; do
    qemu-img create -q -f qcow2 -b $b.raw -F raw o-$b.qcow2 4M
    Q -c 'write -P 0x61 960k 8k' o-$b.qcow2
    reads o-$b.qcow2 raw-$b
    writes o-$b.qcow2 raw-$b 'write -P 0x62 990k 1k' 'write -P 0x63 999000 100' 'write -P 0x64 1M 10' \
        'write -z 1000k 10k' 'discard 0 64k' 'write -P 0x65 3145828 1' 'write -P 0x66 999999 3'
done
# compat 0.10 over a backing file and with a snapshot: discard / zero fall back as qemu does
qemu-img create -q -f qcow2 -o compat=0.10 -b long.raw -F raw v2o.qcow2 4M
Q -c 'write -P 0x71 0 1M' v2o.qcow2
V2W=('discard 0 128k' 'write -z 256k 64k' 'write -z -u 512k 64k' 'write -z 700k 1k' 'discard 800k 1k')
writes v2o.qcow2 v2-backing "${V2W[@]}"
qemu-img create -q -f qcow2 -o compat=0.10 v2n.qcow2 4M
Q -c 'write -P 0x71 0 1M' v2n.qcow2
qemu-img snapshot -c s v2n.qcow2
writes v2n.qcow2 v2-snapshot "${V2W[@]}" 'write -P 1 900k 1'
# extended L2 overlay: partial writes, zeroes and discards over backing data
qemu-img create -q -f qcow2 eb.qcow2 4M && Q -c 'write -P 0x21 0 4M' eb.qcow2
qemu-img create -q -f qcow2 -o extended_l2=on -b eb.qcow2 -F qcow2 eo.qcow2
Q -c 'write -P 0x31 4k 2k' -c 'write -z 64k 4k' -c 'write -z -u 130k 2k' eo.qcow2
reads eo.qcow2 extl2-overlay
writes eo.qcow2 extl2-overlay 'write -P 0x41 6k 1k' 'write -P 0x42 200k 100' 'write -z 4k 512' \
    'discard 128k 64k' 'write -z 300k 3k' 'write -z -u 400k 2k' 'write -P 0x43 66k 1k' 'discard 256k 128k'

# ---- a dirty lazy-refcounts image left by a killed qemu-io ----
qemu-img create -q -f qcow2 -o lazy_refcounts=on,cluster_size=4k l.qcow2 64M
sh -c "qemu-io -c 'write -P 7 0 1M' -c abort l.qcow2 >/dev/null 2>&1" 2>/dev/null
qemu-img check l.qcow2 >/dev/null 2>&1; qr=$?
"$FASTQCOW" check l.qcow2 >/dev/null 2>&1; fr=$?
[ $qr = $fr ] || bad "dirty image: check exit $fr, qemu-img $qr"
"$FASTQCOW" io -r -c 'read -P 7 0 1M' l.qcow2 >out 2>&1 || bad "dirty image: read-only read"
"$FASTQCOW" io -c 'write -P 8 1M 4k' l.qcow2 >out 2>&1 || bad "dirty image: write"
qemu-img check -q l.qcow2 || bad "dirty image not repaired by a read-write open"
qemu-io -c 'read -P 7 0 1M' -c 'read -P 8 1M 4k' l.qcow2 | grep -q 'Pattern verification failed' &&
    bad "dirty image: data after repair"

# ---- corrupt bit: read-only only, nothing written ----
cp eb.qcow2 cor.qcow2
printf '\x02' | dd of=cor.qcow2 bs=1 seek=79 conv=notrunc 2>/dev/null
cp cor.qcow2 cor.orig
"$FASTQCOW" io -c 'write -P 1 0 4k' cor.qcow2 >out 2>&1 && bad "corrupt bit: write accepted"
grep -q -i corrupt out || bad "corrupt bit: message does not say why"
"$FASTQCOW" io -r -c 'read -P 0x21 0 4k' cor.qcow2 >out 2>&1 || bad "corrupt bit: read-only read"
for c in "snapshot -c x" "amend -o lazy_refcounts=on"; do
    "$FASTQCOW" $c cor.qcow2 >out 2>&1 && bad "corrupt bit: $c accepted"
done
cmp -s cor.qcow2 cor.orig || bad "corrupt bit: the image was modified"

# ---- an external data file: read as qemu-img reads it (test-datafile.sh
# has the rest) ----
qemu-img create -q -f qcow2 -o data_file=ext.raw df.qcow2 16M
Q -c 'write -P 0x5e 1M 1M' df.qcow2
qemu-img convert -O raw df.qcow2 df-q.raw
"$FASTQCOW" convert -O raw df.qcow2 df-f.raw || bad "data file: convert"
cmp -s df-q.raw df-f.raw || bad "data file: read unlike qemu-img"
"$FASTQCOW" info df.qcow2 | grep -q '^    data file: ext.raw$' || bad "data file: info"

# ---- encryption without its secret, legacy AES: refused with a message
# (info and check need no key) ----
qemu-img create -q -f qcow2 --object secret,id=s0,data=pw -o encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10 luks.qcow2 16M
qemu-img create -q -f qcow2 --object secret,id=s0,data=pw -o encrypt.format=aes,encrypt.key-secret=s0 aes.qcow2 16M 2>/dev/null
# a bare LUKS container: never probed as a raw disk
qemu-img create -q -f luks --object secret,id=s0,data=pw -o key-secret=s0,iter-time=10 bare.luks 4M
for i in luks.qcow2 aes.qcow2 bare.luks; do
    [ -f $i ] || continue
    for c in info check map "io -c read\ 0\ 4k" "convert -O raw"; do
        eval "\"\$FASTQCOW\" $c $i $([ "$c" = "convert -O raw" ] && echo x.raw)" >out 2>&1
        r=$?
        case "$i:$c" in
        luks.qcow2:info|luks.qcow2:check|bare.luks:info)
            [ $r = 0 ] || { bad "$i: $c exit $r"; cat out; }
            continue ;;
        bare.luks:check)
            [ $r -lt 128 ] || bad "$i: $c exit $r"
            continue ;;
        esac
        { [ $r = 0 ] || [ $r -ge 128 ]; } && bad "$i: $c exit $r"
        grep -q -i -E "encrypt|key-secret" out || { bad "$i: $c gives no clear message"; cat out; }
    done
done

# ---- convert to a target with a backing file writes zeros where the source has them ----
qemu-img create -q -f qcow2 cbb.qcow2 4M && Q -c 'write -P 0x55 0 4M' cbb.qcow2
qemu-img create -q -f qcow2 csrc.qcow2 4M && Q -c 'write -P 0x66 1M 1M' -c 'write -z 2M 64k' csrc.qcow2
for c in "" "-c"; do
    rm -f cdst.qcow2
    "$FASTQCOW" convert $c -O qcow2 -o backing_file=cbb.qcow2,backing_fmt=qcow2 csrc.qcow2 cdst.qcow2 ||
        bad "convert $c with a target backing file"
    qemu-img compare -q csrc.qcow2 cdst.qcow2 || bad "convert $c with a target backing file: content"
    qemu-img check -q cdst.qcow2 || bad "convert $c with a target backing file: check"
done

[ $fail = 0 ] && echo "PASS"
exit $fail
