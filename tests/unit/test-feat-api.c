/* test-feat-api.c: the image-feature API (compressed writes, snapshots,
 * resize, amend, measure) against a reference model.
 *
 * Part M (model): per configuration (cluster sizes 512 bytes to 64 KiB,
 * refcount widths, compat 0.10, extended L2, zstd) a seeded random mix of
 * plain writes, compressed writes (synchronous and asynchronous, several
 * clusters, the partial last cluster), write-zeroes, discards, snapshot
 * create / apply / delete, growing and shrinking, flushes and reopens runs
 * on an image file; a flat buffer per state (the active one and each
 * snapshot) predicts every read. After every operation the whole disk is
 * read and compared; every few operations fq_check must find nothing, and
 * at the end so must `qemu-img check` (if installed).
 *
 * Part E (edges): argument checks and error codes: alignment, raw images,
 * read-only images, missing snapshots, refcounts too narrow for a
 * snapshot (the image stays clean), shrinking without the flag or over
 * data with FQ_RESIZE_KEEP_DATA, requests
 * in flight (-EBUSY), measure figures known from qemu-img.
 *
 * Usage: test-feat-api [SEED [CONFIG-SUBSTRING]].
 * SPDX-License-Identifier: MIT
 */
#include "testlib.h"
#include "util.h"

#define MiB (1024u * 1024u)
#define MAX_SNAPS 6

struct cfg {
    const char *name;
    const char *opts;          /* fq_create_opts_parse list */
    uint64_t size;
    int nops;
    int direct;                /* cache=none (O_DIRECT) where the file system allows */
};

static const struct cfg cfgs[] = {
    { "c64k", "cluster_size=64k", 2 * MiB, 60, 0 },
    { "c64k-direct", "cluster_size=64k", 2 * MiB, 40, 1 },
    { "c4k-zstd-direct", "cluster_size=4k,compression_type=zstd", 1 * MiB, 60, 1 },
    { "c512-rb64", "cluster_size=512,refcount_bits=64", 256 * 1024, 60, 0 },
    { "c16k-extl2", "cluster_size=16k,extended_l2=on", 1 * MiB, 60, 1 },
    { "c64k-v2", "cluster_size=64k,compat=0.10", 2 * MiB, 50, 0 },
    { "c4k-rb2", "cluster_size=4k,refcount_bits=2", 512 * 1024, 40, 0 },
};

struct state {
    uint8_t *data;
    uint64_t size;
    char name[16];
};

struct m {
    const struct cfg *c;
    uint64_t seed, cs;
    int op;
    struct fq_image *img;
    const char *path;
    struct state cur;
    struct state snap[MAX_SNAPS];
    int nsnap;
    uint8_t *buf;
};

#define MFAIL(M, ...)                                                          \
    do {                                                                       \
        fprintf(stderr, "test-feat-api: FAIL %s seed %llu op %d: ", (M)->c->name, \
                (unsigned long long)(M)->seed, (M)->op);                       \
        fprintf(stderr, __VA_ARGS__);                                          \
        fputc('\n', stderr);                                                   \
        tl_failures++;                                                         \
    } while (0)

/* Compressible content: runs of bytes that name the write and the offset. */
static void fill(uint8_t *b, size_t len, uint64_t gen, uint64_t off, int random)
{
    if (random) {
        tl_fill_pattern(b, len, gen, off);
        return;
    }
    for (size_t i = 0; i < len; i++)
        b[i] = (uint8_t)(((off + i) / 256 + gen * 13) % 251 + 1);
}

static int reopen(struct m *M)
{
    char err[FQ_ERR_MAX] = "";
    struct fq_open_opts o;
    int r;

    if (M->img && (r = fq_close(M->img)) < 0) {
        MFAIL(M, "close: %s", strerror(-r));
        M->img = NULL;
        return r;
    }
    fq_open_opts_init(&o);
    o.engine = FQ_ENGINE_THREADS;
    if (M->c->direct && tl_direct_ok())
        o.cache = FQ_CACHE_NONE;
    if ((r = fq_open(M->path, &o, &M->img, err)) < 0) {
        MFAIL(M, "open: %s", err);
        M->img = NULL;
    }
    return r;
}

static void verify(struct m *M, const char *what)
{
    uint64_t size = fq_size(M->img);
    uint8_t *got;
    int r;

    if (size != M->cur.size) {
        MFAIL(M, "%s: size %llu, model %llu", what, (unsigned long long)size,
              (unsigned long long)M->cur.size);
        return;
    }
    if (!(got = malloc(size ? size : 1)))
        return;
    if ((r = fq_pread(M->img, got, (size_t)size, 0)) < 0)
        MFAIL(M, "%s: read: %s", what, strerror(-r));
    else if (memcmp(got, M->cur.data, (size_t)size)) {
        MFAIL(M, "%s: the disk differs from the model", what);
        tl_dump_diff(M->cur.data, got, (size_t)size, 0);
    }
    free(got);
}

static void check_clean(struct m *M, const char *what)
{
    struct fq_check_result res;
    struct tl_msgs msgs = { 0 };
    int r = fq_check(M->img, 0, &res, tl_msg_cb, &msgs);

    if (r < 0 || res.corruptions || res.leaks || res.check_errors) {
        MFAIL(M, "%s: check %d: %lld corruptions, %lld leaks, %lld errors", what, r,
              (long long)res.corruptions, (long long)res.leaks, (long long)res.check_errors);
        for (int i = 0; i < msgs.n && i < 4; i++)
            fprintf(stderr, "  %s\n", msgs.first[i]);
    }
}

static int copy_state(struct state *dst, const struct state *src)
{
    uint8_t *d = malloc(src->size ? src->size : 1);

    if (!d)
        return -ENOMEM;
    memcpy(d, src->data, (size_t)src->size);
    free(dst->data);
    dst->data = d;
    dst->size = src->size;
    return 0;
}

static void resize_model(struct state *s, uint64_t size)
{
    uint8_t *d = realloc(s->data, size ? size : 1);

    if (!d)
        return;
    if (size > s->size)
        memset(d + s->size, 0, (size_t)(size - s->size));
    s->data = d;
    s->size = size;
}

struct aio_wait {
    int done, ret;
};

static void aio_cb(void *opaque, int ret)
{
    struct aio_wait *w = opaque;

    w->done = 1;
    w->ret = ret;
}

static void step(struct m *M, struct tl_rng *g)
{
    uint64_t cs = M->cs, size = M->cur.size, ncl = FQ_DIV_UP(size, cs);
    unsigned p = (unsigned)tl_below(g, 100);
    char err[FQ_ERR_MAX] = "", what[96];
    int r = 0;

    err[0] = '\0';
    if (p < 25) {                                   /* plain write */
        uint64_t off = tl_below(g, size / 512) * 512;
        uint64_t want = tl_range(g, 1, 3 * cs / 512 + 1) * 512, len = FQ_MIN(want, size - off);
        fill(M->buf, (size_t)len, (uint64_t)M->op, off, tl_pct(g, 30));
        snprintf(what, sizeof(what), "write 0x%llx+0x%llx", (unsigned long long)off, (unsigned long long)len);
        if ((r = fq_pwrite(M->img, M->buf, (size_t)len, off)) == 0)
            memcpy(M->cur.data + off, M->buf, (size_t)len);
    } else if (p < 50) {                            /* compressed write */
        uint64_t c0 = tl_below(g, ncl), want = tl_range(g, 1, 3), n = FQ_MIN(want, ncl - c0);
        uint64_t off = c0 * cs, len = FQ_MIN(n * cs, size - off);
        fill(M->buf, (size_t)len, (uint64_t)M->op, off, tl_pct(g, 15));
        snprintf(what, sizeof(what), "compressed write 0x%llx+0x%llx", (unsigned long long)off,
                 (unsigned long long)len);
        if (n == 1 && len == FQ_MIN(cs, size - off) && tl_pct(g, 50)) {
            r = fq_pwrite_compressed(M->img, M->buf, off);
        } else if (tl_pct(g, 50)) {
            struct iovec v[2] = { { M->buf, (size_t)len / 2 }, { M->buf + len / 2, (size_t)(len - len / 2) } };
            r = fq_pwritev_compressed(M->img, v, 2, 0, (size_t)len, off);
        } else {
            struct iovec v = { M->buf, (size_t)len };
            struct aio_wait w = { 0, 0 };
            r = fq_aio_pwritev_compressed(M->img, &v, 1, 0, (size_t)len, off, aio_cb, &w);
            while (r == 0 && !w.done)
                r = fq_ctx_run(fq_image_ctx(M->img), 1, -1) < 0 ? -EIO : 0;
            if (r == 0)
                r = w.ret;
        }
        if (r == 0)
            memcpy(M->cur.data + off, M->buf, (size_t)len);
    } else if (p < 58) {                            /* zeroes or discard */
        uint64_t off = tl_below(g, size / 512) * 512;
        uint64_t want = tl_range(g, 1, 4 * cs / 512) * 512, len = FQ_MIN(want, size - off);
        if (tl_pct(g, 50)) {
            snprintf(what, sizeof(what), "write-zeroes 0x%llx+0x%llx", (unsigned long long)off,
                     (unsigned long long)len);
            if ((r = fq_write_zeroes(M->img, off, len, tl_pct(g, 50) ? FQ_ZERO_MAY_UNMAP : 0)) == 0)
                memset(M->cur.data + off, 0, (size_t)len);
        } else {
            /* whole clusters become zeros, with extended L2 too (the
             * partial last cluster of the disk counts when the request
             * reaches the end); no backing file here */
            uint64_t a = FQ_ALIGN_UP(off, cs);
            uint64_t e = off + len == size ? size : FQ_ALIGN_DOWN(off + len, cs);
            snprintf(what, sizeof(what), "discard 0x%llx+0x%llx", (unsigned long long)off,
                     (unsigned long long)len);
            if ((r = fq_discard(M->img, off, len)) == 0) {
                if (e > a)
                    memset(M->cur.data + a, 0, (size_t)(e - a));
            }
        }
    } else if (p < 68) {                            /* snapshot create */
        snprintf(what, sizeof(what), "snapshot create");
        if (M->nsnap == MAX_SNAPS) {
            int k = (int)tl_below(g, M->nsnap);
            snprintf(what, sizeof(what), "snapshot delete %s", M->snap[k].name);
            if ((r = fq_snapshot_delete(M->img, M->snap[k].name, err)) == 0) {
                free(M->snap[k].data);
                M->snap[k] = M->snap[--M->nsnap];
                memset(&M->snap[M->nsnap], 0, sizeof(M->snap[0]));
            }
        } else {
            struct state *s = &M->snap[M->nsnap];
            snprintf(s->name, sizeof(s->name), "s%d", M->op);
            r = fq_snapshot_create(M->img, s->name, err);
            if (r == -ERANGE && strstr(M->c->opts, "refcount_bits=2")) {
                r = 0;   /* 2-bit refcounts run out: refused, nothing changed */
                s->name[0] = '\0';
            } else if (r == 0 && copy_state(s, &M->cur) == 0) {
                M->nsnap++;
            }
        }
    } else if (p < 76 && M->nsnap) {                /* snapshot apply */
        int k = (int)tl_below(g, M->nsnap);
        snprintf(what, sizeof(what), "snapshot apply %s", M->snap[k].name);
        if ((r = fq_snapshot_apply(M->img, M->snap[k].name, err)) == 0)
            copy_state(&M->cur, &M->snap[k]);
        else if (r == -ERANGE && strstr(M->c->opts, "refcount_bits=2"))
            r = 0;   /* no room for the extra references: refused, nothing changed */
    } else if (p < 82 && M->nsnap) {                /* snapshot delete */
        int k = (int)tl_below(g, M->nsnap);
        snprintf(what, sizeof(what), "snapshot delete %s", M->snap[k].name);
        if ((r = fq_snapshot_delete(M->img, M->snap[k].name, err)) == 0) {
            free(M->snap[k].data);
            M->snap[k] = M->snap[--M->nsnap];
            memset(&M->snap[M->nsnap], 0, sizeof(M->snap[0]));
        }
    } else if (p < 90) {                            /* resize */
        uint64_t ns = tl_pct(g, 60) ? size + tl_range(g, 1, 2 * M->c->size / 512) * 512
                                    : tl_range(g, 1, size / 512) * 512;
        ns = FQ_MIN(ns, 4 * M->c->size);
        snprintf(what, sizeof(what), "resize %llu -> %llu", (unsigned long long)size, (unsigned long long)ns);
        /* asked to keep data, a shrink over data is refused (changing
         * nothing); a plain shrink then drops it */
        r = fq_resize(M->img, ns, FQ_RESIZE_SHRINK | FQ_RESIZE_KEEP_DATA, err);
        if (r == -ENOTEMPTY && ns < size)
            r = fq_resize(M->img, ns, tl_pct(g, 50) ? FQ_RESIZE_SHRINK
                                                    : FQ_RESIZE_SHRINK | FQ_RESIZE_DISCARD_DATA, err);
        /* a v2 snapshot records no size: its image cannot be resized */
        if (r == -ENOTSUP && strstr(M->c->opts, "compat=0.10") && M->nsnap > 0)
            r = 0;
        else if (r == 0)
            resize_model(&M->cur, ns);
    } else if (p < 95) {
        snprintf(what, sizeof(what), "flush");
        r = fq_flush(M->img);
    } else {
        snprintf(what, sizeof(what), "reopen");
        r = reopen(M);
        if (r < 0)
            return;
    }
    if (r < 0) {
        MFAIL(M, "%s: %s %s", what, strerror(-r), err);
        return;
    }
    if (getenv("TL_VERBOSE"))
        fprintf(stderr, "  op %d: %s\n", M->op, what);
    verify(M, what);
    if (M->op % 5 == 4)
        check_clean(M, what);
}

static void part_m(const struct cfg *c, uint64_t seed)
{
    struct m M = { .c = c, .seed = seed };
    struct fq_create_opts co;
    char err[FQ_ERR_MAX] = "", name[64], path[4352];
    struct tl_rng g;
    int r;

    tl_rng_seed(&g, seed);
    snprintf(name, sizeof(name), "m-%s.qcow2", c->name);
    /* a copy: tl_path's buffers are reused (tl_direct_ok takes one) */
    snprintf(path, sizeof(path), "%s", tl_path(name));
    M.path = path;
    fq_create_opts_init(&co);
    if (fq_create_opts_parse(&co, c->opts, err) < 0) {
        MFAIL(&M, "options: %s", err);
        return;
    }
    co.size = c->size;
    r = fq_create(M.path, &co, err);
    fq_create_opts_release(&co);
    if (r < 0) {
        MFAIL(&M, "create: %s", err);
        return;
    }
    struct fq_info in;
    M.cur.size = c->size;
    M.cur.data = calloc(1, c->size);
    M.buf = malloc(8 * c->size + (4u << 20));
    if (!M.cur.data || !M.buf || reopen(&M) < 0 || fq_get_info(M.img, &in) < 0)
        goto out;
    M.cs = in.cluster_size;
    for (M.op = 0; M.op < c->nops && tl_failures < 5 && M.img; M.op++)
        step(&M, &g);
    if (!M.img)
        goto out;     /* a reopen failed (reported) */
    check_clean(&M, "the end");
    /* every snapshot still reads as it was taken */
    for (int k = 0; k < M.nsnap && tl_failures < 5; k++) {
        if ((r = fq_snapshot_apply(M.img, M.snap[k].name, err)) < 0) {
            if (r != -ERANGE || !strstr(c->opts, "refcount_bits=2"))
                MFAIL(&M, "final apply %s: %s", M.snap[k].name, err);
            continue;
        }
        copy_state(&M.cur, &M.snap[k]);
        verify(&M, M.snap[k].name);
    }
    check_clean(&M, "after applying every snapshot");
    if (M.img && (r = fq_close(M.img)) < 0)
        MFAIL(&M, "final close: %s", strerror(-r));
    M.img = NULL;
    if (tl_have("qemu-img") && tl_sh("qemu-img check -q '%s'", M.path) != 0) {
        MFAIL(&M, "qemu-img check");
        tl_sh("qemu-img check '%s' 2>&1 | head -5 >&2", M.path);
    }
out:
    if (M.img)
        fq_close(M.img);
    free(M.cur.data);
    for (int k = 0; k < M.nsnap; k++)
        free(M.snap[k].data);
    free(M.buf);
}

/* ---- E: edges ---- */

#define ECHECK(cond, ...) TL_CHECK(cond, __VA_ARGS__)

static struct fq_image *mk(const char *name, const char *opts, uint64_t size, int readonly)
{
    struct fq_create_opts co;
    struct fq_open_opts oo;
    struct fq_image *img = NULL;
    char err[FQ_ERR_MAX] = "";

    fq_create_opts_init(&co);
    if (opts)
        fq_create_opts_parse(&co, opts, err);
    co.size = size;
    if (fq_create(tl_path(name), &co, err) < 0)
        fprintf(stderr, "create %s: %s\n", name, err);
    fq_create_opts_release(&co);
    fq_open_opts_init(&oo);
    oo.readonly = readonly;
    oo.engine = FQ_ENGINE_SYNC;
    if (fq_open(tl_path(name), &oo, &img, err) < 0)
        fprintf(stderr, "open %s: %s\n", name, err);
    return img;
}

static void part_e(void)
{
    static uint8_t buf[2 * 65536];
    struct fq_check_result res;
    struct fq_snapshot *v;
    struct fq_measure_result mr;
    struct fq_create_opts co;
    char err[FQ_ERR_MAX];
    int n, r;

    memset(buf, 0x41, sizeof(buf));
    /* alignment and lengths */
    struct fq_image *img = mk("e.qcow2", NULL, 1 * MiB + 1024, 0);
    if (!img) {
        tl_failures++;
        return;
    }
    struct iovec iv = { buf, sizeof(buf) };
    ECHECK(fq_pwrite_compressed(img, buf, 512) == -EINVAL, "unaligned offset");
    ECHECK(fq_pwritev_compressed(img, &iv, 1, 0, 1000, 0) == -EINVAL, "partial cluster inside the disk");
    ECHECK(fq_pwritev_compressed(img, &iv, 1, 0, 65536, 1 * MiB) == -EINVAL, "past the end");
    ECHECK(fq_pwritev_compressed(img, &iv, 1, 0, 1024, 1 * MiB) == 0, "the partial last cluster");
    ECHECK(fq_pwrite_compressed(img, buf, 1 * MiB) == 0, "the partial last cluster, one-cluster API");
    ECHECK(fq_pwritev_compressed(img, &iv, 1, 0, 0, 0) == 0, "nothing");
    ECHECK(fq_pwrite_compressed(img, buf, 2 * MiB) == -EINVAL, "beyond the disk");
    /* shrink needs the flag */
    ECHECK(fq_resize(img, 512 * 1024, 0, err) == -EINVAL, "shrink without the flag");
    ECHECK(fq_size(img) == 1 * MiB + 1024, "size unchanged");
    /* asked to keep data: refused, naming the first offset in use */
    ECHECK(fq_resize(img, 512 * 1024, FQ_RESIZE_SHRINK | FQ_RESIZE_KEEP_DATA, err) == -ENOTEMPTY &&
           strstr(err, "0x100000"), "shrink over data, keeping it: %s", err);
    ECHECK(fq_size(img) == 1 * MiB + 1024, "size unchanged");
    ECHECK(fq_resize(img, 1 * MiB + 1024, FQ_RESIZE_SHRINK | 8u, err) == -EINVAL, "unknown flag");
    /* snapshots by ID and name */
    ECHECK(fq_snapshot_create(img, "a", err) == 0, "create a: %s", err);
    ECHECK(fq_snapshot_create(img, "a", err) == 0, "create a again (names need not be unique)");
    ECHECK(fq_snapshot_apply(img, "nosuch", err) == -ENOENT, "apply nosuch");
    ECHECK(fq_snapshot_delete(img, "nosuch", err) == -ENOENT, "delete nosuch");
    ECHECK(fq_snapshot_list(img, &v, &n) == 0 && n == 2, "two snapshots");
    if (n == 2)
        ECHECK(!strcmp(v[0].id, "1") && !strcmp(v[1].id, "2") && !strcmp(v[1].name, "a") &&
               v[0].disk_size == 1 * MiB + 1024 && v[0].icount == 0, "snapshot fields");
    fq_snapshot_list_free(v, n);
    ECHECK(fq_snapshot_delete(img, "2", err) == 0, "delete by ID");
    ECHECK(fq_snapshot_delete(img, "a", err) == 0, "delete by name");
    ECHECK(fq_snapshot_list(img, &v, &n) == 0 && n == 0 && !v, "no snapshots left");
    /* requests in flight */
    struct aio_wait w = { 0, 0 };
    r = fq_aio_pwritev(img, &iv, 1, 0, 65536, 0, aio_cb, &w);
    ECHECK(r == 0, "aio write");
    ECHECK(fq_snapshot_create(img, "busy", err) == -EBUSY, "snapshot with a write in flight");
    ECHECK(fq_resize(img, 2 * MiB, 0, err) == -EBUSY, "resize with a write in flight");
    while (!w.done && fq_ctx_run(fq_image_ctx(img), 1, -1) >= 0)
        ;
    ECHECK(fq_snapshot_create(img, "idle", err) == 0, "snapshot once idle: %s", err);
    ECHECK(fq_check(img, 0, &res, NULL, NULL) == 0 && !res.corruptions && !res.leaks, "clean");
    fq_close(img);

    /* refcounts too narrow for a snapshot: refused, nothing changes */
    img = mk("rb1.qcow2", "refcount_bits=1", 1 * MiB, 0);
    if (img) {
        fq_pwrite(img, buf, sizeof(buf), 0);
        fq_pwrite_compressed(img, buf, 4 * 65536);
        ECHECK(fq_snapshot_create(img, "x", err) == -ERANGE, "1-bit refcounts: %s", err);
        ECHECK(fq_snapshot_list(img, &v, &n) == 0 && n == 0, "no snapshot");
        ECHECK(fq_check(img, 0, &res, NULL, NULL) == 0 && !res.corruptions && !res.leaks,
               "clean after the refusal (%lld corruptions, %lld leaks)", (long long)res.corruptions,
               (long long)res.leaks);
        uint8_t back[sizeof(buf)];
        ECHECK(fq_pread(img, back, sizeof(back), 0) == 0 && !memcmp(back, buf, sizeof(buf)), "data kept");
        fq_close(img);
    }
    /* read-only */
    img = mk("e.qcow2", NULL, 1 * MiB, 1);
    if (img) {
        ECHECK(fq_pwrite_compressed(img, buf, 0) == -EROFS, "compressed write on read-only");
        ECHECK(fq_snapshot_create(img, "x", err) == -EROFS, "snapshot on read-only");
        ECHECK(fq_resize(img, 2 * MiB, 0, err) == -EROFS, "resize on read-only");
        ECHECK(fq_snapshot_list(img, &v, &n) == 0, "list on read-only");
        fq_snapshot_list_free(v, n);
        fq_close(img);
    }
    /* raw */
    {
        struct fq_create_opts ro;
        struct fq_open_opts oo;
        fq_create_opts_init(&ro);
        ro.format = "raw";
        ro.size = 1 * MiB;
        fq_create(tl_path("e.raw"), &ro, err);
        fq_open_opts_init(&oo);
        oo.format = "raw";
        if (fq_open(tl_path("e.raw"), &oo, &img, err) == 0) {
            ECHECK(fq_pwrite_compressed(img, buf, 0) == -ENOTSUP, "compressed write on raw");
            ECHECK(fq_snapshot_create(img, "x", err) == -ENOTSUP, "snapshot on raw");
            ECHECK(fq_resize(img, 3 * MiB, 0, err) == 0 && fq_size(img) == 3 * MiB, "raw grows");
            ECHECK(fq_resize(img, 1 * MiB, FQ_RESIZE_SHRINK, err) == 0 && fq_size(img) == 1 * MiB,
                   "raw shrinks");
            fq_close(img);
        }
    }
    /* measure: figures qemu-img 7.2 prints */
    fq_create_opts_init(&co);
    co.size = 1ull << 30;
    ECHECK(fq_measure(&co, NULL, &mr, err) == 0 && mr.required == 393216 &&
           mr.fully_allocated == 1074135040, "measure 1G: %llu %llu",
           (unsigned long long)mr.required, (unsigned long long)mr.fully_allocated);
    co.size = 1000;
    ECHECK(fq_measure(&co, NULL, &mr, err) == 0 && mr.required == 327680 &&
           mr.fully_allocated == 393216, "measure 1000");
    co.format = "raw";
    ECHECK(fq_measure(&co, NULL, &mr, err) == 0 && mr.required == 1024, "measure raw 1000");
    co.format = "vmdk";
    ECHECK(fq_measure(&co, NULL, &mr, err) == -ENOTSUP, "measure vmdk");
}

int main(int argc, char **argv)
{
    uint64_t seed = tl_seed_arg(argc, argv, 1);
    const char *only = argc > 2 ? argv[2] : NULL;

    tl_name = "test-feat-api";
    tl_mkdir();
    for (size_t i = 0; i < sizeof(cfgs) / sizeof(cfgs[0]); i++)
        if (!only || strstr(cfgs[i].name, only))
            part_m(&cfgs[i], seed + i);
    if (!only || strstr("edges", only))
        part_e();
    if (tl_failures)
        fprintf(stderr, "test-feat-api: %d failure(s), seed %llu\n", tl_failures, (unsigned long long)seed);
    return tl_failures ? 1 : 0;
}
