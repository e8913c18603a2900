/* file.c: the file device: a regular file or block device accessed
 * through the context's I/O engine. With O_DIRECT it bounces any request
 * whose buffers, offset or length are not aligned; aligned requests go
 * straight through. An unaligned write is a read-modify-write of its edge
 * blocks, done synchronously so that two never interleave on one block.
 * Reads beyond the end of the file return zeros. An image is locked
 * while it is open (lock.c), as the open flags say, on a descriptor of
 * its own that the I/O engine never sees.
 * SPDX-License-Identifier: MIT
 */
#include <fcntl.h>
#include <linux/fs.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "driver.h"
#include "lock.h"
#include "util.h"

struct file_io;

struct file_priv {
    int fd;
    int lock_fd;              /* holds the locks when not fd; -1: none */
    struct fq_fdreg *reg;     /* the descriptor registered with the context */
    bool direct;
    bool is_blk;
    bool no_flush;            /* FQ_FILE_NOFLUSH */
    /* O_DIRECT ordering (see serialize()): write-type operations in
     * flight, and those waiting for a conflicting one to finish */
    struct file_io *inflight;
    struct file_io *waiting, **waiting_tail;
    struct fq_freelist io_fl;  /* file_io objects for reuse */
};

struct file_io {
    struct fq_aio aio;
    struct fq_bdev *bs;
    struct fq_req *req;
    struct fq_iovb iovb;
    struct iovec one;
    void *bounce;
    uint64_t head;            /* bytes of bounce before req->off */
    uint64_t lo, hi;          /* block-aligned range touched (writes) */
    bool partial;             /* touches part of a block (read-modify-write) */
    bool tracked;             /* on p->inflight */
    struct file_io *next;
};

static bool aligned_req(struct fq_bdev *bs, struct fq_req *req)
{
    unsigned a = bs->align;

    if (a <= 1)
        return true;
    if (!FQ_IS_ALIGNED(req->off, a) || !FQ_IS_ALIGNED(req->len, a))
        return false;
    size_t off = req->iov_off, left = req->len;
    for (int i = 0; i < req->iovcnt && left > 0; i++) {
        if (off >= req->iov[i].iov_len) {
            off -= req->iov[i].iov_len;
            continue;
        }
        uintptr_t base = (uintptr_t)req->iov[i].iov_base + off;
        size_t n = FQ_MIN(req->iov[i].iov_len - off, left);
        if (!FQ_IS_ALIGNED(base, a) || (n < left && !FQ_IS_ALIGNED(n, a)))
            return false;
        left -= n;
        off = 0;
    }
    return true;
}

/* Prepare io->aio for a read or write; bounces when alignment requires.
 * For a bounced write the partial edge blocks are read first (blocking). */
static int prepare_rw(struct file_io *io)
{
    struct fq_bdev *bs = io->bs;
    struct file_priv *p = bs->priv;
    struct fq_req *req = io->req;
    int r;

    io->aio.fd = p->fd;
    io->aio.reg = p->reg;
    io->aio.op = req->op;
    fq_iovb_init(&io->iovb);
    if (aligned_req(bs, req)) {
        r = fq_iovb_add_slice(&io->iovb, req->iov, req->iovcnt, req->iov_off, req->len);
        if (r < 0)
            return r;
        io->aio.off = req->off;
        io->aio.iov = io->iovb.v;
        io->aio.iovcnt = io->iovb.cnt;
        return 0;
    }
    unsigned a = bs->align;
    uint64_t start = FQ_ALIGN_DOWN(req->off, a);
    uint64_t end = FQ_ALIGN_UP(req->off + req->len, a);
    size_t blen = (size_t)(end - start);
    io->bounce = fq_memalign(blen);
    if (!io->bounce)
        return -ENOMEM;
    io->head = req->off - start;
    if (req->op == FQ_OP_WRITE) {
        if (io->head) {
            struct iovec v = { io->bounce, a };
            int64_t n = fq_aio_exec(FQ_OP_READ, p->fd, start, 0, &v, 1);
            if (n < 0)
                return (int)n;
            memset((uint8_t *)io->bounce + n, 0, a - (size_t)n);
        }
        if ((req->off + req->len) % a && (end - a > start || !io->head)) {
            struct iovec v = { (uint8_t *)io->bounce + blen - a, a };
            int64_t n = fq_aio_exec(FQ_OP_READ, p->fd, end - a, 0, &v, 1);
            if (n < 0)
                return (int)n;
            memset((uint8_t *)io->bounce + blen - a + n, 0, a - (size_t)n);
        }
        fq_iov_to_buf(req->iov, req->iovcnt, req->iov_off,
                      (uint8_t *)io->bounce + io->head, req->len);
    }
    io->one.iov_base = io->bounce;
    io->one.iov_len = blen;
    io->aio.off = start;
    io->aio.iov = &io->one;
    io->aio.iovcnt = 1;
    return 0;
}

/* Turn an engine result into the request's result; 0 or -errno. */
static int finish_rw(struct file_io *io, int64_t res)
{
    struct fq_req *req = io->req;
    size_t want = io->bounce ? io->one.iov_len : req->len;

    if (res < 0)
        return (int)res;
    if (req->op == FQ_OP_WRITE) {
        if ((size_t)res != want)
            return -EIO;
        if (req->off + req->len > io->bs->size)
            io->bs->size = req->off + req->len;
        return 0;
    }
    /* read: zero what lies beyond the end of the file */
    if (io->bounce) {
        if ((size_t)res < want)
            memset((uint8_t *)io->bounce + res, 0, want - (size_t)res);
        fq_iov_from_buf(req->iov, req->iovcnt, req->iov_off,
                        (uint8_t *)io->bounce + io->head, req->len);
    } else if ((size_t)res < want) {
        fq_iov_memset(req->iov, req->iovcnt, req->iov_off + (size_t)res, 0,
                      want - (size_t)res);
    }
    return 0;
}

static void file_io_free(struct file_io *io)
{
    fq_iovb_free(&io->iovb);
    free(io->bounce);
    fq_fl_put(&((struct file_priv *)io->bs->priv)->io_fl, io);
}

/* ---- O_DIRECT write ordering ----
 * A write that covers part of a block is a read-modify-write of that block;
 * so is, inside the kernel, a write-zeroes or discard of part of a block. If
 * another write-type operation on the same block were in flight, the read
 * could see the old content and the write put it back. So an operation
 * that is partial, or overlaps a partial one in flight, waits until the
 * operations it overlaps have completed; waiting ones start in order. */

static bool conflicts(const struct file_io *a, const struct file_io *b)
{
    return (a->partial || b->partial) && a->lo < b->hi && b->lo < a->hi;
}

static bool must_wait(struct file_priv *p, struct file_io *io, struct file_io *stop)
{
    for (struct file_io *i = p->inflight; i; i = i->next)
        if (conflicts(io, i))
            return true;
    for (struct file_io *w = p->waiting; w && w != stop; w = w->next)
        if (conflicts(io, w))
            return true;
    return false;
}

/* Start `io` now: read the edges of a partial write, then submit. */
static void dispatch(struct file_io *io)
{
    struct fq_bdev *bs = io->bs;
    struct file_priv *p = bs->priv;
    int r = io->req->op == FQ_OP_WRITE ? prepare_rw(io) : 0;

    if (r < 0) {
        struct fq_req *req = io->req;
        file_io_free(io);
        fq_req_complete_later(bs, req, r);
        return;
    }
    io->tracked = true;
    io->next = p->inflight;
    p->inflight = io;
    fq_ctx_submit(bs->ctx, &io->aio);
}

static void dispatch_or_wait(struct file_io *io)
{
    struct fq_bdev *bs = io->bs;
    struct file_priv *p = bs->priv;
    struct fq_req *req = io->req;
    unsigned a = bs->align;

    io->lo = FQ_ALIGN_DOWN(req->off, a);
    io->hi = FQ_ALIGN_UP(req->off + req->len, a);
    io->partial = req->op == FQ_OP_WRITE ? !aligned_req(bs, req)
                                         : !FQ_IS_ALIGNED(req->off | req->len, a);
    if (must_wait(p, io, NULL)) {
        io->next = NULL;
        *p->waiting_tail = io;
        p->waiting_tail = &io->next;
        return;
    }
    dispatch(io);
}

/* After a completion: start every waiting operation that no longer
 * conflicts with one in flight or with an earlier waiting one. */
static void untrack(struct file_io *io)
{
    struct file_priv *p = io->bs->priv;
    struct file_io **pp = &p->inflight;

    while (*pp && *pp != io)
        pp = &(*pp)->next;
    if (*pp)
        *pp = io->next;
    io->tracked = false;
    for (struct file_io **wp = &p->waiting; *wp;) {
        struct file_io *w = *wp;
        if (must_wait(p, w, w)) {
            wp = &w->next;
            continue;
        }
        *wp = w->next;
        if (p->waiting_tail == &w->next)
            p->waiting_tail = wp;
        dispatch(w);
    }
}

static void file_done(struct fq_aio *aio)
{
    struct file_io *io = (struct file_io *)aio;
    struct fq_req *req = io->req;
    int r = (int)aio->res;

    if (io->tracked)
        untrack(io);

    if (req->op == FQ_OP_READ || req->op == FQ_OP_WRITE)
        r = finish_rw(io, aio->res);
    else if (r > 0)
        r = 0;
    if (r == -EOPNOTSUPP && (req->op == FQ_OP_DISCARD))
        r = 0;  /* discard is advisory */
    file_io_free(io);
    req->cb(req, r);
}

/* Write-zeroes of part of a block under O_DIRECT: the kernel would zero
 * the partial block through the page cache, behind the back of O_DIRECT.
 * The edges are written as zeros instead, the aligned middle zeroed. */
struct zsplit {
    struct fq_req *parent;
    struct fq_req sub[3];
    struct iovec zv[3];
    int left, err;
};

static void zsplit_done(struct fq_req *sub, int ret)
{
    struct zsplit *z = sub->opaque;

    if (ret < 0 && !z->err)
        z->err = ret;
    if (--z->left == 0) {
        struct fq_req *parent = z->parent;
        int err = z->err;
        free(z);
        parent->cb(parent, err);
    }
}

static void file_submit(struct fq_bdev *bs, struct fq_req *req);

static void zeroes_split(struct fq_bdev *bs, struct fq_req *req)
{
    struct zsplit *z = calloc(1, sizeof(*z));
    unsigned a = bs->align;
    uint64_t end = req->off + req->len;
    uint64_t mid_lo = FQ_ALIGN_UP(req->off, a), mid_hi = FQ_ALIGN_DOWN(end, a);
    uint64_t cut[4];
    int n = 0;

    if (!z) {
        fq_req_complete_later(bs, req, -ENOMEM);
        return;
    }
    z->parent = req;
    if (mid_lo >= mid_hi) {           /* within one or two blocks */
        mid_lo = mid_hi = FQ_MIN(FQ_MAX(mid_lo, req->off), end);
    }
    cut[0] = req->off;
    cut[1] = mid_lo;
    cut[2] = mid_hi;
    cut[3] = end;
    for (int i = 0; i < 3; i++) {
        uint64_t len = cut[i + 1] - cut[i];
        if (len == 0)
            continue;
        struct fq_req *s = &z->sub[n];
        *s = *req;
        s->off = cut[i];
        s->len = len;
        s->cb = zsplit_done;
        s->opaque = z;
        if (i != 1) {                 /* a partial block: write zeros */
            z->zv[n].iov_base = (void *)fq_zero_buffer((size_t)len);
            z->zv[n].iov_len = (size_t)len;
            s->op = FQ_OP_WRITE;
            s->iov = &z->zv[n];
            s->iovcnt = 1;
            s->iov_off = 0;
        }
        n++;
    }
    z->left = n;
    for (int i = 0; i < n; i++)
        file_submit(bs, &z->sub[i]);
}

static void file_submit(struct fq_bdev *bs, struct fq_req *req)
{
    struct file_priv *p = bs->priv;
    struct file_io *io = fq_fl_get(&p->io_fl);
    int r = 0;

    if (!io) {
        fq_req_complete_later(bs, req, -ENOMEM);
        return;
    }
    memset(io, 0, sizeof(*io));
    io->bs = bs;
    io->req = req;
    io->aio.done = file_done;
    io->aio.fd = p->fd;
    io->aio.reg = p->reg;
    io->aio.op = req->op;
    fq_iovb_init(&io->iovb);
    switch (req->op) {
    case FQ_OP_READ:
    case FQ_OP_WRITE:
        if (req->op == FQ_OP_WRITE && bs->readonly) {
            r = -EROFS;
        } else if (req->len == 0) {
            file_io_free(io);
            fq_req_complete_later(bs, req, 0);
            return;
        } else if (req->op == FQ_OP_WRITE && bs->align > 1) {
            dispatch_or_wait(io);
            return;
        } else {
            r = prepare_rw(io);
        }
        break;
    case FQ_OP_FLUSH:
        if (p->no_flush) {
            file_io_free(io);
            fq_req_complete_later(bs, req, 0);
            return;
        }
        break;
    case FQ_OP_DISCARD:
    case FQ_OP_WRITE_ZEROES:
        if (bs->readonly)
            r = -EROFS;
        else if (req->len == 0) {
            file_io_free(io);
            fq_req_complete_later(bs, req, 0);
            return;
        } else if (bs->align > 1 && !FQ_IS_ALIGNED(req->off | req->len, bs->align)) {
            file_io_free(io);
            if (req->op == FQ_OP_DISCARD) {
                /* advisory: only whole blocks */
                uint64_t lo = FQ_ALIGN_UP(req->off, bs->align);
                uint64_t hi = FQ_ALIGN_DOWN(req->off + req->len, bs->align);
                if (hi <= lo) {
                    fq_req_complete_later(bs, req, 0);
                    return;
                }
                req->off = lo;    /* the caller's request: narrowed in place */
                req->len = hi - lo;
                file_submit(bs, req);
                return;
            }
            zeroes_split(bs, req);
            return;
        }
        io->aio.off = req->off;
        io->aio.len = req->len;
        if (r == 0 && bs->align > 1) {
            dispatch_or_wait(io);
            return;
        }
        break;
    }
    if (r < 0) {
        file_io_free(io);
        fq_req_complete_later(bs, req, r);
        return;
    }
    fq_ctx_submit(bs->ctx, &io->aio);
}

static int file_io_sync(struct fq_bdev *bs, struct fq_req *req)
{
    struct file_priv *p = bs->priv;
    int r;

    switch (req->op) {
    case FQ_OP_READ:
    case FQ_OP_WRITE: {
        if (req->op == FQ_OP_WRITE && bs->readonly)
            return -EROFS;
        if (req->len == 0)
            return 0;
        struct file_io io = { .bs = bs, .req = req };
        r = prepare_rw(&io);
        if (r == 0) {
            int64_t n = fq_aio_exec(req->op, p->fd, io.aio.off, 0, io.aio.iov, io.aio.iovcnt);
            r = finish_rw(&io, n);
        }
        fq_iovb_free(&io.iovb);
        free(io.bounce);
        return r;
    }
    case FQ_OP_FLUSH:
        return p->no_flush ? 0 : (int)fq_aio_exec(FQ_OP_FLUSH, p->fd, 0, 0, NULL, 0);
    case FQ_OP_DISCARD:
    case FQ_OP_WRITE_ZEROES:
        if (bs->readonly)
            return -EROFS;
        if (req->len == 0)
            return 0;
        r = (int)fq_aio_exec(req->op, p->fd, req->off, req->len, NULL, 0);
        if (r == -EOPNOTSUPP && req->op == FQ_OP_DISCARD)
            r = 0;
        return r;
    }
    return -EINVAL;
}

static void file_close(struct fq_bdev *bs)
{
    struct file_priv *p = bs->priv;

    fq_ctx_fd_unregister(bs->ctx, p->reg);
    close(p->fd);
    if (p->lock_fd >= 0)
        close(p->lock_fd);    /* the locks go after the last I/O */
    fq_fl_drain(&p->io_fl);
    free(p);
}

static int file_truncate(struct fq_bdev *bs, uint64_t size)
{
    struct file_priv *p = bs->priv;

    if (p->is_blk)
        return size <= bs->size ? 0 : -ENOSPC;
    if (ftruncate(p->fd, (off_t)size) < 0)
        return -errno;
    bs->size = size;
    return 0;
}

static int64_t file_length(struct fq_bdev *bs)
{
    struct file_priv *p = bs->priv;
    struct stat st;

    if (p->is_blk)
        return (int64_t)bs->size;
    if (fstat(p->fd, &st) < 0)
        return -errno;
    return st.st_size;
}

static int file_get_info(struct fq_bdev *bs, struct fq_info *out)
{
    struct file_priv *p = bs->priv;
    struct stat st;

    if (fstat(p->fd, &st) < 0)
        return -errno;
    out->file_size = p->is_blk ? bs->size : (uint64_t)st.st_size;
    out->actual_size = p->is_blk ? 0 : (uint64_t)st.st_blocks * 512;
    return 0;
}

/* Allocation of the file itself: data or hole, from SEEK_DATA/SEEK_HOLE. */
static int file_map(struct fq_bdev *bs, uint64_t off, uint64_t len, struct fq_map_entry *out)
{
    struct file_priv *p = bs->priv;
    uint64_t end = off + len;

    memset(out, 0, sizeof(*out));
    out->start = off;
    out->host_offset = off;
    out->flags = FQ_MAP_ALLOCATED | FQ_MAP_OFFSET;
    if (off >= bs->size) {
        out->length = len;
        out->flags |= FQ_MAP_ZERO;
        return 0;
    }
    off_t d = lseek(p->fd, (off_t)off, SEEK_DATA);
    if (d < 0 && errno != ENXIO) {
        out->length = len;    /* no hole information: all data */
        out->flags |= FQ_MAP_DATA;
        return 0;
    }
    if (d == (off_t)off) {
        off_t h = lseek(p->fd, (off_t)off, SEEK_HOLE);
        out->length = FQ_MIN(end, h > (off_t)off ? (uint64_t)h : end) - off;
        out->flags |= FQ_MAP_DATA;
    } else {
        uint64_t next = d < 0 ? end : (uint64_t)d;
        out->length = FQ_MIN(end, next) - off;
        out->flags |= FQ_MAP_ZERO;
    }
    return 0;
}

static const struct fq_bdev_ops file_ops = {
    .name = "file",
    .identity_map = true,
    .map = file_map,
    .submit = file_submit,
    .io_sync = file_io_sync,
    .close = file_close,
    .truncate = file_truncate,
    .file_length = file_length,
    .get_info = file_get_info,
};

/* Pick the O_DIRECT alignment: the device's logical block size for block
 * devices, else what statx reports, else 4096 to be safe. */
static unsigned direct_align(int fd, bool is_blk)
{
    int ssz = 0;

    if (is_blk && ioctl(fd, BLKSSZGET, &ssz) == 0 && ssz > 0)
        return (unsigned)ssz;
#ifdef STATX_DIOALIGN
    struct statx stx;
    if (statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) == 0 &&
        (stx.stx_mask & STATX_DIOALIGN) && stx.stx_dio_offset_align)
        return FQ_MAX(stx.stx_dio_offset_align, 512u);
#endif
    return 4096;
}

/* Close an open's descriptors: the I/O one, then the locks' (-1: none). */
static void close_fds(int fd, int lock_fd)
{
    close(fd);
    if (lock_fd >= 0)
        close(lock_fd);
}

/* Open `filename` (FQ_FILE_* flags) as a device. */
static int file_open(struct fq_ctx *ctx, const char *filename, unsigned flags,
                     struct fq_bdev **out, char *err)
{
    int oflags = O_CLOEXEC | ((flags & FQ_FILE_RDONLY) ? O_RDONLY : O_RDWR);
    struct stat st;
    struct fq_bdev *bs;
    struct file_priv *p;
    int fd;

    /* a file to create is emptied only once it is locked: never under
     * another program that has it open */
    if (flags & FQ_FILE_CREATE)
        oflags |= O_CREAT;
    fd = open(filename, oflags, 0644);
    if (fd < 0) {
        int r = -errno;
        fq_seterr(err, "Could not open '%s': %s", filename, strerror(errno));
        return r;
    }
    int lfd = file_lock_fd(fd);
    int r = file_lock(lfd, flags, filename, err);
    if (r <= 0 && lfd != fd) {
        close(lfd);           /* refused, or no locks on this file system */
        lfd = -1;
    } else if (lfd == fd) {
        lfd = -1;             /* the locks go with fd */
    }
    if (r < 0) {
        close(fd);
        return r;
    }
    if (fstat(fd, &st) < 0) {
        r = -errno;
        fq_seterr(err, "Could not stat '%s': %s", filename, strerror(errno));
        close_fds(fd, lfd);
        return r;
    }
    if ((flags & FQ_FILE_CREATE) && S_ISREG(st.st_mode) && st.st_size) {
        if (ftruncate(fd, 0) < 0) {
            r = -errno;
            fq_seterr(err, "Could not empty '%s': %s", filename, strerror(errno));
            close_fds(fd, lfd);
            return r;
        }
        st.st_size = 0;
    }
    bs = calloc(1, sizeof(*bs));
    p = calloc(1, sizeof(*p));
    if (!bs || !p) {
        free(bs);
        free(p);
        close_fds(fd, lfd);
        return -ENOMEM;
    }
    p->fd = fd;
    p->lock_fd = lfd;
    /* a hint: a file system without it reads ahead as before */
    if ((flags & FQ_FILE_NORA) && !(flags & FQ_FILE_DIRECT))
        (void)posix_fadvise(fd, 0, 0, POSIX_FADV_RANDOM);
    p->is_blk = S_ISBLK(st.st_mode);
    p->waiting_tail = &p->waiting;
    fq_fl_init(&p->io_fl, sizeof(struct file_io), 256);
    bs->growable = S_ISREG(st.st_mode) && !(flags & FQ_FILE_RDONLY);
    bs->size = (uint64_t)st.st_size;
    if (p->is_blk) {
        uint64_t sz = 0;
        if (ioctl(fd, BLKGETSIZE64, &sz) == 0)
            bs->size = sz;
    }
    bs->align = 1;
    if (flags & FQ_FILE_DIRECT) {
        int fl = fcntl(fd, F_GETFL);
        if (fcntl(fd, F_SETFL, fl | O_DIRECT) < 0) {
            r = -errno;
            fq_seterr(err, "Could not open '%s' with O_DIRECT (cache=none): %s",
                      filename, strerror(errno));
            close_fds(fd, lfd);
            free(p);
            free(bs);
            return r;
        }
        p->direct = true;
        bs->align = direct_align(fd, p->is_blk);
    }
    bs->ops = &file_ops;
    bs->ctx = ctx;
    p->reg = fq_ctx_fd_register(ctx, fd);
    bs->readonly = flags & FQ_FILE_RDONLY;
    p->no_flush = (flags & FQ_FILE_NOFLUSH) != 0;
    bs->priv = p;
    bs->filename = strdup(filename);
    *out = bs;
    return 0;
}

/* Its keys in a block option list ("file.filename"...); the engine of
 * "aio" is the caller's to choose, locking is always on. */
static const struct fq_optdesc file_opts[] = {
    { "filename", FQ_OPT_STR, NULL },
    { "aio", FQ_OPT_ENUM, "threads native io_uring" },
    { "locking", FQ_OPT_ENUM, "on off auto" },
    { NULL, FQ_OPT_STR, NULL },
};

const struct fq_driver fq_driver_file = {
    .name = "file",
    .open_file = file_open,
    .opts = file_opts,
};
