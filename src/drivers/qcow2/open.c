/* open.c: opening and closing qcow2 images, the driver's ops table,
 * and the read-only queries (info, map).
 *
 * Opening validates the header (header.c), loads the L1 and refcount
 * tables, sizes the metadata caches and, for a read-write open, clears
 * unknown autoclear bits and repairs a dirty image before any write.
 * SPDX-License-Identifier: MIT
 */
#include <limits.h>
#include <stdio.h>

#include "crypt.h"
#include "qcow2.h"
#include "ops.h"

static void qcow2_free_state(struct qcow2 *s)
{
    qcow2_rw_fini(s);
    qcow2_bitmaps_free(s);
    fq_depth_free(s->depth);
    qcache_destroy(&s->l2_cache);
    qcache_destroy(&s->rb_cache);
    for (size_t i = 0; i < s->exts.len; i++)
        free(s->exts.ptr[i].data);
    qext_vec_reset(&s->exts);
    qfree_vec_reset(&s->pending_frees);
    qcow2_rt_damage_clear(s);
    free(s->feature_table);
    free(s->backing_file);
    free(s->backing_format);
    free(s->data_file_opt);
    free(s->data_file_hdr);
    fq_cipher_free(s->crypt);
    free(s->crypt_info);
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
        char berr[FQ_ERR_MAX] = "";
        if (qcow2_bitmaps_store(s, false, false, berr) < 0)
            fprintf(stderr, "fastqcow: %s: %s; the bitmaps stay in use\n",
                    bs->filename ? bs->filename : "qcow2", berr);
        if (qcow2_writeback(s) == 0 && qcow2_data_flush(s) == 0 &&
            fq_bdev_flush_sync(s->file) == 0)
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
    if (qcow2_has_data_file(s)) {
        (void)qcow2_data_file_name(s, out->data_file, sizeof(out->data_file));
        out->data_file_raw = qcow2_data_raw(s);
    }
    if (s->crypt_info)
        out->encrypt = *s->crypt_info;
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
        for (uint64_t c = 0; c < n; c++) {
            /* a refcount block past the end of the file counts nothing
             * (qemu reads it as zeros); a damaged table entry reports the
             * corruption, as qemu's map does */
            uint64_t ri = c >> s->rb_bits;
            if (ri < s->rt_entries && (s->rt[ri] >= f.file_size ||
                                       (!s->rt[ri] && !qcow2_rt_unaligned(s, ri))))
                continue;
            if (qcow2_get_refcount(s, c, &rc) == 0 && rc)
                used++;
        }
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
        if (!qcow2_has_data_file(s) && s->file->ops->map && sparse_prealloc(s)) {
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
    if (x.has_host && !s->crypt_method) {   /* encrypted data: no offset to read it at */
        out->flags |= FQ_MAP_OFFSET | (qcow2_has_data_file(s) ? FQ_MAP_DATA_FILE : 0);
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
 * first: making room by writing one back runs the ordered write-back. A
 * refcount block may be written alone at any time. Without blocking, both
 * start (or join) the asynchronous write-back. */
static const struct qcache_hooks l2_hooks = {
    .what = "L2 table", .tag = FQ_TAG_L2,
    .check_write = qcow2_check_meta_write, .evict_dirty = qcow2_writeback,
    .evict_dirty_async = qcow2_wb_evict,
};
static const struct qcache_hooks rb_hooks = {
    .what = "refcount block", .tag = FQ_TAG_REFBLOCK,
    .check_write = qcow2_check_meta_write, .evict_dirty_async = qcow2_wb_evict,
};

#define DEFAULT_L2_CACHE_MAX (32ull << 20)
#define DEFAULT_CLEAN_INTERVAL 600
#define MIN_L2_ENTRIES 2
#define MIN_REFCOUNT_ENTRIES 4

/* Size the caches as qemu sizes them from cache-size, l2-cache-size,
 * refcount-cache-size, l2-cache-entry-size and cache-clean-interval, with
 * its messages for combinations it refuses. */
static int init_caches(struct qcow2 *s, const struct fq_open_opts *o, char *err)
{
    uint64_t cs = s->cluster_size;
    unsigned g = o->cache_given;
    bool comb_set = o->cache_size || (g & FQ_CACHE_GIVEN_SIZE);
    bool l2_set = o->l2_cache_size || (g & FQ_CACHE_GIVEN_L2_SIZE);
    bool rc_set = o->refcount_cache_size || (g & FQ_CACHE_GIVEN_REFCOUNT_SIZE);
    bool es_set = o->l2_cache_entry_size || (g & FQ_CACHE_GIVEN_ENTRY_SIZE);
    bool ci_set = o->cache_clean_interval || (g & FQ_CACHE_GIVEN_CLEAN);
    uint64_t l2 = o->l2_cache_size, rc = o->refcount_cache_size, comb = o->cache_size;
    /* all the L2 tables the disk can have, in whole clusters */
    uint64_t max_l2 = FQ_ALIGN_UP(FQ_DIV_UP(s->bs->size, cs) * s->l2_entry_size, cs);
    uint64_t min_rc = MIN_REFCOUNT_ENTRIES * cs, es = o->l2_cache_entry_size;
    int r;

    if (comb_set) {
        if (l2_set && rc_set) {
            fq_seterr(err, "cache-size, l2-cache-size and refcount-cache-size may not be set "
                           "at the same time");
            return -EINVAL;
        }
        if (l2_set && l2 > comb) {
            fq_seterr(err, "l2-cache-size may not exceed cache-size");
            return -EINVAL;
        }
        if (rc_set && rc > comb) {
            fq_seterr(err, "refcount-cache-size may not exceed cache-size");
            return -EINVAL;
        }
        if (l2_set) {
            rc = comb - l2;
        } else if (rc_set) {
            l2 = comb - rc;
        } else if (comb >= max_l2 + min_rc) {
            l2 = max_l2;        /* as much as useful to the L2 tables */
            rc = comb - l2;
        } else {
            rc = FQ_MIN(comb, min_rc);
            l2 = comb - rc;
        }
    } else {
        if (!l2_set)
            l2 = FQ_MIN(max_l2, DEFAULT_L2_CACHE_MAX);
        if (!rc_set)
            rc = min_rc;
    }
    l2 = FQ_MIN(l2, max_l2);    /* more is never used */
    if (es_set) {
        if (es < 512 || es > cs || (es & (es - 1))) {
            fq_seterr(err, "L2 cache entry size must be a power of two between 512 and the "
                           "cluster size (%llu)", (unsigned long long)cs);
            return -EINVAL;
        }
    } else {
        /* whole tables when they all fit, else slices of 4 KiB, which is
         * what random access over a large disk wants */
        es = l2 >= max_l2 ? cs : FQ_MIN(cs, (uint64_t)4096);
    }
    uint64_t l2n = FQ_MAX(l2 / es, (uint64_t)MIN_L2_ENTRIES);
    uint64_t rcn = FQ_MAX(rc / cs, (uint64_t)MIN_REFCOUNT_ENTRIES);
    if (l2n > INT_MAX) {
        fq_seterr(err, "L2 cache size too big");
        return -EINVAL;
    }
    if (rcn > INT_MAX) {
        fq_seterr(err, "Refcount cache size too big");
        return -EINVAL;
    }
    uint64_t ci = ci_set ? o->cache_clean_interval : DEFAULT_CLEAN_INTERVAL;
    if (ci > UINT_MAX) {
        fq_seterr(err, "Cache clean interval too big");
        return -EINVAL;
    }
    s->clean_interval_ns = ci * 1000000000ull;
    r = qcache_init(&s->l2_cache, s, (size_t)l2n, (uint32_t)es, &l2_hooks);
    if (r == 0)
        r = qcache_init(&s->rb_cache, s, (size_t)rcn, (uint32_t)cs, &rb_hooks);
    if (r < 0)
        fq_seterr(err, "Could not allocate metadata caches");
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
    if (fq_depth_new(opts->max_workers, 0, &s->depth) < 0) {
        free(bs);
        free(s);
        return -ENOMEM;
    }
    s->sparse_prealloc = -1;
    qcow2_rw_init(s);
    bs->readonly = s->readonly;

    r = qcow2_read_header(s, err);
    if (r == 0)
        r = qcow2_data_file_open_check(s, opts, err);
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
        fq_seterr(err, "qcow2: Image is corrupt; cannot be opened read/write");
        r = -EACCES;
        goto fail;
    }
    r = qcow2_load_l1(s, err);
    if (r == 0)
        r = qcow2_load_refcount_table(s, err);
    if (r == 0)
        r = init_caches(s, opts, err);
    if (r == 0)
        r = qcow2_crypt_open(s, opts, err);
    if (r < 0)
        goto fail;
    s->corrupt = (s->incompat & QCOW2_INCOMPAT_CORRUPT) != 0;

    if (!s->readonly) {
        bool rewrite = false;
        /* enabled persistent bitmaps are kept true (bitmap.c); a damaged
         * directory is dropped by clearing the bitmaps bit, as the format
         * says. Other autoclear features are not kept. */
        uint64_t keep = qcow2_has_data_file(s) ? QCOW2_AUTOCLEAR_DATA_RAW : 0;
        if (s->autoclear & QCOW2_AUTOCLEAR_BITMAPS) {
            char berr[FQ_ERR_MAX] = "";
            r = qcow2_bitmaps_track(s, berr);
            if (r == 0)
                keep |= QCOW2_AUTOCLEAR_BITMAPS;
            else if (r != -EINVAL) {
                fq_seterr(err, "%s", berr);
                goto fail;
            }
            else
                qcow2_bitmaps_free(s);
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
    /* this image calls the child's io_sync for metadata while its own
     * requests run: a child with metadata of its own keeps it synchronous */
    child->sync_parent = true;
    *out = bs;
    return 0;
fail:
    qcow2_free_state(s);
    free(bs->filename);
    free(bs);
    return r;
}
