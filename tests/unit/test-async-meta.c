/* test-async-meta.c: asynchronous metadata, white-box (the qcow2 driver's
 * counts are read from its state).
 *
 * Part S (shared loads): 32 reads under one cold L2 slice, in flight
 * together, cost one read of the slice from the device (counted by a fault
 * device underneath), and every one of them is answered.
 *
 * Part C (concurrency): on a memory device, with the smallest caches,
 * batches of allocating writes, compressed writes (compressed on workers,
 * stored from the loop: synchronous metadata work while asynchronous
 * write-backs may be in flight), flushes and reads run together, on an
 * image with 512-byte clusters and 64-bit refcounts whose refcount table
 * must grow many times. Every read matches a flat model, the write-backs
 * and table growths beside them happened, fq_check finds no corruption,
 * and `qemu-img check` (if installed) none either.
 *
 * Part H (huge chunks): a cache of 16 MiB carves its buffers from 2 MiB
 * chunks (L2 slices of 4 KiB, and whole tables): writes spread over 4,096
 * tables of a sparse image, in flight 32 at a time, read back equal, with
 * the cache's entries in 2 MiB-aligned chunks.
 *
 * Usage: test-async-meta [SEED].
 * SPDX-License-Identifier: MIT
 */
#include "api/api.h"
#include "core/core.h"
#include "drivers/qcow2/qcow2.h"
#include "testdev.h"
#include "testlib.h"

#define KiB 1024ull
#define MiB (1024ull * 1024ull)

static struct qcow2 *qcow2_of(struct fq_image *img)
{
    return fq_image_bdev(img)->priv;
}

static int pending;

static void count_cb(void *opaque, int ret)
{
    int *r = opaque;

    if (ret < 0 && *r == 0)
        *r = ret;
    pending--;
}

static void drain(struct fq_ctx *ctx)
{
    while (pending > 0)
        if (fq_ctx_run(ctx, 1, 5000) < 0)
            break;
}

/* ---- part S ---- */

static void shared_loads(void)
{
    const char *path = tl_path("shared.qcow2");
    struct fq_ctx *ctx;
    struct fq_bdev *file, *flt, *q;
    struct fq_image *img;
    struct fq_open_opts o;
    struct fq_fault_counts cnt;
    char err[FQ_ERR_MAX] = "";
    static uint8_t buf[32][4096];

    if (tl_create_image(path, "qcow2", 64 * MiB, 65536, 0) < 0)
        return;
    /* an L2 table, with data only at its start */
    if ((img = tl_open_image(path, "qcow2", 0, FQ_ENGINE_DEFAULT, NULL))) {
        memset(buf[0], 0x5a, 4096);
        TL_CHECK(fq_pwrite(img, buf[0], 4096, 0) == 0, "write");
        fq_close(img);
    }
    TL_CHECK(fq_ctx_new(FQ_ENGINE_DEFAULT, &ctx, err) == 0, "ctx: %s", err);
    fq_open_opts_init(&o);
    o.l2_cache_size = 1024;
    o.l2_cache_entry_size = 512;
    int r = fq_bdev_open_file(ctx, path, FQ_FILE_RDONLY, &file, err);
    if (r == 0)
        r = fq_fault_open(file, 0, &flt);
    o.readonly = 1;
    if (r == 0)
        r = fq_bdev_open_format(flt, "qcow2", &o, &q, err);
    if (r == 0)
        r = fq_image_from_bdev(ctx, q, FQ_CACHE_WRITEBACK, &img);
    TL_CHECK(r == 0, "open: %d %s", r, err);
    if (r < 0)
        return;
    fq_fault_arm(flt, &(struct fq_fault_spec){ .kind = FQ_FAULT_NONE });
    int res = 0;
    struct iovec v[32];
    for (int i = 0; i < 32; i++) {
        memset(buf[i], 0xee, 4096);
        v[i] = (struct iovec){ buf[i], 4096 };
        /* guest 16 MiB + i * 64 KiB: one 512-byte slice covers 4 MiB */
        TL_CHECK(fq_aio_preadv(img, &v[i], 1, 0, 4096, 16 * MiB + i * 64 * KiB, count_cb, &res) == 0,
                 "submit");
        pending++;
    }
    drain(ctx);
    TL_CHECK(res == 0, "reads: %d", res);
    for (int i = 0; i < 32; i++)
        for (int k = 0; k < 4096; k++)
            if (buf[i][k]) {
                TL_CHECK(0, "read %d not zero at %d", i, k);
                break;
            }
    fq_fault_counts(flt, &cnt);
    struct qcow2 *s = qcow2_of(img);
    TL_CHECK(cnt.reads == 1, "32 reads under one slice cost %llu device reads",
             (unsigned long long)cnt.reads);
    TL_CHECK(s->stats.loads == 1 && s->stats.joined == 31, "loads %llu joined %llu",
             (unsigned long long)s->stats.loads, (unsigned long long)s->stats.joined);
    fq_close(img);
    fq_ctx_free(ctx);
}

/* ---- part C ---- */

struct cop {
    int kind;                   /* 0 write, 1 compressed, 2 flush, 3 read */
    uint64_t off, len;
    uint8_t *buf;
    struct iovec iov;
    int ret;
};

static void concurrency(uint64_t seed)
{
    const uint64_t size = 6 * MiB, cs = 512;
    const char *path = tl_path("conc.qcow2");
    struct fq_create_opts co;
    struct fq_open_opts o;
    struct fq_image *img;
    struct tl_rng rng;
    char err[FQ_ERR_MAX] = "";
    uint8_t *model = calloc(1, size), *back = malloc(size);
    struct cop ops[24];
    int nbatch = 100;

    tl_rng_seed(&rng, seed);
    fq_create_opts_init(&co);
    co.size = size;
    co.cluster_size = (uint32_t)cs;
    co.refcount_bits = 64;
    TL_CHECK(fq_create(path, &co, err) == 0, "create: %s", err);
    fq_open_opts_init(&o);
    o.engine = FQ_ENGINE_THREADS;
    o.l2_cache_size = 1024;     /* two tables */
    TL_CHECK(fq_open(path, &o, &img, err) == 0, "open: %s", err);
    if (!model || !back || !img)
        return;
    struct fq_ctx *ctx = fq_image_ctx(img);
    for (int b = 0; b < nbatch && !tl_failures; b++) {
        int n = (int)tl_range(&rng, 4, 24), k = 0;
        for (int tries = 0; k < n && tries < 100; tries++) {
            struct cop *c = &ops[k];
            memset(c, 0, sizeof(*c));
            unsigned p = (unsigned)tl_below(&rng, 100);
            c->kind = p < 45 ? 0 : p < 75 ? 1 : p < 85 ? 2 : 3;
            uint64_t nc = tl_range(&rng, 1, 16);
            c->off = tl_below(&rng, size / cs - nc) * cs;
            c->len = nc * cs;
            if (c->kind == 0 && tl_pct(&rng, 40)) {   /* unaligned writes too */
                c->off += tl_below(&rng, cs);
                c->len -= tl_below(&rng, cs);
            }
            bool clash = false;
            for (int i = 0; i < k && c->kind != 2; i++)
                clash |= ops[i].kind != 2 && c->off < ops[i].off + ops[i].len &&
                         ops[i].off < c->off + c->len;
            if (clash)
                continue;
            k++;
        }
        for (int i = 0; i < k; i++) {
            struct cop *c = &ops[i];
            int r = 0;
            if (c->kind != 2) {
                c->buf = malloc(c->len);
                c->iov = (struct iovec){ c->buf, c->len };
            }
            if (c->kind == 0 || c->kind == 1) {
                for (uint64_t j = 0; j < c->len; j++)
                    c->buf[j] = (uint8_t)(tl_rand(&rng) & 0x3f);   /* compresses */
                memcpy(model + c->off, c->buf, c->len);
            }
            switch (c->kind) {
            case 0:
                r = fq_aio_pwritev(img, &c->iov, 1, 0, c->len, c->off, count_cb, &c->ret);
                break;
            case 1:
                r = fq_aio_pwritev_compressed(img, &c->iov, 1, 0, c->len, c->off, count_cb, &c->ret);
                break;
            case 2:
                r = fq_aio_flush(img, count_cb, &c->ret);
                break;
            case 3:
                r = fq_aio_preadv(img, &c->iov, 1, 0, c->len, c->off, count_cb, &c->ret);
                break;
            }
            TL_CHECK(r == 0, "batch %d op %d: submit %d", b, i, r);
            pending += r == 0;
        }
        drain(ctx);
        for (int i = 0; i < k; i++) {
            struct cop *c = &ops[i];
            TL_CHECK(c->ret == 0, "batch %d op %d (kind %d at %llu+%llu): %d", b, i, c->kind,
                     (unsigned long long)c->off, (unsigned long long)c->len, c->ret);
            if (c->kind == 3 && c->ret == 0)
                TL_CHECK(!memcmp(c->buf, model + c->off, c->len), "batch %d: read at %llu differs",
                         b, (unsigned long long)c->off);
            free(c->buf);
        }
    }
    struct qcow2 *s = qcow2_of(img);
    TL_CHECK(s->stats.wbs > 0, "no asynchronous write-back ran");
    TL_MSG("concurrency: %llu loads, %llu joined, %llu write-backs, %llu parked for room, "
           "%llu synchronous fills, %llu table growths beside a write-back",
           (unsigned long long)s->stats.loads, (unsigned long long)s->stats.joined,
           (unsigned long long)s->stats.wbs, (unsigned long long)s->stats.evict_parks,
           (unsigned long long)s->stats.sync_fills, (unsigned long long)s->stats.narrow_grows);
    TL_CHECK(fq_pread(img, back, size, 0) == 0, "read back");
    TL_CHECK(!memcmp(back, model, size), "the image differs from the model");
    TL_CHECK(fq_close(img) == 0, "close");
    fq_open_opts_init(&o);
    o.check_mode = o.readonly = 1;
    if (fq_open(path, &o, &img, err) == 0) {
        struct fq_check_result res;
        TL_CHECK(fq_check(img, 0, &res, NULL, NULL) == 0 && res.corruptions == 0,
                 "fq_check: %lld corruptions", (long long)res.corruptions);
        fq_close(img);
    }
    if (tl_have("qemu-img")) {
        int st = tl_sh("qemu-img check -q '%s'", path);
        TL_CHECK(st == 0 || st == 3, "qemu-img check exited %d", st);
    }
    free(model);
    free(back);
}

/* Part H: one pass with the given l2-cache-entry-size. */
static void huge_chunks_pass(const char *entry)
{
    const char *path = tl_path("huge.qcow2");
    const uint64_t span = 512 * MiB, n = 4096;   /* one write per L2 table */
    struct fq_open_opts o;
    struct fq_image *img = NULL;
    char err[FQ_ERR_MAX] = "";
    uint8_t buf[4096], got[4096];

    if (tl_create_image(path, "qcow2", n * span, 65536, 3) < 0)
        return;
    fq_open_opts_init(&o);
    fq_open_opts_set(&o, "l2-cache-size", "16M", err);
    fq_open_opts_set(&o, "l2-cache-entry-size", entry, err);
    int r = fq_open(path, &o, &img, err);
    TL_CHECK(r == 0, "open with l2-cache-entry-size=%s: %d %s", entry, r, err);
    if (r < 0)
        return;
    struct fq_ctx *ctx = fq_image_ctx(img);
    static uint8_t wbuf[32][4096];
    struct iovec wiov[32];   /* valid until each write's callback */
    int wr = 0;
    for (uint64_t i = 0; i < n; i++) {
        uint8_t *b = wbuf[i % 32];
        memset(b, (int)(i * 31 + 7), 4096);
        wiov[i % 32] = (struct iovec){ b, 4096 };
        r = fq_aio_pwritev(img, &wiov[i % 32], 1, 0, 4096,
                           i * span + (i % 7) * 65536, count_cb, &wr);
        TL_CHECK(r == 0, "aio write %llu: %d", (unsigned long long)i, r);
        pending += r == 0;
        if (i % 32 == 31)
            drain(ctx);   /* 32 in flight, then their buffers are free */
    }
    drain(ctx);
    TL_CHECK(wr == 0, "entry %s: a write failed: %d", entry, wr);
    for (uint64_t i = 0; i < n; i += 3) {
        r = fq_pread(img, got, sizeof(got), i * span + (i % 7) * 65536);
        memset(buf, (int)(i * 31 + 7), sizeof(buf));
        TL_CHECK(r == 0 && !memcmp(buf, got, sizeof(got)), "entry %s: table %llu reads back: %d",
                 entry, (unsigned long long)i, r);
    }
    struct qcache *c = &qcow2_of(img)->l2_cache;
    TL_CHECK(c->nchunks > 0, "entry %s: no chunks", entry);
    for (size_t i = 0; i < c->nchunks; i++)
        TL_CHECK((uintptr_t)c->chunks[i] % (2 * MiB) == 0, "entry %s: chunk %zu not 2 MiB aligned",
                 entry, i);
    TL_CHECK(fq_close(img) == 0, "close");
    if (tl_have("qemu-img"))
        TL_CHECK(tl_sh("qemu-img check -q '%s'", path) == 0, "entry %s: qemu-img check", entry);
    unlink(path);
}

static void huge_chunks(void)
{
    huge_chunks_pass("4K");
    huge_chunks_pass("64K");
}

int main(int argc, char **argv)
{
    uint64_t seed = tl_seed_arg(argc, argv, 1);

    tl_name = "test-async-meta";
    tl_mkdir();
    fprintf(stderr, "test-async-meta: seed %llu\n", (unsigned long long)seed);
    shared_loads();
    concurrency(seed);
    huge_chunks();
    if (!tl_failures)
        printf("test-async-meta: ok\n");
    return tl_failures ? 1 : 0;
}
