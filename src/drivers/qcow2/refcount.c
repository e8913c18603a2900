/* refcount.c: reference counts, cluster allocation, growth of the
 * refcount structures, deferred frees and the ordered metadata write-back.
 *
 * Crash-safety invariants enforced here:
 *  - A cluster's refcount is raised (in the cache) before anything can
 *    reference it, and qcow2_writeback writes refcount blocks and flushes
 *    before it writes any L2 table, and L2 tables before the L1 table.
 *  - A refcount is lowered only after the reference is gone from disk:
 *    frees are queued (qcow2_free_deferred) and applied by the write-back
 *    after the L2/L1 tables that dropped them were written and flushed.
 *  - A new refcount table is written and flushed before the header points
 *    at it; the old table is freed afterwards.
 * A crash can therefore leak clusters but never leave a reference to a
 * cluster whose refcount is 0.
 * SPDX-License-Identifier: MIT
 */
#include <stdio.h>

#include "qcow2.h"

/* ---- metadata location set (for overlap checks) ---- */

static uint64_t rb_covered_bytes(const struct qcow2 *s)
{
    return 1ull << (s->rb_bits + s->cluster_bits);
}

int qcow2_load_refcount_table(struct qcow2 *s, char *err)
{
    size_t bytes = (size_t)s->rt_entries * 8;
    CLEANUP_FREE uint8_t *buf = fq_memalign(bytes);
    int r;

    if (!buf)
        return -ENOMEM;
    qcow2_rt_damage_clear(s);
    s->rt = calloc(s->rt_entries, sizeof(uint64_t));
    if (!s->rt)
        return -ENOMEM;
    r = fq_bdev_pread_sync(s->file, buf, bytes, s->rt_offset);
    if (r < 0) {
        fq_seterr(err, "Could not read the refcount table at 0x%llx: %s",
                  (unsigned long long)s->rt_offset, strerror(-r));
        return r;
    }
    for (uint64_t i = 0; i < s->rt_entries; i++) {
        uint64_t raw = fq_be64(buf + i * 8), e = raw & RTE_OFFSET_MASK;
        /* reserved bits are ignored (check reports them); an entry that
         * names no usable block is set aside (damage.c): the image opens,
         * and only what needs the refcounts it counts fails */
        if ((e & (s->cluster_size - 1)) || e > (1ull << 56)) {
            if ((r = qcow2_rt_damage_note(s, i, raw)) < 0)
                return r;
            e = 0;
            s->rt_hi = i + 1;
        }
        s->rt[i] = e;
        if (e)
            s->rt_hi = i + 1;
        s->meta_gen++;
    }
    return 0;
}

/* ---- refcount block entries of any width ---- */

uint64_t qcow2_rc_entry(const uint8_t *blk, unsigned bits, uint64_t i)
{
    switch (bits) {
    case 64: return fq_be64(blk + i * 8);
    case 32: return fq_be32(blk + i * 4);
    case 16: return fq_be16(blk + i * 2);
    case 8: return blk[i];
    default: {
        /* below 8 bits, entry i sits at bit (i * bits) % 8 of byte
         * i * bits / 8, as the format says */
        uint64_t bit = i * bits;
        return (blk[bit / 8] >> (bit % 8)) & ((1u << bits) - 1);
    }
    }
}

void qcow2_rc_set_entry(uint8_t *blk, unsigned bits, uint64_t i, uint64_t v)
{
    switch (bits) {
    case 64: fq_put_be64(blk + i * 8, v); break;
    case 32: fq_put_be32(blk + i * 4, (uint32_t)v); break;
    case 16: fq_put_be16(blk + i * 2, (uint16_t)v); break;
    case 8: blk[i] = (uint8_t)v; break;
    default: {
        uint64_t bit = i * bits;
        uint8_t mask = (uint8_t)(((1u << bits) - 1) << (bit % 8));
        blk[bit / 8] = (uint8_t)((blk[bit / 8] & ~mask) | ((v << (bit % 8)) & mask));
    }
    }
}

static uint64_t rb_entry_get(const struct qcow2 *s, const uint8_t *blk, uint64_t i)
{
    return qcow2_rc_entry(blk, s->refcount_bits, i);
}

static void rb_entry_set(const struct qcow2 *s, uint8_t *blk, uint64_t i, uint64_t v)
{
    qcow2_rc_set_entry(blk, s->refcount_bits, i, v);
}

/* Load the refcount block for table index `ri`; NULL entry if none. */
static int get_block(struct qcow2 *s, uint64_t ri, struct qcache_entry **out)
{
    *out = NULL;
    if (ri >= s->rt_entries)
        return 0;
    if (s->rt[ri] == 0)
        return s->rt_bad.len && qcow2_rt_bad(s, ri, NULL) ? qcow2_rt_bad_fail(s, ri) : 0;
    return qcache_get(&s->rb_cache, s->rt[ri], false, out);
}

int qcow2_get_refcount(struct qcow2 *s, uint64_t cluster, uint64_t *out)
{
    struct qcache_entry *e;
    int r = get_block(s, cluster >> s->rb_bits, &e);

    if (r < 0)
        return r;
    *out = e ? rb_entry_get(s, e->data, cluster & ((1ull << s->rb_bits) - 1)) : 0;
    qcache_put(&s->rb_cache, e);
    return 0;
}

/* Set refcounts of clusters [c, c+n) that all lie in covered blocks. */
static int update_covered(struct qcow2 *s, uint64_t c, uint64_t n, int64_t delta)
{
    uint64_t mask = (1ull << s->rb_bits) - 1;

    while (n > 0) {
        struct qcache_entry *e;
        uint64_t ri = c >> s->rb_bits;
        int r = get_block(s, ri, &e);
        if (r < 0)
            return r;
        if (!e) {
            qcow2_signal_corruption(s, "refcount block for cluster %llu is missing",
                                    (unsigned long long)c);
            return -EIO;
        }
        uint64_t i = c & mask, k = FQ_MIN(n, mask + 1 - i);
        for (uint64_t j = 0; j < k; j++) {
            uint64_t v = rb_entry_get(s, e->data, i + j);
            if ((delta < 0 && v < (uint64_t)-delta) ||
                (delta > 0 && s->refcount_max - v < (uint64_t)delta)) {
                /* undo what this block got so far */
                for (uint64_t u = 0; u < j; u++)
                    rb_entry_set(s, e->data, i + u, rb_entry_get(s, e->data, i + u) - (uint64_t)delta);
                qcache_put(&s->rb_cache, e);
                if (delta < 0) {
                    qcow2_signal_corruption(s, "refcount of cluster %llu would drop below 0",
                                            (unsigned long long)(c + j));
                    return -EIO;
                }
                return -ERANGE;
            }
            v += (uint64_t)delta;
            rb_entry_set(s, e->data, i + j, v);
            if (v == 0 && c + j < s->free_hint)
                s->free_hint = c + j;
            /* a freed cluster can no longer take compressed data */
            if (v == 0 && s->comp_next && (s->comp_next >> s->cluster_bits) == c + j)
                s->comp_next = 0;
        }
        qcache_mark_dirty(e);
        qcache_put(&s->rb_cache, e);
        c += k;
        n -= k;
    }
    return 0;
}

int qcow2_update_refcount(struct qcow2 *s, uint64_t off, uint64_t n, int64_t delta)
{
    uint64_t c = off >> s->cluster_bits;
    int r = update_covered(s, c, n, delta);

    /* a freed metadata cluster must not be written back later; one still
     * referenced (a table a snapshot shared) keeps its cached changes */
    for (uint64_t i = 0; r == 0 && delta < 0 && i < n; i++) {
        uint64_t v;
        if (qcow2_get_refcount(s, c + i, &v) == 0 && v == 0) {
            qcache_discard(&s->l2_cache, off + i * s->cluster_size);
            qcache_discard(&s->rb_cache, off + i * s->cluster_size);
        }
    }
    return r;
}

/* ---- growth ---- */

/* First cluster index past every cluster with a non-zero refcount (what
 * the refcounts say is in use is all that is in use), in *out. A block
 * that cannot be read fails it: what it counts might be in use. */
static int end_cluster(struct qcow2 *s, uint64_t *out)
{
    *out = 1;
    for (uint64_t ri = s->rt_entries; ri-- > 0;) {
        struct qcache_entry *e;
        if (!s->rt[ri] && !qcow2_rt_bad(s, ri, NULL))
            continue;
        int r = get_block(s, ri, &e);
        if (r < 0)
            return r;
        if (!e)
            continue;
        uint64_t base = ri << s->rb_bits, end = 0;
        for (uint64_t i = 1ull << s->rb_bits; i-- > 0;)
            if (rb_entry_get(s, e->data, i)) {
                end = base + i + 1;
                break;
            }
        qcache_put(&s->rb_cache, e);
        if (end) {
            *out = end;
            return 0;
        }
    }
    return 0;
}

static int write_refcount_table(struct qcow2 *s);

/* Does a refcount block in [first, last] (table indexes) have a write
 * of the asynchronous write-back in flight? */
static bool blocks_in_flight(struct qcow2 *s, uint64_t first, uint64_t last)
{
    for (uint64_t ri = first; ri <= last && ri < s->rt_entries; ri++)
        if (s->rt[ri] && qcache_writing(&s->rb_cache, s->rt[ri]))
            return true;
    return false;
}

/* Forget the new refcount blocks of table indexes [first, end) that a
 * growth that failed put in the cache (nothing on disk points at them). */
static void drop_new_blocks(struct qcow2 *s, const uint64_t *nrt, uint64_t first, uint64_t end)
{
    for (uint64_t ri = first; ri < end; ri++)
        if (nrt[ri] && !(ri < s->rt_entries && s->rt[ri] == nrt[ri]))
            qcache_discard(&s->rb_cache, nrt[ri]);
}

/* Replace the refcount table by one of at least `min_entries` entries,
 * placed past the end of the image together with any refcount blocks that
 * must cover it.
 * While an asynchronous write-back is in flight (a synchronous caller:
 * compressed writes) it cannot write back everything: it writes only the
 * blocks that cover the new table, the table and the header, placing the
 * table past any block whose write is in flight, and frees the old table
 * deferred (the write-back in flight may still be writing it). */
static int grow_refcount_table_now(struct qcow2 *s, uint64_t min_entries)
{
    uint64_t cs = s->cluster_size, max_entries = QCOW2_MAX_RT_BYTES / 8;
    uint64_t want = FQ_MAX(min_entries, s->rt_entries + s->rt_entries / 2 + 1);
    uint64_t T, tc, nb = 0, nentries;
    bool narrow = s->wb != NULL;
    int r = end_cluster(s, &T);

    if (r < 0)
        return r;

    for (;;) {
        tc = FQ_DIV_UP(want * 8, cs);
        nentries = tc * cs / 8;
        /* count refcount blocks needed to cover [T, T + tc + nb) */
        uint64_t needed;
        for (;;) {
            uint64_t first = T >> s->rb_bits, last = (T + tc + nb - 1) >> s->rb_bits;
            needed = 0;
            for (uint64_t ri = first; ri <= last; ri++)
                if (ri >= s->rt_entries || s->rt[ri] == 0)
                    needed++;
            if (needed == nb)
                break;
            nb = needed;
        }
        uint64_t last = (T + tc + nb - 1) >> s->rb_bits;
        if (narrow && blocks_in_flight(s, T >> s->rb_bits, last)) {
            /* start where no block exists yet */
            uint64_t ri = (T >> s->rb_bits) + 1;
            while (ri < s->rt_entries && s->rt[ri])
                ri++;
            T = ri << s->rb_bits;
            nb = 0;
            continue;
        }
        if (last < nentries)
            break;
        want = last + 1;
    }
    if (nentries > max_entries) {
        qcow2_signal_corruption(s, "refcount table would exceed %u bytes", QCOW2_MAX_RT_BYTES);
        return -EFBIG;
    }

    uint64_t *nrt = calloc(nentries, sizeof(uint64_t));
    if (!nrt)
        return -ENOMEM;
    memcpy(nrt, s->rt, s->rt_entries * sizeof(uint64_t));
    uint64_t k = 0, first = T >> s->rb_bits, lastri = (T + tc + nb - 1) >> s->rb_bits;
    for (uint64_t ri = first; ri <= lastri; ri++) {
        if (ri < s->rt_entries && s->rt[ri])
            continue;
        nrt[ri] = (T + tc + k) * cs;
        s->meta_gen++;
        s->rt_hi = FQ_MAX(s->rt_hi, ri + 1);
        struct qcache_entry *e;
        r = qcache_get(&s->rb_cache, nrt[ri], true, &e);
        if (r < 0) {
            drop_new_blocks(s, nrt, first, ri);
            free(nrt);
            return r;
        }
        qcache_put(&s->rb_cache, e);
        k++;
    }
    uint64_t old_off = s->rt_offset, old_clusters = s->rt_clusters, old_entries = s->rt_entries;
    uint64_t *old_rt = s->rt;
    bool old_rt_dirty = s->rt_dirty, old_header_dirty = s->header_dirty;
    s->rt = nrt;
    qcow2_meta_changed(s);
    s->rt_entries = nentries;
    s->rt_offset = T * cs;
    s->rt_clusters = (uint32_t)tc;
    s->rt_dirty = true;
    s->header_dirty = true;
    r = update_covered(s, T, tc + nb, 1);
    if (r < 0) {
        /* back to the old table, nothing of the new one kept (a raise
         * already made in an old block is a leak at worst) */
        s->rt = old_rt;
        s->rt_entries = old_entries;
        s->rt_offset = old_off;
        s->rt_clusters = (uint32_t)old_clusters;
        s->rt_dirty = old_rt_dirty;
        s->header_dirty = old_header_dirty;
        drop_new_blocks(s, nrt, first, lastri + 1);
        qcow2_meta_changed(s);
        free(nrt);
        return r;
    }
    free(old_rt);
    if (narrow) {
        s->stats.narrow_grows++;
        /* the blocks covering the new table, the table, then the header */
        for (uint64_t ri = first; ri <= lastri; ri++)
            if ((r = qcache_write_one(&s->rb_cache, nrt[ri])) < 0)
                return r;
        if ((r = write_refcount_table(s)) < 0 || (r = qcow2_flush_file(s)) < 0 ||
            (r = qcow2_write_header(s)) < 0 || (r = qcow2_flush_file(s)) < 0)
            return r;
        s->rt_dirty = false;
        s->header_dirty = false;
        return qcow2_free_deferred(s, old_off, old_clusters);
    }
    /* Persist in order: blocks, table, then the header switch. */
    r = qcow2_writeback(s);
    if (r < 0)
        return r;
    /* The old table's clusters may be handed out again as soon as they are
     * freed: the header that stopped pointing at them must be durable. */
    if ((r = fq_bdev_flush_sync(s->file)) < 0)
        return r;
    s->flush_owed = false;
    return qcow2_update_refcount(s, old_off, old_clusters, -1);
}

/* Growth runs synchronously (it is rare); a request's asynchronous step
 * waits for a write-back in flight first. */
static int grow_refcount_table(struct qcow2 *s, uint64_t min_entries)
{
    struct qmeta_wait *aw = s->aw;
    uint64_t old_offset = s->rt_offset;
    int r;

    if (aw && s->wb)
        return qcow2_wb_evict(s, &aw->w);
    s->aw = NULL;
    r = grow_refcount_table_now(s, min_entries);
    s->aw = aw;
    if (r < 0 && s->rt_offset != old_offset && !s->corrupt) {
        /* failed after the switch in memory: what is cached no longer
         * matches the disk, whose last durable state is sound; nothing
         * more is written (in memory only: refuse further writes) */
        s->corrupt = true;
        fprintf(stderr, "fastqcow: %s: the refcount table could not grow: %s; further writes "
                "refused\n", s->bs->filename ? s->bs->filename : "qcow2", strerror(-r));
    }
    return r;
}

/* ---- allocation ---- */

/* Find n contiguous clusters with refcount 0, starting at the hint. */
static int find_free_run(struct qcow2 *s, uint64_t n, uint64_t *out)
{
    uint64_t c = FQ_MAX(s->free_hint, (uint64_t)1), run = 0, start = c;
    uint64_t mask = (1ull << s->rb_bits) - 1;

    for (;;) {
        uint64_t ri = c >> s->rb_bits;
        if (ri >= s->rt_entries || (s->rt[ri] == 0 && !qcow2_rt_bad(s, ri, NULL))) {
            /* an uncovered range is entirely free */
            uint64_t k = (mask + 1) - (c & mask);
            if (run == 0)
                start = c;
            run += k;
            c += k;
        } else {
            struct qcache_entry *e;
            int r = get_block(s, ri, &e);
            if (r < 0)
                return r;
            for (uint64_t i = c & mask; i <= mask; i++, c++) {
                if (rb_entry_get(s, e->data, i)) {
                    run = 0;
                    continue;
                }
                if (run == 0)
                    start = c;
                if (++run >= n)
                    break;
            }
            qcache_put(&s->rb_cache, e);
        }
        if (run >= n) {
            *out = start;
            return 0;
        }
        if (c >= (1ull << (56 - s->cluster_bits)))
            return -ENOSPC;
    }
}

/* Refcount blocks missing to cover clusters [c, c + n). */
static uint64_t blocks_missing(struct qcow2 *s, uint64_t c, uint64_t n)
{
    uint64_t k = 0;

    for (uint64_t ri = c >> s->rb_bits; ri <= (c + n - 1) >> s->rb_bits; ri++)
        if (ri >= s->rt_entries || s->rt[ri] == 0)
            k++;
    return k;
}

/* An allocation failed after placing refcount blocks of its own (at
 * clusters [b, b + k)) in the table: take them out again, so that the
 * table never names a block whose own refcount may not have been raised
 * (raises already made elsewhere are leaks at worst). */
static void drop_alloc_blocks(struct qcow2 *s, uint64_t first_ri, uint64_t last_ri, uint64_t b, uint64_t k)
{
    uint64_t lo = b << s->cluster_bits, hi = (b + k) << s->cluster_bits;

    for (uint64_t ri = first_ri; ri <= last_ri && ri < s->rt_entries; ri++) {
        if (s->rt[ri] >= lo && s->rt[ri] < hi) {
            qcache_discard(&s->rb_cache, s->rt[ri]);
            s->rt[ri] = 0;
        }
    }
    if (k)
        qcow2_meta_changed(s);
}

/* Allocation: find a free run for the data plus any refcount blocks needed
 * to cover it; the new blocks go right after the data (inside the run), so
 * a run may span ranges of several blocks and stays contiguous. */
int qcow2_alloc_clusters(struct qcow2 *s, uint64_t n, uint64_t *out)
{
    uint64_t c, nb = 0;
    int r;

    if (n == 0)
        return -EINVAL;
    for (;;) {
        r = find_free_run(s, n + nb, &c);
        if (r < 0)
            return r;
        uint64_t need = blocks_missing(s, c, n + nb);
        if (need > nb) {
            nb = need;
            continue;
        }
        uint64_t last_ri = (c + n + nb - 1) >> s->rb_bits;
        if (last_ri >= s->rt_entries) {
            r = grow_refcount_table(s, last_ri + 1);
            if (r < 0)
                return r;
            nb = 0;
            continue;      /* the new table took clusters: search again */
        }
        break;
    }
    uint64_t k = 0, first_ri = c >> s->rb_bits, last_ri = (c + n + nb - 1) >> s->rb_bits;
    for (uint64_t ri = first_ri; ri <= last_ri; ri++) {
        if (s->rt[ri])
            continue;
        struct qcache_entry *e;
        uint64_t boff = (c + n + k) << s->cluster_bits;
        r = qcache_get(&s->rb_cache, boff, true, &e);
        if (r < 0) {
            drop_alloc_blocks(s, first_ri, last_ri, c + n, k);
            return r;
        }
        qcache_put(&s->rb_cache, e);
        s->rt[ri] = boff;
        qcow2_meta_added(s, boff, true);
        s->rt_hi = FQ_MAX(s->rt_hi, ri + 1);
        s->rt_dirty = true;
        k++;
    }
    if (qcow2_overlaps_metadata(s, c << s->cluster_bits, n << s->cluster_bits)) {
        qcow2_signal_corruption(s, "free cluster %llu overlaps metadata (refcounts are wrong)",
                                (unsigned long long)c);
        return -EIO;
    }
    r = update_covered(s, c, n + k, 1);
    if (r < 0) {
        drop_alloc_blocks(s, first_ri, last_ri, c + n, k);
        return r;
    }
    if (c == s->free_hint || s->free_hint < 1)
        s->free_hint = c + n + k;
    *out = c << s->cluster_bits;
    return 0;
}

/* Host offset just past the last cluster whose refcount is not 0. */
static int used_end(struct qcow2 *s, uint64_t *out)
{
    *out = 0;
    for (uint64_t ri = FQ_MIN(s->rt_hi, s->rt_entries); ri-- > 0;) {
        struct qcache_entry *e;
        if (qcow2_rt_bad(s, ri, NULL))
            return -EIO;      /* unknown: nothing is extended (and nothing marked) */
        int r = get_block(s, ri, &e);
        if (r < 0)
            return r;
        if (!e)
            continue;
        for (uint64_t i = 1ull << s->rb_bits; i-- > 0;)
            if (rb_entry_get(s, e->data, i)) {
                *out = ((ri << s->rb_bits) + i + 1) << s->cluster_bits;
                break;
            }
        qcache_put(&s->rb_cache, e);
        if (*out)
            return 0;
    }
    return 0;
}

void qcow2_extend_ahead(struct qcow2 *s, uint64_t start, uint64_t end)
{
    uint64_t cs = s->cluster_size, used;

    /* one allocating write at a time gains nothing (one extending write
     * is as fast as a write into allocated blocks, and costs no call):
     * extend only while others are in flight */
    if (s->ahead_off || !s->file->growable || end <= s->ahead_end || !s->allocs ||
        qcow2_has_data_file(s))
        return;         /* (data clusters in a data file: nothing to extend here) */
    if (!s->ahead_base) {
        int64_t flen = s->file->ops->file_length ? s->file->ops->file_length(s->file) : -1;
        if (flen <= 0) {
            s->ahead_off = true;
            return;
        }
        s->ahead_base = s->ahead_end = FQ_ALIGN_UP((uint64_t)flen, cs);
        if (end <= s->ahead_end)
            return;
    }
    /* Only past every cluster whose refcount is not 0 (but the caller's
     * fresh clusters [start, end), not written yet): whatever may hold
     * live data (in flight, in the cache or on disk) has a reference, so
     * what lies past them and past earlier extensions is free. */
    if (used_end(s, &used) < 0) {
        s->ahead_off = true;
        return;
    }
    /* steps of an eighth of the file, 1 to 64 MiB: few calls, little
     * left to cut at close */
    uint64_t step = FQ_ALIGN_UP(FQ_MIN(FQ_MAX(s->ahead_end / 8, 1ull << 20), 64ull << 20), cs);
    uint64_t from = FQ_MAX(s->ahead_end, used), to = FQ_ALIGN_UP(end, cs) + step;
    if (used == end)
        from = FQ_MAX(s->ahead_end, start);   /* [start, end) is the caller's, unwritten */
    struct fq_req zr = { .op = FQ_OP_WRITE_ZEROES, .off = from, .len = to - from,
                         .tag = FQ_TAG_OTHER_META };
    if (s->file->ops->io_sync(s->file, &zr) < 0) {
        s->ahead_off = true;     /* not supported here, or no space: plain writes */
        return;
    }
    s->ahead_end = to;
}

void qcow2_trim_ahead(struct qcow2 *s)
{
    uint64_t end;

    if (!s->ahead_base || s->ahead_end <= s->ahead_base || used_end(s, &end) < 0 || !end)
        return;
    end = FQ_MAX(end, s->ahead_base);
    if (end < s->ahead_end && s->file->ops->truncate)
        s->file->ops->truncate(s->file, end);
}

int qcow2_free_deferred(struct qcow2 *s, uint64_t off, uint64_t n)
{
    struct qfree f = { off, n };

    if (s->pending_frees.len) {
        struct qfree *last = &s->pending_frees.ptr[s->pending_frees.len - 1];
        if (last->offset + last->nb_clusters * s->cluster_size == off) {
            last->nb_clusters += n;
            return 0;
        }
    }
    return qfree_vec_push(&s->pending_frees, f);
}

/* ---- write-back ---- */

void qcow2_mark_l1_dirty(struct qcow2 *s, uint64_t index)
{
    s->l1_dirty[(index * 8) / 4096] = 1;
    qcow2_meta_added(s, s->l1[index] & L1E_OFFSET_MASK, false);
}

int qcow2_write_l1_dirty(struct qcow2 *s)
{
    uint64_t bytes = (uint64_t)s->l1_size * 8, chunks = FQ_DIV_UP(bytes, 4096);
    uint8_t *buf = NULL;

    for (uint64_t i = 0; i < chunks; i++) {
        if (!s->l1_dirty[i])
            continue;
        if (!buf && !(buf = fq_memalign(4096)))
            return -ENOMEM;
        uint64_t n = FQ_MIN((uint64_t)4096, bytes - i * 4096);
        for (uint64_t j = 0; j < n / 8; j++)
            fq_put_be64(buf + j * 8, s->l1[i * 512 + j]);
        int r = qcow2_check_meta_write(s, s->l1_offset + i * 4096, n, FQ_TAG_L1);
        if (r == 0)
            r = fq_bdev_pwrite_tagged(s->file, buf, (size_t)n, s->l1_offset + i * 4096, FQ_TAG_L1);
        if (r < 0) {
            free(buf);
            return r;
        }
        s->l1_dirty[i] = 0;
    }
    free(buf);
    return 0;
}

static bool l1_has_dirty(struct qcow2 *s)
{
    uint64_t chunks = FQ_DIV_UP((uint64_t)s->l1_size * 8, 4096);

    for (uint64_t i = 0; i < chunks; i++)
        if (s->l1_dirty[i])
            return true;
    return false;
}

static int write_refcount_table(struct qcow2 *s)
{
    size_t bytes = (size_t)s->rt_clusters * s->cluster_size;
    CLEANUP_FREE uint8_t *buf = fq_zalign(bytes);

    if (!buf)
        return -ENOMEM;
    for (uint64_t i = 0; i < s->rt_entries; i++)
        fq_put_be64(buf + i * 8, qcow2_rt_disk_entry(s, i));
    int r = qcow2_check_meta_write(s, s->rt_offset, bytes, FQ_TAG_REFTABLE);
    if (r < 0)
        return r;
    return fq_bdev_pwrite_tagged(s->file, buf, bytes, s->rt_offset, FQ_TAG_REFTABLE);
}

/* Flush the data file (if apart) and the file; a success pays any flush
 * owed (see flush_owed). */
int qcow2_flush_file(struct qcow2 *s)
{
    int r = qcow2_data_flush(s);

    if (r == 0)
        r = fq_bdev_flush_sync(s->file);
    if (r == 0)
        s->flush_owed = false;
    return r;
}

int qcow2_sync_meta(struct qcow2 *s)
{
    int r = qcow2_writeback(s);

    return r < 0 ? r : qcow2_flush_file(s);
}

/* Write back in dependency order. A flush that failed promises nothing
 * about the writes before it, so whether one is owed is kept across calls
 * (flush_owed) rather than inferred from what this call wrote. */
int qcow2_writeback(struct qcow2 *s)
{
    int r;

    if (s->readonly)
        return 0;
    if (s->wb)
        return -EBUSY;   /* never beside the asynchronous one (wb.c) */
    for (int round = 0; round < 2; round++) {
        bool rb = qcache_has_dirty(&s->rb_cache);
        bool tables = qcache_has_dirty(&s->l2_cache) || l1_has_dirty(s);

        if (rb) {
            r = qcache_write_dirty(&s->rb_cache);
            if (r < 0)
                return r;
        }
        if (s->rt_dirty || s->header_dirty) {
            if (s->flush_owed && (r = qcow2_flush_file(s)) < 0)
                return r;
            if (s->rt_dirty) {
                r = write_refcount_table(s);
                if (r < 0)
                    return r;
                s->rt_dirty = false;
            }
            if ((r = qcow2_flush_file(s)) < 0)
                return r;
            if (s->header_dirty) {
                if ((r = qcow2_write_header(s)) < 0)
                    return r;
                s->flush_owed = true;   /* before the tables */
            }
        }
        if (tables) {
            if (s->flush_owed && (r = qcow2_flush_file(s)) < 0)
                return r;
            r = qcache_write_dirty(&s->l2_cache);
            if (r < 0)
                return r;
            if (l1_has_dirty(s)) {
                if ((r = qcow2_flush_file(s)) < 0)
                    return r;
                r = qcow2_write_l1_dirty(s);
                if (r < 0)
                    return r;
            }
        }
        /* Frees become safe once the tables that dropped the clusters are
         * durable, and no data write may still land in them. */
        if (round > 0 || s->pending_frees.len == 0 || s->data_inflight)
            break;
        if ((r = qcow2_flush_file(s)) < 0)
            return r;
        struct qfree_vec v = s->pending_frees;
        memset(&s->pending_frees, 0, sizeof(s->pending_frees));
        for (size_t i = 0; i < v.len; i++) {
            r = qcow2_update_refcount(s, v.ptr[i].offset, v.ptr[i].nb_clusters, -1);
            if (r < 0) {
                qfree_vec_reset(&v);
                return r;
            }
        }
        qfree_vec_reset(&v);
        /* second round writes the lowered refcounts */
    }
    return 0;
}

/* Exposed for growth of the image: bytes one refcount block covers. */
uint64_t qcow2_rb_covered_bytes(const struct qcow2 *s);
uint64_t qcow2_rb_covered_bytes(const struct qcow2 *s)
{
    return rb_covered_bytes(s);
}
