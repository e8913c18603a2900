/* defrag.c: fq_defrag, the public call of in-place defragmentation. It
 * checks that nothing is in flight on the image's context (the format
 * driver's copies run the loop, which would otherwise run other requests'
 * callbacks in the middle of it) and lends the driver a waiter that drives
 * the context loop.
 * SPDX-License-Identifier: MIT
 */
#include <stdio.h>

#include "api/api.h"
#include "core/ctx.h"
#include "util.h"

void fq_defrag_opts_init(struct fq_defrag_opts *o)
{
    memset(o, 0, sizeof(*o));
}

/* The driver's waiter: run the loop until something completed. */
static int run_loop(void *opaque)
{
    int r = fq_ctx_run(opaque, 0, -1);

    return r < 0 ? r : 0;
}

int fq_defrag(struct fq_image *img, const struct fq_defrag_opts *o,
              struct fq_defrag_stats *stats, char *err)
{
    struct fq_bdev *bs = fq_image_bdev(img);
    struct fq_ctx *ctx = fq_image_ctx(img);
    struct fq_defrag_opts def;
    struct fq_defrag_stats local;
    struct fq_waiter w = { run_loop, ctx };

    if (err)
        err[0] = '\0';
    if (!o) {
        fq_defrag_opts_init(&def);
        o = &def;
    }
    if (!bs->ops->defrag) {
        fq_seterr(err, "Defragmentation needs a qcow2 image (this one is %s)", fq_format(img));
        return -ENOTSUP;
    }
    if (bs->readonly) {
        fq_seterr(err, "The image is opened read-only");
        return -EROFS;
    }
    if (ctx->running) {
        fq_seterr(err, "Defragmentation cannot run from a callback");
        return -EDEADLK;
    }
    if (fq_ctx_inflight(ctx) > 0) {
        fq_seterr(err, "Requests are in flight on the image's context");
        return -EBUSY;
    }
    return bs->ops->defrag(bs, o, stats ? stats : &local, &w, err);
}
