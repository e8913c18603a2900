/* driver.c: the qcow2 driver's tables: the device ops (requests, queries
 * and whole-image operations) and its entry in the registry (probe, open,
 * create, measure), with the adapters between the generic calls of the
 * driver interface and the modules that do the work.
 * SPDX-License-Identifier: MIT
 */
#include <stdio.h>

#include "qcow2.h"
#include "ops.h"
#include "snapshot.h"

/* 100 when the device starts with qcow2's magic and a version (1 is
 * qcow's first format: claimed, so that opening refuses it rather than
 * reading it as raw). A file too short to hold the version may be raw; a
 * longer one is qcow2 however short its header (opening says so). */
static int qcow2_probe(struct fq_bdev *child)
{
    uint8_t b[QH_VERSION + 4];

    if (child->size < sizeof(b) || fq_bdev_pread_sync(child, b, sizeof(b), 0) < 0)
        return 0;
    return fq_be32(b + QH_MAGIC) == QCOW2_MAGIC && fq_be32(b + QH_VERSION) >= 1 ? 100 : 0;
}

static int qcow2_backing(struct fq_bdev *bs, const char **name, const char **fmt)
{
    struct qcow2 *s = bs->priv;

    *name = s->backing_file;
    *fmt = s->backing_format;
    return 0;
}

static int set_backing(struct fq_bdev *bs, const char *name, const char *fmt, char *err)
{
    return qcow2_set_backing(bs->priv, name, fmt, err);
}

static bool busy(struct fq_bdev *bs)
{
    return qcow2_busy(bs->priv);
}

static int write_compressed(struct fq_bdev *bs, const uint8_t *data, uint64_t off)
{
    struct qcow2 *s = bs->priv;

    if (qcow2_has_data_file(s))
        return -ENOTSUP;    /* no compressed clusters in a data file */
    if (s->crypt_method)
        return -ENOTSUP;        /* compressed clusters are never encrypted */
    if (s->bm)
        qcow2_bitmaps_dirty(s, off, s->cluster_size);
    return qcow2_write_compressed(s, data, off >> s->cluster_bits);
}

static int64_t compress(struct fq_bdev *bs, const uint8_t *src, uint8_t *dst)
{
    return qcow2_compress_cluster(bs->priv, src, dst);
}

static int store_compressed(struct fq_bdev *bs, uint64_t off, const uint8_t *data, uint8_t *blob,
                            int64_t clen)
{
    struct qcow2 *s = bs->priv;

    if (qcow2_has_data_file(s) || s->crypt_method)
        return -ENOTSUP;
    if (s->bm)
        qcow2_bitmaps_dirty(s, off, s->cluster_size);
    return qcow2_store_compressed(s, off >> s->cluster_bits, data, blob, clen);
}

/* fq_snapshot_list: the table as the public structures. */
static int snapshot_list(struct fq_bdev *bs, struct fq_snapshot **out, int *count)
{
    struct qsnap *v;
    size_t n;
    uint64_t tb;
    int r = qcow2_read_snapshots(bs->priv, &v, &n, &tb, NULL);

    if (r < 0)
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
        for (size_t i = 0; l && i < n; i++) {
            free(l[i].id);
            free(l[i].name);
        }
        free(l);
        return r;
    }
    *out = l;
    *count = (int)n;
    return 0;
}

static int snapshot_create(struct fq_bdev *bs, const char *name, char *err)
{
    int r = qcow2_data_refuse(bs->priv, "Internal snapshots", err);

    return r < 0 ? r : qcow2_snapshot_create(bs->priv, name, err);
}

static int snapshot_apply(struct fq_bdev *bs, const char *which, char *err)
{
    struct qcow2 *s = bs->priv;
    int r = qcow2_data_refuse(s, "Internal snapshots", err);

    if (r == 0)
        r = qcow2_snapshot_apply(s, which, err);
    /* the whole disk may have changed */
    if (r == 0 && s->bm)
        qcow2_bitmaps_dirty(s, 0, bs->size);
    return r;
}

static int snapshot_delete(struct fq_bdev *bs, const char *which, char *err)
{
    return qcow2_snapshot_delete(bs->priv, which, err);
}

/* A resize, which an external data file and the persistent bitmaps
 * follow. */
static int resize_all(struct qcow2 *s, uint64_t size, unsigned flags, char *err)
{
    uint64_t old = s->bs->size;
    int r = qcow2_resize(s, size, flags, err);

    if (r == 0 && s->bm && (r = qcow2_bitmaps_resized(s)) < 0)
        fq_seterr(err, "Could not resize the bitmaps: %s", strerror(-r));
    return r < 0 ? r : qcow2_data_resize(s, old, err);
}

static int resize(struct fq_bdev *bs, uint64_t size, unsigned flags, char *err)
{
    return resize_all(bs->priv, size, flags, err);
}

/* fq_amend: the format's options, then the size (a smaller one drops what
 * lies past the new end, as resize --shrink). */
static int amend(struct fq_bdev *bs, const struct fq_amend_opts *o, char *err)
{
    struct qcow2 *s = bs->priv;
    int r = qcow2_data_amend(s, o, err);

    if (r == 0 && (o->version || o->lazy_refcounts >= 0 || o->refcount_bits))
        r = qcow2_amend(s, o->version, o->lazy_refcounts, o->refcount_bits, err);
    if (r == 0 && o->size && o->size != bs->size)
        r = resize_all(s, o->size, FQ_RESIZE_SHRINK, err);
    return r;
}

static int make_empty(struct fq_bdev *bs)
{
    struct qcow2 *s = bs->priv;

    if (s->bm)
        qcow2_bitmaps_dirty(s, 0, bs->size);
    return qcow2_make_empty(s);
}

/* Defragmentation moves the bitmaps' clusters: they are stored before and
 * tracked anew after. */
static int defrag(struct fq_bdev *bs, const struct fq_defrag_opts *o, struct fq_defrag_stats *st,
                  const struct fq_waiter *w, char *err)
{
    struct qcow2 *s = bs->priv;
    int r = 0;

    if (s->bm && (r = qcow2_bitmaps_store(s, false, false, err)) < 0)
        return r;
    qcow2_bitmaps_free(s);
    r = qcow2_defrag(bs, o, st, w, err);
    if (!s->readonly && (s->autoclear & QCOW2_AUTOCLEAR_BITMAPS)) {
        char berr[FQ_ERR_MAX];
        int r2 = qcow2_bitmaps_track(s, berr);
        if (r2 < 0 && r == 0) {
            fq_seterr(err, "%s", berr);
            r = r2;
        }
    }
    return r;
}

static int bitmap_list(struct fq_bdev *bs, struct fq_bitmap **out, int *count, char *err)
{
    return qcow2_bitmap_list(bs->priv, out, count, err);
}

static int bitmaps_size(struct fq_bdev *bs, uint64_t cs, uint64_t *out, char *err)
{
    struct qcow2 *s = bs->priv;

    *out = 0;
    return s->version >= 3 ? qcow2_bitmaps_size(s, cs, out, err) : -ENOTSUP;
}

static int bitmap_change(struct fq_bdev *bs, const char *name, int op, uint64_t gran, char *err)
{
    return qcow2_bitmap_change(bs->priv, name, op, gran, err);
}

static int bitmap_set(struct fq_bdev *bs, const char *name, uint64_t off, uint64_t len, char *err)
{
    return qcow2_bitmap_set(bs->priv, name, off, len, err);
}

static int bitmap_status(struct fq_bdev *bs, const char *name, uint64_t off, uint64_t len,
                         uint64_t *run, bool *dirty, char *err)
{
    return qcow2_bitmap_status(bs->priv, name, off, len, run, dirty, err);
}

static int vmstate_rw(struct fq_bdev *bs, void *buf, uint64_t len, uint64_t pos, bool write)
{
    return qcow2_vmstate_rw(bs->priv, buf, len, pos, write);
}

const struct fq_bdev_ops qcow2_dev_ops = {
    .name = "qcow2",
    .submit = qcow2_submit,
    .io_sync = qcow2_io_sync,
    .close = qcow2_close,
    .get_info = qcow2_get_info,
    .map = qcow2_map,
    .check = qcow2_check,
    .truncate = qcow2_truncate,
    .file_length = qcow2_file_length,
    .backing = qcow2_backing,
    .set_backing = set_backing,
    .busy = busy,
    .write_compressed = write_compressed,
    .compress = compress,
    .store_compressed = store_compressed,
    .snapshot_list = snapshot_list,
    .snapshot_create = snapshot_create,
    .snapshot_apply = snapshot_apply,
    .snapshot_delete = snapshot_delete,
    .resize = resize,
    .amend = amend,
    .make_empty = make_empty,
    .bitmap_list = bitmap_list,
    .bitmaps_size = bitmaps_size,
    .bitmap_change = bitmap_change,
    .bitmap_set = bitmap_set,
    .bitmap_status = bitmap_status,
    .defrag = defrag,
    .vmstate_rw = vmstate_rw,
    .data_file = qcow2_data_file_op,
    .set_data_file = qcow2_set_data_file,
};

/* ---- measure ---- */

/* Bytes of metadata of a fully allocated qcow2 image of `vsize` bytes
 * (a multiple of the cluster size): header, L2 tables, L1 table, and the
 * refcount blocks and table that count all of it and themselves. */
static uint64_t meta_bytes(uint64_t vsize, uint64_t cs, unsigned rbits, bool extl2)
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

/* Guest bytes of whole target clusters of `cs` bytes that would hold data
 * of `src` (what the source allocates itself, zeros excepted). */
static int data_clusters(struct fq_bdev *src, uint64_t cs, uint64_t *out, char *err)
{
    uint64_t size = src->size, data = 0, counted_end = 0;

    for (uint64_t off = 0; off < size;) {
        struct fq_map_entry m;
        int r = fq_bdev_map_chain(src, off, size - off, &m);
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
        off += FQ_MIN(m.length, size - off);
    }
    *out = data;
    return 0;
}

static int qcow2_measure(const struct fq_create_opts *t, struct fq_bdev *src,
                         struct fq_measure_result *out, char *err)
{
    uint64_t size = src ? src->size : t->size;
    uint64_t cs = t->cluster_size ? t->cluster_size : 65536;
    unsigned rbits = t->refcount_bits ? (unsigned)t->refcount_bits : 16;

    memset(out, 0, sizeof(*out));
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
    uint64_t vsize = FQ_ALIGN_UP(size, cs), data = 0;
    if (FQ_DIV_UP(vsize, cs * (cs / (t->extended_l2 ? 16 : 8))) > QCOW2_MAX_L1_BYTES / 8) {
        fq_seterr(err, "The image size is too large (try using a larger cluster size)");
        return -EFBIG;
    }
    if (t->prealloc == FQ_PREALLOC_FULL || t->prealloc == FQ_PREALLOC_FALLOC) {
        data = vsize;
    } else if (src && t->backing_file) {
        data = vsize;   /* as qemu-img: everything may be needed */
    } else if (src) {
        int r = data_clusters(src, cs, &data, err);
        if (r < 0)
            return r;
    }
    out->fully_allocated = meta_bytes(vsize, cs, rbits, t->extended_l2) + vsize;
    out->required = out->fully_allocated - vsize + data;
    /* bitmaps are copied only from a source that can hold them into a
     * target that can (v3) */
    if (t->version >= 3 && src && src->ops->bitmaps_size) {
        int r = src->ops->bitmaps_size(src, cs, &out->bitmaps, err);
        if (r == 0)
            out->has_bitmaps = 1;
        else if (r != -ENOTSUP)
            return r;
    }
    return 0;
}

const struct fq_driver fq_driver_qcow2 = {
    .name = "qcow2",
    .probe = qcow2_probe,
    .open = qcow2_open,
    .create = qcow2_create,
    .measure = qcow2_measure,
};
