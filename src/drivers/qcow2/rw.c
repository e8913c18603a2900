/* rw.c: the request state machines. "Metadata is planned, data is
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
#include "crypt.h"
#include "offload.h"
#include "qcow2.h"

struct qreq {
    struct qcow2 *s;
    struct fq_req *req;
    uint64_t pos, end;
    struct fq_taskpool pool;
    bool sync;               /* io_sync mode */
    bool planning;           /* plan() is on the stack */
    bool in_submit;          /* completing now would be inline: defer */
    bool parked;             /* waiting on a qalloc, a table or a write-back */
    bool finished;
    uint8_t flush_stage;     /* flushes: 1 once its own write-back started */
    bool alloc_parked;       /* its allocating step parked: later ones queue */
    struct qreq *next_waiter;
    struct qmeta_wait mw;    /* the asynchronous context of its steps */
    struct fq_bh bh;
};

enum tkind { T_READ, T_BACKING, T_COMPRESSED, T_WRITE, T_ALLOC, T_SUB, T_FLUSH };

struct qtask {
    struct fq_req child;     /* first: the completion gets it back */
    struct qreq *q;
    enum tkind kind;
    uint64_t guest;          /* guest offset of the task's data */
    uint64_t len;
    size_t iov_off;          /* into the parent's iovec array */
    struct fq_iovb iovb;
    uint8_t *buf;            /* compressed data / fill buffers */
    uint8_t *buf2;
    struct qalloc *alloc;    /* registered range (allocating writes) */
    struct qcache_entry *l2; /* allocating writes: the L2 entry they link
                                into, pinned until then */
    uint64_t host;
    uint64_t n;              /* clusters allocated */
    /* allocating writes: the caller's data, to redo it if bypassed */
    uint64_t wguest, wlen;
    const struct iovec *src_iov;
    int src_cnt;
    size_t src_off;
    bool src_zero;
    uint32_t sc_mask;        /* T_SUB: the subclusters written */
    /* allocating writes: head and tail fills (the current content of the
     * partially written clusters) read asynchronously before the write */
    struct fq_req fill[2];
    struct iovec fill_iov[2];
    int fills;               /* fill reads in flight */
    int fill_err;
    uint64_t wr_off, wr_len; /* the data write issued once filled */
    /* compressed reads: decompression runs on a CPU worker; so does the
     * en/decryption of encrypted data (crypt.c), in cbuf */
    struct fq_job job;
    int jret;
    uint8_t *cbuf;           /* encrypted images: the ciphertext */
    struct iovec cvec;
    size_t chead;            /* reads: bytes of cbuf before the data */
};

static void plan(struct qreq *q);
static void task_done(struct fq_req *child, int ret);

/* ---- in-flight allocation registry ---- */

static struct qalloc *alloc_overlap(struct qcow2 *s, uint64_t first, uint64_t n)
{
    for (struct qalloc *a = s->allocs; a; a = a->next)
        if (first < a->first + a->n && a->first < first + n)
            return a;
    return NULL;
}

static struct qalloc *alloc_register(struct qcow2 *s, uint64_t first, uint64_t n)
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
        plan(w);
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
static int wait_allocs(struct qreq *q, uint64_t first, uint64_t n)
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
static int alloc_turn(struct qreq *q)
{
    struct qcow2 *s = q->s;

    if (!s->aw || q->alloc_parked || !s->alloc_parked)
        return 0;
    qwait_add(&s->alloc_queue, &q->mw.w);
    return QCOW2_PARKED;
}

/* q's allocating step parked (r) inside an allocation. */
static int alloc_parked(struct qreq *q, int r)
{
    if (r == QCOW2_PARKED && !q->alloc_parked) {
        q->alloc_parked = true;
        q->s->alloc_parked++;
    }
    return r;
}

/* q's allocation is done (or given up): the queue may go on once the
 * step is over (alloc_queue_go). */
static void alloc_turn_done(struct qreq *q)
{
    if (q->alloc_parked) {
        q->alloc_parked = false;
        q->s->alloc_parked--;
    }
}

/* Between steps: plan the queued allocating steps if nothing is parked. */
static void alloc_queue_go(struct qcow2 *s)
{
    if (!s->alloc_parked && s->alloc_queue.head)
        qwait_wake_all(&s->alloc_queue, 0);
}

/* ---- tasks ---- */

static struct qtask *task_new(struct qreq *q, enum tkind kind, uint64_t guest, uint64_t len)
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

static void task_free(struct qtask *t)
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
        if (ret < 0)
            qcow2_unref_data(s, t->host, t->n);   /* never referenced */
        else if (t->alloc->bypassed)
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
    task_free(t);
    fq_pool_end(&q->pool, ret);
    if (a && alloc_release(q->s, a, q))
        return;            /* q was planned (and maybe finished and freed) */
    plan(q);
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
static void task_issue(struct qtask *t, struct fq_bdev *dev, enum fq_op op, uint64_t off,
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
static uint64_t req_limit(const struct qcow2 *s, const struct fq_req *req)
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
    uint64_t end = req_limit(s, t->q->req);
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
static void alloc_issue(struct qtask *t, uint64_t hoff, uint64_t head, uint64_t toff,
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

static void maybe_finish(struct qreq *q)
{
    if (q->finished || q->parked || !fq_pool_idle(&q->pool) ||
        (q->pos < q->end && q->pool.err == 0))
        return;
    q->finished = true;
    qcache_release_held(&q->mw);
    /* a request that fails (a task's I/O error) while its allocating step
     * is parked gives its turn up: the steps queued behind it go on */
    if (q->alloc_parked) {
        alloc_turn_done(q);
        alloc_queue_go(q->s);
    }
    if (q->sync)
        return;
    if (q->in_submit)
        fq_ctx_defer(q->s->bs->ctx, &q->bh, finish_bh, q);
    else
        finish_bh(q);
}

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
        if (!(t = task_new(q, T_READ, q->pos, x.len)))
            return -ENOMEM;
        if (s->crypt) {
            /* whole sectors into a buffer, decrypted on completion */
            uint64_t lo = FQ_ALIGN_DOWN(x.host, FQ_CRYPT_SECTOR);
            uint64_t hi = FQ_ALIGN_UP(x.host + x.len, (uint64_t)FQ_CRYPT_SECTOR);
            if (!(t->cbuf = fq_memalign((size_t)(hi - lo)))) {
                task_free(t);
                return -ENOMEM;
            }
            t->cvec = (struct iovec){ t->cbuf, (size_t)(hi - lo) };
            t->chead = (size_t)(x.host - lo);
            task_issue(t, s->data, FQ_OP_READ, lo, &t->cvec, 1, 0, hi - lo);
            break;
        }
        task_issue(t, s->data, FQ_OP_READ, x.host, req->iov, req->iovcnt, iov_off, x.len);
        break;
    case QK_UNALLOC:
        if (s->bs->backing && q->pos < s->bs->backing->size) {
            uint64_t n = FQ_MIN(x.len, s->bs->backing->size - q->pos);
            if (!(t = task_new(q, T_BACKING, q->pos, n)))
                return -ENOMEM;
            task_issue(t, s->bs->backing, FQ_OP_READ, q->pos, req->iov, req->iovcnt, iov_off, n);
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
        if (!(t = task_new(q, T_COMPRESSED, q->pos, x.len)))
            return -ENOMEM;
        t->buf = fq_memalign((size_t)nbytes);
        t->buf2 = fq_memalign((size_t)s->cluster_size);
        if (!t->buf || !t->buf2 || fq_iovb_add(&t->iovb, t->buf, (size_t)nbytes) < 0) {
            task_free(t);
            return -ENOMEM;
        }
        task_issue(t, s->file, FQ_OP_READ, host, t->iovb.v, t->iovb.cnt, 0, nbytes);
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

static int alloc_write(struct qreq *q, uint64_t len, const struct wsrc *src)
{
    struct qcow2 *s = q->s;
    uint64_t cs = s->cluster_size;
    uint64_t gc0 = q->pos >> s->cluster_bits;
    /* within one L2 cache entry, which stays pinned until the link */
    uint64_t per = s->l2_cache.slice / s->l2_entry_size;
    len = FQ_MIN(len, ((gc0 | (per - 1)) + 1) * cs - q->pos);
    uint64_t gc1 = (q->pos + len - 1) >> s->cluster_bits;
    uint64_t n = gc1 - gc0 + 1, wend = FQ_MIN(q->end, (gc1 + 1) * cs);
    uint64_t head = q->pos - gc0 * cs, tail = (gc1 + 1) * cs - wend;
    struct qtask *t;
    int r = wait_allocs(q, gc0, n);

    if (r)
        return r;
    if ((r = alloc_turn(q)) < 0)
        return r;
    if (!(t = task_new(q, T_ALLOC, gc0 * cs, n * cs)))
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
    r = alloc_parked(q, qcow2_get_l2_slice(s, gc0, true, &t->l2, &idx));
    if (r < 0)
        goto fail;
    r = alloc_parked(q, qcow2_alloc_data(s, gc0, n, &t->host));
    if (r < 0)
        goto fail;
    alloc_turn_done(q);
    s->aw = NULL;            /* allocated: the rest of the step cannot park */
    qcow2_extend_ahead(s, t->host, t->host + n * cs);
    t->n = n;
    t->wguest = q->pos;
    t->wlen = wend - q->pos;
    t->src_iov = src->iov;
    t->src_cnt = src->iovcnt;
    t->src_off = src->iov_off;
    t->src_zero = src->zero;
    t->alloc = alloc_register(s, gc0, n);
    if (!t->alloc) {
        qcow2_unref_data(s, t->host, n);
        task_free(t);
        return -ENOMEM;
    }
    q->pos = wend;
    alloc_issue(t, gc0 * cs, head, wend, tail, t->host, n * cs);
    return 0;
fail:
    task_free(t);
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
    int r = wait_allocs(q, gc, 1);

    if (r)
        return r;
    if ((!host || !copied) && (r = alloc_turn(q)) < 0)
        return r;
    if (!(t = task_new(q, T_SUB, q->pos, wend - q->pos)))
        return -ENOMEM;
    r = -ENOMEM;
    if ((head && !(t->buf = fq_memalign((size_t)head))) ||
        (tail && !(t->buf2 = fq_memalign((size_t)tail))) ||
        fq_iovb_add(&t->iovb, t->buf, (size_t)head) < 0 ||
        fq_iovb_add_slice(&t->iovb, src->iov, src->iovcnt, src->iov_off, (size_t)(wend - q->pos)) < 0 ||
        fq_iovb_add(&t->iovb, t->buf2, (size_t)tail) < 0)
        goto fail;
    uint64_t idx;
    if ((r = alloc_parked(q, qcow2_get_l2_slice(s, gc, true, &t->l2, &idx))) < 0)
        goto fail;
    if (!host || !copied) {
        if ((r = alloc_parked(q, qcow2_alloc_data(s, gc, 1, &host))) < 0)
            goto fail;
        alloc_turn_done(q);
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
    t->alloc = alloc_register(s, gc, 1);
    if (!t->alloc) {
        qcow2_unref_data(s, host, t->n);
        r = -ENOMEM;
        goto fail;
    }
    q->pos = wend;
    alloc_issue(t, lo, head, wend, tail, host + (lo - cstart), hi - lo);
    return 0;
fail:
    task_free(t);
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
            if (len && (r = wait_allocs(q, q->pos >> s->cluster_bits,
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
            struct qtask *t = task_new(q, T_WRITE, q->pos, len);
            if (!t)
                return -ENOMEM;
            if (fq_iovb_add_slice(&t->iovb, src->iov, src->iovcnt, src->iov_off, (size_t)len) < 0) {
                task_free(t);
                return -ENOMEM;
            }
            if (s->extl2) {
                /* a subcluster write to this cluster fills partial
                 * subclusters from what is on disk: it must wait for us */
                uint64_t gc = q->pos >> s->cluster_bits;
                t->alloc = alloc_register(s, gc, FQ_DIV_UP(q->pos + len, s->cluster_size) - gc);
                if (!t->alloc) {
                    task_free(t);
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
            task_issue(t, s->data, FQ_OP_WRITE, x.host, t->iovb.v, t->iovb.cnt, 0, len);
            return 0;
        }
    }
    return alloc_write(q, x.len, src);
}

/* ---- zeroing and discard ---- */

/* A raw external data file stays a raw image of the disk: guest range
 * [pos, pos + len) of guest clusters [gc, gc + n), which the L2 entries
 * now say read as zeros, is zeroed in the data file too (registered as
 * an allocation meanwhile, so that a later write there waits for it). */
static int raw_zero(struct qreq *q, uint64_t gc, uint64_t n, uint64_t pos, uint64_t len,
                    bool unmap)
{
    struct qcow2 *s = q->s;
    struct qtask *t = task_new(q, T_WRITE, pos, len);

    if (!t)
        return -ENOMEM;
    t->alloc = alloc_register(s, gc, n);
    if (!t->alloc) {
        task_free(t);
        return -ENOMEM;
    }
    t->wguest = pos;
    t->wlen = len;
    t->src_zero = true;
    t->child.flags = unmap ? FQ_ZERO_MAY_UNMAP : 0;
    task_issue(t, s->data, FQ_OP_WRITE_ZEROES, pos, NULL, 0, 0, len);
    return 0;
}

static int zero_step(struct qreq *q)
{
    struct qcow2 *s = q->s;
    struct fq_req *req = q->req;
    uint64_t cs = s->cluster_size, pos = q->pos;
    bool discard = req->op == FQ_OP_DISCARD;
    uint64_t cend = FQ_ALIGN_UP(pos + 1, cs);

    /* the partial last cluster of the disk counts as whole when the
     * request reaches the end of the disk */
    uint64_t reach = q->end == s->bs->size ? FQ_ALIGN_UP(q->end, cs) : q->end;
    if (FQ_IS_ALIGNED(pos, cs) && reach - pos >= cs) {
        /* whole clusters, up to the end of this L2 slice (each step
         * changes one cache entry) */
        uint64_t gc = pos >> s->cluster_bits;
        uint64_t per = s->l2_cache.slice / s->l2_entry_size;
        uint64_t n = FQ_MIN((reach - pos) / cs, per - (gc & (per - 1)));
        int r = wait_allocs(q, gc, n);
        if (r)
            return r;
        r = qcow2_zero_clusters(s, gc, n, (req->flags & FQ_ZERO_MAY_UNMAP) != 0, discard);
        if (r == 0) {
            uint64_t zend = FQ_MIN(pos + n * cs, q->end);
            if (qcow2_data_raw(s) &&
                (r = raw_zero(q, gc, n, pos, zend - pos,
                              discard || (req->flags & FQ_ZERO_MAY_UNMAP))) < 0)
                return r;
            q->pos = zend;
            return 0;
        }
        if (r != -ENOTSUP)
            return r;
        cend = FQ_MIN(pos + n * cs, q->end);    /* cannot be expressed: write zeros */
    }
    uint64_t len = FQ_MIN(q->end, cend) - pos;
    if (s->extl2) {
        /* part of a cluster: whole subclusters change only their bits */
        uint64_t scs = s->subcluster_size, cstart = FQ_ALIGN_DOWN(pos, cs);
        uint64_t b = FQ_ALIGN_DOWN(FQ_MIN(reach, cend), scs);
        if (!FQ_IS_ALIGNED(pos, scs)) {
            len = FQ_MIN(len, FQ_ALIGN_UP(pos, scs) - pos);   /* head: bytes */
        } else if (b > pos) {
            uint64_t gc = pos >> s->cluster_bits;
            unsigned sc0 = (unsigned)((pos - cstart) / scs), sc1 = (unsigned)((b - cstart) / scs);
            uint32_t mask = (uint32_t)(((1ull << sc1) - 1) & ~((1ull << sc0) - 1));
            int r = wait_allocs(q, gc, 1);
            if (r)
                return r;
            r = qcow2_zero_subclusters(s, gc, mask, (req->flags & FQ_ZERO_MAY_UNMAP) != 0, discard);
            if (r == 0) {
                q->pos = FQ_MIN(b, q->end);
                return 0;
            }
            if (r != -ENOTSUP)
                return r;
            /* compressed: written as zeros (discard: left as is) */
        }
    }
    if (discard) {
        q->pos += len;          /* partial clusters are not discarded */
        return 0;
    }
    struct iovec z = { (void *)fq_zero_buffer((size_t)len), (size_t)len };
    struct wsrc src = { &z, 1, 0, true };
    uint64_t save_end = q->end;
    if (!z.iov_base)
        return -EINVAL;
    /* the zero source covers just this piece */
    q->end = pos + len;
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

    if (s->aw && q->flush_stage == 0) {
        bool own = false;
        r = qcow2_wb_start(s, &q->mw.w, &own);
        if (r == QCOW2_PARKED && own)
            q->flush_stage = 1;
        if (r < 0)
            return r;
    } else if (!s->aw && (r = qcow2_writeback(s)) < 0) {
        return r;
    }
    struct qtask *t = task_new(q, T_FLUSH, 0, 0);
    if (!t)
        return -ENOMEM;
    q->pos = q->end;
    task_issue(t, s->file, FQ_OP_FLUSH, 0, NULL, 0, 0, 0);
    if (qcow2_separate_data(s)) {
        /* data overwritten in place is in the data file alone */
        if (!(t = task_new(q, T_FLUSH, 0, 0)))
            return -ENOMEM;
        task_issue(t, s->data, FQ_OP_FLUSH, 0, NULL, 0, 0, 0);
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
        return zero_step(q);
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

static void plan(struct qreq *q)
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
            alloc_turn_done(q);
            alloc_queue_go(s);
            break;
        }
        if (!q->parked) {
            qcache_release_held(&q->mw);    /* the step completed */
            q->mw.parks = 0;
        }
        alloc_queue_go(s);
    }
    q->planning = false;
    maybe_finish(q);
}

/* A table arrived or a write-back ended: plan the parked request again. */
static void meta_wake(struct qcache_waiter *w, int err)
{
    struct qreq *q = (struct qreq *)((char *)w - offsetof(struct qreq, mw.w));

    q->parked = false;
    if (err < 0) {
        fq_pool_fail(&q->pool, err);
        qcache_release_held(&q->mw);
        alloc_turn_done(q);
        alloc_queue_go(q->s);
    }
    plan(q);
}

static int check_req(struct qcow2 *s, struct fq_req *req)
{
    uint64_t end = req_limit(s, req);

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
    q->flush_stage = 0;
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
    plan(q);
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
    plan(&q);
    return q.pool.err;
}
