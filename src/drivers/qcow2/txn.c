/* txn.c: metadata transactions: new metadata built in free space and
 * switched in by one write of the header's first sector.
 *
 * Some changes cannot be made in place in any order that keeps the image
 * valid at every step: taking a snapshot raises the refcount of clusters
 * whose active L2 entries carry the COPIED flag (set exactly where the
 * refcount is 1), and a refcount block and an L2 table are different
 * clusters, so one of the two always reaches the disk first. A
 * transaction makes such a change without writing over anything the
 * header on disk reaches:
 *
 *  - refcount changes go to copies of the refcount blocks they touch (a
 *    block is copied the first time one of its refcounts changes, into a
 *    free cluster), named by a new refcount table;
 *  - changed L2 tables, new L1 tables and a new snapshot table are written
 *    to free clusters by the caller (qtx_write);
 *  - every cluster it writes has refcount 0 on disk and in the new
 *    refcounts, and allocation only moves forward: a cluster the
 *    transaction frees (its refcount on disk is not 0) is never reused
 *    by it;
 *  - qtx_commit writes the new blocks and table, flushes, and switches
 *    with one header write: the L1 table, the refcount table, the snapshot
 *    table and the virtual size are all in its first 512 bytes, which a
 *    disk writes atomically (qcow2_write_header keeps the rest of the
 *    header cluster as it is, or orders its writes so that both headers
 *    read right, see header.c), then flushes.
 *
 * Before the switch the image on disk is the old one; what the
 * transaction wrote is free space (refcount 0, referenced by nothing: not
 * even a leak). After it, the new one, with exact refcounts: the clusters
 * only the old metadata used have refcount 0 in the new blocks. A crash,
 * a power loss (writes reordered since the last flush) or a failed write
 * leaves one or the other.
 *
 * Memory is bounded by the format's limits (the new refcount table, at
 * most 8 MiB, L1 copies made by the callers) and a small cache of new
 * blocks (written to their new clusters when evicted); L2 tables are read
 * through the driver's cache, which stays clean.
 * SPDX-License-Identifier: MIT
 */
#include <stdio.h>

#include "ops.h"
#include "txn.h"

/* New blocks may be written at any time: nothing points at them until
 * the switch. */
static const struct qcache_hooks new_rb_hooks = {
    .what = "refcount block", .tag = FQ_TAG_REFBLOCK, .check_write = qcow2_check_meta_write,
};

int qtx_begin(struct qcow2 *s, struct qtx *tx)
{
    uint64_t cs = s->cluster_size;
    int r;

    memset(tx, 0, sizeof(*tx));
    tx->s = s;
    /* new structures are built from the old refcounts: all must be sound */
    if ((r = qcow2_rt_damage_guard(s)) < 0)
        return r;
    tx->low_free = UINT64_MAX;
    tx->hint = FQ_MAX(s->free_hint, (uint64_t)1);
    if ((r = qcow2_sync_meta(s)) < 0)
        return r;
    int64_t flen = s->file->ops->file_length ? s->file->ops->file_length(s->file)
                                             : (int64_t)s->file->size;
    tx->flen0 = flen > 0 ? (uint64_t)flen : 0;
    tx->rt_entries = s->rt_entries;
    tx->rt = malloc(FQ_MAX(tx->rt_entries, (uint64_t)1) * sizeof(uint64_t));
    tx->own = calloc(FQ_MAX(tx->rt_entries, (uint64_t)1), 1);
    if (!tx->rt || !tx->own) {
        qtx_abort(tx);
        return -ENOMEM;
    }
    memcpy(tx->rt, s->rt, tx->rt_entries * sizeof(uint64_t));
    /* as many blocks as the driver caches, at most 16 MiB of them */
    size_t n = (size_t)FQ_MIN((uint64_t)s->rb_cache.target, FQ_MAX((16ull << 20) / cs, (uint64_t)8));
    if ((r = qcache_init(&tx->rb, s, n, 0, &new_rb_hooks)) < 0) {
        qtx_abort(tx);
        return r;
    }
    return 0;
}

void qtx_abort(struct qtx *tx)
{
    struct qcow2 *s = tx->s;

    if (tx->rb.hash)
        qcache_destroy(&tx->rb);   /* the new blocks are not written */
    free(tx->rt);
    free(tx->own);
    qtx_ops_reset(&tx->todo);
    tx->rt = NULL;
    tx->own = NULL;
    /* what was written past the old end is referenced by nothing */
    if (s && tx->flen0 && s->file->ops->truncate && s->file->ops->file_length &&
        s->file->ops->file_length(s->file) > (int64_t)tx->flen0)
        (void)s->file->ops->truncate(s->file, tx->flen0);
}

/* Make the new table hold at least `need` entries. */
static int grow_rt(struct qtx *tx, uint64_t need)
{
    uint64_t max = QCOW2_MAX_RT_BYTES / 8;

    if (need <= tx->rt_entries)
        return 0;
    if (need > max)
        return -EFBIG;
    uint64_t n = FQ_MIN(max, FQ_MAX(need, tx->rt_entries + tx->rt_entries / 2 + 16));
    uint64_t *nrt = realloc(tx->rt, n * sizeof(uint64_t));
    if (!nrt)
        return -ENOMEM;
    tx->rt = nrt;
    uint8_t *nown = realloc(tx->own, n);
    if (!nown)
        return -ENOMEM;
    tx->own = nown;
    memset(tx->rt + tx->rt_entries, 0, (n - tx->rt_entries) * sizeof(uint64_t));
    memset(tx->own + tx->rt_entries, 0, n - tx->rt_entries);
    tx->rt_entries = n;
    return 0;
}

int qtx_rc(struct qtx *tx, uint64_t c, uint64_t *out)
{
    struct qcow2 *s = tx->s;
    uint64_t ri = c >> s->rb_bits;

    if (ri < tx->rt_entries && tx->own[ri]) {
        struct qcache_entry *e;
        int r = qcache_get(&tx->rb, tx->rt[ri], false, &e);
        if (r < 0)
            return r;
        *out = qcow2_rc_entry(e->data, s->refcount_bits, c & ((1ull << s->rb_bits) - 1));
        qcache_put(&tx->rb, e);
        return 0;
    }
    return qcow2_get_refcount(s, c, out);
}

/* First run of n clusters from the hint with refcount 0 on disk and in
 * the new refcounts; the hint moves past it. Refcounts are not changed. */
static int find_free(struct qtx *tx, uint64_t n, uint64_t *out)
{
    struct qcow2 *s = tx->s;
    uint64_t c = tx->hint, run = 0, start = c, limit = 1ull << (56 - s->cluster_bits);

    while (run < n) {
        uint64_t v;
        int r;
        if (c >= limit)
            return -ENOSPC;
        if ((r = qcow2_get_refcount(s, c, &v)) == 0 && v == 0)
            r = qtx_rc(tx, c, &v);
        if (r < 0)
            return r;
        if (v) {
            run = 0;
        } else if (run++ == 0) {
            start = c;
        }
        c++;
    }
    if (qcow2_overlaps_metadata(s, start << s->cluster_bits, n << s->cluster_bits)) {
        qcow2_signal_corruption(s, "free cluster %llu overlaps metadata (refcounts are wrong)",
                                (unsigned long long)start);
        return -EIO;
    }
    *out = start;
    tx->hint = start + n;
    return 0;
}

static int push(struct qtx *tx, uint64_t off, uint64_t n, int64_t delta)
{
    return qtx_ops_push(&tx->todo, (struct qtx_op){ off, n, delta });
}

/* Give refcount-table entry ri a new block of its own: a copy of the old
 * one (or zeros) in a free cluster; the new cluster gains a reference and
 * the old block loses its own (queued). */
static int own_block(struct qtx *tx, uint64_t ri)
{
    struct qcow2 *s = tx->s;
    struct qcache_entry *e, *old = NULL;
    uint64_t nb;
    int r;

    if (ri < tx->rt_entries && tx->own[ri])
        return 0;
    if ((r = grow_rt(tx, ri + 1)) < 0)
        return r;
    uint64_t prev = tx->rt[ri];
    if ((r = find_free(tx, 1, &nb)) < 0)
        return r;
    nb <<= s->cluster_bits;
    if (prev && (r = qcache_get(&s->rb_cache, prev, false, &old)) < 0)
        return r;
    if ((r = qcache_get(&tx->rb, nb, true, &e)) == 0) {
        if (old)
            memcpy(e->data, old->data, s->cluster_size);
        qcache_put(&tx->rb, e);
    }
    qcache_put(&s->rb_cache, old);
    if (r < 0)
        return r;
    tx->rt[ri] = nb;
    tx->own[ri] = 1;
    tx->changed = true;
    if ((r = push(tx, nb, 1, 1)) == 0 && prev)
        r = push(tx, prev, 1, -1);
    return r;
}

/* Apply one refcount change to the new blocks. */
static int apply(struct qtx *tx, const struct qtx_op *op)
{
    struct qcow2 *s = tx->s;
    uint64_t mask = (1ull << s->rb_bits) - 1, c = op->off >> s->cluster_bits, n = op->n;
    uint64_t mag = op->delta < 0 ? (uint64_t)-op->delta : (uint64_t)op->delta;

    while (n > 0) {
        uint64_t ri = c >> s->rb_bits;
        struct qcache_entry *e;
        int r = own_block(tx, ri);
        if (r == 0)
            r = qcache_get(&tx->rb, tx->rt[ri], false, &e);
        if (r < 0)
            return r;
        uint64_t i = c & mask, k = FQ_MIN(n, mask + 1 - i);
        for (uint64_t j = 0; j < k; j++) {
            uint64_t v = qcow2_rc_entry(e->data, s->refcount_bits, i + j);
            if (op->delta < 0 && v < mag) {
                qcache_put(&tx->rb, e);
                qcow2_signal_corruption(s, "refcount of cluster %llu would drop below 0",
                                        (unsigned long long)(c + j));
                return -EIO;
            }
            if (op->delta > 0 && s->refcount_max - v < mag) {
                qcache_put(&tx->rb, e);
                return -ERANGE;
            }
            v = op->delta < 0 ? v - mag : v + mag;
            qcow2_rc_set_entry(e->data, s->refcount_bits, i + j, v);
            if (v == 0 && c + j < tx->low_free)
                tx->low_free = c + j;
        }
        qcache_mark_dirty(e);
        qcache_put(&tx->rb, e);
        c += k;
        n -= k;
    }
    return 0;
}

/* Apply every queued change (applying one may queue more: the blocks it
 * copies gain and lose a reference). */
static int drain(struct qtx *tx)
{
    while (tx->todo.len) {
        struct qtx_op op = tx->todo.ptr[--tx->todo.len];
        int r = apply(tx, &op);
        if (r < 0)
            return r;
    }
    return 0;
}

int qtx_ref(struct qtx *tx, uint64_t off, uint64_t n, int64_t delta)
{
    int r;

    if (n == 0 || delta == 0)
        return 0;
    if ((r = push(tx, off, n, delta)) < 0)
        return r;
    return drain(tx);
}

int qtx_alloc(struct qtx *tx, uint64_t n, uint64_t *off)
{
    uint64_t c;
    int r = find_free(tx, n, &c);

    if (r < 0)
        return r;
    *off = c << tx->s->cluster_bits;
    return qtx_ref(tx, *off, n, 1);
}

int qtx_write(struct qtx *tx, const void *buf, size_t len, unsigned tag, uint64_t *off)
{
    struct qcow2 *s = tx->s;
    uint64_t nc = FQ_DIV_UP((uint64_t)len, s->cluster_size), bytes = nc * s->cluster_size;
    int r;

    *off = 0;
    if (nc == 0)
        return 0;
    if ((r = qtx_alloc(tx, nc, off)) < 0)
        return r;
    if ((r = qcow2_check_meta_write(s, *off, bytes, tag)) < 0)
        return r;
    if (bytes == len)
        return fq_bdev_pwrite_tagged(s->file, buf, len, *off, tag);
    CLEANUP_FREE uint8_t *pad = fq_zalign((size_t)bytes);
    if (!pad)
        return -ENOMEM;
    memcpy(pad, buf, len);
    return fq_bdev_pwrite_tagged(s->file, pad, (size_t)bytes, *off, tag);
}

/* ---- commit ---- */

/* Entries of the new refcount table up to the last one in use. */
static uint64_t rt_used(const struct qtx *tx)
{
    uint64_t hi = tx->rt_entries;

    while (hi && !tx->rt[hi - 1])
        hi--;
    return hi;
}

/* Place the new refcount table (it counts itself, and its clusters may
 * need new blocks: repeated until it is large enough), write the new
 * blocks and the table, flush. */
static int write_refcounts(struct qtx *tx, uint64_t *rtoff, uint64_t *rtc)
{
    struct qcow2 *s = tx->s;
    uint64_t cs = s->cluster_size;
    int r = qtx_ref(tx, s->rt_offset, s->rt_clusters, -1);

    *rtoff = *rtc = 0;
    while (r == 0) {
        uint64_t need = FQ_DIV_UP(rt_used(tx) * 8, cs);
        if (*rtc >= need)
            break;
        if (*rtc)
            r = qtx_ref(tx, *rtoff, *rtc, -1);   /* too small: never written */
        if (r == 0) {
            *rtc = need;
            r = qtx_alloc(tx, *rtc, rtoff);
        }
    }
    if (r == 0 && (uint64_t)*rtc * cs > QCOW2_MAX_RT_BYTES)
        r = -EFBIG;
    if (r == 0)
        r = qcache_write_dirty(&tx->rb);
    if (r < 0)
        return r;
    uint64_t bytes = *rtc * cs, n = FQ_MIN(rt_used(tx), bytes / 8);
    CLEANUP_FREE uint8_t *buf = fq_zalign((size_t)bytes);
    if (!buf)
        return -ENOMEM;
    for (uint64_t i = 0; i < n; i++)
        fq_put_be64(buf + i * 8, tx->rt[i]);
    if ((r = qcow2_check_meta_write(s, *rtoff, bytes, FQ_TAG_REFTABLE)) == 0)
        r = fq_bdev_pwrite_tagged(s->file, buf, (size_t)bytes, *rtoff, FQ_TAG_REFTABLE);
    /* resize the table in memory to what was written */
    if (r == 0 && bytes / 8 != tx->rt_entries) {
        uint64_t *nrt = realloc(tx->rt, (size_t)bytes);
        if (!nrt)
            return -ENOMEM;
        if (bytes / 8 > tx->rt_entries)
            memset(nrt + tx->rt_entries, 0, (size_t)(bytes / 8 - tx->rt_entries) * 8);
        tx->rt = nrt;
        tx->rt_entries = bytes / 8;
    }
    return r;
}

/* The state the header describes, to switch and to switch back. */
struct hstate {
    uint64_t *l1;
    uint8_t *l1_dirty;
    uint64_t l1_offset;
    uint32_t l1_size;
    uint64_t *rt, rt_offset, rt_entries, rt_hi;
    uint32_t rt_clusters, nb_snapshots;
    uint64_t snapshots_offset, size;
};

static void hstate_get(struct qcow2 *s, struct hstate *h)
{
    *h = (struct hstate){ s->l1, s->l1_dirty, s->l1_offset, s->l1_size, s->rt, s->rt_offset,
                          s->rt_entries, s->rt_hi, s->rt_clusters, s->nb_snapshots,
                          s->snapshots_offset, s->bs->size };
}

static void hstate_set(struct qcow2 *s, const struct hstate *h)
{
    s->l1 = h->l1;
    s->l1_dirty = h->l1_dirty;
    s->l1_offset = h->l1_offset;
    s->l1_size = h->l1_size;
    s->rt = h->rt;
    s->rt_offset = h->rt_offset;
    s->rt_entries = h->rt_entries;
    s->rt_hi = h->rt_hi;
    s->rt_clusters = h->rt_clusters;
    s->nb_snapshots = h->nb_snapshots;
    s->snapshots_offset = h->snapshots_offset;
    s->bs->size = h->size;
    qcow2_meta_changed(s);
}

int qtx_commit(struct qtx *tx, const struct qtx_switch *sw, char *err)
{
    struct qcow2 *s = tx->s;
    struct hstate old, nw;
    uint64_t rtoff = 0, rtc = 0;
    int r = 0;

    if (tx->changed)
        r = write_refcounts(tx, &rtoff, &rtc);
    if (r == 0)
        r = qcow2_flush_file(s);
    uint64_t *nl1 = calloc(FQ_MAX(sw->l1_size, 1u), sizeof(uint64_t));
    uint8_t *ndirty = calloc(FQ_DIV_UP((uint64_t)sw->l1_size * 8, 4096) + 1, 1);
    if (r == 0 && (!nl1 || !ndirty))
        r = -ENOMEM;
    if (r < 0) {
        free(nl1);
        free(ndirty);
        fq_seterr(err, "Could not write the new metadata: %s", strerror(-r));
        qtx_abort(tx);
        return r;
    }
    memcpy(nl1, sw->l1, (size_t)sw->l1_size * sizeof(uint64_t));
    hstate_get(s, &old);
    nw = old;
    nw.l1 = nl1;
    nw.l1_dirty = ndirty;
    nw.l1_offset = sw->l1_offset;
    nw.l1_size = sw->l1_size;
    if (tx->changed) {
        nw.rt = tx->rt;
        nw.rt_offset = rtoff;
        nw.rt_clusters = (uint32_t)rtc;
        nw.rt_entries = tx->rt_entries;
        nw.rt_hi = rt_used(tx);
    }
    nw.nb_snapshots = sw->nb_snapshots;
    nw.snapshots_offset = sw->snapshots_offset;
    nw.size = sw->size;
    /* the switch: one header write (its first sector), then a flush */
    hstate_set(s, &nw);
    r = qcow2_write_header(s);
    if (r == 0)
        r = qcow2_flush_file(s);
    if (r < 0) {
        /* which header is durable is unknown; both describe a consistent
         * image (nothing of the old one was overwritten): write the old one
         * again, and if even that fails refuse further writes */
        hstate_set(s, &old);
        free(nl1);
        free(ndirty);
        int r2 = qcow2_write_header(s);
        if (r2 == 0)
            r2 = qcow2_flush_file(s);
        if (r2 < 0) {
            s->corrupt = true;   /* in memory only: refuse further writes */
            fq_seterr(err, "Could not switch to the new metadata: %s (and could not rewrite the "
                      "old header: %s); further writes refused", strerror(-r), strerror(-r2));
            tx->flen0 = 0;       /* the new header may be durable: cut nothing */
        } else {
            fq_seterr(err, "Could not switch to the new metadata: %s", strerror(-r));
        }
        qtx_abort(tx);
        return r;
    }
    /* the new state is durable: drop what the caches hold of the old one */
    qcache_drop_all(&s->l2_cache);
    qcache_drop_all(&s->rb_cache);
    free(old.l1);
    free(old.l1_dirty);
    if (tx->changed) {
        free(old.rt);
        tx->rt = NULL;
    }
    if (tx->low_free < s->free_hint)
        s->free_hint = tx->low_free;
    s->comp_next = 0;
    tx->flen0 = 0;
    qtx_abort(tx);   /* frees what is left of the transaction */
    return 0;
}

/* ---- L1 trees ---- */

/* References of a tree, merged into runs of contiguous clusters. */
struct runs {
    struct qtx *tx;
    int64_t delta;
    uint64_t off, n;
};

/* A cluster shared by compressed data counts once per entry: a range
 * that does not follow the run (overlapping it included) starts anew. */
static int runs_add(struct qcow2 *s, uint64_t off, uint64_t n, void *opaque)
{
    struct runs *u = opaque;
    int r = 0;

    if (u->n && u->off + u->n * s->cluster_size == off) {
        u->n += n;
        return 0;
    }
    if (u->n)
        r = qtx_ref(u->tx, u->off, u->n, u->delta);
    u->off = off;
    u->n = n;
    return r;
}

int qtx_tree_ref(struct qtx *tx, const uint64_t *l1, uint32_t n, int64_t delta)
{
    struct runs u = { tx, delta, 0, 0 };
    int r = qcow2_tree_walk(tx->s, l1, n, runs_add, &u);

    return r == 0 && u.n ? qtx_ref(tx, u.off, u.n, delta) : r;
}

/* The COPIED flag entry `e` should have once the switch is made. */
static int want_copied(struct qtx *tx, uint64_t e, bool *want)
{
    uint64_t d = e & L2E_OFFSET_MASK, rc;
    int r;

    *want = (e & L2E_COPIED) != 0;    /* unallocated entries: left alone */
    if (e & L2E_COMPRESSED) {
        *want = false;
        return 0;
    }
    if (!d)
        return 0;
    if ((r = qtx_rc(tx, d >> tx->s->cluster_bits, &rc)) < 0)
        return r;
    *want = rc == 1;
    return 0;
}

int qtx_fix_copied(struct qtx *tx, uint64_t *l1, uint32_t n, uint64_t *moved)
{
    struct qcow2 *s = tx->s;
    uint64_t cs = s->cluster_size;
    CLEANUP_FREE uint8_t *buf = fq_memalign((size_t)cs);
    int r = 0;

    if (!buf)
        return -ENOMEM;
    for (uint32_t i = 0; i < n && r == 0; i++) {
        uint64_t off = l1[i] & L1E_OFFSET_MASK, noff;
        struct qcache_entry *t;
        bool need = false, want;
        if (!off)
            continue;
        if ((r = qcache_get(&s->l2_cache, off, false, &t)) < 0)
            break;
        for (uint64_t j = 0; j < s->l2_entries && r == 0 && !need; j++) {
            uint64_t e = qcow2_l2e_get(s, t->data, j);
            if ((r = want_copied(tx, e, &want)) == 0)
                need = want != ((e & L2E_COPIED) != 0);
        }
        if (need)
            memcpy(buf, t->data, (size_t)cs);
        qcache_put(&s->l2_cache, t);
        if (r < 0 || !need)
            continue;
        /* a copy with the flags right, the active tree's alone */
        for (uint64_t j = 0; j < s->l2_entries && r == 0; j++) {
            uint64_t e = qcow2_l2e_get(s, buf, j);
            if ((r = want_copied(tx, e, &want)) == 0 && want != ((e & L2E_COPIED) != 0))
                qcow2_l2e_set(s, buf, j, want ? e | L2E_COPIED : e & ~L2E_COPIED,
                              qcow2_l2e_bitmap(s, buf, j));
        }
        if (r == 0)
            r = qtx_write(tx, buf, (size_t)cs, FQ_TAG_L2, &noff);
        if (r == 0)
            r = qtx_ref(tx, off, 1, -1);
        if (r == 0) {
            l1[i] = noff | (l1[i] & ~L1E_OFFSET_MASK);
            if (moved)
                (*moved)++;
        }
    }
    return r;
}

int qtx_set_l1_copied(struct qtx *tx, uint64_t *l1, uint32_t n)
{
    struct qcow2 *s = tx->s;
    int r = 0;

    for (uint32_t i = 0; i < n && r == 0; i++) {
        uint64_t off = l1[i] & L1E_OFFSET_MASK, rc;
        if (!off)
            continue;
        if ((r = qtx_rc(tx, off >> s->cluster_bits, &rc)) == 0)
            l1[i] = rc == 1 ? l1[i] | L2E_COPIED : l1[i] & ~L2E_COPIED;
    }
    return r;
}

int qtx_write_l1(struct qtx *tx, const uint64_t *l1, uint32_t n, uint64_t *off)
{
    uint64_t bytes = FQ_ALIGN_UP((uint64_t)n * 8, tx->s->cluster_size);
    CLEANUP_FREE uint8_t *buf = NULL;

    *off = 0;
    if (n == 0)
        return 0;
    if (!(buf = fq_zalign((size_t)bytes)))
        return -ENOMEM;
    for (uint32_t i = 0; i < n; i++)
        fq_put_be64(buf + (size_t)i * 8, l1[i]);
    return qtx_write(tx, buf, (size_t)bytes, FQ_TAG_L1, off);
}
