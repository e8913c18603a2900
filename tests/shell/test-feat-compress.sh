#!/bin/bash
# test-feat-compress.sh: compressed cluster writes. `fastqcow io write -c`
# and `fastqcow convert -c` (zlib and zstd, 512-byte to 2 MiB clusters,
# extended L2, a partial last cluster) must produce images that qemu-io
# reads back exactly, that `qemu-img check` finds clean and that
# `qemu-img compare` finds equal to the source; several compressed clusters
# share a host cluster; data that does not compress is stored plain; a
# partial rewrite turns a compressed cluster into a normal one; compressed
# clusters under a snapshot are copied, not overwritten.
# SPDX-License-Identifier: MIT
set -u
. "$(dirname "${BASH_SOURCE[0]}")/sample-lib.sh" || exit 1   # sampling (FQ_TEST_SEED)
: "${FASTQCOW:?FASTQCOW must point at the fastqcow tool}"
command -v qemu-img >/dev/null && command -v qemu-io >/dev/null ||
    { echo "SKIP: qemu-img/qemu-io not installed"; exit 77; }
T=$(mktemp -d "${TEST_TMPDIR:-/tmp}/feat-compress.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
cd "$T" || exit 1
fail=0
bad() { echo "FAIL: $*"; fail=1; }
F() { "$FASTQCOW" "$@"; }
clean() { qemu-img check -q "$1" || { bad "$2: qemu-img check"; qemu-img check "$1" | head -5; }; }
# number of compressed clusters qemu-img check counts
ncomp() { qemu-img check --output=json "$1" | awk -F': ' '/compressed-clusters/ { gsub(",", "", $2); print $2 + 0; f = 1 } END { if (!f) print 0 }'; }
# qemu-io must read pattern $3 at $1 for $2 bytes
reads() { qemu-io -f qcow2 -c "read -P $3 $1 $2" "$4" | grep -q '^read ' || bad "$4: read -P $3 $1 $2"; }

# a source with compressible runs, zeros, random data and an odd size
head -c 3000000 /dev/urandom >rnd
qemu-img create -q -f raw src.raw 8388000
qemu-io -f raw -c 'write -P 0x11 0 1M' -c 'write -P 0x22 1536k 700k' -c 'write -P 0x33 8387000 1000' \
    src.raw >/dev/null
dd if=rnd of=src.raw bs=64k seek=64 count=40 conv=notrunc 2>/dev/null
# a sanitizer run (FQ_TEST_QUICK) takes every other layout of the two
# convert loops (which half rotating with the seed)
share=$(sample_share 1 2)
n=0
for opts in "" "compression_type=zstd" "cluster_size=512" "cluster_size=4k,compression_type=zstd" \
            "cluster_size=2M" "extended_l2=on" "extended_l2=on,cluster_size=16k,compression_type=zstd" \
            "compat=0.10" "refcount_bits=1,cluster_size=4k"; do
    n=$((n + 1)); sample_pick $n "$share" || continue
    F convert -c -O qcow2 ${opts:+-o $opts} src.raw c.qcow2 || { bad "convert -c $opts"; continue; }
    clean c.qcow2 "convert -c $opts"
    qemu-img compare -q src.raw c.qcow2 || bad "convert -c $opts: guest data differs"
    [ "$(ncomp c.qcow2)" -gt 0 ] || bad "convert -c $opts: no compressed clusters"
    # and back through our reader
    F convert -O raw c.qcow2 back.raw && cmp -s src.raw back.raw || bad "convert -c $opts: round trip"
done
# compressed images qemu-img makes read back exactly
for opts in "" "compression_type=zstd" "cluster_size=4k,extended_l2=off" "extended_l2=on" \
            "cluster_size=2M,compression_type=zstd" "compat=0.10,cluster_size=512"; do
    n=$((n + 1)); sample_pick $n "$share" || continue
    qemu-img convert -c -O qcow2 ${opts:+-o $opts} src.raw qc.qcow2
    F convert -O raw qc.qcow2 qback.raw && cmp -s src.raw qback.raw || bad "reading qemu-img convert -c $opts"
    F compare -q src.raw qc.qcow2 || bad "fastqcow compare with qemu-img convert -c $opts"
done
# as small as qemu-img convert -c makes it (packing), give or take a little
F convert -c -O qcow2 src.raw ours.qcow2
qemu-img convert -c -O qcow2 src.raw qemu.qcow2
o=$(stat -c %s ours.qcow2) q=$(stat -c %s qemu.qcow2)
[ "$o" -le $((q + q / 20 + 65536)) ] || bad "convert -c: $o bytes, qemu-img $q"
qemu-img info c.qcow2 >/dev/null
F convert -c -O qcow2 -o compression_type=zstd src.raw z.qcow2
qemu-img info z.qcow2 | grep -q 'compression type: zstd' || bad "convert -c -o compression_type=zstd"
F convert -c -O raw src.raw x.raw 2>/dev/null && bad "convert -c to raw succeeded"

# io write -c: byte-exact against qemu-io on the same commands
for c in 'write -c -P 1 0 64k' 'write -c -P 1 64k 4k' 'write -c -P 2 128k 128k' 'write -c -P 1 1000 64k' \
         'write -c -P 3 0 1000' 'write -c -P 4 4032k 64k' 'write -c -P 5 4032k 128k'; do
    qemu-img create -q -f qcow2 q.qcow2 4M
    qemu-img create -q -f qcow2 f.qcow2 4M
    qemu-io -c "$c" q.qcow2 2>&1 | sed 's/ops;.*/ops/' >q.out
    F io -c "$c" f.qcow2 2>&1 | sed 's/ops;.*/ops/' >f.out
    cmp -s q.out f.out || { bad "io $c"; diff q.out f.out; }
    qemu-img compare -q q.qcow2 f.qcow2 || bad "io $c: images differ"
    clean f.qcow2 "io $c"
done
qemu-img create -q -f raw r.raw 1M
F io -f raw -c 'write -c 0 64k' r.raw | grep -q 'Operation not supported' || bad "io write -c on raw"

# packing: 16 compressed clusters of 64k fit in few host clusters, and
# the refcounts of the shared host clusters are right (check)
qemu-img create -q -f qcow2 p.qcow2 4M
cmds=()
for i in $(seq 0 15); do cmds+=(-c "write -c -P $((i + 1)) $((i * 64))k 64k"); done
F io "${cmds[@]}" p.qcow2 >/dev/null
clean p.qcow2 "packing"
[ "$(ncomp p.qcow2)" = 16 ] || bad "packing: $(ncomp p.qcow2) compressed clusters"
[ "$(stat -c %s p.qcow2)" -le $((8 * 65536)) ] || bad "packing: file is $(stat -c %s p.qcow2) bytes"
for i in 0 7 15; do reads $((i * 64))k 64k $((i + 1)) p.qcow2; done
# dropping some of them frees no host cluster still in use
F io -c 'write -P 9 64k 64k' -c 'write -z 128k 128k' -c 'discard 512k 64k' p.qcow2 >/dev/null
clean p.qcow2 "packing after rewrites"
reads 0 64k 1 p.qcow2; reads 64k 64k 9 p.qcow2; reads 128k 128k 0 p.qcow2; reads 960k 64k 16 p.qcow2
F io -c 'write -c -P 7 2M 64k' -c 'write -c -P 8 2112k 64k' p.qcow2 >/dev/null
clean p.qcow2 "packing after more compressed writes"
reads 2M 64k 7 p.qcow2; reads 2112k 64k 8 p.qcow2; reads 960k 64k 16 p.qcow2

# random data does not shrink: stored plain
qemu-img create -q -f qcow2 n.qcow2 1M
head -c 65536 rnd >chunk
F io -c 'write -c -s chunk 0 64k' n.qcow2 >/dev/null || bad "io write -c -s"
qemu-io -f raw -c 'read -v 0 64k' chunk >/dev/null
F convert -O raw n.qcow2 n.raw && cmp -s -n 65536 n.raw chunk || bad "incompressible cluster reads back wrong"
qemu-img map --output=json n.qcow2 | head -1 | grep -q '"offset"' || bad "incompressible cluster not stored plain"
clean n.qcow2 "incompressible"

# rewriting part of a compressed cluster turns it into a normal cluster
qemu-img create -q -f qcow2 w.qcow2 1M
F io -c 'write -c -P 1 0 64k' w.qcow2 >/dev/null
qemu-img map --output=json w.qcow2 | head -1 | grep -q '"offset"' && bad "compressed cluster has an offset"
F io -c 'write -P 5 4k 4k' w.qcow2 >/dev/null
qemu-img map --output=json w.qcow2 | head -1 | grep -q '"data": true, "offset"' ||
    bad "partly rewritten compressed cluster is not a normal cluster"
[ "$(ncomp w.qcow2)" = 0 ] || bad "partly rewritten compressed cluster still counted compressed"
reads 0 4k 1 w.qcow2; reads 4k 4k 5 w.qcow2; reads 8k 56k 1 w.qcow2
clean w.qcow2 "partial rewrite"

# compressed clusters shared with a snapshot: rewrites copy them
qemu-img create -q -f qcow2 s.qcow2 1M
F io -c 'write -c -P 1 0 64k' -c 'write -c -P 2 64k 64k' s.qcow2 >/dev/null
qemu-img snapshot -c before s.qcow2
F io -c 'write -P 3 0 4k' -c 'write -c -P 4 64k 64k' -c 'write -c -P 5 128k 64k' s.qcow2 >/dev/null
clean s.qcow2 "compressed under a snapshot"
reads 0 4k 3 s.qcow2; reads 4k 60k 1 s.qcow2; reads 64k 64k 4 s.qcow2; reads 128k 64k 5 s.qcow2
qemu-img snapshot -a before s.qcow2
reads 0 64k 1 s.qcow2; reads 64k 64k 2 s.qcow2; reads 128k 64k 0 s.qcow2
clean s.qcow2 "after applying the snapshot"

# an overlay: compressed clusters hide the backing file's
qemu-img create -q -f qcow2 b.qcow2 1M
qemu-io -c 'write -P 6 0 1M' b.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b b.qcow2 -F qcow2 o.qcow2
F io -c 'write -c -P 7 64k 64k' o.qcow2 >/dev/null
reads 0 64k 6 o.qcow2; reads 64k 64k 7 o.qcow2; reads 128k 64k 6 o.qcow2
clean o.qcow2 "overlay"

[ $fail = 0 ] && echo "PASS: compressed writes"
exit $fail
