/* mem.c: an in-memory device for tests and fuzzing. Requests complete
 * through the context's deferred-call queue, like a real device would
 * (never inside submit). Writes beyond the end grow it up to max_size.
 * SPDX-License-Identifier: MIT
 */
#include <malloc.h>

#include "testdev.h"
#include "util.h"

/* Tests open, grow and drop image-sized buffers by the thousand (the
 * crash replay above all): let the heap keep 64 MiB spare at its top
 * instead of giving pages back and faulting them in again each time
 * (measured on test-crash: 3x less CPU). Test builds only; the library
 * never tunes the allocator. */
__attribute__((constructor)) static void mem_tune_malloc(void)
{
    mallopt(M_TOP_PAD, 64 << 20);
}

struct mem_priv {
    uint8_t *data;
    size_t size, cap, max;
};

static int mem_rw(struct fq_bdev *bs, struct fq_req *req)
{
    struct mem_priv *m = bs->priv;

    switch (req->op) {
    case FQ_OP_READ: {
        uint64_t have = req->off < m->size ? FQ_MIN(req->len, m->size - req->off) : 0;
        if (have)
            fq_iov_from_buf(req->iov, req->iovcnt, req->iov_off, m->data + req->off, (size_t)have);
        if (have < req->len)
            fq_iov_memset(req->iov, req->iovcnt, req->iov_off + (size_t)have, 0,
                          (size_t)(req->len - have));
        return 0;
    }
    case FQ_OP_WRITE:
    case FQ_OP_WRITE_ZEROES: {
        if (bs->readonly)
            return -EROFS;
        uint64_t end;
        if (fq_add_ovf(req->off, req->len, &end) || end > m->max)
            return -ENOSPC;
        if (end > m->cap) {
            size_t nc = FQ_MAX((size_t)end, m->cap * 2);
            nc = FQ_MIN(nc, m->max);
            uint8_t *nd = realloc(m->data, nc);
            if (!nd)
                return -ENOMEM;
            memset(nd + m->cap, 0, nc - m->cap);
            m->data = nd;
            m->cap = nc;
        }
        if (req->op == FQ_OP_WRITE)
            fq_iov_to_buf(req->iov, req->iovcnt, req->iov_off, m->data + req->off, (size_t)req->len);
        else
            memset(m->data + req->off, 0, (size_t)req->len);
        if (end > m->size)
            m->size = (size_t)end;
        bs->size = m->size;
        return 0;
    }
    case FQ_OP_DISCARD:
    case FQ_OP_FLUSH:
        return 0;
    }
    return -EINVAL;
}

static void mem_submit(struct fq_bdev *bs, struct fq_req *req)
{
    fq_req_complete_later(bs, req, mem_rw(bs, req));
}

static void mem_close(struct fq_bdev *bs)
{
    struct mem_priv *m = bs->priv;

    free(m->data);
    free(m);
}

static int mem_truncate(struct fq_bdev *bs, uint64_t size)
{
    struct mem_priv *m = bs->priv;

    if (size > m->max)
        return -ENOSPC;
    if (size > m->cap) {
        uint8_t *nd = realloc(m->data, (size_t)size);
        if (!nd)
            return -ENOMEM;
        memset(nd + m->cap, 0, (size_t)size - m->cap);
        m->data = nd;
        m->cap = (size_t)size;
    } else if (size < m->size) {
        memset(m->data + size, 0, m->size - (size_t)size);
    }
    m->size = (size_t)size;
    bs->size = size;
    return 0;
}

static int64_t mem_length(struct fq_bdev *bs)
{
    return (int64_t)((struct mem_priv *)bs->priv)->size;
}

static const struct fq_bdev_ops mem_ops = {
    .name = "mem",
    .submit = mem_submit,
    .io_sync = mem_rw,
    .close = mem_close,
    .truncate = mem_truncate,
    .file_length = mem_length,
};

int fq_mem_open(struct fq_ctx *ctx, const void *data, size_t size, size_t max_size,
                struct fq_bdev **out)
{
    struct fq_bdev *bs = calloc(1, sizeof(*bs));
    struct mem_priv *m = calloc(1, sizeof(*m));

    if (!bs || !m || max_size < size) {
        free(bs);
        free(m);
        return bs && m ? -EINVAL : -ENOMEM;
    }
    m->cap = FQ_MAX(size, (size_t)4096);
    m->data = calloc(1, m->cap);
    if (!m->data) {
        free(bs);
        free(m);
        return -ENOMEM;
    }
    if (data && size)
        memcpy(m->data, data, size);
    m->size = size;
    m->max = max_size;
    bs->ops = &mem_ops;
    bs->ctx = ctx;
    bs->size = size;
    bs->align = 1;
    bs->priv = m;
    bs->filename = strdup("<memory>");
    *out = bs;
    return 0;
}
