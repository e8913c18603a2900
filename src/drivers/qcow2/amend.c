/* amend.c: amending the options of an existing image: the compat
 * level (version 2 <-> 3), the lazy refcounts bit and the refcount width.
 *
 * One amend checks every change it was asked for before it makes any, so
 * that a refusal leaves the image untouched, then applies them in a fixed
 * order: an upgrade to version 3 first (the others may need it), the
 * refcount width, the lazy refcounts bit, and a downgrade to version 2
 * last (it needs 16-bit refcounts, which the width change may provide).
 *
 * Changing the refcount width builds a second, complete set of refcount
 * structures of the new width past the last cluster in use and past the
 * end of the file (so nothing is overwritten): a table and its blocks,
 * counting every cluster in use, the old table and blocks (in use until
 * the switch) and themselves. They are written and flushed while nothing
 * points at them; one header write (the refcount order, table offset and
 * table size all lie in its first sector) switches to them, and only once
 * that header is durable are the old table and blocks freed, through the
 * new structures. A crash before the switch leaves the old image with
 * unreferenced clusters past its end; after it, at worst the old
 * structures leak. If the switch fails, the old header is written back
 * (both describe a consistent image); if even that fails, the image
 * refuses further writes until reopened.
 *
 * A downgrade turns zero clusters (also those of snapshots) into what
 * version 2 can express (expand_zero_tree); its header write comes after
 * the tables no longer need the zero flag.
 * SPDX-License-Identifier: MIT
 */
#include <stdio.h>

#include "ops.h"
#include "snapshot.h"

/* ---- refcount width ---- */

/* Reads the current refcounts cluster by cluster, holding one refcount
 * block (of the current width) at a time. */
struct rc_reader {
    struct qcow2 *s;
    uint64_t ri;              /* table index of `e`; UINT64_MAX: none yet */
    struct qcache_entry *e;   /* NULL: no block there, all refcounts 0 */
    char *err;                /* for a failed read */
};

/* Refcount of cluster c in the current structures. */
static int rc_read(struct rc_reader *rd, uint64_t c, uint64_t *v)
{
    struct qcow2 *s = rd->s;
    uint64_t ri = c >> s->rb_bits;

    if (ri != rd->ri) {
        qcache_put(&s->rb_cache, rd->e);
        rd->e = NULL;
        rd->ri = UINT64_MAX;
        if (ri < s->rt_entries && s->rt[ri]) {
            int r = qcache_get(&s->rb_cache, s->rt[ri], false, &rd->e);
            if (r < 0) {
                rd->e = NULL;
                fq_seterr(rd->err, "Could not read the refcount block at 0x%llx: %s",
                          (unsigned long long)s->rt[ri], strerror(-r));
                return r;
            }
        }
        rd->ri = ri;
    }
    *v = rd->e ? qcow2_rc_entry(rd->e->data, s->refcount_bits, c & ((1ull << s->rb_bits) - 1)) : 0;
    return 0;
}

static void rc_reader_done(struct rc_reader *rd)
{
    qcache_put(&rd->s->rb_cache, rd->e);
    rd->e = NULL;
    rd->ri = UINT64_MAX;
}

/* The new refcount structures: geometry, where they go, what they hold. */
struct rc_plan {
    unsigned bits, order, rb_bits;   /* new width, log2 of it, log2(entries per block) */
    uint64_t max;                    /* largest refcount the new width holds */
    uint64_t end;        /* first cluster past every cluster in use now */
    uint64_t start;      /* where the new structures go: past `end` and
                            past the end of the file (nothing is overwritten) */
    uint64_t *need;      /* bitmap: new block index i covers a cluster in use */
    uint64_t nidx;       /* bits in `need` */
    uint64_t rt_clusters, blocks;    /* new table clusters, new blocks */
    uint64_t total;      /* start + rt_clusters + blocks: the new end */
    uint64_t *rt;        /* the new table, host byte order */
    uint64_t rt_entries;
};

static bool need_test(const struct rc_plan *p, uint64_t i)
{
    return i < p->nidx && (p->need[i / 64] >> (i % 64) & 1);
}

/* Read every refcount: find the end of what is in use, the new blocks
 * the clusters in use need, and refuse (naming the first such cluster) if
 * a refcount does not fit the new width. */
static int plan_scan(struct qcow2 *s, struct rc_plan *p, char *err)
{
    uint64_t hi = FQ_MIN(s->rt_hi, s->rt_entries), per = 1ull << s->rb_bits;
    struct rc_reader rd = { s, UINT64_MAX, NULL, err };
    int r = 0;

    /* hi <= 2^20 entries (QCOW2_MAX_RT_BYTES) and rb_bits <= 24: no overflow */
    p->nidx = ((hi << s->rb_bits) >> p->rb_bits) + 1;
    p->need = calloc(FQ_DIV_UP(p->nidx, 64), sizeof(uint64_t));
    if (!p->need)
        return -ENOMEM;
    p->end = 1;
    for (uint64_t ri = 0; ri < hi && r == 0; ri++) {
        if (!s->rt[ri])
            continue;
        for (uint64_t c = ri * per; c < (ri + 1) * per; c++) {
            uint64_t v;
            if ((r = rc_read(&rd, c, &v)) < 0)
                break;
            if (!v)
                continue;
            if (v > p->max) {
                fq_seterr(err, "Cannot decrease refcount entry width to %u bits: Cluster at "
                          "offset 0x%llx has a refcount of %llu", p->bits,
                          (unsigned long long)(c << s->cluster_bits), (unsigned long long)v);
                r = -EINVAL;
                break;
            }
            p->end = c + 1;
            p->need[(c >> p->rb_bits) / 64] |= 1ull << ((c >> p->rb_bits) % 64);
        }
    }
    rc_reader_done(&rd);
    return r;
}

/* Size the new structures (a fixed point: the table and blocks placed at
 * p->start must be counted by blocks too) and give each new block its
 * cluster: the table at [start, start + rt_clusters), the blocks after it
 * in the order of their index. */
static int plan_layout(struct qcow2 *s, struct rc_plan *p, char *err)
{
    uint64_t cs = s->cluster_size, nb0 = 0, limit = 1ull << (56 - s->cluster_bits);
    int64_t flen = s->file->ops->file_length ? s->file->ops->file_length(s->file)
                                             : (int64_t)s->file->size;
    uint64_t last;

    p->start = FQ_MAX(p->end, flen > 0 ? FQ_DIV_UP((uint64_t)flen, cs) : 0);
    if (p->start > limit) {
        fq_seterr(err, "The image file ends beyond the addressable range");
        return -EFBIG;
    }
    uint64_t tail = p->start >> p->rb_bits;

    for (uint64_t i = 0; i < p->nidx; i++)
        nb0 += need_test(p, i);
    p->rt_clusters = 1;
    p->blocks = nb0;
    /* every quantity only grows with the end, so this settles */
    for (;;) {
        p->total = p->start + p->rt_clusters + p->blocks;
        if (p->total > limit || p->rt_clusters * cs > QCOW2_MAX_RT_BYTES) {
            fq_seterr(err, "The refcount structures of %u-bit entries would not fit (a refcount "
                      "table of more than %u bytes, or beyond the addressable range)", p->bits,
                      QCOW2_MAX_RT_BYTES);
            return -EFBIG;
        }
        last = (p->total - 1) >> p->rb_bits;
        uint64_t extra = 0;
        for (uint64_t i = tail; i <= last; i++)
            extra += !need_test(p, i);
        uint64_t rtc = FQ_DIV_UP((last + 1) * 8, cs);
        if (nb0 + extra == p->blocks && rtc == p->rt_clusters)
            break;
        p->blocks = nb0 + extra;
        p->rt_clusters = rtc;
    }
    p->rt_entries = p->rt_clusters * cs / 8;
    if (!(p->rt = calloc(p->rt_entries, sizeof(uint64_t))))
        return -ENOMEM;
    uint64_t k = 0;
    for (uint64_t i = 0; i <= last; i++)
        if (need_test(p, i) || i >= tail)
            p->rt[i] = (p->start + p->rt_clusters + k++) << s->cluster_bits;
    if (k != p->blocks) {
        fq_seterr(err, "Internal error: %llu refcount blocks placed, %llu planned",
                  (unsigned long long)k, (unsigned long long)p->blocks);
        return -EIO;
    }
    return 0;
}

/* Write the new blocks (contiguous on disk: in runs of up to 1 MiB) and
 * the new table, then flush. Nothing points at them yet. */
static int plan_write(struct qcow2 *s, struct rc_plan *p, char *err)
{
    uint64_t cs = s->cluster_size, per = 1ull << p->rb_bits;
    size_t batch = (size_t)FQ_MAX((uint64_t)1, (1u << 20) / cs), n = 0;
    uint64_t run_off = 0;
    struct rc_reader rd = { s, UINT64_MAX, NULL, err };
    CLEANUP_FREE uint8_t *buf = fq_zalign(FQ_MAX(batch * cs, p->rt_clusters * cs));
    int r = 0;

    if (!buf)
        return -ENOMEM;
    uint64_t last = 0;
    for (uint64_t i = 0; i < p->rt_entries; i++)
        if (p->rt[i])
            last = i;
    for (uint64_t i = 0; i <= last && r == 0; i++) {
        if (!p->rt[i])
            continue;
        if (n == 0)
            run_off = p->rt[i];
        uint8_t *blk = buf + n * cs;
        for (uint64_t c = i * per; c < (i + 1) * per && c < p->total; c++) {
            uint64_t v = c >= p->start;   /* the new table and blocks themselves */
            if (c < p->end && (r = rc_read(&rd, c, &v)) < 0)
                break;
            if (v)
                qcow2_rc_set_entry(blk, p->bits, c - i * per, v);
        }
        n++;
        if (r == 0 && (n == batch || i == last)) {
            r = qcow2_check_meta_write(s, run_off, n * cs, FQ_TAG_REFBLOCK);
            if (r == 0)
                r = fq_bdev_pwrite_tagged(s->file, buf, n * cs, run_off, FQ_TAG_REFBLOCK);
            memset(buf, 0, n * cs);
            n = 0;
        }
    }
    rc_reader_done(&rd);
    if (r < 0)
        return r;
    uint64_t tb = p->rt_clusters * cs, toff = p->start << s->cluster_bits;
    memset(buf, 0, tb);
    for (uint64_t i = 0; i < p->rt_entries; i++)
        fq_put_be64(buf + i * 8, p->rt[i]);
    if ((r = qcow2_check_meta_write(s, toff, tb, FQ_TAG_REFTABLE)) == 0)
        r = fq_bdev_pwrite_tagged(s->file, buf, tb, toff, FQ_TAG_REFTABLE);
    return r < 0 ? r : qcow2_flush_file(s);
}

/* The refcount geometry and table of an image, to switch and switch back. */
struct rc_state {
    uint32_t order, bits, rb_bits, rt_clusters;
    uint64_t max, rt_offset, rt_entries, rt_hi, *rt;
};

static void rc_state_get(const struct qcow2 *s, struct rc_state *o)
{
    *o = (struct rc_state){ s->refcount_order, s->refcount_bits, s->rb_bits, s->rt_clusters,
                            s->refcount_max, s->rt_offset, s->rt_entries, s->rt_hi, s->rt };
}

static void rc_state_set(struct qcow2 *s, const struct rc_state *o)
{
    s->refcount_order = o->order;
    s->refcount_bits = o->bits;
    s->rb_bits = o->rb_bits;
    s->rt_clusters = o->rt_clusters;
    s->refcount_max = o->max;
    s->rt_offset = o->rt_offset;
    s->rt_entries = o->rt_entries;
    s->rt_hi = o->rt_hi;
    s->rt = o->rt;
    qcow2_meta_changed(s);
}

/* Point the header at the new structures; once that is durable, free the
 * old table and blocks through the new ones. */
static int plan_switch(struct qcow2 *s, struct rc_plan *p, char *err)
{
    struct rc_state old, nw;
    uint64_t hi = FQ_MIN(s->rt_hi, s->rt_entries);
    int r;

    rc_state_get(s, &old);
    /* the cached blocks are of the old width (all clean after the sync) */
    for (uint64_t i = 0; i < hi; i++)
        if (old.rt[i])
            qcache_discard(&s->rb_cache, old.rt[i]);
    uint64_t last = 0;
    for (uint64_t i = 0; i < p->rt_entries; i++)
        if (p->rt[i])
            last = i;
    nw = (struct rc_state){ p->order, p->bits, p->rb_bits, (uint32_t)p->rt_clusters, p->max,
                            p->start << s->cluster_bits, p->rt_entries, last + 1, p->rt };
    rc_state_set(s, &nw);
    r = qcow2_write_header(s);
    if (r == 0)
        r = qcow2_flush_file(s);
    if (r < 0) {
        /* which header is durable is unknown; both describe a consistent
         * image (nothing was freed), so write the old one again */
        rc_state_set(s, &old);
        int r2 = qcow2_write_header(s);
        if (r2 == 0)
            r2 = qcow2_flush_file(s);
        if (r2 < 0) {
            s->corrupt = true;   /* in memory only: refuse further writes */
            fq_seterr(err, "Could not switch to the new refcount structures: %s (and could not "
                      "rewrite the old header: %s); further writes refused", strerror(-r),
                      strerror(-r2));
        } else {
            fq_seterr(err, "Could not switch to the new refcount structures: %s", strerror(-r));
            (void)qcow2_trim_file(s);   /* what was written past the end */
        }
        return r;   /* p->rt is still the plan's */
    }
    p->rt = NULL;   /* the image's now */
    /* the header that stopped using them is durable: free them now */
    r = qcow2_update_refcount(s, old.rt_offset, old.rt_clusters, -1);
    for (uint64_t i = 0; i < hi && r == 0; i++)
        if (old.rt[i])
            r = qcow2_update_refcount(s, old.rt[i], 1, -1);
    free(old.rt);
    if (r == 0)
        r = qcow2_sync_meta(s);
    if (r < 0)
        fq_seterr(err, "The refcount width changed, but freeing the old refcount structures "
                  "failed (they leak): %s", strerror(-r));
    return r;
}

/* Rebuild the refcount structures with `bits`-bit entries (a power of two,
 * 1..64, other than the current width; version 3). */
static int change_refcount_width(struct qcow2 *s, unsigned bits, char *err)
{
    struct rc_plan p = { .bits = bits };
    int r;

    while ((1u << p.order) < bits)
        p.order++;
    p.rb_bits = s->cluster_bits + 3 - p.order;
    p.max = bits == 64 ? UINT64_MAX : (1ull << bits) - 1;
    if ((r = qcow2_sync_meta(s)) < 0)
        return r;
    if ((r = plan_scan(s, &p, err)) == 0 && (r = plan_layout(s, &p, err)) == 0) {
        if ((r = plan_write(s, &p, err)) < 0) {
            if (err && !*err)
                fq_seterr(err, "Could not write the new refcount structures: %s", strerror(-r));
            /* nothing refers to what was written past the end: cut it */
            (void)qcow2_trim_file(s);
        } else {
            r = plan_switch(s, &p, err);
        }
    }
    free(p.need);
    free(p.rt);
    return r;
}

/* ---- downgrade, upgrade ---- */

/* Does any L2 entry reachable from the L1 table `l1` carry the zero flag,
 * or describe a compressed cluster? */
struct scan {
    bool *zero, *compressed;
};

static int scan_l2(struct qcow2 *s, struct qcache_entry *t, void *opaque)
{
    struct scan *sc = opaque;

    for (uint64_t j = 0; j < s->l2_entries; j++) {
        uint64_t e = qcow2_l2e_get(s, t->data, j);
        if (e & L2E_COMPRESSED)
            *sc->compressed = true;
        else if (e & L2E_ZERO)
            *sc->zero = true;
    }
    return 0;
}

static int tree_scan(struct qcow2 *s, const uint64_t *l1, uint32_t n, bool *zero, bool *compressed)
{
    struct scan sc = { zero, compressed };

    return qcow2_for_each_l2(s, l1, n, scan_l2, &sc);
}

/* Turn every zero cluster reachable from the L1 table `l1` into one
 * version 2 can express: a preallocated one gets zeros written into its
 * cluster; a plain one becomes unallocated where nothing shows through,
 * else a new cluster of zeros (referenced once per L1 path, like the L2
 * table holding it). The L2 tables change in place: each L1 table sharing
 * one reads the same before and after. */
static int expand_zero_tree(struct qcow2 *s, const uint64_t *l1, uint32_t n)
{
    uint64_t cs = s->cluster_size;
    const void *zeros = fq_zero_buffer((size_t)cs);
    bool backing = s->bs->backing != NULL;
    int r = 0;

    if (!zeros)
        return -ENOMEM;
    for (uint32_t i = 0; i < n && r == 0; i++) {
        uint64_t l2off = l1[i] & L1E_OFFSET_MASK, rc;
        struct qcache_entry *t;
        if (!l2off)
            continue;
        if ((r = qcow2_get_refcount(s, l2off >> s->cluster_bits, &rc)) < 0 ||
            (r = qcache_get(&s->l2_cache, l2off, false, &t)) < 0)
            break;
        for (uint64_t j = 0; j < s->l2_entries && r == 0; j++) {
            uint64_t e = qcow2_l2e_get(s, t->data, j), off = e & L2E_OFFSET_MASK, ne;
            if ((e & L2E_COMPRESSED) || !(e & L2E_ZERO))
                continue;
            if (off) {
                ne = e & ~L2E_ZERO;
            } else if (!backing) {
                ne = 0;
            } else {
                if ((r = qcow2_alloc_clusters(s, 1, &off)) < 0)
                    break;
                if (rc > 1 && (r = qcow2_update_refcount(s, off, 1, (int64_t)rc - 1)) < 0)
                    break;
                ne = off | (rc == 1 ? L2E_COPIED : 0);
            }
            if (off && (r = fq_bdev_pwrite_tagged(s->file, zeros, (size_t)cs, off, FQ_TAG_DATA)) < 0)
                break;
            /* the zeros are durable before the entry that exposes them */
            s->flush_owed = true;
            qcow2_l2e_set(s, t->data, j, ne, 0);
            qcache_mark_dirty(t);
        }
        qcache_put(&s->l2_cache, t);
    }
    return r;
}

/* What a downgrade works on: every L1 table, the snapshots' first, then
 * the active one (l1[n], not owned), and whether any holds zero clusters. */
struct down {
    size_t n;
    uint64_t **l1;
    uint32_t *l1n;
    bool zero;
};

static void down_free(struct down *d)
{
    for (size_t i = 0; d->l1 && i < d->n; i++)
        free(d->l1[i]);
    free(d->l1);
    free(d->l1n);
    memset(d, 0, sizeof(*d));
}

/* Everything that can refuse a downgrade, checked before any change:
 * incompatible features, the refcount width it will have (`bits`),
 * bitmaps, zstd-compressed clusters. Fills `d`. */
static int downgrade_check(struct qcow2 *s, unsigned bits, struct down *d, char *err)
{
    struct qsnap *v = NULL;
    size_t n = 0;
    uint64_t tb, bad = s->incompat & ~(QCOW2_INCOMPAT_DIRTY | QCOW2_INCOMPAT_COMPRESSION);
    bool compressed = false;
    int r;

    if (bad) {
        fq_seterr(err, "Cannot downgrade an image with incompatible features 0x%llx set",
                  (unsigned long long)bad);
        return -ENOTSUP;
    }
    if (bits != 16) {
        fq_seterr(err, "compat=0.10 requires refcount_bits=16");
        return -ENOTSUP;
    }
    for (size_t i = 0; i < s->exts.len; i++)
        if (s->exts.ptr[i].type == QEXT_BITMAPS) {
            fq_seterr(err, "Cannot downgrade an image with bitmaps");
            return -ENOTSUP;
        }
    if ((r = qcow2_read_snapshots(s, &v, &n, &tb, err)) < 0)
        return r;
    d->n = n;
    d->l1 = calloc(n + 1, sizeof(*d->l1));
    d->l1n = calloc(n + 1, sizeof(*d->l1n));
    if (!d->l1 || !d->l1n)
        r = -ENOMEM;
    for (size_t i = 0; i < n && r == 0; i++) {
        d->l1n[i] = v[i].l1_size;
        r = qcow2_read_l1(s, v[i].l1_offset, v[i].l1_size, &d->l1[i]);
    }
    qcow2_snapshots_free(v, n);
    if (r == 0) {
        d->l1[n] = s->l1;
        d->l1n[n] = s->l1_size;
    }
    for (size_t i = 0; i <= n && r == 0; i++)
        r = tree_scan(s, d->l1[i], d->l1n[i], &d->zero, &compressed);
    if (r == 0 && s->compression_type && compressed) {
        fq_seterr(err, "Cannot downgrade an image with zstd compression type and existing "
                  "compressed clusters");
        r = -ENOTSUP;
    }
    return r;
}

/* Expand the zero clusters, then write the version 2 header. */
static int downgrade_apply(struct qcow2 *s, struct down *d)
{
    int r = 0;

    d->l1[d->n] = s->l1;   /* the active table as it is now */
    d->l1n[d->n] = s->l1_size;
    for (size_t i = 0; i <= d->n && r == 0 && d->zero; i++)
        r = expand_zero_tree(s, d->l1[i], d->l1n[i]);
    if (r < 0 || (r = qcow2_sync_meta(s)) < 0)
        return r;
    uint32_t ohl = s->header_length;
    uint64_t oinc = s->incompat, ocompat = s->compat, oac = s->autoclear;
    uint8_t oct = s->compression_type;
    s->version = 2;
    s->header_length = QH_V2_LENGTH;
    s->incompat = s->compat = s->autoclear = 0;
    s->compression_type = 0;
    if ((r = qcow2_write_header_sync(s)) < 0) {
        s->version = 3;
        s->header_length = ohl;
        s->incompat = oinc;
        s->compat = ocompat;
        s->autoclear = oac;
        s->compression_type = oct;
    }
    return r;
}

static int upgrade(struct qcow2 *s)
{
    /* version 3 snapshot entries carry the virtual size and more */
    int r0 = qcow2_snapshot_fix_extra(s);
    if (r0 < 0)
        return r0;
    s->version = 3;
    s->header_length = QH_V3_LENGTH;
    s->refcount_order = 4;
    s->incompat = s->compat = s->autoclear = 0;
    if (!s->feature_table) {
        int r = qcow2_default_feature_table(&s->feature_table, &s->feature_table_len);
        if (r < 0)
            return r;
    }
    int r = qcow2_write_header_sync(s);
    if (r < 0) {
        s->version = 2;
        s->header_length = QH_V2_LENGTH;
    }
    return r;
}

/* ---- amend ---- */

int qcow2_amend(struct qcow2 *s, int version, int lazy, int refcount_bits, char *err)
{
    struct down d = { 0 };
    int r;

    if (err)
        err[0] = '\0';   /* the messages below are kept when set */
    if ((r = qcow2_op_writable(s, err)) < 0)
        return r;
    if (version && version != 2 && version != 3) {
        fq_seterr(err, "Invalid compat level %d (2 = 0.10, 3 = 1.1)", version);
        return -EINVAL;
    }
    if (refcount_bits < 0 || refcount_bits > 64 || (refcount_bits & (refcount_bits - 1))) {
        fq_seterr(err, "Refcount width must be a power of two and may not exceed 64 bits");
        return -EINVAL;
    }
    int target = version ? version : (int)s->version;
    unsigned bits = refcount_bits ? (unsigned)refcount_bits : s->refcount_bits;
    if (target < 3 && lazy == 1) {
        fq_seterr(err, "Lazy refcounts only supported with compatibility level 1.1 and above "
                  "(use compat=1.1 or greater)");
        return -EINVAL;
    }
    if (target < 3 && refcount_bits && bits != 16) {
        fq_seterr(err, "Refcount widths other than 16 bits require compatibility level 1.1 or "
                  "above (use compat=1.1 or greater)");
        return -EINVAL;
    }
    bool down = target == 2 && s->version == 3;
    r = qcow2_sync_meta(s);
    if (r == 0 && down)
        r = downgrade_check(s, bits, &d, err);
    if (r == 0 && target == 3 && s->version == 2)
        r = upgrade(s);
    if (r == 0 && bits != s->refcount_bits)
        r = change_refcount_width(s, bits, err);
    if (r == 0 && lazy >= 0 && s->version >= 3) {
        uint64_t old = s->compat;
        if (lazy)
            s->compat |= QCOW2_COMPAT_LAZY_REFCOUNTS;
        else
            s->compat &= ~QCOW2_COMPAT_LAZY_REFCOUNTS;
        if (s->compat != old && (r = qcow2_write_header_sync(s)) < 0)
            s->compat = old;
    }
    if (r == 0 && down)
        r = downgrade_apply(s, &d);
    down_free(&d);
    if (r < 0 && err && !*err)
        fq_seterr(err, "Could not amend the image: %s", strerror(-r));
    return r;
}
