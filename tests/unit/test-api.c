/* test-api.c: the public API's parsers and its failures to open, create
 * and describe.
 *
 *  - parsers: fq_parse_size, fq_engine_parse, fq_cache_parse,
 *    fq_create_opts_parse (qemu-img's -o spellings, unknown keys rejected
 *    with a message);
 *  - open and create failures: a missing file, a directory, a non-qcow2
 *    file opened as qcow2, truncated and invalid qcow2 headers, invalid
 *    create options: each a negative errno and a non-empty message;
 *  - fq_get_info and fq_map on a fresh and a written qcow2 image;
 *  - no_readahead: a read through an overlay brings only what it asked
 *    for into the page cache from its backing file (where the kernel is
 *    seen to read ahead without it).
 * Requests at the edges of the API are test-api-edges.c.
 * SPDX-License-Identifier: MIT
 */
#include <sys/mman.h>

#include "testlib.h"

#define MiB (1ull << 20)

/* ---- parsers ---- */

static void test_parse_size(void)
{
    static const struct { const char *s; uint64_t v; } good[] = {
        { "0", 0 }, { "512", 512 }, { "64k", 65536 }, { "64K", 65536 },
        { "1M", 1048576 }, { "2G", 2147483648ull }, { "1.5G", 1610612736ull },
        { "1T", 1ull << 40 }, { "4096", 4096 }, { "0.5k", 512 },
    };
    static const char *const bad[] = { "", "abc", "-1", "1x", "k", "1.5", "12q" };

    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        uint64_t v = 12345;
        int r = fq_parse_size(good[i].s, &v);
        TL_CHECK(r == 0 && v == good[i].v, "fq_parse_size(\"%s\") = %d, %" PRIu64 "; want %" PRIu64,
                 good[i].s, r, v, good[i].v);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        uint64_t v = 777;
        int r = fq_parse_size(bad[i], &v);
        TL_CHECK(r < 0, "fq_parse_size(\"%s\") accepted it as %" PRIu64, bad[i], v);
    }
}

static void test_engine_cache_parse(void)
{
    static const struct { const char *s; enum fq_engine_kind k; } eng[] = {
        { "io_uring", FQ_ENGINE_IO_URING }, { "native", FQ_ENGINE_DEFAULT },
        { "threads", FQ_ENGINE_THREADS }, { "sync", FQ_ENGINE_SYNC },
    };
    static const struct { const char *s; enum fq_cache_mode m; } cache[] = {
        { "none", FQ_CACHE_NONE }, { "writeback", FQ_CACHE_WRITEBACK },
        { "writethrough", FQ_CACHE_WRITETHROUGH }, { "directsync", FQ_CACHE_DIRECTSYNC },
        { "unsafe", FQ_CACHE_UNSAFE },
    };
    static const char *const bad[] = { "", "uring", "IO_URING ", "thread", "bogus" };

    for (size_t i = 0; i < sizeof(eng) / sizeof(eng[0]); i++) {
        enum fq_engine_kind k = FQ_ENGINE_DEFAULT;
        int r = fq_engine_parse(eng[i].s, &k);
        TL_CHECK(r == 0 && k == eng[i].k, "fq_engine_parse(\"%s\") = %d, kind %d", eng[i].s, r, k);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        enum fq_engine_kind k;
        TL_CHECK(fq_engine_parse(bad[i], &k) == -EINVAL, "fq_engine_parse(\"%s\") accepted", bad[i]);
    }
    for (size_t i = 0; i < sizeof(cache) / sizeof(cache[0]); i++) {
        enum fq_cache_mode m = FQ_CACHE_UNSAFE;
        if (cache[i].m == FQ_CACHE_UNSAFE)
            m = FQ_CACHE_WRITEBACK;
        int r = fq_cache_parse(cache[i].s, &m);
        TL_CHECK(r == 0 && m == cache[i].m, "fq_cache_parse(\"%s\") = %d, mode %d", cache[i].s, r, m);
    }
    static const char *const badc[] = { "", "write-back", "direct", "bogus", "None " };
    for (size_t i = 0; i < sizeof(badc) / sizeof(badc[0]); i++) {
        enum fq_cache_mode m;
        TL_CHECK(fq_cache_parse(badc[i], &m) == -EINVAL, "fq_cache_parse(\"%s\") accepted", badc[i]);
    }
}

static void test_create_opts_parse(void)
{
    struct fq_create_opts o;
    char err[FQ_ERR_MAX];
    int r;

    fq_create_opts_init(&o);
    TL_CHECK(o.size == 0 && o.cluster_size == 0 && (o.version == 3 || o.version == 0) &&
             o.refcount_bits == 0 && !o.lazy_refcounts && o.prealloc == FQ_PREALLOC_OFF &&
             !o.backing_file && !o.file_format,
             "fq_create_opts_init defaults: version %d", o.version);

    err[0] = '\0';
    r = fq_create_opts_parse(&o, "cluster_size=4k,compat=0.10,refcount_bits=1,"
                             "lazy_refcounts=on,preallocation=metadata,size=1G", err);
    TL_CHECK(r == 0, "parse of a valid list failed: %d %s", r, err);
    TL_CHECK(o.cluster_size == 4096 && o.version == 2 && o.refcount_bits == 1 &&
             o.lazy_refcounts == 1 && o.prealloc == FQ_PREALLOC_METADATA && o.size == (1ull << 30),
             "parsed cluster_size %u version %d refcount_bits %d lazy %d prealloc %d size %" PRIu64,
             o.cluster_size, o.version, o.refcount_bits, o.lazy_refcounts, (int)o.prealloc, o.size);

    /* later lists update, earlier values stay */
    r = fq_create_opts_parse(&o, "compat=1.1,lazy_refcounts=off,preallocation=full", err);
    TL_CHECK(r == 0 && o.version == 3 && o.lazy_refcounts == 0 && o.prealloc == FQ_PREALLOC_FULL &&
             o.cluster_size == 4096 && o.refcount_bits == 1,
             "second list: r %d version %d lazy %d prealloc %d cluster %u", r, o.version,
             o.lazy_refcounts, (int)o.prealloc, o.cluster_size);
    r = fq_create_opts_parse(&o, "cluster_size=2M,refcount_bits=64,preallocation=falloc,"
                             "compat=v2,extended_l2=off,compression_type=zstd", err);
    TL_CHECK(r == 0 && o.cluster_size == 2 * MiB && o.refcount_bits == 64 && o.version == 2 &&
             o.prealloc == FQ_PREALLOC_FALLOC && o.compression_type == 1,
             "third list: r %d (%s)", r, err);
    r = fq_create_opts_parse(&o, "compat=v3,cluster_size=65536,preallocation=off,"
                             "compression_type=zlib,lazy_refcounts=true", err);
    TL_CHECK(r == 0 && o.version == 3 && o.cluster_size == 65536 && o.prealloc == FQ_PREALLOC_OFF &&
             o.compression_type == 0 && o.lazy_refcounts == 1, "fourth list: r %d (%s)", r, err);
    r = fq_create_opts_parse(&o, "backing_file=base.qcow2,backing_fmt=qcow2", err);
    TL_CHECK(r == 0 && o.backing_file && !strcmp(o.backing_file, "base.qcow2") &&
             o.backing_format && !strcmp(o.backing_format, "qcow2"), "backing options: r %d", r);
    r = fq_create_opts_parse(&o, "refcount_bits=16", err);
    TL_CHECK(r == 0 && o.refcount_bits == 16, "refcount_bits=16: r %d", r);
    fq_create_opts_release(&o);
    TL_CHECK(o.owned == NULL, "fq_create_opts_release left strings behind");

    static const char *const bad[] = {
        "bogus_key=1", "cluster_size=4k,frobnicate=yes", "compat=0.9", "compat=2",
        "refcount_bits=3", "refcount_bits=128", "refcount_bits=abc", "cluster_size=abc",
        "preallocation=sometimes", "lazy_refcounts=maybe", "size=12q", "compression_type=lz4",
        "cluster_size",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        fq_create_opts_init(&o);
        memset(err, 0, sizeof(err));
        r = fq_create_opts_parse(&o, bad[i], err);
        TL_CHECK(r == -EINVAL, "fq_create_opts_parse(\"%s\") = %d, want -EINVAL", bad[i], r);
        TL_CHECK(err[0] != '\0', "fq_create_opts_parse(\"%s\") left no message", bad[i]);
        fq_create_opts_release(&o);
    }
    /* the message names the unknown key */
    fq_create_opts_init(&o);
    err[0] = '\0';
    fq_create_opts_parse(&o, "size=1M,frobnicate=yes", err);
    TL_CHECK(strstr(err, "frobnicate") != NULL, "message does not name the key: '%s'", err);
    /* NULL err is allowed */
    TL_CHECK(fq_create_opts_parse(&o, "nope=1", NULL) == -EINVAL, "NULL err: not -EINVAL");
    fq_create_opts_release(&o);
    /* a bad value after a backing name: the name is still released */
    fq_create_opts_init(&o);
    r = fq_create_opts_parse(&o, "backing_file=x.qcow2,backing_fmt=raw,compat=9", err);
    TL_CHECK(r == -EINVAL, "bad compat after backing_file: %d", r);
    fq_create_opts_release(&o);
    fq_create_opts_release(&o);   /* twice is harmless */
}

/* "native" (-n) is the default engine, with its paths per file: on a
 * memory-backed file small operations run inline (the engine note says
 * so); "io_uring" sends every operation to io_uring. */
static void test_native_paths(void)
{
    static const char *const names[] = { "native", "io_uring" };
    char dir[] = "/dev/shm/test-api.XXXXXX", path[64];

    if (!mkdtemp(dir))
        return;     /* no /dev/shm: nothing to tell apart */
    snprintf(path, sizeof(path), "%s/a.raw", dir);
    tl_create_image(path, "raw", 1 << 20, 0, 0);
    for (int i = 0; i < 2; i++) {
        enum fq_engine_kind e;
        char buf[4096];
        TL_CHECK(fq_engine_parse(names[i], &e) == 0, "fq_engine_parse(%s)", names[i]);
        struct fq_image *img = tl_open_image(path, "raw", 1, e, NULL);
        if (!img)
            continue;
        TL_CHECK(fq_pread(img, buf, sizeof(buf), 4096) == 0, "%s: read", names[i]);
        struct fq_ctx *ctx = fq_image_ctx(img);
        const char *n = fq_ctx_engine_name(ctx), *note = fq_ctx_engine_note(ctx);
        if (n && !strcmp(n, "io_uring"))
            TL_CHECK(i == 0 ? strstr(note, "inline") != NULL : note[0] == '\0',
                     "-i %s on tmpfs: engine note '%s'", names[i], note);
        fq_close(img);
    }
    unlink(path);
    rmdir(dir);
}

/* fq_buf_alloc: aligned, usable, at every size class; direct reads into
 * a large one read what the file holds. */
static void test_buf_alloc(void)
{
    static const size_t sizes[] = { 0, 1, 4096, 65536, 256 << 10, 1 << 20, (2 << 20) + 1 };

    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        uint8_t *b = fq_buf_alloc(sizes[i]);
        uintptr_t align = sizes[i] >= (256 << 10) ? (2u << 20) : 4096;
        TL_CHECK(b && (uintptr_t)b % align == 0, "fq_buf_alloc(%zu) = %p", sizes[i], (void *)b);
        if (b && sizes[i]) {
            memset(b, 0x5a, sizes[i]);
            TL_CHECK(b[sizes[i] - 1] == 0x5a, "fq_buf_alloc(%zu): last byte", sizes[i]);
        }
        fq_buf_free(b);
    }
    fq_buf_free(NULL);
    const char *p = tl_path("buf.raw");
    uint8_t *w = malloc(1 << 20), *r = fq_buf_alloc(1 << 20);
    if (w && r && tl_create_image(p, "raw", 1 << 20, 0, 0) == 0) {
        for (size_t k = 0; k < (1 << 20); k++)
            w[k] = (uint8_t)(k * 7 + (k >> 12));
        struct fq_image *img = tl_open_image(p, "raw", 0, FQ_ENGINE_DEFAULT, NULL);
        if (img) {
            TL_CHECK(fq_pwrite(img, w, 1 << 20, 0) == 0 && fq_pread(img, r, 1 << 20, 0) == 0 &&
                     !memcmp(w, r, 1 << 20), "1 MiB through an fq_buf_alloc buffer");
            fq_close(img);
        }
    }
    free(w);
    fq_buf_free(r);
}

static void test_misc(void)
{
    struct fq_ctx *ctx;
    char err[FQ_ERR_MAX] = "";

    TL_CHECK(fq_version() && fq_version()[0], "fq_version is empty");
    static const enum fq_engine_kind kinds[] = {
        FQ_ENGINE_DEFAULT, FQ_ENGINE_THREADS, FQ_ENGINE_SYNC, FQ_ENGINE_IO_URING,
    };
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
        int r = fq_ctx_new(kinds[i], &ctx, err);
        if (kinds[i] == FQ_ENGINE_IO_URING && r < 0)
            continue;   /* io_uring may be unavailable (seccomp, old kernel) */
        TL_CHECK(r == 0, "fq_ctx_new(%s) = %d: %s", tl_engine_name(kinds[i]), r, err);
        if (r < 0)
            continue;
        const char *n = fq_ctx_engine_name(ctx);
        const char *note = fq_ctx_engine_note(ctx);
        TL_CHECK(note != NULL, "fq_ctx_engine_note is NULL");
        if (note && kinds[i] != FQ_ENGINE_DEFAULT)
            TL_CHECK(note[0] == '\0', "explicit engine %s has a fallback note '%s'",
                     tl_engine_name(kinds[i]), note);
        if (note && kinds[i] == FQ_ENGINE_DEFAULT && n && !strcmp(n, "threads"))
            TL_CHECK(note[0] != '\0', "default engine fell back to threads without a note");
        TL_CHECK(n && (!strcmp(n, "io_uring") || !strcmp(n, "threads") || !strcmp(n, "sync")),
                 "engine name '%s'", n ? n : "(null)");
        if (kinds[i] != FQ_ENGINE_DEFAULT)
            TL_CHECK(!strcmp(n, tl_engine_name(kinds[i])), "asked %s, got %s",
                     tl_engine_name(kinds[i]), n);
        TL_CHECK(fq_ctx_inflight(ctx) == 0, "fresh context has requests in flight");
        /* nothing in flight: run returns at once, with no callbacks */
        TL_CHECK(fq_ctx_run(ctx, 0, 0) == 0, "fq_ctx_run(0, 0) on an idle context");
        TL_CHECK(fq_ctx_run(ctx, 0, 10) == 0, "fq_ctx_run(0, 10) on an idle context");
        fq_ctx_free(ctx);
    }
    fq_ctx_free(NULL);
    test_native_paths();
    test_buf_alloc();
    TL_CHECK(fq_close(NULL) == 0, "fq_close(NULL)");
}

/* ---- open and create failures ---- */

static void expect_open_fail(const char *path, const char *fmt, const char *what)
{
    struct fq_open_opts o;
    struct fq_image *img = NULL;
    char err[FQ_ERR_MAX];

    for (int ro = 0; ro <= 1; ro++) {
        fq_open_opts_init(&o);
        o.format = fmt;
        o.readonly = ro;
        memset(err, 0, sizeof(err));
        int r = fq_open(path, &o, &img, err);
        TL_CHECK(r < 0, "%s: fq_open succeeded (ro=%d)", what, ro);
        TL_CHECK(r >= 0 || err[0] != '\0', "%s: fq_open = %d with an empty message", what, r);
        if (getenv("TL_VERBOSE") && r < 0)
            fprintf(stderr, "  %s: %d %s\n", what, r, err);
        if (r == 0)
            fq_close(img);
    }
    /* NULL err must be accepted */
    fq_open_opts_init(&o);
    o.format = fmt;
    o.readonly = 1;
    int r = fq_open(path, &o, &img, NULL);
    TL_CHECK(r < 0, "%s: fq_open with NULL err succeeded", what);
    if (r == 0)
        fq_close(img);
}

static void write_at(const char *path, uint64_t off, const void *p, size_t n)
{
    int fd = open(path, O_WRONLY);
    TL_CHECK(fd >= 0 && pwrite(fd, p, n, (off_t)off) == (ssize_t)n, "patching %s", path);
    if (fd >= 0)
        close(fd);
}

static void put_be32_at(const char *path, uint64_t off, uint32_t v)
{
    uint8_t b[4] = { (uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v };
    write_at(path, off, b, 4);
}

static void put_be64_at(const char *path, uint64_t off, uint64_t v)
{
    put_be32_at(path, off, (uint32_t)(v >> 32));
    put_be32_at(path, off + 4, (uint32_t)v);
}

/* A fresh, valid 64 MiB qcow2 image (v3 unless `v2`), by qemu-img when it
 * is there so that the header does not depend on our own create. */
static int fresh_qcow2(const char *path, int v2)
{
    if (tl_have("qemu-img"))
        return tl_sh("qemu-img create -q -f qcow2 -o compat=%s '%s' 64M", v2 ? "0.10" : "1.1",
                     path) == 0 ? 0 : -1;
    return tl_create_image(path, "qcow2", 64 * MiB, 0, v2 ? 2 : 3);
}

static void test_open_errors(void)
{
    const char *p = tl_path("bad.qcow2"), *good = tl_path("good.qcow2");
    char what[128];
    int fd;

    expect_open_fail(tl_path("does-not-exist.qcow2"), "qcow2", "missing file");
    expect_open_fail(tl_path("does-not-exist.qcow2"), NULL, "missing file, probed");
    expect_open_fail(tl_path("does-not-exist.raw"), "raw", "missing raw file");
    expect_open_fail(tl_dir, "qcow2", "a directory");
    {
        struct fq_open_opts o;
        struct fq_image *img = NULL;
        char err[FQ_ERR_MAX] = "";
        fq_open_opts_init(&o);
        int r = fq_open(tl_path("does-not-exist.qcow2"), &o, &img, err);
        TL_CHECK(r == -ENOENT, "missing file: %d, want -ENOENT", r);
        o.format = "vmdk";
        fresh_qcow2(good, 0);
        r = fq_open(good, &o, &img, err);
        TL_CHECK(r < 0 && err[0], "unknown format name 'vmdk': %d", r);
        if (r == 0)
            fq_close(img);
    }

    /* not qcow2 at all */
    fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    for (int i = 0; i < 4096; i++) {
        char line[64];
        int n = snprintf(line, sizeof(line), "this is not a qcow2 image, line %d\n", i);
        TL_CHECK(write(fd, line, (size_t)n) == n, "write");
    }
    close(fd);
    expect_open_fail(p, "qcow2", "a text file opened as qcow2");
    TL_CHECK(truncate(p, 0) == 0, "truncate");
    expect_open_fail(p, "qcow2", "an empty file opened as qcow2");
    TL_CHECK(truncate(p, 1 * MiB) == 0, "truncate");
    expect_open_fail(p, "qcow2", "a zero-filled file opened as qcow2");

    /* truncated headers */
    static const uint64_t cuts[] = { 3, 4, 20, 48, 71, 72, 100, 103 };
    for (int v2 = 0; v2 <= 1; v2++) {
        for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
            if (v2 && cuts[i] >= 72)
                continue;
            if (fresh_qcow2(p, v2) < 0)
                return;
            TL_CHECK(truncate(p, (off_t)cuts[i]) == 0, "truncate");
            snprintf(what, sizeof(what), "v%d header truncated to %" PRIu64 " bytes", v2 ? 2 : 3, cuts[i]);
            expect_open_fail(p, "qcow2", what);
        }
    }

    /* invalid header fields */
    static const struct {
        const char *what;
        unsigned off, width;
        uint64_t val;
    } bad[] = {
        { "version 1", 4, 4, 1 },
        { "version 4", 4, 4, 4 },
        { "cluster_bits 8", 20, 4, 8 },
        { "cluster_bits 31", 20, 4, 31 },
        { "cluster_bits 63", 20, 4, 63 },
        { "L1 table offset not cluster-aligned", 40, 8, 0x30001 },
        { "refcount table offset not cluster-aligned", 48, 8, 0x10007 },
        { "refcount table clusters 0", 56, 4, 0 },
        { "L1 too small for the disk size", 24, 8, 1ull << 50 },
        { "unknown incompatible feature bit 40", 72, 8, 1ull << 40 },
        { "refcount_order 7", 96, 4, 7 },
        { "header_length 50", 100, 4, 50 },
        { "a backing file name of 2000 bytes", 8, 8, 0x1000 },
        { "L1 size 2^31", 36, 4, 0x80000000u },
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (fresh_qcow2(p, 0) < 0)
            return;
        if (bad[i].width == 4)
            put_be32_at(p, bad[i].off, (uint32_t)bad[i].val);
        else
            put_be64_at(p, bad[i].off, bad[i].val);
        if (bad[i].off == 8)   /* the spec's limit is 1023 bytes */
            put_be32_at(p, 16, 2000);
        snprintf(what, sizeof(what), "header with %s", bad[i].what);
        expect_open_fail(p, "qcow2", what);
    }

    /* the unmodified image opens, so the failures above are the fields' */
    if (fresh_qcow2(p, 0) == 0) {
        struct fq_image *img = tl_open_image(p, "qcow2", 1, FQ_ENGINE_SYNC, NULL);
        if (img)
            fq_close(img);
    }
}

static void test_create_errors(void)
{
    static const struct { const char *what; uint32_t cluster; int rb; int ver; uint64_t size; } bad[] = {
        { "cluster_size 1000", 1000, 0, 3, MiB },
        { "cluster_size 256", 256, 0, 3, MiB },
        { "cluster_size 2G", 1u << 31, 0, 3, MiB },
        { "refcount_bits 3", 0, 3, 3, MiB },
        { "refcount_bits 128", 0, 128, 3, MiB },
        { "refcount_bits 8 with compat 0.10", 0, 8, 2, MiB },
        { "version 4", 0, 0, 4, MiB },
        { "version 1", 0, 0, 1, MiB },
    };
    char err[FQ_ERR_MAX];
    struct fq_create_opts o;
    const char *p = tl_path("create-bad.qcow2");

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        fq_create_opts_init(&o);
        o.size = bad[i].size;
        o.cluster_size = bad[i].cluster;
        o.refcount_bits = bad[i].rb;
        o.version = bad[i].ver;
        memset(err, 0, sizeof(err));
        int r = fq_create(p, &o, err);
        TL_CHECK(r < 0 && err[0], "fq_create with %s = %d, message '%s'", bad[i].what, r, err);
    }
    fq_create_opts_init(&o);
    o.size = MiB;
    memset(err, 0, sizeof(err));
    int r = fq_create(tl_path("no/such/dir/x.qcow2"), &o, err);
    TL_CHECK(r < 0 && err[0], "fq_create in a missing directory = %d, '%s'", r, err);
    o.format = "vmdk";
    memset(err, 0, sizeof(err));
    r = fq_create(p, &o, err);
    TL_CHECK(r < 0 && err[0], "fq_create with format vmdk = %d, '%s'", r, err);
    /* raw: the file has the size */
    o.format = "raw";
    o.size = 3 * MiB + 512;
    r = fq_create(tl_path("created.raw"), &o, err);
    struct stat st;
    TL_CHECK(r == 0 && stat(tl_path("created.raw"), &st) == 0 && (uint64_t)st.st_size == o.size,
             "raw create: %d", r);
}

/* ---- info and map ---- */

static void test_info_map(void)
{
    const char *p = tl_path("map.qcow2");
    struct fq_create_opts o;
    struct fq_info info;
    struct fq_map_entry e;
    char err[FQ_ERR_MAX] = "";
    const uint32_t cs = 65536;
    const uint64_t size = 100 * MiB;
    uint8_t *data = malloc(cs), *host = malloc(cs);
    int r;

    fq_create_opts_init(&o);
    o.size = size;
    o.cluster_size = cs;
    o.refcount_bits = 8;
    o.lazy_refcounts = 1;
    r = fq_create(p, &o, err);
    TL_CHECK(r == 0, "fq_create: %d %s", r, err);
    struct fq_image *img = tl_open_image(p, NULL, 0, FQ_ENGINE_DEFAULT, NULL);
    if (!img)
        goto out;
    r = fq_get_info(img, &info);
    TL_CHECK(r == 0 && !strcmp(info.format, "qcow2") && info.virtual_size == size &&
             info.cluster_size == cs && info.version == 3 && info.refcount_bits == 8 &&
             info.lazy_refcounts == 1 && !info.corrupt && !info.encrypted && !info.nb_snapshots &&
             !info.backing_file[0] && info.file_size > 0,
             "info: r %d format %s size %" PRIu64 " cluster %u version %d rb %d lazy %d", r,
             info.format, info.virtual_size, info.cluster_size, info.version, info.refcount_bits,
             info.lazy_refcounts);

    /* fresh: the whole disk is one unallocated, zero run */
    r = fq_map(img, 0, size, &e);
    TL_CHECK(r == 0 && e.start == 0 && e.length == size && (e.flags & FQ_MAP_ZERO) &&
             !(e.flags & (FQ_MAP_DATA | FQ_MAP_ALLOCATED)) && e.depth == 0,
             "fresh map: r %d start %" PRIu64 " len %" PRIu64 " flags %#x", r, e.start, e.length, e.flags);
    r = fq_map(img, size, 1, &e);
    TL_CHECK(r == -EINVAL, "map at the end = %d", r);

    /* one data cluster at cluster 3 */
    tl_fill_pattern(data, cs, 5, 3 * cs);
    TL_CHECK(fq_pwrite(img, data, cs, 3 * (uint64_t)cs) == 0, "write");
    TL_CHECK(fq_flush(img) == 0, "flush");
    r = fq_map(img, 0, size, &e);
    TL_CHECK(r == 0 && e.start == 0 && e.length == 3 * (uint64_t)cs && !(e.flags & FQ_MAP_DATA),
             "map before the data: len %" PRIu64 " flags %#x", e.length, e.flags);
    r = fq_map(img, 3 * (uint64_t)cs, size, &e);
    TL_CHECK(r == 0 && e.start == 3 * (uint64_t)cs && e.length == cs &&
             (e.flags & (FQ_MAP_DATA | FQ_MAP_ALLOCATED | FQ_MAP_OFFSET)) ==
             (FQ_MAP_DATA | FQ_MAP_ALLOCATED | FQ_MAP_OFFSET) && !(e.flags & FQ_MAP_ZERO) &&
             e.host_offset % cs == 0 && e.host_offset > 0,
             "map of the data: r %d len %" PRIu64 " flags %#x host %" PRIu64, r, e.length, e.flags,
             e.host_offset);
    if (r == 0 && (e.flags & FQ_MAP_OFFSET)) {
        /* host_offset is where the data really is */
        tl_read_file(p, host, cs, e.host_offset);
        TL_CHECK(!memcmp(host, data, cs), "host_offset %" PRIu64 " does not hold the data", e.host_offset);
    }
    /* a map starting inside the cluster is clipped to it */
    r = fq_map(img, 3 * (uint64_t)cs + 100, 50, &e);
    TL_CHECK(r == 0 && e.start == 3 * (uint64_t)cs + 100 && e.length == 50 && (e.flags & FQ_MAP_DATA),
             "map inside the cluster: start %" PRIu64 " len %" PRIu64, e.start, e.length);
    r = fq_map(img, 4 * (uint64_t)cs, size, &e);
    TL_CHECK(r == 0 && e.length == size - 4 * (uint64_t)cs && !(e.flags & FQ_MAP_DATA),
             "map after the data: len %" PRIu64 " flags %#x", e.length, e.flags);

    /* discard of the whole cluster: no longer data */
    TL_CHECK(fq_discard(img, 3 * (uint64_t)cs, cs) == 0, "discard");
    r = fq_map(img, 3 * (uint64_t)cs, cs, &e);
    TL_CHECK(r == 0 && !(e.flags & FQ_MAP_DATA) && (e.flags & FQ_MAP_ZERO),
             "map after discard: flags %#x", e.flags);
    /* write-zeroes on v3: reads as zero, reported as zero */
    TL_CHECK(fq_pwrite(img, data, cs, 7 * (uint64_t)cs) == 0, "write");
    TL_CHECK(fq_write_zeroes(img, 7 * (uint64_t)cs, cs, 0) == 0, "write-zeroes");
    r = fq_map(img, 7 * (uint64_t)cs, cs, &e);
    TL_CHECK(r == 0 && (e.flags & FQ_MAP_ZERO) && !(e.flags & FQ_MAP_DATA),
             "map after write-zeroes: flags %#x", e.flags);
    TL_CHECK(fq_close(img) == 0, "close");

    /* raw: info and map describe the file */
    r = tl_create_image(tl_path("map.raw"), "raw", MiB, 0, 0);
    img = r == 0 ? tl_open_image(tl_path("map.raw"), "raw", 1, FQ_ENGINE_SYNC, NULL) : NULL;
    if (img) {
        r = fq_get_info(img, &info);
        TL_CHECK(r == 0 && !strcmp(info.format, "raw") && info.virtual_size == MiB &&
                 info.cluster_size == 0, "raw info: r %d format %s", r, info.format);
        TL_CHECK(!strcmp(fq_format(img), "raw"), "raw fq_format");
        fq_close(img);
    }
out:
    free(data);
    free(host);
}

/* Pages of `path` in [off, off + len) that are in the page cache; -1 if
 * it cannot be told. */
static long resident_pages(const char *path, uint64_t off, size_t len)
{
    long pg = sysconf(_SC_PAGESIZE), n = 0;
    int fd = open(path, O_RDONLY);
    void *m = fd < 0 ? MAP_FAILED : mmap(NULL, len, PROT_READ, MAP_SHARED, fd, (off_t)off);
    unsigned char *v = calloc(len / (size_t)pg, 1);

    if (m == MAP_FAILED || !v || mincore(m, len, v) < 0)
        n = -1;
    for (size_t i = 0; n >= 0 && i < len / (size_t)pg; i++)
        n += v[i] & 1;
    if (m != MAP_FAILED)
        munmap(m, len);
    if (fd >= 0)
        close(fd);
    free(v);
    return n;
}

/* Drop `path` from the page cache; 0 when none of it is left there. */
static int drop_cached(const char *path, uint64_t size)
{
    int fd = open(path, O_RDONLY);

    if (fd < 0)
        return -1;
    (void)fdatasync(fd);
    (void)posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    close(fd);
    return resident_pages(path, 0, size) == 0 ? 0 : -1;
}

/* Four 4 KiB reads in a row from `off` of the overlay `top` (unallocated
 * there: they come from the backing file; reads in sequence are what the
 * kernel reads ahead for); returns how many pages of the backing file's
 * 1 MiB from `off` are cached after them (-1: cannot be told). */
static long read_in_sequence(const char *top, const char *base, uint64_t size, uint64_t off,
                             int no_readahead)
{
    struct fq_open_opts o;
    struct fq_image *img = NULL;
    char err[FQ_ERR_MAX] = "", buf[4096];

    if (drop_cached(base, size) < 0)
        return -1;
    fq_open_opts_init(&o);
    o.readonly = 1;
    o.no_readahead = no_readahead;
    int r = fq_open(top, &o, &img, err);
    TL_CHECK(r == 0, "fq_open(%s, no_readahead %d) = %d: %s", top, no_readahead, r, err);
    if (r < 0)
        return -1;
    for (uint64_t p = off; p < off + 4 * sizeof(buf); p += sizeof(buf)) {
        r = fq_pread(img, buf, sizeof(buf), p);
        TL_CHECK(r == 0 && buf[0] == (char)0x3c && buf[4095] == (char)0x3c,
                 "read at %" PRIu64 " through the overlay: %d", p, r);
    }
    fq_close(img);
    return resident_pages(base, off, MiB);
}

static void test_no_readahead(void)
{
    const char *base = tl_path("ra-base.raw"), *top = tl_path("ra-top.qcow2");
    const uint64_t size = 8 * MiB, off = 3 * MiB;
    struct fq_create_opts o;
    char err[FQ_ERR_MAX] = "";
    uint8_t *fill = malloc(MiB);
    int fd = open(base, O_WRONLY | O_CREAT | O_TRUNC, 0644);

    TL_CHECK(fd >= 0 && fill, "create %s", base);
    if (fd < 0 || !fill)
        goto out;
    memset(fill, 0x3c, MiB);
    for (uint64_t p = 0; p < size; p += MiB)
        TL_CHECK(pwrite(fd, fill, MiB, (off_t)p) == (ssize_t)MiB, "write %s", base);
    close(fd);
    fq_create_opts_init(&o);
    o.size = size;
    o.backing_file = base;
    o.backing_format = "raw";
    int r = fq_create(top, &o, err);
    TL_CHECK(r == 0, "fq_create(%s) = %d: %s", top, r, err);
    long with = read_in_sequence(top, base, size, off, 0);
    if (with < 0 || with <= 4) {
        /* a file system whose files stay in memory, or a kernel that did
         * not read ahead here: the difference cannot be seen */
        printf("test-api: no_readahead not observable here (%ld pages cached)\n", with);
        goto out;
    }
    long without = read_in_sequence(top, base, size, off, 1);
    TL_CHECK(without >= 4 && without <= 4 + 1,
             "no_readahead: %ld pages of the backing file cached after four 4 KiB reads "
             "(%ld with readahead)", without, with);
out:
    free(fill);
}

int main(void)
{
    tl_name = "test-api";
    setvbuf(stdout, NULL, _IOLBF, 0);
    tl_mkdir();

    test_parse_size();
    test_engine_cache_parse();
    test_create_opts_parse();
    test_misc();
    test_open_errors();
    test_create_errors();
    test_info_map();
    test_no_readahead();

    if (tl_failures) {
        fprintf(stderr, "test-api: %d check(s) failed (scratch dir kept with TL_KEEP=1)\n", tl_failures);
        return 1;
    }
    printf("test-api: all checks passed\n");
    return 0;
}
