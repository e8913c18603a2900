/* fuzz-image.c: libFuzzer target: the input is a qcow2 image, held in an
 * in-memory device. It is opened read-only and queried (info, map over
 * the whole disk, reads of every mapped extent), checked, then opened
 * read-write on a copy to take a few writes, a discard and a flush, and
 * finally repaired (check -r all) and checked again.
 *
 * Nothing may crash, hang or trip a sanitizer; every failure must be an
 * error return. Sizes are bounded so that the fuzzer cannot run out of
 * memory or time: the device may grow by at most 64 MiB, at most 4096
 * extents are mapped and 16 MiB read per input.
 * SPDX-License-Identifier: MIT
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "testdev.h"
#include "api/api.h"
#include "core/core.h"
#include "util.h"

#define MAX_INPUT (4u << 20)
#define MAX_GROW (64u << 20)
#define READ_BUDGET (16u << 20)
#define MAX_EXTENTS 4096

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct fq_ctx *ctx;
static uint8_t *buf;

static int open_img(const uint8_t *data, size_t size, int readonly, int check_mode,
                    struct fq_image **img)
{
    struct fq_open_opts o;
    struct fq_bdev *mem, *q;
    char err[FQ_ERR_MAX];

    if (fq_mem_open(ctx, data, size, size + MAX_GROW, &mem) < 0)
        return -1;
    mem->readonly = readonly;
    fq_open_opts_init(&o);
    o.readonly = readonly;
    o.check_mode = check_mode;
    o.cache_size = 1u << 20;
    if (fq_bdev_open_format(mem, "qcow2", &o, &q, err) < 0) {
        fq_bdev_close(mem);
        return -1;
    }
    if (fq_image_from_bdev(ctx, q, FQ_CACHE_WRITEBACK, img) < 0) {
        fq_bdev_close(q);
        return -1;
    }
    return 0;
}

static void query(struct fq_image *img)
{
    struct fq_info info;
    struct fq_map_entry m;
    uint64_t size = fq_size(img), off = 0, budget = READ_BUDGET;

    fq_get_info(img, &info);
    for (int n = 0; off < size && n < MAX_EXTENTS; n++) {
        if (fq_map(img, off, size - off, &m) < 0 || m.length == 0)
            break;
        if ((m.flags & FQ_MAP_DATA) && budget > 0) {
            size_t len = (size_t)FQ_MIN(FQ_MIN(m.length, (uint64_t)(1u << 20)), budget);
            fq_pread(img, buf, len, off);
            budget -= len;
        }
        off += m.length;
    }
    /* unaligned reads at both ends and across the first clusters */
    if (size > 0) {
        fq_pread(img, buf, (size_t)FQ_MIN(size, (uint64_t)(300 * 1024)), 0);
        fq_pread(img, buf, (size_t)FQ_MIN(size, (uint64_t)777), size - FQ_MIN(size, (uint64_t)777));
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fq_image *img;
    struct fq_check_result res;

    if (size > MAX_INPUT)
        return 0;
    if (!ctx && fq_ctx_new(FQ_ENGINE_SYNC, &ctx, NULL) < 0)
        abort();
    if (!buf && !(buf = malloc(1u << 20)))
        abort();

    if (open_img(data, size, 1, 0, &img) == 0) {
        query(img);
        fq_close(img);
    }
    if (open_img(data, size, 1, 1, &img) == 0) {
        fq_check(img, 0, &res, NULL, NULL);
        fq_close(img);
    }
    if (open_img(data, size, 0, 0, &img) == 0) {
        uint64_t vs = fq_size(img);
        memset(buf, 0x5a, 65536);
        if (vs >= 65536) {
            fq_pwrite(img, buf, 65536, 0);
            fq_pwrite(img, buf, 4096 + 512, (vs / 2) & ~511ull);
            fq_write_zeroes(img, vs - 65536, 65536, 0);
            fq_discard(img, 0, 65536);
        }
        fq_flush(img);
        fq_close(img);
    }
    if (open_img(data, size, 0, 1, &img) == 0) {
        fq_check(img, FQ_CHECK_REPAIR_ALL, &res, NULL, NULL);
        fq_close(img);
    }
    return 0;
}
