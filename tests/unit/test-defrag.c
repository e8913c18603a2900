/* test-defrag.c: in-place defragmentation (fq_defrag) under power loss and
 * failed I/O.
 *
 * Each case builds an image in memory through the library: cluster-sized
 * writes whose content names their guest offset, in the order of a seed
 * layout (seq, reverse, rand, part-rand), then what the case adds:
 * compressed clusters, zero clusters (plain and preallocated), discards,
 * internal snapshots taken between overwrites, persistent bitmaps (added
 * by qemu-img when it is there). The defragmentation runs on a recording
 * device; then:
 *  - the result checks clean (no leak, no corruption), reads the same,
 *    every snapshot reads the same, and only compressed clusters count as
 *    fragmented;
 *  - every crash state (each prefix of the write log as written and, per
 *    prefix, random subsets of the writes since the last flush, reordered
 *    and torn at 512-byte sectors; a sample of them unless TL_LONG is set)
 *    opens, checks without corruption (leaks allowed), reads the same (the
 *    snapshots too, for a sample), and a second defragmentation on it
 *    finishes and leaves it as clean;
 *  - the nth read, write or flush fails (EIO or ENOSPC, once or from then
 *    on, for a sample of n spread over the run): the image stays consistent
 *    (the same content, no corruption once reopened) and a second run
 *    finishes the job.
 * Also: what is refused (read-only, raw, requests in flight, a structure
 * larger than the budget) leaves the image byte for byte as it was.
 *
 * Usage: test-defrag [SEED [CASE-SUBSTRING]]; TL_LONG=1 walks every state.
 * SPDX-License-Identifier: MIT
 */
#include "wl.h"

#define KiB 1024u
#define MiB (1024u * 1024u)

enum layout { L_SEQ, L_REVERSE, L_RAND, L_PART };
#define F_COMP 1u
#define F_ZERO 2u
#define F_DISCARD 4u
#define F_SNAP 8u
#define F_BITMAP 16u
#define F_FAULTS 32u          /* also run the fault walk */

struct dcase {
    const char *name;
    struct wl_cfg cfg;         /* cluster, refbits, version, extl2, size used */
    enum layout layout;
    unsigned feat;
    uint64_t budget;           /* 0 = default */
    int compact;
};

static const struct dcase cases[] = {
    { "rand-c4k", { "", 4096, 16, 3, 0, 1 * MiB, 0, 0, 0 }, L_RAND, F_FAULTS, 64 * KiB, 0 },
    { "reverse-c4k", { "", 4096, 16, 3, 0, 1 * MiB, 0, 0, 0 }, L_REVERSE, 0, 0, 0 },
    { "part-rand-c64k", { "", 65536, 16, 3, 0, 4 * MiB, 0, 0, 0 }, L_PART, 0, 256 * KiB, 0 },
    { "seq-c512-holes", { "", 512, 16, 3, 0, 256 * KiB, 0, 0, 0 }, L_SEQ, F_DISCARD | F_ZERO, 8 * KiB, 0 },
    { "rand-c512-rb64-comp", { "", 512, 64, 3, 0, 256 * KiB, 0, 0, 0 }, L_RAND, F_COMP | F_ZERO, 0, 0 },
    { "rand-c4k-rb1", { "", 4096, 1, 3, 0, 512 * KiB, 0, 0, 0 }, L_RAND, F_COMP | F_DISCARD, 32 * KiB, 0 },
    { "rand-c16k-extl2", { "", 16384, 16, 3, 1, 2 * MiB, 0, 0, 0 }, L_RAND, F_COMP | F_ZERO | F_DISCARD, 0, 0 },
    { "rand-c4k-v2-comp", { "", 4096, 16, 2, 0, 1 * MiB, 0, 0, 0 }, L_RAND, F_COMP | F_DISCARD | F_FAULTS, 0, 0 },
    { "rand-c4k-snap", { "", 4096, 16, 3, 0, 1 * MiB, 0, 0, 0 }, L_RAND, F_SNAP | F_COMP | F_ZERO | F_FAULTS, 48 * KiB, 0 },
    { "part-c512-snap", { "", 512, 8, 3, 0, 128 * KiB, 0, 0, 0 }, L_PART, F_SNAP | F_DISCARD, 0, 0 },
    { "rand-c4k-bitmap", { "", 4096, 16, 3, 0, 1 * MiB, 0, 0, 0 }, L_RAND, F_BITMAP | F_COMP, 0, 0 },
    { "compact-c4k-snap", { "", 4096, 16, 3, 0, 1 * MiB, 0, 0, 0 }, L_RAND, F_SNAP | F_COMP | F_DISCARD, 0, 1 },
};

static int failures;
static uint64_t nstates, nreruns;
static bool longrun;
/* How much of each walk is taken (TL_LONG: all of it): crash states per
 * case, fault points per kind of fault; fewer under sanitizers. */
#define CRASH_SAMPLES (WL_SANITIZED ? 6u : 30u)
#define FAULT_SAMPLES (WL_SANITIZED ? 1u : 3u)

#define FAIL(...)                                                              \
    do {                                                                       \
        fprintf(stderr, "test-defrag: FAIL: " __VA_ARGS__);                   \
        fputc('\n', stderr);                                                   \
        failures++;                                                            \
    } while (0)

/* What an image shows: the guest view and each snapshot's. */
struct view {
    uint8_t *guest;
    uint64_t size;
    int nsn;
    char **names;
    uint8_t **snap;
    uint64_t *snap_size;
};

static void view_free(struct view *v)
{
    free(v->guest);
    for (int i = 0; i < v->nsn; i++) {
        free(v->names ? v->names[i] : NULL);
        free(v->snap ? v->snap[i] : NULL);
    }
    free(v->names);
    free(v->snap);
    free(v->snap_size);
    memset(v, 0, sizeof(*v));
}

/* The guest view of an open image. */
static int read_guest(struct fq_image *img, uint8_t **out, uint64_t *size)
{
    *size = fq_size(img);
    *out = malloc(*size ? *size : 1);
    return *out ? fq_pread(img, *out, (size_t)*size, 0) : -ENOMEM;
}

/* The views of the image in `data`: the guest, and each snapshot (read
 * after applying it to a copy) when `snaps`. */
static int read_view(struct fq_ctx *ctx, const uint8_t *data, size_t len, bool snaps, struct view *v)
{
    struct fq_image *img;
    struct fq_snapshot *sl = NULL;
    char err[FQ_ERR_MAX] = "";
    int r;

    memset(v, 0, sizeof(*v));
    if ((r = wl_open_mem(ctx, data, len, 1, &img, err)) < 0)
        return r;
    r = read_guest(img, &v->guest, &v->size);
    if (r == 0)
        r = fq_snapshot_list(img, &sl, &v->nsn);
    fq_close(img);
    if (r < 0 || !snaps || v->nsn == 0) {
        fq_snapshot_list_free(sl, v->nsn);
        if (!snaps)
            v->nsn = 0;
        return r;
    }
    v->names = calloc((size_t)v->nsn, sizeof(*v->names));
    v->snap = calloc((size_t)v->nsn, sizeof(*v->snap));
    v->snap_size = calloc((size_t)v->nsn, sizeof(*v->snap_size));
    for (int i = 0; r == 0 && i < v->nsn; i++) {
        v->names[i] = strdup(sl[i].name);
        if ((r = wl_open_mem(ctx, data, len, 0, &img, err)) < 0)
            break;
        if ((r = fq_snapshot_apply(img, sl[i].id, err)) == 0)
            r = read_guest(img, &v->snap[i], &v->snap_size[i]);
        fq_close(img);
    }
    fq_snapshot_list_free(sl, v->nsn);
    return r;
}

/* Why `got` differs from `want`, or NULL. */
static const char *view_diff(const struct view *want, const struct view *got, bool snaps)
{
    if (got->size != want->size || memcmp(got->guest, want->guest, want->size))
        return "the guest view changed";
    if (!snaps)
        return NULL;
    if (got->nsn != want->nsn)
        return "the snapshots changed";
    for (int i = 0; i < want->nsn; i++)
        if (strcmp(got->names[i], want->names[i]) || got->snap_size[i] != want->snap_size[i] ||
            memcmp(got->snap[i], want->snap[i], want->snap_size[i]))
            return "a snapshot reads differently";
    return NULL;
}

/* ---- building the images ---- */

static void write_order(const struct dcase *dc, uint64_t n, uint64_t seed, uint64_t *order)
{
    struct tl_rng r;

    tl_rng_seed(&r, seed);
    for (uint64_t i = 0; i < n; i++)
        order[i] = dc->layout == L_REVERSE ? n - 1 - i : i;
    uint64_t chunk = dc->layout == L_RAND ? n : dc->layout == L_PART ? FQ_MAX((uint64_t)1, n / 8) : 1;
    for (uint64_t c = 0; chunk > 1 && c < n; c += chunk) {
        uint64_t k = FQ_MIN(chunk, n - c);
        for (uint64_t i = k; i > 1; i--) {
            uint64_t j = tl_below(&r, i), t = order[c + i - 1];
            order[c + i - 1] = order[c + j];
            order[c + j] = t;
        }
    }
}

/* Compressible content naming its offset and generation. */
static void fill(uint8_t *b, size_t len, uint64_t gen, uint64_t off)
{
    for (size_t i = 0; i < len; i += 64) {
        uint8_t x = tl_pattern(gen, (off + i) * 8);
        memset(b + i, x | 1, FQ_MIN((size_t)64, len - i));
    }
}

/* Overwrite `k` random clusters of the `n` with generation `gen`. */
static int overwrite(struct fq_image *img, struct tl_rng *g, uint64_t k, uint64_t n, uint64_t cs,
                     uint64_t gen, uint8_t *buf)
{
    int r = 0;

    for (uint64_t i = 0; r == 0 && i < k; i++) {
        uint64_t at = tl_below(g, n);
        fill(buf, cs, gen, at * cs);
        r = fq_pwrite(img, buf, cs, at * cs);
    }
    return r;
}

static int build(struct fq_ctx *ctx, const struct dcase *dc, uint64_t seed, uint8_t **data,
                 size_t *len)
{
    const struct wl_cfg *c = &dc->cfg;
    uint64_t cs = c->cluster, n = c->size / cs;
    struct fq_bdev *mem, *borrow;
    struct fq_image *img;
    char err[FQ_ERR_MAX] = "";
    uint64_t *order = malloc(n * sizeof(*order));
    uint8_t *buf = malloc(cs);
    struct tl_rng g;
    int r;

    tl_rng_seed(&g, seed * 31 + 7);
    if (!order || !buf || (r = wl_create(ctx, c, data, len)) < 0) {
        free(order);
        free(buf);
        return -ENOMEM;
    }
    if ((r = fq_mem_open(ctx, *data, *len, 1u << 30, &mem)) < 0 ||
        (r = fq_fault_open(mem, FQ_TESTDEV_BORROW, &borrow)) < 0 ||
        (r = wl_open(ctx, borrow, 0, &img, err)) < 0) {
        fprintf(stderr, "build %s: %s\n", dc->name, err);
        free(order);
        free(buf);
        return r < 0 ? r : -EIO;
    }
    write_order(dc, n, seed, order);
    /* a quarter left unwritten: holes in the guest, backing-free zeros */
    for (uint64_t i = 0; r == 0 && i < n; i++) {
        if (order[i] % 4 == 3)
            continue;
        fill(buf, cs, 1, order[i] * cs);
        r = fq_pwrite(img, buf, cs, order[i] * cs);
    }
    for (uint64_t i = 0; r == 0 && (dc->feat & F_COMP) && i < n; i += 5) {
        fill(buf, cs, 2, i * cs);
        r = fq_pwrite_compressed(img, buf, i * cs);
    }
    for (uint64_t i = 2; r == 0 && (dc->feat & F_ZERO) && c->version >= 3 && i < n; i += 11)
        r = fq_write_zeroes(img, i * cs, cs, i % 2 ? FQ_ZERO_MAY_UNMAP : 0);
    if (r == 0 && (dc->feat & F_SNAP)) {
        r = fq_snapshot_create(img, "first", err);
        if (r == 0)
            r = overwrite(img, &g, n / 3, n, cs, 3, buf);
        if (r == 0)
            r = fq_snapshot_create(img, "second", err);
        if (r == 0 && (dc->feat & F_COMP))
            r = fq_pwrite_compressed(img, buf, 0);
    }
    for (uint64_t i = 1; r == 0 && (dc->feat & F_DISCARD) && i < n; i += 7)
        r = fq_discard(img, i * cs, FQ_MIN((i % 3 + 1) * cs, c->size - i * cs));
    if (r == 0 && (dc->feat & F_SNAP)) {
        r = overwrite(img, &g, n / 4, n, cs, 4, buf);
        if (r == 0)
            r = fq_snapshot_delete(img, "first", err);
        if (r == 0)
            r = fq_snapshot_create(img, "third", err);
    }
    int cr = fq_close(img);
    if (r == 0)
        r = cr;
    if (r == 0) {
        free(*data);
        *len = (size_t)mem->size;
        *data = malloc(*len);
        r = *data ? fq_bdev_pread_sync(mem, *data, *len, 0) : -ENOMEM;
    }
    fq_bdev_close(mem);
    free(order);
    free(buf);
    if (r == 0 && (dc->feat & F_BITMAP)) {
        /* persistent bitmaps, added by qemu-img */
        const char *p = tl_path("bitmap.qcow2");
        struct stat st;
        if (wl_save(p, *data, *len) < 0 ||
            tl_sh("qemu-img bitmap --add '%s' b0 && qemu-img bitmap --add -g 4096 '%s' b1", p, p))
            return -EIO;
        if (stat(p, &st) < 0)
            return -errno;
        free(*data);
        *len = (size_t)st.st_size;
        *data = malloc(*len);
        r = *data ? tl_read_file(p, *data, *len, 0) : -ENOMEM;
    }
    if (r < 0)
        fprintf(stderr, "build %s: %s %s\n", dc->name, strerror(-r), err);
    return r;
}

/* ---- the checks ---- */

static int run_defrag(struct fq_image *img, const struct dcase *dc, struct fq_defrag_stats *st,
                      char *err)
{
    struct fq_defrag_opts o;

    fq_defrag_opts_init(&o);
    o.budget = dc->budget;
    o.compact_only = dc->compact;
    return fq_defrag(img, &o, st, err);
}

/* Check the image in `data` and compare what it reads with `want`:
 * returns false (after failing) if it does not open or check, or has
 * corruptions (and leaks, unless `leaks_ok`). */
static bool inspect(struct fq_ctx *ctx, const struct dcase *dc, const struct view *want,
                    const uint8_t *data, size_t len, const char *what, bool full, bool leaks_ok,
                    struct fq_check_result *res)
{
    struct fq_image *img;
    struct view v;
    char err[FQ_ERR_MAX] = "";
    bool snaps = full && (dc->feat & F_SNAP);
    const char *why;
    int r;

    if ((r = wl_open_mem(ctx, data, len, 1, &img, err)) < 0) {
        FAIL("%s: %s: open: %s", dc->name, what, err);
        return false;
    }
    r = fq_check(img, 0, res, NULL, NULL);
    fq_close(img);
    if (r < 0 || res->corruptions || res->check_errors || (!leaks_ok && res->leaks)) {
        FAIL("%s: %s: check %d: %lld corruptions, %lld leaks, %lld errors", dc->name, what, r,
             (long long)res->corruptions, (long long)res->leaks, (long long)res->check_errors);
        if (getenv("TL_KEEP"))
            wl_save(tl_path("bad-state.qcow2"), data, len);
        return false;
    }
    if ((r = read_view(ctx, data, len, snaps, &v)) < 0)
        FAIL("%s: %s: read: %s", dc->name, what, strerror(-r));
    else if ((why = view_diff(want, &v, snaps)))
        FAIL("%s: %s: %s", dc->name, what, why);
    view_free(&v);
    return true;
}

/* The image in `data` after a finished defragmentation: clean, the same,
 * fragmented only where compressed (full defragmentation). */
static void check_final(struct fq_ctx *ctx, const struct dcase *dc, const struct view *want,
                        const uint8_t *data, size_t len, const char *what, bool full)
{
    struct fq_check_result res;

    if (inspect(ctx, dc, want, data, len, what, full, false, &res) && !dc->compact &&
        res.fragmented_clusters != res.compressed_clusters)
        FAIL("%s: %s: %llu fragmented clusters, %llu compressed", dc->name, what,
             (unsigned long long)res.fragmented_clusters, (unsigned long long)res.compressed_clusters);
}

/* Defragment a copy of `data` and check the result. */
static void rerun(struct fq_ctx *ctx, const struct dcase *dc, const struct view *want,
                  const uint8_t *data, size_t len, const char *what, bool full)
{
    struct fq_bdev *mem;
    struct fq_image *img;
    struct fq_defrag_stats st;
    char err[FQ_ERR_MAX] = "";
    int r;

    nreruns++;
    if ((r = fq_mem_open(ctx, data, len, len + (64u << 20), &mem)) < 0)
        return;
    struct fq_bdev *keep;
    if ((r = fq_fault_open(mem, FQ_TESTDEV_BORROW, &keep)) < 0 ||
        (r = wl_open(ctx, keep, 0, &img, err)) < 0) {
        FAIL("%s: %s: read-write open: %s", dc->name, what, err);
        fq_bdev_close(mem);
        return;
    }
    if ((r = run_defrag(img, dc, &st, err)) < 0) {
        FAIL("%s: %s: a second run failed: %s", dc->name, what, err);
        if (getenv("TL_KEEP"))
            wl_save(tl_path("bad-rerun.qcow2"), data, len);
    }
    int cr = fq_close(img);
    if (r == 0 && cr < 0)
        FAIL("%s: %s: close after the second run: %s", dc->name, what, strerror(-cr));
    size_t n = (size_t)mem->size;
    uint8_t *after = malloc(n);
    if (r == 0 && after && fq_bdev_pread_sync(mem, after, n, 0) == 0) {
        char w2[128];
        snprintf(w2, sizeof(w2), "%s, run again", what);
        check_final(ctx, dc, want, after, n, w2, full);
    }
    free(after);
    fq_bdev_close(mem);
}

/* A crash state: opens, checks without corruption, reads the same; a
 * second run finishes. */
static void check_state(struct fq_ctx *ctx, const struct dcase *dc, const struct view *want,
                        const uint8_t *data, size_t len, const char *what, bool full)
{
    struct fq_check_result res;

    nstates++;
    if (inspect(ctx, dc, want, data, len, what, full, true, &res))
        rerun(ctx, dc, want, data, len, what, full);
}

/* The nth read, write or flush of a defragmentation fails. */
static void run_faults(struct fq_ctx *ctx, const struct dcase *dc, const struct view *want,
                       const uint8_t *base, size_t blen)
{
    static const enum fq_fault_kind kinds[] = { FQ_FAULT_READ, FQ_FAULT_WRITE, FQ_FAULT_FLUSH };
    static const char *const kname[] = { "read", "write", "flush" };
    struct fq_fault_counts all;
    struct fq_bdev *cmem, *cflt;
    struct fq_image *cimg;
    struct fq_defrag_stats cst;
    char cerr[FQ_ERR_MAX] = "";

    /* how many operations of each kind a whole run makes */
    if (fq_mem_open(ctx, base, blen, blen + (64u << 20), &cmem) < 0)
        return;
    if (fq_fault_open(cmem, FQ_TESTDEV_BORROW, &cflt) < 0 || wl_open(ctx, cflt, 0, &cimg, cerr) < 0) {
        fq_bdev_close(cmem);
        return;
    }
    fq_fault_mirror(cflt, &all);
    run_defrag(cimg, dc, &cst, cerr);
    fq_close(cimg);
    fq_bdev_close(cmem);
    for (size_t k = 0; k < 2 * FQ_ARRAY_SIZE(kinds); k++) {
        bool sticky = k >= FQ_ARRAY_SIZE(kinds);
        int errv = k % 2 ? -ENOSPC : -EIO;
        uint64_t total = fq_fault_count(&all, kinds[k % 3], 0);
        uint64_t stride = longrun ? 1 : FQ_MAX(total / FAULT_SAMPLES, (uint64_t)1);
        for (uint64_t nth = 1 + (k * 7) % stride;; nth += stride) {
            struct fq_bdev *mem, *flt;
            struct fq_image *img;
            struct fq_fault_spec sp = { kinds[k % 3], 0, nth, errv, sticky };
            struct fq_fault_counts cnt;
            struct fq_defrag_stats st;
            char err[FQ_ERR_MAX] = "", tag[128];
            uint8_t *v = NULL;
            uint64_t size;
            int r;

            snprintf(tag, sizeof(tag), "%s fault %llu (%s%s)", kname[k % 3], (unsigned long long)nth,
                     strerror(-errv), sticky ? ", sticky" : "");
            if (fq_mem_open(ctx, base, blen, blen + (64u << 20), &mem) < 0 ||
                fq_fault_open(mem, FQ_TESTDEV_BORROW, &flt) < 0 ||
                wl_open(ctx, flt, 0, &img, err) < 0) {
                FAIL("%s: %s: open: %s", dc->name, tag, err);
                return;
            }
            fq_fault_arm(flt, &sp);
            r = run_defrag(img, dc, &st, err);
            fq_fault_counts(flt, &cnt);
            bool hit = cnt.injected > 0;
            if (!sticky) {
                sp.kind = FQ_FAULT_NONE;
                fq_fault_arm(flt, &sp);
                /* the open image still reads the same */
                if (hit && read_guest(img, &v, &size) == 0 &&
                    (size != want->size || memcmp(v, want->guest, size)))
                    FAIL("%s: %s: the image reads differently after the failure", dc->name, tag);
                free(v);
            }
            (void)r;
            fq_close(img);
            if (hit) {
                size_t n = (size_t)mem->size;
                uint8_t *data = malloc(n);
                if (data && fq_bdev_pread_sync(mem, data, n, 0) == 0)
                    check_state(ctx, dc, want, data, n, tag, false);
                free(data);
            }
            fq_bdev_close(mem);
            if (!hit)
                break;   /* past the last operation of that kind */
        }
    }
}

static void run_case(struct fq_ctx *ctx, const struct dcase *dc, uint64_t seed)
{
    uint8_t *base = NULL, *data;
    size_t blen = 0, len;
    struct view want = { 0 };
    struct fq_bdev *mem, *rec;
    struct fq_image *img;
    struct fq_defrag_stats st;
    char err[FQ_ERR_MAX] = "";
    bool snaps = (dc->feat & F_SNAP) != 0;
    int r;

    if ((dc->feat & F_BITMAP) && !tl_have("qemu-img")) {
        fprintf(stderr, "%s: skipped (no qemu-img to add bitmaps)\n", dc->name);
        return;
    }
    if (build(ctx, dc, seed, &base, &blen) < 0) {
        FAIL("%s: build", dc->name);
        return;
    }
    if ((r = read_view(ctx, base, blen, snaps, &want)) < 0) {
        FAIL("%s: read the image: %s", dc->name, strerror(-r));
        goto out;
    }
    struct fq_reclog *log = fq_reclog_new(base, blen);
    if (!log || fq_mem_open(ctx, base, blen, blen + (64u << 20), &mem) < 0 ||
        fq_record_open(mem, log, 0, &rec) < 0 || wl_open(ctx, rec, 0, &img, err) < 0) {
        FAIL("%s: open: %s", dc->name, err);
        fq_reclog_free(log);
        goto out;
    }
    if ((r = run_defrag(img, dc, &st, err)) < 0)
        FAIL("%s: defrag: %s", dc->name, err);
    int cr = fq_close(img);
    if (r < 0 || cr < 0) {
        fq_reclog_free(log);
        goto out;
    }
    size_t n = fq_reclog_count(log);
    if (getenv("TL_VERBOSE"))
        fprintf(stderr, "%s: %zu records, %llu rounds, %llu bytes copied, peak %llu of %llu\n",
                dc->name, n, (unsigned long long)st.rounds, (unsigned long long)st.bytes_copied,
                (unsigned long long)st.file_peak, (unsigned long long)st.file_before);
    if (!dc->compact && st.rounds == 0)
        FAIL("%s: nothing was moved", dc->name);
    if (fq_reclog_replay(log, n, &data, &len) == 0) {
        check_final(ctx, dc, &want, data, len, "after defrag", true);
        free(data);
    }
    /* a stride over the states keeps the suite short; TL_LONG walks all */
    size_t stride = longrun ? 1 : FQ_MAX((size_t)1, n / CRASH_SAMPLES);
    for (size_t p = 1 + (size_t)(seed % stride); p < n; p += stride) {
        char what[96];
        snprintf(what, sizeof(what), "state after %zu of %zu records", p, n);
        bool full = longrun || p % (stride * 6) < stride;
        if (fq_reclog_replay(log, p, &data, &len) == 0) {
            check_state(ctx, dc, &want, data, len, what, full);
            free(data);
        }
        if (p == fq_reclog_epoch_start(log, p))
            continue;   /* nothing unflushed to reorder */
        for (uint64_t k = 0; k < (longrun ? 3u : 1u); k++)
            if (fq_reclog_replay_crash(log, p, seed + p * 7 + k, 50, 30, &data, &len) == 0) {
                snprintf(what, sizeof(what), "reordered state after %zu of %zu records", p, n);
                check_state(ctx, dc, &want, data, len, what, false);
                free(data);
            }
    }
    fq_reclog_free(log);
    if (dc->feat & F_FAULTS)
        run_faults(ctx, dc, &want, base, blen);
out:
    view_free(&want);
    free(base);
}

/* ---- refusals ---- */

static void done_cb(void *opaque, int ret)
{
    *(int *)opaque = ret < 0 ? ret : 1;
}

/* A refused defragmentation leaves every byte as it was. */
static void refusals(struct fq_ctx *ctx)
{
    const struct dcase dc = { "refusal", { "", 512, 16, 3, 0, 256 * KiB, 0, 0, 0 }, L_REVERSE, 0, 0, 0 };
    struct fq_image *img;
    struct fq_bdev *mem, *keep, *raw;
    char err[FQ_ERR_MAX] = "";
    uint8_t *base = NULL, *after;
    size_t blen = 0;
    int r;

    if (build(ctx, &dc, 1, &base, &blen) < 0) {
        FAIL("refusals: build");
        return;
    }
    /* grown to 64 MiB: a new L1 table of 32 clusters at the end of the file */
    if (fq_mem_open(ctx, base, blen, blen + (64u << 20), &mem) == 0 &&
        fq_fault_open(mem, FQ_TESTDEV_BORROW, &keep) == 0 && wl_open(ctx, keep, 0, &img, err) == 0) {
        if ((r = fq_resize(img, 64 * MiB, 0, err)) < 0)
            FAIL("refusals: resize: %s", err);
        fq_close(img);
        free(base);
        blen = (size_t)mem->size;
        base = malloc(blen);
        if (!base || fq_bdev_pread_sync(mem, base, blen, 0) < 0) {
            FAIL("refusals: read the image");
            fq_bdev_close(mem);
            free(base);
            return;
        }
        fq_bdev_close(mem);
    }
    /* read-only */
    if (wl_open_mem(ctx, base, blen, 1, &img, err) == 0) {
        if ((r = fq_defrag(img, NULL, NULL, err)) != -EROFS)
            FAIL("refusals: read-only image: %d (%s)", r, err);
        fq_close(img);
    }
    /* raw */
    if (fq_mem_open(ctx, base, blen, blen, &mem) == 0) {
        struct fq_open_opts oo;
        fq_open_opts_init(&oo);
        if (fq_bdev_open_format(mem, "raw", &oo, &raw, err) == 0 &&
            fq_image_from_bdev(ctx, raw, FQ_CACHE_WRITEBACK, &img) == 0) {
            if ((r = fq_defrag(img, NULL, NULL, err)) != -ENOTSUP)
                FAIL("refusals: raw image: %d (%s)", r, err);
            fq_close(img);
        }
    }
    struct fq_defrag_opts o;
    fq_defrag_opts_init(&o);
    o.budget = 512;
    if (fq_mem_open(ctx, base, blen, blen + (64u << 20), &mem) == 0 &&
        fq_fault_open(mem, FQ_TESTDEV_BORROW, &keep) == 0 && wl_open(ctx, keep, 0, &img, err) == 0) {
        /* a request in flight */
        uint8_t sec[512];
        struct iovec iov = { sec, sizeof(sec) };
        int done = 0;
        if (fq_aio_preadv(img, &iov, 1, 0, sizeof(sec), 0, done_cb, &done) == 0) {
            if ((r = fq_defrag(img, &o, NULL, err)) != -EBUSY)
                FAIL("refusals: requests in flight: %d (%s)", r, err);
            while (!done)
                fq_ctx_run(ctx, 1, -1);
        }
        /* the L1 table must move but is larger than the budget */
        if ((r = fq_defrag(img, &o, NULL, err)) != -EINVAL || !strstr(err, "budget"))
            FAIL("refusals: small budget: %d (%s)", r, err);
        fq_close(img);
        after = malloc((size_t)mem->size);
        if (after && fq_bdev_pread_sync(mem, after, (size_t)mem->size, 0) == 0 &&
            (mem->size != blen || memcmp(after, base, blen)))
            FAIL("refusals: a refused defragmentation changed the image");
        free(after);
        fq_bdev_close(mem);
    }
    free(base);
}

int main(int argc, char **argv)
{
    uint64_t seed = tl_seed_arg(argc, argv, 1);
    const char *only = argc > 2 ? argv[2] : NULL;
    struct fq_ctx *ctx;

    tl_name = "test-defrag";
    longrun = getenv("TL_LONG") != NULL;
    if (fq_ctx_new(FQ_ENGINE_SYNC, &ctx, NULL) < 0)
        return 1;
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
    if (!only || strstr("refusals", only))
        refusals(ctx);
    fq_ctx_free(ctx);
    fprintf(stderr, "test-defrag: seed %llu, %llu crash and fault states, %llu second runs, "
            "%d failures\n", (unsigned long long)seed, (unsigned long long)nstates,
            (unsigned long long)nreruns, failures);
    return failures ? 1 : 0;
}
