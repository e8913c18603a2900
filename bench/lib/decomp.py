#!/usr/bin/env python3
"""bench/lib/decomp.py: the CPU floor of the compressed rows of
bench/feature-table: decompress the compressed clusters that a read of the
first COUNT MiB of a qcow2 image meets, with THREADS threads, no I/O.

    decomp.py IMAGE COUNT_MIB THREADS

The image is parsed here (header, L1, L2; standard L2 entries, no backing
file), every compressed cluster in range is read into memory first (not
timed), then the clusters are decompressed by THREADS threads, each taking
every THREADS-th cluster, and the wall time of that is printed as
"Run completed in X seconds." (the line bench/lib/common.sh's timed_bench
reads). zlib: Python's zlib module (raw deflate, the system libz, which
releases the GIL while it inflates); zstd: the system libzstd through
ctypes (which releases the GIL for the call). So with 1 thread this is the
single-core cost of the clusters' decompression and with 2 the best a
2-core machine can do when nothing else runs; both are the same libraries
fastqcow and qemu-img call.
SPDX-License-Identifier: MIT
"""
import ctypes
import ctypes.util
import struct
import sys
import threading
import time
import zlib


def clusters(path, count_mib):
    with open(path, "rb") as f:
        h = f.read(112)
        magic, version = struct.unpack(">II", h[0:8])
        if magic != 0x514649FB:
            sys.exit("decomp.py: %s is not qcow2" % path)
        cluster_bits, = struct.unpack(">I", h[20:24])
        l1_size, l1_off = struct.unpack(">IQ", h[36:48])
        ctype = 0
        if version >= 3:
            incompat, = struct.unpack(">Q", h[72:80])
            hlen, = struct.unpack(">I", h[100:104])
            if incompat & 8 and hlen > 104:
                ctype = h[104]
            if incompat & 16:
                sys.exit("decomp.py: extended L2 entries not handled")
        cs = 1 << cluster_bits
        x = 62 - (cluster_bits - 8)
        f.seek(l1_off)
        l1 = struct.unpack(">%dQ" % l1_size, f.read(8 * l1_size))
        per_l2 = cs // 8
        want = (count_mib << 20) // cs
        out = []
        for g in range(want):
            l2e_off = l1[g // per_l2] & 0x00FFFFFFFFFFFE00
            if not l2e_off:
                continue
            f.seek(l2e_off + 8 * (g % per_l2))
            e, = struct.unpack(">Q", f.read(8))
            if not (e >> 62) & 1:
                continue
            off = e & ((1 << x) - 1)
            nsec = ((e >> x) & ((1 << (cluster_bits - 8)) - 1)) + 1
            n = nsec * 512 - (off & 511)
            f.seek(off)
            out.append(f.read(n))
    return ctype, cs, out


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    path, count_mib, nthreads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    ctype, cs, bufs = clusters(path, count_mib)
    if ctype == 0:
        def one(src, _dst):
            return len(zlib.decompressobj(-12).decompress(src, cs))
    elif ctype == 1:
        lib = ctypes.CDLL(ctypes.util.find_library("zstd") or "libzstd.so.1")
        lib.ZSTD_findFrameCompressedSize.restype = ctypes.c_size_t
        lib.ZSTD_findFrameCompressedSize.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
        lib.ZSTD_decompress.restype = ctypes.c_size_t
        lib.ZSTD_decompress.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t]
        lib.ZSTD_isError.restype = ctypes.c_uint
        lib.ZSTD_isError.argtypes = [ctypes.c_size_t]

        def one(src, dst):
            n = lib.ZSTD_findFrameCompressedSize(src, len(src))
            if lib.ZSTD_isError(n):
                return -1
            r = lib.ZSTD_decompress(dst, cs, src, n)
            return -1 if lib.ZSTD_isError(r) else r
    else:
        sys.exit("decomp.py: unknown compression type %d" % ctype)

    bad = []

    def work(k):
        dst = ctypes.create_string_buffer(cs)
        for src in bufs[k::nthreads]:
            if one(src, dst) != cs:
                bad.append(1)

    ths = [threading.Thread(target=work, args=(k,)) for k in range(nthreads)]
    t0 = time.perf_counter()
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    secs = time.perf_counter() - t0
    if bad:
        sys.exit("decomp.py: %d clusters did not decompress to %d bytes" % (len(bad), cs))
    print("%d compressed clusters (%s), %d thread(s)" % (len(bufs), ("zlib", "zstd")[ctype], nthreads))
    print("Run completed in %.3f seconds." % secs)


if __name__ == "__main__":
    main()
