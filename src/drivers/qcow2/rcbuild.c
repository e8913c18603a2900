/* rcbuild.c: a new, complete set of refcount structures for an image,
 * built beside the ones in use and switched to with one header write.
 * Used by amend to change the refcount width (the refcounts come from the
 * current structures) and by check to rebuild damaged structures (the
 * refcounts come from the references it counted).
 *
 * The new table and blocks go past every cluster with a refcount and past
 * the end of the file, so nothing is overwritten, and count every cluster
 * in use and themselves. They are written and flushed while nothing points
 * at them; one header write (the refcount order, table offset and table
 * size all lie in its first sector) switches to them. Where the source
 * counted the old table and blocks (they were in use until the switch),
 * those are freed through the new structures once the header is durable;
 * otherwise nothing references them any more and the new refcounts hold 0
 * for them. A crash before the switch leaves the old image with
 * unreferenced clusters past its end; after it, the new structures are
 * complete (at worst the old ones leak). If the switch fails, the old
 * header is written back (both describe the same clusters in use); if even
 * that fails, the image refuses further writes until reopened. What was
 * written past the end is cut whenever the new structures are not used.
 * SPDX-License-Identifier: MIT
 */
#include <stdio.h>

#include "ops.h"

/* The new refcount structures: geometry, where they go, what they hold. */
struct rc_plan {
    struct qcow2_rc_source *src;
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
    uint64_t old_len;    /* the file's length before: what is cut back to */
};

/* Cut what was written past the old end of the file (nothing refers to
 * it); never below the old end, whatever the refcounts say. */
static void cut_back(struct qcow2 *s, const struct rc_plan *p)
{
    struct fq_bdev *f = s->file;

    if (p->old_len && f->ops->truncate && f->size > p->old_len)
        (void)f->ops->truncate(f, p->old_len);
}

static bool need_test(const struct rc_plan *p, uint64_t i)
{
    return i < p->nidx && (p->need[i / 64] >> (i % 64) & 1);
}

static void src_release(const struct qcow2_rc_source *src)
{
    if (src->release)
        src->release(src->opaque);
}

/* Read every refcount of the source: find the end of what is in use and
 * the new blocks the clusters in use need. -ERANGE (the cluster and its
 * refcount in src->too_big_*) if a refcount does not fit the new width. */
static int plan_scan(struct rc_plan *p)
{
    struct qcow2_rc_source *src = p->src;
    int r = 0;

    p->nidx = (src->limit >> p->rb_bits) + 1;
    p->need = calloc(FQ_DIV_UP(p->nidx, 64), sizeof(uint64_t));
    if (!p->need)
        return -ENOMEM;
    p->end = 1;
    for (uint64_t c = src->next ? src->next(src->opaque, 0) : 0; c < src->limit;
         c = src->next ? src->next(src->opaque, c + 1) : c + 1) {
        uint64_t v;
        if ((r = src->get(src->opaque, c, &v)) < 0)
            break;
        if (!v)
            continue;
        if (v > p->max) {
            src->too_big_cluster = c;
            src->too_big_value = v;
            r = -ERANGE;
            break;
        }
        p->end = c + 1;
        p->need[(c >> p->rb_bits) / 64] |= 1ull << ((c >> p->rb_bits) % 64);
    }
    src_release(src);
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

    p->old_len = flen > 0 ? (uint64_t)flen : 0;
    p->start = FQ_MAX(p->end, FQ_DIV_UP(p->old_len, cs));
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
static int plan_write(struct qcow2 *s, struct rc_plan *p)
{
    const struct qcow2_rc_source *src = p->src;
    uint64_t cs = s->cluster_size, per = 1ull << p->rb_bits;
    size_t batch = (size_t)FQ_MAX((uint64_t)1, (1u << 20) / cs), n = 0;
    uint64_t run_off = 0;
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
            if (c < p->end && (r = src->get(src->opaque, c, &v)) < 0)
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
    src_release(src);
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
 * old table and blocks through the new ones if the source counted them. */
static int plan_switch(struct qcow2 *s, struct rc_plan *p, char *err)
{
    struct rc_state old, nw;
    uint64_t hi = FQ_MIN(s->rt_hi, s->rt_entries);
    int r;

    rc_state_get(s, &old);
    /* the cached blocks are of the old structures (all clean after the sync) */
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
            cut_back(s, p);
        }
        return r;   /* p->rt is still the plan's */
    }
    p->rt = NULL;   /* the image's now */
    qcow2_rt_damage_clear(s);   /* the damaged table is no longer used */
    /* old clusters may now be free below every cluster allocated so far */
    s->free_hint = 0;
    r = 0;
    if (p->src->counts_old) {
        /* the header that stopped using them is durable: free them now */
        r = qcow2_update_refcount(s, old.rt_offset, old.rt_clusters, -1);
        for (uint64_t i = 0; i < hi && r == 0; i++)
            if (old.rt[i])
                r = qcow2_update_refcount(s, old.rt[i], 1, -1);
        if (r == 0)
            r = qcow2_sync_meta(s);
        if (r < 0)
            fq_seterr(err, "The refcount structures changed, but freeing the old ones failed "
                      "(they leak): %s", strerror(-r));
    }
    free(old.rt);
    return r;
}

int qcow2_rc_build(struct qcow2 *s, unsigned bits, struct qcow2_rc_source *src, char *err)
{
    struct rc_plan p = { .src = src, .bits = bits };
    int r;

    while ((1u << p.order) < bits)
        p.order++;
    p.rb_bits = s->cluster_bits + 3 - p.order;
    p.max = bits == 64 ? UINT64_MAX : (1ull << bits) - 1;
    if ((r = plan_scan(&p)) == 0 && (r = plan_layout(s, &p, err)) == 0) {
        if ((r = plan_write(s, &p)) < 0) {
            if (err && !*err)
                fq_seterr(err, "Could not write the new refcount structures: %s", strerror(-r));
            cut_back(s, &p);
        } else {
            r = plan_switch(s, &p, err);
        }
    }
    free(p.need);
    free(p.rt);
    return r;
}
