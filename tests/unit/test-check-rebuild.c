/* test-check-rebuild.c: `check -r all` rebuilds damaged refcount
 * structures from the references it counts (rebuild.c), and a power loss
 * or an I/O error at any point of that repair leaves an image no worse.
 *
 * Each case makes an image (data, compressed and zero clusters, a
 * snapshot for some), damages its refcount structures (a table entry
 * naming an L2 table, the L1 table or zeroed, a table cut short, blocks
 * of garbage) and repairs it on a recording device. Then:
 *  - the repair leaves an image that checks clean (no corruption, no
 *    leak, also for `qemu-img check`) and reads as the undamaged one;
 *  - every crash state of the repair (each log prefix in order, and per
 *    prefix reorderings of the writes since the last flush, torn at
 *    512-byte sectors) opens, reads as the undamaged image, checks
 *    without corruption once its header points at the new structures, and
 *    after a second `check -r all` checks clean;
 *  - the repair with each of its reads, writes and flushes failing in
 *    turn (once, and from then on) fails cleanly or succeeds; the storage
 *    then reads as the undamaged image and a second repair makes it clean.
 *
 * Usage: test-check-rebuild [SEED [CASE-SUBSTRING]].
 * SPDX-License-Identifier: MIT
 */
#include "wl.h"

#define MiB (1024u * 1024u)

enum damage { D_RT_L2, D_RT_L1, D_RT_ZERO, D_RT_SHORT, D_RB_GARBAGE_RT_ZERO };

struct rcase {
    const char *name;
    struct wl_cfg cfg;         /* cluster, refbits, version, extl2, size used */
    uint64_t data;             /* bytes of data written from offset 0 */
    bool snapshot;
    enum damage damage;
};

static const struct rcase cases[] = {
    { "c64k-rt-l2", { "", 65536, 16, 3, 0, 8 * MiB, 0, 0, 0 }, 1 * MiB, false, D_RT_L2 },
    { "c64k-v2-rt-l1", { "", 65536, 16, 2, 0, 4 * MiB, 0, 0, 0 }, 512 * 1024, false, D_RT_L1 },
    { "c4k-rb8-snap-rt-zero", { "", 4096, 8, 3, 0, 2 * MiB, 0, 0, 0 }, 256 * 1024, true, D_RT_ZERO },
    { "c512-rb64-rt-short", { "", 512, 64, 3, 0, 4 * MiB, 0, 0, 0 }, 2560 * 1024, false, D_RT_SHORT },
    { "c32k-extl2-rb-garbage", { "", 32768, 16, 3, 1, 4 * MiB, 0, 0, 0 }, 1 * MiB, false,
      D_RB_GARBAGE_RT_ZERO },
};

static int failures;
static uint64_t nstates, nswitched, nfaults, nqemu;
static int have_qemu;

#define FAIL(...)                                                              \
    do {                                                                       \
        fprintf(stderr, "test-check-rebuild: FAIL: " __VA_ARGS__);            \
        fputc('\n', stderr);                                                   \
        failures++;                                                            \
    } while (0)

/* Open `dev` (owned by the image on success) as a qcow2 image for check. */
static int open_check(struct fq_ctx *ctx, struct fq_bdev *dev, int readonly, struct fq_image **img,
                      char *err)
{
    struct fq_open_opts o;
    struct fq_bdev *q;
    int r;

    fq_open_opts_init(&o);
    o.readonly = readonly;
    o.check_mode = 1;
    if ((r = fq_bdev_open_format(dev, "qcow2", &o, &q, err)) < 0)
        return r;
    if ((r = fq_image_from_bdev(ctx, q, FQ_CACHE_WRITEBACK, img)) < 0)
        fq_bdev_close(q);
    return r;
}

/* The same over a memory copy of `data` (*mem, closed by the caller
 * after the image) under a fault device (*flt, closed with the image). */
static int open_check_mem(struct fq_ctx *ctx, const uint8_t *data, size_t len, int readonly,
                          struct fq_bdev **mem, struct fq_bdev **flt, struct fq_image **img,
                          char *err)
{
    int r = fq_mem_open(ctx, data, len, len + (64u << 20), mem);

    if (r < 0)
        return r;
    if ((r = fq_fault_open(*mem, FQ_TESTDEV_BORROW, flt)) < 0) {
        fq_bdev_close(*mem);
        return r;
    }
    if ((r = open_check(ctx, *flt, readonly, img, err)) < 0) {
        fq_bdev_close(*flt);
        fq_bdev_close(*mem);
    }
    return r;
}

static int read_all(struct fq_image *img, uint8_t **out)
{
    uint64_t size = fq_size(img);

    *out = malloc(size ? size : 1);
    if (!*out)
        return -ENOMEM;
    int r = fq_pread(img, *out, (size_t)size, 0);
    if (r < 0) {
        free(*out);
        *out = NULL;
    }
    return r;
}

/* Guest content: distinct per 512-byte sector, runs that compress. */
static void fill(uint8_t *b, size_t len, uint64_t off, uint8_t g)
{
    for (size_t i = 0; i < len; i += 512)
        memset(b + i, (int)(((off + i) / 512 * 13 + g) % 251 + 1), FQ_MIN((size_t)512, len - i));
}

/* The undamaged image: data, compressed and zero clusters, a snapshot. */
static int make_image(struct fq_ctx *ctx, const struct rcase *rc, uint8_t **data, size_t *len)
{
    const struct wl_cfg *c = &rc->cfg;
    uint64_t cs = c->cluster;
    struct fq_bdev *mem, *flt;
    struct fq_image *img;
    char err[FQ_ERR_MAX] = "";
    uint8_t *buf = malloc(c->size);
    int r;

    if (!buf || (r = wl_create(ctx, c, data, len)) < 0) {
        free(buf);
        return -ENOMEM;
    }
    if ((r = fq_mem_open(ctx, *data, *len, 1u << 30, &mem)) < 0) {
        free(buf);
        return r;
    }
    if ((r = fq_fault_open(mem, FQ_TESTDEV_BORROW, &flt)) < 0 ||
        (r = wl_open(ctx, flt, 0, &img, err)) < 0) {
        fprintf(stderr, "%s: %s\n", rc->name, err);
        fq_bdev_close(mem);
        free(buf);
        return r < 0 ? r : -EIO;
    }
    fill(buf, c->size, 0, 1);
    r = fq_pwrite(img, buf, (size_t)rc->data, 0);
    for (uint64_t off = rc->data; r == 0 && off + cs <= rc->data + 8 * cs; off += 2 * cs)
        r = fq_pwrite_compressed(img, buf + off, off);
    if (r == 0 && c->version >= 3)
        r = fq_write_zeroes(img, 2 * cs, cs, 0);
    if (r == 0 && rc->snapshot) {
        r = fq_snapshot_create(img, "s", err);
        fill(buf, c->size, 0, 2);
        if (r == 0)
            r = fq_pwrite(img, buf, (size_t)(rc->data / 2), rc->data / 4);
    }
    if (r == 0)
        r = fq_pwrite(img, buf, 4096, c->size - 4096);   /* a far L2 table */
    int cr = fq_close(img);
    if (r == 0)
        r = cr;
    free(*data);
    *data = NULL;
    if (r == 0) {
        *len = (size_t)mem->size;
        *data = malloc(*len);
        r = *data ? fq_bdev_pread_sync(mem, *data, *len, 0) : -ENOMEM;
    }
    if (r < 0)
        fprintf(stderr, "%s: setup: %s %s\n", rc->name, strerror(-r), err);
    fq_bdev_close(mem);
    free(buf);
    return r;
}

static uint64_t rd64(const uint8_t *d, uint64_t off) { return fq_be64(d + off); }
static void wr64(uint8_t *d, uint64_t off, uint64_t v) { fq_put_be64(d + off, v); }

/* Damage the refcount structures of the image in `d`. */
static int damage(const struct rcase *rc, uint8_t *d, size_t len)
{
    uint64_t cs = rc->cfg.cluster, l1 = rd64(d, 40), rt = rd64(d, 48);
    uint32_t rtc = fq_be32(d + 56);
    uint64_t l2 = rd64(d, l1) & 0x00fffffffffffe00ull;

    if (rt + 8 * 8 > len || !l2)
        return -EINVAL;
    switch (rc->damage) {
    case D_RT_L2:
        wr64(d, rt, l2);
        return 0;
    case D_RT_L1:
        wr64(d, rt, l1);
        return 0;
    case D_RT_ZERO:
        wr64(d, rt, 0);
        return 0;
    case D_RT_SHORT:
        if (rtc < 2)
            return -EINVAL;   /* the case must have a table of several clusters */
        fq_put_be32(d + 56, 1);
        return 0;
    case D_RB_GARBAGE_RT_ZERO: {
        uint64_t rb = rd64(d, rt);
        if (!rb || rb + cs > len)
            return -EINVAL;
        for (uint64_t i = 0; i < cs; i++)
            d[rb + i] = (uint8_t)(i * 37 + 11);
        wr64(d, rt + 8, 0);   /* no block there: nothing is lost */
        wr64(d, rt, 0);
        return 0;
    }
    }
    return -EINVAL;
}

/* Findings of a check other than leaks. */
static void msg_quiet(void *opaque, const char *line)
{
    if (getenv("TL_VERBOSE"))
        fprintf(stderr, "  check: %s\n", line);
    (void)opaque;
}

/* `qemu-img check` of the storage `data` must be clean. */
static void qemu_clean(const uint8_t *data, size_t len, const char *what)
{
    const char *path = tl_path("state.qcow2");

    if (!have_qemu || wl_save(path, data, len) < 0)
        return;
    nqemu++;
    int rc = tl_sh("qemu-img check -f qcow2 '%s' >/dev/null 2>&1", path);
    if (rc != 0) {
        FAIL("%s: qemu-img check exit %d", what, rc);
        tl_sh("qemu-img check -f qcow2 '%s' 2>&1 | head -5 >&2", path);
    }
}

/* Repair the storage `data` (a copy) again without faults: it must then
 * check clean and read as `view`; `qemu` also asks qemu-img. */
static void repair_again(struct fq_ctx *ctx, const uint8_t *data, size_t len, const uint8_t *view,
                         uint64_t vsize, const char *what, bool qemu)
{
    struct fq_bdev *mem, *flt;
    struct fq_image *img;
    struct fq_check_result res;
    char err[FQ_ERR_MAX] = "";
    uint8_t *v = NULL;
    int r;

    if ((r = open_check_mem(ctx, data, len, 0, &mem, &flt, &img, err)) < 0) {
        FAIL("%s: read-write open: %s", what, err);
        return;
    }
    r = fq_check(img, FQ_CHECK_REPAIR_ALL, &res, msg_quiet, NULL);
    if (r == 0)
        r = fq_check(img, 0, &res, msg_quiet, NULL);
    if (r < 0 || res.corruptions || res.leaks || res.check_errors)
        FAIL("%s: after a second repair: %d, %lld corruptions, %lld leaks, %lld errors", what, r,
             (long long)res.corruptions, (long long)res.leaks, (long long)res.check_errors);
    if (fq_size(img) != vsize || read_all(img, &v) < 0 || memcmp(v, view, vsize))
        FAIL("%s: after a second repair the image reads differently", what);
    free(v);
    v = NULL;
    fq_close(img);
    if (qemu && (v = malloc(mem->size)) && fq_bdev_pread_sync(mem, v, mem->size, 0) == 0)
        qemu_clean(v, (size_t)mem->size, what);
    free(v);
    fq_bdev_close(mem);
}

/* A crash state (or the storage after a failed repair): it opens, reads as
 * the undamaged image, checks without corruption if the header switched to
 * new structures, and a second repair makes it clean. */
static void check_state(struct fq_ctx *ctx, const uint8_t *damaged, const uint8_t *data, size_t len,
                        const uint8_t *view, uint64_t vsize, const char *what, bool qemu)
{
    struct fq_bdev *mem, *flt;
    struct fq_image *img;
    struct fq_check_result res;
    char err[FQ_ERR_MAX] = "";
    uint8_t *v = NULL;
    int r;

    nstates++;
    if ((r = open_check_mem(ctx, data, len, 1, &mem, &flt, &img, err)) < 0) {
        FAIL("%s: open: %s", what, err);
        return;
    }
    if (fq_size(img) != vsize || read_all(img, &v) < 0 || memcmp(v, view, vsize))
        FAIL("%s: reads differently from the undamaged image", what);
    free(v);
    if (len >= 64 && rd64(data, 48) != rd64(damaged, 48)) {
        /* switched: the new structures are complete */
        nswitched++;
        r = fq_check(img, 0, &res, msg_quiet, NULL);
        if (r < 0 || res.corruptions || res.check_errors)
            FAIL("%s: switched to the new structures, but check: %d, %lld corruptions, %lld errors",
                 what, r, (long long)res.corruptions, (long long)res.check_errors);
    }
    fq_close(img);
    fq_bdev_close(mem);
    repair_again(ctx, data, len, view, vsize, what, qemu);
}

/* The repair with the nth read, write or flush failing (once, or from
 * then on). */
static void run_faults(struct fq_ctx *ctx, const struct rcase *rc, const uint8_t *damaged, size_t dlen,
                       const uint8_t *view, uint64_t vsize)
{
    static const enum fq_fault_kind kinds[] = { FQ_FAULT_READ, FQ_FAULT_WRITE, FQ_FAULT_FLUSH };
    static const char *const kname[] = { "read", "write", "flush" };
    /* reads are many (the whole count): a stride keeps the walk short */
    uint64_t stride = WL_SANITIZED ? 13 : 3, wstride = WL_SANITIZED ? 2 : 1;

    for (size_t k = 0; k < 2 * FQ_ARRAY_SIZE(kinds); k++) {
        bool sticky = k >= FQ_ARRAY_SIZE(kinds);
        for (uint64_t nth = 1;; nth += kinds[k % 3] == FQ_FAULT_READ ? stride : wstride) {
            struct fq_bdev *mem, *flt;
            struct fq_image *img;
            struct fq_fault_spec sp = { kinds[k % 3], 0, nth, -EIO, sticky };
            struct fq_fault_counts cnt;
            struct fq_check_result res;
            char err[FQ_ERR_MAX] = "", tag[128];

            snprintf(tag, sizeof(tag), "%s: %s fault %llu%s", rc->name, kname[k % 3],
                     (unsigned long long)nth, sticky ? " (sticky)" : "");
            if (open_check_mem(ctx, damaged, dlen, 0, &mem, &flt, &img, err) < 0) {
                FAIL("%s: open: %s", tag, err);
                return;
            }
            fq_fault_arm(flt, &sp);
            int r = fq_check(img, FQ_CHECK_REPAIR_ALL, &res, msg_quiet, NULL);
            fq_fault_counts(flt, &cnt);
            sp.kind = FQ_FAULT_NONE;
            fq_fault_arm(flt, &sp);
            if (getenv("TL_VERBOSE"))
                fprintf(stderr, "%s: %d, %llu injected\n", tag, r, (unsigned long long)cnt.injected);
            fq_close(img);
            bool hit = cnt.injected > 0;
            if (hit) {
                nfaults++;
                size_t len = (size_t)mem->size;
                uint8_t *data = malloc(len);
                if (data && fq_bdev_pread_sync(mem, data, len, 0) == 0)
                    check_state(ctx, damaged, data, len, view, vsize, tag, false);
                free(data);
            }
            fq_bdev_close(mem);
            if (!hit)
                break;   /* past the repair's last one */
        }
    }
}

static void run_case(struct fq_ctx *ctx, const struct rcase *rc, uint64_t seed)
{
    uint8_t *base = NULL, *damaged = NULL, *view = NULL, *data;
    size_t blen = 0, len;
    struct fq_bdev *mem, *flt, *rec;
    struct fq_image *img;
    struct fq_check_result res;
    char err[FQ_ERR_MAX] = "", what[128];
    uint64_t vsize = 0;
    int r;

    if (make_image(ctx, rc, &base, &blen) < 0) {
        FAIL("%s: setup", rc->name);
        return;
    }
    /* the undamaged guest content */
    if (open_check_mem(ctx, base, blen, 1, &mem, &flt, &img, err) < 0) {
        FAIL("%s: open the undamaged image: %s", rc->name, err);
        goto out;
    }
    if (read_all(img, &view) < 0) {
        FAIL("%s: read the undamaged image", rc->name);
        fq_close(img);
        fq_bdev_close(mem);
        goto out;
    }
    vsize = fq_size(img);
    fq_close(img);
    fq_bdev_close(mem);
    if (!(damaged = malloc(blen)))
        goto out;
    memcpy(damaged, base, blen);
    if (damage(rc, damaged, blen) < 0) {
        FAIL("%s: the image has nothing to damage", rc->name);
        goto out;
    }
    /* the damage is found, and needs a rebuild */
    struct fq_reclog *log = fq_reclog_new(damaged, blen);
    if (!log || fq_mem_open(ctx, damaged, blen, 1u << 30, &mem) < 0 ||
        fq_record_open(mem, log, 0, &rec) < 0 || open_check(ctx, rec, 0, &img, err) < 0) {
        FAIL("%s: open: %s", rc->name, err);
        fq_reclog_free(log);
        goto out;
    }
    fq_reclog_enable(log, false);
    r = fq_check(img, 0, &res, msg_quiet, NULL);
    if (r < 0 || !res.corruptions)
        FAIL("%s: the damage is not found: %d, %lld corruptions", rc->name, r,
             (long long)res.corruptions);
    fq_reclog_enable(log, true);
    r = fq_check(img, FQ_CHECK_REPAIR_ALL, &res, msg_quiet, NULL);
    if (r < 0 || res.corruptions || res.leaks || res.check_errors || !res.corruptions_fixed)
        FAIL("%s: the repair: %d, %lld corruptions left (%lld fixed), %lld leaks, %lld errors",
             rc->name, r, (long long)res.corruptions, (long long)res.corruptions_fixed,
             (long long)res.leaks, (long long)res.check_errors);
    fq_close(img);
    size_t n = fq_reclog_count(log);
    if (getenv("TL_VERBOSE"))
        fprintf(stderr, "%s: %zu records\n", rc->name, n);
    /* the repaired image */
    if (fq_reclog_replay(log, n, &data, &len) == 0) {
        snprintf(what, sizeof(what), "%s: repaired", rc->name);
        if (rd64(data, 48) == rd64(damaged, 48))
            FAIL("%s: the refcount table was not replaced", rc->name);
        check_state(ctx, damaged, data, len, view, vsize, what, true);
        free(data);
    }
    for (size_t p = 0; p < n; p++) {
        if (fq_reclog_replay(log, p, &data, &len) == 0) {
            snprintf(what, sizeof(what), "%s: in-order state after %zu records", rc->name, p);
            check_state(ctx, damaged, data, len, view, vsize, what, p % 4 == 1);
            free(data);
        }
        if (p == 0 || p == fq_reclog_epoch_start(log, p))
            continue;   /* nothing unflushed to reorder */
        for (uint64_t k = 0; k < 3; k++)
            if (fq_reclog_replay_crash(log, p, seed + p * 7 + k, 50, 30, &data, &len) == 0) {
                snprintf(what, sizeof(what), "%s: reordered state after %zu records", rc->name, p);
                check_state(ctx, damaged, data, len, view, vsize, what, false);
                free(data);
            }
    }
    fq_reclog_free(log);
    run_faults(ctx, rc, damaged, blen, view, vsize);
out:
    free(base);
    free(damaged);
    free(view);
}

int main(int argc, char **argv)
{
    uint64_t seed = tl_seed_arg(argc, argv, 1);
    const char *only = argc > 2 ? argv[2] : NULL;
    struct fq_ctx *ctx;

    tl_name = "test-check-rebuild";
    if (fq_ctx_new(FQ_ENGINE_SYNC, &ctx, NULL) < 0)
        return 1;
    if ((have_qemu = tl_have("qemu-img")))
        tl_mkdir();
    for (size_t i = 0; i < FQ_ARRAY_SIZE(cases); i++) {
        if (only && !strstr(cases[i].name, only))
            continue;
        int before = failures;
        run_case(ctx, &cases[i], seed);
        fprintf(stderr, "%s: %s\n", cases[i].name, failures > before ? "FAIL" : "ok");
        if (failures > before + 20)
            break;
    }
    fq_ctx_free(ctx);
    fprintf(stderr, "RESULT check-rebuild: seed %llu, %llu states (%llu after the switch), %llu "
            "fault points, %llu checked by qemu-img, %d failures\n", (unsigned long long)seed,
            (unsigned long long)nstates, (unsigned long long)nswitched, (unsigned long long)nfaults,
            (unsigned long long)nqemu, failures);
    return failures ? 1 : 0;
}
