#!/bin/bash
# test-serve-proto.sh: the NBD protocol of `fastqcow serve` seen through
# libnbd (Python bindings, as nbdsh uses them): structured reads send zeros
# as hole chunks and one data chunk under DF; many requests in flight and
# replies out of order; a flush on one connection covers another's writes
# (CAN_MULTI_CONN); block status with and without REQ_ONE for both
# contexts; write-zeroes with NO_HOLE and FAST_ZERO, trim with
# --discard=unmap, --detect-zeroes=unmap, FUA, cache; and with libnbd's own
# checks off (strict mode 0), every invalid request gets the error the
# specification names: EINVAL past the end or over 32 MiB or with unknown
# flags, ENOSPC for writes past the end, EPERM on a read-only export,
# ENOTSUP for a fast zero that would write zeros. The image stays clean.
# SPDX-License-Identifier: MIT
set -u
. "$TEST_SRCDIR/shell/serve-lib.sh"
for p in qemu-img qemu-io; do
    command -v $p >/dev/null || { echo "SKIP: $p not installed"; exit 77; }
done
[ -n "$NBDPY" ] || { echo "SKIP: no Python with libnbd's bindings (python3-libnbd)"; exit 77; }
cd "$T" || exit 1

qemu-img create -q -f qcow2 rw.qcow2 64M
qemu-io -f qcow2 -c 'write -P 1 0 1M' -c 'write -P 2 4M 64k' -c 'write -z 8M 1M' rw.qcow2 >/dev/null
qemu-img create -q -f raw base.raw 8M
qemu-img create -q -f qcow2 -o compat=0.10 -b base.raw -F raw v2.qcow2 8M
start_fq rw -t -e 4 -A --discard=unmap --detect-zeroes=unmap rw.qcow2 || bad "serve rw"
cp rw.qcow2 ro.qcow2           # its own image: a writer keeps rw.qcow2 locked
start_fq ro -t -r ro.qcow2 || bad "serve ro"
start_fq v2 -t v2.qcow2 || bad "serve v2"

"$NBDPY" - "$(uri rw)" "$(uri ro)" "$(uri v2)" <<'PY' || bad "protocol checks (see above)"
import errno, sys, time
import nbd

rw, ro, v2 = sys.argv[1:4]
fails = 0
def check(cond, what):
    global fails
    if not cond:
        print("FAIL:", what)
        fails += 1

def handle(uri, contexts=("base:allocation", "qemu:allocation-depth"), strict=True):
    h = nbd.NBD()
    for c in contexts:
        h.add_meta_context(c)
    if not strict:
        h.set_strict_mode(0)
    h.connect_uri(uri)
    return h

def err_of(fn):
    """The errno the call failed with (libnbd gives its name), or 0."""
    try:
        fn()
    except nbd.Error as e:
        return getattr(errno, e.errno) if isinstance(e.errno, str) else e.errno
    return 0

h = handle(rw)
check(h.can_multi_conn() and h.can_df() and h.can_fast_zero() and h.can_cache(), "flags of rw")

# structured reads: data and hole chunks, DF gives one data chunk
chunks = []
def chunk(buf, off, status, err):
    chunks.append((status, off, len(buf)))
    return 0
buf = h.pread_structured(2 << 20, 0, chunk)
check(buf[:1 << 20] == b"\1" * (1 << 20) and buf[1 << 20:] == bytes(1 << 20), "read 0..2M")
check((nbd.READ_HOLE, 1 << 20, 1 << 20) in chunks and (nbd.READ_DATA, 0, 1 << 20) in chunks,
      "hole and data chunks: %r" % chunks)
chunks.clear()
h.pread_structured(2 << 20, 0, chunk, nbd.CMD_FLAG_DF)
check(chunks == [(nbd.READ_DATA, 0, 2 << 20)], "DF read: %r" % chunks)
chunks.clear()
h.pread_structured(1 << 20, 16 << 20, chunk)
check(chunks == [(nbd.READ_HOLE, 16 << 20, 1 << 20)], "read of zeros only: %r" % chunks)

# block status, both contexts, with and without REQ_ONE
seen = {}
def extents(ctx, off, ents, err):
    seen[ctx] = list(ents)
    return 0
h.block_status(12 << 20, 0, extents)
ba, depth = seen["base:allocation"], seen["qemu:allocation-depth"]
check(ba[:2] == [1 << 20, 0] and ba[2:4] == [3 << 20, 3], "base:allocation %r" % ba[:8])
check(depth[:2] == [1 << 20, 1], "allocation depth %r" % depth[:6])
seen.clear()
h.block_status(12 << 20, 0, extents, nbd.CMD_FLAG_REQ_ONE)
check(all(len(v) == 2 for v in seen.values()) and len(seen) == 2, "REQ_ONE: %r" % seen)
seen.clear()
h.block_status(4096, (8 << 20) + 512, extents, nbd.CMD_FLAG_REQ_ONE)
check(seen["base:allocation"] == [4096, 3] and seen["qemu:allocation-depth"] == [4096, 1],
      "REQ_ONE inside a zero cluster: %r" % seen)

# many requests in flight, and replies out of order: a 32 MiB write with
# FUA goes first, small reads after it; some read must overtake it
overtook = False
for attempt in range(5):
    order = []
    big = nbd.Buffer.from_bytearray(bytearray(b"\7") * (32 << 20))
    h.aio_pwrite(big, 20 << 20, lambda err: order.append("big") or 0, nbd.CMD_FLAG_FUA)
    bufs = [nbd.Buffer(4096) for _ in range(64)]
    for i, b in enumerate(bufs):
        h.aio_pread(b, i * 4096, lambda err, i=i: order.append(i) or 0)
    while h.aio_in_flight() > 0:
        h.poll(-1)
    check(len(order) == 65, "all 65 requests completed")
    check(all(b.to_bytearray() == bytearray(b"\1") * 4096 for b in bufs), "concurrent reads")
    if order[0] != "big":
        overtook = True
        break
check(overtook, "no reply ever overtook an earlier request")
check(h.pread(4096, 20 << 20) == b"\7" * 4096, "big write read back")

# multi-conn: what one connection wrote and flushed, another reads
h2 = handle(rw)
h.pwrite(b"\x55" * 65536, 30 << 20)
h2.flush()
check(h2.pread(65536, 30 << 20) == b"\x55" * 65536, "multi-conn visibility")

# zeroing, trimming, detect-zeroes, FUA, cache
h.zero(1 << 20, 40 << 20, nbd.CMD_FLAG_NO_HOLE)
seen.clear()
h.block_status(1 << 20, 40 << 20, extents)
check(h.pread(65536, 40 << 20) == bytes(65536), "zeroed range reads zeros")
h.pwrite(b"\x66" * (1 << 20), 42 << 20)
h.trim(1 << 20, 42 << 20)
check(h.pread(65536, 42 << 20) == bytes(65536), "trimmed range reads zeros (discard=unmap)")
seen.clear()
h.block_status(1 << 20, 42 << 20, extents)
check(seen["base:allocation"][1] & 1, "trimmed range is a hole: %r" % seen["base:allocation"])
h.pwrite(b"\x77" * (1 << 20), 44 << 20, nbd.CMD_FLAG_FUA)
h.pwrite(bytes(1 << 20), 44 << 20)
seen.clear()
h.block_status(1 << 20, 44 << 20, extents)
check(seen["base:allocation"][:2] == [1 << 20, 3], "detect-zeroes=unmap: %r" % seen["base:allocation"])
h.zero(1 << 20, 46 << 20, nbd.CMD_FLAG_FAST_ZERO)
h.cache(1 << 20, 0)

# invalid requests, libnbd's own checks off
s = handle(rw, strict=False)
size = s.get_size()
check(err_of(lambda: s.pread(4096, size)) == errno.EINVAL, "read past the end: EINVAL")
check(err_of(lambda: s.pwrite(b"x" * 4096, size - 2048)) == errno.ENOSPC, "write past the end: ENOSPC")
check(err_of(lambda: s.zero(4096, size)) == errno.ENOSPC, "zero past the end: ENOSPC")
check(err_of(lambda: s.trim(4096, size)) == errno.EINVAL, "trim past the end: EINVAL")
check(err_of(lambda: s.pread((32 << 20) + 4096, 0)) == errno.EINVAL, "read over 32 MiB: EINVAL")
check(err_of(lambda: s.pwrite(b"y" * ((32 << 20) + 512), 0)) == errno.EINVAL, "write over 32 MiB: EINVAL")
check(err_of(lambda: s.pread(4096, 0, 0x40)) == errno.EINVAL, "unknown read flag: EINVAL")
check(err_of(lambda: s.pread(4096, 0, nbd.CMD_FLAG_REQ_ONE)) == errno.EINVAL, "REQ_ONE on a read: EINVAL")
check(err_of(lambda: s.flush(nbd.CMD_FLAG_NO_HOLE)) == errno.EINVAL, "NO_HOLE on a flush: EINVAL")
check(s.pread(4096, 0) == b"\1" * 4096, "the connection still serves after errors")
r = handle(ro, contexts=(), strict=False)
check(r.is_read_only() and not r.can_trim() and not r.can_zero(), "read-only flags")
check(err_of(lambda: r.pwrite(b"z" * 512, 0)) == errno.EPERM, "write on read-only: EPERM")
check(err_of(lambda: r.block_status(4096, 0, extents)) == errno.EINVAL, "block status without contexts: EINVAL")
check(r.pread(512, 0) == b"\1" * 512, "read-only export reads")
z = handle(v2, contexts=())
check(err_of(lambda: z.zero(65536, 0, nbd.CMD_FLAG_FAST_ZERO)) == errno.ENOTSUP,
      "fast zero on compat 0.10 over a backing file: ENOTSUP")
z.zero(65536, 0)
check(z.pread(65536, 0) == bytes(65536), "slow zero still zeroes")
for x in (h, h2, s, r, z):
    x.shutdown()
sys.exit(1 if fails else 0)
PY
stop rw
stop ro
stop v2
qemu-img check -q rw.qcow2 || bad "qemu-img check"
qemu-img check -q v2.qcow2 || bad "qemu-img check v2"
[ $fail = 0 ] && echo "ok: NBD protocol through libnbd"
exit $fail
