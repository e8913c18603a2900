/* bitmap.c: the public calls on persistent dirty bitmaps beyond the list
 * (image.c): change, merge, status. Each checks its arguments and calls
 * the format driver's operation (driver.h); a merge between two images
 * reads the source's runs and sets them in the destination, so that no
 * driver calls into another image.
 * SPDX-License-Identifier: MIT
 */
#include <stdio.h>

#include "api/api.h"
#include "core/core.h"
#include "util.h"

/* The device behind a bitmap call that may change it, or NULL with err. */
static struct fq_bdev *target(struct fq_image *img, bool write, int *r, char *err)
{
    struct fq_bdev *bs = fq_image_bdev(img);

    if (err)
        err[0] = '\0';
    if (!bs->ops->bitmap_change) {
        fq_seterr(err, "Can't store persistent bitmaps to '%s': Operation not supported",
                  bs->filename ? bs->filename : fq_format(img));
        *r = -ENOTSUP;
        return NULL;
    }
    if (write && bs->readonly) {
        fq_seterr(err, "The image is opened read-only");
        *r = -EROFS;
        return NULL;
    }
    if (write && bs->ops->busy && bs->ops->busy(bs)) {
        fq_seterr(err, "The image has requests in flight");
        *r = -EBUSY;
        return NULL;
    }
    return bs;
}

int fq_bitmap_change(struct fq_image *img, const char *name, enum fq_bitmap_op op,
                     uint64_t granularity, char *err)
{
    int r = 0;
    struct fq_bdev *bs = target(img, true, &r, err);

    if (!bs)
        return r;
    if (op < FQ_BITMAP_ADD || op > FQ_BITMAP_STORE || (!name && op != FQ_BITMAP_STORE)) {
        fq_seterr(err, "Invalid bitmap operation");
        return -EINVAL;
    }
    r = bs->ops->bitmap_change(bs, name ? name : "", (int)op, granularity, err);
    return r == 0 ? fq_image_flush_if_writethrough(img) : r;
}

int fq_bitmap_merge(struct fq_image *img, const char *name, struct fq_image *src,
                    const char *src_name, char *err)
{
    int r = 0;
    struct fq_bdev *bs = target(img, true, &r, err), *sb;
    uint64_t off = 0, size;

    if (!bs)
        return r;
    if (!(sb = target(src, false, &r, err)))
        return r;
    /* both bitmaps must exist and be usable before anything changes */
    if ((r = bs->ops->bitmap_set(bs, name, 0, 0, err)) < 0)
        return r;
    size = sb->size;
    while (off < size) {
        uint64_t run;
        bool dirty;
        if ((r = sb->ops->bitmap_status(sb, src_name, off, size - off, &run, &dirty, err)) < 0)
            return r;
        if (run == 0)
            break;
        if (dirty && (r = bs->ops->bitmap_set(bs, name, off, run, err)) < 0)
            return r;
        off += run;
    }
    if ((r = bs->ops->bitmap_change(bs, name, FQ_BITMAP_STORE, 0, err)) < 0)
        return r;
    return fq_image_flush_if_writethrough(img);
}

int fq_bitmap_status(struct fq_image *img, const char *name, uint64_t off, uint64_t len,
                     uint64_t *run, int *dirty, char *err)
{
    int r = 0;
    struct fq_bdev *bs = target(img, false, &r, err);
    bool d = false;

    *run = 0;
    *dirty = 0;
    if (!bs)
        return r;
    r = bs->ops->bitmap_status(bs, name, off, len, run, &d, err);
    *dirty = d;
    return r;
}
