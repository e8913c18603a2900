#!/bin/bash
# make-seeds.sh OUTDIR: seed corpora for the libFuzzer targets.
#   OUTDIR/fuzz-image: small real images made by qemu-img and qemu-io
#     (512 B to 64 KiB clusters, compat 0.10 and 1.1, refcount widths 1 to
#     64 bits, data, zero and compressed clusters, zstd, extended L2, an
#     internal snapshot, a bitmap, a backing file name, lazy refcounts).
#   OUTDIR/fuzz-ops: operation sequences (see fuzz-ops.c), deterministic.
#   OUTDIR/fuzz-nbd: client sessions of the NBD handshake and requests
#     (see fuzz-nbd.c): GO, INFO, EXPORT_NAME, LIST, STARTTLS, ABORT,
#     structured replies, metadata contexts, every command, oversize options.
# SPDX-License-Identifier: MIT
set -euo pipefail
out=${1:?usage: make-seeds.sh OUTDIR}
mkdir -p "$out/fuzz-image" "$out/fuzz-ops" "$out/fuzz-nbd"
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
cd ../fuzz-nbd
python3 - <<'PY'
import struct
MAGIC = 0x49484156454F5054
def opt(o, data=b""):
    return struct.pack(">QII", MAGIC, o, len(data)) + data
def s32(b):
    return struct.pack(">I", len(b)) + b
def go(name=b"", infos=(), o=7):
    return opt(o, s32(name) + struct.pack(">H", len(infos)) + b"".join(struct.pack(">H", i) for i in infos))
def meta(o, name, queries):
    return opt(o, s32(name) + struct.pack(">I", len(queries)) + b"".join(s32(q) for q in queries))
def req(t, off=0, ln=0, flags=0, handle=1):
    return struct.pack(">IHHQQI", 0x25609513, flags, t, handle, off, ln)
reqs = (req(0, 0, 4096) + req(1, 4096, 512) + b"\xab" * 512 + req(3) + req(4, 0, 65536)
        + req(6, 8192, 4096, 2) + req(5, 0, 4096) + req(7, 0, 1 << 20, 8) + req(0, 0, 4096, 4)
        + req(9, 0, 0) + req(2))
seeds = {
    "go-plain": (0, struct.pack(">I", 3) + go(infos=(0, 1, 2, 3)) + reqs),
    "go-structured-meta": (16, struct.pack(">I", 3) + opt(8)
        + meta(10, b"", [b"base:allocation", b"qemu:allocation-depth"]) + go() + reqs),
    "list-info-name": (4, struct.pack(">I", 1) + opt(3) + go(b"second", (1, 2), 6)
        + meta(9, b"", [b"base:", b"qemu:"]) + opt(1, b"second") + reqs),
    "starttls": (1, struct.pack(">I", 3) + opt(7, s32(b"") + b"\0\0") + opt(5) + opt(8) + go() + reqs),
    "abort": (0, struct.pack(">I", 3) + opt(99, b"xyz") + opt(2)),
    "oversize": (8, struct.pack(">I", 3) + struct.pack(">QII", MAGIC, 7, 100000) + b"\0" * 64 + go()),
    "old-client": (0, struct.pack(">I", 0) + opt(1, b"") + reqs),
}
for n, (cfg, body) in seeds.items():
    open(n, "wb").write(bytes([cfg, 7]) + body)
PY
