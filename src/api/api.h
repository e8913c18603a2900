/* api.h: what the public API layer lends to tests and to its own files:
 * image handles over device stacks built by hand (test devices), and the
 * device under a handle.
 * SPDX-License-Identifier: MIT
 */
#ifndef FQ_API_H
#define FQ_API_H

#include "driver.h"

/* Wrap a device stack in a public image handle; the image owns `top`. */
int fq_image_from_bdev(struct fq_ctx *ctx, struct fq_bdev *top, enum fq_cache_mode cache,
                       struct fq_image **out);
struct fq_bdev *fq_image_bdev(struct fq_image *img);
/* The cache mode an image was opened with. */
enum fq_cache_mode fq_image_cache_mode(const struct fq_image *img);

/* With a write-through cache mode, flush what a synchronous write-type
 * call just wrote; 0 otherwise. */
int fq_image_flush_if_writethrough(struct fq_image *img);

/* The copy step of fq_commit (commit_copy.c): write into `base` every
 * range `img` allocates itself (data, or zeros), many at once; *done
 * counts the bytes walked, for progress out of `total`. Both images are
 * on one context. */
int fq_commit_copy(struct fq_image *img, struct fq_image *base, const struct fq_commit_opts *o,
                   uint64_t *done, uint64_t total);

#endif
