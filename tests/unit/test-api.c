/* test-api.c: edge cases of the public API.
 *
 *  - parsers: fq_parse_size, fq_engine_parse, fq_cache_parse,
 *    fq_create_opts_parse (qemu-img's -o spellings, unknown keys rejected
 *    with a message);
 *  - requests at the edges, for raw and qcow2: zero-length requests, the
 *    very end of the disk, out-of-range and overflowing ranges (-EINVAL),
 *    short iovec arrays, more iovec elements than IOV_MAX, writes to a
 *    read-only image (-EROFS), callbacks never run inside the submitting
 *    call, close with requests in flight, two images sharing one context,
 *    one request of ~8000 host-discontiguous extents;
 *  - open and create failures: a missing file, a directory, a non-qcow2
 *    file opened as qcow2, truncated and invalid qcow2 headers, invalid
 *    create options: each a negative errno and a non-empty message;
 *  - fq_get_info and fq_map on a fresh and a written qcow2 image.
 * SPDX-License-Identifier: MIT
 */
#include "testlib.h"

#define KiB (1ull << 10)
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
        { "io_uring", FQ_ENGINE_IO_URING }, { "native", FQ_ENGINE_IO_URING },
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
    TL_CHECK(fq_close(NULL) == 0, "fq_close(NULL)");
}

/* ---- request edge cases ---- */

struct cbstate {
    int in_submit;
    int calls;
    int ret;
    int inline_call;     /* the callback ran inside the submitting call */
};

static void edge_cb(void *opaque, int ret)
{
    struct cbstate *s = opaque;

    s->calls++;
    s->ret = ret;
    if (s->in_submit)
        s->inline_call = 1;
}

static void drain_ctx(struct fq_ctx *ctx)
{
    for (int i = 0; i < 1000 && fq_ctx_inflight(ctx) > 0; i++)
        if (fq_ctx_run(ctx, 1, 1000) < 0)
            break;
}

/* An asynchronous request that must be refused: either at submission with
 * `want` and no callback, or accepted and completed once with `want`. */
#define AIO_REFUSED(img, want, what, CALL)                                     \
    do {                                                                       \
        struct cbstate s_ = { 0 };                                             \
        s_.in_submit = 1;                                                      \
        int r_ = (CALL);                                                       \
        s_.in_submit = 0;                                                      \
        drain_ctx(fq_image_ctx(img));                                          \
        if (r_ == 0)                                                           \
            TL_CHECK(s_.calls == 1 && s_.ret == (want),                        \
                     "%s: accepted, %d callbacks, ret %d; want %d", what,      \
                     s_.calls, s_.ret, want);                                  \
        else                                                                   \
            TL_CHECK(r_ == (want) && s_.calls == 0,                            \
                     "%s: returned %d with %d callbacks; want %d", what, r_,   \
                     s_.calls, want);                                          \
        TL_CHECK(!s_.inline_call, "%s: callback ran inside the call", what);   \
    } while (0)

static int make_image(const char *path, const char *fmt, uint64_t size, uint32_t cluster,
                      int version)
{
    struct fq_create_opts o;
    char err[FQ_ERR_MAX] = "";

    fq_create_opts_init(&o);
    o.format = fmt;
    o.size = size;
    o.cluster_size = cluster;
    if (version)
        o.version = version;
    int r = fq_create(path, &o, err);
    TL_CHECK(r == 0, "fq_create(%s, %s, size %" PRIu64 ", cluster %u) = %d: %s", path, fmt, size,
             cluster, r, err);
    return r;
}

static struct fq_image *open_img(const char *path, const char *fmt, int ro, enum fq_engine_kind e,
                                 struct fq_ctx *ctx)
{
    struct fq_open_opts o;
    struct fq_image *img = NULL;
    char err[FQ_ERR_MAX] = "";

    fq_open_opts_init(&o);
    o.format = fmt;
    o.readonly = ro;
    o.engine = e;
    o.ctx = ctx;
    int r = fq_open(path, &o, &img, err);
    TL_CHECK(r == 0, "fq_open(%s, %s, ro=%d) = %d: %s", path, fmt ? fmt : "probe", ro, r, err);
    return r == 0 ? img : NULL;
}

static void test_edges(const char *fmt, uint32_t cluster, enum fq_engine_kind eng)
{
    /* a size that is not a multiple of the cluster size */
    const uint64_t size = 3 * MiB + 1536;
    char name[64];
    uint8_t buf[8192], rd[8192];
    struct iovec iov[2];
    struct fq_image *img;
    int r;

    snprintf(name, sizeof(name), "edge-%s-%u.img", fmt, cluster);
    const char *path = tl_path(name);
    if (make_image(path, fmt, size, cluster, 0) < 0)
        return;
    img = open_img(path, NULL, 0, eng, NULL);
    if (!img)
        return;
    TL_CHECK(!strcmp(fq_format(img), fmt), "probed format '%s', want '%s'", fq_format(img), fmt);
    TL_CHECK(fq_size(img) == size, "fq_size %" PRIu64 ", want %" PRIu64, fq_size(img), size);

    /* zero-length requests, anywhere up to and including the end */
    const uint64_t zoffs[] = { 0, 1, 4095, size / 2, size - 1, size };
    for (size_t i = 0; i < sizeof(zoffs) / sizeof(zoffs[0]); i++) {
        uint64_t o = zoffs[i];
        struct cbstate s0 = { 0 };
        TL_CHECK(fq_pread(img, buf, 0, o) == 0, "%s: zero-length read at %" PRIu64, fmt, o);
        TL_CHECK(fq_pwrite(img, buf, 0, o) == 0, "%s: zero-length write at %" PRIu64, fmt, o);
        TL_CHECK(fq_preadv(img, NULL, 0, 0, 0, o) == 0, "%s: zero-length readv (no iov) at %" PRIu64, fmt, o);
        r = fq_discard(img, o, 0);
        TL_CHECK(r == 0, "%s: zero-length discard at %" PRIu64 " = %d", fmt, o, r);
        r = fq_write_zeroes(img, o, 0, 0);
        TL_CHECK(r == 0, "%s: zero-length write-zeroes at %" PRIu64 " = %d", fmt, o, r);
        r = fq_write_zeroes(img, o, 0, FQ_ZERO_MAY_UNMAP);
        TL_CHECK(r == 0, "%s: zero-length write-zeroes unmap at %" PRIu64 " = %d", fmt, o, r);
        r = fq_aio_discard(img, o, 0, edge_cb, &s0);
        drain_ctx(fq_image_ctx(img));
        TL_CHECK(r == 0 && s0.calls == 1 && s0.ret == 0,
                 "%s: zero-length aio discard at %" PRIu64 " = %d, %d callbacks, ret %d", fmt, o, r,
                 s0.calls, s0.ret);
        s0.calls = 0;
        struct cbstate s = { 0 };
        s.in_submit = 1;
        iov[0].iov_base = buf;
        iov[0].iov_len = 0;
        r = fq_aio_pwritev(img, iov, 1, 0, 0, o, edge_cb, &s);
        s.in_submit = 0;
        TL_CHECK(r == 0, "%s: zero-length aio write at %" PRIu64 " = %d", fmt, o, r);
        drain_ctx(fq_image_ctx(img));
        TL_CHECK(s.calls == (r == 0) && s.ret == 0 && !s.inline_call,
                 "%s: zero-length aio write: %d callbacks, ret %d, inline %d", fmt, s.calls, s.ret,
                 s.inline_call);
    }
    /* nothing was written by any of that */
    memset(rd, 0xaa, sizeof(rd));
    TL_CHECK(fq_pread(img, rd, 4096, 0) == 0 && rd[0] == 0 && !memcmp(rd, rd + 1, 4095),
             "%s: zero-length requests changed data", fmt);

    /* the very end of the disk: last byte, last 4 KiB, last partial cluster */
    for (size_t i = 0; i < sizeof(buf); i++)
        buf[i] = (uint8_t)(i * 7 + 3);
    r = fq_pwrite(img, buf, 1, size - 1);
    TL_CHECK(r == 0, "%s: write of the last byte = %d", fmt, r);
    r = fq_pread(img, rd, 1, size - 1);
    TL_CHECK(r == 0 && rd[0] == buf[0], "%s: read of the last byte = %d", fmt, r);
    r = fq_pwrite(img, buf, 4096, size - 4096);
    TL_CHECK(r == 0, "%s: write of the last 4 KiB = %d", fmt, r);
    memset(rd, 0, sizeof(rd));
    r = fq_pread(img, rd, 4096, size - 4096);
    TL_CHECK(r == 0 && !memcmp(rd, buf, 4096), "%s: read of the last 4 KiB = %d", fmt, r);
    r = fq_pwrite(img, buf, 1537, size - 1537);
    TL_CHECK(r == 0, "%s: unaligned write at the end = %d", fmt, r);
    memset(rd, 0, sizeof(rd));
    r = fq_pread(img, rd, 4096, size - 4096);
    TL_CHECK(r == 0 && !memcmp(rd, buf, 4096 - 1537) && !memcmp(rd + 4096 - 1537, buf, 1537),
             "%s: read back the tail = %d", fmt, r);
    r = fq_write_zeroes(img, size - 100, 100, 0);
    TL_CHECK(r == 0, "%s: write-zeroes at the end = %d", fmt, r);
    r = fq_pread(img, rd, 100, size - 100);
    TL_CHECK(r == 0 && rd[0] == 0 && !memcmp(rd, rd + 1, 99),
             "%s: zeroed tail does not read as zeros (%d)", fmt, r);
    r = fq_discard(img, size - 3000, 3000);
    TL_CHECK(r == 0, "%s: discard at the end = %d", fmt, r);

    /* out of range: past the end, crossing the end, overflowing */
    static const struct { uint64_t off, len; } oor[] = {
        { 0, 0 }, { 0, 1 }, { 1, 1 }, { 0, 4096 }, { 0, (uint64_t)1 << 40 },
    };
    for (size_t i = 0; i < sizeof(oor) / sizeof(oor[0]); i++) {
        /* offsets relative to the end unless they overflow on their own */
        uint64_t off = size + oor[i].off, len = oor[i].len;
        if (i == 0)
            off = size + 1;            /* zero-length, beyond the end */
        if (i == 3)
            off = size - 1;            /* crosses the end */
        if (len > sizeof(buf) && i != 4)
            len = sizeof(buf);
        size_t blen = len > sizeof(buf) ? sizeof(buf) : (size_t)len;
        if (i == 4) {
            r = fq_discard(img, 4096, len);
            TL_CHECK(r == -EINVAL, "%s: huge discard = %d", fmt, r);
            r = fq_write_zeroes(img, 4096, len, 0);
            TL_CHECK(r == -EINVAL, "%s: huge write-zeroes = %d", fmt, r);
            continue;
        }
        r = fq_pread(img, rd, blen, off);
        TL_CHECK(r == -EINVAL, "%s: read at %" PRIu64 "+%zu = %d", fmt, off, blen, r);
        r = fq_pwrite(img, buf, blen, off);
        TL_CHECK(r == -EINVAL, "%s: write at %" PRIu64 "+%zu = %d", fmt, off, blen, r);
        r = fq_discard(img, off, len);
        TL_CHECK(r == -EINVAL, "%s: discard at %" PRIu64 "+%" PRIu64 " = %d", fmt, off, len, r);
        r = fq_write_zeroes(img, off, len, 0);
        TL_CHECK(r == -EINVAL, "%s: write-zeroes at %" PRIu64 "+%" PRIu64 " = %d", fmt, off, len, r);
        iov[0].iov_base = rd;
        iov[0].iov_len = blen;
        AIO_REFUSED(img, -EINVAL, "aio read out of range",
                    fq_aio_preadv(img, iov, 1, 0, blen, off, edge_cb, &s_));
        AIO_REFUSED(img, -EINVAL, "aio write out of range",
                    fq_aio_pwritev(img, iov, 1, 0, blen, off, edge_cb, &s_));
        AIO_REFUSED(img, -EINVAL, "aio discard out of range",
                    fq_aio_discard(img, off, len, edge_cb, &s_));
        AIO_REFUSED(img, -EINVAL, "aio write-zeroes out of range",
                    fq_aio_write_zeroes(img, off, len, 0, edge_cb, &s_));
    }
    /* offset + length wraps around 2^64 */
    r = fq_pread(img, rd, 4096, UINT64_MAX - 100);
    TL_CHECK(r == -EINVAL, "%s: read at 2^64-101 = %d", fmt, r);
    r = fq_discard(img, 4096, UINT64_MAX - 100);
    TL_CHECK(r == -EINVAL, "%s: discard wrapping 2^64 = %d", fmt, r);
    r = fq_write_zeroes(img, UINT64_MAX - 4095, 8192, 0);
    TL_CHECK(r == -EINVAL, "%s: write-zeroes wrapping 2^64 = %d", fmt, r);

    /* the iovec array must hold iov_off + len bytes */
    iov[0].iov_base = rd;
    iov[0].iov_len = 100;
    iov[1].iov_base = rd + 200;
    iov[1].iov_len = 100;
    r = fq_preadv(img, iov, 2, 10, 191, 0);
    TL_CHECK(r == -EINVAL, "%s: readv past the end of the iovec = %d", fmt, r);
    r = fq_pwritev(img, iov, 2, 0, 201, 0);
    TL_CHECK(r == -EINVAL, "%s: writev past the end of the iovec = %d", fmt, r);
    r = fq_preadv(img, iov, 2, 10, 190, 0);
    TL_CHECK(r == 0, "%s: readv filling the iovec exactly = %d", fmt, r);

    /* an asynchronous read's callback never runs inside the call */
    {
        struct cbstate s = { 0 };
        iov[0].iov_base = rd;
        iov[0].iov_len = 4096;
        s.in_submit = 1;
        r = fq_aio_preadv(img, iov, 1, 0, 4096, 0, edge_cb, &s);
        s.in_submit = 0;
        TL_CHECK(r == 0 && fq_ctx_inflight(fq_image_ctx(img)) == 1,
                 "%s: aio read = %d, inflight %u", fmt, r, fq_ctx_inflight(fq_image_ctx(img)));
        drain_ctx(fq_image_ctx(img));
        TL_CHECK(s.calls == 1 && s.ret == 0 && !s.inline_call && fq_ctx_inflight(fq_image_ctx(img)) == 0,
                 "%s: aio read: %d callbacks, ret %d, inline %d", fmt, s.calls, s.ret, s.inline_call);
        s = (struct cbstate){ .in_submit = 1 };
        r = fq_aio_flush(img, edge_cb, &s);
        s.in_submit = 0;
        drain_ctx(fq_image_ctx(img));
        TL_CHECK(r == 0 && s.calls == 1 && s.ret == 0 && !s.inline_call, "%s: aio flush", fmt);
    }

    /* more iovec elements than IOV_MAX (1024), each of an odd size */
    {
        enum { N = 2500 };
        struct iovec *big = calloc(N, sizeof(*big));
        uint8_t *mem = malloc(N * 7), *back = malloc(N * 7);
        for (int i = 0; i < N; i++) {
            big[i].iov_base = mem + i * 7;
            big[i].iov_len = 7;
        }
        tl_fill_pattern(mem, N * 7, 99, 12345);
        r = fq_pwritev(img, big, N, 3, N * 7 - 3, 12345);
        TL_CHECK(r == 0, "%s: writev of %d elements = %d", fmt, N, r);
        memset(back, 0, N * 7);
        r = fq_pread(img, back, N * 7 - 3, 12345);
        TL_CHECK(r == 0 && !memcmp(back, mem + 3, N * 7 - 3), "%s: data of a %d-element writev", fmt, N);
        memset(mem, 0, N * 7);
        r = fq_preadv(img, big, N, 0, N * 7 - 3, 12345);
        TL_CHECK(r == 0 && !memcmp(back, mem, N * 7 - 3), "%s: readv of %d elements", fmt, N);
        free(big);
        free(mem);
        free(back);
    }
    TL_CHECK(fq_close(img) == 0, "%s: fq_close", fmt);

    /* read-only: reads work, every modification is -EROFS */
    img = open_img(path, fmt, 1, eng, NULL);
    if (!img)
        return;
    TL_CHECK(fq_pread(img, rd, 4096, size - 4096) == 0, "%s: read-only read", fmt);
    r = fq_pwrite(img, buf, 512, 0);
    TL_CHECK(r == -EROFS, "%s: write to read-only = %d", fmt, r);
    iov[0].iov_base = buf;
    iov[0].iov_len = 512;
    r = fq_pwritev(img, iov, 1, 0, 512, 4096);
    TL_CHECK(r == -EROFS, "%s: writev to read-only = %d", fmt, r);
    r = fq_discard(img, 0, 65536);
    TL_CHECK(r == -EROFS, "%s: discard on read-only = %d", fmt, r);
    r = fq_write_zeroes(img, 0, 65536, 0);
    TL_CHECK(r == -EROFS, "%s: write-zeroes on read-only = %d", fmt, r);
    r = fq_write_zeroes(img, 0, 65536, FQ_ZERO_MAY_UNMAP);
    TL_CHECK(r == -EROFS, "%s: write-zeroes unmap on read-only = %d", fmt, r);
    AIO_REFUSED(img, -EROFS, "aio write to read-only",
                fq_aio_pwritev(img, iov, 1, 0, 512, 0, edge_cb, &s_));
    AIO_REFUSED(img, -EROFS, "aio discard on read-only",
                fq_aio_discard(img, 0, 512, edge_cb, &s_));
    AIO_REFUSED(img, -EROFS, "aio write-zeroes on read-only",
                fq_aio_write_zeroes(img, 0, 512, 0, edge_cb, &s_));
    TL_CHECK(fq_flush(img) == 0, "%s: flush of a read-only image", fmt);
    TL_CHECK(fq_close(img) == 0, "%s: close of a read-only image", fmt);

    /* the data is intact after the refused writes */
    img = open_img(path, fmt, 1, eng, NULL);
    if (img) {
        memset(rd, 0xee, sizeof(rd));
        TL_CHECK(fq_pread(img, rd, 512, 0) == 0 && rd[0] == 0 && !memcmp(rd, rd + 1, 511),
                 "%s: refused writes changed the image", fmt);
        fq_close(img);
    }
}

/* fq_close with asynchronous writes still in flight completes them. */
static void test_close_inflight(const char *fmt, uint32_t cluster)
{
    enum { N = 16, LEN = 40000 };
    const char *path = tl_path(!strcmp(fmt, "raw") ? "inflight.raw" : "inflight.qcow2");
    struct cbstate s[N];
    struct iovec iov[N];
    uint8_t *mem = malloc((size_t)N * LEN), *rd = malloc(LEN);
    struct fq_image *img;

    if (make_image(path, fmt, 8 * MiB, cluster, 0) < 0)
        goto out;
    img = open_img(path, fmt, 0, FQ_ENGINE_THREADS, NULL);
    if (!img)
        goto out;
    memset(s, 0, sizeof(s));
    for (int i = 0; i < N; i++) {
        tl_fill_pattern(mem + (size_t)i * LEN, LEN, 7, (uint64_t)i * 70001);
        iov[i].iov_base = mem + (size_t)i * LEN;
        iov[i].iov_len = LEN;
        int r = fq_aio_pwritev(img, &iov[i], 1, 0, LEN, (uint64_t)i * 70001, edge_cb, &s[i]);
        TL_CHECK(r == 0, "%s: aio write %d = %d", fmt, i, r);
    }
    TL_CHECK(fq_close(img) == 0, "%s: fq_close with writes in flight", fmt);
    for (int i = 0; i < N; i++)
        TL_CHECK(s[i].calls == 1 && s[i].ret == 0, "%s: in-flight write %d: %d callbacks, ret %d",
                 fmt, i, s[i].calls, s[i].ret);
    img = open_img(path, fmt, 1, FQ_ENGINE_SYNC, NULL);
    if (!img)
        goto out;
    for (int i = 0; i < N; i++) {
        int r = fq_pread(img, rd, LEN, (uint64_t)i * 70001);
        TL_CHECK(r == 0 && !memcmp(rd, mem + (size_t)i * LEN, LEN),
                 "%s: write %d in flight at close is not on disk", fmt, i);
    }
    fq_close(img);
out:
    free(mem);
    free(rd);
}

/* cache=none: concurrent unaligned writes (and write-zeroes) to
 * neighbouring bytes of one O_DIRECT block, each needing a read-modify-write
 * of that block, must all land; none may write back a stale copy of the
 * other's bytes. */
static void test_direct_neighbours(const char *fmt, enum fq_engine_kind eng)
{
    enum { N = 8, LEN = 500 };
    const char *path = tl_path(!strcmp(fmt, "raw") ? "neigh.raw" : "neigh.qcow2");
    struct fq_open_opts o;
    struct fq_image *img;
    struct cbstate s[N];
    struct iovec iov[N];
    uint8_t mem[N * LEN], rd[N * LEN];
    char err[FQ_ERR_MAX] = "";

    if (!tl_direct_ok() || (eng == FQ_ENGINE_IO_URING && !tl_uring_ok()))
        return;
    if (make_image(path, fmt, MiB, 65536, 0) < 0)
        return;
    fq_open_opts_init(&o);
    o.format = fmt;
    o.cache = FQ_CACHE_NONE;
    o.engine = eng;
    int r = fq_open(path, &o, &img, err);
    TL_CHECK(r == 0, "%s cache=none: fq_open = %d: %s", fmt, r, err);
    if (r < 0)
        return;
    /* make the block allocated first, so qcow2 writes in place as well */
    uint8_t init[8192];
    memset(init, 0x11, sizeof(init));
    TL_CHECK(fq_pwrite(img, init, sizeof(init), 0) == 0, "%s: initial write", fmt);
    memset(s, 0, sizeof(s));
    tl_fill_pattern(mem, sizeof(mem), 3, 7);
    for (int i = 0; i < N; i++) {
        iov[i].iov_base = mem + i * LEN;
        iov[i].iov_len = LEN;
        r = fq_aio_pwritev(img, &iov[i], 1, 0, LEN, 7 + (uint64_t)i * LEN, edge_cb, &s[i]);
        TL_CHECK(r == 0, "%s: aio write %d = %d", fmt, i, r);
    }
    drain_ctx(fq_image_ctx(img));
    for (int i = 0; i < N; i++)
        TL_CHECK(s[i].calls == 1 && s[i].ret == 0, "%s: write %d: %d callbacks, ret %d", fmt, i,
                 s[i].calls, s[i].ret);
    memset(rd, 0, sizeof(rd));
    r = fq_pread(img, rd, sizeof(rd), 7);
    TL_CHECK(r == 0 && !memcmp(rd, mem, sizeof(mem)),
             "%s cache=none engine %s: %d concurrent %d-byte writes into one 4 KiB block: "
             "some were lost", fmt, tl_engine_name(eng), N, LEN);
    if (r == 0 && memcmp(rd, mem, sizeof(mem)))
        tl_dump_diff(mem, rd, sizeof(mem), 7);

    /* write-zeroes of the head of a block next to a write of its middle,
     * both in flight; repeated because the loss depends on timing */
    for (int it = 0; it < 64; it++) {
        uint64_t base = 65536 + (uint64_t)it * 4096;
        struct cbstate z = { 0 }, w = { 0 };
        uint8_t want[4096], got[4096];
        memset(want, 0x77, sizeof(want));
        if (fq_pwrite(img, want, sizeof(want), base) != 0) {
            TL_CHECK(0, "%s: pwrite", fmt);
            break;
        }
        tl_fill_pattern(mem, 300, (uint64_t)it, base + 300);
        iov[0].iov_base = mem;
        iov[0].iov_len = 300;
        r = fq_aio_write_zeroes(img, base, 300, 0, edge_cb, &z);
        TL_CHECK(r == 0, "%s: aio write-zeroes = %d", fmt, r);
        r = fq_aio_pwritev(img, iov, 1, 0, 300, base + 300, edge_cb, &w);
        TL_CHECK(r == 0, "%s: aio write = %d", fmt, r);
        drain_ctx(fq_image_ctx(img));
        memset(want, 0, 300);
        memcpy(want + 300, mem, 300);
        r = fq_pread(img, got, sizeof(got), base);
        if (z.ret || w.ret || r || memcmp(got, want, sizeof(want))) {
            TL_CHECK(0, "%s cache=none engine %s: write-zeroes %" PRIu64 "+300 and write %" PRIu64
                     "+300 in flight together (iteration %d): ret %d/%d, result differs",
                     fmt, tl_engine_name(eng), base, base + 300, it, z.ret, w.ret);
            if (r == 0)
                tl_dump_diff(want, got, sizeof(want), base);
            break;
        }
    }
    fq_close(img);
}

/* One large request over a badly fragmented image: 512-byte clusters
 * allocated in reverse order, so a 4 MiB request is ~8000 extents, each
 * host-discontiguous from the next. */
static void test_big_fragmented(enum fq_engine_kind eng, enum fq_cache_mode cache)
{
    const uint64_t size = 4 * MiB, cs = 512;
    const char *path = tl_path("frag.qcow2");
    uint8_t *w = malloc(size), *rd = malloc(size + 1);
    struct fq_open_opts o;
    struct fq_image *img;
    char err[FQ_ERR_MAX] = "";
    int r;

    if (make_image(path, "qcow2", size, (uint32_t)cs, 0) < 0)
        goto out;
    /* every cluster written alone, from the last to the first (through
     * the page cache: this is only the setup) */
    img = open_img(path, "qcow2", 0, FQ_ENGINE_SYNC, NULL);
    if (!img)
        goto out;
    tl_fill_pattern(w, size, 1, 0);
    for (uint64_t c = size / cs; c-- > 0;) {
        r = fq_pwrite(img, w + c * cs, cs, c * cs);
        if (r != 0) {
            TL_CHECK(0, "frag: write of cluster %" PRIu64 " = %d", c, r);
            break;
        }
    }
    fq_close(img);
    fq_open_opts_init(&o);
    o.format = "qcow2";
    o.engine = eng == FQ_ENGINE_IO_URING && !tl_uring_ok() ? FQ_ENGINE_THREADS : eng;
    o.cache = cache == FQ_CACHE_NONE && !tl_direct_ok() ? FQ_CACHE_WRITEBACK : cache;
    r = fq_open(path, &o, &img, err);
    TL_CHECK(r == 0, "frag: fq_open = %d: %s", r, err);
    if (r < 0)
        goto out;
    /* one read of nearly everything, unaligned at both ends */
    rd[size] = 0xa5;
    r = fq_pread(img, rd, size - 1000, 333);
    TL_CHECK(r == 0 && !memcmp(rd, w + 333, size - 1000) && rd[size] == 0xa5,
             "frag: a %" PRIu64 "-byte read over reverse-allocated clusters (%s, %s) = %d, differs",
             size - 1000, tl_engine_name(eng), tl_cache_name(cache), r);
    /* one write over everything, then read back in pieces */
    tl_fill_pattern(w, size, 2, 0);
    r = fq_pwrite(img, w + 77, size - 154, 77);
    TL_CHECK(r == 0, "frag: big write = %d", r);
    for (uint64_t off = 0; off < size && r == 0; off += MiB) {
        r = fq_pread(img, rd, MiB, off);
        if (r != 0 || memcmp(rd + (off ? 0 : 77), w + off + (off ? 0 : 77),
                             MiB - (off ? 0 : 77) - (off + MiB == size ? 77 : 0))) {
            TL_CHECK(0, "frag: read back at %" PRIu64 " after the big write (%d)", off, r);
            break;
        }
    }
    TL_CHECK(fq_close(img) == 0, "frag: close");
    if (tl_have("qemu-img"))
        TL_CHECK(tl_sh("qemu-img check -q -f qcow2 '%s'", path) == 0, "frag: qemu-img check");
out:
    free(w);
    free(rd);
}

/* Two images share one context; requests on both complete in one loop. */
static void test_shared_ctx(void)
{
    struct fq_ctx *ctx;
    struct fq_image *a, *b;
    struct cbstate sa = { 0 }, sb = { 0 };
    uint8_t wa[5000], wb[5000], ra[5000], rb[5000];
    struct iovec va = { wa, sizeof(wa) }, vb = { wb, sizeof(wb) };

    if (fq_ctx_new(FQ_ENGINE_DEFAULT, &ctx, NULL) < 0) {
        TL_CHECK(0, "fq_ctx_new(DEFAULT) failed");
        return;
    }
    if (make_image(tl_path("share-a.qcow2"), "qcow2", 4 * MiB, 0, 0) < 0 ||
        make_image(tl_path("share-b.raw"), "raw", 4 * MiB, 0, 0) < 0) {
        fq_ctx_free(ctx);
        return;
    }
    a = open_img(tl_path("share-a.qcow2"), "qcow2", 0, FQ_ENGINE_DEFAULT, ctx);
    b = open_img(tl_path("share-b.raw"), "raw", 0, FQ_ENGINE_DEFAULT, ctx);
    if (a && b) {
        TL_CHECK(fq_image_ctx(a) == ctx && fq_image_ctx(b) == ctx, "fq_image_ctx is not the shared one");
        tl_fill_pattern(wa, sizeof(wa), 1, 777);
        tl_fill_pattern(wb, sizeof(wb), 2, 777);
        TL_CHECK(fq_aio_pwritev(a, &va, 1, 0, sizeof(wa), 777, edge_cb, &sa) == 0, "aio write a");
        TL_CHECK(fq_aio_pwritev(b, &vb, 1, 0, sizeof(wb), 777, edge_cb, &sb) == 0, "aio write b");
        TL_CHECK(fq_ctx_inflight(ctx) == 2, "shared ctx inflight %u, want 2", fq_ctx_inflight(ctx));
        int got = 0;
        for (int i = 0; i < 100 && got < 2; i++) {
            int r = fq_ctx_run(ctx, 2 - (unsigned)got, 1000);
            TL_CHECK(r >= 0, "fq_ctx_run = %d", r);
            if (r < 0)
                break;
            got += r;
        }
        TL_CHECK(got == 2 && sa.calls == 1 && sb.calls == 1 && sa.ret == 0 && sb.ret == 0,
                 "shared ctx: %d callbacks counted, a %d/%d, b %d/%d", got, sa.calls, sa.ret,
                 sb.calls, sb.ret);
        TL_CHECK(fq_pread(a, ra, sizeof(ra), 777) == 0 && !memcmp(ra, wa, sizeof(wa)), "read back a");
        TL_CHECK(fq_pread(b, rb, sizeof(rb), 777) == 0 && !memcmp(rb, wb, sizeof(wb)), "read back b");
    }
    if (a)
        fq_close(a);
    /* b still works after a closed: the context is not the image's to free */
    if (b) {
        TL_CHECK(fq_pread(b, rb, sizeof(rb), 777) == 0 && !memcmp(rb, wb, sizeof(wb)),
                 "read b after closing a");
        fq_close(b);
    }
    fq_ctx_free(ctx);
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
    return make_image(path, "qcow2", 64 * MiB, 0, v2 ? 2 : 3);
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
        struct fq_image *img = open_img(p, "qcow2", 1, FQ_ENGINE_SYNC, NULL);
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
    struct fq_image *img = open_img(p, NULL, 0, FQ_ENGINE_DEFAULT, NULL);
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
    r = make_image(tl_path("map.raw"), "raw", MiB, 0, 0);
    img = r == 0 ? open_img(tl_path("map.raw"), "raw", 1, FQ_ENGINE_SYNC, NULL) : NULL;
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

int main(void)
{
    tl_name = "test-api";
    setvbuf(stdout, NULL, _IOLBF, 0);
    tl_mkdir();

    test_parse_size();
    test_engine_cache_parse();
    test_create_opts_parse();
    test_misc();
    test_edges("raw", 0, FQ_ENGINE_SYNC);
    test_edges("qcow2", 65536, FQ_ENGINE_DEFAULT);
    test_edges("qcow2", 512, FQ_ENGINE_THREADS);
    test_close_inflight("raw", 0);
    test_close_inflight("qcow2", 4096);
    test_direct_neighbours("raw", FQ_ENGINE_THREADS);
    test_direct_neighbours("raw", FQ_ENGINE_IO_URING);
    test_direct_neighbours("qcow2", FQ_ENGINE_THREADS);
    test_direct_neighbours("qcow2", FQ_ENGINE_IO_URING);
    test_big_fragmented(FQ_ENGINE_IO_URING, FQ_CACHE_WRITEBACK);
    test_big_fragmented(FQ_ENGINE_THREADS, FQ_CACHE_NONE);
    test_shared_ctx();
    test_open_errors();
    test_create_errors();
    test_info_map();

    if (tl_failures) {
        fprintf(stderr, "test-api: %d check(s) failed (scratch dir kept with TL_KEEP=1)\n", tl_failures);
        return 1;
    }
    printf("test-api: all checks passed\n");
    return 0;
}
