/* test-feat-crash.c: power loss during the whole-image operations:
 * snapshot create / apply / delete, resize (grow across L1 tables and
 * shrink), compressed writes, downgrade to compat=0.10, changing the
 * refcount width (up and down) and emptying.
 *
 * Each operation runs on an image whose storage is a recording device
 * (bdev_test.h), after a setup that leaves data, compressed clusters and
 * snapshots behind. The log is replayed into crash states: every prefix
 * as written and, per prefix, random subsets of the writes since the last
 * flush, reordered and torn at 512-byte sectors. Every state must open,
 * pass fq_check without corruptions (snapshot operations: COPIED flag
 * mismatches only, see check_state), and read as the state before or after
 * the operation (per operation: the same data, a snapshot that is either
 * absent or complete, a size that is either old or new with zeros beyond
 * the old end, clusters either old or new, a refcount width either old or
 * new); it must then take a write and a flush and check clean once
 * repaired. The refcount width change also runs with each of its reads,
 * writes and flushes failing in turn (run_faults), and `qemu-img check`
 * must find no errors in its states (leaks allowed).
 *
 * Usage: test-feat-crash [SEED [CASE-SUBSTRING]].
 * SPDX-License-Identifier: MIT
 */
#include "wl.h"

#define MiB (1024u * 1024u)

enum op { OP_SNAP_CREATE, OP_SNAP_APPLY, OP_SNAP_DELETE, OP_SNAP_DELETE_LAST, OP_GROW, OP_SHRINK, OP_COMPRESS,
          OP_DOWNGRADE, OP_EMPTY, OP_REFBITS };

struct fcase {
    const char *name;
    struct wl_cfg cfg;         /* only cluster, refbits, version, extl2, size used */
    enum op op;
    uint64_t arg;              /* new size for resize, new width for OP_REFBITS */
};

static const struct fcase cases[] = {
    { "snap-create-c64k", { "", 65536, 16, 3, 0, 2 * MiB, 0, 0, 0 }, OP_SNAP_CREATE, 0 },
    { "snap-create-c512-rb8", { "", 512, 8, 3, 0, 256 * 1024, 0, 0, 0 }, OP_SNAP_CREATE, 0 },
    { "snap-apply-c4k-v2", { "", 4096, 16, 2, 0, 1 * MiB, 0, 0, 0 }, OP_SNAP_APPLY, 0 },
    { "snap-apply-c32k-extl2", { "", 32768, 8, 3, 1, 2 * MiB, 0, 0, 0 }, OP_SNAP_APPLY, 0 },
    { "snap-delete-c64k", { "", 65536, 16, 3, 0, 2 * MiB, 0, 0, 0 }, OP_SNAP_DELETE, 0 },
    { "snap-delete-c512-rb64", { "", 512, 64, 3, 0, 256 * 1024, 0, 0, 0 }, OP_SNAP_DELETE, 0 },
    { "snap-delete-last-c16k", { "", 16384, 16, 3, 0, 1 * MiB, 0, 0, 0 }, OP_SNAP_DELETE_LAST, 0 },
    { "grow-l1-c512", { "", 512, 16, 3, 0, 64 * 1024, 0, 0, 0 }, OP_GROW, 3 * MiB },
    { "grow-c64k", { "", 65536, 16, 3, 0, 1 * MiB, 0, 0, 0 }, OP_GROW, 3 * MiB + 512 },
    { "shrink-c4k", { "", 4096, 16, 3, 0, 1 * MiB, 0, 0, 0 }, OP_SHRINK, 300 * 1024 },
    { "compress-c4k-rb1", { "", 4096, 1, 3, 0, 1 * MiB, 0, 0, 0 }, OP_COMPRESS, 0 },
    { "compress-c64k-v2", { "", 65536, 16, 2, 0, 2 * MiB, 0, 0, 0 }, OP_COMPRESS, 0 },
    { "downgrade-c4k", { "", 4096, 16, 3, 0, 1 * MiB, 0, 0, 0 }, OP_DOWNGRADE, 0 },
    { "empty-c64k", { "", 65536, 16, 3, 0, 2 * MiB, 0, 0, 0 }, OP_EMPTY, 0 },
    { "refbits-c512-16to64", { "", 512, 16, 3, 0, 2 * MiB, 0, 0, 0 }, OP_REFBITS, 64 },
    { "refbits-c4k-rb1-to8", { "", 4096, 1, 3, 0, 1 * MiB, 0, 0, 0 }, OP_REFBITS, 8 },
    { "refbits-c512-16to1", { "", 512, 16, 3, 0, 256 * 1024, 0, 0, 0 }, OP_REFBITS, 1 },
    { "refbits-c64k-64to2", { "", 65536, 64, 3, 0, 2 * MiB, 0, 0, 0 }, OP_REFBITS, 2 },
};

static int failures;
static uint64_t nstates, ncopied, nqemu;
static int have_qemu;

#define FAIL(...)                                                              \
    do {                                                                       \
        fprintf(stderr, "test-feat-crash: FAIL: " __VA_ARGS__);               \
        fputc('\n', stderr);                                                   \
        failures++;                                                            \
    } while (0)

/* A recognisable pattern for cluster-sized piece `k` of generation `g`;
 * runs of equal bytes so that compression shrinks it. */
static void fill(uint8_t *b, size_t len, uint64_t g, uint64_t off)
{
    for (size_t i = 0; i < len; i += 512) {
        uint8_t v = (uint8_t)(((off + i) / 512 * 31 + g * 7) % 251 + 1);
        memset(b + i, v, FQ_MIN((size_t)512, len - i));
    }
}

struct views {
    uint8_t *a, *b;            /* guest view before and after */
    uint64_t asize, bsize;
    int asnaps, bsnaps;
};

/* Guest view and snapshot count of an open image. */
static int read_view(struct fq_image *img, uint8_t **out, uint64_t *size, int *nsnaps)
{
    struct fq_snapshot *v;
    int r;

    *size = fq_size(img);
    *out = malloc(*size ? *size : 1);
    if (!*out)
        return -ENOMEM;
    if ((r = fq_pread(img, *out, (size_t)*size, 0)) < 0)
        return r;
    if ((r = fq_snapshot_list(img, &v, nsnaps)) < 0)
        return r;
    fq_snapshot_list_free(v, *nsnaps);
    return 0;
}

/* The setup: data, compressed clusters, zero clusters, and for apply and
 * delete a snapshot "s" of another state. Returns the image bytes. */
static int setup(struct fq_ctx *ctx, const struct fcase *fc, uint8_t **data, size_t *len)
{
    const struct wl_cfg *c = &fc->cfg;
    uint64_t cs = c->cluster, size = c->size;
    struct fq_bdev *mem, *borrow;
    struct fq_image *img;
    char err[FQ_ERR_MAX] = "";
    uint8_t *buf = malloc(size);
    int r;

    if (!buf || (r = wl_create(ctx, c, data, len)) < 0)
        return -ENOMEM;
    if ((r = fq_mem_open(ctx, *data, *len, 1u << 30, &mem)) < 0 ||
        (r = fq_fault_open(mem, FQ_TESTDEV_BORROW, &borrow)) < 0 ||
        (r = wl_open(ctx, borrow, 0, &img, err)) < 0) {
        fprintf(stderr, "setup %s: %s\n", fc->name, err);
        return r < 0 ? r : -EIO;
    }
    fill(buf, size, 1, 0);
    r = fq_pwrite(img, buf, (size_t)(size / 2), 0);
    /* compressed clusters share host clusters: refcounts above what a
     * narrower width holds, which would refuse the change */
    bool narrower = fc->op == OP_REFBITS && fc->arg < (uint64_t)c->refbits;
    for (uint64_t off = size / 2; r == 0 && !narrower && off + cs <= size * 3 / 4; off += 2 * cs)
        r = fq_pwrite_compressed(img, buf + off, off);
    if (r == 0 && c->version >= 3)
        r = fq_write_zeroes(img, cs, cs, 0);
    if (r == 0 && fc->op == OP_SNAP_DELETE_LAST) {
        r = fq_snapshot_create(img, "s", err);
        fill(buf, size, 2, 0);
        if (r == 0)
            r = fq_pwrite(img, buf, (size_t)(size / 4), 0);
    }
    if (r == 0 && (fc->op == OP_SNAP_APPLY || fc->op == OP_SNAP_DELETE)) {
        r = fq_snapshot_create(img, "s", err);
        fill(buf, size, 2, 0);
        if (r == 0)
            r = fq_pwrite(img, buf + size / 4, (size_t)(size / 2), size / 4);
        if (r == 0 && c->version >= 3)
            r = fq_write_zeroes(img, 3 * cs, 2 * cs, FQ_ZERO_MAY_UNMAP);
        if (r == 0)
            r = fq_snapshot_create(img, "t", err);
        if (r == 0)
            r = fq_pwrite_compressed(img, buf, 0);
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
    if (r < 0)
        fprintf(stderr, "setup %s: %s %s\n", fc->name, strerror(-r), err);
    fq_bdev_close(mem);
    free(buf);
    return r;
}

/* Run the case's operation on `img`. */
static int run_op(struct fq_image *img, const struct fcase *fc, char *err)
{
    uint64_t cs = fc->cfg.cluster, size = fq_size(img);
    struct fq_amend_opts ao;
    int r = 0;

    switch (fc->op) {
    case OP_SNAP_CREATE:
        return fq_snapshot_create(img, "new", err);
    case OP_SNAP_APPLY:
        return fq_snapshot_apply(img, "s", err);
    case OP_SNAP_DELETE:
    case OP_SNAP_DELETE_LAST:
        return fq_snapshot_delete(img, "s", err);
    case OP_GROW:
        return fq_resize(img, fc->arg, 0, err);
    case OP_SHRINK:
        return fq_resize(img, fc->arg, FQ_RESIZE_SHRINK, err);
    case OP_COMPRESS: {
        uint8_t *buf = malloc(cs);
        if (!buf)
            return -ENOMEM;
        for (uint64_t off = 0; r == 0 && off < size; off += size / 5 / cs * cs + cs) {
            fill(buf, cs, 3, off);
            r = fq_pwrite_compressed(img, buf, off);
            if (r == 0 && off == 0)
                r = fq_flush(img);
        }
        free(buf);
        return r;
    }
    case OP_DOWNGRADE:
        fq_amend_opts_init(&ao);
        ao.version = 2;
        return fq_amend(img, &ao, err);
    case OP_EMPTY:
        /* what commit does to the top once its data is in the base */
    {
        struct fq_bdev *bs = fq_image_bdev(img);
        return bs->ops->make_empty(bs);
    }
    case OP_REFBITS:
        fq_amend_opts_init(&ao);
        ao.refcount_bits = (int)fc->arg;
        return fq_amend(img, &ao, err);
    }
    return -EINVAL;
}

/* Is `v` (`size` bytes, `nsn` snapshots) a state the operation may leave? */
static const char *allowed(const struct fcase *fc, const struct views *w, const uint8_t *v,
                           uint64_t size, int nsn)
{
    uint64_t cs = fc->cfg.cluster;

    switch (fc->op) {
    case OP_SNAP_CREATE:
    case OP_SNAP_DELETE:
    case OP_SNAP_DELETE_LAST:
        if (size != w->asize || memcmp(v, w->a, size))
            return "the active state changed";
        if (nsn != w->asnaps && nsn != w->bsnaps)
            return "a snapshot count neither old nor new";
        return NULL;
    case OP_SNAP_APPLY:
        if (!(size == w->asize && !memcmp(v, w->a, size)) &&
            !(size == w->bsize && !memcmp(v, w->b, size)))
            return "neither the old state nor the snapshot";
        return nsn == w->asnaps ? NULL : "the snapshot count changed";
    case OP_GROW:
    case OP_SHRINK: {
        if (size != w->asize && size != w->bsize)
            return "a size neither old nor new";
        uint64_t keep = FQ_MIN(w->asize, w->bsize);
        if (memcmp(v, w->a, keep))
            return "data inside both sizes changed";
        for (uint64_t i = keep; i < size; i++)
            if (v[i] && (size == w->asize ? v[i] != w->a[i] : true))
                return "the range past the old end is not zeros";
        return NULL;
    }
    case OP_COMPRESS:
    case OP_EMPTY:
        if (size != w->asize)
            return "the size changed";
        for (uint64_t off = 0; off < size; off += cs) {
            uint64_t n = FQ_MIN(cs, size - off);
            if (memcmp(v + off, w->a + off, n) && memcmp(v + off, w->b + off, n))
                return "a cluster neither old nor new";
        }
        return NULL;
    case OP_DOWNGRADE:
    case OP_REFBITS:
        return size == w->asize && !memcmp(v, w->a, size) ? NULL : "the data changed";
    }
    return "?";
}

/* `qemu-img check` must find no errors in the state (leaks allowed: exit
 * 0 or 3); run for the refcount width change, whose states are few. */
static void qemu_check(const struct fcase *fc, const uint8_t *data, size_t len, const char *what)
{
    const char *path = tl_path("state.qcow2");

    if (!have_qemu || fc->op != OP_REFBITS || wl_save(path, data, len) < 0)
        return;
    nqemu++;
    int rc = tl_sh("qemu-img check -f qcow2 '%s' >/dev/null 2>&1", path);
    if (rc != 0 && rc != 3) {
        FAIL("%s: %s: qemu-img check exit %d", fc->name, what, rc);
        tl_sh("qemu-img check -f qcow2 '%s' 2>&1 | head -5 >&2", path);
    }
}

/* Findings of a check: how many, and how many are COPIED flag mismatches. */
struct findings {
    int n, copied;
};

static void msg_count(void *opaque, const char *line)
{
    struct findings *f = opaque;

    if (getenv("TL_VERBOSE"))
        fprintf(stderr, "  check: %s\n", line);
    if (!strncmp(line, "Leaked", 6))
        return;
    f->n++;
    f->copied += strstr(line, "OFLAG_COPIED") != NULL;
}

static void check_state(struct fq_ctx *ctx, const struct fcase *fc, const struct views *w,
                        const uint8_t *data, size_t len, const char *what, size_t p)
{
    struct fq_image *img;
    struct fq_check_result res;
    char err[FQ_ERR_MAX] = "";
    uint8_t *v = NULL;
    uint64_t size;
    int nsn = 0, r;
    const char *why;

    nstates++;
    char where[96];
    snprintf(where, sizeof(where), "%s state after %zu records", what, p);
    qemu_check(fc, data, len, where);
    if ((r = wl_open_mem(ctx, data, len, 1, &img, err)) < 0) {
        FAIL("%s: %s state after %zu records: open: %s", fc->name, what, p, err);
        return;
    }
    /* Taking or dropping a snapshot changes refcounts and the COPIED
     * flags of the active tables, on disk one after the other: a crash
     * between leaves flags that disagree with the stored refcounts, which
     * the check reports (as qemu-img does) and "repair all" fixes. Either
     * way round it is safe: a cleared flag only costs a copy, and a set
     * one is only ever left on a cluster that nothing else references
     * yet (the snapshot is not published). */
    struct findings f = { 0, 0 };
    bool snap = fc->op == OP_SNAP_CREATE || fc->op == OP_SNAP_APPLY || fc->op == OP_SNAP_DELETE ||
                fc->op == OP_SNAP_DELETE_LAST;
    r = fq_check(img, 0, &res, msg_count, &f);
    if (r == 0 && snap && res.corruptions && f.n == f.copied && !res.check_errors)
        ncopied++;
    else if (r < 0 || res.corruptions || res.check_errors)
        FAIL("%s: %s state after %zu records: check %d, %lld corruptions, %lld errors", fc->name,
             what, p, r, (long long)res.corruptions, (long long)res.check_errors);
    if ((r = read_view(img, &v, &size, &nsn)) < 0)
        FAIL("%s: %s state after %zu records: read: %s", fc->name, what, p, strerror(-r));
    else if ((why = allowed(fc, w, v, size, nsn)))
        FAIL("%s: %s state after %zu records: %s", fc->name, what, p, why);
    struct fq_info info;
    if (fc->op == OP_REFBITS && fq_get_info(img, &info) == 0 &&
        info.refcount_bits != fc->cfg.refbits && (uint64_t)info.refcount_bits != fc->arg)
        FAIL("%s: %s state after %zu records: refcount width %d, neither old nor new", fc->name,
             what, p, info.refcount_bits);
    fq_close(img);
    free(v);
    /* the state is usable: a write, a flush, leaks repaired, clean */
    if ((r = wl_open_mem(ctx, data, len, 0, &img, err)) < 0) {
        FAIL("%s: %s state after %zu records: read-write open: %s", fc->name, what, p, err);
        return;
    }
    uint8_t sec[512];
    memset(sec, 0x5a, sizeof(sec));
    r = fq_pwrite(img, sec, sizeof(sec), 0);
    if (r == 0)
        r = fq_flush(img);
    if (r == 0 && fc->op == OP_SNAP_CREATE && nsn == w->bsnaps) {
        /* the new snapshot is complete: it reads as the state it took */
        uint8_t *sv;
        uint64_t ss;
        int n2;
        if ((r = fq_snapshot_apply(img, "new", err)) == 0 && (r = read_view(img, &sv, &ss, &n2)) == 0) {
            if (ss != w->asize || memcmp(sv, w->a, ss))
                FAIL("%s: %s state after %zu records: the new snapshot reads wrong", fc->name, what, p);
            free(sv);
        }
    }
    if (r == 0)
        r = fq_check(img, FQ_CHECK_REPAIR_ALL, &res, NULL, NULL);
    if (r == 0)
        r = fq_check(img, 0, &res, NULL, NULL);
    if (r < 0 || res.corruptions || res.leaks || res.check_errors)
        FAIL("%s: %s state after %zu records: after a write and repair: %d, %lld corruptions, "
             "%lld leaks %s", fc->name, what, p, r, (long long)res.corruptions, (long long)res.leaks, err);
    fq_close(img);
}

/* Failed I/O during the operation: the nth read, write or flush of it
 * fails, once (then the image must stay usable: it reads as before and
 * takes a write and a flush) or from then on (the device is gone: the
 * image must refuse or fail what follows). Either way, once closed, the
 * storage must open and check without corruptions (leaks allowed), read
 * as before (plus that write) and have the old or the new refcount width.
 * For OP_REFBITS: its error paths (the old header written back, what was
 * written past the end cut off, further writes refused). */
static void run_faults(struct fq_ctx *ctx, const struct fcase *fc, const uint8_t *base, size_t blen,
                       const struct views *w)
{
    static const enum fq_fault_kind kinds[] = { FQ_FAULT_READ, FQ_FAULT_WRITE, FQ_FAULT_FLUSH };
    static const char *const kname[] = { "read", "write", "flush" };

    for (size_t k = 0; k < 2 * FQ_ARRAY_SIZE(kinds); k++) {
        bool sticky = k >= FQ_ARRAY_SIZE(kinds);
        for (uint64_t nth = 1;; nth++) {
            struct fq_bdev *mem, *flt;
            struct fq_image *img;
            struct fq_fault_spec sp = { kinds[k % 3], 0, nth, -EIO, sticky };
            struct fq_fault_counts cnt;
            struct fq_check_result res;
            struct fq_info info;
            char err[FQ_ERR_MAX] = "", tag[96];
            uint8_t *v = NULL, *data = NULL, sec[512];
            uint64_t size;
            int nsn, r;

            snprintf(tag, sizeof(tag), "%s: %s fault %llu%s", fc->name, kname[k % 3],
                     (unsigned long long)nth, sticky ? " (sticky)" : "");
            if (fq_mem_open(ctx, base, blen, 1u << 30, &mem) < 0 ||
                fq_fault_open(mem, FQ_TESTDEV_BORROW, &flt) < 0 ||
                wl_open(ctx, flt, 0, &img, err) < 0) {
                FAIL("%s: open: %s", tag, err);
                return;
            }
            fq_fault_arm(flt, &sp);
            r = run_op(img, fc, err);
            fq_fault_counts(flt, &cnt);
            bool hit = cnt.injected > 0;
            if (!sticky) {
                sp.kind = FQ_FAULT_NONE;
                fq_fault_arm(flt, &sp);
            }
            if (hit && getenv("TL_VERBOSE"))
                fprintf(stderr, "%s: %d %s\n", tag, r, err);
            if (hit && read_view(img, &v, &size, &nsn) == 0 &&
                (size != w->asize || memcmp(v, w->a, size)))
                FAIL("%s: the image reads differently", tag);
            free(v);
            v = NULL;
            memcpy(sec, w->a, sizeof(sec));
            if (hit && !sticky) {
                memset(sec, 0x5a, sizeof(sec));
                if ((r = fq_pwrite(img, sec, sizeof(sec), 0)) < 0 || (r = fq_flush(img)) < 0)
                    FAIL("%s: no write after the failure: %s", tag, strerror(-r));
            }
            if ((r = fq_close(img)) < 0 && hit && !sticky)
                FAIL("%s: close: %s", tag, strerror(-r));
            size_t len = (size_t)mem->size;
            if (hit && (data = malloc(len)) && fq_bdev_pread_sync(mem, data, len, 0) == 0) {
                nstates++;
                qemu_check(fc, data, len, tag);
                if ((r = wl_open_mem(ctx, data, len, 1, &img, err)) < 0) {
                    FAIL("%s: reopen: %s", tag, err);
                } else {
                    r = fq_check(img, 0, &res, NULL, NULL);
                    if (r < 0 || res.corruptions || res.check_errors)
                        FAIL("%s: check %d, %lld corruptions", tag, r, (long long)res.corruptions);
                    if (fq_get_info(img, &info) == 0 && info.refcount_bits != fc->cfg.refbits &&
                        (uint64_t)info.refcount_bits != fc->arg)
                        FAIL("%s: refcount width %d", tag, info.refcount_bits);
                    if (read_view(img, &v, &size, &nsn) == 0 &&
                        (size != w->asize || memcmp(v, sec, sizeof(sec)) ||
                         memcmp(v + sizeof(sec), w->a + sizeof(sec), size - sizeof(sec))))
                        FAIL("%s: reopened, it reads differently", tag);
                    free(v);
                    fq_close(img);
                }
            }
            free(data);
            fq_bdev_close(mem);
            if (!hit)
                break;   /* past the operation's last one */
        }
    }
}

static void run_case(struct fq_ctx *ctx, const struct fcase *fc, uint64_t seed)
{
    uint8_t *base = NULL, *data;
    size_t blen = 0, len;
    struct views w = { 0 };
    struct fq_bdev *mem, *rec;
    struct fq_image *img;
    char err[FQ_ERR_MAX] = "";
    int r;

    if (setup(ctx, fc, &base, &blen) < 0) {
        FAIL("%s: setup", fc->name);
        return;
    }
    struct fq_reclog *log = fq_reclog_new(base, blen);
    if (!log || fq_mem_open(ctx, base, blen, 1u << 30, &mem) < 0 ||
        fq_record_open(mem, log, 0, &rec) < 0 || wl_open(ctx, rec, 0, &img, err) < 0) {
        FAIL("%s: open: %s", fc->name, err);
        goto out;
    }
    fq_reclog_enable(log, false);
    r = read_view(img, &w.a, &w.asize, &w.asnaps);
    fq_reclog_enable(log, true);
    if (r == 0 && (r = run_op(img, fc, err)) < 0)
        FAIL("%s: the operation failed: %s %s", fc->name, strerror(-r), err);
    fq_reclog_enable(log, false);
    if (r == 0)
        r = read_view(img, &w.b, &w.bsize, &w.bsnaps);
    fq_reclog_enable(log, true);
    int cr = fq_close(img);
    if (r < 0 || cr < 0) {
        FAIL("%s: %s", fc->name, strerror(-(r < 0 ? r : cr)));
        goto out;
    }
    size_t n = fq_reclog_count(log);
    if (getenv("TL_VERBOSE"))
        fprintf(stderr, "%s: %zu records\n", fc->name, n);
    for (size_t p = 0; p <= n; p++) {
        if (fq_reclog_replay(log, p, &data, &len) == 0) {
            check_state(ctx, fc, &w, data, len, "in-order", p);
            free(data);
        }
        if (p == 0 || p == fq_reclog_epoch_start(log, p))
            continue;   /* nothing unflushed to reorder */
        for (uint64_t k = 0; k < 2; k++)
            if (fq_reclog_replay_crash(log, p, seed + p * 7 + k, 50, 30, &data, &len) == 0) {
                check_state(ctx, fc, &w, data, len, "reordered", p);
                free(data);
            }
    }
    if (fc->op == OP_REFBITS)
        run_faults(ctx, fc, base, blen, &w);
out:
    fq_reclog_free(log);
    free(base);
    free(w.a);
    free(w.b);
}

int main(int argc, char **argv)
{
    uint64_t seed = tl_seed_arg(argc, argv, 1);
    const char *only = argc > 2 ? argv[2] : NULL;
    struct fq_ctx *ctx;

    tl_name = "test-feat-crash";
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
    fprintf(stderr, "test-feat-crash: seed %llu, %llu states (%llu with COPIED flags to repair, "
            "%llu also checked by qemu-img), %d failures\n", (unsigned long long)seed,
            (unsigned long long)nstates, (unsigned long long)ncopied, (unsigned long long)nqemu,
            failures);
    return failures ? 1 : 0;
}
