/* test-feat-crash.c: power loss during every command that writes
 * metadata: snapshot create / apply / delete, resize (grow across L1
 * clusters, shrink), compressed writes, amend (downgrade, upgrade, lazy
 * refcounts on and off, refcount width up and down), emptying and the
 * copy step of commit, rebase (safe and unsafe), what convert -n writes,
 * and check's repairs.
 *
 * Each case builds an image in memory (data spread over the whole disk so
 * that the operation spans many L2 tables and refcount blocks, compressed
 * and zero clusters, snapshots with writes between them), runs the
 * operation with a metadata cache of a few entries (so tables and blocks
 * are evicted in the middle of it) over a recording device, and judges
 * every crash state of the log with the harness of crashrun.h: every
 * prefix and reorderings of the unflushed writes torn at 512-byte
 * sectors; the library's check must find no corruption (leaks allowed),
 * the active state and each snapshot must read as before or as after,
 * header fields must be old or new, the state must take writes and repair
 * clean, and `qemu-img check` must find no errors on a sample.
 *
 * The refcount width change also runs with each of its reads, writes and
 * flushes failing in turn (run_faults).
 *
 * Sanitizer builds run a third of the cases (which third by the seed) on a
 * sample of each log's prefixes.
 *
 * Usage: test-feat-crash [SEED [CASE-SUBSTRING]]; FQ_CRASH_LONG=1 takes
 * more reorderings per prefix, checks more states with qemu-img and reads
 * the snapshots of every state (scripts/long-crash-replay.sh).
 * SPDX-License-Identifier: MIT
 */
#include "crashrun.h"

#define KiB 1024u
#define MiB (1024u * 1024u)

enum op { OP_SNAP_CREATE, OP_SNAP_APPLY, OP_SNAP_DELETE, OP_GROW, OP_SHRINK, OP_COMPRESS,
          OP_DOWNGRADE, OP_UPGRADE, OP_LAZY, OP_REFBITS, OP_EMPTY, OP_COMMIT, OP_REBASE,
          OP_REBASE_UNSAFE, OP_COPY, OP_CHECK, OP_BM_WRITE, OP_BM_CLEAR, OP_BM_REMOVE };

/* The image a case starts from. */
struct setup {
    uint32_t cluster;
    int refbits, version, extl2;
    uint64_t size;
    unsigned stride;          /* data in one cluster of every `stride` */
    int snaps;                /* 0, 1 ("s") or 2 ("s", "t") snapshots */
    bool compressed;          /* compressed clusters too */
    bool backing;             /* a backing file name in the header */
    bool qemu;                /* made by qemu-img and qemu-io instead (a
                                 header reaching past its first sector) */
};

struct fcase {
    const char *name;
    struct setup su;
    enum op op;
    uint64_t arg;             /* size, width, lazy bit, repair flags */
    const char *which;        /* snapshot to apply or delete */
};

static const struct fcase cases[] = {
    /* 512-byte clusters: a 2 MiB disk is 64 L2 tables, its data 16 and
     * more refcount blocks; the cache holds 16 tables and 8 blocks */
    { "snap-create-c512", { 512, 16, 3, 0, 2 * MiB, 2, 2, true, false, false }, OP_SNAP_CREATE, 0, NULL },
    { "snap-create-first-c512-rb64", { 512, 64, 3, 0, 2 * MiB, 3, 0, true, false, false }, OP_SNAP_CREATE, 0, NULL },
    { "snap-create-c32k-extl2", { 32768, 8, 3, 1, 4 * MiB, 2, 1, true, false, false }, OP_SNAP_CREATE, 0, NULL },
    { "snap-apply-c512", { 512, 16, 3, 0, 2 * MiB, 2, 2, true, false, false }, OP_SNAP_APPLY, 0, "s" },
    { "snap-apply-c4k-v2", { 4096, 16, 2, 0, 8 * MiB, 5, 2, false, false, false }, OP_SNAP_APPLY, 0, "t" },
    { "snap-delete-c512", { 512, 16, 3, 0, 2 * MiB, 2, 2, true, false, false }, OP_SNAP_DELETE, 0, "s" },
    { "snap-delete-newest-c512-rb8", { 512, 8, 3, 0, 2 * MiB, 2, 2, false, false, false }, OP_SNAP_DELETE, 0, "t" },
    { "snap-delete-last-c1k", { 1024, 16, 3, 0, 4 * MiB, 2, 1, true, false, false }, OP_SNAP_DELETE, 0, "s" },
    { "grow-l1-c512", { 512, 16, 3, 0, 1 * MiB, 2, 1, true, false, false }, OP_GROW, 5 * MiB, NULL },
    { "grow-c64k", { 65536, 16, 3, 0, 2 * MiB, 1, 0, true, false, false }, OP_GROW, 3 * MiB + 512, NULL },
    { "shrink-c512", { 512, 16, 3, 0, 2 * MiB, 2, 1, true, false, false }, OP_SHRINK, 700 * KiB, NULL },
    { "compress-c4k-rb1", { 4096, 1, 3, 0, 1 * MiB, 1, 0, false, false, false }, OP_COMPRESS, 0, NULL },
    { "compress-c64k-v2", { 65536, 16, 2, 0, 2 * MiB, 1, 0, false, false, false }, OP_COMPRESS, 0, NULL },
    { "downgrade-c1k", { 1024, 16, 3, 0, 2 * MiB, 2, 1, true, true, false }, OP_DOWNGRADE, 0, NULL },
    { "upgrade-c4k", { 4096, 16, 2, 0, 4 * MiB, 3, 1, true, true, false }, OP_UPGRADE, 0, NULL },
    { "lazy-on-c512", { 512, 16, 3, 0, 1 * MiB, 4, 0, false, false, false }, OP_LAZY, 1, NULL },
    { "refbits-c512-16to64", { 512, 16, 3, 0, 2 * MiB, 2, 1, true, false, false }, OP_REFBITS, 64, NULL },
    { "refbits-c4k-rb1-to8", { 4096, 1, 3, 0, 1 * MiB, 1, 0, true, false, false }, OP_REFBITS, 8, NULL },
    { "refbits-c512-16to2", { 512, 16, 3, 0, 1 * MiB, 2, 0, false, false, false }, OP_REFBITS, 2, NULL },
    { "refbits-c64k-64to2", { 65536, 64, 3, 0, 2 * MiB, 1, 0, true, false, false }, OP_REFBITS, 2, NULL },
    { "empty-c512", { 512, 16, 3, 0, 2 * MiB, 2, 1, true, false, false }, OP_EMPTY, 0, NULL },
    /* commit and copy write data: smaller, or the log is long */
    { "commit-c4k", { 4096, 16, 3, 0, 1 * MiB, 3, 1, true, false, false }, OP_COMMIT, 0, NULL },
    { "rebase-c1k", { 1024, 16, 3, 0, 512 * KiB, 3, 1, true, true, false }, OP_REBASE, 0, NULL },
    { "rebase-unsafe-c4k", { 4096, 16, 3, 0, 1 * MiB, 2, 0, false, true, false }, OP_REBASE_UNSAFE, 0, NULL },
    { "rebase-unsafe-c4k-v2", { 4096, 16, 2, 0, 1 * MiB, 2, 0, false, true, false }, OP_REBASE_UNSAFE, 0, NULL },
    { "copy-c4k", { 4096, 16, 3, 0, 1 * MiB, 2, 1, true, false, false }, OP_COPY, 0, NULL },
    /* leaks a repair lowers without touching a COPIED flag */
    { "check-leaks-c512", { 512, 16, 3, 0, 2 * MiB, 2, 1, true, false, false }, OP_CHECK, FQ_CHECK_REPAIR_LEAKS, NULL },
    /* refcounts one too high under cleared COPIED flags (what other
     * tools' interrupted snapshots leave): a repair sets the flags as it
     * lowers the refcounts, and may leave mismatches if interrupted */
    { "check-copied-c4k", { 4096, 16, 3, 0, 4 * MiB, 2, 1, true, false, false }, OP_CHECK, FQ_CHECK_REPAIR_ALL, "copied" },
    /* images qemu made: their header (backing format, feature table,
     * backing name) reaches past the first sector, so a rewrite that
     * changes the name or the extensions is ordered (header.c); qemu
     * writes its feature table with clusters of 16 KiB and more */
    { "qemu-rebase-unsafe", { 65536, 16, 3, 0, 8 * MiB, 0, 1, false, true, true }, OP_REBASE_UNSAFE, 0, NULL },
    { "qemu-rebase-unsafe-none", { 65536, 16, 3, 0, 8 * MiB, 0, 0, false, true, true }, OP_REBASE_UNSAFE, 0, "" },
    { "qemu-rebase-unsafe-add", { 65536, 16, 3, 0, 8 * MiB, 0, 0, false, false, true }, OP_REBASE_UNSAFE, 0, NULL },
    { "qemu-snap-create", { 65536, 16, 3, 0, 8 * MiB, 0, 1, false, true, true }, OP_SNAP_CREATE, 0, NULL },
    { "qemu-snap-delete", { 65536, 16, 3, 0, 8 * MiB, 0, 1, false, true, true }, OP_SNAP_DELETE, 0, "s" },
    { "qemu-downgrade", { 65536, 16, 3, 0, 8 * MiB, 0, 1, false, true, true }, OP_DOWNGRADE, 0, NULL },
    { "qemu-upgrade-v2", { 65536, 16, 2, 0, 8 * MiB, 0, 1, false, true, true }, OP_UPGRADE, 0, NULL },
};

/* Long runs only: thousands of L2 tables (512-byte clusters: 2048 tables
 * map 64 MiB) and hundreds of refcount blocks. */
/* persistent bitmaps stored (writes tracked, then stored; cleared; removed) */
static const struct fcase bitmap_cases[] = {
    { "bitmap-write-c1k", { 1024, 16, 3, 0, 2 * MiB, 2, 1, true, false, false }, OP_BM_WRITE, 0, NULL },
    { "bitmap-write-c32k-extl2", { 32768, 16, 3, 1, 4 * MiB, 2, 0, false, false, false }, OP_BM_WRITE, 0, NULL },
    { "bitmap-clear-c4k", { 4096, 16, 3, 0, 4 * MiB, 2, 0, false, false, false }, OP_BM_CLEAR, 0, "b0" },
    { "bitmap-remove-c4k", { 4096, 16, 3, 0, 2 * MiB, 2, 0, false, false, false }, OP_BM_REMOVE, 0, "b0" },
};

static const struct fcase big_cases[] = {
    { "big-snap-create-c512", { 512, 16, 3, 0, 64 * MiB, 16, 1, true, false, false }, OP_SNAP_CREATE, 0, NULL },
    { "big-snap-delete-c512", { 512, 16, 3, 0, 64 * MiB, 16, 2, true, false, false }, OP_SNAP_DELETE, 0, "s" },
    { "big-snap-apply-c512", { 512, 16, 3, 0, 64 * MiB, 16, 2, true, false, false }, OP_SNAP_APPLY, 0, "s" },
    { "big-shrink-c512", { 512, 16, 3, 0, 64 * MiB, 16, 1, true, false, false }, OP_SHRINK, 20 * MiB, NULL },
    { "big-refbits-c512-16to4", { 512, 16, 3, 0, 64 * MiB, 16, 1, false, false, false }, OP_REFBITS, 4, NULL },
};

static struct cr_stats st;
static int have_qemu;

/* Compressible content naming its generation and offset: runs of equal
 * bytes, one per 512-byte sector. */
static void fill(uint8_t *b, size_t len, uint64_t g, uint64_t off)
{
    for (size_t i = 0; i < len; i += 512) {
        uint8_t v = (uint8_t)(((off + i) / 512 * 31 + g * 7) % 251 + 1);
        memset(b + i, v, FQ_MIN((size_t)512, len - i));
    }
}

/* Write generation g into one cluster of every `stride` from `from` to
 * `to`, the first `skip` clusters of each stride skipped. */
static int spread(struct fq_image *img, const struct setup *su, uint64_t from, uint64_t to,
                  unsigned stride, unsigned skip, uint64_t g, bool compressed, uint8_t *buf)
{
    uint64_t cs = su->cluster;
    int r = 0;

    for (uint64_t c = from / cs + skip; r == 0 && (c + 1) * cs <= to; c += stride) {
        fill(buf, cs, g, c * cs);
        r = compressed ? fq_pwrite_compressed(img, buf, c * cs) : fq_pwrite(img, buf, cs, c * cs);
    }
    return r;
}

/* An image made by qemu-img and qemu-io; returns its bytes. */
static int setup_qemu(const struct fcase *fc, uint8_t **data, size_t *len)
{
    const struct setup *su = &fc->su;
    const char *path = tl_path("qemu-made.qcow2");
    char cmds[4096] = "";
    size_t pos = 0;
    int r;

    for (uint64_t k = 0; k < 24; k++)
        pos += (size_t)snprintf(cmds + pos, sizeof(cmds) - pos, " -c 'write -P %llu %llu %u'",
                                (unsigned long long)(k + 1),
                                (unsigned long long)(k * 37 % (su->size / su->cluster) * su->cluster),
                                su->cluster);
    r = tl_sh("cd '%s' && rm -f qemu-made.qcow2 && qemu-img create -q -f qcow2 -o "
              "cluster_size=%u,compat=%s%s qemu-made.qcow2 %llu && qemu-io -f qcow2%s qemu-made.qcow2 "
              ">/dev/null", tl_dir, su->cluster, su->version >= 3 ? "1.1" : "0.10",
              su->backing ? " -b the-old-backing-file-with-a-long-name.raw -F raw" : "",
              (unsigned long long)su->size, cmds);
    if (r == 0 && su->snaps)
        r = tl_sh("cd '%s' && qemu-img snapshot -c s qemu-made.qcow2 && qemu-io -f qcow2 -c "
                  "'write -P 99 0 %u' -c 'write -P 98 %llu %u' qemu-made.qcow2 >/dev/null", tl_dir,
                  su->cluster, (unsigned long long)(su->size / 2), su->cluster);
    if (r != 0)
        return -EIO;
    FILE *f = fopen(path, "rb");
    if (!f)
        return -errno;
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    rewind(f);
    *data = malloc(*len);
    r = *data && fread(*data, 1, *len, f) == *len ? 0 : -EIO;
    fclose(f);
    return r;
}

/* Build the case's image; returns its bytes. */
static int setup(struct fq_ctx *ctx, const struct fcase *fc, uint8_t **data, size_t *len)
{
    const struct setup *su = &fc->su;
    struct wl_cfg c = { "", su->cluster, su->refbits, su->version, su->extl2, su->size, 0, 0, 0 };
    uint64_t cs = su->cluster, size = su->size;
    struct fq_image *img;
    char err[FQ_ERR_MAX] = "";
    uint8_t *buf, *img0 = NULL;
    size_t len0;
    int r;

    if (su->qemu)
        return setup_qemu(fc, data, len);
    if (!(buf = malloc(cs)) || (r = wl_create(ctx, &c, &img0, &len0)) < 0 ||
        (r = cr_open(ctx, img0, len0, 0, 0, &img, err)) < 0) {
        fprintf(stderr, "setup %s: %s\n", fc->name, err);
        free(buf);
        free(img0);
        return -EIO;
    }
    /* narrower refcounts could not hold what compressed clusters share */
    bool comp = su->compressed && !(fc->op == OP_REFBITS && fc->arg < (uint64_t)su->refbits);
    r = spread(img, su, 0, size, su->stride, 0, 1, false, buf);
    if (r == 0 && comp)
        r = spread(img, su, size / 2, size, 4 * su->stride, 1, 2, true, buf);
    if (r == 0 && su->version >= 3) {
        r = fq_write_zeroes(img, 0, cs, 0);           /* zero, cluster kept */
        if (r == 0)
            r = fq_write_zeroes(img, 2 * cs * su->stride, cs, FQ_ZERO_MAY_UNMAP);
    }
    if (r == 0 && su->backing) {
        struct fq_amend_opts ao;
        fq_amend_opts_init(&ao);
        ao.backing_file = "the-old-backing-file-with-a-long-name.raw";
        ao.backing_format = "raw";
        r = fq_amend(img, &ao, err);
    }
    if (r == 0 && su->snaps >= 1) {
        r = fq_snapshot_create(img, "s", err);
        if (r == 0)
            r = spread(img, su, 0, size / 2, 2, 0, 3, false, buf);
    }
    if (r == 0 && su->snaps >= 2) {
        if (su->version >= 3)
            r = fq_write_zeroes(img, 3 * cs, 2 * cs, FQ_ZERO_MAY_UNMAP);
        if (r == 0)
            r = fq_snapshot_create(img, "t", err);
        if (r == 0 && comp)
            r = spread(img, su, 0, cs, 1, 0, 4, true, buf);
        if (r == 0)
            r = spread(img, su, size / 4, size / 2, 3, 1, 5, false, buf);
    }
    /* the bitmap cases: "b0" (enabled, 512-byte granularity) and "d"
     * (disabled), both with bits */
    if (r == 0 && fc->op >= OP_BM_WRITE) {
        r = fq_bitmap_change(img, "b0", FQ_BITMAP_ADD, 512, err);
        if (r == 0)
            r = fq_bitmap_change(img, "d", FQ_BITMAP_ADD, 4096, err);
        if (r == 0)
            r = spread(img, su, size / 3, size, 5, 1, 6, false, buf);
        if (r == 0)
            r = fq_bitmap_change(img, "d", FQ_BITMAP_DISABLE, 0, err);
    }
    struct fq_bdev *q = fq_image_bdev(img), *mem = q->child;
    q->child = NULL;   /* keep the memory device: its bytes are the image */
    int cr = fq_close(img);
    if (r == 0)
        r = cr;
    if (r == 0)
        r = cr_bytes(mem, data, len);
    fq_bdev_close(mem);
    if (r < 0)
        fprintf(stderr, "setup %s: %s %s\n", fc->name, strerror(-r), err);
    free(buf);
    free(img0);
    return r;
}

/* ---- what each operation may leave ---- */

/* Units of `cs` bytes either old or new. */
static const char *judge_units(const struct cr_view *a, const struct cr_view *b,
                               const struct cr_view *v, uint64_t cs)
{
    if (v->size != a->size)
        return "the size changed";
    for (uint64_t off = 0; off < v->size; off += cs) {
        size_t n = (size_t)FQ_MIN(cs, v->size - off);
        if (memcmp(v->data + off, a->data + off, n) && memcmp(v->data + off, b->data + off, n))
            return cs == 512 ? "a sector neither old nor new" : "a cluster neither old nor new";
    }
    return NULL;
}

/* Clusters either old or new (a cluster is replaced by an L2 entry). */
static const char *judge_clusters(const struct cr_view *a, const struct cr_view *b,
                                  const struct cr_view *v, const void *arg)
{
    return judge_units(a, b, v, ((const struct fcase *)arg)->su.cluster);
}

/* Sectors either old or new (data written in place may be torn). */
static const char *judge_sectors(const struct cr_view *a, const struct cr_view *b,
                                 const struct cr_view *v, const void *arg)
{
    return judge_units(a, b, v, 512);
}

/* Resize: the old or the new size; what both hold unchanged; zeros past
 * the old end. */
static const char *judge_resize(const struct cr_view *a, const struct cr_view *b,
                                const struct cr_view *v, const void *arg)
{
    if (v->size != a->size && v->size != b->size)
        return "a size neither old nor new";
    uint64_t keep = FQ_MIN(a->size, b->size);
    if (memcmp(v->data, a->data, (size_t)keep))
        return "data inside both sizes changed";
    for (uint64_t i = keep; i < v->size; i++)
        if (v->data[i] && (v->size != a->size || v->data[i] != a->data[i]))
            return "the range past the old end is not zeros";
    return NULL;
}

/* ---- the operations ---- */

/* The source of commit and copy: another image's content. */
static uint8_t *src_image;
static size_t src_len;

static int op_commit(struct fq_image *img, struct fq_ctx *ctx, const struct fcase *fc, char *err)
{
    struct fq_image *src;
    struct fq_commit_opts co;
    uint64_t done = 0;
    int r = cr_open(ctx, src_image, src_len, 1, 0, &src, err);

    memset(&co, 0, sizeof(co));
    if (r == 0) {
        r = fq_commit_copy(src, img, &co, &done, fq_size(src));
        fq_close(src);
    }
    return r;
}

/* What convert -n writes: the source's data, zeros where it reads zeros. */
static int op_copy(struct fq_image *img, struct fq_ctx *ctx, char *err)
{
    struct fq_image *src;
    uint64_t chunk = 64 * KiB;
    uint8_t *buf = malloc(chunk);
    int r = buf ? cr_open(ctx, src_image, src_len, 1, 0, &src, err) : -ENOMEM;

    for (uint64_t off = 0; r == 0 && off < fq_size(img); off += chunk) {
        size_t n = (size_t)FQ_MIN(chunk, fq_size(img) - off);
        bool zero = true;
        if ((r = fq_pread(src, buf, n, off)) < 0)
            break;
        for (size_t i = 0; i < n && zero; i++)
            zero = !buf[i];
        r = zero ? fq_write_zeroes(img, off, n, 0) : fq_pwrite(img, buf, n, off);
    }
    if (buf)
        fq_close(src);
    free(buf);
    return r;
}

static int run_op(struct fq_image *img, const void *arg, char *err)
{
    const struct fcase *fc = arg;
    struct fq_ctx *ctx = fq_image_ctx(img);
    uint64_t cs = fc->su.cluster, size = fq_size(img);
    struct fq_amend_opts ao;
    struct fq_rebase_opts ro;
    struct fq_check_result res;
    int r = 0;

    fq_amend_opts_init(&ao);
    memset(&ro, 0, sizeof(ro));
    switch (fc->op) {
    case OP_SNAP_CREATE:
        return fq_snapshot_create(img, "new", err);
    case OP_SNAP_APPLY:
        return fq_snapshot_apply(img, fc->which, err);
    case OP_SNAP_DELETE:
        return fq_snapshot_delete(img, fc->which, err);
    case OP_GROW:
        return fq_resize(img, fc->arg, 0, err);
    case OP_SHRINK:
        return fq_resize(img, fc->arg, FQ_RESIZE_SHRINK, err);
    case OP_COMPRESS: {
        uint8_t *buf = malloc(cs);
        if (!buf)
            return -ENOMEM;
        for (uint64_t off = 0; r == 0 && off < size; off += size / 5 / cs * cs + cs) {
            fill(buf, cs, 9, off);
            r = fq_pwrite_compressed(img, buf, off);
            if (r == 0 && off == 0)
                r = fq_flush(img);
        }
        free(buf);
        return r;
    }
    case OP_DOWNGRADE:
        ao.version = 2;
        return fq_amend(img, &ao, err);
    case OP_UPGRADE:
        ao.version = 3;
        return fq_amend(img, &ao, err);
    case OP_LAZY:
        ao.lazy_refcounts = (int)fc->arg;
        return fq_amend(img, &ao, err);
    case OP_REFBITS:
        ao.refcount_bits = (int)fc->arg;
        return fq_amend(img, &ao, err);
    case OP_EMPTY: {
        /* what commit does to the top once its data is in the base */
        struct fq_bdev *bs = fq_image_bdev(img);
        return bs->ops->make_empty(bs);
    }
    case OP_COMMIT:
        return op_commit(img, ctx, fc, err);
    case OP_REBASE:
        ro.backing_file = tl_path("new-backing.raw");
        ro.backing_format = "raw";
        return fq_rebase(img, &ro, err);
    case OP_REBASE_UNSAFE:
        /* which = "": no backing file from now on */
        ro.backing_file = fc->which ? fc->which :
                          "another-backing-file-whose-name-is-longer-than-the-old-one.qcow2";
        ro.backing_format = fc->which ? NULL : "qcow2";
        ro.unsafe = 1;
        return fq_rebase(img, &ro, err);
    case OP_COPY:
        return op_copy(img, ctx, err);
    case OP_CHECK:
        r = fq_check(img, (unsigned)fc->arg, &res, NULL, NULL);
        if (r == 0 && (res.corruptions || res.leaks))
            r = -EIO;
        return r;
    case OP_BM_WRITE: {
        /* tracked writes, a store, more writes (stored at close) */
        uint8_t *buf = malloc(cs);
        if (!buf)
            return -ENOMEM;
        r = spread(img, &fc->su, 0, size / 2, 7, 0, 8, false, buf);
        if (r == 0)
            r = fq_bitmap_change(img, NULL, FQ_BITMAP_STORE, 0, err);
        if (r == 0)
            r = spread(img, &fc->su, size / 2, size, 9, 2, 9, false, buf);
        free(buf);
        return r;
    }
    case OP_BM_CLEAR:
        return fq_bitmap_change(img, fc->which, FQ_BITMAP_CLEAR, 0, err);
    case OP_BM_REMOVE:
        return fq_bitmap_change(img, fc->which, FQ_BITMAP_REMOVE, 0, err);
    }
    return -EINVAL;
}

static enum cr_active active_of(const struct fcase *fc)
{
    switch (fc->op) {
    case OP_SNAP_APPLY:
        return CR_EITHER;
    case OP_GROW:
    case OP_SHRINK:
    case OP_COMPRESS:
    case OP_EMPTY:
    case OP_COMMIT:
    case OP_REBASE:
    case OP_COPY:
    case OP_BM_WRITE:
        return CR_CUSTOM;
    default:
        return CR_SAME;
    }
}

/* ---- leaks for check to repair ---- */

/* Raw access to a 16-bit refcount image in memory (what check repairs). */
#define L1E_OFFSET_MASK 0x00fffffffffffe00ull
#define L2E_OFFSET_MASK 0x00fffffffffffe00ull
#define L2E_COPIED (1ull << 63)
#define L2E_COMPRESSED (1ull << 62)

static uint64_t be(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

static void put_be(uint8_t *p, int n, uint64_t v)
{
    for (int i = n - 1; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

/* Leak clusters. `copied`: the way interrupted snapshot operations of
 * other tools do: a refcount one too high on data the active state holds
 * alone, its COPIED flag cleared (as after a snapshot that was never
 * written). Otherwise: a refcount one too high on data a snapshot shares
 * (no flag changes with it), and clusters appended to the file with
 * refcount 1 that nothing references. */
static int add_leaks(uint8_t **dp, size_t *lenp, uint32_t cs, bool copied)
{
    uint8_t *d = *dp;
    size_t len = *lenp;
    uint64_t l1 = be(d + 40, 8), rt = be(d + 48, 8), per = cs / 2, done = 0;

    for (uint64_t i = 0; i < be(d + 36, 4) && done < 40; i++) {
        uint64_t l2 = be(d + l1 + i * 8, 8) & L1E_OFFSET_MASK;
        if (!l2 || l2 + cs > len)
            continue;
        for (uint64_t j = 0; j < cs / 8 && done < 40; j += 3) {
            uint8_t *e = d + l2 + j * 8;
            uint64_t v = be(e, 8), c = (v & L2E_OFFSET_MASK) / cs;
            if (!(v & L2E_COPIED) != !copied || (v & L2E_COMPRESSED) || !c)
                continue;
            uint64_t rb = be(d + rt + c / per * 8, 8);
            if (!rb || rb + cs > len)
                continue;
            uint8_t *rc = d + rb + c % per * 2;
            put_be(rc, 2, be(rc, 2) + 1);
            put_be(e, 8, v & ~L2E_COPIED);
            done++;
        }
    }
    if (!copied) {
        /* clusters past the end, where a refcount block covers them */
        uint8_t *nd = realloc(d, len + 4 * (size_t)cs);
        if (!nd)
            return -ENOMEM;
        memset(nd + len, 0, 4 * (size_t)cs);
        *dp = d = nd;
        for (uint64_t c = len / cs; c < len / cs + 4; c++) {
            uint64_t rb = be(d + rt + c / per * 8, 8);
            if (rb && rb + cs <= len) {
                put_be(d + rb + c % per * 2, 2, 1);
                done++;
            }
        }
        *lenp = len + 4 * (size_t)cs;
    }
    return done ? 0 : -ENOENT;
}

/* ---- runs ---- */

/* Failed I/O during a refcount width change: the nth read, write or
 * flush fails, once (the image must stay usable) or from then on. Either
 * way, once closed, the storage must check without corruptions, read as
 * before (plus a write made after a one-off failure) and have the old or
 * the new width. */
static void run_faults(struct fq_ctx *ctx, const struct fcase *fc, const uint8_t *base, size_t blen)
{
    static const enum fq_fault_kind kinds[] = { FQ_FAULT_READ, FQ_FAULT_WRITE, FQ_FAULT_FLUSH };
    static const char *const kname[] = { "read", "write", "flush" };
    struct cr_view a;
    struct fq_image *img;
    char err[FQ_ERR_MAX] = "";

    if (cr_open(ctx, base, blen, 1, 0, &img, err) < 0 || cr_read_view(img, &a) < 0) {
        CR_FAIL(&st, "%s: open: %s", fc->name, err);
        return;
    }
    fq_close(img);
    for (size_t k = 0; k < 2 * FQ_ARRAY_SIZE(kinds); k++) {
        bool sticky = k >= FQ_ARRAY_SIZE(kinds);
        /* sanitizer builds: every third operation */
        for (uint64_t nth = 1; st.failures < 20; nth += WL_SANITIZED ? 5 : 1) {
            struct fq_bdev *mem, *flt, *q;
            struct fq_fault_spec sp = { kinds[k % 3], 0, nth, -EIO, sticky };
            struct fq_fault_counts cnt;
            struct fq_check_result res;
            struct fq_open_opts oo;
            struct cr_view v;
            char tag[96];
            uint8_t *data = NULL, sec[512];
            size_t len;
            int r;

            snprintf(tag, sizeof(tag), "%s: %s fault %llu%s", fc->name, kname[k % 3],
                     (unsigned long long)nth, sticky ? " (sticky)" : "");
            fq_open_opts_init(&oo);
            oo.cache_size = 4096;
            if (fq_mem_open(ctx, base, blen, 1u << 30, &mem) < 0 ||
                fq_fault_open(mem, FQ_TESTDEV_BORROW, &flt) < 0 ||
                fq_bdev_open_format(flt, "qcow2", &oo, &q, err) < 0 ||
                fq_image_from_bdev(ctx, q, FQ_CACHE_WRITEBACK, &img) < 0) {
                CR_FAIL(&st, "%s: open: %s", tag, err);
                break;
            }
            fq_fault_arm(flt, &sp);
            r = run_op(img, fc, err);
            fq_fault_counts(flt, &cnt);
            bool hit = cnt.injected > 0;
            if (!sticky) {
                sp.kind = FQ_FAULT_NONE;
                fq_fault_arm(flt, &sp);
            }
            memcpy(sec, a.data, sizeof(sec));
            if (hit && !sticky) {
                memset(sec, 0x5a, sizeof(sec));
                if ((r = fq_pwrite(img, sec, sizeof(sec), 0)) < 0 || (r = fq_flush(img)) < 0)
                    CR_FAIL(&st, "%s: no write after the failure: %s", tag, strerror(-r));
            }
            if ((r = fq_close(img)) < 0 && hit && !sticky)
                CR_FAIL(&st, "%s: close: %s", tag, strerror(-r));
            if (hit && cr_bytes(mem, &data, &len) == 0) {
                st.states++;
                if ((r = cr_open(ctx, data, len, 1, 0, &img, err)) < 0) {
                    CR_FAIL(&st, "%s: reopen: %s", tag, err);
                } else {
                    r = fq_check(img, 0, &res, NULL, NULL);
                    if (r < 0 || res.corruptions || res.check_errors)
                        CR_FAIL(&st, "%s: check %d, %lld corruptions", tag, r, (long long)res.corruptions);
                    if (cr_read_view(img, &v) == 0) {
                        if (v.info.refcount_bits != fc->su.refbits && (uint64_t)v.info.refcount_bits != fc->arg)
                            CR_FAIL(&st, "%s: refcount width %d", tag, v.info.refcount_bits);
                        if (v.size != a.size || memcmp(v.data, sec, sizeof(sec)) ||
                            memcmp(v.data + sizeof(sec), a.data + sizeof(sec), (size_t)v.size - sizeof(sec)))
                            CR_FAIL(&st, "%s: reopened, it reads differently", tag);
                    }
                    cr_view_free(&v);
                    fq_close(img);
                }
            }
            free(data);
            fq_bdev_close(mem);
            if (!hit)
                break;   /* past the operation's last one */
        }
    }
    cr_view_free(&a);
}

/* The other image commit and copy read, and the new backing file of
 * rebase: the setup's disk with other data. */
static int make_source(struct fq_ctx *ctx, const struct fcase *fc)
{
    struct setup su = fc->su;
    struct fcase src = { "source", su, OP_COPY, 0, NULL };

    src.su.snaps = 0;
    src.su.stride = su.stride + 2;
    src.su.backing = false;
    free(src_image);
    src_image = NULL;
    int r = setup(ctx, &src, &src_image, &src_len);
    if (r == 0 && fc->op == OP_REBASE) {
        /* the new backing file: raw, the source's content */
        struct fq_image *img;
        char err[FQ_ERR_MAX] = "";
        uint8_t *buf = malloc(su.size);
        FILE *f = NULL;
        r = buf ? cr_open(ctx, src_image, src_len, 1, 0, &img, err) : -ENOMEM;
        if (r == 0) {
            r = fq_pread(img, buf, (size_t)su.size, 0);
            fq_close(img);
        }
        if (r == 0 && (!(f = fopen(tl_path("new-backing.raw"), "wb")) ||
                       fwrite(buf, 1, (size_t)su.size, f) != su.size))
            r = -EIO;
        if (f)
            fclose(f);
        free(buf);
    }
    return r;
}

static void run_case(struct fq_ctx *ctx, const struct fcase *fc, uint64_t seed, bool long_mode,
                     bool big)
{
    uint8_t *base = NULL;
    size_t blen = 0;
    struct cr_case c = { fc->name, run_op, fc, active_of(fc), NULL };
    /* long: every state's snapshots and a third of them by qemu-img */
    struct cr_opts o = { 4096, long_mode ? 3 : 1, have_qemu ? (long_mode ? 1000 : 2) : 0,
                         long_mode ? 100000 : 3, 0, fc->op == OP_CHECK && fc->which, seed, NULL };
    if (big) {
        /* one reordering per prefix; snapshots, writes and qemu-img on a
         * sample */
        o.variants = 1;
        o.deep_states = 30;
        o.rw_states = 100;
        o.qemu_states = have_qemu ? 60 : 0;
    }

    /* commit, copy, rebase: each sector as before, or what the source
     * (the new backing file) holds */
    c.judge = fc->op == OP_GROW || fc->op == OP_SHRINK ? judge_resize :
              fc->op == OP_COMPRESS || fc->op == OP_EMPTY ? judge_clusters : judge_sectors;
    if (fc->su.qemu && !have_qemu)
        return;   /* said once in main */
    if (setup(ctx, fc, &base, &blen) < 0) {
        CR_FAIL(&st, "%s: setup", fc->name);
        return;
    }
    if ((fc->op == OP_COMMIT || fc->op == OP_COPY || fc->op == OP_REBASE) &&
        make_source(ctx, fc) < 0) {
        CR_FAIL(&st, "%s: source", fc->name);
        free(base);
        return;
    }
    if (fc->op == OP_CHECK && add_leaks(&base, &blen, fc->su.cluster, fc->which != NULL) < 0) {
        CR_FAIL(&st, "%s: no cluster to leak", fc->name);
        free(base);
        return;
    }
    cr_run(ctx, &c, base, blen, &o, &st);
    if (fc->op == OP_REFBITS)
        run_faults(ctx, fc, base, blen);
    free(base);
}

int main(int argc, char **argv)
{
    uint64_t seed = tl_seed_arg(argc, argv, 1);
    const char *only = argc > 2 ? argv[2] : NULL;
    bool long_mode = getenv("FQ_CRASH_LONG") != NULL;
    struct fq_ctx *ctx;

    tl_name = "test-feat-crash";
    if (fq_ctx_new(FQ_ENGINE_SYNC, &ctx, NULL) < 0)
        return 1;
    have_qemu = tl_have("qemu-img") && tl_have("qemu-io");
    if (!have_qemu)
        fprintf(stderr, "test-feat-crash: qemu-img/qemu-io missing: its checks and the cases of "
                "images it makes are skipped\n");
    tl_mkdir();
    /* the backing files the images name, for qemu-img check to open */
    if (have_qemu)
        tl_sh("cd '%s' && : > the-old-backing-file-with-a-long-name.raw && qemu-img create -q -f "
              "qcow2 another-backing-file-whose-name-is-longer-than-the-old-one.qcow2 16M", tl_dir);
    size_t n0 = FQ_ARRAY_SIZE(cases), nm = FQ_ARRAY_SIZE(bitmap_cases);
    size_t nc = n0 + nm, nb = long_mode ? FQ_ARRAY_SIZE(big_cases) : 0;
    for (size_t i = 0; i < nc + nb; i++) {
        const struct fcase *fc = i < n0 ? &cases[i] : i < nc ? &bitmap_cases[i - n0] :
                                 &big_cases[i - nc];
        if (only && !strstr(fc->name, only))
            continue;
        /* sanitizer builds: a third of the cases, which third by seed */
        if (WL_SANITIZED && !only && !long_mode && i % 3 != seed % 3)
            continue;
        int before = st.failures;
        uint64_t s0 = st.states;
        clock_t t0 = clock();
        run_case(ctx, fc, seed, long_mode, i >= nc);
        fprintf(stderr, "%s: %s (%llu states, %.1f s of CPU)\n", fc->name,
                st.failures > before ? "FAIL" : "ok", (unsigned long long)(st.states - s0),
                (double)(clock() - t0) / CLOCKS_PER_SEC);
        if (st.failures >= 20)
            break;
    }
    fq_ctx_free(ctx);
    free(src_image);
    printf("RESULT feat-crash: seed=%llu records=%llu flushes=%llu states=%llu prefixes=%llu "
           "reordered=%llu with_leaks=%llu copied_to_repair=%llu snapshots_read=%llu qemu_checked=%llu "
           "failures=%d\n",
           (unsigned long long)seed, (unsigned long long)st.records, (unsigned long long)st.flushes,
           (unsigned long long)st.states, (unsigned long long)st.prefixes,
           (unsigned long long)st.reordered, (unsigned long long)st.leaky,
           (unsigned long long)st.copied, (unsigned long long)st.deep, (unsigned long long)st.qemu_checked, st.failures);
    return st.failures ? 1 : 0;
}
