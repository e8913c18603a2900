/* common/image.h: images as the qemu-img compatible subcommands open them
 * (image.c): opening and closing with the tool's messages, and backing
 * files named as qemu names them.
 * SPDX-License-Identifier: MIT
 */
#ifndef FQ_TOOLS_IMAGE_H
#define FQ_TOOLS_IMAGE_H

#include <stdbool.h>
#include <stddef.h>

#include "fastqcow.h"

#define MAX_CHAIN 256  /* longest backing chain that info and map follow */

/* Open an image, printing the library's message on failure. */
struct fq_image *img_open(const char *file, const struct fq_open_opts *o);
/* img_open of `file` (format `fmt`, NULL = probe), read-write if rw, with
 * its backing chain if backing, with cache mode `cache`. Returns NULL
 * after printing. */
struct fq_image *img_open_file(const char *file, const char *fmt, bool rw, bool backing,
                              enum fq_cache_mode cache);
/* Close an image a subcommand changed. `r` is its result so far; if that
 * is 0, a failed close (the final flush) is reported in qemu-img's words
 * and becomes the result. Returns r or fq_close's -errno. */
int img_close(struct fq_image *img, int r);

/* "dir/of/overlay" + "rel": how qemu names a backing file relative to its
 * overlay. Absolute names, and overlays without a directory, keep `rel`. */
void img_path_combine(const char *base, const char *rel, char *out, size_t n);
/* names[d]: the file of layer d of the chain of `file` (format `fmt`,
 * NULL = probe), named as qemu names it; "" after the last layer. names
 * holds MAX_CHAIN + 1 entries. Returns false if the chain comes back to a
 * file already in it (the same file under any name); names[d] of the last
 * layer is then that file. */
bool img_chain_names(const char *file, const char *fmt, char (*names)[4096]);

#endif
