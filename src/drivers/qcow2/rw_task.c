/* rw_task.c: the tasks of the request state machines (rw.c): the
 * registry of allocating writes in flight, allocating steps taken in
 * order, the task pool's tasks (data reads and writes, backing reads,
 * compressed clusters, allocating writes with their head and tail fills,
 * the en/decryption of encrypted data on the offload workers) and a
 * request's completion once its range is planned and its tasks are done.
 * SPDX-License-Identifier: MIT
 */
#include "rw.h"

static void task_done(struct fq_req *child, int ret);

/* ---- in-flight allocation registry ---- */

static struct qalloc *alloc_overlap(struct qcow2 *s, uint64_t first, uint64_t n)
{
    for (struct qalloc *a = s->allocs; a; a = a->next)
        if (first < a->first + a->n && a->first < first + n)
            return a;
    return NULL;
}

bool qcow2_rw_allocs_overlap(struct qcow2 *s, uint64_t first, uint64_t n)
{
    return alloc_overlap(s, first, n) != NULL;
}

struct qalloc *qcow2_rw_alloc_register(struct qcow2 *s, uint64_t first, uint64_t n)
{
    struct qalloc *a = calloc(1, sizeof(*a));

    if (!a)
        return NULL;
    a->first = first;
    a->n = n;
    a->next = s->allocs;
    s->allocs = a;
    return a;
}

/* Unregister and restart every request that waited on it. Returns true
 * if `self` was one of them (a request may wait for its own allocation:
 * a zeroing that wrote the head of a cluster, then turns the rest of it
 * into zero subclusters); it was planned then, and may be gone. */
static bool alloc_release(struct qcow2 *s, struct qalloc *a, const struct qreq *self)
{
    bool woke = false;

    struct qalloc **pp = &s->allocs;

    while (*pp && *pp != a)
        pp = &(*pp)->next;
    if (*pp)
        *pp = a->next;
    struct qreq *w = a->waiters;
    free(a);
    while (w) {
        struct qreq *next = w->next_waiter;
        woke |= w == self;
        w->parked = false;
        w->next_waiter = NULL;
        qcow2_rw_plan(w);
        w = next;
    }
    return woke;
}

/* Make q wait for the allocating writes in flight over guest clusters
 * [first, first + n). Returns 1 when q is parked (it re-plans when the
 * allocation linked), 0 when there is nothing to wait for. A synchronous
 * request cannot wait (it must not run the loop): it goes ahead instead and
 * marks those allocations bypassed, so that each, when its data write
 * completes, discards its own clusters and rewrites its data over the new
 * state (merge_bypassed). */
int qcow2_rw_wait_allocs(struct qreq *q, uint64_t first, uint64_t n)
{
    struct qalloc *a = alloc_overlap(q->s, first, n);

    if (!a)
        return 0;
    if (q->sync) {
        for (a = q->s->allocs; a; a = a->next)
            if (first < a->first + a->n && a->first < first + n)
                a->bypassed = true;
        return 0;
    }
    q->parked = true;
    q->next_waiter = a->waiters;
    a->waiters = q;
    return 1;
}

/* ---- allocations in order ----
 * A qcow2 driver allocates host clusters in the order writes arrive, and
 * the host layout follows (convert writes in guest order, gen writes its
 * layouts so). A step that parks in the middle of an allocation would let
 * later writes allocate first; so while one is parked, later allocating
 * steps queue behind it and go on, in order, once it allocated. */

/* 0, or QCOW2_PARKED when q must queue behind a parked allocation. */
int qcow2_rw_alloc_turn(struct qreq *q)
{
    struct qcow2 *s = q->s;

    if (!s->aw || q->alloc_parked || !s->alloc_parked)
        return 0;
    qwait_add(&s->alloc_queue, &q->mw.w);
    return QCOW2_PARKED;
}

/* q's allocating step parked (r) inside an allocation. */
int qcow2_rw_alloc_parked(struct qreq *q, int r)
{
    if (r == QCOW2_PARKED && !q->alloc_parked) {
        q->alloc_parked = true;
        q->s->alloc_parked++;
    }
    return r;
}

/* q's allocation is done (or given up): the queue may go on once the
 * step is over (qcow2_rw_alloc_queue_go). */
void qcow2_rw_alloc_turn_done(struct qreq *q)
{
    if (q->alloc_parked) {
        q->alloc_parked = false;
        q->s->alloc_parked--;
    }
}

/* Between steps: plan the queued allocating steps if nothing is parked. */
void qcow2_rw_alloc_queue_go(struct qcow2 *s)
{
    if (!s->alloc_parked && s->alloc_queue.head)
        qwait_wake_all(&s->alloc_queue, 0);
}

/* ---- tasks ---- */

struct qtask *qcow2_rw_task_new(struct qreq *q, enum tkind kind, uint64_t guest, uint64_t len)
{
    struct qtask *t = fq_fl_get(&q->s->task_fl);

    if (!t)
        return NULL;
    memset(t, 0, sizeof(*t));
    t->q = q;
    t->kind = kind;
    t->guest = guest;
    t->len = len;
    t->iov_off = q->req->iov_off + (size_t)(guest - q->req->off);
    fq_iovb_init(&t->iovb);
    return t;
}

void qcow2_rw_task_free(struct qtask *t)
{
    qcache_put(&t->q->s->l2_cache, t->l2);
    fq_iovb_free(&t->iovb);
    free(t->buf);
    free(t->buf2);
    free(t->cbuf);
    fq_fl_put(&t->q->s->task_fl, t);
}

/* An allocating write that a synchronous request bypassed: its clusters
 * were never linked and may hold stale head/tail content, so drop them and
 * write the caller's data again, over whatever the mapping is now. */
static int merge_bypassed(struct qtask *t)
{
    struct qcow2 *s = t->q->s;
    struct iovec zv = { (void *)fq_zero_buffer((size_t)t->wlen), (size_t)t->wlen };
    struct fq_req w = { .op = FQ_OP_WRITE, .off = t->wguest, .len = t->wlen,
                        .iov = t->src_iov, .iovcnt = t->src_cnt, .iov_off = t->src_off };
    int r = 0;

    if (!t->reused)
        qcow2_unref_data(s, t->host, t->n);
    if (t->src_zero) {
        w.iov = &zv;
        w.iovcnt = 1;
        w.iov_off = 0;
    }
    return r < 0 ? r : qcow2_io_sync(s->bs, &w);
}

/* Finish a task's own work once its I/O completed; returns the result. */
static int task_finish(struct qtask *t, int ret)
{
    struct qreq *q = t->q;
    struct qcow2 *s = q->s;
    struct fq_req *req = q->req;

    if (t->kind != T_BACKING && t->kind != T_FLUSH)
        s->data_inflight--;
    switch (t->kind) {
    case T_COMPRESSED:
        /* decompressed already (on a worker, or here in sync mode) */
        if (ret == 0)
            ret = t->jret;
        if (ret == 0)
            fq_iov_from_buf(req->iov, req->iovcnt, t->iov_off,
                            t->buf2 + (t->guest & (s->cluster_size - 1)), (size_t)t->len);
        break;
    case T_WRITE:
        if (ret == 0 && t->alloc && t->alloc->bypassed)
            ret = merge_bypassed(t);
        break;
    case T_SUB:
        if (ret < 0)
            qcow2_unref_data(s, t->host, t->n);   /* n = 0: in place */
        else if (t->alloc->bypassed)
            ret = merge_bypassed(t);
        else
            ret = qcow2_link_subclusters(s, t->guest >> s->cluster_bits, t->host, t->sc_mask);
        break;
    case T_ALLOC:
        if (ret < 0) {
            /* never referenced; a reused zero cluster stays what it was */
            if (!t->reused)
                qcow2_unref_data(s, t->host, t->n);
        } else if (t->alloc->bypassed)
            ret = merge_bypassed(t);
        else
            ret = qcow2_link_clusters(s, t->guest >> s->cluster_bits, t->n, t->host);
        break;
    default:
        break;
    }
    return ret;
}

static void task_complete(struct qtask *t, int ret)
{
    struct qreq *q = t->q;
    struct qalloc *a = t->alloc;

    if (t->kind != T_FLUSH && !q->sync)
        fq_depth_end(q->s->depth, t->len);

    ret = task_finish(t, ret);
    qcow2_rw_task_free(t);
    fq_pool_end(&q->pool, ret);
    if (a && alloc_release(q->s, a, q))
        return;            /* q was planned (and maybe finished and freed) */
    qcow2_rw_plan(q);
}

static void decompress_run(struct fq_job *job)
{
    struct qtask *t = (struct qtask *)((char *)job - offsetof(struct qtask, job));

    t->jret = qcow2_decompress(t->q->s, t->buf, (size_t)t->child.len, t->buf2);
}

static void decompress_done(struct fq_job *job)
{
    struct qtask *t = (struct qtask *)((char *)job - offsetof(struct qtask, job));

    task_complete(t, 0);
}

/* ---- encrypted data: the en/decryption of a task's cbuf, on a CPU
 * worker (inline in sync mode or without workers) ---- */

/* On a worker: decrypt what a read brought and copy it out. */
static void decrypt_run(struct fq_job *job)
{
    struct qtask *t = (struct qtask *)((char *)job - offsetof(struct qtask, job));
    struct fq_req *req = t->q->req;

    qcow2_crypt_buf(t->q->s, t->child.off, t->cbuf, t->cvec.iov_len, false);
    fq_iov_from_buf(req->iov, req->iovcnt, t->iov_off, t->cbuf + t->chead, (size_t)t->len);
}

/* On a worker: gather what a write carries and encrypt it. */
static void encrypt_run(struct fq_job *job)
{
    struct qtask *t = (struct qtask *)((char *)job - offsetof(struct qtask, job));

    fq_iov_to_buf(t->child.iov, t->child.iovcnt, t->child.iov_off, t->cbuf, (size_t)t->child.len);
    qcow2_crypt_buf(t->q->s, t->child.off, t->cbuf, (size_t)t->child.len, true);
}

static void encrypt_done(struct fq_job *job)
{
    struct qtask *t = (struct qtask *)((char *)job - offsetof(struct qtask, job));
    struct fq_bdev *file = t->q->s->data;   /* data writes only */

    t->child.iov = &t->cvec;
    t->child.iovcnt = 1;
    t->child.iov_off = 0;
    if (t->q->sync)
        task_done(&t->child, file->ops->io_sync(file, &t->child));
    else
        file->ops->submit(file, &t->child);
}

/* Run `run` for t, then `done`: on a worker unless in sync mode. */
static void crypt_job(struct qtask *t, void (*run)(struct fq_job *), void (*done)(struct fq_job *))
{
    t->job.run = run;
    t->job.done = done;
    if (t->q->sync || fq_offload_submit(t->q->s->bs->ctx, &t->job) < 0) {
        run(&t->job);
        done(&t->job);
    }
}

/* A data write of an encrypted image: encrypted into a buffer of its own
 * before it is sent. False if the write is not one. */
static bool crypt_write(struct qtask *t)
{
    if (!t->q->s->crypt || t->child.op != FQ_OP_WRITE ||
        (t->kind != T_WRITE && t->kind != T_ALLOC && t->kind != T_SUB))
        return false;
    if (!FQ_IS_ALIGNED(t->child.off | t->child.len, FQ_CRYPT_SECTOR) ||
        !(t->cbuf = fq_memalign((size_t)t->child.len))) {
        task_done(&t->child, t->cbuf ? -EIO : -ENOMEM);
        return true;
    }
    t->cvec = (struct iovec){ t->cbuf, (size_t)t->child.len };
    crypt_job(t, encrypt_run, encrypt_done);
    return true;
}

static void task_done(struct fq_req *child, int ret)
{
    struct qtask *t = (struct qtask *)child;

    if (t->kind == T_READ && t->cbuf && ret == 0) {
        crypt_job(t, decrypt_run, decompress_done);
        return;
    }
    if (t->kind == T_COMPRESSED && ret == 0) {
        /* several compressed clusters decompress in parallel, off the
         * context's thread; inline in sync mode or without workers */
        t->job.run = decompress_run;
        t->job.done = decompress_done;
        if (t->q->sync || fq_offload_submit(t->q->s->bs->ctx, &t->job) < 0) {
            decompress_run(&t->job);
            task_complete(t, 0);
        }
        return;
    }
    task_complete(t, ret);
}

/* Count a task as started: a pool slot, and host clusters in use by I/O
 * in flight are not freed under it. */
static void task_account(struct qtask *t)
{
    fq_pool_start(&t->q->pool);
    if (t->kind != T_BACKING && t->kind != T_FLUSH)
        t->q->s->data_inflight++;
    if (t->kind != T_FLUSH && !t->q->sync)
        fq_depth_start(t->q->s->depth);
}

/* Send an accounted task's child request to `dev`. */
static void task_send(struct qtask *t, struct fq_bdev *dev, enum fq_op op, uint64_t off,
                      const struct iovec *iov, int iovcnt, size_t iov_off, uint64_t len)
{
    t->child.op = op;
    t->child.off = off;
    t->child.len = len;
    t->child.iov = iov;
    t->child.iovcnt = iovcnt;
    t->child.iov_off = iov_off;
    t->child.cb = task_done;
    if (crypt_write(t))
        return;
    if (t->q->sync)
        task_done(&t->child, dev->ops->io_sync(dev, &t->child));
    else
        dev->ops->submit(dev, &t->child);
}

/* Issue a task's child request to `dev`. */
void qcow2_rw_task_issue(struct qtask *t, struct fq_bdev *dev, enum fq_op op, uint64_t off,
                       const struct iovec *iov, int iovcnt, size_t iov_off, uint64_t len)
{
    task_account(t);
    task_send(t, dev, op, off, iov, iovcnt, iov_off, len);
}

/* A fill read of t completed (or the count held while issuing them is
 * dropped); the last one sends the data write, or fails the task, whose
 * clusters were never referenced. */
static void fill_put(struct qtask *t, int ret)
{
    if (ret < 0 && t->fill_err == 0)
        t->fill_err = ret;
    if (--t->fills > 0)
        return;
    if (t->fill_err < 0) {
        task_complete(t, t->fill_err);
        return;
    }
    task_send(t, t->q->s->data, FQ_OP_WRITE, t->wr_off, t->iovb.v, t->iovb.cnt, 0, t->wr_len);
}

/* How far a request may reach: the end of the disk, or for the VM state
 * area (FQ_REQ_VMSTATE) the end of what the L1 table maps. */
uint64_t qcow2_rw_req_limit(const struct qcow2 *s, const struct fq_req *req)
{
    if (req->flags & FQ_REQ_VMSTATE)
        return (uint64_t)s->l1_size * s->cluster_size * s->l2_entries;
    return s->bs->size;
}

static void fill_done(struct fq_req *fill, int ret)
{
    fill_put(fill->opaque, ret);
}

/* Start reading guest range [off, off+len) of this image into buf as fill
 * `i` of t: through this device's own planner, so it sees the current
 * mapping (backing file, zeros, compressed or shared data) as any reader
 * does. What lies past the end of the disk (a partial last cluster) is
 * zeros. */
static void fill_start(struct qtask *t, int i, void *buf, uint64_t off, uint64_t len)
{
    struct qcow2 *s = t->q->s;
    unsigned vm = t->q->req->flags & FQ_REQ_VMSTATE;
    uint64_t end = qcow2_rw_req_limit(s, t->q->req);
    uint64_t in = off < end ? FQ_MIN(len, end - off) : 0;
    struct fq_req *f = &t->fill[i];

    memset((uint8_t *)buf + in, 0, (size_t)(len - in));
    if (!in)
        return;
    t->fill_iov[i] = (struct iovec){ buf, (size_t)in };
    *f = (struct fq_req){ .op = FQ_OP_READ, .off = off, .len = in, .iov = &t->fill_iov[i],
                          .iovcnt = 1, .flags = vm, .cb = fill_done, .opaque = t };
    t->fills++;
}

/* Issue an allocating write (T_ALLOC, T_SUB) of [host, host+len) from
 * t->iovb once its fills (head [hoff, hoff+head) and tail [toff,
 * toff+tail), guest offsets, into t->buf and t->buf2) are read. In sync
 * mode the fills are read inline. */
void qcow2_rw_alloc_issue(struct qtask *t, uint64_t hoff, uint64_t head, uint64_t toff,
                        uint64_t tail, uint64_t host, uint64_t len)
{
    struct qcow2 *s = t->q->s;

    task_account(t);
    t->wr_off = host;
    t->wr_len = len;
    t->fills = 0;
    if (head)
        fill_start(t, 0, t->buf, hoff, head);
    if (tail)
        fill_start(t, 1, t->buf2, toff, tail);
    if (t->fills == 0) {
        task_send(t, s->data, FQ_OP_WRITE, host, t->iovb.v, t->iovb.cnt, 0, len);
        return;
    }
    /* one count held while submitting, so that no completion sends the
     * write before both fills are out */
    t->fills++;
    for (int i = 0; i < 2; i++) {
        if (!t->fill[i].cb)
            continue;
        if (t->q->sync)
            fill_put(t, qcow2_io_sync(s->bs, &t->fill[i]));
        else
            qcow2_submit(s->bs, &t->fill[i]);
    }
    fill_put(t, 0);
}

/* ---- finishing ---- */

static void finish_bh(void *opaque)
{
    struct qreq *q = opaque;
    struct fq_req *req = q->req;
    int ret = q->pool.err;

    fq_fl_put(&q->s->req_fl, q);
    req->cb(req, ret);
}

void qcow2_rw_maybe_finish(struct qreq *q)
{
    if (q->finished || q->parked || !fq_pool_idle(&q->pool) ||
        (q->pos < q->end && q->pool.err == 0))
        return;
    q->finished = true;
    qcache_release_held(&q->mw);
    /* a request that fails (a task's I/O error) while its allocating step
     * is parked gives its turn up: the steps queued behind it go on */
    if (q->alloc_parked) {
        qcow2_rw_alloc_turn_done(q);
        qcow2_rw_alloc_queue_go(q->s);
    }
    if (q->sync)
        return;
    if (q->in_submit)
        fq_ctx_defer(q->s->bs->ctx, &q->bh, finish_bh, q);
    else
        finish_bh(q);
}

