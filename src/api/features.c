/* image_ops.c: the public API of the whole-image features (fastqcow.h,
 * "image features"): compressed writes, snapshots, resize, amend, measure,
 * rebase and commit. Each checks its arguments, finds the qcow2 driver
 * state under the image handle and calls the driver (qcow2_ops.h,
 * qcow2_snapshot.h); rebase and commit also move data between the images
 * of a chain, synchronously, in chunks of at most CHUNK bytes.
 * SPDX-License-Identifier: MIT
 */
#include <stdio.h>
#include <sys/stat.h>

#include "bdev.h"
#include "offload.h"
#include "qcow2_ops.h"
#include "qcow2_snapshot.h"

#define CHUNK (1u << 20)
#define MAX_CHAIN 64

/* The qcow2 state of an image, or NULL (then *r is the error). */
static struct qcow2 *image_qcow2(struct fq_image *img, int *r)
{
    struct qcow2 *s = qcow2_of(fq_image_bdev(img));

    *r = s ? 0 : -ENOTSUP;
    return s;
}

static int flush_if_writethrough(struct fq_image *img)
{
    enum fq_cache_mode m = fq_image_cache_mode(img);
    struct fq_bdev *bs = fq_image_bdev(img);
    struct fq_req req = { .op = FQ_OP_FLUSH };

    if (m != FQ_CACHE_WRITETHROUGH && m != FQ_CACHE_DIRECTSYNC)
        return 0;
    return bs->ops->io_sync(bs, &req);
}

/* ---- compressed writes ---- */

/* Compressed writes cover whole clusters (the last, partial cluster of
 * the disk included). 0 or -EROFS / -EINVAL. */
static int compressed_args(struct qcow2 *s, struct fq_bdev *bs, const struct iovec *iov,
                           int iovcnt, size_t iov_off, size_t len, uint64_t off)
{
    uint64_t cs = s->cluster_size, size = bs->size;

    if (bs->readonly)
        return -EROFS;
    if (off % cs || off > size || len > size - off || (len % cs && off + len != size) ||
        iovcnt < 0 || (iovcnt > 0 && !iov) || fq_iov_size(iov, iovcnt) < iov_off + len)
        return -EINVAL;
    return 0;
}

int fq_pwritev_compressed(struct fq_image *img, const struct iovec *iov, int iovcnt,
                          size_t iov_off, size_t len, uint64_t off)
{
    struct fq_bdev *bs = fq_image_bdev(img);
    int r;
    struct qcow2 *s = image_qcow2(img, &r);

    if (!s)
        return r;
    if ((r = compressed_args(s, bs, iov, iovcnt, iov_off, len, off)) < 0)
        return r;
    uint64_t cs = s->cluster_size;
    if (len == 0)
        return 0;
    CLEANUP_FREE uint8_t *buf = fq_memalign((size_t)cs);
    if (!buf)
        return -ENOMEM;
    for (uint64_t pos = 0; pos < len; pos += cs) {
        size_t n = (size_t)FQ_MIN(cs, len - pos);
        fq_iov_to_buf(iov, iovcnt, iov_off + (size_t)pos, buf, n);
        if ((r = qcow2_write_compressed(s, buf, (off + pos) >> s->cluster_bits)) < 0)
            return r;
    }
    return flush_if_writethrough(img);
}

int fq_pwrite_compressed(struct fq_image *img, const void *buf, uint64_t off)
{
    struct fq_bdev *bs = fq_image_bdev(img);
    int r;
    struct qcow2 *s = image_qcow2(img, &r);

    if (!s)
        return r;
    if (off >= bs->size)
        return -EINVAL;
    size_t len = (size_t)FQ_MIN(s->cluster_size, bs->size - off);
    struct iovec v = { (void *)buf, len };
    return fq_pwritev_compressed(img, &v, 1, 0, len, off);
}

/* An asynchronous compressed write: one offload job per cluster compresses
 * on a worker thread; the job's completion, on the context's thread,
 * stores the result. The request completes when the last job did (and the
 * submission's own reference went, from the loop: never inside submit). */
struct cwrite {
    struct fq_bh bh;
    struct fq_image *img;
    struct qcow2 *s;
    fq_cb *cb;
    void *opaque;
    unsigned pending;
    int err;
};

struct cjob {
    struct fq_job job;        /* first: the pool hands it back */
    struct cwrite *w;
    uint64_t gc;
    int64_t clen;
    uint8_t *data;            /* the cluster, zero padded */
    uint8_t *out;             /* cluster size + 512 */
};

static void cw_put(struct cwrite *w)
{
    if (--w->pending > 0)
        return;
    struct fq_ctx *ctx = fq_image_ctx(w->img);
    int ret = w->err ? w->err : flush_if_writethrough(w->img);
    fq_cb *cb = w->cb;
    void *opaque = w->opaque;

    free(w);
    ctx->user_inflight--;
    ctx->user_completed++;
    if (cb)
        cb(opaque, ret);
}

static void cw_release_bh(void *opaque)
{
    cw_put(opaque);
}

static void cjob_run(struct fq_job *job)
{
    struct cjob *c = (struct cjob *)job;

    c->clen = qcow2_compress_cluster(c->w->s, c->data, c->out);
}

static void cjob_done(struct fq_job *job)
{
    struct cjob *c = (struct cjob *)job;
    struct cwrite *w = c->w;
    int r = w->err ? 0 : qcow2_store_compressed(w->s, c->gc, c->data, c->out, c->clen);

    if (r < 0 && !w->err)
        w->err = r;
    free(c->data);
    free(c->out);
    free(c);
    cw_put(w);
}

int fq_aio_pwritev_compressed(struct fq_image *img, const struct iovec *iov, int iovcnt,
                              size_t iov_off, size_t len, uint64_t off,
                              fq_cb *cb, void *opaque)
{
    struct fq_bdev *bs = fq_image_bdev(img);
    struct fq_ctx *ctx = fq_image_ctx(img);
    int r;
    struct qcow2 *s = image_qcow2(img, &r);

    if (!s)
        return r;
    if ((r = compressed_args(s, bs, iov, iovcnt, iov_off, len, off)) < 0)
        return r;
    uint64_t cs = s->cluster_size;
    struct cwrite *w = calloc(1, sizeof(*w));
    if (!w)
        return -ENOMEM;
    *w = (struct cwrite){ .img = img, .s = s, .cb = cb, .opaque = opaque, .pending = 1 };
    ctx->user_inflight++;
    for (uint64_t pos = 0; pos < len; pos += cs) {
        size_t n = (size_t)FQ_MIN(cs, len - pos);
        struct cjob *c = calloc(1, sizeof(*c));
        if (!c || !(c->data = fq_zalign((size_t)cs)) || !(c->out = fq_memalign((size_t)cs + 512))) {
            if (c) {
                free(c->data);
                free(c);
            }
            w->err = -ENOMEM;
            break;
        }
        fq_iov_to_buf(iov, iovcnt, iov_off + (size_t)pos, c->data, n);
        c->w = w;
        c->gc = (off + pos) >> s->cluster_bits;
        c->job.run = cjob_run;
        c->job.done = cjob_done;
        w->pending++;
        if (fq_offload_submit(ctx, &c->job) < 0) {
            /* no worker: compress here (still completed from the loop) */
            cjob_run(&c->job);
            cjob_done(&c->job);
        }
    }
    fq_ctx_defer(ctx, &w->bh, cw_release_bh, w);
    return 0;
}

/* ---- snapshots ---- */

void fq_snapshot_list_free(struct fq_snapshot *list, int count)
{
    for (int i = 0; list && i < count; i++) {
        free(list[i].id);
        free(list[i].name);
    }
    free(list);
}

int fq_snapshot_list(struct fq_image *img, struct fq_snapshot **out, int *count)
{
    struct qsnap *v;
    size_t n;
    uint64_t tb;
    int r;
    struct qcow2 *s = image_qcow2(img, &r);

    *out = NULL;
    *count = 0;
    if (!s)
        return r;
    if ((r = qcow2_read_snapshots(s, &v, &n, &tb, NULL)) < 0)
        return r;
    struct fq_snapshot *l = n ? calloc(n, sizeof(*l)) : NULL;
    if (n && !l)
        r = -ENOMEM;
    for (size_t i = 0; r == 0 && i < n; i++) {
        l[i] = (struct fq_snapshot){ .id = strdup(v[i].id), .name = strdup(v[i].name),
                                     .vm_state_size = v[i].vm_state_size,
                                     .disk_size = v[i].disk_size, .date_sec = v[i].date_sec,
                                     .date_nsec = v[i].date_nsec,
                                     .vm_clock_nsec = v[i].vm_clock_nsec, .icount = v[i].icount };
        if (!l[i].id || !l[i].name)
            r = -ENOMEM;
    }
    qcow2_snapshots_free(v, n);
    if (r < 0) {
        fq_snapshot_list_free(l, (int)n);
        return r;
    }
    *out = l;
    *count = (int)n;
    return 0;
}

/* The qcow2 state behind a snapshot call, or NULL with `err` set. */
static struct qcow2 *snapshot_target(struct fq_image *img, int *r, char *err)
{
    struct qcow2 *s = image_qcow2(img, r);

    if (!s)
        fq_seterr(err, "Snapshots need a qcow2 image (this one is %s)", fq_format(img));
    return s;
}

int fq_snapshot_create(struct fq_image *img, const char *name, char *err)
{
    int r;
    struct qcow2 *s = snapshot_target(img, &r, err);

    return s ? qcow2_snapshot_create(s, name, err) : r;
}

int fq_snapshot_apply(struct fq_image *img, const char *which, char *err)
{
    int r;
    struct qcow2 *s = snapshot_target(img, &r, err);

    return s ? qcow2_snapshot_apply(s, which, err) : r;
}

int fq_snapshot_delete(struct fq_image *img, const char *which, char *err)
{
    int r;
    struct qcow2 *s = snapshot_target(img, &r, err);

    return s ? qcow2_snapshot_delete(s, which, err) : r;
}

/* ---- resize, amend ---- */

/* The first offset from `from` on that a raw image holds data at (its
 * size if none): holes of the file do not count. */
static int raw_first_data(struct fq_image *img, uint64_t from, uint64_t *out)
{
    uint64_t size = fq_size(img);

    for (uint64_t off = from; off < size;) {
        struct fq_map_entry m;
        int r = fq_map(img, off, size - off, &m);
        if (r < 0)
            return r;
        if (m.length == 0)
            return -EIO;
        if ((m.flags & FQ_MAP_DATA) && !(m.flags & FQ_MAP_ZERO)) {
            *out = off;
            return 0;
        }
        off += m.length;
    }
    *out = size;
    return 0;
}

int fq_resize(struct fq_image *img, uint64_t size, unsigned flags, char *err)
{
    struct fq_bdev *bs = fq_image_bdev(img);
    int r;
    struct qcow2 *s = image_qcow2(img, &r);

    if (bs->readonly) {
        fq_seterr(err, "The image is opened read-only");
        return -EROFS;
    }
    if (flags & ~(FQ_RESIZE_SHRINK | FQ_RESIZE_DISCARD_DATA)) {
        fq_seterr(err, "Unknown resize flags 0x%x", flags);
        return -EINVAL;
    }
    if (s)
        return qcow2_resize(s, size, flags, err);
    if (size < bs->size && !(flags & FQ_RESIZE_SHRINK)) {
        fq_seterr(err, "Use the --shrink option to perform a shrink operation.");
        return -EINVAL;
    }
    if (size < bs->size && !(flags & FQ_RESIZE_DISCARD_DATA)) {
        uint64_t used = bs->size;
        if ((r = raw_first_data(img, size, &used)) < 0) {
            fq_seterr(err, "Could not read the allocation status: %s", strerror(-r));
            return r;
        }
        if (used < bs->size)
            return qcow2_shrink_refused(err, size, used);
    }
    r = bs->ops->truncate ? bs->ops->truncate(bs, size) : -ENOTSUP;
    if (r < 0)
        fq_seterr(err, "Could not resize the image: %s", strerror(-r));
    return r;
}

void fq_amend_opts_init(struct fq_amend_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->lazy_refcounts = -1;
}

int fq_amend(struct fq_image *img, const struct fq_amend_opts *o, char *err)
{
    int r;
    struct qcow2 *s = image_qcow2(img, &r);

    if (!s) {
        fq_seterr(err, "Format driver '%s' does not support option amendment", fq_format(img));
        return r;
    }
    if (o->version || o->lazy_refcounts >= 0 || o->refcount_bits)
        r = qcow2_amend(s, o->version, o->lazy_refcounts, o->refcount_bits, err);
    /* a smaller size drops only unused space, as resize --shrink */
    if (r == 0 && o->size && o->size != fq_size(img))
        r = qcow2_resize(s, o->size, FQ_RESIZE_SHRINK, err);
    if (r == 0 && o->backing_file)
        r = qcow2_set_backing(s, o->backing_file, o->backing_format, err);
    return r;
}

/* ---- measure ---- */

/* Bytes of metadata of a fully allocated qcow2 image of `vsize` bytes
 * (a multiple of the cluster size): header, L2 tables, L1 table, and the
 * refcount blocks and table that count all of it and themselves. */
static uint64_t qcow2_meta_bytes(uint64_t vsize, uint64_t cs, unsigned rbits, bool extl2)
{
    uint64_t per_l2 = cs / (extl2 ? 16 : 8), clusters = vsize / cs;
    uint64_t tables = FQ_DIV_UP(clusters, per_l2);
    uint64_t meta = cs + tables * cs + FQ_ALIGN_UP(tables * 8, cs);
    uint64_t counted = (meta + vsize) / cs, per_block = cs * 8 / rbits, per_rt = cs / 8;
    uint64_t blocks = 0, table = 0;

    /* the fixed point where the refcount structures count themselves */
    for (;;) {
        uint64_t nb = FQ_DIV_UP(counted + blocks + table, per_block);
        uint64_t nt = FQ_DIV_UP(nb, per_rt);
        if (nb == blocks && nt == table)
            break;
        blocks = nb;
        table = nt;
    }
    return meta + (blocks + table) * cs;
}

int fq_measure(const struct fq_create_opts *t, struct fq_image *src,
               struct fq_measure_result *out, char *err)
{
    const char *fmt = t->format ? t->format : "qcow2";
    uint64_t size = src ? fq_size(src) : t->size;

    memset(out, 0, sizeof(*out));
    if (!strcmp(fmt, "raw")) {
        out->required = out->fully_allocated = FQ_ALIGN_UP(size, 512);
        return 0;
    }
    if (strcmp(fmt, "qcow2")) {
        fq_seterr(err, "Block driver '%s' does not support size measurement", fmt);
        return -ENOTSUP;
    }
    uint64_t cs = t->cluster_size ? t->cluster_size : 65536;
    unsigned rbits = t->refcount_bits ? (unsigned)t->refcount_bits : 16;
    if (cs < 512 || cs > (2u << 20) || (cs & (cs - 1))) {
        fq_seterr(err, "Cluster size must be a power of two between 512 and 2048k");
        return -EINVAL;
    }
    if (rbits > 64 || (rbits & (rbits - 1))) {
        fq_seterr(err, "Refcount width must be a power of two and may not exceed 64 bits");
        return -EINVAL;
    }
    if (t->extended_l2 && cs < 16384) {
        fq_seterr(err, "Extended L2 entries are only supported with cluster sizes of at least 16384 bytes");
        return -EINVAL;
    }
    uint64_t vsize = FQ_ALIGN_UP(size, cs), data = 0, counted_end = 0;
    if (FQ_DIV_UP(vsize, cs * (cs / (t->extended_l2 ? 16 : 8))) > QCOW2_MAX_L1_BYTES / 8) {
        fq_seterr(err, "The image size is too large (try using a larger cluster size)");
        return -EFBIG;
    }
    if (t->prealloc == FQ_PREALLOC_FULL || t->prealloc == FQ_PREALLOC_FALLOC) {
        data = vsize;
    } else if (src && t->backing_file) {
        data = vsize;   /* as qemu-img: everything may be needed */
    } else if (src) {
        /* every cluster of the target that would hold some data */
        for (uint64_t off = 0; off < size;) {
            struct fq_map_entry m;
            int r = fq_map(src, off, size - off, &m);
            if (r < 0 || m.length == 0) {
                fq_seterr(err, "Could not read the allocation status at offset %llu: %s",
                          (unsigned long long)off, strerror(r < 0 ? -r : EIO));
                return r < 0 ? r : -EIO;
            }
            if (!(m.flags & FQ_MAP_ZERO) &&
                (m.flags & (FQ_MAP_DATA | FQ_MAP_ALLOCATED)) == (FQ_MAP_DATA | FQ_MAP_ALLOCATED)) {
                uint64_t first = FQ_MAX(FQ_ALIGN_DOWN(off, cs), counted_end);
                uint64_t last = FQ_ALIGN_UP(off + m.length, cs);
                if (last > first)
                    data += last - first;
                counted_end = FQ_MAX(counted_end, last);
            }
            off += m.length;
        }
    }
    out->fully_allocated = qcow2_meta_bytes(vsize, cs, rbits, t->extended_l2) + vsize;
    out->required = out->fully_allocated - vsize + data;
    /* bitmaps are copied only from a qcow2 source that can hold them (v3)
     * into a target that can (v3) */
    out->has_bitmaps = 0;
    if (t->version >= 3 && src && !strcmp(fq_format(src), "qcow2")) {
        struct qcow2 *ss = fq_image_bdev(src)->priv;
        if (ss->version >= 3) {
            out->has_bitmaps = 1;
            int r = qcow2_bitmaps_size(ss, cs, &out->bitmaps, err);
            if (r < 0)
                return r;
        }
    }
    return 0;
}

/* ---- rebase ---- */

/* True if both names are the same file (after symlinks). */
static bool same_file(const char *a, const char *b)
{
    struct stat sa, sb;

    return a && b && stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
           sa.st_ino == sb.st_ino;
}

/* "dir/of/image" + "name": a backing file name as the chain opens it. */
static char *resolve_name(const char *image, const char *name)
{
    const char *slash = image ? strrchr(image, '/') : NULL;
    size_t dl = slash ? (size_t)(slash - image) + 1 : 0;
    char *p;

    if (name[0] == '/' || dl == 0 || strstr(name, "://"))
        return strdup(name);
    if ((p = malloc(dl + strlen(name) + 1))) {
        memcpy(p, image, dl);
        strcpy(p + dl, name);
    }
    return p;
}

/* Read [off, off+len) of a device (NULL: none) into buf; zeros past its end. */
static int read_dev(struct fq_bdev *d, uint64_t off, uint64_t len, uint8_t *buf)
{
    uint64_t in = d && off < d->size ? FQ_MIN(len, d->size - off) : 0;

    memset(buf + in, 0, (size_t)(len - in));
    return in ? fq_bdev_pread_sync(d, buf, (size_t)in, off) : 0;
}

/* Copy into the image every range it leaves to its backing file where the
 * old and the new backing files differ. */
static int rebase_copy(struct qcow2 *s, struct fq_bdev *nb, const struct fq_rebase_opts *o)
{
    struct fq_bdev *bs = s->bs, *ob = bs->backing;
    uint64_t size = bs->size, unit = FQ_MIN(s->cluster_size, (uint64_t)CHUNK);
    CLEANUP_FREE uint8_t *a = fq_memalign((size_t)unit);
    CLEANUP_FREE uint8_t *b = fq_memalign((size_t)unit);
    int r = 0;

    if (!a || !b)
        return -ENOMEM;
    for (uint64_t pos = 0; pos < size && r == 0;) {
        struct qextent x;
        if ((r = qcow2_lookup(s, pos, size - pos, &x)) < 0)
            break;
        if (x.kind != QK_UNALLOC) {
            pos += x.len;
            continue;
        }
        for (uint64_t end = pos + x.len; pos < end && r == 0;) {
            uint64_t n = FQ_MIN(end - pos, unit - pos % unit);
            if ((r = read_dev(ob, pos, n, a)) < 0 || (r = read_dev(nb, pos, n, b)) < 0)
                break;
            if (memcmp(a, b, (size_t)n)) {
                struct iovec v = { a, (size_t)n };
                struct fq_req w = { .op = FQ_OP_WRITE, .off = pos, .len = n, .iov = &v, .iovcnt = 1 };
                r = qcow2_io_sync(bs, &w);
            }
            pos += n;
        }
        if (o->progress)
            o->progress(o->opaque, pos, size);
    }
    return r;
}

int fq_rebase(struct fq_image *img, const struct fq_rebase_opts *o, char *err)
{
    struct fq_bdev *bs = fq_image_bdev(img), *nb = NULL;
    const char *name = o->backing_file && *o->backing_file ? o->backing_file : NULL;
    int r;
    struct qcow2 *s = image_qcow2(img, &r);

    if (!s) {
        fq_seterr(err, "Only qcow2 images have a backing file (this one is %s)", fq_format(img));
        return r;
    }
    if (bs->readonly) {
        fq_seterr(err, "The image is opened read-only");
        return -EROFS;
    }
    if (name && !o->backing_format) {
        fq_seterr(err, "Could not change the backing file to '%s': backing format must be specified",
                  name);
        return -EINVAL;
    }
    if (qcow2_busy(s)) {
        fq_seterr(err, "Requests are in flight on the image");
        return -EBUSY;
    }
    if (name) {
        /* never a chain that comes back to this image */
        char *path = resolve_name(bs->filename, name);
        bool loop = path && same_file(path, bs->filename);
        free(path);
        if (loop) {
            fq_seterr(err, "Backing file '%s' creates an infinite loop.", name);
            return -ELOOP;
        }
    }
    if (o->unsafe)
        return qcow2_set_backing(s, name, o->backing_format, err);
    if (name) {
        struct fq_open_opts oo;
        char berr[FQ_ERR_MAX] = "";
        char *path = resolve_name(bs->filename, name);
        fq_open_opts_init(&oo);
        oo.readonly = 1;
        oo.cache = o->cache;
        r = path ? fq_bdev_open_chain(bs->ctx, path, o->backing_format, &oo, 1, &nb, berr) : -ENOMEM;
        if (r < 0) {
            fq_seterr(err, "Could not open new backing file '%s': %s", path ? path : name,
                      berr[0] ? berr : strerror(-r));
            free(path);
            return r;
        }
        free(path);
        for (struct fq_bdev *b = nb; b; b = b->backing)
            if (b->filename && same_file(b->filename, bs->filename)) {
                fq_seterr(err, "Backing file '%s' creates an infinite loop.", b->filename);
                fq_bdev_close(nb);
                return -ELOOP;
            }
    }
    r = rebase_copy(s, nb, o);
    if (r == 0) {
        struct fq_req f = { .op = FQ_OP_FLUSH };
        r = qcow2_io_sync(bs, &f);
    }
    if (r < 0) {
        fq_seterr(err, "Could not copy the data that differs: %s", strerror(-r));
        fq_bdev_close(nb);
        return r;
    }
    if ((r = qcow2_set_backing(s, name, o->backing_format, err)) < 0) {
        fq_bdev_close(nb);
        return r;
    }
    fq_bdev_close(bs->backing);
    bs->backing = nb;
    return 0;
}

/* ---- commit ---- */

struct layer {
    char *path;               /* as the chain opens it */
    char *fmt;
};

static void layers_free(struct layer *l, int n)
{
    for (int i = 0; i < n; i++) {
        free(l[i].path);
        free(l[i].fmt);
    }
}

/* Does `want` name the backing file recorded as `recorded` and opened as
 * `path`? */
static bool names_match(const char *want, const char *recorded, const char *path)
{
    if (!strcmp(want, recorded) || !strcmp(want, path))
        return true;
    char *a = realpath(want, NULL), *b = realpath(path, NULL);
    bool same = a && b && !strcmp(a, b);
    free(a);
    free(b);
    return same;
}

/* Copy what layer `l` allocates itself into `base`. */
static int commit_layer(const struct layer *l, struct fq_image *base, const struct fq_commit_opts *o,
                        uint8_t *buf, uint64_t *done, uint64_t total, char *err)
{
    struct fq_open_opts oo;
    struct fq_image *img;
    int r;

    fq_open_opts_init(&oo);
    oo.format = l->fmt;
    oo.readonly = 1;
    oo.no_backing = 1;
    oo.cache = o->cache;
    oo.ctx = fq_image_ctx(base);
    if ((r = fq_open(l->path, &oo, &img, err)) < 0)
        return r;
    uint64_t size = FQ_MIN(fq_size(img), fq_size(base));
    for (uint64_t off = 0; off < size && r == 0;) {
        struct fq_map_entry m;
        if ((r = fq_map(img, off, FQ_MIN(size - off, (uint64_t)CHUNK), &m)) < 0)
            break;
        if (m.length == 0) {
            r = -EIO;
            break;
        }
        if (m.flags & FQ_MAP_ALLOCATED) {
            if (m.flags & FQ_MAP_ZERO)
                r = fq_write_zeroes(base, off, m.length, FQ_ZERO_MAY_UNMAP);
            else if ((r = fq_pread(img, buf, (size_t)m.length, off)) == 0)
                r = fq_pwrite(base, buf, (size_t)m.length, off);
        }
        off += m.length;
        *done += m.length;
        if (o->progress)
            o->progress(o->opaque, *done, total);
    }
    if (r < 0 && err && !*err)
        fq_seterr(err, "Could not commit '%s': %s", l->path, strerror(-r));
    fq_close(img);
    return r;
}

int fq_commit(const char *filename, const struct fq_commit_opts *o, char *err)
{
    struct layer l[MAX_CHAIN + 1];
    struct fq_open_opts oo;
    struct fq_image *top = NULL, *base = NULL;
    uint8_t *buf = NULL;
    int n = 0, d = -1, r;

    fq_open_opts_init(&oo);
    oo.format = o->format;
    oo.readonly = 1;
    oo.cache = o->cache;
    if ((r = fq_open(filename, &oo, &top, err)) < 0)
        return r;
    /* the chain as opened: path and format of each layer */
    struct fq_bdev *b = fq_image_bdev(top);
    memset(l, 0, sizeof(l));
    l[0].path = strdup(filename);
    l[0].fmt = strdup(fq_format(top));
    n = 1;
    for (; b && n <= MAX_CHAIN; b = b->backing) {
        const char *name = NULL, *fmt = NULL;
        if (fq_qcow2_backing(b, &name, &fmt) < 0 || !name || !b->backing)
            break;
        l[n].path = resolve_name(l[n - 1].path, name);
        l[n].fmt = strdup(fmt ? fmt : b->backing->ops->name);
        if (!l[n].path || !l[n].fmt) {
            n++;
            r = -ENOMEM;
            goto out;
        }
        if (d < 0 && o->base && names_match(o->base, name, l[n].path))
            d = n;
        n++;
    }
    uint64_t top_size = fq_size(top);
    fq_close(top);
    top = NULL;
    if (n == 1) {
        fq_seterr(err, "Image does not have a backing file");
        r = -EINVAL;
        goto out;
    }
    if (!o->base)
        d = 1;
    if (d < 0) {
        fq_seterr(err, "Did not find '%s' in the backing chain of '%s'", o->base, filename);
        r = -ENOENT;
        goto out;
    }
    oo.format = l[d].fmt;
    oo.readonly = 0;
    if ((r = fq_open(l[d].path, &oo, &base, err)) < 0)
        goto out;
    if (fq_size(base) < top_size && (r = fq_resize(base, top_size, 0, err)) < 0)
        goto out;
    if (!(buf = fq_memalign(CHUNK))) {
        r = -ENOMEM;
        goto out;
    }
    /* lowest layer first: what a higher layer holds wins */
    uint64_t done = 0, total = (uint64_t)d * top_size;
    for (int i = d - 1; i >= 0 && r == 0; i--)
        r = commit_layer(&l[i], base, o, buf, &done, total, err);
    int cr = fq_close(base);
    base = NULL;
    if (r == 0 && cr < 0) {
        fq_seterr(err, "Could not flush '%s': %s", l[d].path, strerror(-cr));
        r = cr;
    }
    if (r == 0 && !o->keep && !o->base) {
        /* the data is safe in the base: let the image read through */
        oo.format = l[0].fmt;
        oo.no_backing = 1;
        if ((r = fq_open(filename, &oo, &top, err)) == 0) {
            struct qcow2 *s = qcow2_of(fq_image_bdev(top));
            r = s ? qcow2_make_empty(s) : -ENOTSUP;
            if (r < 0)
                fq_seterr(err, "Could not empty '%s': %s", filename, strerror(-r));
            int c2 = fq_close(top);
            top = NULL;
            if (r == 0)
                r = c2;
        }
    }
out:
    if (top)
        fq_close(top);
    if (base)
        fq_close(base);
    layers_free(l, n);
    free(buf);
    return r;
}
