/* bdev.c: helpers common to all block devices, and opening a device stack
 * (file -> format driver -> backing chain) from a filename.
 * SPDX-License-Identifier: MIT
 */
#include <stdio.h>

#include "bdev.h"
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

static int rw_sync(struct fq_bdev *bs, enum fq_op op, void *buf, size_t len, uint64_t off)
{
    struct iovec v = { buf, len };
    struct fq_req req = { .op = op, .off = off, .len = len, .iov = &v, .iovcnt = 1 };

    return bs->ops->io_sync(bs, &req);
}

int fq_bdev_pread_sync(struct fq_bdev *bs, void *buf, size_t len, uint64_t off)
{
    return rw_sync(bs, FQ_OP_READ, buf, len, off);
}

int fq_bdev_pwrite_sync(struct fq_bdev *bs, const void *buf, size_t len, uint64_t off)
{
    return rw_sync(bs, FQ_OP_WRITE, (void *)buf, len, off);
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
    free(bs->filename);
    free(bs);
}

#define MAX_CHAIN_DEPTH 64

int fq_bdev_open_chain(struct fq_ctx *ctx, const char *filename, const char *format,
                       const struct fq_open_opts *opts, int depth,
                       struct fq_bdev **out, char *err)
{
    struct fq_bdev *file = NULL, *top = NULL;
    unsigned fflags = 0;
    int r;

    if (depth > MAX_CHAIN_DEPTH) {
        fq_seterr(err, "Backing chain is deeper than %d images (a loop?) at '%s'",
                  MAX_CHAIN_DEPTH, filename);
        return -ELOOP;
    }
    if (opts->readonly || depth > 0)
        fflags |= FQ_FILE_RDONLY;
    if (opts->cache == FQ_CACHE_NONE || opts->cache == FQ_CACHE_DIRECTSYNC)
        fflags |= FQ_FILE_DIRECT;
    r = fq_file_open(ctx, filename, fflags, &file, err);
    if (r < 0)
        return r;
    if (!format) {
        format = fq_qcow2_probe(file) ? "qcow2" : "raw";
    }
    if (!strcmp(format, "raw")) {
        r = fq_raw_open(file, &top, err);
    } else if (!strcmp(format, "qcow2")) {
        struct fq_open_opts o = *opts;
        o.readonly = opts->readonly || depth > 0;
        r = fq_qcow2_open(file, &o, &top, err);
        if (r == 0 && top->backing == NULL && !opts->no_backing) {
            /* the qcow2 driver asks for its backing file through this hook */
        }
    } else {
        fq_seterr(err, "Unknown format '%s' (supported: qcow2, raw)", format);
        r = -EINVAL;
    }
    if (r < 0) {
        fq_bdev_close(file);
        return r;
    }
    *out = top;
    return 0;
}
