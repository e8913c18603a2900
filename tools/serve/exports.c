/* exports.c: the images a server exports, opened on its context: the
 * --image-opts lists (parsed by common/blockopts.c), -s (a temporary
 * overlay), -o, and what the handshake tells clients about each export
 * (size, transmission flags, block sizes, metadata contexts).
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../common/blockopts.h"
#include "server.h"

/* -s: a temporary qcow2 overlay over `file` (removed at once: it lives as
 * long as the open image). Returns the open overlay or NULL. */
static struct fq_image *open_overlay(struct server *s, const char *file, const struct fq_open_opts *base)
{
    char err[FQ_ERR_MAX], path[4096], *abs = realpath(file, NULL);
    struct fq_open_opts oo = *base;
    struct fq_image *img;
    const char *tmp = getenv("TMPDIR");

    if (!abs) {
        tool_error("Could not open '%s': %s", file, strerror(errno));
        return NULL;
    }
    oo.readonly = 1;
    if (fq_open(abs, &oo, &img, err) < 0) {
        tool_error("%s", err);
        free(abs);
        return NULL;
    }
    char fmt[16];
    snprintf(fmt, sizeof(fmt), "%s", fq_format(img));
    fq_close(img);
    snprintf(path, sizeof(path), "%s/fastqcow-serve.XXXXXX", tmp && *tmp ? tmp : "/var/tmp");
    int fd = mkstemp(path);
    if (fd < 0) {
        tool_error("cannot create a temporary overlay in %s: %s", tmp ? tmp : "/var/tmp", strerror(errno));
        free(abs);
        return NULL;
    }
    close(fd);
    struct fq_create_opts co;
    fq_create_opts_init(&co);
    co.backing_file = abs;
    co.backing_format = fmt;
    int r = fq_create(path, &co, err);
    free(abs);
    oo = *base;
    oo.format = "qcow2";
    oo.spec = NULL;   /* the list named the file below, not the overlay */
    oo.readonly = s->o->readonly;
    if (r < 0 || fq_open(path, &oo, &img, err) < 0) {
        tool_error("%s", err);
        unlink(path);
        return NULL;
    }
    unlink(path);
    return img;
}

/* Open every export's image on the server's context. */
int exports_open(struct server *s)
{
    const struct serve_opts *o = s->o;
    char err[FQ_ERR_MAX];

    s->nexports = (size_t)o->nexports;
    s->exports = calloc(s->nexports, sizeof(*s->exports));
    s->infos = calloc(s->nexports, sizeof(*s->infos));
    if (!s->exports || !s->infos)
        return -1;
    for (size_t i = 0; i < s->nexports; i++) {
        const struct export_opts *eo = &o->exports[i];
        struct export *e = &s->exports[i];
        struct fq_open_opts oo;
        struct fq_blockopts spec;
        const char *file = eo->image;
        tool_open_opts_init(&oo);
        oo.format = o->format;
        oo.cache = o->cache;
        oo.ctx = s->ctx;
        oo.readonly = o->readonly;
        fq_blockopts_init(&spec);
        if (o->image_opts && (tool_blockopts_parse(eo->image, &spec, err) < 0 ||
                              fq_blockopts_apply(&spec, &oo, err) < 0)) {
            tool_error("Failed to blk_new_open '%s': %s", eo->image, err);
            fq_blockopts_free(&spec);
            return -1;
        }
        if (o->image_opts) {
            file = spec.filename;
            oo.spec = &spec;   /* its protocol's options (read at open) */
        }
        bool ro = oo.readonly;
        int r = 0;
        if (o->snapshot) {
            e->img = open_overlay(s, file, &oo);
            r = e->img ? 0 : -1;
        } else if (fq_open(file, &oo, &e->img, err) < 0) {
            if (o->image_opts)
                tool_error("Failed to blk_new_open '%s': %s", eo->image, err);
            else
                tool_error("%s", err);
            r = -1;
        }
        if (r == 0 && o->image_opts && fq_blockopts_check_format(&spec, fq_format(e->img), err) < 0) {
            tool_error("Failed to blk_new_open '%s': %s", eo->image, err);
            r = -1;   /* closed with the others */
        }
        fq_blockopts_free(&spec);
        if (r < 0)
            return -1;
        uint64_t size = fq_size(e->img);
        if (o->offset > size) {
            tool_error("Offset %llu is past the end of the image (%llu bytes)",
                       (unsigned long long)o->offset, (unsigned long long)size);
            return -1;
        }
        e->name = strdup(eo->name);
        e->description = eo->description ? strdup(eo->description) : NULL;
        e->offset = o->offset;
        e->size = size - o->offset;
        e->readonly = ro;
        e->qcow2 = !strcmp(fq_format(e->img), "qcow2");
        struct fq_info info;
        e->fast_zero = true;
        if (e->qcow2 && fq_get_info(e->img, &info) == 0)
            e->fast_zero = info.version >= 3 || !info.backing_file[0];
        if (meta_export_init(e, o) < 0)
            return -1;

        struct nbd_export_info *ni = &s->infos[i];
        ni->name = e->name;
        ni->description = e->description;
        ni->size = e->size;
        ni->tflags = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA |
                     NBD_FLAG_SEND_CACHE;
        if (ro)
            ni->tflags |= NBD_FLAG_READ_ONLY;
        else
            ni->tflags |= NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES | NBD_FLAG_SEND_FAST_ZERO;
        /* one image and one cache behind every connection: a flush or FUA
         * reply covers what any connection wrote */
        if (s->max_conns > 1)
            ni->tflags |= NBD_FLAG_CAN_MULTI_CONN;
        ni->block_min = 1;
        ni->block_pref = 4096;
        ni->block_max = NBD_MAX_PAYLOAD;
        ni->meta = e->meta;
        ni->nmeta = e->nmeta;
    }
    s->hs_cfg.exports = s->infos;
    s->hs_cfg.nexports = s->nexports;
    return 0;
}

/* Flush and close every image; returns 0 or -1 if a flush failed. */
int exports_close(struct server *s)
{
    int ret = 0;

    for (size_t i = 0; s->exports && i < s->nexports; i++) {
        struct export *e = &s->exports[i];
        if (e->img) {
            int r = fq_close(e->img);
            if (r < 0) {
                tool_error("closing '%s': %s", e->name, strerror(-r));
                ret = -1;
            }
        }
        meta_export_free(e);
        free(e->name);
        free(e->description);
    }
    free(s->exports);
    free(s->infos);
    return ret;
}

