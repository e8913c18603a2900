#!/usr/bin/env python3
"""make-bad-images.py OUTDIR: build a corpus of damaged qcow2 images.

Base images are made by qemu-img/qemu-io (data clusters, a zero cluster, a
compressed cluster, an internal snapshot, a backing file, 512-byte and
64 KiB clusters, compat 0.10 and 1.1). Each image of the corpus then gets
one class of damage: a header field out of range, an extension running
past cluster 0, a table offset unaligned or past the end of the file,
reserved bits, huge sizes, tables overlapping each other, compressed
entries with huge sizes, unknown feature bits, encryption (and damaged
LUKS headers of an encrypted base, passphrase "pw"), an external
data file, an unknown compression type, truncation, snapshot table damage,
refcounts of 0 for used clusters, loops and shared tables...

Writes OUTDIR/NNN-CLASS-VARIANT.qcow2, OUTDIR/MANIFEST (one line per
image: name, class, description, the base image it was made from) and the
undamaged bases (OUTDIR/base-BASE.qcow2) the check-rebuild class compares
with. Python 3 standard library only.
SPDX-License-Identifier: MIT
"""
import os
import shutil
import struct
import subprocess
import sys

OUT = sys.argv[1] if len(sys.argv) > 1 else "bad-images"
os.makedirs(OUT, exist_ok=True)
WORK = os.path.join(OUT, ".base")
os.makedirs(WORK, exist_ok=True)


def run(*args):
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def qio(path, *cmds):
    args = ["qemu-io", "-f", "qcow2"]
    for c in cmds:
        args += ["-c", c]
    run(*args, path)


def make_base(name, size, *opts, writes=(), snapshot=False, backing=None):
    path = os.path.join(WORK, name)
    args = ["qemu-img", "create", "-q", "-f", "qcow2"]
    if opts:
        args += ["-o", ",".join(opts)]
    if backing:
        args += ["-b", backing, "-F", "qcow2"]
    run(*args, path, size)
    if writes:
        qio(path, *writes)
    if snapshot:
        run("qemu-img", "snapshot", "-c", "snap1", path)
        qio(path, "write -P 0x77 0 64k")
    return path


BASE_WRITES = ("write -P 0x11 0 128k", "write -P 0x22 1M 64k", "write -z 2M 64k",
               "write -c -P 0x33 3M 64k", "write -P 0x44 8M 4k")
bases = {
    "v3": make_base("v3.qcow2", "16M", writes=BASE_WRITES),
    "v2": make_base("v2.qcow2", "16M", "compat=0.10", writes=BASE_WRITES[:2]),
    "c512": make_base("c512.qcow2", "4M", "cluster_size=512",
                      writes=("write -P 0x55 0 8k", "write -P 0x66 64k 4k", "write -c -P 0x67 128k 512")),
    "snap": make_base("snap.qcow2", "4M", writes=("write -P 0x12 0 64k",), snapshot=True),
    "extl2": make_base("extl2.qcow2", "4M", "extended_l2=on", "cluster_size=64k",
                       writes=("write -P 0x13 4k 8k",)),
    "zstd": make_base("zstd.qcow2", "4M", "compression_type=zstd",
                      writes=("write -c -P 0x14 0 64k",)),
}
backing_base = make_base("backing.qcow2", "4M", writes=("write -P 0x21 0 1M",))


def make_bitmap_base():
    # an enabled bitmap with bits set (512 B granularity: two data clusters)
    # and a disabled one, as qemu-img made them
    path = make_base("bm.qcow2", "16M", "cluster_size=4k")
    run("qemu-img", "bitmap", "--add", "-g", "512", path, "on")
    run("qemu-img", "bitmap", "--add", "-g", "4k", path, "off")
    qio(path, "write -P 0x15 0 64k", "write -P 0x16 9M 4k")
    run("qemu-img", "bitmap", "--disable", path, "off")
    return path


bases["bm"] = make_bitmap_base()
bases["overlay"] = make_base("overlay.qcow2", "4M", writes=("write -P 0x31 64k 64k",),
                             backing="backing.qcow2")


class Img:
    """A qcow2 image in memory with its geometry parsed."""

    def __init__(self, path):
        self.src = path
        self.b = bytearray(open(path, "rb").read())
        h = self.b
        self.version = self.u32(4)
        self.cbits = self.u32(20)
        self.cs = 1 << self.cbits
        self.l1_size = self.u32(36)
        self.l1_off = self.u64(40)
        self.rt_off = self.u64(48)
        self.rt_clusters = self.u32(56)
        self.nb_snap = self.u32(60)
        self.snap_off = self.u64(64)
        self.hlen = self.u32(100) if self.version >= 3 else 72
        self.order = self.u32(96) if self.version >= 3 else 4
        self.extl2 = self.version >= 3 and (self.u64(72) >> 4) & 1
        self.l2e = 16 if self.extl2 else 8
        del h

    def u32(self, o):
        return struct.unpack_from(">I", self.b, o)[0]

    def u64(self, o):
        return struct.unpack_from(">Q", self.b, o)[0]

    def p32(self, o, v):
        struct.pack_into(">I", self.b, o, v & 0xffffffff)

    def p64(self, o, v):
        struct.pack_into(">Q", self.b, o, v & 0xffffffffffffffff)

    def p16(self, o, v):
        struct.pack_into(">H", self.b, o, v & 0xffff)

    # tables
    def l1(self, i):
        return self.u64(self.l1_off + 8 * i)

    def set_l1(self, i, v):
        self.p64(self.l1_off + 8 * i, v)

    def first_l2(self):
        for i in range(self.l1_size):
            e = self.l1(i) & 0x00fffffffffffe00
            if e:
                return i, e
        raise RuntimeError("no L2 table in " + self.src)

    def l2_entries(self, l2):
        n = self.cs // self.l2e
        for i in range(n):
            yield i, self.u64(l2 + i * self.l2e)

    def rt(self, i):
        return self.u64(self.rt_off + 8 * i)

    def set_rt(self, i, v):
        self.p64(self.rt_off + 8 * i, v)

    def set_refcount(self, cluster, val):
        bits = 1 << self.order
        per = self.cs * 8 // bits
        rb = self.rt(cluster // per) & ~0x1ff
        idx = cluster % per
        if bits >= 8:
            nb = bits // 8
            self.b[rb + idx * nb: rb + (idx + 1) * nb] = val.to_bytes(nb, "big")
        else:
            bit = idx * bits
            byte = rb + bit // 8
            mask = ((1 << bits) - 1) << (bit % 8)
            self.b[byte] = (self.b[byte] & ~mask) | ((val << (bit % 8)) & mask)

    def extensions(self):
        """(offset of the type field, type, length) of each header extension."""
        off, end = self.hlen, self.cs
        bo = self.u64(8)
        if bo and bo > self.hlen:
            end = bo
        while off + 8 <= end:
            t, ln = struct.unpack_from(">II", self.b, off)
            if t == 0:
                return
            yield off, t, ln
            off += 8 + ((ln + 7) & ~7)


manifest = []
counter = [0]


def emit(cls, variant, img_or_bytes, desc, base=""):
    counter[0] += 1
    name = "%03d-%s-%s.qcow2" % (counter[0], cls, variant)
    data = img_or_bytes.b if isinstance(img_or_bytes, Img) else img_or_bytes
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(bytes(data))
    manifest.append("%s\t%s\t%s\t%s" % (name, cls, desc, base))


def mutate(base, cls, variant, desc, fn):
    img = Img(bases[base])
    fn(img)
    emit(cls, variant, img, desc, base)


def field(base, cls, off, width, values, what):
    for v in values:
        def f(img, v=v):
            (img.p32 if width == 4 else img.p64)(off, v)
        mutate(base, cls, "%s-%x" % (base, v), "%s = 0x%x" % (what, v), f)


U32, U64 = 0xffffffff, 0xffffffffffffffff

# ---- header fields, one at a time ----
field("v3", "magic", 0, 4, [0, 0x514649fa, U32], "magic")
field("v3", "version", 4, 4, [0, 1, 4, 0x80000003, U32], "version")
field("v3", "cluster-bits", 20, 4, [0, 8, 22, 30, 31, 63, 64, U32], "cluster_bits")
field("c512", "cluster-bits", 20, 4, [16, 21], "cluster_bits")
field("v3", "size", 24, 8, [0, 1, 1 << 40, 1 << 62, (1 << 63) + 512, U64], "virtual size")
field("v3", "crypt-method", 32, 4, [1, 2, 3, U32], "crypt_method (encryption)")
field("v3", "l1-size", 36, 4, [0, 1 << 20, 1 << 22, 0x7fffffff, U32], "l1_size")
field("c512", "l1-size", 36, 4, [1, 7, 1 << 21], "l1_size")
field("v3", "l1-offset", 40, 8, [0, 512, 0x10000 + 8, 1 << 40, 1 << 56, (1 << 63), U64 & ~0xffff],
      "l1_table_offset")
field("v3", "rt-offset", 48, 8, [0, 512, 8, 1 << 40, 1 << 57, U64 & ~0xffff], "refcount_table_offset")
field("v3", "rt-clusters", 56, 4, [0, 2, 1 << 16, 1 << 24, U32], "refcount_table_clusters")
field("c512", "rt-clusters", 56, 4, [1 << 14, 1 << 15], "refcount_table_clusters")
field("v3", "nb-snapshots", 60, 4, [1, 2, 65537, U32], "nb_snapshots")
field("snap", "nb-snapshots", 60, 4, [2, 100, 1 << 20, U32], "nb_snapshots")
field("snap", "snapshots-offset", 64, 8, [0, 8, 0x10000 + 8, 1 << 40, U64 & ~0xffff], "snapshots_offset")
field("v3", "incompat", 72, 8, [1 << 5, 1 << 63, U64, 1 << 2, 1 << 3, 1 << 4, 1 << 1, 1], "incompatible_features")
field("c512", "incompat", 72, 8, [1 << 4], "incompatible_features (extended L2 at 512 B clusters)")
field("v3", "compat", 80, 8, [1 << 5, U64], "compatible_features")
field("v3", "autoclear", 88, 8, [1, 2, U64], "autoclear_features")
field("v3", "refcount-order", 96, 4, [7, 8, 63, 255, U32], "refcount_order")
field("c512", "refcount-order", 96, 4, [0, 6], "refcount_order (refcounts reinterpreted)")
field("v3", "header-length", 100, 4, [0, 8, 72, 103, 105, 4096, 65528, 65536, 1 << 20, U32], "header_length")
field("c512", "header-length", 100, 4, [512, 1024], "header_length")
field("v2", "backing-offset", 8, 8, [72, 4000, 65535, 1 << 40, U64], "backing_file_offset (size 0)")
field("overlay", "backing-offset", 8, 8, [0, 72, 65530, 1 << 40, U64], "backing_file_offset")
field("overlay", "backing-size", 16, 4, [0, 1024, 65535, 65536, U32], "backing_file_size")


def compression_type(v):
    def f(img):
        img.b[104] = v
        img.p64(72, img.u64(72) | (1 << 3))
    return f


for v in (2, 7, 255):
    mutate("v3", "compression-type", "%d" % v, "compression_type %d with the bit set" % v, compression_type(v))
mutate("v3", "compression-type", "nobit", "compression_type 1 without the incompatible bit",
       lambda img: img.b.__setitem__(104, 1))
mutate("zstd", "compression-type", "zero", "compression bit set, compression_type 0",
       lambda img: img.b.__setitem__(104, 0))
mutate("zstd", "compression-type", "zlib", "zstd data, incompatible bit cleared (read as zlib)",
       lambda img: (img.b.__setitem__(104, 0), img.p64(72, img.u64(72) & ~(1 << 3))))

# ---- header extensions ----
def ext_len(newlen, which=0):
    def f(img):
        exts = list(img.extensions())
        off = exts[min(which, len(exts) - 1)][0]
        img.p32(off + 4, newlen)
    return f


for v in (0x1000, 0xff00, 0x10000, U32, 0x7fffffff):
    mutate("v3", "ext-length", "%x" % v, "first header extension length 0x%x (past cluster 0)" % v, ext_len(v))
for v in (64, 0x1000, U32):
    mutate("overlay", "ext-length", "bf-%x" % v, "backing format extension length 0x%x" % v, ext_len(v))


def ext_at_end(img):
    # an extension header in the last 4 bytes of cluster 0
    off = img.cs - 4
    img.p32(100, off)


mutate("v3", "ext-length", "at-end", "header_length leaves 4 bytes for the extensions", ext_at_end)


def ext_fill(t, payload):
    def f(img):
        off = img.hlen
        img.p32(off, t)
        img.p32(off + 4, len(payload))
        img.b[off + 8: off + 8 + len(payload)] = payload
        pad = (8 - len(payload) % 8) % 8
        img.b[off + 8 + len(payload): off + 8 + len(payload) + pad + 8] = bytes(pad + 8)
    return f


mutate("v3", "ext-feature-table", "odd", "feature table of 49 bytes", ext_fill(0x6803f857, b"\x00\x05" + b"x" * 47))
mutate("v3", "ext-feature-table", "noterm", "feature names without a NUL",
       ext_fill(0x6803f857, bytes([0, 5]) + b"N" * 46 + bytes([0, 6]) + b"M" * 46))
mutate("v3", "ext-backing-format", "long", "backing format name of 4000 bytes", ext_fill(0xe2792aca, b"q" * 4000))
mutate("v3", "ext-backing-format", "nul", "backing format with NUL bytes", ext_fill(0xe2792aca, b"qc\x00ow2"))
mutate("v3", "ext-crypto", "nocrypt", "LUKS extension with crypt_method 0",
       ext_fill(0x0537be77, struct.pack(">QQ", 0x30000, 0x100000)))


def luks(img):
    ext_fill(0x0537be77, struct.pack(">QQ", 1 << 40, U64))(img)
    img.p32(32, 2)


mutate("v3", "encryption", "luks", "LUKS encryption with a bogus key area", luks)


def data_file(name):
    def f(img):
        ext_fill(0x44415441, name)(img)
        img.p64(72, img.u64(72) | (1 << 2))
    return f


mutate("v3", "data-file", "name", "external data file 'missing.raw'", data_file(b"missing.raw"))
mutate("v3", "data-file", "empty", "external data file bit, empty name", data_file(b""))
mutate("v3", "data-file", "noext", "external data file bit, no extension",
       lambda img: img.p64(72, img.u64(72) | (1 << 2)))
mutate("v3", "data-file", "raw", "data_file_raw autoclear bit without a data file",
       lambda img: img.p64(88, img.u64(88) | 2))
# path tricks: names an image may not use as its data file (never opened,
# never connected to), and data files that exist but do not fit the image
for v, n in (("proc", b"/proc/self/environ"), ("sys", b"/sys/kernel/mm/transparent_hugepage/enabled"),
             ("dev", b"/dev/zero"), ("dir", b"/tmp"), ("dotdot", b"../../../../nonexistent/x.raw"),
             ("json", b'json:{"driver":"file","filename":"/dev/zero"}'),
             ("nbd", b"nbd://127.0.0.1:9/x"), ("nbd-unix", b"nbd+unix:///x?socket=/tmp/nbd.sock"),
             ("file-prefix", b"file:/dev/zero"), ("long", b"x" * 4000), ("nul", b"d\x00.raw"),
             ("newline", b"a\nb.raw")):
    mutate("v3", "data-file", v, "external data file name %r" % n[:60], data_file(n))
# data files that exist: the image's own entries (data clusters at the
# qcow2 file's offsets, a compressed cluster) point past a short one
OUT_ABS = os.path.abspath(OUT)
with open(os.path.join(OUT_ABS, "df-short.raw"), "wb") as f:
    f.write(b"\x5a" * 65536)
mutate("v3", "data-file", "short", "data file shorter than the mapped clusters, a compressed entry",
       data_file(os.path.join(OUT_ABS, "df-short.raw").encode()))
mutate("v3", "data-file", "short-raw", "the same with the raw bit",
       lambda img: (data_file(os.path.join(OUT_ABS, "df-short.raw").encode())(img),
                    img.p64(88, img.u64(88) | 2)))
mutate("v3", "bitmaps", "garbage", "bitmaps extension pointing at garbage",
       lambda img: (ext_fill(0x23852875, struct.pack(">IIQQ", 0xffff, 0, 1 << 40, 0x10000 + 4))(img),
                    img.p64(88, 1)))
mutate("v3", "bitmaps", "huge", "bitmaps extension with a huge directory",
       lambda img: (ext_fill(0x23852875, struct.pack(">IIQQ", 1, 0, U64, 0x30000))(img), img.p64(88, 1)))


# ---- the bitmap directory and tables (class bitmap-dir) ----
def bm_dir(img):
    """(extension data offset, directory offset, size, [entry offsets])."""
    for off, t, ln in img.extensions():
        if t == 0x23852875:
            d = off + 8
            nb, doff, dsize = img.u32(d), img.u64(d + 16), img.u64(d + 8)
            ents, pos = [], doff
            for _ in range(nb):
                ents.append(pos)
                extra, name = img.u32(pos + 20), struct.unpack_from(">H", img.b, pos + 18)[0]
                pos += (24 + extra + name + 7) & ~7
            return d, doff, dsize, ents
    raise RuntimeError("no bitmaps in " + img.src)


def bm_entry(which, off, width, val):
    def f(img):
        e = bm_dir(img)[3][which] + off
        {2: img.p16, 4: img.p32, 8: img.p64}[width](e, val)
    return f


def bm_table_entry(which, idx, val_fn):
    def f(img):
        e = bm_dir(img)[3][which]
        t = img.u64(e) + 8 * idx
        img.p64(t, val_fn(img, img.u64(t)))
    return f


def bm_ext(off, width, val):
    def f(img):
        d = bm_dir(img)[0]
        (img.p32 if width == 4 else img.p64)(d + off, val)
    return f


for which, nm in ((0, "on"), (1, "off")):
    for v in (0, 8, 0x1000 + 8, 1 << 56, U64 & ~0xfff):
        mutate("bm", "bitmap-dir", "%s-table-off-%x" % (nm, v), "bitmap %s table offset 0x%x" % (nm, v),
               bm_entry(which, 0, 8, v))
    mutate("bm", "bitmap-dir", "%s-table-l1" % nm, "bitmap %s table is the L1 table" % nm,
           lambda img, w=which: bm_entry(w, 0, 8, img.l1_off)(img))
    mutate("bm", "bitmap-dir", "%s-table-rt" % nm, "bitmap %s table is the refcount table" % nm,
           lambda img, w=which: bm_entry(w, 0, 8, img.rt_off)(img))
    for v in (0, 2, 0x10000, U32):
        mutate("bm", "bitmap-dir", "%s-table-size-%x" % (nm, v), "bitmap %s table size %d" % (nm, v),
               bm_entry(which, 8, 4, v))
    for v in (1, 3, 8, U32):
        mutate("bm", "bitmap-dir", "%s-flags-%x" % (nm, v), "bitmap %s flags 0x%x" % (nm, v),
               bm_entry(which, 12, 4, v))
    for v in (0, 8, 32, 63, 255):
        mutate("bm", "bitmap-dir", "%s-gran-%d" % (nm, v), "bitmap %s granularity bits %d" % (nm, v),
               lambda img, w=which, v=v: img.b.__setitem__(bm_dir(img)[3][w] + 17, v))
    mutate("bm", "bitmap-dir", "%s-type-2" % nm, "bitmap %s of type 2" % nm,
           lambda img, w=which: img.b.__setitem__(bm_dir(img)[3][w] + 16, 2))
    for v in (0, 1024, 0xffff):
        mutate("bm", "bitmap-dir", "%s-name-size-%x" % (nm, v), "bitmap %s name size %d" % (nm, v),
               bm_entry(which, 18, 2, v))
    for v in (8, 0x10000, U32):
        mutate("bm", "bitmap-dir", "%s-extra-%x" % (nm, v), "bitmap %s extra data size %d" % (nm, v),
               bm_entry(which, 20, 4, v))
    for what, fn in (("l1", lambda img, e: img.l1_off), ("rt", lambda img, e: img.rt_off),
                     ("header", lambda img, e: 1), ("dir", lambda img, e: bm_dir(img)[1]),
                     ("unaligned", lambda img, e: (e or 0x10000) + 512),
                     ("reserved", lambda img, e: e | (1 << 60) | 2),
                     ("ones-off", lambda img, e: e | 1),
                     ("eof", lambda img, e: 1 << 40),
                     ("other", lambda img, e: img.u64(img.u64(bm_dir(img)[3][1]))),
                     ("self", lambda img, e: img.u64(bm_dir(img)[3][0]))):
        mutate("bm", "bitmap-dir", "%s-entry-%s" % (nm, what),
               "bitmap %s table entry 0 points at %s" % (nm, what), bm_table_entry(which, 0, fn))
for v in (0, 3, 0xffff):
    mutate("bm", "bitmap-dir", "nb-%x" % v, "bitmaps extension: %d bitmaps" % v, bm_ext(0, 4, v))
for v in (0, 8, 24, 1 << 30):
    mutate("bm", "bitmap-dir", "dir-size-%x" % v, "bitmap directory size %d" % v, bm_ext(8, 8, v))
mutate("bm", "bitmap-dir", "dir-l1", "bitmap directory is the L1 table",
       lambda img: bm_ext(16, 8, img.l1_off)(img))
mutate("bm", "bitmap-dir", "dir-table", "bitmap directory is a bitmap table",
       lambda img: bm_ext(16, 8, img.u64(bm_dir(img)[3][0]))(img))
mutate("bm", "bitmap-dir", "dir-refcount-0", "bitmap directory cluster with refcount 0",
       lambda img: img.set_refcount(bm_dir(img)[1] >> img.cbits, 0))
mutate("bm", "bitmap-dir", "table-refcount-0", "bitmap table cluster with refcount 0",
       lambda img: img.set_refcount(img.u64(bm_dir(img)[3][0]) >> img.cbits, 0))
def same_name(img):
    e = bm_dir(img)[3][1]
    img.p16(e + 18, 2)
    img.b[e + 24:e + 27] = b"on\0"


mutate("bm", "bitmap-dir", "same-name", "two bitmaps of one name", same_name)
mutate("bm", "bitmap-dir", "autoclear-off", "bitmaps extension without the autoclear bit",
       lambda img: img.p64(88, img.u64(88) & ~1))
mutate("v3", "ext-unknown", "many", "extension area full of 8-byte unknown extensions",
       lambda img: [img.p64(o, 0x1234567800000000) for o in range(img.hlen, img.cs - 8, 8)])


def backing_name(n, off=None):
    def f(img):
        o = off if off is not None else img.cs - n if n < img.cs else 512
        img.p64(8, o)
        img.p32(16, n)
        img.b[o:o + min(n, img.cs - o)] = b"b" * min(n, img.cs - o)
    return f


mutate("v3", "backing-name", "1024", "backing file name of 1024 bytes", backing_name(1024))
mutate("v3", "backing-name", "4096", "backing file name of 4096 bytes", backing_name(4096))
mutate("v3", "backing-name", "past", "backing file name running past cluster 0", backing_name(100, 65500))
mutate("v3", "backing-name", "zero", "backing file offset set, size 0", lambda img: (
    img.p64(8, 60000), img.p32(16, 0)))


def backing_is(name):
    def f(img):
        img.p64(8, 60000)
        img.p32(16, len(name))
        img.b[60000:60000 + len(name)] = name
        ext_fill(0xe2792aca, b"qcow2")(img)
    return f


# loops: the image is its own backing file; two images back each other
counter[0] += 1
for nm, target in (("%03d-backing-loop-self.qcow2" % counter[0], None),
                   ("%03d-backing-loop-a.qcow2" % counter[0], "%03d-backing-loop-b.qcow2" % counter[0]),
                   ("%03d-backing-loop-b.qcow2" % counter[0], "%03d-backing-loop-a.qcow2" % counter[0])):
    img = Img(bases["v3"])
    backing_is((target or nm).encode())(img)
    open(os.path.join(OUT, nm), "wb").write(bytes(img.b))
    manifest.append("%s\tbacking-loop\t%s\t" % (nm, "backing file chain loops back to %s" % (target or "itself")))
mutate("overlay", "backing-name", "nul", "backing file name with NUL bytes",
       lambda img: img.b.__setitem__(slice(img.u64(8), img.u64(8) + 4), b"a\x00b\x00"))
mutate("overlay", "backing-name", "dir", "backing file is a directory",
       lambda img: (img.p32(16, 1), img.b.__setitem__(img.u64(8), ord("."))))

# ---- L1 entries ----
def l1_entry(val_fn):
    def f(img):
        i, l2 = img.first_l2()
        img.set_l1(i, val_fn(img, img.l1(i), l2))
    return f


L1_CASES = {
    "reserved": ("reserved bits 56-62 set", lambda img, e, l2: e | (0x7f << 56)),
    "low-bits": ("low bits 0-8 set", lambda img, e, l2: e | 0x1ff),
    "unaligned": ("L2 offset not cluster aligned", lambda img, e, l2: e + 512),
    "past-eof": ("L2 offset beyond the end of the file", lambda img, e, l2: (1 << 40) | (1 << 63)),
    "max": ("L2 offset at the top of the address space", lambda img, e, l2: 0x00fffffffffffe00 | (1 << 63)),
    "header": ("L2 table is the header cluster", lambda img, e, l2: (1 << 63)),
    "l1": ("L2 table is the L1 table", lambda img, e, l2: img.l1_off | (1 << 63)),
    "reftable": ("L2 table is the refcount table", lambda img, e, l2: img.rt_off | (1 << 63)),
    "refblock": ("L2 table is a refcount block", lambda img, e, l2: (img.rt(0) & ~0x1ff) | (1 << 63)),
    "nocopied": ("copied flag cleared", lambda img, e, l2: e & ~(1 << 63)),
}
for base in ("v3", "c512", "v2"):
    for k, (d, fn) in L1_CASES.items():
        mutate(base, "l1-entry", "%s-%s" % (base, k), d, l1_entry(fn))


def l1_shared(img):
    i, l2 = img.first_l2()
    for j in range(img.l1_size):
        img.set_l1(j, img.l1(i))


mutate("v3", "l1-loop", "shared", "every L1 entry points at the same L2 table (copied)", l1_shared)
mutate("c512", "l1-loop", "shared", "every L1 entry points at the same L2 table (copied)", l1_shared)
mutate("v3", "l1-table", "garbage", "L1 table full of 0xff",
       lambda img: img.b.__setitem__(slice(img.l1_off, img.l1_off + 8 * img.l1_size), b"\xff" * 8 * img.l1_size))
mutate("v3", "l1-table", "ascending", "L1 entries 1..n clusters",
       lambda img: [img.set_l1(j, ((j + 1) * img.cs) | (1 << 63)) for j in range(img.l1_size)])

# ---- L2 entries ----
def l2_entry(val_fn, which="data"):
    def f(img):
        for j in range(img.l1_size):
            l2 = img.l1(j) & 0x00fffffffffffe00
            if not l2:
                continue
            for i, e in img.l2_entries(l2):
                if ((which == "data" and e & 0x00fffffffffffe00 and not e & (1 << 62)) or
                        (which == "compressed" and e & (1 << 62)) or (which == "empty" and e == 0)):
                    img.p64(l2 + i * img.l2e, val_fn(img, e, l2))
                    return
        raise RuntimeError("no such L2 entry")
    return f


L2_CASES = {
    "reserved": ("reserved bits 56-61 set", lambda img, e, l2: e | (0x3f << 56)),
    "low-bits": ("bits 1-8 set", lambda img, e, l2: e | 0x1fe),
    "unaligned": ("data offset not cluster aligned", lambda img, e, l2: e + 512),
    "past-eof": ("data beyond the end of the file", lambda img, e, l2: (1 << 45) | (1 << 63)),
    "max": ("data at the top of the address space", lambda img, e, l2: 0x00fffffffffffe00 | (1 << 63)),
    "header": ("data cluster is the header", lambda img, e, l2: 1 << 63),
    "l1": ("data cluster is the L1 table", lambda img, e, l2: img.l1_off | (1 << 63)),
    "reftable": ("data cluster is the refcount table", lambda img, e, l2: img.rt_off | (1 << 63)),
    "refblock": ("data cluster is a refcount block", lambda img, e, l2: (img.rt(0) & ~0x1ff) | (1 << 63)),
    "self": ("data cluster is the L2 table itself", lambda img, e, l2: l2 | (1 << 63)),
    "copied-zero": ("copied flag with offset 0", lambda img, e, l2: 1 << 63),
    "zero-flag": ("zero flag and an unaligned offset", lambda img, e, l2: (e + 512) | 1),
}
for base in ("v3", "c512", "v2"):
    for k, (d, fn) in L2_CASES.items():
        mutate(base, "l2-entry", "%s-%s" % (base, k), d, l2_entry(fn))
mutate("v2", "l2-entry", "v2-zero-flag", "zero flag in a compat 0.10 image", l2_entry(lambda img, e, l2: e | 1))
mutate("v3", "l2-entry", "empty-copied", "unallocated entry with the copied flag",
       l2_entry(lambda img, e, l2: 1 << 63, "empty"))


def comp_entry(size_sectors=None, off=None):
    def fn(img, e, l2):
        x = 62 - (img.cbits - 8)
        o = e & ((1 << x) - 1) if off is None else off
        n = (e >> x) & ((1 << (img.cbits - 8)) - 1) if size_sectors is None else size_sectors
        return (1 << 62) | (n << x) | o
    return fn


COMP_CASES = {
    "huge": ("compressed size at its maximum", comp_entry(size_sectors=(1 << 8) - 1)),
    "past-eof": ("compressed data beyond the end of the file", comp_entry(off=1 << 40)),
    "top": ("compressed data at the top of the offset field", comp_entry(off=(1 << 54) - 1)),
    "header": ("compressed data in the header", comp_entry(off=0)),
    "tail": ("compressed data in the last bytes of the file", None),
    "garbage": ("compressed data that does not decompress", None),
    "copied": ("compressed entry with the copied flag", None),
}
for base in ("v3", "c512", "zstd"):
    for k, (d, fn) in COMP_CASES.items():
        if k == "tail":
            fn = (lambda img, e, l2: comp_entry(size_sectors=3, off=len(img.b) - 100)(img, e, l2))
        elif k == "garbage":
            def fn(img, e, l2):
                x = 62 - (img.cbits - 8)
                o = e & ((1 << x) - 1)
                img.b[o:o + 64] = b"\xa5" * 64
                return e
        elif k == "copied":
            fn = (lambda img, e, l2: e | (1 << 63))
        elif k == "huge" and base == "c512":
            fn = comp_entry(size_sectors=1)
        mutate(base, "compressed", "%s-%s" % (base, k), d, l2_entry(fn, "compressed"))


def l2_all_same(img):
    _, l2 = img.first_l2()
    first = None
    for i, e in img.l2_entries(l2):
        if e & 0x00fffffffffffe00 and not e & (1 << 62):
            first = e
            break
    for i, e in img.l2_entries(l2):
        img.p64(l2 + i * img.l2e, first)


mutate("v3", "l2-loop", "same-data", "every L2 entry points at the same data cluster (copied)", l2_all_same)
mutate("c512", "l2-loop", "same-data", "every L2 entry points at the same data cluster (copied)", l2_all_same)
mutate("v3", "l2-table", "garbage", "L2 table full of 0xa5",
       lambda img: img.b.__setitem__(slice(img.first_l2()[1], img.first_l2()[1] + img.cs), b"\xa5" * img.cs))
mutate("extl2", "extl2", "both", "subclusters both allocated and zero",
       lambda img: [img.p64(img.first_l2()[1] + i * 16 + 8, 0xffffffffffffffff)
                    for i, e in list(img.l2_entries(img.first_l2()[1])) if e])
mutate("extl2", "extl2", "alloc-noofs", "allocated subclusters without a host cluster",
       lambda img: img.p64(img.first_l2()[1] + 8 * 16 + 8, 0xffff))
mutate("extl2", "extl2", "small", "extended L2 bit cleared (entries misread)",
       lambda img: img.p64(72, img.u64(72) & ~(1 << 4)))

# ---- refcount table and blocks ----
RT_CASES = {
    "reserved": ("low bits set", lambda img, e: e | 0x1ff),
    "unaligned": ("block offset not cluster aligned", lambda img, e: e + 512),
    "past-eof": ("block beyond the end of the file", lambda img, e: 1 << 45),
    "top": ("block at the top of the address space", lambda img, e: U64 & ~0xffff),
    "header": ("block is the header", lambda img, e: 0),
    "l1": ("block is the L1 table", lambda img, e: img.l1_off),
    "self": ("block is the refcount table", lambda img, e: img.rt_off),
    "l2": ("block is an L2 table", lambda img, e: img.first_l2()[1]),
}
for base in ("v3", "c512"):
    for k, (d, fn) in RT_CASES.items():
        mutate(base, "reftable-entry", "%s-%s" % (base, k), d,
               lambda img, fn=fn: img.set_rt(0, fn(img, img.rt(0))))
    mutate(base, "reftable-entry", "%s-dup" % base, "two entries name the same block",
           lambda img: img.set_rt(1, img.rt(0)))
    mutate(base, "reftable", "%s-garbage" % base, "refcount table full of 0xff",
           lambda img: img.b.__setitem__(slice(img.rt_off, img.rt_off + img.cs), b"\xff" * img.cs))


def refcount_of(what, val):
    def f(img):
        if what == "header":
            c = 0
        elif what == "l1":
            c = img.l1_off // img.cs
        elif what == "rt":
            c = img.rt_off // img.cs
        elif what == "rb":
            c = img.rt(0) // img.cs
        elif what == "l2":
            c = img.first_l2()[1] // img.cs
        else:
            _, l2 = img.first_l2()
            c = next(e & 0x00fffffffffffe00 for i, e in img.l2_entries(l2)
                     if e & 0x00fffffffffffe00 and not e & (1 << 62)) // img.cs
        img.set_refcount(c, val)
    return f


for base in ("v3", "c512", "v2", "snap"):
    for what in ("header", "l1", "rt", "rb", "l2", "data"):
        mutate(base, "refcount-zero", "%s-%s" % (base, what),
               "refcount 0 for the %s cluster" % what, refcount_of(what, 0))
    mutate(base, "refcount-max", "%s-data" % base, "refcount at its maximum for a data cluster",
           refcount_of("data", (1 << (1 << Img(bases[base]).order)) - 1))
    mutate(base, "refcount-two", "%s-l2" % base, "refcount 2 for a copied L2 table", refcount_of("l2", 2))
mutate("v3", "refblock", "garbage", "refcount block full of 0xff",
       lambda img: img.b.__setitem__(slice(img.rt(0), img.rt(0) + img.cs), b"\xff" * img.cs))
mutate("v3", "refblock", "zero", "refcount block all zero",
       lambda img: img.b.__setitem__(slice(img.rt(0), img.rt(0) + img.cs), bytes(img.cs)))

# ---- overlaps between tables ----
mutate("v3", "overlap", "l1-is-rt", "L1 table at the refcount table", lambda img: img.p64(40, img.rt_off))
mutate("v3", "overlap", "rt-is-l1", "refcount table at the L1 table", lambda img: img.p64(48, img.l1_off))
mutate("v3", "overlap", "l1-is-header", "L1 table at cluster 0", lambda img: img.p64(40, 0x10000 * 0))
mutate("v3", "overlap", "rt-is-header", "refcount table at cluster 0 (offset 0)", lambda img: img.p64(48, 0))
mutate("v3", "overlap", "l1-is-l2", "L1 table at an L2 table", lambda img: img.p64(40, img.first_l2()[1]))
mutate("c512", "overlap", "l1-spans-rt", "L1 table running into the refcount table",
       lambda img: (img.p64(40, img.rt_off - 512), img.p32(36, max(img.l1_size, 128))))

# ---- snapshot table ----
def snap(fn):
    def f(img):
        fn(img, img.snap_off)
    return f


SNAP_CASES = {
    "l1-unaligned": ("snapshot L1 offset unaligned", lambda img, o: img.p64(o, img.u64(o) + 8)),
    "l1-past-eof": ("snapshot L1 beyond the end of the file", lambda img, o: img.p64(o, 1 << 44)),
    "l1-huge": ("snapshot l1_size 0xffffffff", lambda img, o: img.p32(o + 8, U32)),
    "l1-big": ("snapshot l1_size 1 << 22", lambda img, o: img.p32(o + 8, 1 << 22)),
    "id-len": ("snapshot id_str_size 0xffff", lambda img, o: img.p16(o + 12, 0xffff)),
    "name-len": ("snapshot name_size 0xffff", lambda img, o: img.p16(o + 14, 0xffff)),
    "extra": ("snapshot extra_data_size 0xffffffff", lambda img, o: img.p32(o + 36, U32)),
    "extra-1k": ("snapshot extra_data_size 1024", lambda img, o: img.p32(o + 36, 1024)),
    "l1-header": ("snapshot L1 at the header", lambda img, o: img.p64(o, 0)),
    "l1-garbage": ("snapshot L1 table full of 0xff",
                   lambda img, o: img.b.__setitem__(slice(img.u64(o), img.u64(o) + 8 * img.u32(o + 8)),
                                                    b"\xff" * 8 * img.u32(o + 8))),
    "vmstate": ("snapshot vm_state_size huge", lambda img, o: img.p32(o + 32, U32)),
}
for k, (d, fn) in SNAP_CASES.items():
    mutate("snap", "snapshot", k, d, snap(fn))
mutate("snap", "snapshot", "past-eof", "snapshot table beyond the end of the file",
       lambda img: img.p64(64, 1 << 40))
mutate("snap", "snapshot", "many-past-eof", "65535 snapshots in a table beyond the end of the file",
       lambda img: (img.p32(60, 65535), img.p64(64, 0xff02000000000000)))

# ---- truncation ----
for base in ("v3", "c512", "snap"):
    full = open(bases[base], "rb").read()
    img = Img(bases[base])
    cuts = {"0": 0, "1": 1, "71": 71, "103": 103, "half-c0": img.cs // 2, "c0": img.cs,
            "before-l1": img.l1_off, "mid-l1": img.l1_off + 4, "before-rt": img.rt_off,
            "before-l2": img.first_l2()[1], "mid-l2": img.first_l2()[1] + 100,
            "last-cluster": len(full) - img.cs, "minus-1": len(full) - 1}
    for k, n in cuts.items():
        if 0 <= n <= len(full):
            emit("truncated", "%s-%s" % (base, k), full[:n], "file truncated to %d bytes" % n)
emit("truncated", "empty", b"", "zero-length file")
emit("truncated", "magic-only", b"QFI\xfb", "only the magic")
emit("truncated", "header-only", open(bases["v3"], "rb").read()[:112], "only the 112-byte header")

# ---- combinations that look valid but lie ----
mutate("v3", "lies", "dirty", "dirty bit set (repaired on a read-write open)", lambda img: img.p64(72, 1))
mutate("v3", "lies", "dirty-lazy", "dirty bit set with lazy refcounts and a zero refcount block",
       lambda img: (img.p64(72, 1), img.p64(80, 1),
                    img.b.__setitem__(slice(img.rt(0), img.rt(0) + img.cs), bytes(img.cs))))
mutate("v3", "lies", "corrupt", "corrupt bit set", lambda img: img.p64(72, 2))
mutate("v3", "lies", "size-grown", "virtual size larger than the L1 table maps",
       lambda img: img.p64(24, img.u64(24) * 1024))
mutate("c512", "lies", "size-1", "virtual size of one byte", lambda img: img.p64(24, 1))
mutate("v3", "lies", "snap-no-table", "nb_snapshots 1, snapshot table at cluster 0",
       lambda img: (img.p32(60, 1), img.p64(64, 0)))

# ---- damage `check` must find as qemu-img does (classes check-*: the test
# compares the exit codes and wants `check -r all` to leave an image
# qemu-img finds clean) ----
bases["trunc"] = make_base("trunc.qcow2", "16M", writes=("write -P 0x15 0 4M",))
bases["zx"] = make_base("zx.qcow2", "16M", "compression_type=zstd", "extended_l2=on",
                        writes=("write -P 0x16 0 200k",))
bases["extl2c"] = make_base("extl2c.qcow2", "4M", "extended_l2=on",
                            writes=("write -c -P 0x17 0 64k", "write -c -P 0x18 64k 64k"))
emit("check-past-eof", "data", open(bases["trunc"], "rb").read()[:3473408],
     "data clusters past the end of a truncated file")


def refblock_past_eof(img):
    img.set_rt(0, len(img.b) // img.cs * img.cs + img.cs)


def l2_self(img):
    _, l2 = img.first_l2()
    img.p64(l2 + img.l2e, l2 | (1 << 63))


def l1_rt_beyond(img):
    img.p32(36, img.l1_size + 1)
    img.set_l1(img.l1_size, img.rt_off | (1 << 63))


def snap_extra(n):
    def f(img):
        o = img.snap_off
        x, il, nl = img.u32(o + 36), struct.unpack_from(">H", img.b, o + 12)[0], \
            struct.unpack_from(">H", img.b, o + 14)[0]
        h = bytearray(img.b[o:o + 40])
        struct.pack_into(">I", h, 36, n)
        e = h + img.b[o + 40:o + 40 + n] + img.b[o + 40 + x:o + 40 + x + il + nl]
        e += bytes(-len(e) % 8)
        img.b[o:o + len(e)] = e
    return f


mutate("v3", "check-refblock-past-eof", "v3", "refcount block past the end of the file", refblock_past_eof)
mutate("zx", "check-meta-as-data", "refblock", "an L2 entry names the refcount block",
       lambda img: img.p64(img.first_l2()[1], img.rt(0) | (1 << 63)))
mutate("v3", "check-meta-as-data", "l2-self", "an L2 entry names its own L2 table", l2_self)
mutate("snap", "check-meta-as-l2", "snap-rt", "a snapshot L1 entry names the refcount table",
       lambda img: img.p64(img.u64(img.snap_off), img.rt_off))
mutate("v3", "check-meta-as-l2", "beyond-rt", "an L1 entry past the virtual size names the refcount table",
       l1_rt_beyond)
mutate("snap", "check-snapshot-incomplete", "8", "snapshot extra_data_size 8 (version 3)", snap_extra(8))
mutate("extl2c", "check-compressed-bitmap", "3", "compressed entry with subcluster bits",
       lambda img: img.p64(img.first_l2()[1] + 8, 3))
mutate("snap", "check-leak-copied", "nb0", "nb_snapshots 0: leaks whose repair leaves COPIED flags to set",
       lambda img: img.p32(60, 0))
mutate("zx", "check-dirty-corrupt", "1b", "dirty and corrupt bits with zstd and extended L2 (0x1b)",
       lambda img: img.p64(72, img.u64(72) | 3))

# ---- refcount structures damaged: `check -r all` rebuilds them from the
# references it counts (classes check-rebuild-*: the test wants `check -r
# all` to leave an image qemu-img finds clean, with the guest content of the
# undamaged image, written as OUTDIR/base-BASE.qcow2; the manifest's fourth
# column names the base) ----
# 512-byte clusters, 64-bit refcounts: a block covers 32 KiB, a table
# cluster 2 MiB, so this image has a refcount table of several clusters
bases["rc64"] = make_base("rc64.qcow2", "4M", "cluster_size=512", "refcount_bits=64",
                          writes=("write -P 0x19 0 2500k", "write -c -P 0x1a 3M 64k",
                                  "write -z 3200k 64k", "write -P 0x1b 3300k 5k"))
bases["rc1"] = make_base("rc1.qcow2", "16M", "refcount_bits=1", "cluster_size=4k",
                         writes=("write -P 0x1c 0 300k", "write -P 0x1d 10M 4k"))


def rt_set(*pairs):
    """Set refcount table entries: pairs of (index, value function)."""
    def f(img):
        for i, fn in pairs:
            img.set_rt(i, fn(img))
    return f


def rb_fill(pattern, which=(0,)):
    """Overwrite refcount blocks (by table index) with a repeated pattern."""
    def f(img):
        for i in which:
            o = img.rt(i) & ~0x1ff
            assert o, "no refcount block %d in %s" % (i, img.src)
            img.b[o:o + img.cs] = (pattern * img.cs)[:img.cs]
    return f


def rt_short(img):
    """The header's table size cut to one cluster: the blocks past it are lost."""
    assert img.rt_clusters > 1, "rc64 must have a refcount table of several clusters"
    img.p32(56, 1)


def rt_past_file(img):
    """The table's last useful entries zeroed: it no longer covers the file."""
    n = img.cs // 8 * img.rt_clusters
    used = [i for i in range(n) if img.rt(i)]
    for i in used[len(used) // 2:]:
        img.set_rt(i, 0)


L2 = lambda img: img.first_l2()[1]
REBUILD = [
    ("v3", "rt-zero", "refcount table entry 0 zeroed", rt_set((0, lambda img: 0))),
    ("v3", "rt-l2", "refcount table entry 0 names an L2 table", rt_set((0, L2))),
    ("v3", "rt-header", "refcount table entry 0 points into the header (0x200)",
     rt_set((0, lambda img: 0x200))),
    ("v3", "rt-l1", "refcount table entry 0 names the L1 table", rt_set((0, lambda img: img.l1_off))),
    ("v3", "rt-self", "refcount table entry 0 names the refcount table", rt_set((0, lambda img: img.rt_off))),
    ("v3", "rb-zero", "refcount block zeroed", rb_fill(b"\0")),
    ("v3", "rb-garbage", "refcount block overwritten with garbage", rb_fill(b"\x5a\xc3\x01")),
    ("v2", "rt-l2", "refcount table entry 0 names an L2 table (compat 0.10)", rt_set((0, L2))),
    ("v2", "rb-garbage", "refcount block of 0xff (compat 0.10)", rb_fill(b"\xff")),
    ("snap", "rt-zero", "refcount table entry 0 zeroed (with a snapshot)", rt_set((0, lambda img: 0))),
    ("snap", "rt-l2", "refcount table entry 0 names an L2 table a snapshot shares", rt_set((0, L2))),
    ("extl2", "rb-garbage", "refcount block of garbage (extended L2)", rb_fill(b"\x00\x07")),
    ("overlay", "rt-l2", "refcount table entry 0 names an L2 table (overlay)", rt_set((0, L2))),
    ("c512", "rt-zero", "refcount table entry 0 zeroed (512-byte clusters)", rt_set((0, lambda img: 0))),
    ("c512", "rt-l2", "refcount table entry 1 (no block) names an L2 table (512-byte clusters)",
     rt_set((1, L2))),
    ("rc64", "rb-mixed", "refcount blocks zeroed, of garbage, and the table's entries 2 and 5 zeroed",
     lambda img: (rb_fill(b"\0", (0, 7))(img), rb_fill(b"\x80\x01\x00", (1, 40))(img),
                  rt_set((2, lambda img: 0), (5, lambda img: 0))(img))),
    ("rc64", "rt-short", "refcount table cut to one cluster (64-bit refcounts)", rt_short),
    ("rc64", "rt-past", "refcount table entries for the second half of the file zeroed", rt_past_file),
    ("rc64", "rt-l2", "refcount table entry 3 names an L2 table (64-bit refcounts)", rt_set((3, L2))),
    ("rc1", "rb-garbage", "1-bit refcount block of garbage", rb_fill(b"\x96")),
    ("rc1", "rt-zero", "1-bit refcounts: refcount table entry 0 zeroed", rt_set((0, lambda img: 0))),
]
for base, k, d, fn in REBUILD:
    mutate(base, "check-rebuild", "%s-%s" % (base, k), d, fn)

# ---- LUKS encrypted images: damaged encryption headers ----
# The base is encrypted with the passphrase "pw" (the runner gives it as
# FASTQCOW_SECRET for these classes, so that opens go as far as unlocking).
# Made by $FASTQCOW when set (qemu-img create spends seconds measuring
# PBKDF2); written by qemu-io either way.
LUKS_PW = "pw"


def make_luks_base():
    path = os.path.join(WORK, "luks.qcow2")
    enc = "encrypt.format=luks,encrypt.key-secret=s,encrypt.iter-time=10"
    tool = os.environ.get("FASTQCOW")
    if tool:
        run(tool, "create", "-q", "-f", "qcow2", "--object", "secret,id=s,data=" + LUKS_PW,
            "-o", enc, path, "4M")
    else:
        run("qemu-img", "create", "-q", "-f", "qcow2", "--object", "secret,id=s,data=" + LUKS_PW,
            "-o", enc, path, "4M")
    run("qemu-io", "--object", "secret,id=s,data=" + LUKS_PW, "--image-opts",
        "driver=qcow2,file.filename=%s,encrypt.key-secret=s" % path,
        "-c", "write -P 0x71 0 128k", "-c", "write -P 0x72 1M 4k")
    return path


bases["luks"] = make_luks_base()


def luks_hdr(img):
    """Offset of the LUKS header (the encryption extension's pointer)."""
    for off, t, ln in img.extensions():
        if t == 0x0537be77:
            return off, img.u64(off + 8)
    raise RuntimeError("no encryption header extension in " + img.src)


def luks_put(rel, data):
    """Write bytes at `rel` into the LUKS header."""
    def f(img):
        h = luks_hdr(img)[1]
        img.b[h + rel:h + rel + len(data)] = data
    return f


def luks_u32(rel, v):
    return luks_put(rel, struct.pack(">I", v & U32))


def luks_ext(off_fn, len_fn):
    """The extension's offset and length replaced."""
    def f(img):
        e, h = luks_hdr(img)
        ln = img.u64(e + 16)
        img.p64(e + 8, off_fn(h))
        img.p64(e + 16, len_fn(ln))
    return f


SLOT0 = 208
LUKS_DAMAGE = [
    ("magic", "magic zeroed", luks_put(0, bytes(6))),
    ("version-2", "version 2", luks_put(6, b"\x00\x02")),
    ("version-ffff", "version 0xffff", luks_put(6, b"\xff\xff")),
    ("cipher-twofish", "cipher name twofish", luks_put(8, b"twofish\x00")),
    ("cipher-noterm", "cipher name without a NUL", luks_put(8, b"A" * 32)),
    ("mode-ecb", "cipher mode ecb (no IV)", luks_put(40, b"ecb\x00")),
    ("mode-foo", "cipher mode xts-foo", luks_put(40, b"xts-foo\x00")),
    ("mode-essiv-md5", "cipher mode cbc-essiv:md5", luks_put(40, b"cbc-essiv:md5\x00")),
    ("mode-essiv-sha512", "cipher mode cbc-essiv:sha512 (no AES of 64-byte keys)",
     luks_put(40, b"cbc-essiv:sha512\x00")),
    ("mode-noterm", "cipher mode without a NUL", luks_put(40, b"x" * 32)),
    ("hash-md5", "hash md5", luks_put(72, b"md5\x00")),
    ("hash-noterm", "hash name without a NUL", luks_put(72, b"s" * 32)),
    ("payload-0", "payload offset 0", luks_u32(104, 0)),
    ("payload-1", "payload offset 1 sector (inside the key material)", luks_u32(104, 1)),
    ("payload-huge", "payload offset 0xffffffff sectors", luks_u32(104, U32)),
    ("keybytes-0", "key bytes 0", luks_u32(108, 0)),
    ("keybytes-48", "key bytes 48 (aes-192 xts; the slot does not match)", luks_u32(108, 48)),
    ("keybytes-65", "key bytes 65", luks_u32(108, 65)),
    ("keybytes-huge", "key bytes 0xffffffff", luks_u32(108, U32)),
    ("digest", "master key digest flipped", luks_put(112, b"\xff" * 20)),
    ("mkiter-0", "master key digest iterations 0", luks_u32(164, 0)),
    ("mkiter-huge", "master key digest iterations 2^26", luks_u32(164, 1 << 26)),
    ("mkiter-max", "master key digest iterations 0xffffffff", luks_u32(164, U32)),
    ("slot-state-0", "key slot 0 state 0", luks_u32(SLOT0, 0)),
    ("slot-state-dead", "key slot 0 disabled: no active slot", luks_u32(SLOT0, 0xDEAD)),
    ("slot-all-active", "every key slot active, their material empty",
     lambda img: [luks_u32(SLOT0 + 48 * i, 0x00AC71F3)(img) or luks_u32(SLOT0 + 48 * i + 4, 1000)(img)
                  for i in range(1, 8)]),
    ("slot-iter-0", "key slot 0 iterations 0", luks_u32(SLOT0 + 4, 0)),
    ("slot-iter-huge", "key slot 0 iterations 2^26", luks_u32(SLOT0 + 4, 1 << 26)),
    ("slot-iter-max", "key slot 0 iterations 0xffffffff", luks_u32(SLOT0 + 4, U32)),
    ("slot-salt", "key slot 0 salt changed", luks_put(SLOT0 + 8, b"\x01" * 32)),
    ("slot-offset-0", "key material at sector 0 (the header)", luks_u32(SLOT0 + 40, 0)),
    ("slot-offset-1", "key material at sector 1 (over the header)", luks_u32(SLOT0 + 40, 1)),
    ("slot-offset-end", "key material past the payload offset", luks_u32(SLOT0 + 40, 4000)),
    ("slot-offset-huge", "key material at sector 0xffffffff", luks_u32(SLOT0 + 40, U32)),
    ("slot-stripes-0", "key slot 0 stripes 0", luks_u32(SLOT0 + 44, 0)),
    ("slot-stripes-1", "key slot 0 stripes 1", luks_u32(SLOT0 + 44, 1)),
    ("slot-stripes-huge", "key slot 0 stripes 0xffffffff", luks_u32(SLOT0 + 44, U32)),
    ("material", "key material of slot 0 overwritten", luks_put(4096, b"\x5a" * 4096)),
    ("ext-offset-0", "encryption header offset 0 (the qcow2 header)", luks_ext(lambda h: 0, lambda n: n)),
    ("ext-offset-odd", "encryption header offset not cluster-aligned", luks_ext(lambda h: h + 512, lambda n: n)),
    ("ext-offset-eof", "encryption header past the end of the file", luks_ext(lambda h: 1 << 40, lambda n: n)),
    ("ext-offset-l1", "encryption header offset names the L1 table",
     lambda img: luks_ext(lambda h: img.l1_off, lambda n: n)(img)),
    ("ext-len-0", "encryption header length 0", luks_ext(lambda h: h, lambda n: 0)),
    ("ext-len-short", "encryption header length 100 (less than a LUKS header)", luks_ext(lambda h: h, lambda n: 100)),
    ("ext-len-huge", "encryption header length 2^62", luks_ext(lambda h: h, lambda n: 1 << 62)),
    ("ext-len-cut", "encryption header length cut inside the key material", luks_ext(lambda h: h, lambda n: 8192)),
    ("crypt-aes", "crypt_method 1 (legacy AES) with the LUKS extension", lambda img: img.p32(32, 1)),
]
for k, d, fn in LUKS_DAMAGE:
    mutate("luks", "luks-header", k, d, fn)

# ---- write the manifest ----
with open(os.path.join(OUT, "MANIFEST"), "w") as f:
    f.write("\n".join(manifest) + "\n")
shutil.copy(backing_base, os.path.join(OUT, "backing.qcow2"))
for base in sorted({line.split("\t")[3] for line in manifest} - {""}):
    shutil.copy(bases[base], os.path.join(OUT, "base-%s.qcow2" % base))
shutil.rmtree(WORK)
print("%d images in %s" % (len(manifest), OUT))
