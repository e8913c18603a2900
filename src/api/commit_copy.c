/* commit_copy.c: the copy step of fq_commit. Every range an image
 * allocates itself (data, or zeros) is written into the base image, many
 * ranges in flight at once: a slot reads a range of the image (up to
 * CHUNK bytes, one mapping extent) and, when the data is in, writes it to
 * the base; the next ranges are mapped and issued while earlier ones are
 * on their way. How many slots work at once follows the depth controller
 * (fq_depth: as many as still buy throughput on this device, up to
 * SLOTS). Ranges never overlap, so their order does not matter; the first
 * error stops the issuing and is returned once every slot is back.
 * SPDX-License-Identifier: MIT
 */
#include "api/api.h"
#include "util.h"

#define CHUNK (1u << 20)
#define SLOTS 16

struct ccopy;

struct cslot {
    struct ccopy *c;
    uint8_t *buf;             /* CHUNK bytes, allocated on first use */
    struct iovec v;
    uint64_t off, len;
    bool busy;
};

struct ccopy {
    struct fq_image *img, *base;
    const struct fq_commit_opts *o;
    struct fq_depth *depth;
    uint64_t pos, size, *done, total;
    unsigned busy;
    int err;
    struct cslot slot[SLOTS];
};

/* Count `len` bytes walked and tell the caller. */
static void walked(struct ccopy *c, uint64_t len)
{
    *c->done += len;
    if (c->o->progress)
        c->o->progress(c->o->opaque, *c->done, c->total);
}

/* A slot's range is written (or failed). */
static void slot_done(struct cslot *s, int ret)
{
    struct ccopy *c = s->c;

    if (ret < 0 && !c->err)
        c->err = ret;
    s->busy = false;
    c->busy--;
    fq_depth_end(c->depth, s->len);
    walked(c, s->len);
}

static void wrote_cb(void *opaque, int ret)
{
    slot_done(opaque, ret);
}

/* A slot's data is in: write it to the base. */
static void read_cb(void *opaque, int ret)
{
    struct cslot *s = opaque;
    struct ccopy *c = s->c;

    if (ret == 0 && !c->err) {
        ret = fq_aio_pwritev(c->base, &s->v, 1, 0, (size_t)s->len, s->off, wrote_cb, s);
        if (ret == 0)
            return;
    }
    slot_done(s, ret < 0 ? ret : 0);
}

/* Map and issue ranges while slots are free. */
static void issue(struct ccopy *c)
{
    while (!c->err && c->pos < c->size && c->busy < fq_depth_limit(c->depth)) {
        struct fq_map_entry m;
        int r = fq_map(c->img, c->pos, FQ_MIN(c->size - c->pos, (uint64_t)CHUNK), &m);
        if (r == 0 && m.length == 0)
            r = -EIO;
        if (r < 0) {
            c->err = r;
            return;
        }
        if (!(m.flags & FQ_MAP_ALLOCATED)) {
            c->pos += m.length;
            walked(c, m.length);
            continue;
        }
        struct cslot *s = NULL;
        for (int i = 0; i < SLOTS && !s; i++)
            if (!c->slot[i].busy)
                s = &c->slot[i];
        if (!s)
            return;      /* (the depth never exceeds SLOTS) */
        if (!s->buf && !(m.flags & FQ_MAP_ZERO) && !(s->buf = fq_memalign(CHUNK))) {
            c->err = -ENOMEM;
            return;
        }
        s->busy = true;
        s->off = c->pos;
        s->len = m.length;
        c->busy++;
        c->pos += m.length;
        fq_depth_start(c->depth);
        if (m.flags & FQ_MAP_ZERO) {
            r = fq_aio_write_zeroes(c->base, s->off, s->len, FQ_ZERO_MAY_UNMAP, wrote_cb, s);
        } else {
            s->v = (struct iovec){ s->buf, (size_t)s->len };
            r = fq_aio_preadv(c->img, &s->v, 1, 0, (size_t)s->len, s->off, read_cb, s);
        }
        if (r < 0)
            slot_done(s, r);
    }
}

int fq_commit_copy(struct fq_image *img, struct fq_image *base, const struct fq_commit_opts *o,
                   uint64_t *done, uint64_t total)
{
    struct ccopy *c = calloc(1, sizeof(*c));
    struct fq_ctx *ctx = fq_image_ctx(base);
    int r;

    if (!c)
        return -ENOMEM;
    if (fq_depth_new(0, SLOTS, &c->depth) < 0) {
        free(c);
        return -ENOMEM;
    }
    c->img = img;
    c->base = base;
    c->o = o;
    c->size = FQ_MIN(fq_size(img), fq_size(base));
    c->done = done;
    c->total = total;
    for (int i = 0; i < SLOTS; i++)
        c->slot[i].c = c;
    for (;;) {
        issue(c);
        if (!c->busy)
            break;
        /* nothing in flight while slots wait: stuck */
        int n = fq_ctx_inflight(ctx) ? fq_ctx_run(ctx, 1, -1) : -EIO;
        if (n < 0) {
            if (!c->err)
                c->err = n;
            if (fq_ctx_inflight(ctx))
                return c->err;   /* the loop failed with requests out: their
                                    buffers stay allocated (leaked) */
            break;
        }
    }
    r = c->err;
    for (int i = 0; i < SLOTS; i++)
        free(c->slot[i].buf);
    fq_depth_free(c->depth);
    free(c);
    return r;
}
