/* raw.c: the raw format driver: guest offset == child offset. It adds
 * bounds checks and passes requests straight to its child.
 * SPDX-License-Identifier: MIT
 */
#include "driver.h"
#include "util.h"

static void raw_submit(struct fq_bdev *bs, struct fq_req *req)
{
    int r = fq_req_check(bs, req);

    if (r < 0) {
        fq_req_complete_later(bs, req, r);
        return;
    }
    bs->child->ops->submit(bs->child, req);
}

static int raw_io_sync(struct fq_bdev *bs, struct fq_req *req)
{
    int r = fq_req_check(bs, req);

    return r < 0 ? r : bs->child->ops->io_sync(bs->child, req);
}

static void raw_close(struct fq_bdev *bs)
{
}

static int raw_get_info(struct fq_bdev *bs, struct fq_info *out)
{
    int r = 0;

    struct fq_info f;

    strcpy(out->format, "raw");
    out->virtual_size = bs->size;
    memset(&f, 0, sizeof(f));
    if (bs->child->ops->get_info && (r = bs->child->ops->get_info(bs->child, &f)) == 0) {
        out->file_size = f.file_size;
        out->actual_size = f.actual_size;
    }
    return r;
}

static int raw_map(struct fq_bdev *bs, uint64_t off, uint64_t len, struct fq_map_entry *out)
{
    if (bs->child->ops->map && bs->child->ops->map != raw_map) {
        int r = bs->child->ops->map(bs->child, off, len, out);
        if (r == 0 && bs->child->ops->identity_map) {
            out->depth = 0;
            return 0;
        }
    }
    out->start = off;
    out->length = len;
    out->host_offset = off;
    out->flags = FQ_MAP_DATA | FQ_MAP_ALLOCATED | FQ_MAP_OFFSET;
    out->depth = 0;
    return 0;
}

static int raw_truncate(struct fq_bdev *bs, uint64_t size)
{
    int r = bs->child->ops->truncate ? bs->child->ops->truncate(bs->child, size) : -ENOTSUP;

    if (r == 0)
        bs->size = size;
    return r;
}

/* The first offset from `from` on where the image holds data (its size
 * if none): holes of the file do not count. */
static int first_data(struct fq_bdev *bs, uint64_t from, uint64_t *out)
{
    for (uint64_t off = from; off < bs->size;) {
        struct fq_map_entry m;
        int r = raw_map(bs, off, bs->size - off, &m);
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
    *out = bs->size;
    return 0;
}

/* fq_resize: shrinking drops the data past the new end (only holes with
 * FQ_RESIZE_KEEP_DATA). */
static int raw_resize(struct fq_bdev *bs, uint64_t size, unsigned flags, char *err)
{
    int r;

    if (size < bs->size && !(flags & FQ_RESIZE_SHRINK)) {
        fq_seterr(err, "Use the --shrink option to perform a shrink operation.");
        return -EINVAL;
    }
    if (size < bs->size && (flags & FQ_RESIZE_KEEP_DATA)) {
        uint64_t used = bs->size;
        if ((r = first_data(bs, size, &used)) < 0) {
            fq_seterr(err, "Could not read the allocation status: %s", strerror(-r));
            return r;
        }
        if (used < bs->size)
            return fq_shrink_refused(err, size, used);
    }
    r = raw_truncate(bs, size);
    if (r < 0)
        fq_seterr(err, "Could not resize the image: %s", strerror(-r));
    return r;
}

static const struct fq_bdev_ops raw_ops = {
    .name = "raw",
    .identity_map = true,
    .submit = raw_submit,
    .io_sync = raw_io_sync,
    .close = raw_close,
    .get_info = raw_get_info,
    .map = raw_map,
    .truncate = raw_truncate,
    .resize = raw_resize,
};

/* Any content is a raw image: the fallback when nothing else matches. */
static int raw_probe(struct fq_bdev *file)
{
    return 1;
}

static int raw_open(struct fq_bdev *child, const struct fq_open_opts *opts,
                    struct fq_bdev **out, char *err)
{
    struct fq_bdev *bs = calloc(1, sizeof(*bs));

    if (!bs)
        return -ENOMEM;
    bs->ops = &raw_ops;
    bs->ctx = child->ctx;
    bs->size = child->size;
    bs->readonly = child->readonly;
    bs->align = child->align;
    bs->child = child;
    bs->filename = child->filename ? strdup(child->filename) : NULL;
    *out = bs;
    return 0;
}

/* A new raw image: the device sized, its blocks reserved (falloc) or
 * written with zeros (full) when preallocation is asked for. */
static int raw_create(struct fq_bdev *child, const struct fq_create_opts *o, char *err)
{
    int r;

    if (o->backing_file) {
        fq_seterr(err, "raw images do not support backing files");
        return -EINVAL;
    }
    r = child->ops->truncate ? child->ops->truncate(child, o->size) : -ENOTSUP;
    if (r == 0 && o->prealloc == FQ_PREALLOC_FALLOC) {
        struct fq_req z = { .op = FQ_OP_WRITE_ZEROES, .off = 0, .len = o->size };
        r = o->size ? child->ops->io_sync(child, &z) : 0;
    } else if (r == 0 && o->prealloc == FQ_PREALLOC_FULL) {
        const size_t chunk = 1u << 20;
        for (uint64_t off = 0; off < o->size && r == 0; off += chunk)
            r = fq_bdev_pwrite_sync(child, fq_zero_buffer(chunk),
                                    (size_t)FQ_MIN(o->size - off, (uint64_t)chunk), off);
    }
    if (r == 0)
        r = fq_bdev_flush_sync(child);
    if (r < 0)
        fq_seterr(err, "Could not size '%s': %s", child->filename ? child->filename : "the image",
                  strerror(-r));
    return r;
}

/* A raw image needs its virtual size, rounded to sectors. */
static int raw_measure(const struct fq_create_opts *t, struct fq_bdev *src,
                       struct fq_measure_result *out, char *err)
{
    uint64_t size = src ? src->size : t->size;

    memset(out, 0, sizeof(*out));
    out->required = out->fully_allocated = FQ_ALIGN_UP(size, 512);
    return 0;
}

const struct fq_driver fq_driver_raw = {
    .name = "raw",
    .probe = raw_probe,
    .open = raw_open,
    .create = raw_create,
    .measure = raw_measure,
};
