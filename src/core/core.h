/* core.h: the core's calls for the layers above it (the public API in
 * src/api, and tests): finding drivers in the registry, opening a device
 * stack from a name, creating an image on a device. Drivers never include
 * this header.
 * SPDX-License-Identifier: MIT
 */
#ifndef FQ_CORE_H
#define FQ_CORE_H

#include "driver.h"

/* The driver named `name`, or NULL. */
const struct fq_driver *fq_driver_find(const char *name);
/* "qcow2, raw": the names of the format drivers, for messages. */
const char *fq_format_names(void);

/* The protocol driver that claims `filename` ("nbd://..."), or NULL for
 * a plain file name. */
const struct fq_driver *fq_protocol_of(const char *filename);
/* Open `filename` (FQ_FILE_* flags) with the protocol driver that claims
 * it, or the driver "file" ("file:NAME": NAME with it, whatever NAME
 * holds); a name with a colon before any '/' that no driver claims is an
 * unknown protocol (-ENOENT). */
int fq_bdev_open_file(struct fq_ctx *ctx, const char *filename, unsigned flags,
                      struct fq_bdev **out, char *err);
/* Open format `format` (NULL: probe) on `file`, which the result owns on
 * success. */
int fq_bdev_open_format(struct fq_bdev *file, const char *format, const struct fq_open_opts *opts,
                        struct fq_bdev **out, char *err);
/* Create an empty image of format o->format on a writable, empty device. */
int fq_bdev_create_format(struct fq_bdev *child, const struct fq_create_opts *o, char *err);
/* The backing file a device records (NULL name: none; -ENOTSUP: the
 * format has no backing files). */
int fq_bdev_backing(struct fq_bdev *bs, const char **name, const char **fmt);

/* Open a whole stack (file, format, backing chain) from a filename. */
int fq_bdev_open_chain(struct fq_ctx *ctx, const char *filename, const char *format,
                       const struct fq_open_opts *opts, int depth,
                       struct fq_bdev **out, char *err);

/* json.c: the JSON object `text` flattened into at most `max` dotted
 * key=value pairs whose strings live in *buf (the caller frees it).
 * Returns 0, or -EINVAL with qemu's message in err. */
int fq_json_flatten(const char *text, char **buf, const char **key, const char **val, char *bare,
                    int max, int *n, char *err);
/* The options `o` as a json:{...} name, qemu's way ("k": v, nested
 * objects for dotted keys). 0, or -ENAMETOOLONG if `len` is too short. */
int fq_json_write(const struct fq_blockopts *o, char *buf, size_t len);

/* Tests: give a depth controller a simulated clock. */
void fq_depth_set_clock(struct fq_depth *d, uint64_t (*clock)(void *), void *arg);

#endif