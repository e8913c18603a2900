/* wb.c: the asynchronous ordered write-back: the order of qcow2_writeback
 * (refcount.c), each step's writes issued together through the image
 * file's submit, so that the loop goes on while they are in flight.
 *
 * At its start the write-back takes a copy of every dirty refcount block,
 * L2 table (or slice) and L1 sector (qcache_snapshot_dirty): those entries
 * become clean and stay in the cache, unevictable, until their copy is
 * written. What changes afterwards is dirty again and goes with the next
 * write-back. Since a cluster's refcount is raised before anything links
 * it and a link follows its data write, copies taken at one instant are
 * consistent: every L2 entry copied points at a cluster whose refcount
 * increase is in the copied blocks, and whose data completed before the
 * link (which owed a flush).
 *
 * Steps (each waits for the previous one): the refcount blocks; a flush
 * if one is owed (flush_owed) and tables follow; the L2 tables; a flush
 * and the L1 sectors if any; then, when no data I/O or table read is in
 * flight, a flush, the deferred frees applied to the cache (only those
 * queued before the copies were taken: a later free's table change is not
 * in this write-back) and the refcount blocks they lowered written, so
 * that a flush leaves no leak behind. A flush clears flush_owed when it is
 * issued and sets it again if it fails, so that whatever owes a flush meanwhile keeps
 * owing one. A failed write makes its entry dirty again and ends the
 * write-back with that error, which every waiter gets.
 *
 * An eviction's write-back (qcow2_wb_evict) takes, of the L2 cache, only
 * its oldest dirty entries up to a quarter of its size, so that its
 * copies never double the cache's memory; the refcount blocks are all
 * taken as always. A write-back that leaves dirty L2 entries behind
 * writes no L1 sector (one could point at a table not yet on disk) and
 * applies no frees (a free's table change may be in one left behind):
 * those go with the next whole write-back: a flush, or an eviction while
 * frees are queued (so freed clusters are reused as soon as ever).
 *
 * One write-back is in flight at a time (s->wb). Its copies live until it
 * ends; the synchronous write-back (qcow2_writeback) refuses to run beside
 * it, and a synchronous eviction does not wait for it (the cache grows a
 * little meanwhile). A header or refcount table change (rare: the table
 * grew or a block was added to it) is written back synchronously instead.
 * SPDX-License-Identifier: MIT
 */
#include "qcow2.h"

enum { WB_RB, WB_FLUSH_RB, WB_L2, WB_FLUSH_L2, WB_L1, WB_FLUSH_FREES, WB_FREES, WB_RB_FREED, WB_END };

/* One L1 sector group's copy. */
struct wb_l1 {
    struct fq_req req;        /* first */
    struct iovec iov;
    struct qwb *wb;
    uint64_t chunk;           /* index of 4 KiB piece of the L1 table */
    uint8_t *buf;
};

struct qwb {
    struct qcow2 *s;
    struct qcache_wio *rb, *l2;
    unsigned nrb, nl2, nl1;
    struct wb_l1 *l1;
    struct qfree_vec frees;   /* the deferred frees whose tables are copied */
    struct fq_req flush, flush_data;
    uint64_t seq;             /* its number (s->wb_seq at its start) */
    bool whole;               /* every dirty entry taken */
    bool then_whole;          /* a whole one is wanted right after it */
    int step;
    unsigned pending;         /* I/O of the current step in flight */
    int err;
    bool advancing;
    struct qwait_list waiters;
};

static void advance(struct qwb *wb);

/* An I/O of the current step ended. */
static void step_put(struct qwb *wb, int ret)
{
    if (ret < 0 && wb->err == 0)
        wb->err = ret;
    if (--wb->pending == 0 && !wb->advancing)
        advance(wb);
}

static struct qwb *wb_of_wio(struct qcache_wio *w)
{
    return w->req.opaque;
}

static void wio_done(struct fq_req *req, int ret)
{
    struct qcache_wio *w = (struct qcache_wio *)req;
    struct qwb *wb = wb_of_wio(w);
    bool rb = !w->c->is_l2;

    qcache_wio_finish(w, ret);
    if (ret == 0 && rb)
        wb->s->flush_owed = true;   /* before any table that relies on it */
    step_put(wb, ret);
}

/* Submit every copy of a list (which the write-back gives up). */
static void submit_list(struct qwb *wb, struct qcache_wio **list)
{
    struct qcache_wio *w = *list;

    *list = NULL;
    while (w) {
        struct qcache_wio *next = w->next;
        wb->pending++;
        qcache_wio_submit(w, wio_done, wb);
        w = next;
    }
}

static void flush_done(struct fq_req *req, int ret)
{
    struct qwb *wb = (struct qwb *)((char *)req - offsetof(struct qwb, flush));

    if (ret < 0)
        wb->s->flush_owed = true;   /* it promised nothing */
    step_put(wb, ret);
}

static void flush_data_done(struct fq_req *req, int ret)
{
    struct qwb *wb = (struct qwb *)((char *)req - offsetof(struct qwb, flush_data));

    if (ret < 0)
        wb->s->flush_owed = true;
    step_put(wb, ret);
}

/* Flush the file, and the external data file beside it (the data the
 * tables to come point at). */
static void submit_flush(struct qwb *wb)
{
    struct qcow2 *s = wb->s;

    s->flush_owed = false;   /* paid by this flush unless it fails */
    wb->flush = (struct fq_req){ .op = FQ_OP_FLUSH, .cb = flush_done };
    wb->pending++;
    if (qcow2_separate_data(s)) {
        wb->flush_data = (struct fq_req){ .op = FQ_OP_FLUSH, .cb = flush_data_done };
        wb->pending++;
        s->data->ops->submit(s->data, &wb->flush_data);
    }
    s->file->ops->submit(s->file, &wb->flush);
}

static void l1_done(struct fq_req *req, int ret)
{
    struct wb_l1 *c = (struct wb_l1 *)req;

    if (ret < 0)
        c->wb->s->l1_dirty[c->chunk] = 1;
    step_put(c->wb, ret);
}

static void submit_l1(struct qwb *wb)
{
    struct qcow2 *s = wb->s;

    for (unsigned i = 0; i < wb->nl1; i++) {
        struct wb_l1 *c = &wb->l1[i];
        uint64_t n = FQ_MIN((uint64_t)4096, (uint64_t)s->l1_size * 8 - c->chunk * 4096);
        c->wb = wb;
        c->iov = (struct iovec){ c->buf, (size_t)n };
        c->req = (struct fq_req){ .op = FQ_OP_WRITE, .off = s->l1_offset + c->chunk * 4096,
                                  .len = n, .iov = &c->iov, .iovcnt = 1, .tag = FQ_TAG_L1,
                                  .cb = l1_done };
        wb->pending++;
        s->file->ops->submit(s->file, &c->req);
    }
}

/* The write-back's frees may be applied: nothing can still land in or
 * read the clusters. */
static bool frees_allowed(struct qwb *wb)
{
    struct qcow2 *s = wb->s;

    return wb->frees.len && !s->data_inflight && !qcache_busy(&s->l2_cache) &&
           !qcache_busy(&s->rb_cache);
}

/* Lower the refcounts of the write-back's frees (in the cache; the next
 * write-back writes them). Only the frees queued before the copies were
 * taken: a later one's table change is not in this write-back. */
static int apply_frees(struct qwb *wb)
{
    struct qfree_vec v = wb->frees;
    int r = 0;

    memset(&wb->frees, 0, sizeof(wb->frees));
    for (size_t i = 0; r == 0 && i < v.len; i++)
        r = qcow2_update_refcount(wb->s, v.ptr[i].offset, v.ptr[i].nb_clusters, -1);
    qfree_vec_reset(&v);
    return r;
}

/* Frees not applied go back to the queue (a failed push leaks them:
 * never a reference to a free cluster). */
static void return_frees(struct qwb *wb)
{
    for (size_t i = 0; i < wb->frees.len; i++)
        qcow2_free_deferred(wb->s, wb->frees.ptr[i].offset, wb->frees.ptr[i].nb_clusters);
    qfree_vec_reset(&wb->frees);
}

static int wb_start(struct qcow2 *s, struct qcache_waiter *w, bool part);

static void finish(struct qwb *wb)
{
    struct qcow2 *s = wb->s;
    struct qwait_list w = wb->waiters;
    int err = wb->err;
    bool then_whole = wb->then_whole && err == 0;

    /* copies not written: their entries are dirty again */
    for (struct qcache_wio *x = wb->rb, *n; x; x = n) {
        n = x->next;
        qcache_wio_finish(x, -EIO);
    }
    for (struct qcache_wio *x = wb->l2, *n; x; x = n) {
        n = x->next;
        qcache_wio_finish(x, -EIO);
    }
    for (unsigned i = 0; i < wb->nl1; i++) {
        if (wb->step <= WB_L1)
            s->l1_dirty[wb->l1[i].chunk] = 1;
        free(wb->l1[i].buf);
    }
    free(wb->l1);
    return_frees(wb);
    if (wb->whole && err == 0 && wb->step == WB_END)
        s->wb_full_done = wb->seq;
    s->wb = NULL;
    free(wb);
    if (then_whole) {
        /* before the waiters run, so that no eviction overtakes it: the
         * waiters find it in flight and join it */
        int r = wb_start(s, NULL, false);
        if (r < 0 && r != QCOW2_PARKED)
            err = r;
    }
    qwait_wake_all(&w, err);
}

/* Run the next steps until one has I/O in flight or all are done. */
static void advance(struct qwb *wb)
{
    struct qcow2 *s = wb->s;

    wb->advancing = true;
    while (wb->pending == 0) {
        if (wb->err || wb->step == WB_END) {
            finish(wb);
            return;
        }
        switch (wb->step++) {
        case WB_RB:
            submit_list(wb, &wb->rb);
            break;
        case WB_FLUSH_RB:
            if (s->flush_owed && (wb->nl2 || wb->nl1))
                submit_flush(wb);
            break;
        case WB_L2:
            submit_list(wb, &wb->l2);
            break;
        case WB_FLUSH_L2:
            if (wb->nl1)
                submit_flush(wb);   /* the L2 tables before the L1 */
            break;
        case WB_L1:
            submit_l1(wb);
            break;
        case WB_FLUSH_FREES:
            /* frees become safe once the tables that dropped the clusters
             * are durable */
            if (frees_allowed(wb))
                submit_flush(wb);
            else
                wb->step = WB_END;
            break;
        case WB_FREES:
            if (frees_allowed(wb))
                wb->err = apply_frees(wb);
            else
                wb->step = WB_END;
            break;
        case WB_RB_FREED:
            /* the lowered refcounts, so that a flush leaves no leak */
            wb->err = qcache_snapshot_dirty(&s->rb_cache, 0, &wb->rb, &wb->nrb, NULL);
            if (wb->err == 0)
                submit_list(wb, &wb->rb);
            break;
        }
    }
    wb->advancing = false;
}

/* Copy the dirty L1 sectors. */
static int snapshot_l1(struct qwb *wb)
{
    struct qcow2 *s = wb->s;
    uint64_t bytes = (uint64_t)s->l1_size * 8, chunks = FQ_DIV_UP(bytes, 4096), n = 0;

    for (uint64_t i = 0; i < chunks; i++)
        n += s->l1_dirty[i] != 0;
    if (!n)
        return 0;
    if (!(wb->l1 = calloc(n, sizeof(*wb->l1))))
        return -ENOMEM;
    for (uint64_t i = 0; i < chunks; i++) {
        if (!s->l1_dirty[i])
            continue;
        uint64_t len = FQ_MIN((uint64_t)4096, bytes - i * 4096);
        int r = qcow2_check_meta_write(s, s->l1_offset + i * 4096, len, FQ_TAG_L1);
        struct wb_l1 *c = &wb->l1[wb->nl1];
        if (r < 0)
            return r;
        if (!(c->buf = fq_memalign(4096)))
            return -ENOMEM;
        for (uint64_t j = 0; j < len / 8; j++)
            fq_put_be64(c->buf + j * 8, s->l1[i * 512 + j]);
        c->chunk = i;
        wb->nl1++;
    }
    for (unsigned i = 0; i < wb->nl1; i++)
        s->l1_dirty[wb->l1[i].chunk] = 0;
    return 0;
}

/* Start a write-back of every dirty entry, or (part) of the refcount
 * blocks and the oldest quarter of the L2 cache's worth of dirty tables. */
static int wb_start(struct qcow2 *s, struct qcache_waiter *w, bool part)
{
    struct qwb *wb;
    bool partial = false;
    int r;

    if (s->readonly)
        return 0;
    if (s->wb) {
        if (w)
            qwait_add(&s->wb->waiters, w);
        return QCOW2_PARKED;
    }
    if (s->rt_dirty || s->header_dirty) {
        /* the refcount table or the header changed: rare, written back
         * synchronously in the full order */
        struct qmeta_wait *aw = s->aw;
        s->aw = NULL;
        r = qcow2_writeback(s);
        s->aw = aw;
        return r;
    }
    if (!(wb = calloc(1, sizeof(*wb))))
        return -ENOMEM;
    wb->s = s;
    wb->seq = ++s->wb_seq;
    size_t max = 0;
    /* a partial one cannot apply frees: with any queued, a whole one, so
     * that freed clusters are reused as soon as before */
    if (part && s->pending_frees.len == 0)
        max = FQ_MAX(s->l2_cache.target / 4, (size_t)1);
    r = qcache_snapshot_dirty(&s->rb_cache, 0, &wb->rb, &wb->nrb, NULL);
    if (r == 0)
        r = qcache_snapshot_dirty(&s->l2_cache, max, &wb->l2, &wb->nl2, &partial);
    /* with L2 tables left dirty, the L1 (which may point at them) and the
     * frees (whose table changes may be in them) wait for a later one */
    if (r == 0 && !partial)
        r = snapshot_l1(wb);
    if (!partial) {
        /* the frees whose table changes the copies hold */
        wb->frees = s->pending_frees;
        memset(&s->pending_frees, 0, sizeof(s->pending_frees));
    }
    if (r < 0 || (!wb->nrb && !wb->nl2 && !wb->nl1 && !frees_allowed(wb))) {
        wb->err = r;
        wb->step = WB_RB;
        s->wb = wb;
        finish(wb);         /* nothing to write (or the copies given back) */
        return r;
    }
    if (!wb->nrb && !wb->nl2 && !wb->nl1)
        wb->step = WB_FLUSH_FREES;
    wb->whole = !partial;
    s->wb = wb;
    s->stats.wbs++;
    if (w)
        qwait_add(&wb->waiters, w);
    advance(wb);
    return QCOW2_PARKED;
}

int qcow2_wb_start(struct qcow2 *s, struct qcache_waiter *w)
{
    return wb_start(s, w, false);
}

void qcow2_wb_join_whole(struct qcow2 *s, struct qcache_waiter *w)
{
    if (!s->wb->whole)
        s->wb->then_whole = true;
    qwait_add(&s->wb->waiters, w);
}

int qcow2_wb_evict(struct qcow2 *s, struct qcache_waiter *w)
{
    return wb_start(s, w, true);
}
