#!/bin/bash
# make-seeds.sh OUTDIR: seed corpora for the libFuzzer targets.
#   OUTDIR/fuzz-image: small real images made by qemu-img and qemu-io
#     (512 B to 64 KiB clusters, compat 0.10 and 1.1, refcount widths 1 to
#     64 bits, data, zero and compressed clusters, zstd, extended L2, an
#     internal snapshot, a bitmap, a backing file name, lazy refcounts).
#   OUTDIR/fuzz-ops: operation sequences (see fuzz-ops.c), deterministic.
# SPDX-License-Identifier: MIT
set -euo pipefail
out=${1:?usage: make-seeds.sh OUTDIR}
mkdir -p "$out/fuzz-image" "$out/fuzz-ops"
cd "$out/fuzz-image"
q() { qemu-img create -q -f qcow2 "$@"; }
io() { local f=$1; shift; qemu-io -f qcow2 "${@/#/-c}" "$f" >/dev/null; }
mk() {  # mk NAME OPTIONS SIZE [qemu-io commands...]
    local n=$1 o=$2 s=$3; shift 3
    rm -f "$n"
    q -o "$o" "$n" "$s"
    local a=()
    for c in "$@"; do a+=(-c "$c"); done
    [ ${#a[@]} -eq 0 ] || qemu-io -f qcow2 "${a[@]}" "$n" >/dev/null
}
mk c512.qcow2 cluster_size=512 64k 'write -P 1 0 2k' 'write -z 4k 1k' 'write -c -P 3 8k 512'
mk c512-v2.qcow2 cluster_size=512,compat=0.10 64k 'write -P 2 512 3k'
mk c512-rb1.qcow2 cluster_size=512,refcount_bits=1 64k 'write -P 4 0 1k' 'discard 0 512'
mk c512-rb64.qcow2 cluster_size=512,refcount_bits=64 64k 'write -P 5 16k 8k'
mk c4k-zstd.qcow2 cluster_size=4k,compression_type=zstd 64k 'write -c -P 6 0 4k' 'write -P 7 8k 4k'
mk c16k-extl2.qcow2 cluster_size=16k,extended_l2=on 64k 'write -P 8 1k 2k' 'write -z 20k 1k'
mk c64k.qcow2 cluster_size=64k 128k 'write -P 9 0 1k'
mk c512-lazy.qcow2 cluster_size=512,lazy_refcounts=on 64k 'write -P 10 0 1k'
mk c512-snap.qcow2 cluster_size=512 64k 'write -P 11 0 1k'
qemu-img snapshot -c s1 c512-snap.qcow2
io c512-snap.qcow2 'write -P 12 0 512'
mk c512-bitmap.qcow2 cluster_size=512 64k 'write -P 13 0 1k'
qemu-img bitmap --add c512-bitmap.qcow2 b0 2>/dev/null || rm -f c512-bitmap.qcow2
rm -f base.img && qemu-img create -q -f raw base.img 64k
rm -f c512-backing.qcow2 && qemu-img create -q -f qcow2 -o cluster_size=512 -b base.img -F raw c512-backing.qcow2 64k
io c512-backing.qcow2 'write -P 14 1k 1k'
rm -f base.img
cd ../fuzz-ops
python3 - <<'PY'
import random
r = random.Random(20261125)
for i in range(24):
    ops = bytes([i % 8])
    for _ in range(r.randint(4, 60)):
        ops += bytes([r.randrange(256) for _ in range(6)])
    open("seed-%02d" % i, "wb").write(ops)
PY
