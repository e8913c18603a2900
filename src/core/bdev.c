/* bdev.c: helpers common to all block devices: blocking whole-buffer
 * I/O over io_sync, closing a stack, completing a request from the loop.
 * SPDX-License-Identifier: MIT
 */
#include <stdio.h>

#include "driver.h"
#include "util.h"

struct later {
    struct fq_bh bh;
    struct fq_req *req;
    int ret;
};

static void later_bh(void *opaque)
{
    struct later *l = opaque;
    struct fq_req *req = l->req;
    int ret = l->ret;

    free(l);
    req->cb(req, ret);
}

void fq_req_complete_later(struct fq_bdev *bs, struct fq_req *req, int ret)
{
    static struct later emergency;  /* used only if malloc fails */
    struct later *l = malloc(sizeof(*l));

    if (!l) {
        /* Cannot defer without memory: complete inline as a last resort. */
        (void)emergency;
        req->cb(req, ret);
        return;
    }
    l->req = req;
    l->ret = ret;
    fq_ctx_defer(bs->ctx, &l->bh, later_bh, l);
}

/* A request a pass-through device (a filter) forwards to its child. */
struct fwd {
    struct fq_req child;
    struct fq_req *parent;
    struct fq_bdev *bs;
};

static void fwd_done(struct fq_req *req, int ret)
{
    struct fwd *w = (struct fwd *)req;
    struct fq_req *parent = w->parent;
    struct fq_bdev *bs = w->bs, *child = w->child.opaque;

    bs->size = child->size;
    free(w);
    parent->cb(parent, ret);
}

void fq_req_forward(struct fq_bdev *bs, struct fq_bdev *child, struct fq_req *req)
{
    struct fwd *w = malloc(sizeof(*w));

    if (!w) {
        fq_req_complete_later(bs, req, -ENOMEM);
        return;
    }
    w->child = *req;
    w->child.cb = fwd_done;
    w->child.opaque = child;
    w->parent = req;
    w->bs = bs;
    child->ops->submit(child, &w->child);
}

static int rw_sync(struct fq_bdev *bs, enum fq_op op, void *buf, size_t len, uint64_t off,
                   unsigned tag)
{
    struct iovec v = { buf, len };
    struct fq_req req = { .op = op, .off = off, .len = len, .iov = &v, .iovcnt = 1, .tag = tag };

    return bs->ops->io_sync(bs, &req);
}

int fq_req_check(const struct fq_bdev *bs, const struct fq_req *req)
{
    if (req->op == FQ_OP_FLUSH)
        return 0;
    if (req->op != FQ_OP_READ && bs->readonly)
        return -EROFS;
    if (req->off > bs->size || req->len > bs->size - req->off)
        return -EINVAL;
    return 0;
}

int fq_bdev_pread_sync(struct fq_bdev *bs, void *buf, size_t len, uint64_t off)
{
    return rw_sync(bs, FQ_OP_READ, buf, len, off, 0);
}

int fq_bdev_pwrite_sync(struct fq_bdev *bs, const void *buf, size_t len, uint64_t off)
{
    return rw_sync(bs, FQ_OP_WRITE, (void *)buf, len, off, FQ_TAG_DATA);
}

int fq_bdev_pwrite_tagged(struct fq_bdev *bs, const void *buf, size_t len, uint64_t off,
                          unsigned tag)
{
    return rw_sync(bs, FQ_OP_WRITE, (void *)buf, len, off, tag);
}

int fq_bdev_flush_sync(struct fq_bdev *bs)
{
    struct fq_req req = { .op = FQ_OP_FLUSH };

    return bs->ops->io_sync(bs, &req);
}

void fq_bdev_close(struct fq_bdev *bs)
{
    if (!bs)
        return;
    bs->ops->close(bs);
    fq_bdev_close(bs->backing);
    fq_bdev_close(bs->child);
    fq_bdev_close(bs->data);
    free(bs->filename);
    free(bs);
}

int fq_shrink_refused(char *err, uint64_t size, uint64_t used)
{
    fq_seterr(err, "Cannot shrink to %llu bytes: the image holds data past the new end (the "
              "first at guest offset %llu, 0x%llx); without FQ_RESIZE_KEEP_DATA it is dropped",
              (unsigned long long)size,
              (unsigned long long)used, (unsigned long long)used);
    return -ENOTEMPTY;
}

int fq_bdev_map_chain(struct fq_bdev *bs, uint64_t off, uint64_t len, struct fq_map_entry *out)
{
    int depth = 0;

    if (off >= bs->size)
        return -EINVAL;
    len = FQ_MIN(len, bs->size - off);
    /* Walk down the backing chain while the range is not described here. */
    for (;;) {
        int r = bs->ops->map(bs, off, len, out);
        if (r < 0)
            return r;
        out->depth = depth;
        if ((out->flags & FQ_MAP_ALLOCATED) || !bs->backing)
            break;
        uint64_t bsize = bs->backing->size, bvis = FQ_ALIGN_UP(bsize, 512);
        if (off >= bvis) {
            /* beyond the backing file: zeros, not allocated anywhere */
            out->flags = FQ_MAP_ZERO | FQ_MAP_PAST_BACKING;
            break;
        }
        if (off >= bsize) {
            /* the rest of its last 512-byte sector (devices are counted in
             * sectors, as qemu counts them): the backing file's, as zeros */
            out->length = FQ_MIN(out->length, bvis - off);
            out->flags = FQ_MAP_ZERO | FQ_MAP_ALLOCATED;
            if (bs->backing->ops->identity_map) {
                out->flags |= FQ_MAP_OFFSET;
                out->host_offset = off;
            }
            out->depth = depth + 1;
            break;
        }
        uint64_t l = FQ_MIN(out->length, bsize - off);
        len = l;
        bs = bs->backing;
        depth++;
    }
    if (!(out->flags & FQ_MAP_ALLOCATED) && !(out->flags & FQ_MAP_DATA))
        out->flags |= FQ_MAP_ZERO;
    return 0;
}
