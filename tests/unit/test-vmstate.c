/* test-vmstate.c: the VM state area (fq_vmstate_pread / fq_vmstate_pwrite)
 * against a model.
 *
 * Per configuration (cluster sizes 512 bytes to 64 KiB, extended L2,
 * compat 0.10, an image over a backing file) seeded random writes of the
 * VM state area (partial and whole clusters, some far enough to grow the
 * L1 table) mix with guest writes; a flat buffer for each predicts every
 * read, the guest data must never change with VM state writes and the VM
 * state never with guest writes, fq_check must find the image clean
 * (a snapshot taken in between shares the clusters), and everything reads
 * back after a reopen. Edges: unaligned positions (-EINVAL), raw images
 * (-ENOTSUP), read-only images (-EROFS), a range no L1 table can map
 * (-EIO), reads of what was never written (zeros).
 *
 * Usage: test-vmstate [SEED].
 * SPDX-License-Identifier: MIT
 */
#include <stdbool.h>

#include "testlib.h"
#include "util.h"

#define VM_LEN (3u << 20)      /* the part of the VM state area modelled */

struct cfg {
    const char *name, *opts;
    uint64_t size;
    bool backing;
};

static const struct cfg cfgs[] = {
    { "c64k", "cluster_size=64k", 1u << 20, false },
    { "c512", "cluster_size=512", 200 * 1024, false },   /* L1 growth: 32 KiB per entry */
    { "c16k-extl2", "cluster_size=16k,extended_l2=on", 1u << 20, false },
    { "c64k-v2", "cluster_size=64k,compat=0.10", 1u << 20, false },
    { "c4k-backing", "cluster_size=4k", 2u << 20, true },
};

static struct fq_image *open_img(const char *path, int readonly)
{
    struct fq_open_opts o;
    struct fq_image *img;
    char err[FQ_ERR_MAX];

    fq_open_opts_init(&o);
    o.readonly = readonly;
    if (fq_open(path, &o, &img, err) < 0) {
        TL_MSG("open %s: %s", path, err);
        return NULL;
    }
    return img;
}

/* The whole model against the image. */
static void verify(struct fq_image *img, const uint8_t *disk, uint64_t size, const uint8_t *vm,
                   const char *what)
{
    uint8_t *buf = malloc(VM_LEN > size ? VM_LEN : size);

    TL_CHECK(fq_pread(img, buf, size, 0) == 0 && !memcmp(buf, disk, size), "%s: guest data", what);
    TL_CHECK(fq_vmstate_pread(img, buf, VM_LEN, 0) == 0 && !memcmp(buf, vm, VM_LEN),
             "%s: VM state", what);
    free(buf);
}

static int fq_check_clean(const char *path, const char *what)
{
    struct fq_open_opts o;
    struct fq_image *img;
    struct fq_check_result res;

    fq_open_opts_init(&o);
    o.readonly = o.check_mode = 1;
    if (fq_open(path, &o, &img, NULL) < 0)
        return -1;
    int r = fq_check(img, 0, &res, NULL, NULL);
    fq_close(img);
    TL_CHECK(r == 0 && res.corruptions == 0 && res.leaks == 0, "%s: check: r=%d %" PRId64
             " corruptions %" PRId64 " leaks", what, r, res.corruptions, res.leaks);
    return r;
}

static void run_cfg(const struct cfg *c, uint64_t seed, const char *dir)
{
    char path[4200], base[4200], err[FQ_ERR_MAX], what[128];
    struct fq_create_opts co;
    struct tl_rng g;
    uint8_t *disk = calloc(1, c->size), *vm = calloc(1, VM_LEN), *buf = malloc(VM_LEN);
    struct fq_image *img;

    tl_rng_seed(&g, seed);
    snprintf(path, sizeof(path), "%s/%s.qcow2", dir, c->name);
    snprintf(base, sizeof(base), "%s/%s-base.qcow2", dir, c->name);
    fq_create_opts_init(&co);
    fq_create_opts_parse(&co, c->opts, err);
    co.size = c->size;
    if (c->backing) {
        /* the base is larger: its data lies where the overlay's VM state is */
        co.size = 64u << 20;
        if (fq_create(base, &co, err) < 0 || !(img = open_img(base, 0))) {
            TL_CHECK(0, "%s: base: %s", c->name, err);
            goto out;
        }
        memset(buf, 0x5a, VM_LEN);
        for (uint64_t off = 0; off < co.size; off += VM_LEN)
            fq_pwrite(img, buf, VM_LEN, off);
        fq_close(img);
        co.size = c->size;
        co.backing_file = base;
        co.backing_format = "qcow2";
        memset(disk, 0x5a, c->size);
    }
    if (fq_create(path, &co, err) < 0 || !(img = open_img(path, 0))) {
        TL_CHECK(0, "%s: create: %s", c->name, err);
        goto out;
    }
    if (c->backing) {
        /* the base's data lies where the overlay keeps its VM state: it
         * shows through there, as under guest data */
        TL_CHECK(fq_vmstate_pread(img, buf, 512, 0) == 0 && buf[0] == 0x5a, "%s: read", c->name);
        memset(vm, 0x5a, VM_LEN);
    }
    for (int i = 0; i < 40; i++) {
        uint64_t pos = tl_below(&g, VM_LEN / 512) * 512;
        uint64_t len = tl_range(&g, 1, FQ_MIN(64u * 1024, VM_LEN - pos) / 512) * 512;
        snprintf(what, sizeof(what), "%s seed %" PRIu64 " op %d", c->name, seed, i);
        if (tl_pct(&g, 30)) {
            uint64_t off = tl_below(&g, c->size);
            uint64_t n = tl_range(&g, 1, FQ_MIN(c->size - off, 70000));
            tl_fill_pattern(disk + off, n, (uint64_t)i + 1, off);
            TL_CHECK(fq_pwrite(img, disk + off, n, off) == 0, "%s: guest write", what);
        } else {
            tl_fill_pattern(vm + pos, len, seed + (uint64_t)i, pos);
            TL_CHECK(fq_vmstate_pwrite(img, vm + pos, len, pos) == 0, "%s: vmstate write %" PRIu64
                     "+%" PRIu64, what, pos, len);
        }
        if (i == 20) {
            TL_CHECK(fq_snapshot_create(img, "s", err) == 0, "%s: snapshot: %s", what, err);
        }
        if (i % 10 == 9)
            verify(img, disk, c->size, vm, what);
    }
    fq_close(img);
    fq_check_clean(path, c->name);
    if ((img = open_img(path, 1))) {
        verify(img, disk, c->size, vm, "after reopen");
        TL_CHECK(fq_vmstate_pwrite(img, vm, 512, 0) == -EROFS, "%s: read-only write", c->name);
        fq_close(img);
    }
out:
    free(disk);
    free(vm);
    free(buf);
}

/* Argument checks and formats without a VM state area. */
static void edges(const char *dir)
{
    char path[4200], err[FQ_ERR_MAX];
    struct fq_create_opts co;
    struct fq_image *img;
    uint8_t buf[1024] = { 0 };

    snprintf(path, sizeof(path), "%s/edge.qcow2", dir);
    fq_create_opts_init(&co);
    co.size = 1u << 20;
    if (fq_create(path, &co, err) < 0 || !(img = open_img(path, 0)))
        return;
    TL_CHECK(fq_vmstate_pwrite(img, buf, 512, 100) == -EINVAL, "unaligned position");
    TL_CHECK(fq_vmstate_pread(img, buf, 100, 0) == -EINVAL, "unaligned length");
    TL_CHECK(fq_vmstate_pwrite(img, buf, 512, 0x7ffffffffffff000ull) == -EIO, "out of reach");
    memset(buf, 1, sizeof(buf));
    TL_CHECK(fq_vmstate_pread(img, buf, 1024, 1ull << 40) == 0 && buf[0] == 0 && buf[1023] == 0,
             "never written reads zeros");
    TL_CHECK(fq_vmstate_pwrite(img, buf, 0, 0) == 0, "empty write");
    fq_close(img);
    fq_check_clean(path, "edge");
    snprintf(path, sizeof(path), "%s/edge.raw", dir);
    co.format = "raw";
    if (fq_create(path, &co, err) < 0 || !(img = open_img(path, 0)))
        return;
    TL_CHECK(fq_vmstate_pwrite(img, buf, 512, 0) == -ENOTSUP, "raw write");
    TL_CHECK(fq_vmstate_pread(img, buf, 512, 0) == -ENOTSUP, "raw read");
    fq_close(img);
}

int main(int argc, char **argv)
{
    uint64_t seed = tl_seed_arg(argc, argv, 1);
    const char *dir;

    tl_name = "test-vmstate";
    if (!(dir = tl_mkdir()))
        return 1;
    for (size_t i = 0; i < sizeof(cfgs) / sizeof(cfgs[0]); i++)
        run_cfg(&cfgs[i], seed + i, dir);
    edges(dir);
    tl_cleanup_dir();
    if (tl_failures) {
        TL_MSG("%d failures (seed %" PRIu64 ")", tl_failures, seed);
        return 1;
    }
    return 0;
}
