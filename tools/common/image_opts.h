/* common/image_opts.h: --image-opts, an image named by qemu's option
 * syntax (image_opts.c).
 * SPDX-License-Identifier: MIT
 */
#ifndef FQ_TOOLS_IMAGE_OPTS_H
#define FQ_TOOLS_IMAGE_OPTS_H

#include "fastqcow.h"

/* Parse "driver=FMT,file.filename=PATH,cache.direct=on,..." (spec is
 * modified, and `o` and *file point into it afterwards) into `o`; *file
 * gets the image's file name. Keys: driver (format), file.filename
 * (filename, file), file.driver=file, file.aio (aio), cache.direct,
 * cache.no-flush, read-only, cache-size. Prints a message and returns -1
 * on anything else. */
int tool_image_opts(char *spec, struct fq_open_opts *o, const char **file);

#endif
