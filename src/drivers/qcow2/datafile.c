/* datafile.c: external data files (incompatible bit "external data file",
 * autoclear bit "raw external data", header extension "external data file
 * name").
 *
 * With a data file, the qcow2 file holds the metadata only: an L2 entry's
 * offset is an offset into the data file (s->data, a second child of the
 * device, bs->data), and data clusters have no refcounts. A data cluster
 * is always placed at the guest offset it maps (host offset == guest
 * offset), so allocating one is choosing that offset; nothing is counted,
 * nothing is freed. With the raw flag the data file stays a valid raw
 * image of the disk: every cluster is mapped at its own offset when the
 * image is made, and what is zeroed or discarded is zeroed in the data
 * file too (rw.c). Compressed clusters and internal snapshots cannot be
 * expressed and are refused.
 *
 * The data file's name comes from the open option data-file (the
 * caller's) or from the header extension (the image's, held by the core
 * to plain, regular files: src/core/chain.c); the core opens it with the
 * image's own mode and locks and hands it over (set_data_file). Until it
 * did (metadata-only opens), guest data I/O fails with -EIO.
 * SPDX-License-Identifier: MIT
 */
#include <stdio.h>

#include "qcow2.h"

/* The extension holding the data file name, or NULL. */
static struct qext *name_ext(struct qcow2 *s)
{
    for (size_t i = 0; i < s->exts.len; i++)
        if (s->exts.ptr[i].type == QEXT_DATA_FILE)
            return &s->exts.ptr[i];
    return NULL;
}

int qcow2_data_file_name(struct qcow2 *s, char *buf, size_t len)
{
    struct qext *x = name_ext(s);

    if (!x || !x->len || memchr(x->data, 0, x->len))
        return -ENOENT;
    snprintf(buf, len, "%.*s", (int)x->len, (const char *)x->data);
    return x->len < len ? 0 : -ENAMETOOLONG;
}

int qcow2_set_data_file_name(struct qcow2 *s, const char *name)
{
    struct qext *x = name_ext(s);
    size_t n = name ? strlen(name) : 0;

    if (!name) {
        if (x) {
            free(x->data);
            *x = s->exts.ptr[--s->exts.len];
        }
        return 0;
    }
    if (n > QCOW2_MAX_DATA_FILE_NAME)
        return -ENAMETOOLONG;
    uint8_t *d = malloc(n ? n : 1);
    if (!d)
        return -ENOMEM;
    memcpy(d, name, n);
    if (x) {
        free(x->data);
        x->data = d;
        x->len = (uint32_t)n;
        return 0;
    }
    struct qext nx = { QEXT_DATA_FILE, (uint32_t)n, d };
    if (qext_vec_push(&s->exts, nx) < 0) {
        free(d);
        return -ENOMEM;
    }
    return 0;
}

int qcow2_data_file_open_check(struct qcow2 *s, const struct fq_open_opts *o, char *err)
{
    char name[QCOW2_MAX_DATA_FILE_NAME + 1];

    free(s->data_file_opt);
    s->data_file_opt = NULL;
    if (!qcow2_has_data_file(s)) {
        if (o->data_file) {
            fq_seterr(err, "'data-file' can only be set for images with an external data file");
            return -EINVAL;
        }
        s->data = s->file;
        return 0;
    }
    if (o->data_file) {
        if (!(s->data_file_opt = strdup(o->data_file)))
            return -ENOMEM;
    } else {
        int r = qcow2_data_file_name(s, name, sizeof(name));
        if (r == -ENOENT) {
            fq_seterr(err, "'data-file' is required for this image");
            return -EINVAL;
        }
        if (r < 0) {
            fq_seterr(err, "The external data file name in the header is longer than %d bytes",
                      QCOW2_MAX_DATA_FILE_NAME);
            return -EINVAL;
        }
    }
    s->data = NULL;     /* until the core hands it over */
    return 0;
}

int qcow2_data_file_op(struct fq_bdev *bs, const char **name, bool *from_image)
{
    struct qcow2 *s = bs->priv;
    struct qext *x;

    *name = NULL;
    *from_image = false;
    if (!qcow2_has_data_file(s))
        return 0;
    if (s->data_file_opt) {
        *name = s->data_file_opt;
        return 0;
    }
    x = name_ext(s);
    if (!x)
        return -EINVAL;
    free(s->data_file_hdr);
    s->data_file_hdr = strndup((const char *)x->data, x->len);
    if (!s->data_file_hdr)
        return -ENOMEM;
    *name = s->data_file_hdr;
    *from_image = true;
    return 0;
}

int qcow2_set_data_file(struct fq_bdev *bs, struct fq_bdev *data, char *err)
{
    struct qcow2 *s = bs->priv;

    if (!qcow2_has_data_file(s) || bs->data) {
        fq_seterr(err, "this image takes no external data file");
        return -EINVAL;
    }
    if (data->align > s->cluster_size) {
        fq_seterr(err, "Cluster size %llu is smaller than the O_DIRECT alignment %u of the data "
                  "file '%s'; open with cache=writeback (or writethrough) instead",
                  (unsigned long long)s->cluster_size, data->align,
                  data->filename ? data->filename : "");
        return -EINVAL;
    }
    if (!s->readonly && data->readonly) {
        fq_seterr(err, "The external data file '%s' is read-only", data->filename ? data->filename : "");
        return -EACCES;
    }
    bs->data = data;
    s->data = data;
    data->sync_parent = true;
    return 0;
}

int qcow2_alloc_data(struct qcow2 *s, uint64_t gc, uint64_t n, uint64_t *host)
{
    if (!qcow2_has_data_file(s))
        return qcow2_alloc_clusters(s, n, host);
    /* the data file holds each cluster at its guest offset */
    *host = gc << s->cluster_bits;
    if (*host > L2E_OFFSET_MASK)
        return -EFBIG;
    return 0;
}

void qcow2_unref_data(struct qcow2 *s, uint64_t host, uint64_t n)
{
    if (!qcow2_has_data_file(s) && n)
        qcow2_update_refcount(s, host, n, -1);
}

int qcow2_data_refuse(struct qcow2 *s, const char *what, char *err)
{
    if (!qcow2_has_data_file(s))
        return 0;
    fq_seterr(err, "%s is not supported with an external data file", what);
    return -ENOTSUP;
}

int qcow2_data_flush(struct qcow2 *s)
{
    if (!qcow2_separate_data(s))
        return 0;
    return fq_bdev_flush_sync(s->data);
}

int qcow2_data_prealloc(struct qcow2 *s, uint64_t from)
{
    uint64_t cs = s->cluster_size, nclusters = FQ_DIV_UP(s->bs->size, cs);

    for (uint64_t gc = from / cs; gc < nclusters;) {
        struct qcache_entry *l2;
        uint64_t idx;
        int r = qcow2_get_l2(s, gc, true, &l2, &idx);
        if (r < 0)
            return r;
        uint64_t k = FQ_MIN(nclusters - gc, qcow2_l2_count(s, l2) - idx);
        for (uint64_t i = 0; i < k; i++) {
            uint64_t e = qcow2_l2e_get(s, l2->data, idx + i);
            if (!(e & (L2E_OFFSET_MASK | L2E_COPIED)))
                /* (extended L2: the subclusters stay unallocated, zeros) */
                qcow2_l2e_set(s, l2->data, idx + i, ((gc + i) * cs) | L2E_COPIED, 0);
        }
        qcache_mark_dirty(l2);
        qcache_put(&s->l2_cache, l2);
        gc += k;
    }
    return 0;
}

int qcow2_data_resize(struct qcow2 *s, uint64_t old_size, char *err)
{
    int r;

    if (!qcow2_has_data_file(s))
        return 0;
    if (!qcow2_separate_data(s)) {
        fq_seterr(err, "The image's external data file is not open");
        return -EIO;
    }
    /* the data file follows the disk's size */
    r = s->data->ops->truncate ? s->data->ops->truncate(s->data, s->bs->size) : -ENOTSUP;
    if (r < 0) {
        fq_seterr(err, "Could not resize the external data file: %s", strerror(-r));
        return r;
    }
    if (qcow2_data_raw(s) && s->bs->size > old_size) {
        /* a raw data file maps the new clusters too */
        if ((r = qcow2_data_prealloc(s, FQ_ALIGN_DOWN(old_size, s->cluster_size))) < 0 ||
            (r = qcow2_writeback(s)) < 0 || (r = qcow2_flush_file(s)) < 0) {
            fq_seterr(err, "Could not map the new clusters: %s", strerror(-r));
            return r;
        }
    }
    return 0;
}

int qcow2_data_amend(struct qcow2 *s, const struct fq_amend_opts *o, char *err)
{
    bool has = qcow2_has_data_file(s);
    int r;

    if (o->version == 2 && has) {
        fq_seterr(err, "Cannot downgrade an image with a data file");
        return -ENOTSUP;
    }
    if (o->data_file && !has) {
        fq_seterr(err, "data-file can only be set for images that use an external data file");
        return -EINVAL;
    }
    if (o->data_file_raw > 0 && !qcow2_data_raw(s)) {
        fq_seterr(err, "data-file-raw cannot be set on existing images");
        return -EINVAL;
    }
    if (o->data_file && (!o->data_file[0] || strlen(o->data_file) > QCOW2_MAX_DATA_FILE_NAME)) {
        fq_seterr(err, "Invalid data file name '%s' (1 to %d bytes)", o->data_file,
                  QCOW2_MAX_DATA_FILE_NAME);
        return -EINVAL;
    }
    if (s->readonly) {
        fq_seterr(err, "The image is read-only");
        return -EROFS;
    }
    bool drop_raw = o->data_file_raw == 0 && qcow2_data_raw(s);
    if (!o->data_file && !drop_raw)
        return 0;
    if (o->data_file && (r = qcow2_set_data_file_name(s, o->data_file)) < 0)
        return r;
    if (drop_raw)
        s->autoclear &= ~QCOW2_AUTOCLEAR_DATA_RAW;
    r = qcow2_write_header(s);
    if (r == 0)
        r = fq_bdev_flush_sync(s->file);
    if (r < 0)
        fq_seterr(err, "Could not update the header: %s", strerror(-r));
    return r;
}
