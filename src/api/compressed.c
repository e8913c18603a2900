/* compressed.c: the public compressed writes (fastqcow.h): synchronous,
 * cluster by cluster, and asynchronous, where each cluster is compressed
 * on an offload worker (in parallel) and stored from the loop. The format
 * driver does the compression and the storing (driver.h).
 * SPDX-License-Identifier: MIT
 */
#include "api/api.h"
#include "core/ctx.h"
#include "offload.h"
#include "util.h"

/* Compressed writes cover whole clusters (the last, partial cluster of
 * the disk included). 0 or -ENOTSUP / -EROFS / -EINVAL. */
static int compressed_args(struct fq_bdev *bs, const struct iovec *iov, int iovcnt,
                           size_t iov_off, size_t len, uint64_t off)
{
    uint64_t cs = bs->cluster, size = bs->size;

    if (!bs->ops->write_compressed || !cs)
        return -ENOTSUP;
    if (bs->readonly)
        return -EROFS;
    if (off % cs || off > size || len > size - off || (len % cs && off + len != size) ||
        iovcnt < 0 || (iovcnt > 0 && !iov) || fq_iov_size(iov, iovcnt) < iov_off + len)
        return -EINVAL;
    return 0;
}

int fq_pwritev_compressed(struct fq_image *img, const struct iovec *iov, int iovcnt,
                          size_t iov_off, size_t len, uint64_t off)
{
    struct fq_bdev *bs = fq_image_bdev(img);
    int r = compressed_args(bs, iov, iovcnt, iov_off, len, off);

    if (r < 0)
        return r;
    uint64_t cs = bs->cluster;
    if (len == 0)
        return 0;
    CLEANUP_FREE uint8_t *buf = fq_memalign((size_t)cs);
    if (!buf)
        return -ENOMEM;
    for (uint64_t pos = 0; pos < len; pos += cs) {
        size_t n = (size_t)FQ_MIN(cs, len - pos);
        fq_iov_to_buf(iov, iovcnt, iov_off + (size_t)pos, buf, n);
        if ((r = bs->ops->write_compressed(bs, buf, off + pos)) < 0)
            return r;
    }
    return fq_image_flush_if_writethrough(img);
}

int fq_pwrite_compressed(struct fq_image *img, const void *buf, uint64_t off)
{
    struct fq_bdev *bs = fq_image_bdev(img);

    if (!bs->ops->write_compressed || !bs->cluster)
        return -ENOTSUP;
    if (off >= bs->size)
        return -EINVAL;
    size_t len = (size_t)FQ_MIN(bs->cluster, bs->size - off);
    struct iovec v = { (void *)buf, len };
    return fq_pwritev_compressed(img, &v, 1, 0, len, off);
}

/* An asynchronous compressed write: one offload job per cluster compresses
 * on a worker thread; the job's completion, on the context's thread,
 * stores the result. The request completes when the last job did (and the
 * submission's own reference went, from the loop: never inside submit). */
struct cwrite {
    struct fq_bh bh;
    struct fq_image *img;
    struct fq_bdev *bs;
    fq_cb *cb;
    void *opaque;
    unsigned pending;
    int err;
};

struct cjob {
    struct fq_job job;        /* first: the pool hands it back */
    struct cwrite *w;
    uint64_t off;
    int64_t clen;
    uint8_t *data;            /* the cluster, zero padded */
    uint8_t *out;             /* cluster size + 512 */
};

static void cw_put(struct cwrite *w)
{
    if (--w->pending > 0)
        return;
    struct fq_ctx *ctx = fq_image_ctx(w->img);
    int ret = w->err ? w->err : fq_image_flush_if_writethrough(w->img);
    fq_cb *cb = w->cb;
    void *opaque = w->opaque;

    free(w);
    fq_ctx_user_done(ctx);
    if (cb)
        cb(opaque, ret);
}

static void cw_release_bh(void *opaque)
{
    cw_put(opaque);
}

static void cjob_run(struct fq_job *job)
{
    struct cjob *c = (struct cjob *)job;

    c->clen = c->w->bs->ops->compress(c->w->bs, c->data, c->out);
}

static void cjob_done(struct fq_job *job)
{
    struct cjob *c = (struct cjob *)job;
    struct cwrite *w = c->w;
    int r = w->err ? 0 : w->bs->ops->store_compressed(w->bs, c->off, c->data, c->out, c->clen);

    if (r < 0 && !w->err)
        w->err = r;
    free(c->data);
    free(c->out);
    free(c);
    cw_put(w);
}

int fq_aio_pwritev_compressed(struct fq_image *img, const struct iovec *iov, int iovcnt,
                              size_t iov_off, size_t len, uint64_t off,
                              fq_cb *cb, void *opaque)
{
    struct fq_bdev *bs = fq_image_bdev(img);
    struct fq_ctx *ctx = fq_image_ctx(img);
    int r = compressed_args(bs, iov, iovcnt, iov_off, len, off);

    if (r < 0)
        return r;
    if (!bs->ops->compress || !bs->ops->store_compressed)
        return -ENOTSUP;
    uint64_t cs = bs->cluster;
    struct cwrite *w = calloc(1, sizeof(*w));
    if (!w)
        return -ENOMEM;
    *w = (struct cwrite){ .img = img, .bs = bs, .cb = cb, .opaque = opaque, .pending = 1 };
    fq_ctx_user_start(ctx);
    for (uint64_t pos = 0; pos < len; pos += cs) {
        size_t n = (size_t)FQ_MIN(cs, len - pos);
        struct cjob *c = calloc(1, sizeof(*c));
        if (!c || !(c->data = fq_zalign((size_t)cs)) || !(c->out = fq_memalign((size_t)cs + 512))) {
            if (c) {
                free(c->data);
                free(c);
            }
            w->err = -ENOMEM;
            break;
        }
        fq_iov_to_buf(iov, iovcnt, iov_off + (size_t)pos, c->data, n);
        c->w = w;
        c->off = off + pos;
        c->job.run = cjob_run;
        c->job.done = cjob_done;
        w->pending++;
        if (fq_offload_submit(ctx, &c->job) < 0) {
            /* no worker: compress here (still completed from the loop) */
            cjob_run(&c->job);
            cjob_done(&c->job);
        }
    }
    fq_ctx_defer(ctx, &w->bh, cw_release_bh, w);
    return 0;
}
