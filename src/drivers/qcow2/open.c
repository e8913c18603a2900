/* open.c: opening and closing qcow2 images, the driver's ops table,
 * and the read-only queries (info, map).
 *
 * Opening validates the header (header.c), loads the L1 and refcount
 * tables, sizes the metadata caches and, for a read-write open, clears
 * unknown autoclear bits and repairs a dirty image before any write.
 * SPDX-License-Identifier: MIT
 */
#include <stdio.h>

#include "qcow2.h"
#include "ops.h"

#define DEFAULT_CACHE_BYTES (32ull << 20)

static void qcow2_free_state(struct qcow2 *s)
{
    qcache_destroy(&s->l2_cache);
    qcache_destroy(&s->rb_cache);
    for (size_t i = 0; i < s->exts.len; i++)
        free(s->exts.ptr[i].data);
    qext_vec_reset(&s->exts);
    qfree_vec_reset(&s->pending_frees);
    free(s->feature_table);
    free(s->backing_file);
    free(s->backing_format);
    free(s->l1);
    free(s->l1_dirty);
    free(s->rt);
    qcow2_meta_index_free(s);
    free(s);
}

void qcow2_close(struct fq_bdev *bs)
{
    struct qcow2 *s = bs->priv;

    if (!s->readonly && !s->corrupt) {
        if (qcow2_writeback(s) == 0 && fq_bdev_flush_sync(s->file) == 0)
            qcow2_trim_ahead(s);
    }
    qcow2_free_state(s);
}

/* (Re)load the active L1 table from the header's offset and size. */
int qcow2_load_l1(struct qcow2 *s, char *err)
{
    uint64_t *l1;
    uint8_t *dirty = calloc(FQ_DIV_UP((uint64_t)s->l1_size * 8, 4096) + 1, 1);
    int r = dirty ? qcow2_read_l1(s, s->l1_offset, s->l1_size, &l1) : -ENOMEM;

    if (r < 0) {
        free(dirty);
        fq_seterr(err, "Could not read the L1 table at 0x%llx: %s",
                  (unsigned long long)s->l1_offset, strerror(-r));
        return r;
    }
    free(s->l1);
    free(s->l1_dirty);
    s->l1 = l1;
    s->l1_dirty = dirty;
    qcow2_meta_changed(s);
    return 0;
}

int qcow2_get_info(struct fq_bdev *bs, struct fq_info *out)
{
    struct qcow2 *s = bs->priv;

    strcpy(out->format, "qcow2");
    out->virtual_size = bs->size;
    out->cluster_size = (uint32_t)s->cluster_size;
    out->version = (int)s->version;
    out->refcount_bits = (int)s->refcount_bits;
    out->lazy_refcounts = (s->compat & QCOW2_COMPAT_LAZY_REFCOUNTS) != 0;
    out->corrupt = s->corrupt || (s->incompat & QCOW2_INCOMPAT_CORRUPT);
    out->dirty = (s->incompat & QCOW2_INCOMPAT_DIRTY) != 0;
    out->extended_l2 = s->extl2;
    out->compression_type = s->compression_type;
    out->incompatible_features = s->incompat;
    out->compatible_features = s->compat;
    out->autoclear_features = s->autoclear;
    out->nb_snapshots = (int)s->nb_snapshots;
    out->encrypted = s->crypt_method != 0;
    if (s->backing_file)
        snprintf(out->backing_file, sizeof(out->backing_file), "%s", s->backing_file);
    if (s->backing_format)
        snprintf(out->backing_format, sizeof(out->backing_format), "%s", s->backing_format);
    if (s->file->ops->get_info) {
        struct fq_info f;
        memset(&f, 0, sizeof(f));
        if (s->file->ops->get_info(s->file, &f) == 0) {
            out->file_size = f.file_size;
            out->actual_size = f.actual_size;
        }
    }
    return 0;
}

/* Does the image look metadata-preallocated: clearly more clusters are
 * refcounted than the file really stores? Only then is the file asked
 * which data clusters are holes (as qemu-img map does). */
static bool sparse_prealloc(struct qcow2 *s)
{
    if (s->sparse_prealloc < 0) {
        struct fq_info f;
        uint64_t used = 0, rc;
        memset(&f, 0, sizeof(f));
        s->sparse_prealloc = 0;
        if (!s->file->ops->get_info || s->file->ops->get_info(s->file, &f) < 0 || !f.file_size)
            return false;
        uint64_t n = FQ_DIV_UP(f.file_size, s->cluster_size);
        for (uint64_t c = 0; c < n; c++)
            if (qcow2_get_refcount(s, c, &rc) == 0 && rc)
                used++;
        uint64_t real = f.actual_size / s->cluster_size;
        s->sparse_prealloc = used >= FQ_MAX(real * 10 / 9, real + 2);
    }
    return s->sparse_prealloc;
}

int qcow2_map(struct fq_bdev *bs, uint64_t off, uint64_t len, struct fq_map_entry *out)
{
    struct qcow2 *s = bs->priv;
    struct qextent x;
    int r = qcow2_lookup(s, off, len, &x);

    if (r < 0)
        return r;
    memset(out, 0, sizeof(*out));
    out->start = off;
    out->length = x.len;
    switch (x.kind) {
    case QK_DATA:
        out->flags = FQ_MAP_DATA | FQ_MAP_ALLOCATED;
        /* a data cluster the file holds as a hole reads as zeros */
        if (s->file->ops->map && sparse_prealloc(s)) {
            struct fq_map_entry f;
            if (s->file->ops->map(s->file, x.host, x.len, &f) == 0 && f.length) {
                out->length = FQ_MIN(out->length, f.length);
                if (!(f.flags & FQ_MAP_DATA))
                    out->flags |= FQ_MAP_ZERO;
            }
        }
        break;
    case QK_ZERO:
        out->flags = FQ_MAP_ZERO | FQ_MAP_ALLOCATED;
        break;
    case QK_COMPRESSED:
        out->flags = FQ_MAP_DATA | FQ_MAP_ALLOCATED | FQ_MAP_COMPRESSED;
        break;
    case QK_UNALLOC:
        out->flags = 0;
        break;
    }
    if (x.has_host) {
        out->flags |= FQ_MAP_OFFSET;
        out->host_offset = x.host;
    }
    return 0;
}

int64_t qcow2_file_length(struct fq_bdev *bs)
{
    return (int64_t)bs->size;
}

int qcow2_truncate(struct fq_bdev *bs, uint64_t size)
{
    return -ENOTSUP;
}

/* Dirty L2 tables depend on refcount blocks (and data) reaching the disk
 * first: evicting one runs the ordered write-back. A refcount block may be
 * written alone at any time. */
static const struct qcache_hooks l2_hooks = {
    .what = "L2 table", .tag = FQ_TAG_L2,
    .check_write = qcow2_check_meta_write, .evict_dirty = qcow2_writeback,
};
static const struct qcache_hooks rb_hooks = {
    .what = "refcount block", .tag = FQ_TAG_REFBLOCK,
    .check_write = qcow2_check_meta_write,
};

static int init_caches(struct qcow2 *s, uint64_t cache_bytes)
{
    uint64_t cs = s->cluster_size;
    /* L2 tables needed to map the whole disk, and refcount blocks to cover
     * a file of about the same size: no more is ever useful */
    uint64_t l2_need = FQ_DIV_UP(s->bs->size, cs * s->l2_entries) + 1;
    uint64_t rb_need = FQ_DIV_UP(s->bs->size + (64ull << 20), cs << s->rb_bits) + 1;
    uint64_t budget = FQ_MAX(cache_bytes / cs, (uint64_t)16);
    uint64_t l2n = FQ_MIN(l2_need, budget);
    uint64_t rbn = FQ_MIN(rb_need, FQ_MAX(budget / 4, (uint64_t)8));
    int r;

    r = qcache_init(&s->l2_cache, s, (size_t)FQ_MAX(l2n, (uint64_t)8), &l2_hooks);
    if (r == 0)
        r = qcache_init(&s->rb_cache, s, (size_t)FQ_MAX(rbn, (uint64_t)8), &rb_hooks);
    return r;
}

int qcow2_open(struct fq_bdev *child, const struct fq_open_opts *opts,
               struct fq_bdev **out, char *err)
{
    struct fq_open_opts def;
    struct fq_bdev *bs = calloc(1, sizeof(*bs));
    struct qcow2 *s = calloc(1, sizeof(*s));
    int r;

    if (!opts) {
        fq_open_opts_init(&def);
        opts = &def;
    }
    if (!bs || !s) {
        free(bs);
        free(s);
        return -ENOMEM;
    }
    bs->ops = &qcow2_dev_ops;
    bs->ctx = child->ctx;
    bs->priv = s;
    bs->align = 1;
    bs->filename = child->filename ? strdup(child->filename) : NULL;
    s->bs = bs;
    s->file = child;
    s->readonly = opts->readonly || child->readonly;
    s->check_mode = opts->check_mode;
    s->max_workers = opts->max_workers ? opts->max_workers : FQ_DEFAULT_WORKERS;
    s->sparse_prealloc = -1;
    bs->readonly = s->readonly;

    r = qcow2_read_header(s, err);
    if (r < 0)
        goto fail;
    bs->cluster = s->cluster_size;
    if (child->align > s->cluster_size) {
        /* metadata and data clusters would share O_DIRECT blocks */
        fq_seterr(err, "Cluster size %llu is smaller than the O_DIRECT alignment %u of '%s'; "
                       "open with cache=writeback (or writethrough) instead",
                  (unsigned long long)s->cluster_size, child->align,
                  child->filename ? child->filename : "the file");
        r = -EINVAL;
        goto fail;
    }
    if ((s->incompat & QCOW2_INCOMPAT_CORRUPT) && !s->readonly && !s->check_mode) {
        fq_seterr(err, "Image is corrupt (corrupt bit set); it can only be opened read-only "
                       "(run 'check -r all' to repair)");
        r = -EACCES;
        goto fail;
    }
    r = qcow2_load_l1(s, err);
    if (r == 0)
        r = qcow2_load_refcount_table(s, err);
    if (r == 0)
        r = init_caches(s, opts->cache_size ? opts->cache_size : DEFAULT_CACHE_BYTES);
    if (r < 0)
        goto fail;
    s->corrupt = (s->incompat & QCOW2_INCOMPAT_CORRUPT) != 0;

    if (!s->readonly) {
        bool rewrite = false;
        /* persistent bitmaps are not maintained: each is flagged in use
         * (inconsistent) and stays accounted for, so the bitmaps bit can
         * stay; a damaged directory is dropped by clearing the bit, as
         * the format says. Other autoclear features are not kept. */
        uint64_t keep = 0;
        if (s->autoclear & QCOW2_AUTOCLEAR_BITMAPS) {
            char berr[FQ_ERR_MAX] = "";
            r = qcow2_bitmaps_mark_in_use(s, berr);
            if (r == 0)
                keep = QCOW2_AUTOCLEAR_BITMAPS;
            else if (r != -EINVAL) {
                fq_seterr(err, "%s", berr);
                goto fail;
            }
        }
        if (s->autoclear & ~keep) {
            s->autoclear &= keep;
            rewrite = true;
        }
        if (rewrite) {
            r = qcow2_write_header(s);
            if (r == 0)
                r = fq_bdev_flush_sync(s->file);
            if (r < 0) {
                fq_seterr(err, "Could not update the header: %s", strerror(-r));
                goto fail;
            }
        }
        if ((s->incompat & QCOW2_INCOMPAT_DIRTY) && !s->check_mode) {
            struct fq_check_result res;
            memset(&res, 0, sizeof(res));
            r = qcow2_check(bs, FQ_CHECK_REPAIR_ALL, &res, NULL, NULL);
            if (r == 0 && res.corruptions - res.corruptions_fixed > 0)
                r = -EIO;
            if (r < 0) {
                fq_seterr(err, "Could not repair dirty image: %s", strerror(-r));
                goto fail;
            }
            s->incompat &= ~QCOW2_INCOMPAT_DIRTY;
            r = qcow2_write_header(s);
            if (r == 0)
                r = fq_bdev_flush_sync(s->file);
            if (r < 0) {
                fq_seterr(err, "Could not clear the dirty bit: %s", strerror(-r));
                goto fail;
            }
        }
    }
    bs->child = child;
    *out = bs;
    return 0;
fail:
    qcow2_free_state(s);
    free(bs->filename);
    free(bs);
    return r;
}
