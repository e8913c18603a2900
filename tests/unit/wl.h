/* wl.h: the workload and sector model shared by the robustness tests
 * (test-fault, test-crash): images on in-memory devices, a deterministic
 * sequence of guest operations, and, per 512-byte guest sector, the
 * history of what each operation left there, so that a test can ask
 * "which contents may this sector hold" after a failure or a crash.
 *
 * Sector content written by operation i identifies both i and the sector,
 * so a lost, misplaced or stale sector never matches by accident. Zeros
 * (a fresh image, write-zeroes, a discarded cluster) are value WL_ZERO.
 * SPDX-License-Identifier: MIT
 */
#ifndef FQ_TEST_WL_H
#define FQ_TEST_WL_H

#include "testdev.h"
#include "api/api.h"
#include "core/core.h"
#include "testlib.h"
#include "util.h"

#define WL_SECTOR 512u
#define WL_ZERO UINT32_MAX

enum { WL_WRITE, WL_ZERO_KEEP, WL_ZERO_UNMAP, WL_DISCARD, WL_FLUSH, WL_READ, WL_CLOSE };
static const char *const wl_names[] __attribute__((unused)) = {
    "write", "write-zeroes", "write-zeroes(unmap)", "discard", "flush", "read", "close"
};

struct wl_op {
    int kind;
    uint64_t off, len;
    size_t sub, ack;           /* device-log positions (crash test) */
    int ret;                   /* result; 1 = not run */
};

struct wl_cfg {
    const char *name;
    uint32_t cluster;
    int refbits;
    int version;
    int extl2;
    uint64_t size;             /* virtual size */
    int nops;
    unsigned maxw;             /* longest write in clusters (0 = 8); above 8,
                                  long writes are frequent (table growth) */
    int scripted;              /* N > 0: fill N runs of 64 KiB, then grow
                                  the refcount table from single-cluster
                                  writes, each on a clean cache */
};

/* ---- content ---- */

static inline uint64_t wl_word(uint32_t v, uint64_t sector, unsigned k)
{
    uint64_t x = ((uint64_t)v << 32 ^ sector) * 0x9e3779b97f4a7c15ull + k * 0xd1b54a32d192ed03ull;
    return x ^ (x >> 31);
}

static inline void wl_fill_sector(uint8_t *b, uint32_t v, uint64_t sector)
{
    if (v == WL_ZERO) {
        memset(b, 0, WL_SECTOR);
        return;
    }
    for (unsigned k = 0; k < WL_SECTOR / 8; k++) {
        uint64_t w = wl_word(v, sector, k);
        memcpy(b + k * 8, &w, 8);
    }
}

static inline int wl_sector_is(const uint8_t *b, uint32_t v, uint64_t sector)
{
    uint8_t want[WL_SECTOR];

    wl_fill_sector(want, v, sector);
    return memcmp(b, want, WL_SECTOR) == 0;
}

/* ---- the operation sequence ---- */

/* A deterministic mix over `c->size`: mostly writes (fresh, overwriting,
 * crossing clusters and L2 tables, some far away to allocate L2 tables),
 * write-zeroes with and without unmap, discards, reads and flushes. */
static inline int wl_generate(const struct wl_cfg *c, uint64_t seed, struct wl_op *ops)
{
    struct tl_rng r;
    uint64_t cs = c->cluster, nsec = c->size / WL_SECTOR;
    uint64_t hot = c->maxw > 8 ? c->size : FQ_MIN(c->size, (uint64_t)cs * 96);
    int n = 0;

    tl_rng_seed(&r, seed);
    if (c->scripted) {
        /* runs of all but the last two clusters of every 64 KiB, so that
         * the L2 tables exist; then single clusters into those holes, each
         * after a flush: one of them makes the refcount table grow while
         * no L2 table is dirty */
        uint64_t step = 65536, fill = (uint64_t)c->scripted * step;
        for (uint64_t off = 0; off + step <= fill && n < c->nops / 2; off += step)
            ops[n++] = (struct wl_op){ WL_WRITE, off, step - 2 * cs, 0, 0, 1 };
        int nfill = n;
        for (int k = 0; n + 2 <= c->nops && k < 2 * nfill; k++) {
            uint64_t off = (uint64_t)(k % nfill) * step + step - (uint64_t)(2 - k / nfill) * cs;
            ops[n++] = (struct wl_op){ WL_FLUSH, 0, 0, 0, 0, 1 };
            ops[n++] = (struct wl_op){ WL_WRITE, off, cs, 0, 0, 1 };
        }
        return n;
    }
    for (int i = 0; i < c->nops; i++) {
        struct wl_op *o = &ops[n++];
        unsigned p = (unsigned)tl_below(&r, 100);
        uint64_t span = tl_pct(&r, 70) ? hot : c->size;
        unsigned maxw = c->maxw ? c->maxw : 8;
        uint64_t maxlen = tl_pct(&r, maxw > 8 ? 60 : 20) ? maxw * cs : 2 * cs;

        memset(o, 0, sizeof(*o));
        o->ret = 1;
        o->kind = p < 55 ? WL_WRITE : p < 63 ? WL_ZERO_KEEP : p < 68 ? WL_ZERO_UNMAP :
                  p < 76 ? WL_DISCARD : p < 88 ? WL_FLUSH : WL_READ;
        if (o->kind == WL_FLUSH)
            continue;
        uint64_t len = tl_range(&r, 1, FQ_MAX(maxlen / WL_SECTOR, (uint64_t)1)) * WL_SECTOR;
        uint64_t s = tl_below(&r, span / WL_SECTOR);
        if (tl_pct(&r, 40))
            s -= s % (cs / WL_SECTOR);                 /* cluster aligned */
        if (s * WL_SECTOR + len > c->size)
            len = (nsec - s) * WL_SECTOR;
        o->off = s * WL_SECTOR;
        o->len = len;
    }
    return n;
}

/* Run operation i on `img`; returns its result. */
static inline int wl_run_op(struct fq_image *img, const struct wl_op *o, int i, uint8_t *buf)
{
    switch (o->kind) {
    case WL_WRITE:
        for (uint64_t s = 0; s < o->len / WL_SECTOR; s++)
            wl_fill_sector(buf + s * WL_SECTOR, (uint32_t)i, o->off / WL_SECTOR + s);
        return fq_pwrite(img, buf, (size_t)o->len, o->off);
    case WL_ZERO_KEEP:
        return fq_write_zeroes(img, o->off, o->len, 0);
    case WL_ZERO_UNMAP:
        return fq_write_zeroes(img, o->off, o->len, FQ_ZERO_MAY_UNMAP);
    case WL_DISCARD:
        return fq_discard(img, o->off, o->len);
    case WL_FLUSH:
        return fq_flush(img);
    case WL_READ:
        return fq_pread(img, buf, (size_t)o->len, o->off);
    }
    return -EINVAL;
}

/* ---- the model ---- */

struct wl_hist {
    uint32_t *op;              /* operation indexes that changed the sector */
    uint32_t n, cap;
};

struct wl_model {
    uint64_t nsec, cs;         /* cs: discard granularity (a cluster, with
                                  extended L2 too) */
    struct wl_hist *h;
};

/* Value operation i leaves in sector s (only for operations that touch it). */
static inline uint32_t wl_value(const struct wl_op *o, uint32_t i)
{
    return o->kind == WL_WRITE ? i : WL_ZERO;
}

/* True if op touches sector s. Discard only zeroes whole clusters (with
 * extended L2 too: partial clusters are left as they are). */
static inline int wl_touches(const struct wl_model *m, const struct wl_op *o, uint64_t s)
{
    uint64_t a = s * WL_SECTOR;

    switch (o->kind) {
    case WL_WRITE:
    case WL_ZERO_KEEP:
    case WL_ZERO_UNMAP:
        return a >= o->off && a < o->off + o->len;
    case WL_DISCARD: {
        uint64_t c0 = (a / m->cs) * m->cs;
        return c0 >= o->off && c0 + m->cs <= o->off + o->len;
    }
    }
    return 0;
}

static inline void wl_model_free(struct wl_model *m)
{
    for (uint64_t s = 0; m->h && s < m->nsec; s++)
        free(m->h[s].op);
    free(m->h);
    memset(m, 0, sizeof(*m));
}

/* Build the per-sector histories of ops[0..n) (run or not). */
static inline int wl_model_build(struct wl_model *m, const struct wl_cfg *c,
                                 const struct wl_op *ops, int n)
{
    m->nsec = c->size / WL_SECTOR;
    m->cs = c->cluster;
    m->h = calloc(m->nsec, sizeof(*m->h));
    if (!m->h)
        return -ENOMEM;
    for (int i = 0; i < n; i++) {
        const struct wl_op *o = &ops[i];
        if (o->kind == WL_FLUSH || o->kind == WL_READ || o->kind == WL_CLOSE)
            continue;
        uint64_t first = FQ_ALIGN_DOWN(o->off, m->cs) / WL_SECTOR;
        uint64_t last = (o->off + o->len + WL_SECTOR - 1) / WL_SECTOR;
        for (uint64_t s = first; s < last && s < m->nsec; s++) {
            if (!wl_touches(m, o, s))
                continue;
            struct wl_hist *h = &m->h[s];
            if (h->n == h->cap) {
                uint32_t nc = h->cap ? h->cap * 2 : 4;
                uint32_t *np = realloc(h->op, nc * sizeof(uint32_t));
                if (!np)
                    return -ENOMEM;
                h->op = np;
                h->cap = nc;
            }
            h->op[h->n++] = (uint32_t)i;
        }
    }
    return 0;
}

/* May sector s hold `b`? `durable` = index of the operation up to which
 * (exclusive) every successful operation is promised durable; operations
 * from `durable` on may have left old or new content if they started
 * (`started(op)` true). A failed operation anywhere may have left its new
 * content. Returns 1 if allowed; *exact is set when only one value was. */
static inline int wl_allowed(const struct wl_model *m, const struct wl_op *ops, uint64_t s,
                             int durable, int nstarted, const uint8_t *b, int *exact)
{
    const struct wl_hist *h = &m->h[s];
    uint32_t base = WL_ZERO;
    int nalt = 0, ok = 0;
    uint32_t i0 = 0;

    /* the last successful operation before `durable` */
    for (uint32_t k = 0; k < h->n && (int)h->op[k] < durable; k++)
        if (ops[h->op[k]].ret == 0) {
            base = wl_value(&ops[h->op[k]], h->op[k]);
            i0 = k + 1;
        }
    ok = wl_sector_is(b, base, s);
    for (uint32_t k = i0; k < h->n && !ok; k++) {
        uint32_t i = h->op[k];
        const struct wl_op *o = &ops[i];
        if ((int)i >= nstarted)
            break;
        if ((int)i < durable && o->ret == 0)
            continue;
        if (o->ret == 1 && (int)i >= nstarted)
            continue;
        nalt++;
        ok = wl_sector_is(b, wl_value(o, i), s);
    }
    if (exact) {
        int alts = 0;
        for (uint32_t k = i0; k < h->n; k++)
            if ((int)h->op[k] < nstarted && ((int)h->op[k] >= durable || ops[h->op[k]].ret != 0))
                alts++;
        *exact = alts == 0;
    }
    (void)nalt;
    return ok;
}

/* ---- in-memory images ---- */

/* Metadata cache options wl_open passes (0: the defaults); the tiny-cache
 * passes of the tests set them, so that tables are loaded, evicted dirty
 * and written back in the middle of every operation. */
static uint64_t wl_l2_cache FQ_UNUSED, wl_l2_entry FQ_UNUSED;

/* Create an empty image for `c` and return its bytes. */
static inline int wl_create(struct fq_ctx *ctx, const struct wl_cfg *c, uint8_t **data, size_t *len)
{
    struct fq_create_opts o;
    struct fq_bdev *mem;
    char err[FQ_ERR_MAX] = "";
    int r;

    fq_create_opts_init(&o);
    o.size = c->size;
    o.cluster_size = c->cluster;
    o.refcount_bits = c->refbits;
    o.version = c->version;
    o.extended_l2 = c->extl2;
    if ((r = fq_mem_open(ctx, NULL, 0, 1u << 30, &mem)) < 0)
        return r;
    r = fq_bdev_create_format(mem, &o, err);
    if (r < 0) {
        fprintf(stderr, "create %s: %s\n", c->name, err);
        fq_bdev_close(mem);
        return r;
    }
    *len = (size_t)mem->size;
    *data = malloc(*len);
    r = *data ? fq_bdev_pread_sync(mem, *data, *len, 0) : -ENOMEM;
    fq_bdev_close(mem);
    return r;
}

/* Open a qcow2 image over a device stack whose bottom is `dev`. */
static inline int wl_open(struct fq_ctx *ctx, struct fq_bdev *dev, int readonly,
                          struct fq_image **img, char *err)
{
    struct fq_open_opts o;
    struct fq_bdev *q;
    int r;

    fq_open_opts_init(&o);
    o.readonly = readonly;
    o.l2_cache_size = wl_l2_cache;
    o.l2_cache_entry_size = wl_l2_entry;
    r = fq_bdev_open_format(dev, "qcow2", &o, &q, err);
    if (r < 0)
        return r;
    r = fq_image_from_bdev(ctx, q, FQ_CACHE_WRITEBACK, img);
    if (r < 0)
        fq_bdev_close(q);
    return r;
}

/* Open a copy of `data` as a qcow2 image on a memory device. */
static inline int wl_open_mem(struct fq_ctx *ctx, const uint8_t *data, size_t len, int readonly,
                              struct fq_image **img, char *err)
{
    struct fq_bdev *mem;
    int r = fq_mem_open(ctx, data, len, len + (64u << 20), &mem);

    if (r < 0)
        return r;
    if (readonly)
        mem->readonly = 1;
    r = wl_open(ctx, mem, readonly, img, err);
    if (r < 0)
        fq_bdev_close(mem);
    return r;
}

/* Write `len` bytes of `data` to a file. */
static inline int wl_save(const char *path, const uint8_t *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    int ok = f && fwrite(data, 1, len, f) == len;

    if (f && fclose(f) != 0)
        ok = 0;
    return ok ? 0 : -EIO;
}

#endif
