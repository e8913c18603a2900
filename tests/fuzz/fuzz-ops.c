/* fuzz-ops.c: libFuzzer target: a sequence of operations decoded from the
 * input runs on a valid image (in memory) and every result is compared
 * with a flat reference model of the guest disk.
 *
 * Input: byte 0 picks the image (cluster size 512 B..64 KiB, refcount
 * width 1..64 bits, compat 0.10 or 1.1, extended L2), then 6 bytes per
 * operation: kind, offset (16 bits, in 512-byte units or bytes), length.
 * Operations: read, write, write-zeroes (with and without unmap), discard,
 * flush, a batch of up to four asynchronous writes to disjoint ranges that
 * may share clusters, close + reopen, and check. Any mismatch, any failed
 * request, and any corruption or leak found by fq_check abort().
 * SPDX-License-Identifier: MIT
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testdev.h"
#include "api/api.h"
#include "core/core.h"
#include "util.h"

#define DISK (2u << 20)
#define MAX_OPS 256

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct fq_ctx *ctx;
static uint8_t *model, *buf, *img_bytes;

static const struct {
    uint32_t cluster;
    int refbits, version, extl2;
} shapes[] = {
    { 512, 16, 3, 0 }, { 512, 1, 3, 0 }, { 512, 64, 3, 0 }, { 4096, 16, 2, 0 },
    { 4096, 8, 3, 0 }, { 65536, 16, 3, 0 }, { 65536, 2, 3, 0 }, { 32768, 32, 3, 1 },
};

#define CHECK(cond, ...)                                                       \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "fuzz-ops: " __VA_ARGS__);                        \
            fputc('\n', stderr);                                               \
            abort();                                                           \
        }                                                                      \
    } while (0)

static struct fq_image *open_bytes(const uint8_t *d, size_t n)
{
    struct fq_bdev *mem, *q;
    struct fq_image *img;
    char err[FQ_ERR_MAX] = "";

    CHECK(fq_mem_open(ctx, d, n, 1u << 28, &mem) == 0, "mem");
    CHECK(fq_bdev_open_format(mem, "qcow2", NULL, &q, err) == 0, "open: %s", err);
    CHECK(fq_image_from_bdev(ctx, q, FQ_CACHE_WRITEBACK, &img) == 0, "image");
    return img;
}

/* Close `img` and return its bytes (img_bytes, *n). */
static void close_to_bytes(struct fq_image *img, size_t *n)
{
    struct fq_bdev *q = fq_image_bdev(img), *mem = q->child;

    CHECK(fq_flush(img) == 0, "flush before close");
    *n = (size_t)mem->size;
    free(img_bytes);
    img_bytes = malloc(*n ? *n : 1);
    CHECK(img_bytes && fq_bdev_pread_sync(mem, img_bytes, *n, 0) == 0, "save");
    fq_close(img);
}

static void check_clean(struct fq_image *img, const char *when)
{
    struct fq_check_result r;
    int ret = fq_check(img, 0, &r, NULL, NULL);

    CHECK(ret == 0 && r.corruptions == 0 && r.leaks == 0 && r.check_errors == 0,
          "%s: check ret %d, %lld corruptions, %lld leaks, %lld errors", when, ret,
          (long long)r.corruptions, (long long)r.leaks, (long long)r.check_errors);
}

struct aw {
    int done, ret;
};

static void aw_cb(void *opaque, int ret)
{
    struct aw *a = opaque;
    a->done = 1;
    a->ret = ret;
}

static void fill(uint8_t *p, size_t len, uint64_t off, unsigned gen)
{
    for (size_t i = 0; i < len; i++)
        p[i] = (uint8_t)((off + i) * 31 + gen * 7 + ((off + i) >> 9));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fq_create_opts co;
    struct fq_bdev *mem;
    struct fq_image *img;
    char err[FQ_ERR_MAX] = "";
    size_t n;

    if (size < 1 || size > 1 + 6 * MAX_OPS)
        return 0;
    if (!ctx) {
        CHECK(fq_ctx_new(FQ_ENGINE_SYNC, &ctx, NULL) == 0, "ctx");
        model = malloc(DISK);
        buf = malloc(DISK);
        CHECK(model && buf, "memory");
    }
    unsigned shape = data[0] % FQ_ARRAY_SIZE(shapes);
    uint32_t cs = shapes[shape].cluster;
    fq_create_opts_init(&co);
    co.size = DISK;
    co.cluster_size = cs;
    co.refcount_bits = shapes[shape].refbits;
    co.version = shapes[shape].version;
    co.extended_l2 = shapes[shape].extl2;
    CHECK(fq_mem_open(ctx, NULL, 0, 1u << 28, &mem) == 0, "mem");
    CHECK(fq_bdev_create_format(mem, &co, err) == 0, "create: %s", err);
    n = (size_t)mem->size;
    free(img_bytes);
    img_bytes = malloc(n);
    CHECK(img_bytes && fq_bdev_pread_sync(mem, img_bytes, n, 0) == 0, "read");
    fq_bdev_close(mem);
    img = open_bytes(img_bytes, n);
    memset(model, 0, DISK);

    for (size_t p = 1, k = 0; p + 6 <= size; p += 6, k++) {
        const uint8_t *o = data + p;
        unsigned kind = o[0] % 10;
        int bytes = o[0] & 0x80;          /* byte granularity instead of sectors */
        uint64_t off = (uint64_t)(o[1] << 8 | o[2]) * (bytes ? 32 : 512) % DISK;
        uint64_t len = (uint64_t)(o[3] << 8 | o[4]) * (bytes ? 1 : 512) % (DISK / 4) + 1;
        unsigned gen = (unsigned)k + 1;
        if (off + len > DISK)
            len = DISK - off;
        (void)o[5];
        switch (kind) {
        case 0:
        case 1: {
            CHECK(fq_pread(img, buf, (size_t)len, off) == 0, "op %zu: read", k);
            CHECK(memcmp(buf, model + off, (size_t)len) == 0,
                  "op %zu: read 0x%llx+0x%llx differs from the model", k,
                  (unsigned long long)off, (unsigned long long)len);
            break;
        }
        case 2:
        case 3:
            fill(model + off, (size_t)len, off, gen);
            CHECK(fq_pwrite(img, model + off, (size_t)len, off) == 0, "op %zu: write", k);
            break;
        case 4:
            CHECK(fq_write_zeroes(img, off, len, o[5] & 1 ? FQ_ZERO_MAY_UNMAP : 0) == 0,
                  "op %zu: write-zeroes", k);
            memset(model + off, 0, (size_t)len);
            break;
        case 5: {
            CHECK(fq_discard(img, off, len) == 0, "op %zu: discard", k);
            /* whole clusters, with extended L2 too (the partial last
             * cluster of the disk counts when the request reaches it) */
            uint64_t a = FQ_ALIGN_UP(off, cs);
            uint64_t b = off + len == DISK ? DISK : FQ_ALIGN_DOWN(off + len, cs);
            if (b > a)
                memset(model + a, 0, (size_t)(b - a));
            break;
        }
        case 6:
            CHECK(fq_flush(img) == 0, "op %zu: flush", k);
            break;
        case 7: {
            /* up to four asynchronous writes to disjoint pieces of [off, off+len) */
            unsigned pieces = 1 + o[5] % 4;
            struct iovec iov[4];
            struct aw aw[4];
            uint64_t step = len / pieces;
            if (step == 0)
                break;
            for (unsigned i = 0; i < pieces; i++) {
                uint64_t po = off + i * step, pl = i + 1 == pieces ? len - i * step : step;
                fill(buf + (po - off), (size_t)pl, po, gen + i);
                iov[i].iov_base = buf + (po - off);
                iov[i].iov_len = (size_t)pl;
                aw[i].done = 0;
                CHECK(fq_aio_pwritev(img, &iov[i], 1, 0, pl, po, aw_cb, &aw[i]) == 0, "aio submit");
            }
            for (unsigned i = 0; i < pieces; i++) {
                while (!aw[i].done)
                    CHECK(fq_ctx_run(ctx, 1, -1) >= 0, "run");
                CHECK(aw[i].ret == 0, "op %zu: async write %u: %d", k, i, aw[i].ret);
            }
            memcpy(model + off, buf, (size_t)len);
            break;
        }
        case 8:
            close_to_bytes(img, &n);
            img = open_bytes(img_bytes, n);
            break;
        case 9:
            check_clean(img, "during the run");
            break;
        }
    }
    close_to_bytes(img, &n);
    img = open_bytes(img_bytes, n);
    check_clean(img, "after reopening");
    CHECK(fq_pread(img, buf, DISK, 0) == 0, "final read");
    CHECK(memcmp(buf, model, DISK) == 0, "final content differs from the model");
    fq_close(img);
    return 0;
}
