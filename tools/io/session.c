/* io/session.c: the image of a `fastqcow io` run: opening it (from the
 * command line or the open command), closing it and reopening it with
 * other options, with qemu-io 7.2's options and messages.
 *
 * Snapshot mode (-s) opens a temporary qcow2 overlay instead, created in
 * $TMPDIR (default /var/tmp) over the image (recorded by its absolute path
 * and format) and removed when the image is closed: writes land in the
 * overlay and the image is never written.
 *
 * reopen closes the image (after waiting for its requests and flushing
 * it) and opens the same file with the new options, as one step for the
 * user; if the new options cannot be used, the image is opened again with
 * the old ones. Options that cannot change (the driver, the file, node
 * names, anything the format does not know) are refused before anything
 * is closed.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../common/blockopts.h"
#include "commands.h"

/* The options of one open. */
struct how {
    const char *path, *format;
    bool readonly;
    enum fq_cache_mode cache;
    enum fq_engine_kind engine;
    const struct fq_blockopts *caches;   /* the metadata caches asked for, or NULL */
    bool force_share;
};

static void set_str(char **dst, const char *s)
{
    free(*dst);
    *dst = s ? strdup(s) : NULL;
}

/* fq_open with `h`; on success the image becomes io's. */
static int open_how(struct io *io, const struct how *h, char *err)
{
    struct fq_open_opts oo;
    struct fq_image *img;
    int r;

    tool_open_opts_init(&oo);
    oo.format = h->format;
    oo.readonly = h->readonly;
    oo.cache = h->cache;
    oo.engine = h->engine;
    oo.max_workers = io->max_workers;
    if (h->caches)
        fq_blockopts_set_caches(h->caches, &oo);
    oo.force_share = h->force_share;
    /* the list's protocol options (null-co's size...) go with its file */
    if (h->caches && h->caches->filename && !strcmp(h->caches->filename, h->path))
        oo.spec = h->caches;
    if ((r = fq_open(h->path, &oo, &img, err)) < 0) {
        size_t nl = strlen(h->path);
        if (!err[0])
            snprintf(err, FQ_ERR_MAX, "Could not open '%s': %s", h->path, strerror(-r));
        else if (!strncmp(err, "Could not open '", 16) && !strncmp(err + 16, h->path, nl) &&
                 !strncmp(err + 16 + nl, "': ", 3) &&
                 (!strncmp(err + 19 + nl, "Failed to ", 10) ||
                  !strncmp(err + 19 + nl, "force-share", 11)))
            /* a refused lock or share is said as qemu-io says it: without
             * the "Could not open 'NAME': " the library puts first */
            memmove(err, err + 19 + nl, strlen(err + 19 + nl) + 1);
        return r;
    }
    io->img = img;
    io->ctx = fq_image_ctx(img);
    io->readonly = h->readonly;
    io->cache = h->cache;
    io->engine = h->engine;
    io->force_share = h->force_share;
    set_str(&io->path, h->path);
    set_str(&io->format, fq_format(img));
    return 0;
}

/* -s: create a temporary qcow2 overlay over the image `h` names and make
 * `h` name the overlay. Returns 0 or -errno with err set. */
static int make_overlay(struct io *io, struct how *h, char *err)
{
    struct fq_open_opts oo;
    struct fq_create_opts co;
    struct fq_image *base;
    char real[PATH_MAX], fmt[16];
    const char *dir = getenv("TMPDIR");
    int r;

    tool_open_opts_init(&oo);
    oo.format = h->format;
    oo.readonly = 1;
    if ((r = fq_open(h->path, &oo, &base, err)) < 0)
        return r;
    uint64_t size = fq_size(base);
    snprintf(fmt, sizeof(fmt), "%s", fq_format(base));
    fq_close(base);
    if (!realpath(h->path, real)) {
        r = -errno;
        snprintf(err, FQ_ERR_MAX, "Could not resolve '%s': %s", h->path, strerror(errno));
        return r;
    }
    size_t n = strlen(dir && *dir ? dir : "/var/tmp") + 16;
    char *tmp = malloc(n);
    if (!tmp)
        return -ENOMEM;
    snprintf(tmp, n, "%s/vl.XXXXXX", dir && *dir ? dir : "/var/tmp");
    int fd = mkstemp(tmp);
    if (fd < 0) {
        r = -errno;
        snprintf(err, FQ_ERR_MAX, "Could not get temporary filename: %s", strerror(errno));
        free(tmp);
        return r;
    }
    close(fd);
    fq_create_opts_init(&co);
    co.format = "qcow2";
    co.size = size;
    co.backing_file = real;
    co.backing_format = fmt;
    if ((r = fq_create(tmp, &co, err)) < 0) {
        unlink(tmp);
        free(tmp);
        return r;
    }
    free(io->overlay);
    io->overlay = tmp;
    h->path = tmp;
    h->format = "qcow2";
    h->readonly = false;
    return 0;
}

void io_close(struct io *io)
{
    if (!io->img)
        return;
    io_drain(io);
    fq_close(io->img);
    io->img = NULL;
    io->ctx = NULL;
    if (io->overlay)
        unlink(io->overlay);
    set_str(&io->overlay, NULL);
    set_str(&io->path, NULL);
    set_str(&io->format, NULL);
}

/* Check the options of `o` that depend on the format, now that the
 * image's format is known, and refuse those it does not take. Returns 0
 * or -1 (printed, image closed). */
static int check_format_opts(struct io *io, const struct fq_blockopts *o, const char *prefix)
{
    char err[FQ_ERR_MAX];

    if (fq_blockopts_check_format(o, fq_format(io->img), err) == 0)
        return 0;
    tool_error("%s%s", prefix, err);
    io_close(io);
    return -1;
}

int io_open(struct io *io, const struct io_spec *sp)
{
    struct fq_blockopts o;
    struct how h = { 0 };
    char prefix[FQ_ERR_MAX], err[FQ_ERR_MAX] = "";
    const char *name = sp->image_opts ? NULL : sp->name;
    const char *list = sp->image_opts ? sp->name : sp->opts;
    int ret = -1;

    if (io->img) {
        tool_error("file open already, try 'help close'");
        return -1;
    }
    snprintf(prefix, sizeof(prefix), "can't open%s%.400s: ", name ? " device " : "", name ? name : "");
    fq_blockopts_init(&o);
    if (list && tool_blockopts_parse(list, &o, err) < 0) {
        tool_error("%s%s", prefix, err);
        goto out;
    }
    if (name && o.filename) {
        tool_error("%sCan't specify 'file' and 'filename' options at the same time", prefix);
        goto out;
    }
    h.path = name ? name : o.filename;
    if (!h.path) {
        fq_blockopts_no_file(&o, err);
        tool_error("%s%s", prefix, err);
        goto out;
    }
    h.format = o.driver ? o.driver : sp->format;
    if (h.format && strcmp(h.format, "qcow2") && strcmp(h.format, "raw") && strcmp(h.format, "luks")) {
        tool_error("%sUnknown driver '%s'", prefix, h.format);
        goto out;
    }
    if (o.readonly == 1 && !sp->readonly) {
        /* the user of the image writes: only -r opens it read-only */
        tool_error("%sBlock node is read-only", prefix);
        goto out;
    }
    h.readonly = sp->readonly;
    h.force_share = sp->force_share || o.force_share == 1;
    h.cache = fq_blockopts_cache(&o, sp->cache);
    h.engine = o.engine >= 0 ? (enum fq_engine_kind)o.engine : sp->engine;
    if ((sp->native || o.aio_native) && h.cache != FQ_CACHE_NONE && h.cache != FQ_CACHE_DIRECTSYNC) {
        tool_error("%saio=native was specified, but it requires cache.direct=on, which was not "
                   "specified.", prefix);
        goto out;
    }
    h.caches = &o;
    if (sp->snapshot && make_overlay(io, &h, err) < 0) {
        tool_error("%s%s", prefix, err);
        goto out;
    }
    if (open_how(io, &h, err) < 0) {
        tool_error("%s%s", prefix, err);
        if (io->overlay)
            unlink(io->overlay);
        set_str(&io->overlay, NULL);
        goto out;
    }
    tool_warn_probed_raw(h.path, h.format, io->img, !h.readonly);
    if (check_format_opts(io, &o, prefix) < 0)
        goto out;
    io->cor = sp->cor;
    io->unmap = o.discard_unmap >= 0 ? o.discard_unmap : sp->unmap;
    io->detect_zeroes = o.detect_zeroes >= 0 ? o.detect_zeroes : 0;
    ret = 0;
out:
    fq_blockopts_free(&o);
    return ret;
}

/* ---- open and close -------------------------------------------------------- */

int open_f(struct io *io, const struct io_cmd *ct, int argc, char **argv)
{
    struct io_spec sp = { .cache = FQ_CACHE_WRITETHROUGH, .unmap = true };
    char *opts = NULL;
    int c, r = -EINVAL;

    optind = 0;
    while ((c = getopt(argc, argv, "snCro:ki:t:d:U")) != -1) {
        switch (c) {
        case 's': sp.snapshot = true; break;
        case 'n': sp.cache = FQ_CACHE_NONE; break;
        case 'C': sp.cor = true; break;
        case 'r': sp.readonly = true; break;
        case 'k':
            sp.engine = FQ_ENGINE_DEFAULT;      /* as -i native */
            sp.native = true;
            break;
        case 'U': sp.force_share = true; break;
        case 't':
            if (tool_parse_cache(optarg, &sp.cache, "cache") < 0)
                goto out;
            break;
        case 'i':
            if (tool_parse_engine(optarg, &sp.engine) < 0)
                goto out;
            sp.native = !strcmp(optarg, "native");
            break;
        case 'd':
            if (strcmp(optarg, "ignore") && strcmp(optarg, "off") && strcmp(optarg, "unmap") &&
                strcmp(optarg, "on")) {
                tool_error("Invalid discard option: %s", optarg);
                goto out;
            }
            sp.unmap = !strcmp(optarg, "unmap") || !strcmp(optarg, "on");
            break;
        case 'o': {
            if (io->image_opts) {
                printf("--image-opts and 'open -o' are mutually exclusive\n");
                goto out;
            }
            /* several -o lists merge into one */
            size_t n = (opts ? strlen(opts) + 1 : 0) + strlen(optarg) + 1;
            char *m = malloc(n);
            if (!m) {
                r = -ENOMEM;
                goto out;
            }
            snprintf(m, n, "%s%s%s", opts ? opts : "", opts ? "," : "", optarg);
            free(opts);
            opts = m;
            break;
        }
        default:
            r = io_usage(ct);
            goto out;
        }
    }
    sp.opts = opts;
    if (optind < argc - 1) {
        r = io_usage(ct);
        goto out;
    }
    if (optind == argc - 1) {
        sp.name = argv[optind];
        sp.image_opts = io->image_opts;
        if (sp.image_opts)
            sp.opts = NULL;
    }
    r = io_open(io, &sp) < 0 ? -EINVAL : 0;
out:
    free(opts);
    return r;
}

int close_f(struct io *io, const struct io_cmd *ct, int argc, char **argv)
{
    io_close(io);
    return 0;
}

/* ---- reopen ------------------------------------------------------------------ */

/* Check reopen's -o list against what may change. Returns 0 or -1. */
static int reopen_check(struct io *io, const struct fq_blockopts *o)
{
    for (int i = 0; i < o->n; i++) {
        const char *k = o->key[i];
        if (!strcmp(k, "driver") && !strcmp(o->val[i], io->format))
            continue;   /* the same driver again */
        if (!fq_blockopts_reopenable(k, io->format)) {
            /* options of the file are named as the file names them */
            tool_error("Cannot change the option '%s'", strncmp(k, "file.", 5) ? k : k + 5);
            return -1;
        }
    }
    return 0;
}

int reopen_f(struct io *io, const struct io_cmd *ct, int argc, char **argv)
{
    enum fq_cache_mode cache = io->cache;
    bool rw_given = false, cache_given = false, ro = io->readonly;
    struct fq_blockopts o;
    char err[FQ_ERR_MAX] = "";
    int c, r = -EINVAL;

    fq_blockopts_init(&o);
    optind = 0;
    while ((c = getopt(argc, argv, "c:o:rw")) != -1) {
        switch (c) {
        case 'c':
            if (tool_parse_cache(optarg, &cache, "cache") < 0)
                goto out;
            cache_given = true;
            break;
        case 'o':
            fq_blockopts_free(&o);
            if (tool_blockopts_parse(optarg, &o, err) < 0) {
                tool_error("%s", err);
                goto out;
            }
            break;
        case 'r':
        case 'w':
            if (rw_given) {
                tool_error("Only one -r/-w option may be given");
                goto out;
            }
            rw_given = true;
            ro = c == 'r';
            break;
        default:
            r = io_usage(ct);
            goto out;
        }
    }
    if (optind != argc) {
        r = io_usage(ct);
        goto out;
    }
    if (o.readonly >= 0 && rw_given) {
        tool_error("Cannot set both -r/-w and 'read-only'");
        goto out;
    }
    if ((o.direct >= 0 || o.no_flush >= 0) && cache_given) {
        tool_error("Cannot set both -c and the cache options");
        goto out;
    }
    if (reopen_check(io, &o) < 0)
        goto out;
    if (fq_blockopts_check_format(&o, io->format, err) < 0) {
        tool_error("%s", err);
        goto out;
    }
    if (o.readonly == 0 && io->readonly) {
        /* read-only=off alone: what -w does */
        ro = false;
    } else if (o.readonly == 1 && !io->readonly) {
        /* the users of the image still write: only -r drops that */
        tool_error("Read-only block node '#block000' cannot support read-write users");
        goto out;
    }
    struct how h = { io->path, io->format, ro, fq_blockopts_cache(&o, cache), io->engine, &o,
                     io->force_share };
    struct how old = { io->path, io->format, io->readonly, io->cache, io->engine, NULL,
                       io->force_share };
    char *path = strdup(io->path), *fmt = strdup(io->format), *overlay = io->overlay;
    if (!path || !fmt) {
        free(path);
        free(fmt);
        r = -ENOMEM;
        goto out;
    }
    h.path = old.path = path;
    h.format = old.format = fmt;
    io->overlay = NULL;   /* kept across the reopen */
    if ((r = io_drain(io)) == 0)
        r = fq_flush(io->img);
    fq_close(io->img);
    io->img = NULL;
    io->ctx = NULL;
    if (open_how(io, &h, err) < 0) {
        tool_error("%s", err);
        err[0] = '\0';
        if (open_how(io, &old, err) < 0)
            tool_error("%s", err);
        r = -EINVAL;
    }
    io->overlay = overlay;
    if (io->img) {
        if (o.discard_unmap >= 0)
            io->unmap = o.discard_unmap;
        if (o.detect_zeroes >= 0)
            io->detect_zeroes = o.detect_zeroes;
    } else if (overlay) {
        unlink(overlay);
        set_str(&io->overlay, NULL);
    }
    free(path);
    free(fmt);
out:
    fq_blockopts_free(&o);
    return r;
}
