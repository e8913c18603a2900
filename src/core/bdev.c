/* bdev.c: helpers common to all block devices, and opening a device stack
 * (file -> format driver -> backing chain) from a filename.
 * SPDX-License-Identifier: MIT
 */
#include <stdio.h>
#include <sys/stat.h>

#include "bdev.h"
#include "util.h"

struct later {
    struct fq_bh bh;
    struct fq_req *req;
    int ret;
};

static void later_bh(void *opaque)
{
    struct later *l = opaque;
    struct fq_req *req = l->req;
    int ret = l->ret;

    free(l);
    req->cb(req, ret);
}

void fq_req_complete_later(struct fq_bdev *bs, struct fq_req *req, int ret)
{
    static struct later emergency;  /* used only if malloc fails */
    struct later *l = malloc(sizeof(*l));

    if (!l) {
        /* Cannot defer without memory: complete inline as a last resort. */
        (void)emergency;
        req->cb(req, ret);
        return;
    }
    l->req = req;
    l->ret = ret;
    fq_ctx_defer(bs->ctx, &l->bh, later_bh, l);
}

static int rw_sync(struct fq_bdev *bs, enum fq_op op, void *buf, size_t len, uint64_t off,
                   unsigned tag)
{
    struct iovec v = { buf, len };
    struct fq_req req = { .op = op, .off = off, .len = len, .iov = &v, .iovcnt = 1, .tag = tag };

    return bs->ops->io_sync(bs, &req);
}

int fq_bdev_pread_sync(struct fq_bdev *bs, void *buf, size_t len, uint64_t off)
{
    return rw_sync(bs, FQ_OP_READ, buf, len, off, 0);
}

int fq_bdev_pwrite_sync(struct fq_bdev *bs, const void *buf, size_t len, uint64_t off)
{
    return rw_sync(bs, FQ_OP_WRITE, (void *)buf, len, off, FQ_TAG_DATA);
}

int fq_bdev_pwrite_tagged(struct fq_bdev *bs, const void *buf, size_t len, uint64_t off,
                          unsigned tag)
{
    return rw_sync(bs, FQ_OP_WRITE, (void *)buf, len, off, tag);
}

int fq_bdev_flush_sync(struct fq_bdev *bs)
{
    struct fq_req req = { .op = FQ_OP_FLUSH };

    return bs->ops->io_sync(bs, &req);
}

void fq_bdev_close(struct fq_bdev *bs)
{
    if (!bs)
        return;
    bs->ops->close(bs);
    fq_bdev_close(bs->backing);
    fq_bdev_close(bs->child);
    free(bs->filename);
    free(bs);
}

#define MAX_CHAIN_DEPTH 256

/* Open the format driver `format` (NULL = probe) on `file`. */
static int open_format(struct fq_bdev *file, const char *format, const struct fq_open_opts *opts,
                       bool readonly, struct fq_bdev **out, char *err)
{
    if (!format) {
        uint8_t m[6];
        /* a LUKS container is not a raw disk: never hand out its ciphertext */
        if (file->size >= 6 && fq_bdev_pread_sync(file, m, 6, 0) == 0 &&
            !memcmp(m, "LUKS\xba\xbe", 6)) {
            fq_seterr(err, "'%s' is a LUKS encrypted image: encryption is not supported yet",
                      file->filename ? file->filename : "the image");
            return -ENOTSUP;
        }
        format = fq_qcow2_probe(file) ? "qcow2" : "raw";
    }
    if (!strcmp(format, "raw"))
        return fq_raw_open(file, out, err);
    if (!strcmp(format, "qcow2")) {
        struct fq_open_opts o = *opts;
        o.readonly = readonly;
        return fq_qcow2_open(file, &o, out, err);
    }
    fq_seterr(err, "Unknown format '%s' (supported: qcow2, raw)", format);
    return -EINVAL;
}

/* Resolve a backing file name relative to the directory of `image`. */
static char *resolve_backing(const char *image, const char *name)
{
    const char *slash = strrchr(image, '/');
    size_t dl = slash ? (size_t)(slash - image) + 1 : 0;
    char *p;

    if (name[0] == '/' || dl == 0 || strstr(name, "://"))
        return strdup(name);
    p = malloc(dl + strlen(name) + 1);
    if (p) {
        memcpy(p, image, dl);
        strcpy(p + dl, name);
    }
    return p;
}

/* The files opened so far down one chain, to recognize a loop whatever
 * the spelling of the name (relative, absolute, through a symlink). */
struct chain_seen {
    const struct chain_seen *up;
    dev_t dev;
    ino_t ino;
};

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
    if (stat(filename, &st) == 0) {
        me.dev = st.st_dev;
        me.ino = st.st_ino;
        for (const struct chain_seen *c = up; c; c = c->up)
            if (c->dev == me.dev && c->ino == me.ino) {
                fq_seterr(err, "Backing file '%s' creates an infinite loop.", filename);
                return -ELOOP;
            }
    }
    if (ro)
        fflags |= FQ_FILE_RDONLY;
    if (opts->cache == FQ_CACHE_NONE || opts->cache == FQ_CACHE_DIRECTSYNC)
        fflags |= FQ_FILE_DIRECT;
    r = fq_file_open(ctx, filename, fflags, &file, err);
    if (r < 0)
        return r;
    if (opts->file_format && depth == 0) {
        /* nesting: this image lives inside another image's guest view */
        struct fq_open_opts inner = *opts;
        struct fq_bdev *container;
        inner.file_format = NULL;
        inner.no_backing = 1;
        r = open_format(file, opts->file_format, &inner, ro, &container, err);
        if (r < 0) {
            fq_bdev_close(file);
            return r;
        }
        file = container;
    }
    r = open_format(file, format, opts, ro, &top, err);
    if (r < 0) {
        fq_bdev_close(file);
        return r;
    }
    const char *bname = NULL, *bfmt = NULL;
    if (!opts->no_backing && fq_qcow2_backing(top, &bname, &bfmt) == 0 && bname) {
        char *path = resolve_backing(filename, bname);
        char berr[FQ_ERR_MAX] = "";
        struct fq_open_opts bo = *opts;
        bo.file_format = NULL;
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
