/* common/xfer.c: the job engine that compare and convert share (xfer.h):
 * job slots and their references, reads, the cached status runs of each
 * image, opening both images on one context, and the job buffers.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "xfer.h"

/* Record the first error: its -errno, offset and side. */
static void xfer_fail(struct xfer *x, int ret, uint64_t off, int side)
{
    if (!x->err) {
        x->err = ret;
        x->err_off = off;
        x->err_side = side;
    }
}

void job_release(struct job *j)
{
    j->state = J_FREE;
    j->x->busy--;
    fq_depth_end(j->x->depth, j->len);
    j->x->done += j->len;
    img_progress(&j->x->pg, j->x->done, j->x->total, false);
}

/* Drop a reference; the last one after the reads hands the job on. */
void job_put(struct job *j)
{
    if (--j->pending > 0)
        return;
    if (j->state == J_READING)
        j->x->on_read(j);
    else
        job_release(j);
}

void job_cb(struct job *j, int ret, int side)
{
    if (ret < 0)
        xfer_fail(j->x, ret, j->off, side);
    job_put(j);
}

static void read_cb0(void *j, int ret) { job_cb(j, ret, 0); }
static void read_cb1(void *j, int ret) { job_cb(j, ret, 1); }

void job_read(struct job *j, int s)
{
    j->iov[s] = (struct iovec){ j->buf[s], j->len };
    j->pending++;
    int r = fq_aio_preadv(j->x->img[s], &j->iov[s], 1, 0, j->len, j->off, s ? read_cb1 : read_cb0, j);
    if (r < 0)
        job_cb(j, r, s);
}

/* A free job set up for [off, off+len), or NULL after running the loop. */
struct job *job_get(struct xfer *x, uint64_t off, uint64_t len)
{
    for (int i = 0; i < x->njobs; i++) {
        struct job *j = &x->job[i];
        if (j->state != J_FREE || (x->depth && x->busy >= (int)fq_depth_limit(x->depth)))
            continue;
        fq_depth_start(x->depth);
        *j = (struct job){ .x = x, .off = off, .len = len, .seq = x->next_seq++, .pending = 1,
                           .state = J_READING, .buf = { j->buf[0], j->buf[1] }, .iov = j->iov };
        x->busy++;
        return j;
    }
    int r = fq_ctx_inflight(x->ctx) ? fq_ctx_run(x->ctx, 1, -1) : -EIO;   /* -EIO: stuck */
    if (r < 0)
        xfer_fail(x, r, off, 0);
    return NULL;
}

void xfer_drain(struct xfer *x)
{
    while (x->busy && fq_ctx_inflight(x->ctx) && fq_ctx_run(x->ctx, 1, -1) >= 0)
        ;
}

/* The status of image s at `off`: its flags, and 0x100 if the run reaches
 * the end of the image. For compare -s, runs are merged as far as qemu's
 * block status would report them (equal flags and layer, continuing host
 * offsets, a compressed cluster alone) since the end bit depends on it.
 * The run is cached. Returns 0 or a negative errno. */
int xfer_status(struct xfer *x, int s, uint64_t off, uint64_t *len, unsigned *st)
{
    struct fq_map_entry *m = &x->run[s], n;
    int r = 0;

    if (off < m->start || off >= m->start + m->length) {
        r = fq_map(x->img[s], off, x->size[s] - off, m);
        while (x->strict && r == 0 && m->length && m->start + m->length < x->size[s] &&
               !(m->flags & FQ_MAP_COMPRESSED)) {
            uint64_t next = m->start + m->length;
            if (fq_map(x->img[s], next, x->size[s] - next, &n) < 0 || n.flags != m->flags ||
                n.depth != m->depth ||
                ((m->flags & FQ_MAP_OFFSET) && n.host_offset != m->host_offset + m->length))
                break;
            m->length += n.length;
        }
        /* otherwise runs of the same status and layer are merged, their
         * host offsets aside, up to a job's size: a job over a fragmented
         * image is then one request, whose pieces the image reads in
         * parallel, and one write */
        uint64_t want = MIN(x->size[s], off + (x->chunk > CHUNK ? x->chunk : CHUNK));
        unsigned same = ~(unsigned)(FQ_MAP_OFFSET | FQ_MAP_COMPRESSED);
        while (!x->strict && r == 0 && m->length && m->start + m->length < want) {
            uint64_t next = m->start + m->length;
            if (fq_map(x->img[s], next, x->size[s] - next, &n) < 0 ||
                (n.flags & same) != (m->flags & same) || n.depth != m->depth)
                break;
            m->length += n.length;
        }
        if (r < 0 || m->length == 0) {
            m->length = 0;
            return r < 0 ? r : -EIO;
        }
    }
    *len = m->start + m->length - off;
    *st = (m->flags & ~(FQ_MAP_COMPRESSED | FQ_MAP_PAST_BACKING)) |
          (m->start + m->length >= x->size[s] ? 0x100 : 0);
    return 0;
}

/* Open image s on the shared context (made on first use). Returns 0 or
 * -1 after printing the error. */
int xfer_open(struct xfer *x, int s, struct fq_open_opts *o)
{
    char err[FQ_ERR_MAX] = "";

    if (!x->ctx && fq_ctx_new(FQ_ENGINE_DEFAULT, &x->ctx, err) < 0) {
        tool_error("%s", err);
        return -1;
    }
    o->ctx = x->ctx;
    if (!(x->img[s] = img_open(x->name[s], o)))
        return -1;
    x->size[s] = fq_size(x->img[s]);
    return 0;
}

/* Allocate the job buffers. Returns 0 or -1 after printing the error. */
int xfer_alloc(struct xfer *x, int nbuf, size_t niov)
{
    /* one allocation for every buffer, touched only as jobs use them:
     * physically contiguous pieces where the system gives huge pages */
    size_t sz = ((x->chunk > CHUNK ? x->chunk : CHUNK) + 4095) & ~(size_t)4095;
    if (!(x->arena = fq_buf_alloc(sz * (size_t)nbuf * (size_t)x->njobs))) {
        tool_error("Out of memory");
        return -1;
    }
    for (int i = 0; i < x->njobs; i++) {
        struct job *j = &x->job[i];
        j->iov = calloc(niov, sizeof(*j->iov));
        for (int b = 0; b < nbuf; b++)
            j->buf[b] = x->arena + sz * (size_t)(i * nbuf + b);
        if (!j->iov) {
            tool_error("Out of memory");
            return -1;
        }
    }
    return 0;
}

/* Close what xfer_open and xfer_alloc set up. Returns the result of
 * closing (flushing) the target. */
int xfer_close(struct xfer *x)
{
    int r = 0;

    fq_close(x->img[0]);
    if (x->img[1])
        r = fq_close(x->img[1]);
    for (int i = 0; i < x->njobs; i++)
        free(x->job[i].iov);
    fq_buf_free(x->arena);
    fq_ctx_free(x->ctx);
    fq_depth_free(x->depth);
    return r;
}

bool img_is_zero(const uint8_t *p, size_t n)
{
    size_t head = MIN(n, 16);

    for (size_t i = 0; i < head; i++)
        if (p[i])
            return false;
    return n <= 16 || memcmp(p, p + 16, n - 16) == 0;
}
