/* defrag_io.c: the copier of defragmentation rounds.
 *
 * A job is one destination run (at most 1 MiB) and the source ranges
 * (parts) that fill it; a buffer is read into part by part (zeroed first
 * when the parts leave gaps), then written in one request. The buffers are
 * made as jobs need them (at most MAX_JOBS) and kept from round to round:
 * fresh memory costs a page fault per page. Jobs run many at a time through the context's
 * engine: every part's read is submitted at once, and each job's write as
 * soon as its reads are in, so that reads of scattered clusters overlap and
 * writes stay large. The caller's waiter drives the loop.
 *
 * A failed read or write fails its job; no job starts after a failure,
 * and the copier returns only when nothing it submitted is in flight (the
 * buffers belong to the requests until then).
 * SPDX-License-Identifier: MIT
 */
#include <stdio.h>

#include "defrag.h"

#define MAX_JOBS 32          /* jobs in flight */
#define MAX_REQS 256         /* requests in flight */

struct copier;

struct cjob {
    const struct djob *j;
    uint8_t *buf;             /* one of d->bufs while the job runs */
    unsigned pending;        /* reads in flight */
    int err;
};

struct creq {
    struct fq_req req;
    struct iovec iov;
    struct copier *c;
    struct cjob *job;
    bool write;
};

struct copier {
    struct defrag *d;
    const struct dpart *parts;
    uint8_t **free;          /* buffers not in use */
    size_t nfree;
    unsigned reqs;           /* requests in flight */
    unsigned jobs;           /* jobs started and not finished */
    int err;                 /* first error */
};

static void job_end(struct copier *c, struct cjob *job, int ret)
{
    if (ret < 0 && !c->err)
        c->err = ret;
    if (job->buf)
        c->free[c->nfree++] = job->buf;
    job->buf = NULL;
    c->jobs--;
}

static void req_done(struct fq_req *req, int ret);

static int submit(struct copier *c, struct cjob *job, enum fq_op op, uint64_t off, uint8_t *buf,
                  uint64_t len)
{
    struct creq *q = calloc(1, sizeof(*q));
    struct fq_bdev *f = c->d->s->file;

    if (!q)
        return -ENOMEM;
    q->c = c;
    q->job = job;
    q->write = op == FQ_OP_WRITE;
    q->iov = (struct iovec){ buf, (size_t)len };
    q->req = (struct fq_req){ .op = op, .off = off, .len = len, .iov = &q->iov, .iovcnt = 1,
                              .tag = FQ_TAG_DATA, .cb = req_done, .opaque = q };
    c->reqs++;
    f->ops->submit(f, &q->req);
    return 0;
}

static void req_done(struct fq_req *req, int ret)
{
    struct creq *q = req->opaque;
    struct copier *c = q->c;
    struct cjob *job = q->job;
    bool write = q->write;

    c->reqs--;
    free(q);
    if (write) {
        job_end(c, job, ret);
        return;
    }
    if (ret < 0 && !job->err)
        job->err = ret;
    if (--job->pending > 0)
        return;
    if (job->err || c->err) {
        job_end(c, job, job->err);
        return;
    }
    int r = submit(c, job, FQ_OP_WRITE, job->j->dst, job->buf, job->j->len);
    if (r < 0)
        job_end(c, job, r);
}

/* Start a job in `buf`: every read. */
static void job_start(struct copier *c, struct cjob *job, uint8_t *buf)
{
    const struct djob *j = job->j;
    int r = 0;

    c->jobs++;
    job->buf = buf;
    if (j->zero)
        memset(job->buf, 0, (size_t)j->len);
    if (j->nparts == 0) {
        if ((r = submit(c, job, FQ_OP_WRITE, j->dst, job->buf, j->len)) < 0)
            job_end(c, job, r);
        return;
    }
    /* one more than the reads, held while submitting them */
    job->pending = (unsigned)j->nparts + 1;
    for (size_t i = 0; i < j->nparts; i++) {
        const struct dpart *p = &c->parts[j->part0 + i];
        if ((r = submit(c, job, FQ_OP_READ, p->src, job->buf + p->boff, p->len)) < 0) {
            job->err = r;
            job->pending -= (unsigned)(j->nparts - i);   /* never submitted */
            break;
        }
    }
    if (--job->pending > 0)
        return;
    if (job->err)
        job_end(c, job, job->err);
    else if ((r = submit(c, job, FQ_OP_WRITE, j->dst, job->buf, j->len)) < 0)
        job_end(c, job, r);
}

/* Room for MAX_JOBS buffers of `len` bytes at most, kept in d; the
 * buffers themselves are made as jobs need them. */
static int get_bufs(struct defrag *d, uint64_t len)
{
    if (d->bufs && d->buf_len >= len)
        return 0;
    defrag_copy_free(d);
    if (!(d->bufs = calloc(MAX_JOBS, sizeof(*d->bufs))))
        return -ENOMEM;
    d->buf_len = len;
    return 0;
}

/* A buffer for the next job: a free one, or a new one while fewer than
 * MAX_JOBS exist. NULL if the job must wait (or memory is short and
 * nothing is in flight to wait for: -ENOMEM in *err). */
static uint8_t *take_buf(struct copier *c, int *err)
{
    struct defrag *d = c->d;

    if (c->nfree)
        return c->free[--c->nfree];
    if (d->nbufs == MAX_JOBS)
        return NULL;
    uint8_t *b = fq_memalign((size_t)d->buf_len);
    if (b)
        d->bufs[d->nbufs++] = b;
    else if (!c->jobs)
        *err = -ENOMEM;
    return b;
}

void defrag_copy_free(struct defrag *d)
{
    for (size_t i = 0; d->bufs && i < d->nbufs; i++)
        free(d->bufs[i]);
    free(d->bufs);
    d->bufs = NULL;
    d->nbufs = 0;
    d->buf_len = 0;
}

int defrag_copy(struct defrag *d, const struct djob *jobs, size_t nj, const struct dpart *parts)
{
    struct copier *c = calloc(1, sizeof(*c));
    struct cjob *cj = calloc(nj + 1, sizeof(*cj));
    uint64_t longest = 0;
    size_t next = 0;
    int r = 0;

    for (size_t i = 0; i < nj; i++)
        longest = FQ_MAX(longest, jobs[i].len);
    if (!c || !cj || (r = get_bufs(d, longest)) < 0 ||
        !(c->free = malloc(MAX_JOBS * sizeof(*c->free)))) {
        free(c);
        free(cj);
        return r < 0 ? r : -ENOMEM;
    }
    memcpy(c->free, d->bufs, d->nbufs * sizeof(*c->free));
    c->nfree = d->nbufs;
    c->d = d;
    c->parts = parts;
    for (;;) {
        uint8_t *buf;
        while (next < nj && !c->err &&
               (c->reqs == 0 || c->reqs + jobs[next].nparts + 1 <= MAX_REQS) &&
               (buf = take_buf(c, &c->err))) {
            cj[next].j = &jobs[next];
            job_start(c, &cj[next++], buf);
        }
        if (c->reqs == 0 && (next == nj || c->err))
            break;
        if (c->reqs == 0)
            continue;
        if ((r = d->w->run(d->w->opaque)) < 0) {
            /* the loop cannot run: what is in flight still owns its
             * buffers and this state, which are left to it */
            d->bufs = NULL;
            d->nbufs = 0;
            fq_seterr(d->err, "Could not wait for the copies: %s", strerror(-r));
            return r;
        }
    }
    r = c->err;
    free(c->free);
    free(c);
    free(cj);
    return r;
}
