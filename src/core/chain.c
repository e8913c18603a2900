/* chain.c: opening a whole device stack from a filename: the file
 * (protocol driver), the format driver on it (probed only when the
 * caller gives none), and the backing chain the image records: the
 * backing format from the image (or the caller; probed only when asked),
 * loops recognized by file identity, at most MAX_CHAIN_DEPTH layers; the
 * deepest failure's message is passed up as it is.
 * SPDX-License-Identifier: MIT
 */
#include <stdio.h>
#include <sys/stat.h>
#include <sys/vfs.h>

#include "core/core.h"
#include "util.h"

/* The defaults of every open option (the public fq_open_opts_init; here
 * because drivers open images too). */
void fq_open_opts_init(struct fq_open_opts *o)
{
    memset(o, 0, sizeof(*o));
}

#define MAX_CHAIN_DEPTH 256

/* Resolve a backing file name relative to the directory of `image` (a
 * name with a protocol, or the backing file of an image opened through
 * one, is taken as it is). */
static char *resolve_backing(const char *image, const char *name)
{
    if (!strncmp(image, "file:", 5))
        image += 5;
    if (!strncmp(name, "file:", 5))
        return strdup(name);   /* taken as written, as qemu takes it */
    const char *slash = strrchr(image, '/');
    size_t dl = slash ? (size_t)(slash - image) + 1 : 0;
    char *p;

    if (name[0] == '/' || dl == 0 || strstr(name, "://") || fq_protocol_of(name) ||
        fq_protocol_of(image) || fq_blockopts_is_name(name) || fq_blockopts_is_name(image))
        return strdup(name);
    p = malloc(dl + strlen(name) + 1);
    if (p) {
        memcpy(p, image, dl);
        strcpy(p + dl, name);
    }
    return p;
}

/* May a backing file name read from an image use protocol `proto`? Only
 * if the caller's list names it (or says "all"). */
static bool protocol_allowed(const char *list, const char *proto)
{
    size_t n = strlen(proto);

    for (const char *p = list; p && *p;) {
        const char *e = strchr(p, ',');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        if ((l == n && !memcmp(p, proto, n)) || (l == 3 && !memcmp(p, "all", 3)))
            return true;
        p = e ? e + 1 : NULL;
    }
    return false;
}

#define PROC_FS_MAGIC 0x9fa0
#define SYS_FS_MAGIC 0x62656572

/* May an image name `name` as its external data file? The image is
 * untrusted input: its name is a plain file name (no protocol, no json:
 * or other prefix, never a server), used as given (relative names from
 * the working directory, as the image's creator gave them) and naming a
 * regular file outside /proc and /sys (never a device or a kernel file).
 * The caller's own data-file option is not held to this. */
static int data_name_allowed(const char *name, char *err)
{
    struct stat st;
    struct statfs sf;
    const char *colon = strchr(name, ':');
    const char *slash = strchr(name, '/');

    if (!name[0]) {
        fq_seterr(err, "the image names an empty external data file name");
        return -EINVAL;
    }
    if (fq_protocol_of(name) || (colon && (!slash || colon < slash))) {
        fq_seterr(err, "the image names its external data file '%s', which is not a plain file "
                  "name; a name read from an image may not use a protocol or prefix (give the "
                  "data file explicitly: data-file=FILENAME)", name);
        return -EPERM;
    }
    if (stat(name, &st) < 0) {
        fq_seterr(err, "Could not open '%s': %s", name, strerror(errno));
        return -errno;
    }
    if (!S_ISREG(st.st_mode) ||
        (statfs(name, &sf) == 0 && (sf.f_type == PROC_FS_MAGIC || sf.f_type == SYS_FS_MAGIC))) {
        fq_seterr(err, "the image names its external data file '%s', which is not a regular "
                  "file; a name read from an image must be one (give the data file explicitly: "
                  "data-file=FILENAME)", name);
        return -EPERM;
    }
    return 0;
}

/* Open the external data file `top` needs, if any, in the mode and with
 * the locks of the image's own file (`fflags`), and hand it over. */
static int open_data_file(struct fq_ctx *ctx, const char *image, struct fq_bdev *top,
                          unsigned fflags, const struct fq_open_opts *opts, char *err)
{
    const char *name = NULL;
    bool from_image = false;
    struct fq_bdev *df;
    struct stat a, b;
    int r;

    if (opts->no_data_file || !top->ops->data_file || !top->ops->set_data_file)
        return 0;
    r = top->ops->data_file(top, &name, &from_image);
    if (r < 0 || !name)
        return r == -ENOTSUP ? 0 : r;
    if (from_image && (r = data_name_allowed(name, err)) < 0)
        return r;
    if (stat(image, &a) == 0 && stat(name, &b) == 0 && a.st_dev == b.st_dev &&
        a.st_ino == b.st_ino) {
        /* guest data would overwrite the image's own metadata */
        fq_seterr(err, "The external data file '%s' is the image file itself", name);
        return -EINVAL;
    }
    r = fq_bdev_open_file(ctx, name, fflags, &df, err);
    if (r < 0)
        return r;
    r = top->ops->set_data_file(top, df, err);
    if (r < 0)
        fq_bdev_close(df);
    return r;
}

/* The files opened so far down one chain, to recognize a loop whatever
 * the spelling of the name (relative, absolute, through a symlink). */
struct chain_seen {
    const struct chain_seen *up;
    dev_t dev;
    ino_t ino;
};

/* The refusal of a backing name that would use protocol `proto` (or a
 * json: name, proto "json") not allowed by the caller. Returns -EPERM. */
static int refuse_protocol(char *err, const char *proto)
{
    fq_seterr(err, "the image names a backing file over the %s protocol, which a "
              "backing file name read from an image may not use unless allowed "
              "(--allow-backing-protocol %s)", proto, proto);
    return -EPERM;
}

/* May a backing file name read from an image (`filename`, with the
 * options `spec` it was spelled with, or NULL) be opened? json: names,
 * and every protocol but plain files it uses (its own, a filter's
 * image's), need the caller's leave (opts->backing_protocols). Returns 0
 * or -EPERM with why in err. */
static int backing_name_allowed(const struct fq_open_opts *opts, const char *filename,
                                const struct fq_blockopts *spec, char *err)
{
    const struct fq_driver *proto = fq_protocol_of(filename);

    if (spec && spec->json && !protocol_allowed(opts->backing_protocols, "json"))
        return refuse_protocol(err, "json");
    if (spec && spec->protocol && strcmp(spec->protocol, "file")) {
        const struct fq_driver *d = fq_driver_find(spec->protocol);
        if (!protocol_allowed(opts->backing_protocols, spec->protocol))
            return refuse_protocol(err, spec->protocol);
        if (!d || !d->filter)
            proto = NULL;   /* the protocol's own name, not another's */
    }
    if (proto && !protocol_allowed(opts->backing_protocols, proto->name))
        return refuse_protocol(err, proto->name);
    return 0;
}

/* Open the layer's file: with the protocol its options name (a filter
 * over the device of its image's name), else the one that claims the
 * name (fq_bdev_open_file). */
static int open_layer_file(struct fq_ctx *ctx, const char *filename, unsigned fflags,
                           const struct fq_blockopts *spec, struct fq_bdev **out, char *err)
{
    const struct fq_driver *d = spec && spec->protocol ? fq_driver_find(spec->protocol) : NULL;
    struct fq_bdev *child = NULL;
    int r;

    if (spec && !d && !strcmp(spec->filename, filename))
        d = fq_driver_find("file");   /* an option's file name is a file's */
    if (!d)
        return fq_bdev_open_file(ctx, filename, fflags, out, err);
    if (!d->open_opts)
        return d->open_file(ctx, filename, fflags, out, err);
    if (d->filter && (r = open_layer_file(ctx, filename, fflags, NULL, &child, err)) < 0)
        return r;
    r = d->open_opts(ctx, filename, fflags, spec, spec->proto_prefix, child, out, err);
    if (r < 0 && child)
        fq_bdev_close(child);
    return r;
}

static int open_chain(struct fq_ctx *ctx, const char *filename, const char *format,
                      const struct fq_open_opts *opts, int depth, const struct chain_seen *up,
                      struct fq_bdev **out, char *err);

/* open_chain of a name that is an option list (a json: or blkdebug: name
 * read from an image): its options applied over `opts`, then checked
 * against the format opened. */
static int open_chain_spec(struct fq_ctx *ctx, const char *filename, const char *format,
                           const struct fq_open_opts *opts, int depth, const struct chain_seen *up,
                           struct fq_bdev **out, char *err)
{
    struct fq_blockopts spec;
    struct fq_open_opts so = *opts;
    int r;

    so.format = format;
    fq_blockopts_init(&spec);
    r = 0;
    if ((depth > 0 || opts->name_from_image) && !strncmp(filename, "json:", 5) &&
        !protocol_allowed(opts->backing_protocols, "json"))
        r = refuse_protocol(err, "json");
    else if ((depth > 0 || opts->name_from_image) && !strncmp(filename, "blkdebug:", 9) &&
             !protocol_allowed(opts->backing_protocols, "blkdebug"))
        r = refuse_protocol(err, "blkdebug");
    if (r == 0)
        r = fq_blockopts_parse(filename, &spec, err);
    if (r == 0 && (depth > 0 || opts->name_from_image))
        r = backing_name_allowed(opts, filename, &spec, err);
    if (r == 0)
        r = fq_blockopts_apply(&spec, &so, err);
    so.spec = &spec;
    if (r == 0)
        r = open_chain(ctx, spec.filename, so.format, &so, depth, up, out, err);
    if (r == 0 && (r = fq_blockopts_check_format(&spec, (*out)->ops->name, err)) < 0) {
        fq_bdev_close(*out);
        *out = NULL;
    }
    fq_blockopts_free(&spec);
    return r;
}

static int open_chain(struct fq_ctx *ctx, const char *filename, const char *format,
                      const struct fq_open_opts *opts, int depth, const struct chain_seen *up,
                      struct fq_bdev **out, char *err)
{
    struct fq_bdev *file = NULL, *top = NULL;
    bool ro = opts->readonly || depth > 0;
    unsigned fflags = 0;
    struct chain_seen me = { up, 0, 0 };
    struct stat st;
    int r;

    if (depth > MAX_CHAIN_DEPTH) {
        fq_seterr(err, "Backing chain is deeper than %d images at '%s'", MAX_CHAIN_DEPTH, filename);
        return -ELOOP;
    }
    if (!opts->spec && fq_blockopts_is_name(filename))
        return open_chain_spec(ctx, filename, format, opts, depth, up, out, err);
    /* an image is untrusted: its backing name opens no server unasked */
    if ((depth > 0 || opts->name_from_image) &&
        (r = backing_name_allowed(opts, filename, opts->spec, err)) < 0)
        return r;
    if (stat(!strncmp(filename, "file:", 5) ? filename + 5 : filename, &st) == 0) {
        me.dev = st.st_dev;
        me.ino = st.st_ino;
        for (const struct chain_seen *c = up; c; c = c->up)
            if (c->dev == me.dev && c->ino == me.ino) {
                fq_seterr(err, "Backing file '%s' creates an infinite loop.", filename);
                return -ELOOP;
            }
    }
    if (opts->force_share && !opts->readonly && depth == 0) {
        fq_seterr(err, "Could not open '%s': force-share=on can only be used with read-only images",
                  filename);
        return -EINVAL;
    }
    /* the file driver locks each file as it opens it: backing files are
     * read-only, and a forced share goes down the whole chain */
    if (ro)
        fflags |= FQ_FILE_RDONLY | (opts->force_share ? FQ_FILE_SHARE : 0);
    if (opts->cache == FQ_CACHE_NONE || opts->cache == FQ_CACHE_DIRECTSYNC)
        fflags |= FQ_FILE_DIRECT;
    /* unsafe: no flush reaches the disk, not even the ones a format
     * orders its metadata with (a crash may then leave any state) */
    if (opts->cache == FQ_CACHE_UNSAFE)
        fflags |= FQ_FILE_NOFLUSH;
    if (opts->no_readahead)
        fflags |= FQ_FILE_NORA;
    r = open_layer_file(ctx, filename, fflags, opts->spec, &file, err);
    if (r < 0)
        return r;
    if (opts->file_format && depth == 0) {
        /* nesting: this image lives inside another image's guest view */
        struct fq_open_opts inner = *opts;
        struct fq_bdev *container;
        inner.file_format = NULL;
        inner.data_file = NULL;
        inner.no_data_file = 1;
        inner.no_backing = 1;
        inner.readonly = ro;
        r = fq_bdev_open_format(file, opts->file_format, &inner, &container, err);
        if (r < 0) {
            fq_bdev_close(file);
            return r;
        }
        file = container;
    }
    struct fq_open_opts fo = *opts;
    fo.readonly = ro;
    r = fq_bdev_open_format(file, format, &fo, &top, err);
    if (r < 0) {
        fq_bdev_close(file);
        return r;
    }
    r = open_data_file(ctx, filename, top, fflags, depth ? &(struct fq_open_opts){ .no_data_file =
                       opts->no_data_file } : opts, err);
    if (r < 0) {
        fq_bdev_close(top);
        return r;
    }
    const char *bname = NULL, *bfmt = NULL;
    if (!opts->no_backing && fq_bdev_backing(top, &bname, &bfmt) == 0 && bname) {
        char *path = resolve_backing(filename, bname);
        char berr[FQ_ERR_MAX] = "";
        struct fq_open_opts bo = *opts;
        bo.spec = NULL;
        bo.file_format = NULL;
        bo.data_file = NULL;
        bo.check_mode = 0;
        /* "probe" (asked for explicitly) guesses the format of every
         * backing file down the chain that records none */
        bool probe = opts->backing_format && !strcmp(opts->backing_format, "probe");
        if (depth == 0 && opts->backing_format && !probe)
            bfmt = opts->backing_format;
        bo.backing_format = probe ? opts->backing_format : NULL;
        if (!bfmt && !probe) {
            /* never guess unasked: a raw disk could start with qcow2's magic */
            snprintf(berr, sizeof(berr), "the image records no backing format; give it "
                     "explicitly (--backing-format FMT) or ask for probing "
                     "(--backing-format probe)");
            r = -EINVAL;
        } else {
            r = path ? open_chain(ctx, path, bfmt, &bo, depth + 1, &me, &top->backing, berr)
                     : -ENOMEM;
        }
        if (r < 0) {
            /* the deepest failure names its file: pass it up as it is */
            static const char nested[] = "Could not open backing file";
            if (!memcmp(berr, nested, FQ_MIN(sizeof(nested) - 1, strlen(berr) + 1)) || r == -ELOOP)
                fq_seterr(err, "%s", berr);
            else if (!strncmp(berr, "Could not open '", 16))
                fq_seterr(err, "Could not open backing file: %s", berr);   /* names it */
            else
                fq_seterr(err, "Could not open backing file '%s': %s", path ? path : bname,
                          berr[0] ? berr : strerror(-r));
            free(path);
            fq_bdev_close(top);
            return r;
        }
        free(path);
    }
    *out = top;
    return 0;
}

int fq_bdev_open_chain(struct fq_ctx *ctx, const char *filename, const char *format,
                       const struct fq_open_opts *opts, int depth,
                       struct fq_bdev **out, char *err)
{
    return open_chain(ctx, filename, format, opts, depth, NULL, out, err);
}
