/* registry.c: finding drivers in the registry (fq_drivers) and the calls
 * that go through it: open a file (with the protocol driver that claims
 * its name, else "file"), open or probe a format on a device,
 * create an image, ask a device for its backing file. The core never
 * names a driver; the list itself is drivers/registry.c.
 * SPDX-License-Identifier: MIT
 */
#include <stdio.h>

#include "core/core.h"
#include "util.h"

const struct fq_driver *fq_driver_find(const char *name)
{
    for (const struct fq_driver *const *d = fq_drivers; *d; d++)
        if (!strcmp((*d)->name, name))
            return *d;
    return NULL;
}

const char *fq_format_names(void)
{
    static char names[256];

    if (!names[0]) {
        size_t n = 0;
        for (const struct fq_driver *const *d = fq_drivers; *d; d++)
            if ((*d)->create && n < sizeof(names))
                n += (size_t)snprintf(names + n, sizeof(names) - n, "%s%s", n ? ", " : "",
                                      (*d)->name);
    }
    return names;
}

const struct fq_driver *fq_protocol_of(const char *filename)
{
    for (const struct fq_driver *const *d = fq_drivers; *d; d++)
        if ((*d)->open_file && (*d)->claims && (*d)->claims(filename))
            return *d;
    return NULL;
}

int fq_bdev_open_file(struct fq_ctx *ctx, const char *filename, unsigned flags,
                      struct fq_bdev **out, char *err)
{
    bool plain = !strncmp(filename, "file:", 5);   /* "file:NAME": NAME, colons and all */
    const struct fq_driver *d = plain ? NULL : fq_protocol_of(filename);
    const char *colon = strchr(filename, ':'), *slash = strchr(filename, '/');

    if (plain)
        filename += 5;
    else if (!d && colon && (!slash || colon < slash)) {
        /* "x:..." names protocol x ("./x:..." or "file:x:..." a file) */
        fq_seterr(err, "Unknown protocol '%.*s'", (int)(colon - filename), filename);
        return -ENOENT;
    }
    if (!d)
        d = fq_driver_find("file");

    if (!d || !d->open_file) {
        fq_seterr(err, "No driver opens files");
        return -ENOTSUP;
    }
    return d->open_file(ctx, filename, flags, out, err);
}

/* The format driver that recognizes `file` best. Returns it, or NULL with
 * *r set (a probe failed, or a driver that refuses such images won). */
static const struct fq_driver *probe(struct fq_bdev *file, int *r)
{
    const struct fq_driver *best = NULL;
    int best_score = 0;

    *r = 0;
    for (const struct fq_driver *const *d = fq_drivers; *d; d++) {
        if (!(*d)->probe)
            continue;
        int score = (*d)->probe(file);
        if (score < 0) {
            *r = score;
            return NULL;
        }
        if (score > best_score) {
            best = *d;
            best_score = score;
        }
    }
    if (!best)
        *r = -ENOTSUP;
    return best;
}

int fq_bdev_open_format(struct fq_bdev *file, const char *format, const struct fq_open_opts *opts,
                        struct fq_bdev **out, char *err)
{
    const struct fq_driver *d;
    int r;

    if (!format) {
        if (!(d = probe(file, &r))) {
            fq_seterr(err, "Could not determine the format of '%s': %s",
                      file->filename ? file->filename : "the image", strerror(-r));
            return r;
        }
    } else if (!(d = fq_driver_find(format)) || !d->open) {
        fq_seterr(err, "Unknown format '%s' (supported: %s)", format, fq_format_names());
        return -EINVAL;
    }
    return d->open(file, opts, out, err);
}

int fq_bdev_create_format(struct fq_bdev *child, const struct fq_create_opts *o, char *err)
{
    const char *format = o->format ? o->format : "qcow2";
    const struct fq_driver *d = fq_driver_find(format);

    if (!d || !d->create) {
        fq_seterr(err, "Unknown format '%s' (supported: %s)", format, fq_format_names());
        return -EINVAL;
    }
    return d->create(child, o, err);
}

int fq_bdev_backing(struct fq_bdev *bs, const char **name, const char **fmt)
{
    *name = *fmt = NULL;
    return bs->ops->backing ? bs->ops->backing(bs, name, fmt) : -ENOTSUP;
}
