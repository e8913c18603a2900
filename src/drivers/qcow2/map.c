/* map.c: guest-to-host mapping through the L1 and L2 tables:
 * classifying runs of clusters (subclusters with extended L2), allocating
 * and copying L2 tables, linking freshly written clusters, and turning
 * clusters into zero or unallocated ones. Also decompression of clusters.
 *
 * Every entry read from disk is validated before use: reserved bits zero,
 * host offsets aligned and outside the header; a bad entry marks the image
 * corrupt and fails the request with -EIO.
 * SPDX-License-Identifier: MIT
 */
#include <zlib.h>
#include <zstd.h>

#include "qcow2.h"

uint64_t qcow2_l2e_get(struct qcow2 *s, const uint8_t *l2, uint64_t idx)
{
    return fq_be64(l2 + idx * s->l2_entry_size);
}

uint64_t qcow2_l2e_bitmap(struct qcow2 *s, const uint8_t *l2, uint64_t idx)
{
    return s->extl2 ? fq_be64(l2 + idx * 16 + 8) : 0;
}

void qcow2_l2e_set(struct qcow2 *s, uint8_t *l2, uint64_t idx, uint64_t e, uint64_t bitmap)
{
    fq_put_be64(l2 + idx * s->l2_entry_size, e);
    if (s->extl2)
        fq_put_be64(l2 + idx * 16 + 8, bitmap);
}

void qcow2_compressed_loc(struct qcow2 *s, uint64_t l2e, uint64_t *host, uint64_t *nbytes)
{
    unsigned x = 62 - (s->cluster_bits - 8);
    uint64_t off = l2e & ((1ull << x) - 1);
    uint64_t extra = (l2e >> x) & ((1ull << (s->cluster_bits - 8)) - 1);

    *host = off;
    *nbytes = (extra + 1) * 512 - (off & 511);
}

/* Validate an L1 entry; returns its L2 offset or an error. */
static int l1_l2_offset(struct qcow2 *s, uint64_t l1i, uint64_t *out)
{
    uint64_t e = s->l1[l1i], off = e & L1E_OFFSET_MASK;

    if (!(e & L1E_RESERVED_MASK) && (off & (s->cluster_size - 1))) {
        qcow2_signal_corruption(s, "L2 table offset %#llx unaligned (L1 index: %#llx)",
                                (unsigned long long)off, (unsigned long long)l1i);
        return -EIO;
    }
    if ((e & L1E_RESERVED_MASK) || (off && off < s->cluster_size)) {
        qcow2_signal_corruption(s, "L1 entry %llu is invalid (0x%llx)",
                                (unsigned long long)l1i, (unsigned long long)e);
        return -EIO;
    }
    *out = off;
    return 0;
}

/* Allocate a new L2 table for L1 entry l1i (a copy of the shared table
 * at `old` when that is not 0), as whole-table entries. */
static int alloc_table_whole(struct qcow2 *s, uint64_t l1i, uint64_t old, struct qcache_entry **l2)
{
    struct qcache_entry *src = NULL, *e;
    uint64_t noff;
    int r;

    if (old && (r = qcache_get(&s->l2_cache, old, false, &src)) < 0)
        return r;
    if ((r = qcache_reserve(&s->l2_cache, 1)) < 0 || (r = qcow2_alloc_clusters(s, 1, &noff)) < 0) {
        qcache_put(&s->l2_cache, src);
        return r;
    }
    r = qcache_get(&s->l2_cache, noff, true, &e);
    if (r < 0) {
        qcache_put(&s->l2_cache, src);
        return r;
    }
    if (src) {
        memcpy(e->data, src->data, s->cluster_size);
        qcache_put(&s->l2_cache, src);
        if ((r = qcow2_free_deferred(s, old, 1)) < 0) {
            qcache_put(&s->l2_cache, e);
            return r;
        }
    }
    s->l1[l1i] = noff | L2E_COPIED;
    qcow2_mark_l1_dirty(s, l1i);
    *l2 = e;
    return 0;
}

/* The same as slices: every slice of the new table is made (dirty, so the
 * whole cluster reaches the disk); the one holding table index `ti` is
 * returned. A shared table being copied is read synchronously (copies
 * happen once per table after a snapshot). */
static int alloc_table_sliced(struct qcow2 *s, uint64_t l1i, uint64_t old, uint64_t ti,
                              struct qcache_entry **l2)
{
    struct qcache *c = &s->l2_cache;
    uint32_t n = c->cs / c->slice;
    uint64_t noff, want = ti * s->l2_entry_size / c->slice;
    CLEANUP_FREE uint8_t *src = NULL;
    int r;

    if ((r = qcache_reserve(c, n)) < 0)
        return r;
    if (old) {
        struct qmeta_wait *aw = s->aw;
        if (!(src = fq_memalign(c->cs)))
            return -ENOMEM;
        s->aw = NULL;
        r = fq_bdev_pread_sync(s->file, src, c->cs, old);
        for (uint32_t i = 0; r == 0 && i < n; i++) {
            /* cached slices are what the disk holds (a shared table is
             * never changed in place), but take them as they are */
            struct qcache_entry *p;
            if (qcache_get_part(c, old + (uint64_t)i * c->slice, false, &p) == 0) {
                memcpy(src + (size_t)i * c->slice, p->data, c->slice);
                qcache_put(c, p);
            }
        }
        s->aw = aw;
        if (r < 0)
            return r;
    }
    if ((r = qcow2_alloc_clusters(s, 1, &noff)) < 0)
        return r;
    *l2 = NULL;
    for (uint32_t i = 0; i < n; i++) {
        struct qcache_entry *e;
        if ((r = qcache_get_part(c, noff + (uint64_t)i * c->slice, true, &e)) < 0) {
            qcache_put(c, *l2);
            *l2 = NULL;
            return r;   /* the cluster leaks; nothing points at it */
        }
        if (src)
            memcpy(e->data, src + (size_t)i * c->slice, c->slice);
        if (i == want)
            *l2 = e;
        else
            qcache_put(c, e);
    }
    if (old && (r = qcow2_free_deferred(s, old, 1)) < 0) {
        qcache_put(c, *l2);
        *l2 = NULL;
        return r;
    }
    s->l1[l1i] = noff | L2E_COPIED;
    qcow2_mark_l1_dirty(s, l1i);
    return 0;
}

/* The L2 table (whole) or the entry holding guest cluster gc (part). */
static int get_l2(struct qcow2 *s, uint64_t gc, bool alloc, bool part, struct qcache_entry **l2,
                  uint64_t *idx)
{
    uint64_t l1i = gc >> s->l2_bits, off, ti = gc & (s->l2_entries - 1);
    int r;

    *l2 = NULL;
    *idx = ti;
    if (l1i >= s->l1_size)
        return -EIO;
    r = l1_l2_offset(s, l1i, &off);
    if (r < 0)
        return r;
    if (off && (!alloc || (s->l1[l1i] & L2E_COPIED))) {
        r = part ? qcache_get_part(&s->l2_cache, off + ti * s->l2_entry_size, false, l2)
                 : qcache_get(&s->l2_cache, off, false, l2);
        if (r < 0)
            return r;
        *idx = ti - ((*l2)->offset - off) / s->l2_entry_size;
        return 0;
    }
    if (!alloc)
        return 0;
    /* allocate a table, or copy a shared one (snapshots) */
    if (part && s->l2_cache.slice < s->cluster_size) {
        r = alloc_table_sliced(s, l1i, off, ti, l2);
        if (r == 0)
            *idx = ti - ((*l2)->offset - (s->l1[l1i] & L1E_OFFSET_MASK)) / s->l2_entry_size;
        return r;
    }
    return alloc_table_whole(s, l1i, off, l2);
}

int qcow2_get_l2(struct qcow2 *s, uint64_t gc, bool alloc, struct qcache_entry **l2, uint64_t *idx)
{
    return get_l2(s, gc, alloc, false, l2, idx);
}

int qcow2_get_l2_slice(struct qcow2 *s, uint64_t gc, bool alloc, struct qcache_entry **l2,
                       uint64_t *idx)
{
    return get_l2(s, gc, alloc, true, l2, idx);
}

/* Classify one entry (one subcluster `sc` with extended L2); *has_host
 * says whether *host names a host cluster (offset 0 is one in an external
 * data file, where the COPIED flag tells it from "unallocated"). */
static int classify(struct qcow2 *s, uint64_t e, uint64_t bitmap, unsigned sc,
                    enum qkind *kind, uint64_t *host, bool *has_host)
{
    uint64_t off = e & L2E_OFFSET_MASK;

    *host = 0;
    *has_host = off != 0 || (qcow2_has_data_file(s) && (e & L2E_COPIED));
    if ((e & L2E_COMPRESSED) && qcow2_has_data_file(s)) {
        qcow2_signal_corruption(s, "compressed cluster entry 0x%llx in an image with an external "
                                "data file", (unsigned long long)e);
        return -EIO;
    }
    if (e & L2E_COMPRESSED) {
        *kind = QK_COMPRESSED;
        return 0;
    }
    uint64_t reserved = L2E_STD_RESERVED | ((s->version < 3 || s->extl2) ? L2E_ZERO : 0);
    if ((e & reserved) || (off & (s->cluster_size - 1)) ||
        (off && off < s->cluster_size && !qcow2_has_data_file(s))) {
        qcow2_signal_corruption(s, "L2 entry 0x%llx is invalid", (unsigned long long)e);
        return -EIO;
    }
    if (s->extl2) {
        bool a = bitmap & (1ull << sc), z = bitmap & (1ull << (32 + sc));
        if (a && z) {
            qcow2_signal_corruption(s, "subcluster %u is both allocated and zero", sc);
            return -EIO;
        }
        if (a && !*has_host) {
            qcow2_signal_corruption(s, "allocated subcluster %u has no host cluster", sc);
            return -EIO;
        }
        *kind = a ? QK_DATA : z ? QK_ZERO : QK_UNALLOC;
        *host = off;
        return 0;
    }
    if (e & L2E_ZERO) {
        *kind = QK_ZERO;
        *host = off;
        return 0;
    }
    if (!*has_host) {
        if (e & L2E_COPIED) {
            qcow2_signal_corruption(s, "L2 entry 0x%llx has no offset but the copied flag",
                                    (unsigned long long)e);
            return -EIO;
        }
        *kind = QK_UNALLOC;
        return 0;
    }
    *kind = QK_DATA;
    *host = off;
    return 0;
}

int qcow2_lookup(struct qcow2 *s, uint64_t off, uint64_t len, struct qextent *out)
{
    uint64_t gc = off >> s->cluster_bits;
    uint64_t table_end = ((gc >> s->l2_bits) + 1) << (s->l2_bits + s->cluster_bits);
    struct qcache_entry *l2;
    uint64_t idx;
    int r;

    len = FQ_MIN(len, table_end - off);
    memset(out, 0, sizeof(*out));
    out->guest = off;
    r = qcow2_get_l2_slice(s, gc, false, &l2, &idx);
    if (r < 0)
        return r;
    if (!l2) {
        out->kind = QK_UNALLOC;
        out->len = len;
        return 0;
    }
    /* not past the entry (an L2 slice may cover less than the table) */
    len = FQ_MIN(len, ((gc - idx + qcow2_l2_count(s, l2)) << s->cluster_bits) - off);
    uint64_t unit = s->subcluster_size, pos = off, end = off + len;
    bool first = true;
    while (pos < end) {
        uint64_t i = idx + ((pos >> s->cluster_bits) - gc);
        unsigned sc = (unsigned)((pos & (s->cluster_size - 1)) / unit);
        uint64_t e = qcow2_l2e_get(s, l2->data, i), bm = qcow2_l2e_bitmap(s, l2->data, i);
        enum qkind k;
        uint64_t host;
        bool hh;
        r = classify(s, e, bm, sc, &k, &host, &hh);
        if (r < 0)
            break;
        uint64_t step;
        if (k == QK_COMPRESSED || !s->extl2)
            step = s->cluster_size - (pos & (s->cluster_size - 1));
        else
            step = unit - (pos & (unit - 1));
        step = FQ_MIN(step, end - pos);
        if (k == QK_COMPRESSED || (k == QK_UNALLOC && !s->extl2))
            hh = false;
        uint64_t pos_host = hh ? host + (pos & (s->cluster_size - 1)) : 0;
        bool copied = (e & L2E_COPIED) != 0;
        if (first) {
            out->kind = k;
            out->host = pos_host;
            out->copied = copied;
            out->has_host = hh;
            out->l2e = e;
            first = false;
        } else if (k != out->kind || k == QK_COMPRESSED || hh != out->has_host ||
                   (hh && pos_host != out->host + out->len) ||
                   (k == QK_DATA && copied != out->copied)) {
            break;
        }
        out->len += step;
        pos += step;
        if (k == QK_COMPRESSED)
            break;
    }
    qcache_put(&s->l2_cache, l2);
    return r;
}

int qcow2_for_each_l2(struct qcow2 *s, const uint64_t *l1, uint32_t n, qcow2_l2_fn *fn,
                      void *opaque)
{
    for (uint32_t i = 0; i < n; i++) {
        uint64_t off = l1[i] & L1E_OFFSET_MASK;
        struct qcache_entry *t;
        if (!off)
            continue;
        int r = qcache_get(&s->l2_cache, off, false, &t);
        if (r < 0)
            return r;
        r = fn(s, t, opaque);
        qcache_put(&s->l2_cache, t);
        if (r < 0)
            return r;
    }
    return 0;
}

int qcow2_release_entry(struct qcow2 *s, uint64_t e)
{
    if (e & L2E_COMPRESSED) {
        uint64_t host, n;
        qcow2_compressed_loc(s, e, &host, &n);
        uint64_t first = FQ_ALIGN_DOWN(host, s->cluster_size);
        uint64_t last = FQ_ALIGN_DOWN(host + n - 1, s->cluster_size);
        return qcow2_free_deferred(s, first, (last - first) / s->cluster_size + 1);
    }
    uint64_t off = e & L2E_OFFSET_MASK;
    if (qcow2_has_data_file(s))
        return 0;       /* data clusters in a data file have no refcounts */
    return off ? qcow2_free_deferred(s, off, 1) : 0;
}

int qcow2_link_subclusters(struct qcow2 *s, uint64_t gc, uint64_t host, uint32_t mask)
{
    struct qcache_entry *l2;
    uint64_t idx;
    int r = qcow2_get_l2_slice(s, gc, true, &l2, &idx);

    if (r < 0)
        return r;
    uint64_t old = qcow2_l2e_get(s, l2->data, idx), bm = qcow2_l2e_bitmap(s, l2->data, idx);
    uint64_t oldhost = old & L2E_OFFSET_MASK;
    if ((old & L2E_COMPRESSED) || (oldhost && oldhost != host)) {
        /* the entry changed under us (not expected: writers of a cluster
         * are serialized); keep it consistent by dropping the old one */
        r = qcow2_release_entry(s, old);
        bm = 0;
    }
    bm = (bm | mask) & ~((uint64_t)mask << 32);
    qcow2_l2e_set(s, l2->data, idx, host | L2E_COPIED, bm);
    qcache_mark_dirty(l2);
    qcache_put(&s->l2_cache, l2);
    return r;
}

int qcow2_link_clusters(struct qcow2 *s, uint64_t gc, uint64_t n, uint64_t host)
{
    /* the data must be durable before the L2 entries that expose it */
    s->flush_owed = true;
    while (n > 0) {
        struct qcache_entry *l2;
        uint64_t idx;
        int r = qcow2_get_l2_slice(s, gc, true, &l2, &idx);
        if (r < 0)
            return r;
        uint64_t k = FQ_MIN(n, qcow2_l2_count(s, l2) - idx);
        for (uint64_t i = 0; i < k; i++) {
            uint64_t old = qcow2_l2e_get(s, l2->data, idx + i);
            uint64_t h = host + i * s->cluster_size;
            qcow2_l2e_set(s, l2->data, idx + i, h | L2E_COPIED, s->extl2 ? 0xffffffffull : 0);
            /* a zero cluster written where it was keeps its host cluster */
            if (((old & L2E_COMPRESSED) || (old & L2E_OFFSET_MASK) != h) &&
                (r = qcow2_release_entry(s, old)) < 0)
                break;
        }
        qcache_mark_dirty(l2);
        qcache_put(&s->l2_cache, l2);
        if (r < 0)
            return r;
        gc += k;
        n -= k;
        host += k * s->cluster_size;
    }
    return 0;
}

/* The entry that zeroing (or discarding) turns `old` into, following the
 * mapping qemu uses, so that map/alloc/check report the same:
 *  - v3 write-zeroes: a zero cluster; its host cluster stays (shared or
 *    not) unless unmapping is allowed or it is compressed (with extended
 *    L2 the entry stays as it was, every subcluster zero);
 *  - v3 discard: a zero cluster where something was allocated or a backing
 *    file would show through (its host cluster released), else left alone;
 *  - v2 (no backing file here), either: unallocated where allocated.
 * Returns false when `old` stays as it is. */
static bool zeroed_entry(struct qcow2 *s, uint64_t old, uint64_t oldbm, bool unmap, bool discard,
                         uint64_t *ne, uint64_t *nb, bool *keep)
{
    bool allocated = (old & (L2E_COMPRESSED | L2E_OFFSET_MASK)) || (oldbm & 0xffffffffull);

    *ne = 0;
    *nb = 0;
    *keep = false;
    if (s->version < 3)
        return allocated;
    if (discard && !allocated && !s->bs->backing)
        return false;
    bool hosted = (old & L2E_OFFSET_MASK) || (qcow2_has_data_file(s) && (old & L2E_COPIED));
    if (!discard && !unmap && !(old & L2E_COMPRESSED) && hosted) {
        *keep = true;       /* the allocation stays, reading as zeros */
        *ne = s->extl2 ? old : old | L2E_ZERO;
        *nb = s->extl2 ? 0xffffffffull << 32 : 0;
        return *ne != old || *nb != oldbm;
    }
    *ne = s->extl2 ? 0 : L2E_ZERO;
    *nb = s->extl2 ? 0xffffffffull << 32 : 0;
    return *ne != old || *nb != oldbm;
}

int qcow2_zero_clusters(struct qcow2 *s, uint64_t gc, uint64_t n, bool unmap, bool discard)
{
    bool backing = s->bs->backing != NULL;

    if (!discard && s->version < 3 && backing)
        return -ENOTSUP;   /* caller writes zeros instead */
    if (discard && s->version < 3 && backing)
        return 0;          /* nothing can express it; discard is advisory */
    /* every L2 table the range touches is made writable (allocated, or
     * copied when a snapshot shares it), whether or not an entry changes:
     * the image's layout follows qemu's */
    while (n > 0) {
        struct qcache_entry *l2;
        uint64_t idx;
        uint64_t k = FQ_MIN(n, s->l2_entries - (gc & (s->l2_entries - 1)));
        int r = qcow2_get_l2_slice(s, gc, true, &l2, &idx);

        if (r < 0)
            return r;
        k = FQ_MIN(k, qcow2_l2_count(s, l2) - idx);
        bool dirty = false;
        for (uint64_t i = 0; i < k; i++) {
            uint64_t old = qcow2_l2e_get(s, l2->data, idx + i);
            uint64_t oldbm = qcow2_l2e_bitmap(s, l2->data, idx + i), ne, nb;
            bool keep;
            if (!zeroed_entry(s, old, oldbm, unmap, discard, &ne, &nb, &keep))
                continue;
            qcow2_l2e_set(s, l2->data, idx + i, ne, nb);
            dirty = true;
            if (!keep && (r = qcow2_release_entry(s, old)) < 0)
                break;
        }
        if (dirty)
            qcache_mark_dirty(l2);
        qcache_put(&s->l2_cache, l2);
        if (r < 0)
            return r;
        gc += k;
        n -= k;
    }
    return 0;
}

int qcow2_zero_subclusters(struct qcow2 *s, uint64_t gc, uint32_t mask)
{
    struct qcache_entry *l2;
    uint64_t idx;
    /* a writable table (allocated, or copied when a snapshot shares it),
     * even when no bit changes, as for whole clusters */
    int r = qcow2_get_l2_slice(s, gc, true, &l2, &idx);

    if (r < 0)
        return r;
    uint64_t e = qcow2_l2e_get(s, l2->data, idx), bm = qcow2_l2e_bitmap(s, l2->data, idx);
    if (e & L2E_COMPRESSED) {
        qcache_put(&s->l2_cache, l2);
        return -ENOTSUP;        /* no bitmap: the caller writes zeros */
    }
    /* the host cluster stays, whatever is left allocated in it */
    uint64_t nbm = (bm & ~(uint64_t)mask) | ((uint64_t)mask << 32);
    if (nbm != bm) {
        qcow2_l2e_set(s, l2->data, idx, e, nbm);
        qcache_mark_dirty(l2);
    }
    qcache_put(&s->l2_cache, l2);
    return 0;
}

int qcow2_decompress(struct qcow2 *s, const uint8_t *src, size_t srclen, uint8_t *dst)
{
    size_t want = (size_t)s->cluster_size;

    if (s->compression_type == 0) {
        z_stream z;
        memset(&z, 0, sizeof(z));
        if (inflateInit2(&z, -12) != Z_OK)
            return -ENOMEM;
        z.next_in = (Bytef *)src;
        z.avail_in = (uInt)srclen;
        z.next_out = dst;
        z.avail_out = (uInt)want;
        int zr = inflate(&z, Z_FINISH);
        size_t got = want - z.avail_out;
        inflateEnd(&z);
        if ((zr != Z_STREAM_END && zr != Z_BUF_ERROR) || got != want)
            return -EIO;
        return 0;
    }
    ZSTD_DCtx *d = ZSTD_createDCtx();
    if (!d)
        return -ENOMEM;
    ZSTD_inBuffer in = { src, srclen, 0 };
    ZSTD_outBuffer out = { dst, want, 0 };
    int r = 0;
    while (out.pos < want) {
        size_t zr = ZSTD_decompressStream(d, &out, &in);
        if (ZSTD_isError(zr)) {
            r = -EIO;
            break;
        }
        if (in.pos == in.size && out.pos < want && zr != 0) {
            r = -EIO;   /* input exhausted before a cluster was produced */
            break;
        }
        if (zr == 0 && out.pos < want) {
            r = -EIO;
            break;
        }
    }
    ZSTD_freeDCtx(d);
    return r;
}
