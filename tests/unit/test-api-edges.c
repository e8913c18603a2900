/* test-api-edges.c: requests at the edges of the public API, for raw and
 * qcow2: zero-length requests, the very end of the disk, out-of-range and
 * overflowing ranges (-EINVAL), short iovec arrays, more iovec elements
 * than IOV_MAX, writes to a read-only image (-EROFS), callbacks never run
 * inside the submitting call, close with requests in flight, neighbouring
 * O_DIRECT requests, two images sharing one context, one request of ~8000
 * host-discontiguous extents.
 * The parsers and the open, create and info failures are test-api.c.
 * SPDX-License-Identifier: MIT
 */
#include "testlib.h"

#define KiB (1ull << 10)
#define MiB (1ull << 20)

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
    if (tl_create_image(path, fmt, size, cluster, 0) < 0)
        return;
    img = tl_open_image(path, NULL, 0, eng, NULL);
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
    img = tl_open_image(path, fmt, 1, eng, NULL);
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
    img = tl_open_image(path, fmt, 1, eng, NULL);
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

    if (tl_create_image(path, fmt, 8 * MiB, cluster, 0) < 0)
        goto out;
    img = tl_open_image(path, fmt, 0, FQ_ENGINE_THREADS, NULL);
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
    img = tl_open_image(path, fmt, 1, FQ_ENGINE_SYNC, NULL);
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
    if (tl_create_image(path, fmt, MiB, 65536, 0) < 0)
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

    if (tl_create_image(path, "qcow2", size, (uint32_t)cs, 0) < 0)
        goto out;
    /* every cluster written alone, from the last to the first (through
     * the page cache: this is only the setup) */
    img = tl_open_image(path, "qcow2", 0, FQ_ENGINE_SYNC, NULL);
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
    if (tl_create_image(tl_path("share-a.qcow2"), "qcow2", 4 * MiB, 0, 0) < 0 ||
        tl_create_image(tl_path("share-b.raw"), "raw", 4 * MiB, 0, 0) < 0) {
        fq_ctx_free(ctx);
        return;
    }
    a = tl_open_image(tl_path("share-a.qcow2"), "qcow2", 0, FQ_ENGINE_DEFAULT, ctx);
    b = tl_open_image(tl_path("share-b.raw"), "raw", 0, FQ_ENGINE_DEFAULT, ctx);
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

int main(void)
{
    tl_name = "test-api-edges";
    setvbuf(stdout, NULL, _IOLBF, 0);
    tl_mkdir();

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

    if (tl_failures) {
        fprintf(stderr, "test-api-edges: %d check(s) failed (scratch dir kept with TL_KEEP=1)\n",
                tl_failures);
        return 1;
    }
    printf("test-api-edges: all checks passed\n");
    return 0;
}
