/* zero.c: write-zeroes and discard requests, planned step by step like
 * the other requests (rw.c), recording in the image what qemu records for
 * the same request, so that map, alloc and check read the same:
 *
 *  - A write-zeroes is cut where qemu cuts it: at subcluster boundaries
 *    (clusters without extended L2): a partial unit at each end, the
 *    aligned bulk between them (in pieces of at most ZPIECE_MAX bytes).
 *  - A partial unit whose rest already reads as zeros (a zero subcluster
 *    or cluster, or an unallocated one over no backing file or over a
 *    backing chain reading as zeros there) becomes a zero unit whole;
 *    any other partial unit is written with zeros as data.
 *  - The bulk: whole clusters become zero clusters (map.c, zeroed_entry:
 *    host clusters kept unless unmapping is allowed), the partial clusters
 *    at its ends (extended L2) zero subclusters keeping their host
 *    cluster. Where nothing can express it (a compressed partial cluster,
 *    a v2 image over a backing file) the whole piece is written with zeros
 *    instead, from its start (q->zfill_end), as qemu falls back.
 *  - A discard acts on whole clusters only (and on the partial last
 *    cluster when the request reaches the end of the disk); partial
 *    clusters are left as they are.
 *  - Every L2 table a zeroing or discard touches is made writable, as
 *    qemu's layout has it.
 *
 * Ordering: only L2 entries change (host clusters released through the
 * deferred free, after the L2 table that dropped them is written back);
 * data written as zeros goes through the write path.
 * SPDX-License-Identifier: MIT
 */
#include <limits.h>

#include "rw.h"

/* The largest bulk piece (qemu's limit for one zero-write). */
#define ZPIECE_MAX ((uint64_t)INT_MAX)

/* A raw external data file stays a raw image of the disk: guest range
 * [pos, pos + len) of guest clusters [gc, gc + n), which the L2 entries
 * now say read as zeros, is zeroed in the data file too (registered as
 * an allocation meanwhile, so that a later write there waits for it). */
static int raw_zero(struct qreq *q, uint64_t gc, uint64_t n, uint64_t pos, uint64_t len,
                    bool unmap)
{
    struct qcow2 *s = q->s;
    struct qtask *t;

    if (!qcow2_data_raw(s))
        return 0;
    if (!(t = qcow2_rw_task_new(q, T_WRITE, pos, len)))
        return -ENOMEM;
    t->alloc = qcow2_rw_alloc_register(s, gc, n);
    if (!t->alloc) {
        qcow2_rw_task_free(t);
        return -ENOMEM;
    }
    t->wguest = pos;
    t->wlen = len;
    t->src_zero = true;
    t->child.flags = unmap ? FQ_ZERO_MAY_UNMAP : 0;
    qcow2_rw_task_issue(t, s->data, FQ_OP_WRITE_ZEROES, pos, NULL, 0, 0, len);
    return 0;
}

/* Whether guest range [off, end) reads as zeros from the backing chain
 * (past the end of the disk or of the backing file: zeros). An error
 * answers no: the range is then written, which reports it. */
static bool backing_reads_zero(struct qcow2 *s, uint64_t off, uint64_t end)
{
    struct fq_bdev *b = s->bs->backing;

    end = FQ_MIN(end, s->bs->size);
    if (!b)
        return true;
    end = FQ_MIN(end, b->size);
    while (off < end) {
        struct fq_map_entry m;
        if (fq_bdev_map_chain(b, off, end - off, &m) < 0 || !m.length ||
            !(m.flags & FQ_MAP_ZERO))
            return false;
        off += m.length;
    }
    return true;
}

/* Where the request's area ends: the end of the disk (or of the VM state
 * area); the partial last cluster there counts as whole. */
static uint64_t zero_limit(const struct qreq *q)
{
    return qcow2_rw_req_limit(q->s, q->req);
}

/* Zero the whole unit (subcluster, or cluster) at u0: a zero cluster, or
 * with extended L2 a zero subcluster (a whole zero cluster when the unit
 * starts a cluster and reaches the end of the disk). */
static int zero_unit(struct qreq *q, uint64_t u0, bool unmap)
{
    struct qcow2 *s = q->s;
    uint64_t gc = u0 >> s->cluster_bits, cstart = gc << s->cluster_bits;
    uint64_t uend = FQ_MIN(u0 + s->subcluster_size, FQ_MAX(zero_limit(q), u0 + 1));
    int r;

    if (!s->extl2 || (u0 == cstart && u0 + s->subcluster_size >= zero_limit(q)))
        r = qcow2_zero_clusters(s, gc, 1, unmap, false);
    else
        r = qcow2_zero_subclusters(s, gc, 1u << ((u0 - cstart) / s->subcluster_size));
    return r < 0 ? r : raw_zero(q, gc, 1, u0, uend - u0, unmap);
}

/* [q->pos, pend), part of one unit: the unit zeroed whole when the rest
 * of it reads as zeros already, else zeros written there. */
static int zero_part(struct qreq *q, uint64_t pend, bool unmap)
{
    struct qcow2 *s = q->s;
    uint64_t pos = q->pos, u0 = FQ_ALIGN_DOWN(pos, s->subcluster_size);
    uint64_t uend = u0 + s->subcluster_size;
    struct qextent x;
    int r = qcow2_rw_wait_allocs(q, pos >> s->cluster_bits, 1);

    if (r)
        return r;
    if ((r = qcow2_lookup(s, u0, 1, &x)) < 0)
        return r;
    bool zero = x.kind == QK_ZERO ||
                (x.kind == QK_UNALLOC && backing_reads_zero(s, u0, pos) &&
                 backing_reads_zero(s, pend, uend));
    if (zero) {
        r = zero_unit(q, u0, unmap);
        if (r == 0) {
            q->pos = pend;
            return 0;
        }
        if (r != -ENOTSUP)
            return r;
    }
    return qcow2_rw_write_zeros(q, pend - pos);
}

/* Part of the bulk piece [pstart, pend) from q->pos (unit-aligned): the
 * subclusters of a partial cluster, or whole clusters up to the end of
 * their L2 slice. What cannot be expressed sends the piece to zfill. */
static int zero_bulk(struct qreq *q, uint64_t pstart, uint64_t pend, bool unmap)
{
    struct qcow2 *s = q->s;
    uint64_t cs = s->cluster_size, pos = q->pos, size = zero_limit(q);
    uint64_t gc = pos >> s->cluster_bits, cstart = gc * cs;
    int r;

    if (s->extl2 && (pos != cstart || (pend - pos < cs && pend < size))) {
        uint64_t e = FQ_MIN(pend, cstart + cs);
        unsigned sc0 = (unsigned)((pos - cstart) / s->subcluster_size);
        unsigned sc1 = (unsigned)FQ_DIV_UP(e - cstart, s->subcluster_size);
        uint32_t mask = (uint32_t)(((1ull << sc1) - 1) & ~((1ull << sc0) - 1));
        if ((r = qcow2_rw_wait_allocs(q, gc, 1)))
            return r;
        r = qcow2_zero_subclusters(s, gc, mask);
        if (r == 0 && (r = raw_zero(q, gc, 1, pos, e - pos, unmap)) == 0)
            q->pos = e;
    } else {
        /* the partial last cluster of the disk counts as whole */
        uint64_t reach = pend >= size ? FQ_ALIGN_UP(pend, cs) : pend;
        uint64_t per = s->l2_cache.slice / s->l2_entry_size;
        uint64_t n = FQ_MIN((reach - pos) / cs, per - (gc & (per - 1)));
        uint64_t zend = FQ_MIN(pos + n * cs, pend);
        if ((r = qcow2_rw_wait_allocs(q, gc, n)))
            return r;
        r = qcow2_zero_clusters(s, gc, n, unmap, false);
        if (r == 0 && (r = raw_zero(q, gc, n, pos, zend - pos, unmap)) == 0)
            q->pos = zend;
    }
    if (r != -ENOTSUP)
        return r;
    /* written with zeros instead: the whole piece, from its start */
    q->zfill_end = pend;
    q->pos = pstart;
    return 0;
}

/* A discard step: whole clusters up to the end of their L2 slice; a
 * partial cluster is skipped. */
static int discard_step(struct qreq *q)
{
    struct qcow2 *s = q->s;
    uint64_t cs = s->cluster_size, pos = q->pos;
    uint64_t reach = q->end == zero_limit(q) ? FQ_ALIGN_UP(q->end, cs) : q->end;

    if (!FQ_IS_ALIGNED(pos, cs) || reach - pos < cs) {
        q->pos = FQ_MIN(q->end, FQ_ALIGN_UP(pos + 1, cs));
        return 0;
    }
    uint64_t gc = pos >> s->cluster_bits;
    uint64_t per = s->l2_cache.slice / s->l2_entry_size;
    uint64_t n = FQ_MIN((reach - pos) / cs, per - (gc & (per - 1)));
    uint64_t zend = FQ_MIN(pos + n * cs, q->end);
    int r = qcow2_rw_wait_allocs(q, gc, n);

    if (r)
        return r;
    if ((r = qcow2_zero_clusters(s, gc, n, false, true)) < 0 ||
        (r = raw_zero(q, gc, n, pos, zend - pos, true)) < 0)
        return r;
    q->pos = zend;
    return 0;
}

int qcow2_zero_step(struct qreq *q)
{
    struct qcow2 *s = q->s;
    uint64_t unit = s->subcluster_size, pos = q->pos, end = q->end, size = zero_limit(q);
    bool unmap = (q->req->flags & FQ_ZERO_MAY_UNMAP) != 0;

    if (q->req->op == FQ_OP_DISCARD)
        return discard_step(q);
    if (pos < q->zfill_end)
        return qcow2_rw_write_zeros(q, FQ_MIN(q->zfill_end - pos, QCOW2_ZFILL_MAX));
    uint64_t uoff = pos & (unit - 1);
    if (uoff || (end - pos < unit && end < size))
        return zero_part(q, FQ_MIN(end, pos - uoff + unit), unmap);
    /* the bulk: from the first unit boundary of the request to the last
     * (or the end of the disk), in pieces of at most ZPIECE_MAX bytes */
    uint64_t bstart = FQ_ALIGN_UP(q->req->off, unit);
    uint64_t bend = end >= size ? end : FQ_ALIGN_DOWN(end, unit);
    uint64_t pmax = FQ_ALIGN_DOWN(ZPIECE_MAX, unit);
    uint64_t pstart = bstart + (pos - bstart) / pmax * pmax;
    return zero_bulk(q, pstart, FQ_MIN(bend, pstart + pmax), unmap);
}
