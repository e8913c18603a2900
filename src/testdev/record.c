/* record.c: a recording pass-through device and the crash replayer
 * (see bdev_test.h).
 *
 * Writes, write-zeroes, discards, truncates and flushes are appended to the
 * log when they are submitted, writes with a copy of their data, and then
 * forwarded to the child. A write is therefore in the log from the moment
 * it could start reaching the medium; a flush record makes every record
 * before it durable. (Drivers issue a flush only after the writes it must
 * cover have completed, so logging at submission is exact for them.)
 *
 * Replay: fq_reclog_replay applies a prefix in order. fq_reclog_replay_crash
 * models a power loss: the records up to the last flush of the prefix are
 * applied in order, then a random subset of the later ones in a random
 * order, each possibly torn at 512-byte sector granularity (a sector is
 * the unit a disk writes atomically).
 * SPDX-License-Identifier: MIT
 */
#include "testdev.h"
#include "util.h"

#define SECTOR 512u

FQ_VECTOR(rec_vec, struct fq_rec)

struct fq_reclog {
    uint8_t *base;
    size_t base_len;
    struct rec_vec v;
    bool off;
};

struct rec_priv {
    struct fq_bdev *child;
    struct fq_reclog *log;
};

struct fwd {
    struct fq_req child;
    struct fq_req *parent;
    struct fq_bdev *bs;
};

/* ---- the log ---- */

struct fq_reclog *fq_reclog_new(const void *base, size_t len)
{
    struct fq_reclog *log = calloc(1, sizeof(*log));

    if (!log)
        return NULL;
    log->base = malloc(len ? len : 1);
    if (!log->base) {
        free(log);
        return NULL;
    }
    if (len)
        memcpy(log->base, base, len);
    log->base_len = len;
    return log;
}

void fq_reclog_free(struct fq_reclog *log)
{
    if (!log)
        return;
    for (size_t i = 0; i < log->v.len; i++)
        free(log->v.ptr[i].data);
    rec_vec_reset(&log->v);
    free(log->base);
    free(log);
}

size_t fq_reclog_count(const struct fq_reclog *log)
{
    return log->v.len;
}

const struct fq_rec *fq_reclog_get(const struct fq_reclog *log, size_t i)
{
    return i < log->v.len ? &log->v.ptr[i] : NULL;
}

void fq_reclog_enable(struct fq_reclog *log, bool on)
{
    log->off = !on;
}

size_t fq_reclog_epoch_start(const struct fq_reclog *log, size_t n)
{
    n = FQ_MIN(n, log->v.len);
    while (n > 0 && log->v.ptr[n - 1].kind != FQ_REC_FLUSH)
        n--;
    return n;
}

/* Append the record for `req`; returns 0 or -ENOMEM. */
static int log_req(struct fq_reclog *log, const struct fq_req *req)
{
    struct fq_rec r = { .tag = req->tag, .off = req->off, .len = req->len };

    if (log->off)
        return 0;
    switch (req->op) {
    case FQ_OP_READ:
        return 0;
    case FQ_OP_WRITE:
        r.kind = FQ_REC_WRITE;
        r.data = malloc(req->len ? (size_t)req->len : 1);
        if (!r.data)
            return -ENOMEM;
        fq_iov_to_buf(req->iov, req->iovcnt, req->iov_off, r.data, (size_t)req->len);
        break;
    case FQ_OP_WRITE_ZEROES:
    case FQ_OP_DISCARD:
        r.kind = FQ_REC_ZERO;
        break;
    case FQ_OP_FLUSH:
        r.kind = FQ_REC_FLUSH;
        r.off = r.len = 0;
        break;
    }
    if (rec_vec_push(&log->v, r) < 0) {
        free(r.data);
        return -ENOMEM;
    }
    return 0;
}

/* ---- the device ---- */

static void fwd_done(struct fq_req *req, int ret)
{
    struct fwd *w = (struct fwd *)req;
    struct fq_req *parent = w->parent;
    struct fq_bdev *bs = w->bs;

    bs->size = ((struct rec_priv *)bs->priv)->child->size;
    free(w);
    parent->cb(parent, ret);
}

static void rec_submit(struct fq_bdev *bs, struct fq_req *req)
{
    struct rec_priv *p = bs->priv;
    struct fwd *w = malloc(sizeof(*w));
    int r = w ? log_req(p->log, req) : -ENOMEM;

    if (r < 0) {
        free(w);
        fq_req_complete_later(bs, req, r);
        return;
    }
    w->child = *req;
    w->child.cb = fwd_done;
    w->child.opaque = NULL;
    w->parent = req;
    w->bs = bs;
    p->child->ops->submit(p->child, &w->child);
}

static int rec_io_sync(struct fq_bdev *bs, struct fq_req *req)
{
    struct rec_priv *p = bs->priv;
    int r = log_req(p->log, req);

    if (r < 0)
        return r;
    r = p->child->ops->io_sync(p->child, req);
    bs->size = p->child->size;
    return r;
}

static void rec_close(struct fq_bdev *bs)
{
    free(bs->priv);
}

static int rec_get_info(struct fq_bdev *bs, struct fq_info *out)
{
    struct rec_priv *p = bs->priv;

    return p->child->ops->get_info ? p->child->ops->get_info(p->child, out) : 0;
}

static int rec_truncate(struct fq_bdev *bs, uint64_t size)
{
    struct rec_priv *p = bs->priv;
    struct fq_rec rec = { .kind = FQ_REC_TRUNCATE, .len = size };
    int r;

    if (!p->child->ops->truncate)
        return -ENOTSUP;
    if (!p->log->off && (r = rec_vec_push(&p->log->v, rec)) < 0)
        return r;
    r = p->child->ops->truncate(p->child, size);
    bs->size = p->child->size;
    return r;
}

static int64_t rec_file_length(struct fq_bdev *bs)
{
    struct rec_priv *p = bs->priv;

    return p->child->ops->file_length ? p->child->ops->file_length(p->child)
                                      : (int64_t)p->child->size;
}

static const struct fq_bdev_ops rec_ops = {
    .name = "record",
    .submit = rec_submit,
    .io_sync = rec_io_sync,
    .close = rec_close,
    .get_info = rec_get_info,
    .truncate = rec_truncate,
    .file_length = rec_file_length,
};

int fq_record_open(struct fq_bdev *child, struct fq_reclog *log, unsigned flags,
                   struct fq_bdev **out)
{
    struct fq_bdev *bs = calloc(1, sizeof(*bs));
    struct rec_priv *p = calloc(1, sizeof(*p));

    if (!bs || !p) {
        free(bs);
        free(p);
        return -ENOMEM;
    }
    p->child = child;
    p->log = log;
    bs->ops = &rec_ops;
    bs->ctx = child->ctx;
    bs->size = child->size;
    bs->readonly = child->readonly;
    bs->align = child->align;
    bs->child = (flags & FQ_TESTDEV_BORROW) ? NULL : child;
    bs->filename = child->filename ? strdup(child->filename) : NULL;
    bs->priv = p;
    *out = bs;
    return 0;
}

/* ---- replay ---- */

struct image {
    uint8_t *d;
    size_t len, cap;
};

static int img_reserve(struct image *m, uint64_t end)
{
    if (end > (1ull << 34))
        return -EFBIG;
    if (end <= m->cap)
        return 0;
    size_t nc = FQ_MAX((size_t)end, m->cap * 2);
    uint8_t *nd = realloc(m->d, nc);
    if (!nd)
        return -ENOMEM;
    memset(nd + m->cap, 0, nc - m->cap);
    m->d = nd;
    m->cap = nc;
    return 0;
}

/* Apply bytes [from, to) of record `r` (relative to r->off). */
static int apply_range(struct image *m, const struct fq_rec *r, uint64_t from, uint64_t to)
{
    int ret;

    if (to <= from)
        return 0;
    switch (r->kind) {
    case FQ_REC_WRITE:
    case FQ_REC_ZERO:
        if ((ret = img_reserve(m, r->off + to)) < 0)
            return ret;
        if (r->kind == FQ_REC_WRITE)
            memcpy(m->d + r->off + from, r->data + from, (size_t)(to - from));
        else
            memset(m->d + r->off + from, 0, (size_t)(to - from));
        m->len = FQ_MAX(m->len, (size_t)(r->off + to));
        return 0;
    case FQ_REC_TRUNCATE:
        if ((ret = img_reserve(m, r->len)) < 0)
            return ret;
        if (r->len < m->len)
            memset(m->d + r->len, 0, m->len - (size_t)r->len);
        m->len = (size_t)r->len;
        return 0;
    case FQ_REC_FLUSH:
        return 0;
    }
    return 0;
}

static int img_start(const struct fq_reclog *log, struct image *m)
{
    memset(m, 0, sizeof(*m));
    if (img_reserve(m, FQ_MAX(log->base_len, (size_t)1)) < 0)
        return -ENOMEM;
    memcpy(m->d, log->base, log->base_len);
    m->len = log->base_len;
    return 0;
}

int fq_reclog_replay(const struct fq_reclog *log, size_t n, uint8_t **data, size_t *len)
{
    struct image m;
    int r;

    if ((r = img_start(log, &m)) < 0)
        return r;
    n = FQ_MIN(n, log->v.len);
    for (size_t i = 0; i < n; i++) {
        const struct fq_rec *rec = &log->v.ptr[i];
        r = apply_range(&m, rec, 0, rec->kind == FQ_REC_TRUNCATE ? 1 : rec->len);
        if (r < 0) {
            free(m.d);
            return r;
        }
    }
    *data = m.d;
    *len = m.len;
    return 0;
}

static uint64_t mix(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

int fq_reclog_replay_crash(const struct fq_reclog *log, size_t n, uint64_t seed,
                           unsigned keep_pct, unsigned torn_pct,
                           uint8_t **data, size_t *len)
{
    struct image m;
    size_t e;
    int r;

    n = FQ_MIN(n, log->v.len);
    e = fq_reclog_epoch_start(log, n);
    if ((r = img_start(log, &m)) < 0)
        return r;
    for (size_t i = 0; i < e && r == 0; i++) {
        const struct fq_rec *rec = &log->v.ptr[i];
        r = apply_range(&m, rec, 0, rec->kind == FQ_REC_TRUNCATE ? 1 : rec->len);
    }
    /* the unflushed tail: a random order of a random subset */
    size_t k = n - e;
    size_t *order = malloc((k ? k : 1) * sizeof(size_t));
    if (!order)
        r = -ENOMEM;
    for (size_t i = 0; r == 0 && i < k; i++)
        order[i] = e + i;
    for (size_t i = k; r == 0 && i > 1; i--) {
        size_t j = (size_t)(mix(&seed) % i), t = order[i - 1];
        order[i - 1] = order[j];
        order[j] = t;
    }
    for (size_t i = 0; r == 0 && i < k; i++) {
        const struct fq_rec *rec = &log->v.ptr[order[i]];
        if (rec->kind == FQ_REC_TRUNCATE) {
            r = apply_range(&m, rec, 0, 1);
            continue;
        }
        if (rec->kind == FQ_REC_FLUSH || mix(&seed) % 100 >= keep_pct)
            continue;
        if (mix(&seed) % 100 >= torn_pct) {
            r = apply_range(&m, rec, 0, rec->len);
            continue;
        }
        /* torn: each sector (by absolute position) lands or not */
        uint64_t pos = 0;
        while (r == 0 && pos < rec->len) {
            uint64_t next = FQ_MIN(rec->len, FQ_ALIGN_DOWN(rec->off + pos + SECTOR, SECTOR) - rec->off);
            if (mix(&seed) & 1)
                r = apply_range(&m, rec, pos, next);
            pos = next;
        }
    }
    free(order);
    if (r < 0) {
        free(m.d);
        return r;
    }
    *data = m.d;
    *len = m.len;
    return 0;
}
