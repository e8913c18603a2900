/* compress.c: writing compressed clusters.
 *
 * A guest cluster is compressed whole (raw deflate with a 4 KiB window for
 * zlib, as the format requires, or one zstd frame, per the header's
 * compression_type) and stored byte-packed right after the previous
 * compressed cluster, as qemu does: the descriptor names the first byte
 * and the number of 512-byte sectors touched, and another compressed
 * cluster may begin in the last sector of this one. s->comp_next is where
 * the next one may start, inside a host cluster that compressed data
 * already holds a reference to. A compressed cluster may run into the next
 * host cluster when that one is the next cluster the allocator hands out.
 * Each write pads its last sector with zeros (the next one overwrites the
 * padding), so that the file always holds the whole sectors a descriptor
 * names.
 *
 * Refcounts: every host cluster a compressed cluster touches holds one
 * reference for it (the first user by allocating the cluster, later ones
 * by adding 1), which is what the check counts and what freeing an L2
 * entry releases. When the last reference to the cluster of comp_next
 * goes, the refcount code resets comp_next, so a cluster that was freed
 * (and maybe reused) is never packed into.
 *
 * Ordering is that of every allocating write: refcounts raised in the
 * cache, the data written, a flush owed, then the L2 entry linked; what it
 * replaces is freed through the deferred frees.
 *
 * Data that does not compress below a cluster (or only by so little that
 * the refcount of a shared host cluster would overflow, e.g. with 1-bit
 * refcounts a host cluster holds one compressed cluster) is written as an
 * ordinary cluster or packed less tightly, respectively.
 * SPDX-License-Identifier: MIT
 */
#include <zlib.h>
#include <zstd.h>

#include "ops.h"

bool qcow2_busy(struct qcow2 *s)
{
    return s->allocs != NULL || s->data_inflight > 0 || s->wb != NULL ||
           qcache_busy(&s->l2_cache) || qcache_busy(&s->rb_cache);
}

/* Compress `len` bytes into `dst` (`cap` bytes). Returns the compressed
 * length, 0 if it does not fit, or -errno. */
static int64_t compress_buf(const struct qcow2 *s, const uint8_t *src, size_t len, uint8_t *dst,
                            size_t cap)
{
    if (s->compression_type == 0) {
        z_stream z;
        memset(&z, 0, sizeof(z));
        if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -12, 9, Z_DEFAULT_STRATEGY) != Z_OK)
            return -ENOMEM;
        z.next_in = (Bytef *)src;
        z.avail_in = (uInt)len;
        z.next_out = dst;
        z.avail_out = (uInt)cap;
        int zr = deflate(&z, Z_FINISH);
        int64_t out = (int64_t)(cap - z.avail_out);
        deflateEnd(&z);
        if (zr == Z_STREAM_END)
            return out;
        return zr == Z_OK || zr == Z_BUF_ERROR ? 0 : -EIO;
    }
    size_t zr = ZSTD_compress(dst, cap, src, len, ZSTD_CLEVEL_DEFAULT);
    if (ZSTD_isError(zr))
        return 0;   /* too small a buffer, or any other failure: store it plain */
    return (int64_t)zr;
}

/* The L2 descriptor of `len` bytes of compressed data at host offset
 * `host`: the offset and the number of sectors after the first. */
static uint64_t compressed_entry(struct qcow2 *s, uint64_t host, uint64_t len)
{
    unsigned x = 62 - (s->cluster_bits - 8);
    uint64_t extra = ((host + len - 1) >> 9) - (host >> 9);

    return L2E_COMPRESSED | (extra << x) | host;
}

/* May more compressed data go into the host cluster of `next`? */
static int can_pack(struct qcow2 *s, uint64_t next, bool *out)
{
    uint64_t rc;
    int r;

    *out = false;
    if (!next || FQ_IS_ALIGNED(next, s->cluster_size))
        return 0;
    if ((r = qcow2_get_refcount(s, next >> s->cluster_bits, &rc)) < 0)
        return r;
    *out = rc > 0 && rc < s->refcount_max;
    return 0;
}

/* Reserve `len` (< one cluster) bytes of host space for compressed data:
 * after comp_next if it fits there or runs on into the cluster just
 * allocated, else at the start of a new cluster. Raises the refcount of
 * every host cluster the range touches. */
static int alloc_bytes(struct qcow2 *s, uint64_t len, uint64_t *out)
{
    uint64_t cs = s->cluster_size, next = s->comp_next, c;
    bool pack;
    int r;

    if ((r = can_pack(s, next, &pack)) < 0)
        return r;
    if (pack && cs - (next & (cs - 1)) >= len) {
        r = qcow2_update_refcount(s, FQ_ALIGN_DOWN(next, cs), 1, 1);
        if (r < 0)
            return r;
        *out = next;
        return 0;
    }
    r = qcow2_alloc_clusters(s, 1, &c);
    if (r < 0)
        return r;
    /* growing the refcount table writes back, which may have freed the
     * cluster of comp_next (the refcount code then reset comp_next) */
    if (pack && s->comp_next == next && FQ_ALIGN_UP(next, cs) == c) {
        r = qcow2_update_refcount(s, FQ_ALIGN_DOWN(next, cs), 1, 1);
        if (r < 0) {
            qcow2_update_refcount(s, c, 1, -1);
            return r;
        }
        *out = next;
        return 0;
    }
    *out = c;
    return 0;
}

/* Drop the references alloc_bytes took for [host, host + nbytes). */
static void unalloc_bytes(struct qcow2 *s, uint64_t host, uint64_t nbytes)
{
    uint64_t first = FQ_ALIGN_DOWN(host, s->cluster_size);
    uint64_t last = FQ_ALIGN_DOWN(host + nbytes - 1, s->cluster_size);

    qcow2_update_refcount(s, first, (last - first) / s->cluster_size + 1, -1);
    s->comp_next = 0;
}

/* Write the cluster uncompressed through the ordinary planner. */
static int write_plain(struct qcow2 *s, const uint8_t *data, uint64_t off, uint64_t len)
{
    struct iovec v = { (void *)data, (size_t)len };
    struct fq_req req = { .op = FQ_OP_WRITE, .off = off, .len = len, .iov = &v, .iovcnt = 1 };

    return qcow2_io_sync(s->bs, &req);
}

int64_t qcow2_compress_cluster(const struct qcow2 *s, const uint8_t *src, uint8_t *dst)
{
    /* at most a byte under a cluster, or it is not worth it */
    return compress_buf(s, src, (size_t)s->cluster_size, dst, (size_t)s->cluster_size - 1);
}

int qcow2_store_compressed(struct qcow2 *s, uint64_t gc, const uint8_t *data, uint8_t *blob,
                           int64_t clen)
{
    uint64_t cs = s->cluster_size, off = gc << s->cluster_bits, host, wlen;
    unsigned x = 62 - (s->cluster_bits - 8);
    int r;

    if (s->readonly)
        return -EROFS;
    if (s->corrupt)
        return -EIO;
    if (off >= s->bs->size)
        return -EINVAL;
    if (clen < 0)
        return (int)clen;
    if (clen == 0)
        return write_plain(s, data, off, FQ_MIN(cs, s->bs->size - off));

    /* allocating writes in flight over this cluster link later and would
     * hide this one: they rewrite their data over it instead (as for any
     * synchronous write that goes ahead of them) */
    for (struct qalloc *a = s->allocs; a; a = a->next)
        if (gc >= a->first && gc < a->first + a->n)
            a->bypassed = true;

    /* the L2 table first, so that data stays after it */
    struct qcache_entry *l2;
    uint64_t idx;
    r = qcow2_get_l2_slice(s, gc, true, &l2, &idx);
    if (r < 0)
        return r;
    qcache_put(&s->l2_cache, l2);

    r = alloc_bytes(s, (uint64_t)clen, &host);
    if (r < 0)
        return r;
    if (host >= (1ull << x) || qcow2_overlaps_metadata(s, host, (uint64_t)clen)) {
        unalloc_bytes(s, host, (uint64_t)clen);
        qcow2_signal_corruption(s, "compressed cluster at 0x%llx would overwrite metadata "
                                "or lie beyond the compressed-cluster limit",
                                (unsigned long long)host);
        return -EIO;
    }
    /* the data, and zeros to the end of its last sector */
    wlen = FQ_ALIGN_UP(host + (uint64_t)clen, 512) - host;
    memset(blob + clen, 0, (size_t)(wlen - (uint64_t)clen));
    r = fq_bdev_pwrite_tagged(s->file, blob, (size_t)wlen, host, FQ_TAG_DATA);
    if (r < 0) {
        unalloc_bytes(s, host, (uint64_t)clen);
        return r;
    }
    s->comp_next = FQ_IS_ALIGNED(host + (uint64_t)clen, cs) ? 0 : host + (uint64_t)clen;

    /* the data must be durable before the L2 entry that exposes it */
    s->flush_owed = true;
    r = qcow2_get_l2_slice(s, gc, true, &l2, &idx);
    if (r < 0)
        return r;   /* the space leaks until a check repairs it */
    uint64_t old = qcow2_l2e_get(s, l2->data, idx);
    qcow2_l2e_set(s, l2->data, idx, compressed_entry(s, host, (uint64_t)clen), 0);
    qcache_mark_dirty(l2);
    qcache_put(&s->l2_cache, l2);
    return qcow2_release_entry(s, old);
}

int qcow2_write_compressed(struct qcow2 *s, const uint8_t *data, uint64_t gc)
{
    uint64_t cs = s->cluster_size, off = gc << s->cluster_bits, len;

    if (off >= s->bs->size)
        return -EINVAL;
    len = FQ_MIN(cs, s->bs->size - off);
    CLEANUP_FREE uint8_t *in = NULL;
    CLEANUP_FREE uint8_t *out = fq_memalign((size_t)cs + 512);
    if (!out)
        return -ENOMEM;
    if (len < cs) {
        /* the last cluster of the disk: what lies past the end is zeros */
        if (!(in = fq_zalign((size_t)cs)))
            return -ENOMEM;
        memcpy(in, data, (size_t)len);
        data = in;
    }
    return qcow2_store_compressed(s, gc, data, out, qcow2_compress_cluster(s, data, out));
}
