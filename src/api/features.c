/* features.c: the public whole-image calls of fastqcow.h ("image
 * features"): snapshots, resize, amend, the VM state area and measure.
 * Each checks its arguments and calls the operation of the image's format
 * driver (driver.h), which fails with -ENOTSUP where the format has none.
 * SPDX-License-Identifier: MIT
 */
#include <stdio.h>

#include "api/api.h"
#include "core/core.h"
#include "util.h"

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
    struct fq_bdev *bs = fq_image_bdev(img);

    *out = NULL;
    *count = 0;
    return bs->ops->snapshot_list ? bs->ops->snapshot_list(bs, out, count) : -ENOTSUP;
}

/* The device behind a snapshot call, or NULL with `err` set. */
static struct fq_bdev *snapshot_target(struct fq_image *img, char *err)
{
    struct fq_bdev *bs = fq_image_bdev(img);

    if (!bs->ops->snapshot_create) {
        fq_seterr(err, "Snapshots need a qcow2 image (this one is %s)", fq_format(img));
        return NULL;
    }
    return bs;
}

int fq_snapshot_create(struct fq_image *img, const char *name, char *err)
{
    struct fq_bdev *bs = snapshot_target(img, err);

    return bs ? bs->ops->snapshot_create(bs, name, err) : -ENOTSUP;
}

int fq_snapshot_apply(struct fq_image *img, const char *which, char *err)
{
    struct fq_bdev *bs = snapshot_target(img, err);

    return bs && bs->ops->snapshot_apply ? bs->ops->snapshot_apply(bs, which, err) : -ENOTSUP;
}

int fq_snapshot_delete(struct fq_image *img, const char *which, char *err)
{
    struct fq_bdev *bs = snapshot_target(img, err);

    return bs && bs->ops->snapshot_delete ? bs->ops->snapshot_delete(bs, which, err) : -ENOTSUP;
}

/* ---- resize, amend ---- */

int fq_resize(struct fq_image *img, uint64_t size, unsigned flags, char *err)
{
    struct fq_bdev *bs = fq_image_bdev(img);

    if (bs->readonly) {
        fq_seterr(err, "The image is opened read-only");
        return -EROFS;
    }
    if (flags & ~(FQ_RESIZE_SHRINK | FQ_RESIZE_DISCARD_DATA | FQ_RESIZE_KEEP_DATA)) {
        fq_seterr(err, "Unknown resize flags 0x%x", flags);
        return -EINVAL;
    }
    if (!bs->ops->resize) {
        fq_seterr(err, "Format driver '%s' does not support resizing", fq_format(img));
        return -ENOTSUP;
    }
    return bs->ops->resize(bs, size, flags, err);
}

void fq_amend_opts_init(struct fq_amend_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->lazy_refcounts = -1;
    o->data_file_raw = -1;
}

int fq_amend(struct fq_image *img, const struct fq_amend_opts *o, char *err)
{
    struct fq_bdev *bs = fq_image_bdev(img);
    int r;

    if (!bs->ops->amend) {
        fq_seterr(err, "Format driver '%s' does not support option amendment", fq_format(img));
        return -ENOTSUP;
    }
    r = bs->ops->amend(bs, o, err);
    if (r == 0 && o->backing_file)
        r = bs->ops->set_backing ? bs->ops->set_backing(bs, o->backing_file, o->backing_format, err)
                                 : -ENOTSUP;
    return r;
}

/* ---- VM state ---- */

/* Both directions: checks, the driver's call, a write-through flush. */
static int vmstate_rw(struct fq_image *img, void *buf, size_t len, uint64_t pos, bool write)
{
    struct fq_bdev *bs = fq_image_bdev(img);
    int r;

    if (!bs->ops->vmstate_rw)
        return -ENOTSUP;
    if (pos % 512 || len % 512)
        return -EINVAL;
    if (write && bs->readonly)
        return -EROFS;
    if (bs->ops->busy && bs->ops->busy(bs))
        return -EBUSY;
    r = bs->ops->vmstate_rw(bs, buf, len, pos, write);
    if (r == 0 && write)
        r = fq_image_flush_if_writethrough(img);
    return r;
}

int fq_vmstate_pread(struct fq_image *img, void *buf, size_t len, uint64_t pos)
{
    return vmstate_rw(img, buf, len, pos, false);
}

int fq_vmstate_pwrite(struct fq_image *img, const void *buf, size_t len, uint64_t pos)
{
    return vmstate_rw(img, (void *)buf, len, pos, true);
}

/* ---- measure ---- */

int fq_measure(const struct fq_create_opts *t, struct fq_image *src,
               struct fq_measure_result *out, char *err)
{
    const char *fmt = t->format ? t->format : "qcow2";
    const struct fq_driver *d = fq_driver_find(fmt);

    memset(out, 0, sizeof(*out));
    if (!d || !d->measure) {
        fq_seterr(err, "Block driver '%s' does not support size measurement", fmt);
        return -ENOTSUP;
    }
    return d->measure(t, src ? fq_image_bdev(src) : NULL, out, err);
}
