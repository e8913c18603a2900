/* null.c: the null-co protocol driver: a device of a given size that
 * stores nothing, for tests and measurements. Writes, write-zeroes,
 * discards and flushes succeed at once; reads leave the caller's buffer
 * as it is, or fill it with zeros with read-zeroes=on. Its name is
 * "null-co://" (the only one it takes); its options (in a block option
 * list, under "file." or with driver=null-co) are size (default 1 GiB)
 * and read-zeroes. Requests complete from the loop, like any device's.
 * SPDX-License-Identifier: MIT
 */
#include <stdio.h>

#include "driver.h"
#include "util.h"

#define NULL_NAME "null-co://"
#define NULL_DEFAULT_SIZE (1ull << 30)

struct null_priv {
    bool read_zeroes;
};

/* Perform `req` (nothing to store). Returns 0. */
static int null_rw(struct fq_bdev *bs, struct fq_req *req)
{
    struct null_priv *p = bs->priv;

    if (req->op == FQ_OP_READ && p->read_zeroes)
        fq_iov_memset(req->iov, req->iovcnt, req->iov_off, 0, (size_t)req->len);
    return 0;
}

static void null_submit(struct fq_bdev *bs, struct fq_req *req)
{
    fq_req_complete_later(bs, req, null_rw(bs, req));
}

static void null_close(struct fq_bdev *bs)
{
    free(bs->priv);
}

/* One run: zeros (present) with read-zeroes, else nothing known. */
static int null_map(struct fq_bdev *bs, uint64_t off, uint64_t len, struct fq_map_entry *out)
{
    struct null_priv *p = bs->priv;

    memset(out, 0, sizeof(*out));
    out->start = off;
    out->length = len;
    if (p->read_zeroes) {
        out->flags = FQ_MAP_ZERO | FQ_MAP_ALLOCATED | FQ_MAP_OFFSET;
        out->host_offset = off;
    }
    return 0;
}

static int null_truncate(struct fq_bdev *bs, uint64_t size)
{
    bs->size = size;
    return 0;
}

/* It takes no room. */
static int64_t null_length(struct fq_bdev *bs)
{
    (void)bs;
    return 0;
}

static int null_get_info(struct fq_bdev *bs, struct fq_info *out)
{
    memset(out, 0, sizeof(*out));
    out->virtual_size = bs->size;
    return 0;
}

static const struct fq_bdev_ops null_ops = {
    .name = "null-co",
    .identity_map = true,
    .submit = null_submit,
    .io_sync = null_rw,
    .close = null_close,
    .get_info = null_get_info,
    .map = null_map,
    .truncate = null_truncate,
    .file_length = null_length,
};

/* A device of `size` bytes. */
static int null_new(struct fq_ctx *ctx, uint64_t size, bool read_zeroes, unsigned flags,
                    struct fq_bdev **out)
{
    struct fq_bdev *bs = calloc(1, sizeof(*bs));
    struct null_priv *p = calloc(1, sizeof(*p));

    if (!bs || !p || !(bs->filename = strdup(NULL_NAME))) {
        free(bs);
        free(p);
        return -ENOMEM;
    }
    p->read_zeroes = read_zeroes;
    bs->ops = &null_ops;
    bs->ctx = ctx;
    bs->size = size;
    bs->readonly = flags & FQ_FILE_RDONLY;
    bs->align = 1;
    bs->priv = p;
    *out = bs;
    return 0;
}

/* Only "null-co://" names this device. */
static int check_name(const char *filename, char *err)
{
    if (filename && strcmp(filename, NULL_NAME)) {
        fq_seterr(err, "The only allowed filename for this driver is '%s'", NULL_NAME);
        return -EINVAL;
    }
    return 0;
}

static int null_open(struct fq_ctx *ctx, const char *filename, unsigned flags,
                     struct fq_bdev **out, char *err)
{
    int r = check_name(filename, err);

    return r < 0 ? r : null_new(ctx, NULL_DEFAULT_SIZE, false, flags, out);
}

/* Its options: "size", "read-zeroes" under `prefix` (checked by the
 * core's parser already). */
static int null_open_opts(struct fq_ctx *ctx, const char *filename, unsigned flags,
                          const struct fq_blockopts *o, const char *prefix, struct fq_bdev *child,
                          struct fq_bdev **out, char *err)
{
    char k[64];
    const char *v;
    uint64_t size = NULL_DEFAULT_SIZE;
    bool zeroes = false;
    int r;

    (void)child;
    if ((r = check_name(filename, err)) < 0)
        return r;
    snprintf(k, sizeof(k), "%ssize", prefix);
    if ((v = fq_blockopts_get(o, k)) && fq_qsize_parse(v, &size) < 0) {
        fq_seterr(err, "Parameter '%s' expects a size", k);
        return -EINVAL;
    }
    snprintf(k, sizeof(k), "%sread-zeroes", prefix);
    if ((v = fq_blockopts_get(o, k)))
        zeroes = fq_bool_parse(v) == 1;
    return null_new(ctx, size, zeroes, flags, out);
}

static bool null_claims(const char *filename)
{
    return !strncmp(filename, "null-co:", 8);
}

static const struct fq_optdesc null_opts[] = {
    { "filename", FQ_OPT_STR, NULL },
    { "size", FQ_OPT_SIZE, NULL },
    { "read-zeroes", FQ_OPT_BOOL, NULL },
    { NULL, FQ_OPT_STR, NULL },
};

const struct fq_driver fq_driver_null = {
    .name = "null-co",
    .open_file = null_open,
    .claims = null_claims,
    .opts = null_opts,
    .default_name = NULL_NAME,
    .open_opts = null_open_opts,
};
