/* bdev_raw.c: the raw format driver: guest offset == child offset. It adds
 * bounds checks and passes requests straight to its child.
 * SPDX-License-Identifier: MIT
 */
#include "bdev.h"
#include "util.h"

static int raw_check(struct fq_bdev *bs, struct fq_req *req)
{
    if (req->op == FQ_OP_FLUSH)
        return 0;
    if (req->op != FQ_OP_READ && bs->readonly)
        return -EROFS;
    if (req->off > bs->size || req->len > bs->size - req->off)
        return -EINVAL;
    return 0;
}

static void raw_submit(struct fq_bdev *bs, struct fq_req *req)
{
    int r = raw_check(bs, req);

    if (r < 0) {
        fq_req_complete_later(bs, req, r);
        return;
    }
    bs->child->ops->submit(bs->child, req);
}

static int raw_io_sync(struct fq_bdev *bs, struct fq_req *req)
{
    int r = raw_check(bs, req);

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
        if (r == 0 && !strcmp(bs->child->ops->name, "file")) {
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

static const struct fq_bdev_ops raw_ops = {
    .name = "raw",
    .submit = raw_submit,
    .io_sync = raw_io_sync,
    .close = raw_close,
    .get_info = raw_get_info,
    .map = raw_map,
    .truncate = raw_truncate,
};

int fq_raw_open(struct fq_bdev *child, struct fq_bdev **out, char *err)
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
