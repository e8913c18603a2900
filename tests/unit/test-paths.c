/* test-paths.c: the loop's paths on a memory-backed file (white-box: the
 * context's count of operations its own thread ran).
 *
 * With the default engine, on tmpfs: an operation of up to 32 KiB runs
 * inline; a larger one alone (one request in flight, nothing submitted
 * after it before the loop waits) runs inline too, up to 2 MiB; two
 * requests in flight, or one over 2 MiB, go to the engine. A lone
 * operation submitted outside fq_ctx_run completes in fq_ctx_run(ctx, 0,
 * 0), as the API promises. Every read returns what was written. With
 * engine io_uring nothing runs inline. Skipped without /dev/shm.
 * SPDX-License-Identifier: MIT
 */
#include "core/ctx.h"
#include "testlib.h"

static int pending;

static void done_cb(void *opaque, int ret)
{
    int *res = opaque;

    *res = ret;
    pending--;
}

/* Read `len` bytes at `off` through the loop, `n` requests of `len / n`
 * submitted together; returns how many ran in the loop's thread. */
static uint64_t read_n(struct fq_image *img, uint8_t *buf, size_t len, int n, int *res)
{
    struct fq_ctx *ctx = fq_image_ctx(img);
    uint64_t before = ctx->ran_inline;
    struct iovec v[4];

    for (int i = 0; i < n; i++) {
        v[i] = (struct iovec){ buf + i * (len / n), len / n };
        res[i] = 1;
        pending++;
        int r = fq_aio_preadv(img, &v[i], 1, 0, len / n, (uint64_t)i * (len / n), done_cb, &res[i]);
        if (r < 0) {
            pending--;
            res[i] = r;
        }
    }
    /* the API's promise: work submitted outside the loop starts there */
    fq_ctx_run(ctx, 0, 0);
    while (pending > 0 && fq_ctx_run(ctx, 1, 5000) > 0)
        ;
    TL_CHECK(pending == 0, "%d reads never completed", pending);
    pending = 0;
    return ctx->ran_inline - before;
}

static void check_paths(const char *path, const uint8_t *want, enum fq_engine_kind e,
                        const char *name)
{
    static const struct {
        size_t len;
        int n;
        bool inl;       /* with the default engine */
    } cases[] = {
        { 4096, 1, true }, { 32 << 10, 1, true }, { 64 << 10, 1, true }, { 1 << 20, 1, true },
        { 2 << 20, 1, true }, { 4 << 20, 1, false }, { 128 << 10, 2, false },
        { 256 << 10, 4, false },
    };
    struct fq_image *img = tl_open_image(path, "raw", 1, e, NULL);
    uint8_t *buf = fq_buf_alloc(4 << 20);

    if (!img || !buf)
        goto out;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int res[4];
        memset(buf, 0, cases[i].len);
        uint64_t inl = read_n(img, buf, cases[i].len, cases[i].n, res);
        for (int k = 0; k < cases[i].n; k++)
            TL_CHECK(res[k] == 0, "%s: %zu bytes in %d: read %d = %d", name, cases[i].len,
                     cases[i].n, k, res[k]);
        TL_CHECK(!memcmp(buf, want, cases[i].len), "%s: %zu bytes in %d: data differs", name,
                 cases[i].len, cases[i].n);
        bool expect = e == FQ_ENGINE_DEFAULT && cases[i].inl;
        if (strcmp(fq_ctx_engine_name(fq_image_ctx(img)), "io_uring"))
            continue;   /* no io_uring here: the paths are the fallback's */
        TL_CHECK(expect ? inl == (uint64_t)cases[i].n : inl == 0,
                 "%s: %zu bytes in %d request(s): %" PRIu64 " ran inline, expected %s", name,
                 cases[i].len, cases[i].n, inl, expect ? "all" : "none");
    }
out:
    fq_buf_free(buf);
    if (img)
        fq_close(img);
}

int main(void)
{
    char dir[] = "/dev/shm/test-paths.XXXXXX", path[64];

    tl_name = "test-paths";
    if (!mkdtemp(dir)) {
        printf("test-paths: no /dev/shm, skipped\n");
        return 77;
    }
    snprintf(path, sizeof(path), "%s/a.raw", dir);
    uint8_t *want = malloc(4 << 20);
    if (want && tl_create_image(path, "raw", 4 << 20, 0, 0) == 0) {
        for (size_t k = 0; k < (4u << 20); k++)
            want[k] = (uint8_t)(k * 13 + (k >> 16));
        struct fq_image *img = tl_open_image(path, "raw", 0, FQ_ENGINE_DEFAULT, NULL);
        if (img) {
            TL_CHECK(fq_pwrite(img, want, 4 << 20, 0) == 0, "write the pattern");
            fq_close(img);
        }
        check_paths(path, want, FQ_ENGINE_DEFAULT, "default");
        check_paths(path, want, FQ_ENGINE_IO_URING, "io_uring");
    }
    free(want);
    unlink(path);
    rmdir(dir);
    if (tl_failures) {
        fprintf(stderr, "test-paths: %d failures\n", tl_failures);
        return 1;
    }
    printf("test-paths: ok\n");
    return 0;
}
