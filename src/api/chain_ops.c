/* chain_ops.c: the public calls that work across the images of a
 * backing chain: rebase (a new backing file, copying what differs) and
 * commit (merging an image into a backing file). Rebase moves data
 * between images synchronously, in chunks of at most CHUNK bytes, through
 * the devices' own calls; commit's copy keeps many ranges in flight
 * (commit_copy.c); the header changes are the format driver's
 * (set_backing, make_empty).
 * SPDX-License-Identifier: MIT
 */
#include <stdio.h>
#include <sys/stat.h>

#include "api/api.h"
#include "core/core.h"
#include "util.h"

#define CHUNK (1u << 20)
#define MAX_CHAIN 64

/* ---- rebase ---- */

/* True if both names are the same file (after symlinks). */
static bool same_file(const char *a, const char *b)
{
    struct stat sa, sb;

    return a && b && stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
           sa.st_ino == sb.st_ino;
}

/* "dir/of/image" + "name": a backing file name as the chain opens it. */
static char *resolve_name(const char *image, const char *name)
{
    const char *slash = image ? strrchr(image, '/') : NULL;
    size_t dl = slash ? (size_t)(slash - image) + 1 : 0;
    char *p;

    if (name[0] == '/' || dl == 0 || strstr(name, "://"))
        return strdup(name);
    if ((p = malloc(dl + strlen(name) + 1))) {
        memcpy(p, image, dl);
        strcpy(p + dl, name);
    }
    return p;
}

/* A read of read_both's, through the loop. */
struct lread {
    struct fq_req req;       /* first: the callback gets it back */
    struct iovec v;
    bool done;
    int ret;
};

static void lread_cb(struct fq_req *req, int ret)
{
    struct lread *l = (struct lread *)req;

    l->done = true;
    l->ret = ret;
}

/* Read [off, off+len) of two devices (NULL: none) into buf[0] and buf[1],
 * zeros past their ends: both at once through the context's loop, so that
 * a fragmented image's pieces are read in parallel too (synchronously
 * when the loop is running already, e.g. from a callback). */
static int read_both(struct fq_ctx *ctx, struct fq_bdev *const d[2], uint64_t off, uint64_t len,
                     uint8_t *const buf[2])
{
    bool loop = ctx && fq_ctx_run(ctx, 0, 0) >= 0;
    struct lread *l = calloc(2, sizeof(*l));
    int r = 0;

    if (!l)
        return -ENOMEM;
    for (int i = 0; i < 2; i++) {
        uint64_t in = d[i] && off < d[i]->size ? FQ_MIN(len, d[i]->size - off) : 0;
        memset(buf[i] + in, 0, (size_t)(len - in));
        l[i].done = true;
        if (!in || r < 0)
            continue;
        if (!loop) {
            r = fq_bdev_pread_sync(d[i], buf[i], (size_t)in, off);
            continue;
        }
        l[i].done = false;
        l[i].v = (struct iovec){ buf[i], (size_t)in };
        l[i].req = (struct fq_req){ .op = FQ_OP_READ, .off = off, .len = in, .iov = &l[i].v,
                                    .iovcnt = 1, .cb = lread_cb };
        d[i]->ops->submit(d[i], &l[i].req);
    }
    if (loop)
        fq_ctx_kick(ctx);
    while (!l[0].done || !l[1].done)
        if (fq_ctx_run(ctx, 0, -1) < 0)
            return -EIO;    /* the reads stay out: l is left allocated */
    for (int i = 0; i < 2 && r == 0; i++)
        r = l[i].ret;
    free(l);
    return r;
}

/* Write [pos, pos+n) of `a` into the image where it differs from `b`,
 * comparing (and writing) in pieces aligned to `unit`. */
static int write_diff(struct fq_bdev *bs, uint64_t pos, uint64_t n, uint64_t unit, uint8_t *a,
                      const uint8_t *b)
{
    uint64_t run = 0, i = 0;     /* a run of differing pieces: [i - run, i) */

    while (i < n) {
        uint64_t k = FQ_MIN(n - i, unit - (pos + i) % unit);
        bool differ = memcmp(a + i, b + i, (size_t)k) != 0;
        if (differ)
            run += k;
        i += k;
        if (run && (!differ || i == n)) {
            uint64_t start = (differ ? i : i - k) - run;
            struct iovec v = { a + start, (size_t)run };
            struct fq_req w = { .op = FQ_OP_WRITE, .off = pos + start, .len = run, .iov = &v,
                                .iovcnt = 1 };
            int r = bs->ops->io_sync(bs, &w);
            if (r < 0)
                return r;
            run = 0;
        }
    }
    return 0;
}

/* Copy into the image every range it leaves to its backing file where the
 * old and the new backing files differ. Both are read in chunks of up to
 * CHUNK bytes, at once (read_both), compared and written cluster by
 * cluster. */
static int rebase_copy(struct fq_bdev *bs, struct fq_bdev *nb, const struct fq_rebase_opts *o)
{
    struct fq_bdev *ob = bs->backing;
    uint64_t size = bs->size, unit = FQ_MIN(bs->cluster ? bs->cluster : 65536, (uint64_t)CHUNK);
    CLEANUP_FREE uint8_t *a = fq_memalign(CHUNK);
    CLEANUP_FREE uint8_t *b = fq_memalign(CHUNK);
    int r = 0;

    struct fq_bdev *const dev[2] = { ob, nb };
    uint8_t *const buf[2] = { a, b };

    if (!a || !b)
        return -ENOMEM;
    for (uint64_t pos = 0; pos < size && r == 0;) {
        struct fq_map_entry m;
        if ((r = bs->ops->map(bs, pos, size - pos, &m)) < 0)
            break;
        if (m.length == 0) {
            r = -EIO;
            break;
        }
        if (m.flags & FQ_MAP_ALLOCATED) {
            pos += m.length;
            continue;
        }
        for (uint64_t end = pos + m.length; pos < end && r == 0;) {
            uint64_t n = FQ_MIN(end - pos, CHUNK - pos % CHUNK);
            if ((r = read_both(bs->ctx, dev, pos, n, buf)) < 0 ||
                (r = write_diff(bs, pos, n, unit, a, b)) < 0)
                break;
            pos += n;
        }
        if (o->progress)
            o->progress(o->opaque, pos, size);
    }
    return r;
}

int fq_rebase(struct fq_image *img, const struct fq_rebase_opts *o, char *err)
{
    struct fq_bdev *bs = fq_image_bdev(img), *nb = NULL;
    const char *name = o->backing_file && *o->backing_file ? o->backing_file : NULL;
    int r;

    if (!bs->ops->set_backing || !bs->ops->map) {
        fq_seterr(err, "Only qcow2 images have a backing file (this one is %s)", fq_format(img));
        return -ENOTSUP;
    }
    if (bs->readonly) {
        fq_seterr(err, "The image is opened read-only");
        return -EROFS;
    }
    if (name && !o->backing_format) {
        fq_seterr(err, "Could not change the backing file to '%s': backing format must be specified",
                  name);
        return -EINVAL;
    }
    if (bs->ops->busy && bs->ops->busy(bs)) {
        fq_seterr(err, "Requests are in flight on the image");
        return -EBUSY;
    }
    if (name) {
        /* never a chain that comes back to this image */
        char *path = resolve_name(bs->filename, name);
        bool loop = path && same_file(path, bs->filename);
        free(path);
        if (loop) {
            fq_seterr(err, "Backing file '%s' creates an infinite loop.", name);
            return -ELOOP;
        }
    }
    if (o->unsafe)
        return bs->ops->set_backing(bs, name, o->backing_format, err);
    if (name) {
        struct fq_open_opts oo;
        char berr[FQ_ERR_MAX] = "";
        char *path = resolve_name(bs->filename, name);
        fq_open_opts_init(&oo);
        oo.readonly = 1;
        oo.cache = o->cache;
        oo.no_readahead = 1;    /* read once, in the image's order */
        r = path ? fq_bdev_open_chain(bs->ctx, path, o->backing_format, &oo, 1, &nb, berr) : -ENOMEM;
        if (r < 0) {
            fq_seterr(err, "Could not open new backing file '%s': %s", path ? path : name,
                      berr[0] ? berr : strerror(-r));
            free(path);
            return r;
        }
        free(path);
        for (struct fq_bdev *b = nb; b; b = b->backing)
            if (b->filename && same_file(b->filename, bs->filename)) {
                fq_seterr(err, "Backing file '%s' creates an infinite loop.", b->filename);
                fq_bdev_close(nb);
                return -ELOOP;
            }
    }
    r = rebase_copy(bs, nb, o);
    if (r == 0)
        r = fq_bdev_flush_sync(bs);
    if (r < 0) {
        fq_seterr(err, "Could not copy the data that differs: %s", strerror(-r));
        fq_bdev_close(nb);
        return r;
    }
    if ((r = bs->ops->set_backing(bs, name, o->backing_format, err)) < 0) {
        fq_bdev_close(nb);
        return r;
    }
    fq_bdev_close(bs->backing);
    bs->backing = nb;
    return 0;
}

/* ---- commit ---- */

struct layer {
    char *path;               /* as the chain opens it */
    char *fmt;
};

static void layers_free(struct layer *l, int n)
{
    for (int i = 0; i < n; i++) {
        free(l[i].path);
        free(l[i].fmt);
    }
}

/* Does `want` name the backing file recorded as `recorded` and opened as
 * `path`? */
static bool names_match(const char *want, const char *recorded, const char *path)
{
    if (!strcmp(want, recorded) || !strcmp(want, path))
        return true;
    char *a = realpath(want, NULL), *b = realpath(path, NULL);
    bool same = a && b && !strcmp(a, b);
    free(a);
    free(b);
    return same;
}

/* Copy what layer `l` allocates itself into `base`. */
static int commit_layer(const struct layer *l, struct fq_image *base, const struct fq_commit_opts *o,
                        uint64_t *done, uint64_t total, char *err)
{
    struct fq_open_opts oo;
    struct fq_image *img;
    int r;

    fq_open_opts_init(&oo);
    oo.format = l->fmt;
    oo.readonly = 1;
    oo.no_backing = 1;
    oo.cache = o->cache;
    oo.no_readahead = 1;        /* read once, in the image's order */
    oo.ctx = fq_image_ctx(base);
    if ((r = fq_open(l->path, &oo, &img, err)) < 0)
        return r;
    r = fq_commit_copy(img, base, o, done, total);
    if (r < 0 && err && !*err)
        fq_seterr(err, "Could not commit '%s': %s", l->path, strerror(-r));
    fq_close(img);
    return r;
}

int fq_commit(const char *filename, const struct fq_commit_opts *o, char *err)
{
    struct layer l[MAX_CHAIN + 1];
    struct fq_open_opts oo;
    struct fq_image *top = NULL, *base = NULL;
    int n = 0, d = -1, r;

    fq_open_opts_init(&oo);
    oo.format = o->format;
    oo.readonly = 1;
    oo.cache = o->cache;
    if ((r = fq_open(filename, &oo, &top, err)) < 0)
        return r;
    /* the chain as opened: path and format of each layer */
    struct fq_bdev *b = fq_image_bdev(top);
    memset(l, 0, sizeof(l));
    l[0].path = strdup(filename);
    l[0].fmt = strdup(fq_format(top));
    n = 1;
    for (; b && n <= MAX_CHAIN; b = b->backing) {
        const char *name = NULL, *fmt = NULL;
        if (fq_bdev_backing(b, &name, &fmt) < 0 || !name || !b->backing)
            break;
        l[n].path = resolve_name(l[n - 1].path, name);
        l[n].fmt = strdup(fmt ? fmt : b->backing->ops->name);
        if (!l[n].path || !l[n].fmt) {
            n++;
            r = -ENOMEM;
            goto out;
        }
        if (d < 0 && o->base && names_match(o->base, name, l[n].path))
            d = n;
        n++;
    }
    uint64_t top_size = fq_size(top);
    fq_close(top);
    top = NULL;
    if (n == 1) {
        fq_seterr(err, "Image does not have a backing file");
        r = -EINVAL;
        goto out;
    }
    if (!o->base)
        d = 1;
    if (d < 0) {
        fq_seterr(err, "Did not find '%s' in the backing chain of '%s'", o->base, filename);
        r = -ENOENT;
        goto out;
    }
    oo.format = l[d].fmt;
    oo.readonly = 0;
    if ((r = fq_open(l[d].path, &oo, &base, err)) < 0)
        goto out;
    if (fq_size(base) < top_size && (r = fq_resize(base, top_size, 0, err)) < 0)
        goto out;
    /* lowest layer first: what a higher layer holds wins */
    uint64_t done = 0, total = (uint64_t)d * top_size;
    for (int i = d - 1; i >= 0 && r == 0; i--)
        r = commit_layer(&l[i], base, o, &done, total, err);
    int cr = fq_close(base);
    base = NULL;
    if (r == 0 && cr < 0) {
        fq_seterr(err, "Could not flush '%s': %s", l[d].path, strerror(-cr));
        r = cr;
    }
    if (r == 0 && !o->keep && !o->base) {
        /* the data is safe in the base: let the image read through */
        oo.format = l[0].fmt;
        oo.no_backing = 1;
        if ((r = fq_open(filename, &oo, &top, err)) == 0) {
            struct fq_bdev *tb = fq_image_bdev(top);
            r = tb->ops->make_empty ? tb->ops->make_empty(tb) : -ENOTSUP;
            if (r < 0)
                fq_seterr(err, "Could not empty '%s': %s", filename, strerror(-r));
            int c2 = fq_close(top);
            top = NULL;
            if (r == 0)
                r = c2;
        }
    }
out:
    if (top)
        fq_close(top);
    if (base)
        fq_close(base);
    layers_free(l, n);
    return r;
}
