/* image.c: the public API (fastqcow.h) over a device stack: opening,
 * synchronous wrappers that drive the context loop, asynchronous requests,
 * and the cache-mode policies (writethrough flushes after every write,
 * unsafe drops flushes).
 * SPDX-License-Identifier: MIT
 */
#include <stdio.h>

#include "api/api.h"
#include "core/core.h"
#include "core/ctx.h"
#include "util.h"

struct fq_image {
    struct fq_ctx *ctx;
    bool own_ctx;
    struct fq_bdev *top;
    enum fq_cache_mode cache;
    char format[16];
    struct fq_freelist ureq_fl;   /* public requests for reuse */
};

/* One public request. */
struct ureq {
    struct fq_req req;
    struct fq_image *img;
    fq_cb *cb;
    void *opaque;
    bool flushing;            /* writethrough: flush after the write */
};

int fq_cache_parse(const char *name, enum fq_cache_mode *out)
{
    static const struct { const char *n; enum fq_cache_mode m; } t[] = {
        { "none", FQ_CACHE_NONE }, { "off", FQ_CACHE_NONE },
        { "writeback", FQ_CACHE_WRITEBACK }, { "writethrough", FQ_CACHE_WRITETHROUGH },
        { "directsync", FQ_CACHE_DIRECTSYNC }, { "unsafe", FQ_CACHE_UNSAFE },
    };
    for (size_t i = 0; i < FQ_ARRAY_SIZE(t); i++)
        if (!strcmp(name, t[i].n)) {
            *out = t[i].m;
            return 0;
        }
    return -EINVAL;
}

/* fq_open of a name that is no option list. */
static int open_image(const char *filename, const struct fq_open_opts *opts,
                      struct fq_image **out, char *err)
{
    struct fq_open_opts def;
    struct fq_image *img;
    int r;

    if (!opts) {
        fq_open_opts_init(&def);
        opts = &def;
    }
    img = calloc(1, sizeof(*img));
    if (!img)
        return -ENOMEM;
    fq_fl_init(&img->ureq_fl, sizeof(struct ureq), 256);
    img->cache = opts->cache;
    img->ctx = opts->ctx;
    if (!img->ctx) {
        r = fq_ctx_new(opts->engine, &img->ctx, err);
        if (r < 0) {
            free(img);
            return r;
        }
        img->own_ctx = true;
    }
    r = fq_bdev_open_chain(img->ctx, filename, opts->format, opts, 0, &img->top, err);
    if (r < 0) {
        if (img->own_ctx)
            fq_ctx_free(img->ctx);
        free(img);
        return r;
    }
    /* a protocol at the top (driver=null-co) is the image's format */
    snprintf(img->format, sizeof(img->format), "%s",
             opts->spec && opts->spec->top_protocol ? opts->spec->protocol : img->top->ops->name);
    *out = img;
    return 0;
}

int fq_open_blockopts(const struct fq_blockopts *o, const struct fq_open_opts *opts,
                      struct fq_image **out, char *err)
{
    struct fq_open_opts oo;
    int r;

    if (opts)
        oo = *opts;
    else
        fq_open_opts_init(&oo);
    if ((r = fq_blockopts_apply(o, &oo, err)) < 0)
        return r;
    oo.spec = o;
    if ((r = open_image(o->filename, &oo, out, err)) < 0)
        return r;
    if ((r = fq_blockopts_check_format(o, fq_format(*out), err)) < 0) {
        fq_close(*out);
        *out = NULL;
    }
    return r;
}

int fq_open(const char *filename, const struct fq_open_opts *opts,
            struct fq_image **out, char *err)
{
    struct fq_blockopts o;
    int r;

    /* a name read from an image is held to the backing names' rules
     * (core/chain.c) before anything of it is opened */
    if (!fq_blockopts_is_name(filename) || (opts && opts->name_from_image))
        return open_image(filename, opts, out, err);
    if ((r = fq_blockopts_parse(filename, &o, err)) == 0)
        r = fq_open_blockopts(&o, opts, out, err);
    fq_blockopts_free(&o);
    return r;
}

int fq_image_from_bdev(struct fq_ctx *ctx, struct fq_bdev *top, enum fq_cache_mode cache,
                       struct fq_image **out)
{
    struct fq_image *img = calloc(1, sizeof(*img));

    if (!img)
        return -ENOMEM;
    fq_fl_init(&img->ureq_fl, sizeof(struct ureq), 256);
    img->ctx = ctx;
    img->top = top;
    img->cache = cache;
    snprintf(img->format, sizeof(img->format), "%s", top->ops->name);
    *out = img;
    return 0;
}

struct fq_bdev *fq_image_bdev(struct fq_image *img)
{
    return img->top;
}

enum fq_cache_mode fq_image_cache_mode(const struct fq_image *img)
{
    return img->cache;
}

int fq_close(struct fq_image *img)
{
    int r = 0;

    if (!img)
        return 0;
    /* let every request in flight finish before tearing down */
    while (img->ctx->user_inflight > 0)
        if (fq_ctx_run(img->ctx, 1, -1) < 0)
            break;
    if (!img->top->readonly)
        r = fq_flush(img);
    fq_bdev_close(img->top);
    if (img->own_ctx)
        fq_ctx_free(img->ctx);
    fq_fl_drain(&img->ureq_fl);
    free(img);
    return r;
}

struct fq_ctx *fq_image_ctx(struct fq_image *img)
{
    return img->ctx;
}

uint64_t fq_size(const struct fq_image *img)
{
    return img->top->size;
}

const char *fq_format(const struct fq_image *img)
{
    return img->format;
}

int fq_image_flush_if_writethrough(struct fq_image *img)
{
    struct fq_bdev *bs = img->top;

    if (img->cache != FQ_CACHE_WRITETHROUGH && img->cache != FQ_CACHE_DIRECTSYNC)
        return 0;
    return fq_bdev_flush_sync(bs);
}

static void ureq_finish(struct ureq *u, int ret)
{
    struct fq_ctx *ctx = u->img->ctx;
    fq_cb *cb = u->cb;
    void *opaque = u->opaque;

    fq_fl_put(&u->img->ureq_fl, u);
    fq_ctx_user_done(ctx);
    if (cb)
        cb(opaque, ret);
}

static void ureq_done(struct fq_req *req, int ret)
{
    struct ureq *u = (struct ureq *)req;
    bool wt = u->img->cache == FQ_CACHE_WRITETHROUGH || u->img->cache == FQ_CACHE_DIRECTSYNC;

    if (ret == 0 && !u->flushing && wt &&
        (req->op == FQ_OP_WRITE || req->op == FQ_OP_WRITE_ZEROES || req->op == FQ_OP_DISCARD)) {
        u->flushing = true;
        memset(&u->req, 0, sizeof(u->req));
        u->req.op = FQ_OP_FLUSH;
        u->req.cb = ureq_done;
        u->img->top->ops->submit(u->img->top, &u->req);
        return;
    }
    ureq_finish(u, ret);
}

static int submit(struct fq_image *img, enum fq_op op, const struct iovec *iov, int iovcnt,
                  size_t iov_off, uint64_t len, uint64_t off, unsigned flags,
                  fq_cb *cb, void *opaque)
{
    struct fq_bdev *bs = img->top;
    struct ureq *u;

    if (op != FQ_OP_FLUSH) {
        if (off > bs->size || len > bs->size - off)
            return -EINVAL;
        if (op != FQ_OP_READ && bs->readonly)
            return -EROFS;
    }
    if ((op == FQ_OP_READ || op == FQ_OP_WRITE) &&
        (iovcnt < 0 || (iovcnt > 0 && !iov) || fq_iov_size(iov, iovcnt) < iov_off + len))
        return -EINVAL;
    u = fq_fl_get(&img->ureq_fl);
    if (!u)
        return -ENOMEM;
    memset(u, 0, sizeof(*u));
    u->img = img;
    u->cb = cb;
    u->opaque = opaque;
    u->req.op = op;
    u->req.off = off;
    u->req.len = len;
    u->req.iov = iov;
    u->req.iovcnt = iovcnt;
    u->req.iov_off = iov_off;
    u->req.flags = flags;
    u->req.cb = ureq_done;
    fq_ctx_user_start(img->ctx);
    if (op == FQ_OP_FLUSH && img->cache == FQ_CACHE_UNSAFE) {
        fq_req_complete_later(bs, &u->req, 0);
        return 0;
    }
    bs->ops->submit(bs, &u->req);
    fq_ctx_kick(img->ctx);
    return 0;
}

int fq_aio_preadv(struct fq_image *img, const struct iovec *iov, int iovcnt,
                  size_t iov_off, size_t len, uint64_t off, fq_cb *cb, void *opaque)
{
    return submit(img, FQ_OP_READ, iov, iovcnt, iov_off, len, off, 0, cb, opaque);
}

int fq_aio_pwritev(struct fq_image *img, const struct iovec *iov, int iovcnt,
                   size_t iov_off, size_t len, uint64_t off, fq_cb *cb, void *opaque)
{
    return submit(img, FQ_OP_WRITE, iov, iovcnt, iov_off, len, off, 0, cb, opaque);
}

int fq_aio_flush(struct fq_image *img, fq_cb *cb, void *opaque)
{
    return submit(img, FQ_OP_FLUSH, NULL, 0, 0, 0, 0, 0, cb, opaque);
}

int fq_aio_discard(struct fq_image *img, uint64_t off, uint64_t len, fq_cb *cb, void *opaque)
{
    return submit(img, FQ_OP_DISCARD, NULL, 0, 0, len, off, 0, cb, opaque);
}

int fq_aio_write_zeroes(struct fq_image *img, uint64_t off, uint64_t len, unsigned flags,
                        fq_cb *cb, void *opaque)
{
    return submit(img, FQ_OP_WRITE_ZEROES, NULL, 0, 0, len, off, flags, cb, opaque);
}

struct sync_wait {
    bool done;
    int ret;
};

static void sync_cb(void *opaque, int ret)
{
    struct sync_wait *w = opaque;

    w->done = true;
    w->ret = ret;
}

/* Submit and drive the loop until this request completes. */
static int run_sync(struct fq_image *img, enum fq_op op, const struct iovec *iov, int iovcnt,
                    size_t iov_off, uint64_t len, uint64_t off, unsigned flags)
{
    struct sync_wait w = { 0 };
    int r;

    if (img->ctx->running)
        return -EDEADLK;
    r = submit(img, op, iov, iovcnt, iov_off, len, off, flags, sync_cb, &w);
    if (r < 0)
        return r;
    while (!w.done) {
        r = fq_ctx_run(img->ctx, 1, -1);
        if (r < 0)
            return r;
    }
    return w.ret;
}

int fq_pread(struct fq_image *img, void *buf, size_t len, uint64_t off)
{
    struct iovec v = { buf, len };
    return run_sync(img, FQ_OP_READ, &v, 1, 0, len, off, 0);
}

int fq_pwrite(struct fq_image *img, const void *buf, size_t len, uint64_t off)
{
    struct iovec v = { (void *)buf, len };
    return run_sync(img, FQ_OP_WRITE, &v, 1, 0, len, off, 0);
}

int fq_preadv(struct fq_image *img, const struct iovec *iov, int iovcnt,
              size_t iov_off, size_t len, uint64_t off)
{
    return run_sync(img, FQ_OP_READ, iov, iovcnt, iov_off, len, off, 0);
}

int fq_pwritev(struct fq_image *img, const struct iovec *iov, int iovcnt,
               size_t iov_off, size_t len, uint64_t off)
{
    return run_sync(img, FQ_OP_WRITE, iov, iovcnt, iov_off, len, off, 0);
}

int fq_flush(struct fq_image *img)
{
    return run_sync(img, FQ_OP_FLUSH, NULL, 0, 0, 0, 0, 0);
}

int fq_discard(struct fq_image *img, uint64_t off, uint64_t len)
{
    return run_sync(img, FQ_OP_DISCARD, NULL, 0, 0, len, off, 0);
}

int fq_write_zeroes(struct fq_image *img, uint64_t off, uint64_t len, unsigned flags)
{
    return run_sync(img, FQ_OP_WRITE_ZEROES, NULL, 0, 0, len, off, flags);
}

int fq_get_info(struct fq_image *img, struct fq_info *out)
{
    memset(out, 0, sizeof(*out));
    if (!img->top->ops->get_info)
        return -ENOTSUP;
    int r = img->top->ops->get_info(img->top, out);
    if (r == 0)   /* a protocol at the top is the format */
        snprintf(out->format, sizeof(out->format), "%s", img->format);
    return r;
}

int fq_map(struct fq_image *img, uint64_t off, uint64_t len, struct fq_map_entry *out)
{
    return fq_bdev_map_chain(img->top, off, len, out);
}

int fq_check(struct fq_image *img, unsigned repair, struct fq_check_result *res,
             fq_msg_fn *msg, void *opaque)
{
    memset(res, 0, sizeof(*res));
    if (!img->top->ops->check)
        return -ENOTSUP;
    return img->top->ops->check(img->top, repair, res, msg, opaque);
}

int fq_bitmap_list(struct fq_image *img, struct fq_bitmap **out, int *count, char *err)
{
    struct fq_bdev *bs = fq_image_bdev(img);

    *out = NULL;
    *count = 0;
    if (err)
        err[0] = '\0';
    if (!bs->ops->bitmap_list)
        return 0;          /* raw images hold none */
    return bs->ops->bitmap_list(bs, out, count, err);
}

int fq_debug(struct fq_image *img, enum fq_debug_op op, const char *event, const char *tag)
{
    for (struct fq_bdev *bs = img->top; bs; bs = bs->child)
        if (bs->ops->debug)
            return bs->ops->debug(bs, op, event, tag);
    return -ENOTSUP;
}
