/* common/blockopts.h: qemu's block option lists (blockopts.c), the one
 * parser of "driver=qcow2,file.filename=disk.qcow2,read-only=on,..." for
 * every program of the tool that takes them: the qemu-img compatible
 * subcommands under --image-opts (convert's --target-image-opts), io's
 * --image-opts, `open -o` and `reopen -o`, serve's and mount's
 * --image-opts.
 *
 * A list is checked in two steps, as qemu checks it: blockopts_parse
 * takes the list apart (",," is a comma inside a value; a bare "key" is
 * "key=on", "nokey" "key=off", with qemu's deprecation warning) and checks
 * the generic keys; once the image is open and its format known,
 * blockopts_check_format refuses the keys that format does not take and
 * checks the format's own values. Messages are qemu's, without the
 * caller's frame ("Could not open 'LIST': ", "can't open: ", "Failed to
 * blk_new_open 'LIST': "), which each caller adds its way.
 * SPDX-License-Identifier: MIT
 */
#ifndef FQ_TOOLS_BLOCKOPTS_H
#define FQ_TOOLS_BLOCKOPTS_H

#include <stdbool.h>
#include <stdint.h>

#include "cli.h"

#define BLOCKOPTS_MAX 64

/* What a list says; -1 (or NULL) where it says nothing. */
struct blockopts {
    char *buf;                 /* the list's copy the strings point into */
    const char *key[BLOCKOPTS_MAX], *val[BLOCKOPTS_MAX];
    int n;
    const char *driver;        /* "qcow2" or "raw" ("driver=file" is raw) */
    bool protocol;             /* driver=file: the keys are the file's */
    const char *filename;      /* "file.filename" ("filename" of driver=file) */
    int readonly, direct, no_flush, force_share, discard_unmap;
    int detect_zeroes;         /* 0 off, 1 on, 2 unmap */
    int engine;                /* "file.aio": an enum fq_engine_kind */
    bool aio_native;           /* "file.aio=native" (needs cache.direct=on) */
    struct fq_open_opts caches;/* the qcow2 metadata cache keys, as
                                  fq_open_opts_set takes them, and the
                                  secret encrypt.key-secret names */
};

/* A list that says nothing (what blockopts_parse starts from). */
void blockopts_init(struct blockopts *o);
/* Parse `list` into `o` and check its generic keys. Returns 0, or -1 with
 * why in err (FQ_ERR_MAX bytes). Free `o` with blockopts_free either way. */
int blockopts_parse(const char *list, struct blockopts *o, char *err);
void blockopts_free(struct blockopts *o);
/* Once the image is open: -1 with why in err if the list gives an option
 * of the file it does not have, a value the format refuses or an option
 * the format (`format`: "qcow2", "raw") does not have; else 0. */
int blockopts_check_format(const struct blockopts *o, const char *format, char *err);
/* The value given for `key` (the last one), or NULL. */
const char *blockopts_get(const struct blockopts *o, const char *key);
/* The cache mode the cache.direct / cache.no-flush keys make of `base`. */
enum fq_cache_mode blockopts_cache(const struct blockopts *o, enum fq_cache_mode base);
/* Put the metadata cache keys, the data file and the secret of
 * encrypt.key-secret that `o` gives into `oo` (the others stay; the data
 * file's name points into `o`). */
void blockopts_set_caches(const struct blockopts *o, struct fq_open_opts *oo);
/* Put all that `o` says into `oo` for an open of its file: the format,
 * read-only (added to oo's), the cache mode over oo's, the engine,
 * force-share and the caches. Returns 0, or -1 with why in err if the
 * list names no file or asks for aio=native without cache.direct=on. */
int blockopts_apply(const struct blockopts *o, struct fq_open_opts *oo, char *err);
/* qemu's message for a list that names no file into err; returns -1. */
int blockopts_no_file(const struct blockopts *o, char *err);
/* True if `key` is an option reopen can change on an image of `format`:
 * read-only, cache.*, discard, detect-zeroes and, on qcow2, its caches and
 * policies. */
bool blockopts_reopenable(const char *key, const char *format);

/* ---- --image-opts of the qemu-img compatible subcommands --------------- */

/* --image-opts, and convert's --target-image-opts: taken out of the
 * arguments of the subcommands that open images by the dispatcher; the
 * image names they give are then option lists. */
extern bool tool_image_opts, tool_target_image_opts;
/* fq_open of `name`, an option list under --image-opts. Returns 0 or
 * -errno with why in err (empty if the library said nothing); the caller
 * prints it its way (qemu-img: "Could not open 'NAME': why"). */
int tool_open_image(const char *name, const struct fq_open_opts *o, struct fq_image **out,
                    char *err);
/* The file and format an image name names: the name itself (*fmt left as
 * is), or under --image-opts the file of its list and its format when it
 * names one, parsed into *spec, which holds the strings until the caller
 * frees it (blockopts_free). Returns 0 or -1 with why in err. */
int tool_image_name(const char *name, struct blockopts *spec, const char **file, const char **fmt,
                    char *err);

#endif
