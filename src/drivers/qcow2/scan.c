/* scan.c: many metadata tables read at once, handed over in order.
 *
 * A whole-image walk (check, above all) reads every L2 table or refcount
 * block once. Read one at a time, each read waits for the disk; here the
 * reads are requests on the image file submitted through its context,
 * up to `depth` in flight, while the caller works on the table that came
 * in. Tables are handed over strictly in the order asked for (a slot
 * ring: table i sits in slot i % nslots), so callers that print
 * messages keep their order; callers that do not care sort by host
 * offset, which keeps the disk sequential.
 *
 * Memory: about SCAN_BUDGET bytes of buffers whatever the image (at
 * least three tables): 1 MiB keeps 15 tables of 64 KiB in flight, which
 * is past the point where more depth buys a disk anything for reads in
 * host order, and keeps check's peak memory below qemu-img's. The loop is run with fq_ctx_run, so a scan must not
 * start from inside the loop: that is probed first (the loop refuses to
 * run nested), and such a scan, or one on a device without a context,
 * reads synchronously, one table at a time.
 * SPDX-License-Identifier: MIT
 */
#include "scan.h"

#define SCAN_BUDGET (1u << 20)
#define SCAN_MAX_DEPTH 64

struct slot {
    struct fq_req req;
    struct iovec iov;
    uint8_t *buf;
    bool busy, done;
    int ret;
};

static void slot_done(struct fq_req *req, int ret)
{
    struct slot *sl = req->opaque;

    sl->done = true;
    sl->ret = ret;
}

static void slot_submit(struct qcow2 *s, struct slot *sl, uint64_t off, size_t len)
{
    sl->iov = (struct iovec){ sl->buf, len };
    sl->req = (struct fq_req){ .op = FQ_OP_READ, .off = off, .len = len, .iov = &sl->iov,
                               .iovcnt = 1, .cb = slot_done, .opaque = sl };
    sl->busy = true;
    sl->done = false;
    s->file->ops->submit(s->file, &sl->req);
}

/* One table at a time, blocking. */
static int scan_sync(struct qcow2 *s, size_t n, size_t len, qscan_off_fn *off, qscan_fn *fn,
                     void *opaque)
{
    uint8_t *buf = fq_memalign(len);
    int r = 0;

    if (!buf)
        return -ENOMEM;
    for (size_t i = 0; i < n && r == 0; i++) {
        int ret = fq_bdev_pread_sync(s->file, buf, len, off(opaque, i));
        r = fn(opaque, i, buf, ret);
    }
    free(buf);
    return r;
}

int qcow2_scan(struct qcow2 *s, size_t n, size_t len, qscan_off_fn *off, qscan_fn *fn,
               void *opaque)
{
    struct fq_ctx *ctx = s->file->ctx;
    size_t nslots = FQ_MIN(FQ_MAX(SCAN_BUDGET / len, (size_t)3), (size_t)SCAN_MAX_DEPTH + 1);

    if (n == 0)
        return 0;
    nslots = FQ_MIN(nslots, n + 1);
    /* the loop refuses to run nested (-EDEADLK): then read synchronously */
    if (!ctx || n == 1 || fq_ctx_run(ctx, 0, 0) < 0)
        return scan_sync(s, n, len, off, fn, opaque);

    struct slot *sl = calloc(nslots, sizeof(*sl));
    uint8_t *bufs = fq_memalign(nslots * len);
    int r = 0;

    if (!sl || !bufs) {
        free(sl);
        free(bufs);
        return scan_sync(s, n, len, off, fn, opaque);
    }
    for (size_t j = 0; j < nslots; j++)
        sl[j].buf = bufs + j * len;
    /* nslots - 1 reads in flight while the caller works on one table */
    size_t next = 0;
    for (; next < nslots - 1 && next < n; next++)
        slot_submit(s, &sl[next % nslots], off(opaque, next), len);
    fq_ctx_kick(ctx);
    for (size_t i = 0; i < n && r == 0; i++) {
        struct slot *cur = &sl[i % nslots];
        while (!cur->done) {
            int w = fq_ctx_run(ctx, 0, -1);
            if (w < 0) {
                r = w;
                break;
            }
        }
        if (r < 0)
            break;
        if (next < n) {
            slot_submit(s, &sl[next % nslots], off(opaque, next), len);
            next++;
            fq_ctx_kick(ctx);
        }
        cur->busy = false;
        r = fn(opaque, i, cur->buf, cur->ret);
    }
    /* nothing may complete into freed slots: if the loop fails with
     * reads in flight, the slots are left allocated */
    for (size_t j = 0; j < nslots; j++)
        while (sl[j].busy && !sl[j].done)
            if (fq_ctx_run(ctx, 0, -1) < 0)
                return r < 0 ? r : -EIO;
    free(sl);
    free(bufs);
    return r;
}
