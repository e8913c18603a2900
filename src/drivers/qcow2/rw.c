/* rw.c: the request state machines (their tasks: rw_task.c). "Metadata is planned, data is
 * asynchronous": a request walks its range with qcow2_lookup (metadata from
 * the cache), turning each uniform run
 * into a task (a host-contiguous data read or write, a backing read, a
 * compressed cluster, an allocating write), and issues the tasks through
 * its task pool, at most as many at once as its depth controller allows
 * (measured, or forced by max_workers). Each completion frees a slot
 * and planning resumes; the request completes when its range is planned
 * and its pool is idle, with the first error.
 *
 * Allocating writes: the clusters of one run are allocated as one host-
 * contiguous range, written in one request (head and tail of partially
 * written clusters filled with their current content), and linked into the
 * L2 table only after the data write succeeded. An allocating write in
 * flight is registered (struct qalloc); any other write, zeroing or discard
 * touching the same guest clusters parks until it linked, then re-plans.
 *
 * The loop never waits for metadata: each planning step runs in the
 * request's asynchronous context (s->aw), where a cache miss starts the
 * table's load and parks the request (QCOW2_PARKED), and where only dirty
 * tables could make room it parks on an asynchronous write-back; either
 * way the request is planned again when that completes. A step parks only
 * before it changed anything, or after a change that stands on its own
 * (an L2 table allocated and linked into L1), so planning it again from
 * the same position is exact. What follows a data allocation (extending
 * the file, registering the range) runs synchronously. Flushes write back
 * asynchronously too (wb.c).
 *
 * The same planner runs in "sync" mode for io_sync (metadata I/O of a
 * parent image stacked on this one): tasks run inline through the
 * children's io_sync; it never waits for the loop. An image that a parent
 * drives so (bs->sync_parent) keeps all its metadata work synchronous.
 * SPDX-License-Identifier: MIT
 */
#include "rw.h"

/* ---- read ---- */

static int read_step(struct qreq *q)
{
    struct qcow2 *s = q->s;
    struct fq_req *req = q->req;
    struct qextent x;
    struct qtask *t;
    size_t iov_off = req->iov_off + (size_t)(q->pos - req->off);
    int r = qcow2_lookup(s, q->pos, q->end - q->pos, &x);

    if (r < 0)
        return r;
    switch (x.kind) {
    case QK_DATA:
        if (!(t = qcow2_rw_task_new(q, T_READ, q->pos, x.len)))
            return -ENOMEM;
        if (s->crypt) {
            /* whole sectors into a buffer, decrypted on completion */
            uint64_t lo = FQ_ALIGN_DOWN(x.host, FQ_CRYPT_SECTOR);
            uint64_t hi = FQ_ALIGN_UP(x.host + x.len, (uint64_t)FQ_CRYPT_SECTOR);
            if (!(t->cbuf = fq_memalign((size_t)(hi - lo)))) {
                qcow2_rw_task_free(t);
                return -ENOMEM;
            }
            t->cvec = (struct iovec){ t->cbuf, (size_t)(hi - lo) };
            t->chead = (size_t)(x.host - lo);
            qcow2_rw_task_issue(t, s->data, FQ_OP_READ, lo, &t->cvec, 1, 0, hi - lo);
            break;
        }
        qcow2_rw_task_issue(t, s->data, FQ_OP_READ, x.host, req->iov, req->iovcnt, iov_off, x.len);
        break;
    case QK_UNALLOC:
        if (s->bs->backing && q->pos < s->bs->backing->size) {
            uint64_t n = FQ_MIN(x.len, s->bs->backing->size - q->pos);
            if (!(t = qcow2_rw_task_new(q, T_BACKING, q->pos, n)))
                return -ENOMEM;
            qcow2_rw_task_issue(t, s->bs->backing, FQ_OP_READ, q->pos, req->iov, req->iovcnt, iov_off, n);
            x.len = n;
            break;
        }
        /* fall through */
    case QK_ZERO:
        fq_iov_memset(req->iov, req->iovcnt, iov_off, 0, (size_t)x.len);
        break;
    case QK_COMPRESSED: {
        uint64_t host, nbytes;
        qcow2_compressed_loc(s, x.l2e, &host, &nbytes);
        if (!(t = qcow2_rw_task_new(q, T_COMPRESSED, q->pos, x.len)))
            return -ENOMEM;
        t->buf = fq_memalign((size_t)nbytes);
        t->buf2 = fq_memalign((size_t)s->cluster_size);
        if (!t->buf || !t->buf2 || fq_iovb_add(&t->iovb, t->buf, (size_t)nbytes) < 0) {
            qcow2_rw_task_free(t);
            return -ENOMEM;
        }
        qcow2_rw_task_issue(t, s->file, FQ_OP_READ, host, t->iovb.v, t->iovb.cnt, 0, nbytes);
        break;
    }
    }
    q->pos += x.len;
    return 0;
}

/* ---- write ---- */

/* Write data source for the current step: the request's iovecs, or zeros. */
struct wsrc {
    const struct iovec *iov;
    int iovcnt;
    size_t iov_off;           /* of guest offset q->pos */
    bool zero;                /* iov is a transient zero buffer */
};

/* An allocating write of the run at q->pos (at most len bytes), or, over
 * a zero cluster that keeps its host cluster (ours), a write into that
 * cluster: the same task, linking the cluster back as data, with nothing
 * allocated (as qemu writes there). */
static int alloc_write(struct qreq *q, uint64_t len, const struct wsrc *src,
                       const struct qextent *x)
{
    struct qcow2 *s = q->s;
    uint64_t cs = s->cluster_size;
    uint64_t gc0 = q->pos >> s->cluster_bits;
    /* not beside an allocating write in flight there (a synchronous
     * request bypassing it would share the cluster with it: that write's
     * head and tail fills would land over this data) */
    bool reuse = x->kind == QK_ZERO && x->has_host && x->copied && !s->extl2 &&
                 !qcow2_has_data_file(s) && !qcow2_rw_allocs_overlap(s, gc0, 1);
    /* within one L2 cache entry, which stays pinned until the link */
    uint64_t per = s->l2_cache.slice / s->l2_entry_size;
    len = FQ_MIN(len, ((gc0 | (per - 1)) + 1) * cs - q->pos);
    if (reuse)
        len = FQ_MIN(len, (gc0 + 1) * cs - q->pos);
    uint64_t gc1 = (q->pos + len - 1) >> s->cluster_bits;
    uint64_t n = gc1 - gc0 + 1, wend = FQ_MIN(q->end, (gc1 + 1) * cs);
    uint64_t head = q->pos - gc0 * cs, tail = (gc1 + 1) * cs - wend;
    struct qtask *t;
    int r = qcow2_rw_wait_allocs(q, gc0, n);

    if (r)
        return r;
    if (!reuse && (r = qcow2_rw_alloc_turn(q)) < 0)
        return r;
    if (!(t = qcow2_rw_task_new(q, T_ALLOC, gc0 * cs, n * cs)))
        return -ENOMEM;
    r = -ENOMEM;
    if ((head && !(t->buf = fq_memalign((size_t)head))) ||
        (tail && !(t->buf2 = fq_memalign((size_t)tail))) ||
        fq_iovb_add(&t->iovb, t->buf, (size_t)head) < 0 ||
        fq_iovb_add_slice(&t->iovb, src->iov, src->iovcnt, src->iov_off, (size_t)(wend - q->pos)) < 0 ||
        fq_iovb_add(&t->iovb, t->buf2, (size_t)tail) < 0)
        goto fail;
    /* the L2 table first, so that data stays after it (as qemu lays out);
     * its entry stays pinned for the link */
    uint64_t idx;
    r = qcow2_rw_alloc_parked(q, qcow2_get_l2_slice(s, gc0, true, &t->l2, &idx));
    if (r < 0)
        goto fail;
    if (reuse) {
        uint64_t host = FQ_ALIGN_DOWN(x->host, cs);
        if (qcow2_overlaps_metadata(s, host, cs)) {
            qcow2_signal_corruption(s, "data write to 0x%llx (guest 0x%llx) would overwrite metadata",
                                    (unsigned long long)host, (unsigned long long)q->pos);
            r = -EIO;
            goto fail;
        }
        t->host = host;
        t->reused = true;
    } else {
        r = qcow2_rw_alloc_parked(q, qcow2_alloc_data(s, gc0, n, &t->host));
        if (r < 0)
            goto fail;
        qcow2_rw_alloc_turn_done(q);
        s->aw = NULL;            /* allocated: the rest of the step cannot park */
        qcow2_extend_ahead(s, t->host, t->host + n * cs);
    }
    t->n = n;
    t->wguest = q->pos;
    t->wlen = wend - q->pos;
    t->src_iov = src->iov;
    t->src_cnt = src->iovcnt;
    t->src_off = src->iov_off;
    t->src_zero = src->zero;
    t->alloc = qcow2_rw_alloc_register(s, gc0, n);
    if (!t->alloc) {
        if (!t->reused)
            qcow2_unref_data(s, t->host, n);
        qcow2_rw_task_free(t);
        return -ENOMEM;
    }
    q->pos = wend;
    qcow2_rw_alloc_issue(t, gc0 * cs, head, wend, tail, t->host, n * cs);
    return 0;
fail:
    qcow2_rw_task_free(t);
    return r;
}

/* Extended L2: write the part of one cluster the request covers at
 * subcluster granularity: only the subclusters touched are written (their
 * uncovered edges filled with their current content), into the cluster's
 * own host cluster or into a newly allocated one, and their allocation bits
 * are set when the write completed. The other subclusters keep reading as
 * they did (backing file, zeros or data). */
static int subcluster_write(struct qreq *q, const struct wsrc *src, uint64_t host, bool copied)
{
    struct qcow2 *s = q->s;
    uint64_t cs = s->cluster_size, scs = s->subcluster_size;
    uint64_t gc = q->pos >> s->cluster_bits, cstart = gc * cs;
    uint64_t wend = FQ_MIN(q->end, cstart + cs);
    unsigned sc0 = (unsigned)((q->pos - cstart) / scs), sc1 = (unsigned)((wend - 1 - cstart) / scs);
    uint64_t lo = cstart + sc0 * scs, hi = cstart + (uint64_t)(sc1 + 1) * scs;
    uint64_t head = q->pos - lo, tail = hi - wend;
    struct qtask *t;
    int r = qcow2_rw_wait_allocs(q, gc, 1);

    if (r)
        return r;
    if ((!host || !copied) && (r = qcow2_rw_alloc_turn(q)) < 0)
        return r;
    if (!(t = qcow2_rw_task_new(q, T_SUB, q->pos, wend - q->pos)))
        return -ENOMEM;
    r = -ENOMEM;
    if ((head && !(t->buf = fq_memalign((size_t)head))) ||
        (tail && !(t->buf2 = fq_memalign((size_t)tail))) ||
        fq_iovb_add(&t->iovb, t->buf, (size_t)head) < 0 ||
        fq_iovb_add_slice(&t->iovb, src->iov, src->iovcnt, src->iov_off, (size_t)(wend - q->pos)) < 0 ||
        fq_iovb_add(&t->iovb, t->buf2, (size_t)tail) < 0)
        goto fail;
    uint64_t idx;
    if ((r = qcow2_rw_alloc_parked(q, qcow2_get_l2_slice(s, gc, true, &t->l2, &idx))) < 0)
        goto fail;
    if (!host || !copied) {
        if ((r = qcow2_rw_alloc_parked(q, qcow2_alloc_data(s, gc, 1, &host))) < 0)
            goto fail;
        qcow2_rw_alloc_turn_done(q);
        s->aw = NULL;        /* allocated: the rest of the step cannot park */
        qcow2_extend_ahead(s, host, host + cs);
        t->n = 1;
    } else if (!qcow2_has_data_file(s) && qcow2_overlaps_metadata(s, host, cs)) {
        qcow2_signal_corruption(s, "data write to 0x%llx (guest 0x%llx) would overwrite metadata",
                                (unsigned long long)host, (unsigned long long)q->pos);
        r = -EIO;
        goto fail;
    }
    t->host = host;
    t->sc_mask = (uint32_t)(((2ull << sc1) - 1) & ~((1ull << sc0) - 1));
    t->wguest = q->pos;
    t->wlen = wend - q->pos;
    t->src_iov = src->iov;
    t->src_cnt = src->iovcnt;
    t->src_off = src->iov_off;
    t->src_zero = src->zero;
    t->alloc = qcow2_rw_alloc_register(s, gc, 1);
    if (!t->alloc) {
        qcow2_unref_data(s, host, t->n);
        r = -ENOMEM;
        goto fail;
    }
    q->pos = wend;
    qcow2_rw_alloc_issue(t, lo, head, wend, tail, host + (lo - cstart), hi - lo);
    return 0;
fail:
    qcow2_rw_task_free(t);
    return r;
}

static int write_step(struct qreq *q, uint64_t max, const struct wsrc *src)
{
    struct qcow2 *s = q->s;
    struct qextent x;
    int r = qcow2_lookup(s, q->pos, max, &x);

    if (r < 0)
        return r;
    if (s->extl2 && x.kind != QK_COMPRESSED && !(x.kind == QK_DATA && x.copied &&
                                                q->pos + x.len >= FQ_MIN(q->end,
                                                FQ_ALIGN_UP(q->pos + 1, s->cluster_size)))) {
        /* the cluster's own entry decides: ours (or none) -> subclusters */
        struct qcache_entry *l2;
        uint64_t idx, e = 0;
        if ((r = qcow2_get_l2_slice(s, q->pos >> s->cluster_bits, false, &l2, &idx)) < 0)
            return r;
        if (l2) {
            e = qcow2_l2e_get(s, l2->data, idx);
            qcache_put(&s->l2_cache, l2);
        }
        uint64_t host = e & L2E_OFFSET_MASK;
        if (!(e & L2E_COMPRESSED) && (!host || (e & L2E_COPIED)))
            return subcluster_write(q, src, host, (e & L2E_COPIED) != 0);
    }
    if (x.kind == QK_DATA && x.copied) {
        uint64_t len = x.len;
        if (s->extl2) {
            /* a cluster only partly writable in place is rewritten whole */
            uint64_t cend = FQ_ALIGN_DOWN(q->pos + len, s->cluster_size);
            uint64_t cover = FQ_MIN(q->end, FQ_ALIGN_UP(q->pos + len, s->cluster_size));
            if (q->pos + len < cover)
                len = cend > q->pos ? cend - q->pos : 0;
            if (len && (r = qcow2_rw_wait_allocs(q, q->pos >> s->cluster_bits,
                                        FQ_DIV_UP(q->pos + len, s->cluster_size) -
                                        (q->pos >> s->cluster_bits))))
                return r;
        }
        if (len) {
            if (!qcow2_has_data_file(s) && qcow2_overlaps_metadata(s, x.host, len)) {
                qcow2_signal_corruption(s, "data write to 0x%llx (guest 0x%llx) would overwrite metadata",
                                        (unsigned long long)x.host, (unsigned long long)q->pos);
                return -EIO;
            }
            struct qtask *t = qcow2_rw_task_new(q, T_WRITE, q->pos, len);
            if (!t)
                return -ENOMEM;
            if (fq_iovb_add_slice(&t->iovb, src->iov, src->iovcnt, src->iov_off, (size_t)len) < 0) {
                qcow2_rw_task_free(t);
                return -ENOMEM;
            }
            if (s->extl2) {
                /* a subcluster write to this cluster fills partial
                 * subclusters from what is on disk: it must wait for us */
                uint64_t gc = q->pos >> s->cluster_bits;
                t->alloc = qcow2_rw_alloc_register(s, gc, FQ_DIV_UP(q->pos + len, s->cluster_size) - gc);
                if (!t->alloc) {
                    qcow2_rw_task_free(t);
                    return -ENOMEM;
                }
                t->wguest = q->pos;
                t->wlen = len;
                t->src_iov = src->iov;
                t->src_cnt = src->iovcnt;
                t->src_off = src->iov_off;
                t->src_zero = src->zero;
            }
            q->pos += len;
            qcow2_rw_task_issue(t, s->data, FQ_OP_WRITE, x.host, t->iovb.v, t->iovb.cnt, 0, len);
            return 0;
        }
    }
    return alloc_write(q, x.len, src, &x);
}

/* ---- zeroing (zero.c plans it) ---- */

int qcow2_rw_write_zeros(struct qreq *q, uint64_t len)
{
    struct iovec z = { (void *)fq_zero_buffer((size_t)len), (size_t)len };
    struct wsrc src = { &z, 1, 0, true };
    uint64_t save_end = q->end;

    if (!z.iov_base)
        return -EINVAL;
    /* the zero source covers just this piece */
    q->end = q->pos + len;
    int r = write_step(q, len, &src);
    q->end = save_end;
    return r;
}

/* ---- the planner ---- */

/* A flush: the metadata written back (asynchronously, by a write-back
 * started after the flush arrived; one in flight is waited for first),
 * then the file flushed. */
static int flush_step(struct qreq *q)
{
    struct qcow2 *s = q->s;
    int r;

    if (s->wb_full_done <= q->flush_seq) {
        /* no whole write-back since it arrived yet */
        if (s->wb) {
            /* one in flight (even for a request gone synchronous: it
             * ends through the loop): wait for it, then for a whole one */
            qcow2_wb_join_whole(s, &q->mw.w);
            return QCOW2_PARKED;
        }
        /* asynchronously (parked until it ended: wb_full_done tells), or
         * nothing was dirty, or written synchronously */
        r = s->aw ? qcow2_wb_start(s, &q->mw.w) : qcow2_writeback(s);
        if (r < 0)
            return r;           /* QCOW2_PARKED included */
    }
    struct qtask *t = qcow2_rw_task_new(q, T_FLUSH, 0, 0);
    if (!t)
        return -ENOMEM;
    q->pos = q->end;
    qcow2_rw_task_issue(t, s->file, FQ_OP_FLUSH, 0, NULL, 0, 0, 0);
    if (qcow2_separate_data(s)) {
        /* data overwritten in place is in the data file alone */
        if (!(t = qcow2_rw_task_new(q, T_FLUSH, 0, 0)))
            return -ENOMEM;
        qcow2_rw_task_issue(t, s->data, FQ_OP_FLUSH, 0, NULL, 0, 0, 0);
    }
    return 0;
}

static int plan_step(struct qreq *q)
{
    struct fq_req *req = q->req;

    switch (req->op) {
    case FQ_OP_READ:
        return read_step(q);
    case FQ_OP_WRITE: {
        struct wsrc src = { req->iov, req->iovcnt, req->iov_off + (size_t)(q->pos - req->off), false };
        return write_step(q, q->end - q->pos, &src);
    }
    case FQ_OP_WRITE_ZEROES:
    case FQ_OP_DISCARD:
        return qcow2_zero_step(q);
    case FQ_OP_FLUSH:
        return flush_step(q);
    }
    return -EINVAL;
}

/* Steps run in the request's asynchronous context unless it must stay
 * synchronous. */
static bool meta_async(const struct qreq *q)
{
    return !q->sync && !q->s->bs->sync_parent;
}

void qcow2_rw_plan(struct qreq *q)
{
    struct qcow2 *s = q->s;
    struct qmeta_wait *outer = s->aw;

    if (q->planning || q->finished)
        return;
    q->planning = true;
    while (!q->parked && q->pos < q->end && fq_pool_can_start(&q->pool)) {
        s->aw = meta_async(q) && q->mw.parks < QCOW2_PARK_MAX ? &q->mw : NULL;
        int r = plan_step(q);
        s->aw = outer;
        if (r == QCOW2_PARKED) {
            q->parked = true;    /* its waiter is queued: planned again later */
            q->mw.parks++;
            break;
        }
        if (r < 0) {
            fq_pool_fail(&q->pool, r);
            qcache_release_held(&q->mw);
            qcow2_rw_alloc_turn_done(q);
            qcow2_rw_alloc_queue_go(s);
            break;
        }
        if (!q->parked) {
            qcache_release_held(&q->mw);    /* the step completed */
            q->mw.parks = 0;
        }
        qcow2_rw_alloc_queue_go(s);
    }
    q->planning = false;
    qcow2_rw_maybe_finish(q);
}

/* A table arrived or a write-back ended: plan the parked request again. */
static void meta_wake(struct qcache_waiter *w, int err)
{
    struct qreq *q = (struct qreq *)((char *)w - offsetof(struct qreq, mw.w));

    q->parked = false;
    if (err < 0) {
        fq_pool_fail(&q->pool, err);
        qcache_release_held(&q->mw);
        qcow2_rw_alloc_turn_done(q);
        qcow2_rw_alloc_queue_go(q->s);
    }
    qcow2_rw_plan(q);
}

static int check_req(struct qcow2 *s, struct fq_req *req)
{
    uint64_t end = qcow2_rw_req_limit(s, req);

    if (req->op != FQ_OP_FLUSH && (req->off > end || req->len > end - req->off))
        return -EINVAL;
    if (req->op == FQ_OP_FLUSH)
        return 0;
    if (!s->data && req->op != FQ_OP_FLUSH)
        return -EIO;        /* opened without its external data file */
    if (req->op == FQ_OP_READ)
        return 0;
    if (s->readonly)
        return -EROFS;
    if (s->corrupt)
        return -EIO;
    if (s->bm)
        qcow2_bitmaps_dirty(s, req->off, req->len);
    return 0;
}

static void init_req(struct qreq *q, struct qcow2 *s, struct fq_req *req, bool sync)
{
    /* every field but the held-entry arrays (nheld says how many are set) */
    q->s = s;
    q->req = req;
    q->sync = sync;
    q->planning = q->in_submit = q->parked = q->finished = false;
    q->flush_seq = s->wb_seq;
    q->zfill_end = 0;
    q->alloc_parked = false;
    q->next_waiter = NULL;
    q->pos = req->off;
    q->end = req->op == FQ_OP_FLUSH ? req->off + 1 : req->off + req->len;
    q->mw.w.next = NULL;
    q->mw.w.wake = meta_wake;
    q->mw.parks = 0;
    q->mw.nheld = 0;
    fq_pool_init(&q->pool, sync ? 1 : fq_depth_limit(s->depth));
}

void qcow2_rw_init(struct qcow2 *s)
{
    fq_fl_init(&s->req_fl, sizeof(struct qreq), 256);
    fq_fl_init(&s->task_fl, sizeof(struct qtask), 256);
}

void qcow2_rw_fini(struct qcow2 *s)
{
    fq_fl_drain(&s->req_fl);
    fq_fl_drain(&s->task_fl);
}

void qcow2_submit(struct fq_bdev *bs, struct fq_req *req)
{
    struct qcow2 *s = bs->priv;
    int r = check_req(s, req);
    struct qreq *q;

    if (r == 0 && qcow2_crypt_unaligned(s, req)) {
        /* read-modify-write of whole sectors, synchronous */
        fq_req_complete_later(bs, req, qcow2_crypt_rmw(bs, req));
        return;
    }
    if (r < 0 || !(q = fq_fl_get(&s->req_fl))) {
        fq_req_complete_later(bs, req, r < 0 ? r : -ENOMEM);
        return;
    }
    init_req(q, s, req, false);
    if (s->clean_interval_ns)
        qcow2_cache_tick(s);
    q->in_submit = true;
    qcow2_rw_plan(q);
    /* q may be finished but is freed only by its bottom half */
    if (!q->finished)
        q->in_submit = false;
}

int qcow2_io_sync(struct fq_bdev *bs, struct fq_req *req)
{
    struct qcow2 *s = bs->priv;
    struct qreq q;
    int r = check_req(s, req);

    if (r < 0)
        return r;
    if (qcow2_crypt_unaligned(s, req))
        return qcow2_crypt_rmw(bs, req);
    init_req(&q, s, req, true);
    qcow2_rw_plan(&q);
    return q.pool.err;
}
