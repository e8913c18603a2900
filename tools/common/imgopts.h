/* common/imgopts.h: qemu's block options as a key=value list (imgopts.c),
 * the form of `io --image-opts FILE`, `io open -o` and `io reopen -o`:
 * "driver=qcow2,file.filename=disk.qcow2,read-only=on,cache.direct=on".
 * The list is parsed (",," is a comma inside a value; a bare "key" is
 * "key=on", with qemu's deprecation warning) and the generic keys are
 * checked with qemu's messages; once the image is open and its format
 * known, the format's own keys are checked (qcow2's runtime options) and
 * the first key the format does not take is named in `unknown`, for the
 * caller to refuse ("Block format 'raw' does not support the option
 * 'lazy-refcounts'").
 * SPDX-License-Identifier: MIT
 */
#ifndef FQ_TOOLS_IMGOPTS_H
#define FQ_TOOLS_IMGOPTS_H

#include <stdbool.h>
#include <stdint.h>

#include "cli.h"

#define IMGOPTS_MAX 64

/* What a list says; -1 (or NULL) where it says nothing. */
struct imgopts {
    char *buf;                 /* the list's copy the strings point into */
    const char *key[IMGOPTS_MAX], *val[IMGOPTS_MAX];
    int n;
    const char *driver;        /* "driver" ("file" means raw) */
    const char *filename;      /* "file.filename" */
    int readonly, direct, no_flush, discard_unmap, lazy_refcounts;
    uint64_t cache_size;       /* the sum of the cache sizes given (qcow2) */
    const char *unknown;       /* first key no known option takes */
};

/* Parse `list` into `o` (free with imgopts_free) and check the generic
 * keys. Returns 0, or -1 after printing qemu's message as
 * "<prefix><message>" (prefix: "can't open device X: " and the like; may
 * be ""). */
int imgopts_parse(const char *list, struct imgopts *o, const char *prefix);
/* Check the keys of `format` ("qcow2", "raw") and set `unknown`. Returns
 * 0 or -1 after printing. */
int imgopts_check_format(struct imgopts *o, const char *format, const char *prefix);
void imgopts_free(struct imgopts *o);
/* The value given for `key`, or NULL. */
const char *imgopts_get(const struct imgopts *o, const char *key);
/* The cache mode the cache.direct / cache.no-flush keys make of `base`. */
enum fq_cache_mode imgopts_cache(const struct imgopts *o, enum fq_cache_mode base);
/* True if `key` is an option reopen can change on an image of `format`:
 * read-only, cache.*, discard, detect-zeroes and, on qcow2, its caches and
 * policies. */
bool imgopts_reopenable(const char *key, const char *format);

#endif
