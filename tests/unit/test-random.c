/* test-random.c: randomized workloads checked against a flat in-memory
 * reference model.
 *
 * For each configuration of a representative matrix (cluster size, refcount
 * width, compat level, I/O engine, cache mode, plain file or an image nested
 * inside another qcow2 image), a small image is created and a few thousand
 * random operations are run on it: reads, writes, write-zeroes (with and
 * without FQ_ZERO_MAY_UNMAP), discards and flushes, of random sizes and
 * alignments, many vectored (odd-sized iovec elements, a non-zero iov_off),
 * some synchronous and many issued asynchronously in batches of
 * non-overlapping ranges. Every read is compared with the model, and the
 * bytes of the caller's buffers outside the request must stay untouched.
 * The image is closed and reopened twice during the run. Afterwards it is
 * closed, reopened and read whole, its fq_map is compared with the model
 * (and, for plain files, the host file at the mapped offsets), and it is
 * checked by fq_check and `qemu-img check`.
 *
 * The model's discard rule: after fq_discard, every cluster lying wholly in
 * the range reads as zeros and partial ones keep their content (with
 * extended L2 too: qemu discards whole clusters only).
 *
 * A sanitizer build runs a quarter of the operations on every other
 * configuration (which half, from the seed); FQ_TEST_SCALE=F sets the
 * share of operations and runs them all.
 *
 * Usage: test-random [SEED [CONFIG-SUBSTRING [NOPS]]]
 * A failure prints the seed and configuration name that reproduce it.
 * SPDX-License-Identifier: MIT
 */
#include <signal.h>

#include "chain.h"
#include "random-configs.h"
#include "testlib.h"
#include "vbuf.h"

#define MAX_BATCH 32
#define MAX_WIN 3

enum { OP_READ, OP_WRITE, OP_ZERO, OP_DISCARD, OP_FLUSH };
static const char *const op_names[] = { "read", "write", "write-zeroes", "discard", "flush" };

struct op {
    int kind;
    uint64_t off, len;
    unsigned flags;
    int async;
    struct vbuf vb;
    uint64_t gen;              /* write number for the pattern */
    int ncb;                   /* callbacks seen */
    int ret;
    int followup;              /* read the range back from the write's callback */
    struct vbuf fvb;
    int fncb, fret;
};

/* The state of one configuration's run. */
struct run {
    const struct cfg *c;
    uint64_t seed;
    struct tl_rng rng;
    uint64_t cs;               /* model cluster size */
    uint64_t dg;               /* discard granularity: the cluster */
    uint64_t l2span;           /* guest bytes covered by one L2 table */
    int nwin;
    uint64_t wstart[MAX_WIN], wlen[MAX_WIN];
    uint8_t *model[MAX_WIN];
    struct fq_image *img;
    struct fq_ctx *ctx;
    enum fq_engine_kind engine;
    enum fq_cache_mode cache;
    struct chain chain;        /* layers below the image (cfg.chain) */
    long opno;
    uint64_t gen;
    int pending;               /* callbacks not yet run */
    int failed;
    char path[4200];
};

static struct run *cur;        /* for the alarm handler */

#define RFAIL(r, ...)                                                          \
    do {                                                                       \
        fail_hdr(r, __LINE__);                                                 \
        fprintf(stderr, __VA_ARGS__);                                          \
        fputc('\n', stderr);                                                   \
    } while (0)

static void fail_hdr(struct run *r, int line)
{
    if (!r->failed)
        fprintf(stderr, "test-random: FAIL config=%s seed=%" PRIu64
                " (reproduce: test-random %" PRIu64 " %s)\n",
                r->c->name, r->seed, r->seed, r->c->name);
    r->failed++;
    fprintf(stderr, "  [line %d, op #%ld] ", line, r->opno);
}

static void on_alarm(int sig)
{
    (void)sig;
    if (cur)
        fprintf(stderr, "test-random: TIMEOUT config=%s seed=%" PRIu64 " op #%ld\n",
                cur->c->name, cur->seed, cur->opno);
    _exit(1);
}

/* ---- the model ---- */

static int win_of(struct run *r, uint64_t off, uint64_t len)
{
    for (int w = 0; w < r->nwin; w++)
        if (off >= r->wstart[w] && off + len <= r->wstart[w] + r->wlen[w])
            return w;
    return -1;
}

static uint8_t *model_at(struct run *r, uint64_t off, uint64_t len)
{
    int w = win_of(r, off, len);

    if (w < 0) {
        fprintf(stderr, "test-random: internal error: range %" PRIu64 "+%" PRIu64
                " outside the windows\n", off, len);
        abort();
    }
    return r->model[w] + (off - r->wstart[w]);
}

/* Apply a completed-by-contract write/zero/discard to the model. */
static void model_apply(struct run *r, const struct op *o, const uint8_t *data)
{
    uint8_t *m = model_at(r, o->off, o->len);

    switch (o->kind) {
    case OP_WRITE:
        memcpy(m, data, o->len);
        break;
    case OP_ZERO:
        memset(m, 0, o->len);
        break;
    case OP_DISCARD: {
        /* a v2 image cannot hide its backing file: discard is a no-op */
        if (r->c->chain && r->c->version == 2)
            break;
        /* clusters whose visible part lies wholly in the range */
        uint64_t s = (o->off + r->dg - 1) / r->dg * r->dg;
        uint64_t end = o->off + o->len;
        uint64_t e = end / r->dg * r->dg;
        if (end == r->c->size)
            e = end;   /* the last, partial cluster is wholly covered */
        if (s < e)
            memset(m + (s - o->off), 0, e - s);
        break;
    }
    default:
        break;
    }
}

static int verify_read(struct run *r, struct vbuf *v, uint64_t off, uint64_t len,
                       const char *what)
{
    uint8_t *want = malloc(v->memlen), *got = malloc(len ? len : 1);
    int bad = 0;

    /* the expected picture of the whole buffer */
    memset(want, CANARY, v->memlen);
    {
        struct vbuf tmp = *v;
        ptrdiff_t d = want - v->mem;
        for (int i = 0; i < tmp.cnt; i++)
            tmp.iov[i].iov_base = (uint8_t *)tmp.iov[i].iov_base + d;
        vbuf_copy(&tmp, 0, model_at(r, off, len), len, 1);
    }
    if (memcmp(want, v->mem, v->memlen)) {
        vbuf_copy(v, 0, got, len, 0);
        if (memcmp(got, model_at(r, off, len), len)) {
            RFAIL(r, "%s at %" PRIu64 " len %" PRIu64 " (iovcnt %d, iov_off %zu) "
                  "differs from the model", what, off, len, v->cnt, v->iov_off);
            tl_dump_diff(model_at(r, off, len), got, len, off);
        } else {
            size_t i = 0;
            while (want[i] == v->mem[i])
                i++;
            RFAIL(r, "%s at %" PRIu64 " len %" PRIu64 " wrote outside the request: "
                  "buffer byte %zu is 0x%02x (iovcnt %d, iov_off %zu)",
                  what, off, len, i, v->mem[i], v->cnt, v->iov_off);
        }
        bad = 1;
    }
    free(want);
    free(got);
    return bad;
}

/* ---- opening ---- */

static int open_image(struct run *r, int check_mode, struct fq_image **out)
{
    struct fq_open_opts o;
    char err[FQ_ERR_MAX] = "";
    int ret;

    fq_open_opts_init(&o);
    o.format = r->c->fmt;
    o.engine = r->engine;
    o.cache = check_mode ? FQ_CACHE_WRITEBACK : r->cache;
    o.max_workers = r->c->max_workers;
    o.cache_size = r->c->cache_size;
    o.l2_cache_size = r->c->l2_cache;
    o.l2_cache_entry_size = r->c->l2_entry;
    o.check_mode = check_mode;
    o.readonly = check_mode;
    o.file_format = r->c->outer_cluster ? "qcow2" : NULL;
    if (r->c->encrypt) {
        o.key_secret = "pw";
        o.key_secret_len = 2;
    }
    ret = fq_open(r->path, &o, out, err);
    if (ret < 0)
        RFAIL(r, "fq_open(%s): %s: %s", r->path, strerror(-ret), err);
    return ret;
}

static int create_image(struct run *r)
{
    const struct cfg *c = r->c;
    struct fq_create_opts o;
    char err[FQ_ERR_MAX] = "";
    int ret;

    if (c->outer_cluster) {
        /* The outer image must hold the inner one's clusters and metadata. */
        uint64_t data = 0;
        for (int w = 0; w < r->nwin; w++)
            data += r->wlen[w];
        fq_create_opts_init(&o);
        o.size = (2 * data + 64 * MiB + c->outer_cluster - 1) / c->outer_cluster * c->outer_cluster;
        o.cluster_size = c->outer_cluster;
        ret = fq_create(r->path, &o, err);
        if (ret < 0) {
            RFAIL(r, "fq_create(outer): %s: %s", strerror(-ret), err);
            return ret;
        }
    }
    fq_create_opts_init(&o);
    o.format = c->fmt;
    o.size = c->size;
    o.cluster_size = c->cluster;
    o.refcount_bits = c->refbits;
    o.lazy_refcounts = c->lazy;
    o.extended_l2 = c->extl2;
    o.version = c->version ? c->version : 3;
    o.file_format = c->outer_cluster ? "qcow2" : NULL;
    if (c->chain) {
        /* one window over the whole disk: the model is the disk */
        if (r->nwin != 1 || chain_build(&r->chain, c->chain, r->path, c->size, r->seed,
                                        r->model[0], err) < 0) {
            RFAIL(r, "building the chain '%s': %s", c->chain, err);
            return -1;
        }
        o.backing_file = r->chain.path[r->chain.n - 1];
        o.backing_format = r->chain.fmt[r->chain.n - 1];
    }
    if (c->encrypt) {
        o.encrypt.format = "luks";
        o.encrypt.key_secret = "pw";
        o.encrypt.key_secret_len = 2;
        o.encrypt.cipher_mode = c->encrypt;
        o.encrypt.iter_time = 1;
    }
    ret = fq_create(r->path, &o, err);
    if (ret < 0)
        RFAIL(r, "fq_create: %s: %s", strerror(-ret), err);
    return ret;
}

/* ---- generating requests ---- */

/* Pick a range inside one window: many unaligned, many crossing a cluster
 * boundary, some crossing an L2-table boundary. */
static void gen_range(struct run *r, uint64_t *off, uint64_t *len)
{
    struct tl_rng *g = &r->rng;
    int w = (int)tl_below(g, (uint64_t)r->nwin);
    uint64_t ws = r->wstart[w], wl = r->wlen[w], cs = r->cs;
    uint64_t maxlen = wl < 4 * MiB ? wl : 4 * MiB;
    uint64_t l, o, d, k = tl_below(g, 100);

    if (k < 35)
        l = tl_range(g, 1, cs < 4096 ? 2 * cs : 8192);
    else if (k < 60)
        l = tl_range(g, 1, 3 * cs);
    else if (k < 75)
        l = cs * tl_range(g, 1, 4);
    else if (k < 85)
        l = 512 * tl_range(g, 1, 2 * cs / 512 + 1);
    else
        l = tl_range(g, 1, cs >= MiB ? 3 * cs : 256 * KiB + cs);
    if (l > maxlen)
        l = tl_range(g, 1, maxlen);

    k = tl_below(g, 100);
    if (k < 4) {
        o = ws + wl - l;               /* end of the window (and disk) */
    } else if (k < 30) {
        o = ws + tl_below(g, wl - l + 1);
    } else if (k < 55 || (k < 70 && !r->l2span)) {
        /* straddle a cluster boundary */
        uint64_t b = ws + cs * tl_range(g, 0, wl / cs);
        d = l > 1 ? tl_range(g, 1, l - 1) : 0;
        o = b > d ? b - d : 0;
    } else if (k < 70) {
        /* straddle an L2-table boundary in this window, if there is one */
        uint64_t first = (ws + r->l2span - 1) / r->l2span, last = (ws + wl - 1) / r->l2span;
        uint64_t b = ws + wl / 2;
        if (first == 0)
            first = 1;
        if (first <= last)
            b = tl_range(g, first, last) * r->l2span;
        d = l > 1 ? tl_range(g, 1, l - 1) : 0;
        o = b > d ? b - d : 0;
    } else if (k < 85) {
        /* cluster-aligned; with subclusters, half subcluster-aligned */
        uint64_t sub = r->c->extl2 ? cs / 32 : cs;
        uint64_t a = sub < cs && tl_pct(g, 50) ? sub : cs;
        o = (ws + tl_below(g, wl - l + 1)) / a * a;
        if (a < cs && tl_pct(g, 50))
            l = (l > a ? l / a : 1) * a;
    } else {
        o = (ws + tl_below(g, wl - l + 1)) & ~511ull;
    }
    if (o < ws)
        o = ws;
    if (o + l > ws + wl)
        o = ws + wl - l;
    *off = o;
    *len = l;
}

/* Triage knobs (environment): TR_NO_ASYNC=1 runs every operation
 * synchronously, TR_NO_DISCARD=1 and TR_NO_ZERO=1 turn those into writes,
 * TR_CACHE=mode and TR_ENGINE=name override the configuration's,
 * TR_TRACE=1 prints each operation. */
static int no_async, no_discard, no_zero, trace;

/* TR_TRACE=1: print every operation as it is issued. */
static void trace_op(struct run *r, const struct op *o, const char *how)
{
    if (trace)
        fprintf(stderr, "#%ld %s %s %" PRIu64 "+%" PRIu64 " iovcnt %d iov_off %zu flags %u\n",
                r->opno, how, op_names[o->kind], o->off, o->len, o->vb.cnt, o->vb.iov_off,
                o->flags);
}

static int pick_kind(struct run *r)
{
    /* flushes are rare: each is an fdatasync, slow on virtual disks */
    uint64_t k = tl_below(&r->rng, 1000);

    if ((no_zero && k >= 720 && k < 840) || (no_discard && k >= 840 && k < 994))
        return OP_WRITE;
    if (k < 360)
        return OP_READ;
    if (k < 720)
        return OP_WRITE;
    if (k < 840)
        return OP_ZERO;
    if (k < 994)
        return strcmp(r->c->fmt, "raw") ? OP_DISCARD : OP_ZERO;
    return OP_FLUSH;
}

/* Prepare the buffers of one operation and, for writes, its data. */
static void prep_op(struct run *r, struct op *o)
{
    int aligned = tl_pct(&r->rng, 15);

    if (aligned && o->kind != OP_FLUSH) {
        /* make the range itself 4096-aligned where it fits */
        uint64_t s = (o->off + 4095) & ~4095ull, e = (o->off + o->len) & ~4095ull;
        if (s < e) {
            o->off = s;
            o->len = e - s;
        } else {
            aligned = 0;
        }
    }
    if (o->kind == OP_READ || o->kind == OP_WRITE)
        vbuf_build(&r->rng, &o->vb, o->len, aligned);
    if (o->kind == OP_WRITE) {
        uint8_t *data = malloc(o->len);
        o->gen = ++r->gen;
        if (tl_pct(&r->rng, 3))
            memset(data, 0, o->len);   /* explicit zeros are data too */
        else
            tl_fill_pattern(data, o->len, o->gen, o->off);
        vbuf_copy(&o->vb, 0, data, o->len, 1);
        free(data);
    }
    if (o->kind == OP_ZERO)
        o->flags = tl_pct(&r->rng, 50) ? FQ_ZERO_MAY_UNMAP : 0;
}

/* The write data as the model must record it (taken back from the vector). */
static void apply_op(struct run *r, struct op *o)
{
    if (o->kind == OP_WRITE) {
        uint8_t *data = malloc(o->len);
        vbuf_copy(&o->vb, 0, data, o->len, 0);
        model_apply(r, o, data);
        free(data);
    } else {
        model_apply(r, o, NULL);
    }
}

/* ---- synchronous operations ---- */

static void run_sync_op(struct run *r, struct op *o)
{
    int ret = 0;

    trace_op(r, o, "sync");
    switch (o->kind) {
    case OP_READ:
        if (o->vb.cnt == 1 && o->vb.iov_off == 0 && tl_pct(&r->rng, 50))
            ret = fq_pread(r->img, o->vb.iov[0].iov_base, o->len, o->off);
        else
            ret = fq_preadv(r->img, o->vb.iov, o->vb.cnt, o->vb.iov_off, o->len, o->off);
        break;
    case OP_WRITE:
        if (o->vb.cnt == 1 && o->vb.iov_off == 0 && tl_pct(&r->rng, 50))
            ret = fq_pwrite(r->img, o->vb.iov[0].iov_base, o->len, o->off);
        else
            ret = fq_pwritev(r->img, o->vb.iov, o->vb.cnt, o->vb.iov_off, o->len, o->off);
        break;
    case OP_ZERO:
        ret = fq_write_zeroes(r->img, o->off, o->len, o->flags);
        break;
    case OP_DISCARD:
        ret = fq_discard(r->img, o->off, o->len);
        break;
    case OP_FLUSH:
        ret = fq_flush(r->img);
        break;
    }
    if (ret != 0) {
        RFAIL(r, "sync %s at %" PRIu64 " len %" PRIu64 " returned %d (%s)",
              op_names[o->kind], o->off, o->len, ret, ret < 0 ? strerror(-ret) : "?");
        return;
    }
    if (o->kind == OP_READ)
        verify_read(r, &o->vb, o->off, o->len, "sync read");
    else
        apply_op(r, o);
}

/* ---- asynchronous batches ---- */

static void followup_cb(void *opaque, int ret)
{
    struct op *o = opaque;

    o->fncb++;
    o->fret = ret;
    cur->pending--;
}

static void op_cb(void *opaque, int ret)
{
    struct op *o = opaque;
    struct run *r = cur;

    o->ncb++;
    o->ret = ret;
    r->pending--;
    if (o->followup && ret == 0) {
        /* callbacks may submit: read the written range back right away */
        int q = fq_aio_preadv(r->img, o->fvb.iov, o->fvb.cnt, o->fvb.iov_off, o->len,
                              o->off, followup_cb, o);
        if (q < 0) {
            RFAIL(r, "fq_aio_preadv from a callback returned %d", q);
            return;
        }
        r->pending++;
    }
}

static int overlaps(const struct op *ops, int n, uint64_t off, uint64_t len)
{
    for (int i = 0; i < n; i++) {
        if (ops[i].kind == OP_FLUSH)
            continue;
        if (off < ops[i].off + ops[i].len && ops[i].off < off + len)
            return 1;
    }
    return 0;
}

/* Drive the loop until every callback of the batch ran. */
static void drain(struct run *r)
{
    struct tl_rng *g = &r->rng;
    time_t start = time(NULL);

    while (r->pending > 0) {
        int ret;
        unsigned infl = fq_ctx_inflight(r->ctx);

        if (infl != (unsigned)r->pending) {
            RFAIL(r, "fq_ctx_inflight = %u, expected %d", infl, r->pending);
            if (infl == 0)
                return;
        }
        switch (tl_below(g, 3)) {
        case 0:
            ret = fq_ctx_run(r->ctx, 1, 2000);
            break;
        case 1:
            ret = fq_ctx_run(r->ctx, (unsigned)r->pending, 2000);
            break;
        default:
            ret = fq_ctx_run(r->ctx, 0, 0);
            break;
        }
        if (ret < 0) {
            RFAIL(r, "fq_ctx_run returned %d (%s)", ret, strerror(-ret));
            return;
        }
        if (time(NULL) - start > 30) {
            RFAIL(r, "requests did not complete within 30 s (%d pending)", r->pending);
            exit(1);
        }
    }
    if (fq_ctx_inflight(r->ctx) != 0)
        RFAIL(r, "fq_ctx_inflight = %u after all callbacks ran", fq_ctx_inflight(r->ctx));
}

static void run_batch(struct run *r)
{
    struct op ops[MAX_BATCH];
    int n = 0, want = (int)tl_range(&r->rng, 2, r->c->batch ? r->c->batch : 8);

    memset(ops, 0, sizeof(ops));
    for (int tries = 0; n < want && tries < 4 * MAX_BATCH; tries++) {
        struct op *o = &ops[n];
        o->kind = pick_kind(r);
        if (n > 0 && ops[n - 1].kind != OP_FLUSH && tl_pct(&r->rng, 30)) {
            /* a neighbour sharing a cluster with the previous request */
            gen_range(r, &o->off, &o->len);
            uint64_t end = ops[n - 1].off + ops[n - 1].len;
            if (win_of(r, end, o->len) >= 0)
                o->off = end;
        } else {
            gen_range(r, &o->off, &o->len);
        }
        prep_op(r, o);
        if (o->kind != OP_FLUSH && overlaps(ops, n, o->off, o->len)) {
            vbuf_free(&o->vb);
            memset(o, 0, sizeof(*o));
            continue;
        }
        n++;
    }
    for (int i = 0; i < n; i++) {
        struct op *o = &ops[i];
        int ret = 0;

        if (o->kind == OP_WRITE && tl_pct(&r->rng, 20)) {
            o->followup = 1;
            vbuf_build(&r->rng, &o->fvb, o->len, 0);
        }
        switch (o->kind) {
        case OP_READ:
            ret = fq_aio_preadv(r->img, o->vb.iov, o->vb.cnt, o->vb.iov_off, o->len, o->off,
                                op_cb, o);
            break;
        case OP_WRITE:
            ret = fq_aio_pwritev(r->img, o->vb.iov, o->vb.cnt, o->vb.iov_off, o->len, o->off,
                                 op_cb, o);
            break;
        case OP_ZERO:
            ret = fq_aio_write_zeroes(r->img, o->off, o->len, o->flags, op_cb, o);
            break;
        case OP_DISCARD:
            ret = fq_aio_discard(r->img, o->off, o->len, op_cb, o);
            break;
        case OP_FLUSH:
            ret = fq_aio_flush(r->img, op_cb, o);
            break;
        }
        if (ret != 0) {
            RFAIL(r, "aio %s at %" PRIu64 " len %" PRIu64 " returned %d at submission",
                  op_names[o->kind], o->off, o->len, ret);
            o->ncb = -1;
            continue;
        }
        trace_op(r, o, "aio ");
        r->pending++;
        if (o->kind != OP_READ)
            apply_op(r, o);
    }
    drain(r);
    for (int i = 0; i < n; i++) {
        struct op *o = &ops[i];
        if (o->ncb >= 0 && o->ncb != 1)
            RFAIL(r, "aio %s at %" PRIu64 ": callback ran %d times",
                  op_names[o->kind], o->off, o->ncb);
        else if (o->ncb == 1 && o->ret != 0)
            RFAIL(r, "aio %s at %" PRIu64 " len %" PRIu64 " completed with %d (%s)",
                  op_names[o->kind], o->off, o->len, o->ret, strerror(-o->ret));
        else if (o->kind == OP_READ && o->ncb == 1)
            verify_read(r, &o->vb, o->off, o->len, "aio read");
        if (o->followup && o->ret == 0 && o->ncb == 1) {
            if (o->fncb != 1 || o->fret != 0)
                RFAIL(r, "read submitted from a callback: %d callbacks, ret %d", o->fncb,
                      o->fret);
            else
                verify_read(r, &o->fvb, o->off, o->len, "read from a write callback");
        }
        vbuf_free(&o->vb);
        vbuf_free(&o->fvb);
    }
}

/* ---- after the workload ---- */

/* fq_map over every window must tile it, agree with the model (a run
 * reported as zero holds zeros) and, for a plain file, point at the data:
 * the host file at host_offset holds what the model says. */
static void check_map(struct run *r, struct fq_image *img)
{
    int plain = !r->c->outer_cluster;
    uint8_t *host = malloc(4 * MiB);
    unsigned nzero = 0, ndata = 0;

    for (int w = 0; w < r->nwin && !r->failed; w++) {
        uint64_t end = r->wstart[w] + r->wlen[w];
        for (uint64_t p = r->wstart[w]; p < end && !r->failed;) {
            struct fq_map_entry e;
            int ret = fq_map(img, p, end - p, &e);
            if (ret != 0 || e.start != p || e.length == 0 || e.length > end - p) {
                RFAIL(r, "fq_map(%" PRIu64 ", %" PRIu64 ") = %d, start %" PRIu64 " length %" PRIu64,
                      p, end - p, ret, e.start, e.length);
                break;
            }
            const uint8_t *m = model_at(r, p, e.length);
            if ((e.flags & FQ_MAP_ZERO) && !(e.flags & FQ_MAP_DATA)) {
                nzero++;
                for (uint64_t i = 0; i < e.length; i++)
                    if (m[i]) {
                        RFAIL(r, "fq_map says %" PRIu64 "+%" PRIu64 " (flags %#x) reads as zeros, "
                              "but byte %" PRIu64 " is 0x%02x", p, e.length, e.flags, p + i, m[i]);
                        break;
                    }
            } else if (plain && e.depth == 0 && (e.flags & FQ_MAP_DATA) && (e.flags & FQ_MAP_OFFSET) &&
                       !(e.flags & FQ_MAP_COMPRESSED)) {
                ndata++;
                for (uint64_t i = 0; i < e.length && !r->failed;) {
                    size_t n = e.length - i > 4 * MiB ? 4 * MiB : (size_t)(e.length - i);
                    if (tl_read_file(r->path, host, n, e.host_offset + i) < 0 ||
                        memcmp(host, m + i, n)) {
                        RFAIL(r, "fq_map: guest %" PRIu64 "+%" PRIu64 " at host %" PRIu64
                              " (flags %#x): the host file does not hold the data",
                              p, e.length, e.host_offset, e.flags);
                        tl_dump_diff(m + i, host, n, p + i);
                    }
                    i += n;
                }
            }
            p += e.length;
        }
    }
    if (trace)
        fprintf(stderr, "map: %u zero runs, %u data runs checked\n", nzero, ndata);
    free(host);
}

/* Reopen and read every window (in random-sized pieces) and some spots
 * outside the windows, which must read as zeros. */
static void verify_all(struct run *r)
{
    struct fq_image *img;
    uint8_t *buf = malloc(4 * MiB);

    if (open_image(r, 0, &img) < 0) {
        free(buf);
        return;
    }
    if (fq_size(img) != r->c->size)
        RFAIL(r, "reopened image has size %" PRIu64 ", want %" PRIu64, fq_size(img), r->c->size);
    for (int w = 0; w < r->nwin && r->failed < 5; w++) {
        for (uint64_t p = 0; p < r->wlen[w];) {
            uint64_t n = tl_range(&r->rng, 1, 4 * MiB);
            if (n > r->wlen[w] - p)
                n = r->wlen[w] - p;
            int ret = fq_pread(img, buf, n, r->wstart[w] + p);
            if (ret != 0) {
                RFAIL(r, "reopened: fq_pread at %" PRIu64 " returned %d", r->wstart[w] + p, ret);
                break;
            }
            if (memcmp(buf, r->model[w] + p, n)) {
                RFAIL(r, "reopened: content at %" PRIu64 " len %" PRIu64 " differs from the model",
                      r->wstart[w] + p, n);
                tl_dump_diff(r->model[w] + p, buf, n, r->wstart[w] + p);
                break;
            }
            p += n;
        }
    }
    for (int i = 0; i < 16 && r->nwin > 1; i++) {
        uint64_t o = tl_below(&r->rng, r->c->size - 65536) & ~511ull;
        if (win_of(r, o, 65536) >= 0 || o + 65536 > r->c->size)
            continue;
        int w0 = 0;
        for (int w = 0; w < r->nwin; w++)
            if (o < r->wstart[w] + r->wlen[w] && r->wstart[w] < o + 65536)
                w0 = 1;
        if (w0)
            continue;
        memset(buf, 0xee, 65536);
        int ret = fq_pread(img, buf, 65536, o);
        if (ret != 0 || memcmp(buf, buf + 1, 65535) || buf[0] != 0)
            RFAIL(r, "reopened: never-written range at %" PRIu64 " does not read as zeros (ret %d)",
                  o, ret);
    }
    if (!strcmp(r->c->fmt, "qcow2"))
        check_map(r, img);
    int ret = fq_close(img);
    if (ret != 0)
        RFAIL(r, "fq_close after verification returned %d", ret);
    free(buf);
}

static void check_image(struct run *r)
{
    struct fq_image *img;
    struct fq_check_result res;
    struct tl_msgs m = { 0 };

    if (open_image(r, 1, &img) < 0)
        return;
    int ret = fq_check(img, 0, &res, tl_msg_cb, &m);
    if (ret != 0 || res.corruptions || res.leaks || res.check_errors) {
        RFAIL(r, "fq_check: ret %d, %" PRId64 " corruptions, %" PRId64 " leaks, %" PRId64
              " check errors", ret, res.corruptions, res.leaks, res.check_errors);
        for (int i = 0; i < m.n && i < 4; i++)
            fprintf(stderr, "    %s\n", m.first[i]);
    }
    fq_close(img);

    if (!tl_have("qemu-img"))
        return;
    if (r->c->encrypt)
        ret = tl_sh("qemu-img check -q --object secret,id=s,data=pw --image-opts "
                    "'driver=qcow2,file.filename=%s,encrypt.key-secret=s'", r->path);
    else
        ret = tl_sh("qemu-img check -q -f qcow2 '%s'", r->path);
    if (ret != 0)
        RFAIL(r, "qemu-img check %s exited %d", r->path, ret);
    if (r->c->lazy) {
        /* closed cleanly: the refcounts were written, the dirty bit cleared */
        ret = tl_sh("qemu-img info -U --output=json -f qcow2 '%s' | tr -d ' \\n' | "
                    "grep -q '\"dirty-flag\":false'", r->path);
        if (ret != 0)
            RFAIL(r, "the lazy-refcount image is still dirty after fq_close");
    }
    if (r->c->outer_cluster) {
        ret = tl_sh("qemu-img check -q 'json:{\"driver\":\"qcow2\",\"file\":{\"driver\":\"qcow2\","
                    "\"file\":{\"driver\":\"file\",\"filename\":\"%s\"}}}'", r->path);
        if (ret != 0)
            RFAIL(r, "qemu-img check of the nested image in %s exited %d", r->path, ret);
    }
}

/* ---- one configuration ---- */

static void setup_windows(struct run *r)
{
    const struct cfg *c = r->c;

    r->cs = c->cluster ? c->cluster : 4096;
    r->dg = r->cs;
    r->l2span = c->cluster ? (uint64_t)c->cluster / 8 * c->cluster : 0;
    if (!c->win || c->win >= c->size) {
        r->nwin = 1;
        r->wstart[0] = 0;
        r->wlen[0] = c->size;
    } else {
        /* the start, the first L2-table boundary, the end */
        r->nwin = 0;
        r->wstart[r->nwin] = 0;
        r->wlen[r->nwin++] = c->win;
        if (r->l2span && r->l2span + c->win / 2 <= c->size - c->win) {
            r->wstart[r->nwin] = r->l2span - c->win / 2;
            r->wlen[r->nwin++] = c->win;
        }
        r->wstart[r->nwin] = c->size - c->win;
        r->wlen[r->nwin++] = c->win;
    }
    if (r->l2span && r->l2span >= c->size)
        r->l2span = 0;
    else if (r->l2span) {
        /* an L2 boundary is reachable only if some window contains one */
        int any = 0;
        for (int w = 0; w < r->nwin; w++)
            if ((r->wstart[w] + r->wlen[w] - 1) / r->l2span != r->wstart[w] / r->l2span)
                any = 1;
        if (!any)
            r->l2span = 0;
    }
    for (int w = 0; w < r->nwin; w++) {
        r->model[w] = calloc(1, r->wlen[w]);
        if (!r->model[w]) {
            perror("calloc");
            exit(1);
        }
    }
}

/* A scratch directory in memory (removed at exit), or "" without one. */
static char shm_path[64];

static void shm_cleanup(void)
{
    if (shm_path[0])
        rmdir(shm_path);
}

static const char *shm_dir(void)
{
    static int tried;

    if (!tried) {
        tried = 1;
        snprintf(shm_path, sizeof(shm_path), "/dev/shm/test-random.XXXXXX");
        if (mkdtemp(shm_path))
            atexit(shm_cleanup);
        else
            shm_path[0] = '\0';
    }
    return shm_path;
}

static int run_config(const struct cfg *c, uint64_t seed, int nops, int have_uring, int have_direct)
{
    struct run r;
    char name[256];
    int ret;

    memset(&r, 0, sizeof(r));
    r.c = c;
    r.seed = seed;
    cur = &r;
    tl_rng_seed(&r.rng, seed);
    r.engine = c->engine;
    r.cache = c->cache;
    if (getenv("TR_ENGINE") && fq_engine_parse(getenv("TR_ENGINE"), &r.engine) < 0)
        fprintf(stderr, "test-random: bad TR_ENGINE ignored\n");
    if (getenv("TR_CACHE") && fq_cache_parse(getenv("TR_CACHE"), &r.cache) < 0)
        fprintf(stderr, "test-random: bad TR_CACHE ignored\n");
    if (r.engine == FQ_ENGINE_IO_URING && !have_uring) {
        fprintf(stderr, "test-random: %s: io_uring unavailable, using threads\n", c->name);
        r.engine = FQ_ENGINE_THREADS;
    }
    if (r.cache == FQ_CACHE_NONE && !have_direct) {
        fprintf(stderr, "test-random: %s: O_DIRECT unsupported here, skipped\n", c->name);
        return 0;
    }
    snprintf(name, sizeof(name), "%s.img", c->name);
    snprintf(r.path, sizeof(r.path), "%s", tl_path(name));
    if (c->shm && shm_dir()[0])
        snprintf(r.path, sizeof(r.path), "%s/%s", shm_dir(), name);
    setup_windows(&r);

    if (create_image(&r) < 0)
        goto out;
    if (open_image(&r, 0, &r.img) < 0)
        goto out;
    r.ctx = fq_image_ctx(r.img);
    if (!strcmp(c->fmt, "qcow2")) {
        struct fq_info info;
        ret = fq_get_info(r.img, &info);
        if (ret != 0 || strcmp(info.format, "qcow2") || info.cluster_size != c->cluster ||
            info.version != c->version || info.refcount_bits != c->refbits ||
            info.lazy_refcounts != c->lazy || info.extended_l2 != c->extl2 ||
            info.virtual_size != c->size)
            RFAIL(&r, "fq_get_info: ret %d format '%s' cluster %u version %d refcount_bits %d "
                  "size %" PRIu64, ret, info.format, info.cluster_size, info.version,
                  info.refcount_bits, info.virtual_size);
    }
    if (fq_size(r.img) != c->size)
        RFAIL(&r, "fq_size = %" PRIu64 ", want %" PRIu64, fq_size(r.img), c->size);

    for (r.opno = 0; r.opno < nops && r.failed == 0; r.opno++) {
        if (r.opno > 0 && (r.opno == nops / 3 || r.opno == 2 * nops / 3)) {
            /* close and reopen mid-run: metadata must survive, caches reload */
            ret = fq_close(r.img);
            r.img = NULL;
            if (ret != 0) {
                RFAIL(&r, "fq_close mid-run returned %d", ret);
                break;
            }
            if (open_image(&r, 0, &r.img) < 0)
                break;
            r.ctx = fq_image_ctx(r.img);
        }
        if (tl_pct(&r.rng, 55) && !no_async) {
            run_batch(&r);
        } else {
            struct op o;
            memset(&o, 0, sizeof(o));
            o.kind = pick_kind(&r);
            gen_range(&r, &o.off, &o.len);
            prep_op(&r, &o);
            run_sync_op(&r, &o);
            vbuf_free(&o.vb);
        }
    }
    ret = r.img ? fq_close(r.img) : 0;
    r.img = NULL;
    if (ret != 0)
        RFAIL(&r, "fq_close returned %d (%s)", ret, strerror(-ret));
    if (r.failed)
        goto out;
    verify_all(&r);
    if (!strcmp(c->fmt, "qcow2"))
        check_image(&r);
out:
    if (r.img)
        fq_close(r.img);
    for (int w = 0; w < r.nwin; w++)
        free(r.model[w]);
    if (!r.failed) {
        unlink(r.path);
        chain_remove(&r.chain);
    }
    cur = NULL;
    return r.failed ? 1 : 0;
}

int main(int argc, char **argv)
{
    uint64_t seed = tl_seed_arg(argc, argv, 1);
    const char *only = argc > 2 && argv[2][0] ? argv[2] : NULL;
    int nops_arg = argc > 3 ? atoi(argv[3]) : 0, failed = 0, ran = 0;
    const char *scale = getenv("FQ_TEST_SCALE");
    /* sanitizer builds run several times slower: fewer operations */
    double mult = scale ? atof(scale) : WL_SANITIZED ? 0.25 : 1.0;

    tl_name = "test-random";
    no_async = getenv("TR_NO_ASYNC") != NULL;
    no_discard = getenv("TR_NO_DISCARD") != NULL;
    no_zero = getenv("TR_NO_ZERO") != NULL;
    trace = getenv("TR_TRACE") != NULL;
    setvbuf(stdout, NULL, _IOLBF, 0);
    tl_mkdir();
    signal(SIGALRM, on_alarm);
    alarm(280);
    int have_uring = tl_uring_ok(), have_direct = tl_direct_ok();
    printf("test-random: seed %" PRIu64 "%s%s\n", seed, only ? " config " : "", only ? only : "");

    /* a configuration's exact name selects it alone, else a substring */
    int exact = 0;
    for (size_t i = 0; only && i < sizeof(configs) / sizeof(configs[0]); i++)
        exact |= !strcmp(configs[i].name, only);
    for (size_t i = 0; i < sizeof(configs) / sizeof(configs[0]); i++) {
        const struct cfg *c = &configs[i];
        if (only && (exact ? strcmp(c->name, only) != 0 : !strstr(c->name, only)))
            continue;
        /* a sanitizer build runs every other configuration, which half
         * turning with the seed: successive runs cover them all */
        if (WL_SANITIZED && !only && !scale && i % 2 != seed % 2)
            continue;
        int nops = nops_arg > 0 ? nops_arg : (int)(c->nops * mult);
        /* each configuration has its own seed so that it reproduces alone */
        uint64_t s = seed ^ (uint64_t)(i + 1) * 0x9e3779b97f4a7c15ull;
        time_t t0 = time(NULL);
        if (only)
            s = seed;
        int f = run_config(c, s, nops, have_uring, have_direct);
        printf("test-random: %-40s %s (%d ops, seed %" PRIu64 ", %lds)\n", c->name,
               f ? "FAIL" : "ok", nops, s, (long)(time(NULL) - t0));
        failed += f;
        ran++;
    }
    if (!ran) {
        fprintf(stderr, "test-random: no configuration matches '%s'\n", only);
        return 1;
    }
    if (failed)
        fprintf(stderr, "test-random: %d configuration(s) failed; master seed %" PRIu64 "\n",
                failed, seed);
    return failed ? 1 : 0;
}
