/* defrag.c: fq_defrag for qcow2: rewrite the image in place so that it
 * reads like one written sequentially (defrag.h has the parts).
 *
 * The steps, each leaving a consistent image behind:
 *  1. Preconditions: writable, idle, and a check without corruptions
 *     (nothing is written before the plan is known to be possible).
 *  2. The plan (defrag_build, defrag_layout); refusals (a structure that
 *     must move but does not fit the staging zone) come here, before the
 *     first write. Leaked clusters are then reclaimed (the check's repair)
 *     and the plan made again, so that every refcount matches the
 *     references it was built from.
 *  3. Refcount blocks for the staging zone: a range the table has an
 *     entry for but no block gets one at its start (written before the
 *     entry); past the table's reach one run reaching past the zone is
 *     allocated and freed again, so that the refcount code creates the
 *     blocks and grows the table as for any allocation. The plan is made
 *     again with them.
 *  4. The rounds (defrag_round.c), then the refcount blocks only the
 *     staging zone needed are removed and the file is cut after its last
 *     used cluster.
 * An image already in order (and without leaks) is not written at all.
 * Running it again after an interruption plans from what is on disk: the
 * clusters moved stay moved, leaks of the interrupted round are reclaimed.
 * SPDX-License-Identifier: MIT
 */
#include <stdio.h>

#include "defrag.h"

static uint64_t file_len(struct qcow2 *s)
{
    int64_t n = s->file->ops->file_length ? s->file->ops->file_length(s->file)
                                          : (int64_t)s->file->size;
    return n > 0 ? (uint64_t)n : 0;
}

/* Does every cluster below Z have a refcount block? */
static bool covered(const struct defrag *d)
{
    const struct qcow2 *s = d->s;

    for (uint64_t ri = 0; ri <= (d->Z - 1) >> s->rb_bits; ri++)
        if (ri >= s->rt_entries || !s->rt[ri])
            return false;
    return true;
}

/* A refcount block for every range below Z the table has an entry for
 * but no block (a range nothing used, or whose block an interrupted run
 * removed): at the first cluster of its range, counting itself. The
 * write-back writes the block, flushes, then the table entry. Returns
 * the number made, or -errno. */
static int fill_cover(struct defrag *d)
{
    struct qcow2 *s = d->s;
    uint64_t last = (d->Z - 1) >> s->rb_bits;
    int made = 0, r;

    for (uint64_t ri = 1; ri <= last && ri < s->rt_entries; ri++) {
        struct qcache_entry *e;
        uint64_t off = (ri << s->rb_bits) * d->cs;
        if (s->rt[ri])
            continue;
        if ((r = qcache_get(&s->rb_cache, off, true, &e)) < 0)
            return r;
        qcache_put(&s->rb_cache, e);
        s->rt[ri] = off;
        s->rt_hi = FQ_MAX(s->rt_hi, ri + 1);
        s->rt_dirty = true;
        qcow2_meta_changed(s);
        if ((r = qcow2_update_refcount(s, off, 1, 1)) < 0)
            return r;
        made++;
    }
    if (made && (r = qcow2_sync_meta(s)) < 0)
        return r;
    return made;
}

/* Allocate one run from the end of what is in use up to Z (longer than
 * any hole, so it starts there) and free it again: the refcount code
 * creates the blocks covering it, and grows the table if needed. */
static int extend_cover(struct defrag *d)
{
    struct qcow2 *s = d->s;
    uint64_t tail = 1, maxfree = 0, run = 0, off;
    int r;

    for (uint64_t c = 1; c < d->nb; c++)
        if (d->occ[c] != DO_FREE)
            tail = c + 1;
    for (uint64_t c = 1; c < tail; c++) {
        run = d->occ[c] == DO_FREE ? run + 1 : 0;
        maxfree = FQ_MAX(maxfree, run);
    }
    uint64_t n = FQ_MAX(maxfree + 1, d->Z > tail ? d->Z - tail : 1);
    if ((r = qcow2_alloc_clusters(s, n, &off)) < 0)
        return r;
    if ((r = qcow2_update_refcount(s, off, n, -1)) < 0)
        return r;
    return qcow2_sync_meta(s);
}

/* Refuse before the first write what the staging zone cannot hold. */
static int check_sizes(struct defrag *d)
{
    for (uint32_t id = 0; id < d->nu; id++) {
        const struct dunit *u = &d->u[id];
        if (u->kind == DK_BLOB || u->n <= d->budget || defrag_final(d, id))
            continue;
        uint64_t need = (uint64_t)u->n * d->cs;
        fq_seterr(d->err, "The %s (%llu bytes) must move, which needs a budget of at least that "
                  "much (it is %llu bytes); run again with --budget %llu", defrag_kind_name(u->kind),
                  (unsigned long long)need, (unsigned long long)(d->budget * d->cs),
                  (unsigned long long)need);
        return -EINVAL;
    }
    return 0;
}

/* Is the image in its final order already, with nothing to cut? */
static bool in_order(const struct defrag *d)
{
    for (uint32_t id = 0; id < d->nu; id++)
        if (d->u[id].tgt == DT_ANY || !defrag_final(d, id))
            return false;
    return file_len(d->s) <= d->U * d->cs;
}

/* Plan until the plan holds: leaks reclaimed, the staging zone covered. */
static int plan(struct defrag *d, struct fq_bdev *bs, bool *done)
{
    struct fq_check_result res;
    int r;

    *done = false;
    for (int attempt = 0;; attempt++) {
        uint64_t leaks = 0;
        if ((r = defrag_build(d, &leaks)) < 0)
            return r;
        r = d->compact ? defrag_layout_compact(d) : defrag_layout(d);
        if (r == 0 && !d->compact)
            r = check_sizes(d);
        if (r < 0)
            return r;
        if (leaks) {
            if (attempt >= 2) {
                fq_seterr(d->err, "%llu leaked clusters remain after a repair; run 'check -r all'",
                          (unsigned long long)leaks);
                return -EIO;
            }
            if (d->ntail) {
                if ((r = defrag_reclaim_tail(d)) < 0)
                    return r;
                d->st->leaks_fixed += d->ntail;
            }
            if (leaks > d->ntail) {
                if ((r = qcow2_check(bs, FQ_CHECK_REPAIR_LEAKS, &res, NULL, NULL)) < 0)
                    return r;
                d->st->leaks_fixed += (uint64_t)res.leaks_fixed;
            }
            defrag_free_plan(d);
            continue;
        }
        if (!d->compact && in_order(d)) {
            *done = true;
            return 0;
        }
        if (!d->compact && !covered(d)) {
            if (attempt >= 4) {
                fq_seterr(d->err, "Internal error: refcount blocks do not cover the staging zone");
                return -EIO;
            }
            if ((r = fill_cover(d)) < 0 || (r == 0 && (r = extend_cover(d)) < 0))
                return r;
            d->st->file_peak = FQ_MAX(d->st->file_peak, file_len(d->s));
            defrag_free_plan(d);
            continue;
        }
        return 0;
    }
}

int qcow2_defrag(struct fq_bdev *bs, const struct fq_defrag_opts *o, struct fq_defrag_stats *st,
                 const struct fq_waiter *w, char *err)
{
    struct qcow2 *s = bs->priv;
    struct defrag d = { .s = s, .o = o, .st = st, .w = w, .err = err, .cs = s->cluster_size,
                        .compact = o->compact_only != 0 };
    struct fq_check_result res;
    bool done;
    int r;

    if (err)
        err[0] = '\0';
    memset(st, 0, sizeof(*st));
    if ((r = qcow2_op_writable(s, err)) < 0 ||
        (r = qcow2_data_refuse(s, "Defragmentation", err)) < 0)
        return r;
    if (s->crypt_method) {
        /* encrypted data is bound to its host offset: it cannot move */
        fq_seterr(err, "Defragmenting an encrypted image is not supported");
        return -ENOTSUP;
    }
    st->file_before = st->file_peak = file_len(s);
    uint64_t budget = o->budget ? o->budget : FQ_DEFRAG_DEFAULT_BUDGET;
    d.budget = FQ_MAX(budget / d.cs, (uint64_t)4);
    if ((r = qcow2_sync_meta(s)) < 0) {
        fq_seterr(err, "Could not write back the metadata: %s", strerror(-r));
        return r;
    }
    if ((r = qcow2_check(bs, 0, &res, NULL, NULL)) < 0) {
        fq_seterr(err, "Could not check the image: %s", strerror(-r));
        return r;
    }
    if (res.corruptions || res.check_errors) {
        fq_seterr(err, "The image has %lld corruptions and %lld check errors; run 'check -r all' "
                  "first", (long long)res.corruptions, (long long)res.check_errors);
        return -EINVAL;
    }
    /* compressed writes must not pack into clusters the plan fills */
    s->comp_next = 0;
    r = plan(&d, bs, &done);
    if (r == 0 && !done) {
        r = defrag_rounds(&d);
        if (r == 0 && !d.compact)
            r = defrag_drop_blocks(&d);
        if (r == 0)
            r = qcow2_sync_meta(s);
        st->file_peak = FQ_MAX(st->file_peak, file_len(s));
        if (r == 0)
            r = qcow2_trim_file(s);
        if (r == 0)
            r = qcow2_flush_file(s);
    }
    st->file_after = file_len(s);
    st->file_peak = FQ_MAX(st->file_peak, st->file_after);
    defrag_free_plan(&d);
    if (r < 0 && err && !*err)
        fq_seterr(err, "Defragmentation failed: %s", strerror(-r));
    return r;
}
