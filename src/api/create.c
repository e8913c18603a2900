/* create.c: fq_create and the qemu-img style "-o" option parser. The
 * format's driver (found in the registry) writes the new image.
 * SPDX-License-Identifier: MIT
 */
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#include "core/core.h"
#include "util.h"

void fq_create_opts_init(struct fq_create_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->format = "qcow2";
    o->version = 3;
}

static int parse_bool(const char *v, int *out)
{
    if (!strcmp(v, "on") || !strcmp(v, "true") || !strcmp(v, "yes") || !strcmp(v, "1"))
        *out = 1;
    else if (!strcmp(v, "off") || !strcmp(v, "false") || !strcmp(v, "no") || !strcmp(v, "0"))
        *out = 0;
    else
        return -EINVAL;
    return 0;
}

/* Strings parsed from an option list, chained on o->owned. */
struct owned_str {
    struct owned_str *next;
    char s[];
};

static const char *keep_string(struct fq_create_opts *o, const char *v)
{
    size_t n = strlen(v);
    struct owned_str *e = malloc(sizeof(*e) + n + 1);

    if (!e)
        return NULL;
    memcpy(e->s, v, n + 1);
    e->next = o->owned;
    o->owned = e;
    return e->s;
}

void fq_create_opts_release(struct fq_create_opts *o)
{
    struct owned_str *e = o->owned;

    while (e) {
        struct owned_str *next = e->next;
        free(e);
        e = next;
    }
    o->owned = NULL;
}

static int parse_one(struct fq_create_opts *o, const char *key, const char *val, char *err)
{
    uint64_t n;

    if (!strcmp(key, "size")) {
        if (fq_parse_size(val, &o->size) < 0)
            goto bad;
    } else if (!strcmp(key, "cluster_size")) {
        if (fq_parse_size(val, &n) < 0 || n > UINT32_MAX)
            goto bad;
        o->cluster_size = (uint32_t)n;
    } else if (!strcmp(key, "compat")) {
        if (!strcmp(val, "0.10") || !strcmp(val, "v2"))
            o->version = 2;
        else if (!strcmp(val, "1.1") || !strcmp(val, "v3"))
            o->version = 3;
        else
            goto bad;
    } else if (!strcmp(key, "refcount_bits")) {
        char *end;
        unsigned long v = strtoul(val, &end, 10);
        if (*end || v == 0 || v > 64 || (v & (v - 1)))
            goto bad;
        o->refcount_bits = (int)v;
    } else if (!strcmp(key, "lazy_refcounts")) {
        if (parse_bool(val, &o->lazy_refcounts) < 0)
            goto bad;
    } else if (!strcmp(key, "extended_l2")) {
        if (parse_bool(val, &o->extended_l2) < 0)
            goto bad;
    } else if (!strcmp(key, "compression_type")) {
        if (!strcmp(val, "zlib"))
            o->compression_type = 0;
        else if (!strcmp(val, "zstd"))
            o->compression_type = 1;
        else
            goto bad;
    } else if (!strcmp(key, "preallocation")) {
        if (!strcmp(val, "off"))
            o->prealloc = FQ_PREALLOC_OFF;
        else if (!strcmp(val, "metadata"))
            o->prealloc = FQ_PREALLOC_METADATA;
        else if (!strcmp(val, "falloc"))
            o->prealloc = FQ_PREALLOC_FALLOC;
        else if (!strcmp(val, "full"))
            o->prealloc = FQ_PREALLOC_FULL;
        else
            goto bad;
    } else if (!strcmp(key, "backing_file")) {
        if (!(o->backing_file = keep_string(o, val)))
            return -ENOMEM;
    } else if (!strcmp(key, "data_file")) {
        if (!(o->data_file = keep_string(o, val)))
            return -ENOMEM;
    } else if (!strcmp(key, "data_file_raw")) {
        if (parse_bool(val, &o->data_file_raw) < 0)
            goto bad;
    } else if (!strcmp(key, "backing_fmt")) {
        if (!(o->backing_format = keep_string(o, val)))
            return -ENOMEM;
    } else {
        fq_seterr(err, "Invalid parameter '%s'", key);
        return -EINVAL;
    }
    return 0;
bad:
    fq_seterr(err, "Parameter '%s' does not accept value '%s'", key, val);
    return -EINVAL;
}

int fq_create_opts_parse(struct fq_create_opts *o, const char *list, char *err)
{
    char *copy = strdup(list), *save = NULL, *tok;
    int r = 0;

    if (!copy)
        return -ENOMEM;
    for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(tok, '=');
        if (!eq) {
            fq_seterr(err, "Invalid option '%s' (expected key=value)", tok);
            r = -EINVAL;
            break;
        }
        *eq = '\0';
        r = parse_one(o, tok, eq + 1, err);
        if (r < 0)
            break;
    }
    free(copy);
    return r;
}

/* An external data file for a new image: created (emptied once locked,
 * as the image is) and sized to the disk, its name as the caller gave it
 * (the image records it so). */
static int create_data_file(struct fq_ctx *ctx, const struct fq_create_opts *o, char *err)
{
    struct fq_bdev *df;
    int r;

    if (!o->data_file[0]) {
        fq_seterr(err, "Invalid data file name '%s'", o->data_file);
        return -EINVAL;
    }
    r = fq_bdev_open_file(ctx, o->data_file, FQ_FILE_CREATE, &df, err);
    if (r < 0)
        return r;
    if (!df->ops->truncate)
        r = -ENOTSUP;
    else
        r = df->ops->truncate(df, o->size);
    if (r < 0)
        fq_seterr(err, "Could not resize the data file '%s': %s", o->data_file, strerror(-r));
    fq_bdev_close(df);
    return r;
}

int fq_create(const char *filename, const struct fq_create_opts *opts, char *err)
{
    struct fq_create_opts def;
    struct fq_ctx *ctx;
    struct fq_bdev *file;
    const struct fq_driver *d;
    int r;

    if (!opts) {
        fq_create_opts_init(&def);
        opts = &def;
    }
    /* sizes are whole 512-byte sectors, as qemu-img rounds them */
    struct fq_create_opts rounded = *opts;
    rounded.size = FQ_ALIGN_UP(opts->size, (uint64_t)512);
    if (rounded.size < opts->size) {
        fq_seterr(err, "Image size %llu is too large", (unsigned long long)opts->size);
        return -EFBIG;
    }
    opts = &rounded;
    if (!opts->format)
        rounded.format = "qcow2";
    d = fq_driver_find(opts->format);
    if (!d || !d->create) {
        fq_seterr(err, "Unknown format '%s' (supported: %s)", opts->format, fq_format_names());
        return -EINVAL;
    }
    r = fq_ctx_new(FQ_ENGINE_SYNC, &ctx, err);
    if (r < 0)
        return r;
    if (opts->data_file && !strcmp(opts->format, "qcow2") &&
        (r = create_data_file(ctx, opts, err)) < 0) {
        fq_ctx_free(ctx);
        return r;
    }
    if (opts->file_format) {
        /* nesting: create inside the guest view of an existing image */
        struct fq_open_opts oo;
        fq_open_opts_init(&oo);
        oo.no_backing = 1;
        r = fq_bdev_open_chain(ctx, filename, opts->file_format, &oo, 0, &file, err);
        if (r == 0) {
            r = d->create(file, opts, err);
            fq_bdev_close(file);
        }
    } else {
        r = fq_bdev_open_file(ctx, filename, FQ_FILE_CREATE, &file, err);
        if (r == 0) {
            r = d->create(file, opts, err);
            fq_bdev_close(file);
            if (r < 0)
                unlink(filename);
        }
    }
    fq_ctx_free(ctx);
    return r;
}
