/* nbd.c: the nbd protocol driver: an image (or the file a format sits
 * on) served by an NBD server, through libnbd's asynchronous API.
 *
 * Requests never block the context's loop: each becomes one or more
 * libnbd commands (nbd_aio_*), cut to the server's largest request; the
 * handle's socket is watched from the loop (fq_watch: POLLIN, POLLOUT
 * while libnbd has bytes to send) and the watch hands readiness to
 * libnbd (nbd_aio_notify_read/write), which runs the commands'
 * completion callbacks. Those only count and record; the request's
 * callback is deferred to the loop (fq_req_complete_later), so it never
 * runs inside libnbd (nor inside submit). The watch is paused while no
 * command is in flight: an idle connection keeps no loop waiting.
 *
 * io_sync (metadata of a format on this device) uses libnbd's blocking
 * calls; commands of the asynchronous path that complete meanwhile are
 * deferred the same way.
 *
 * What the server says at the handshake is obeyed: its size, read-only
 * (a read-write open is refused, as the server would refuse every
 * write), flush, trim and write-zeroes (trim is advisory and skipped when
 * absent; zeroes are then written), and base:allocation for map. A
 * connection that dies fails its commands and every later request
 * (-ENOTCONN or libnbd's errno); nothing waits for it.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>

#include "driver.h"
#include "nbd.h"
#include "util.h"

/* Most bytes in one read or write command (servers advertise at most
 * 32 MiB; libnbd refuses more than 64 MiB). */
#define NBD_MAX_RW (32u << 20)
/* Most bytes in one trim, write-zeroes or block-status command (the
 * protocol's lengths are 32-bit). */
#define NBD_MAX_RANGE (1u << 30)

struct nbd_priv {
    struct nbd_handle *h;
    struct fq_watch *watch;
    unsigned events;          /* what the watch waits for now */
    uint64_t inflight;        /* commands issued, not completed */
    uint64_t max_rw;          /* bytes per read or write command */
    bool can_flush, can_trim, can_zero, has_alloc;
};

/* One request in flight: its commands and where its data lies. */
struct nbd_io {
    struct fq_bdev *bs;
    struct fq_req *req;
    uint8_t *buf;             /* contiguous data: the caller's or bounce */
    bool bounce;              /* buf is ours (copied in or out) */
    bool issued;              /* every command was issued (or one failed) */
    unsigned left;            /* commands not completed */
    int err;                  /* first error */
};

/* Watch what libnbd waits for: nothing while no command is in flight
 * (or the connection is dead), else input and, when it has bytes to
 * send, output. */
static void update_watch(struct nbd_priv *p)
{
    unsigned ev = 0;

    if (p->inflight && !nbd_aio_is_dead(p->h) && !nbd_aio_is_closed(p->h)) {
        ev = POLLIN;
        if (nbd_aio_get_direction(p->h) & LIBNBD_AIO_DIRECTION_WRITE)
            ev |= POLLOUT;
    }
    if (ev != p->events && fq_watch_modify(p->watch, ev) == 0)
        p->events = ev;
}

/* The socket is ready: let libnbd read or write (completions run). */
static void nbd_ready(void *opaque, int revents)
{
    struct fq_bdev *bs = opaque;
    struct nbd_priv *p = bs->priv;

    if (revents < 0)
        revents = POLLERR;
    if (revents & (POLLIN | POLLHUP | POLLERR))
        nbd_aio_notify_read(p->h);
    if ((revents & POLLOUT) && !nbd_aio_is_dead(p->h))
        nbd_aio_notify_write(p->h);
    update_watch(p);
}

/* Finish a request whose commands are all over: data out of the bounce
 * buffer, the callback deferred to the loop. */
static void io_finish(struct nbd_io *io)
{
    struct fq_req *req = io->req;

    if (io->bounce) {
        if (io->err == 0 && req->op == FQ_OP_READ)
            fq_iov_from_buf(req->iov, req->iovcnt, req->iov_off, io->buf,
                            FQ_MIN(req->len, io->bs->size - req->off));
        free(io->buf);
    }
    struct fq_bdev *bs = io->bs;
    int err = io->err;
    free(io);
    fq_req_complete_later(bs, req, err);
}

/* libnbd's completion callback of one command (runs inside libnbd). */
static int cmd_done(void *user_data, int *error)
{
    struct nbd_io *io = user_data;
    struct nbd_priv *p = io->bs->priv;

    p->inflight--;
    if (*error && !io->err)
        io->err = -*error;
    if (--io->left == 0 && io->issued)
        io_finish(io);
    return 1;                 /* retire the command */
}

/* Issue one command of `io` covering [off, off + len) of buf at `at`.
 * Returns 0, or -errno (the command was not issued). */
static int issue(struct nbd_io *io, enum fq_op op, uint64_t at, uint64_t off, uint64_t len)
{
    struct nbd_priv *p = io->bs->priv;
    nbd_completion_callback cb = { .callback = cmd_done, .user_data = io };
    int64_t c = -1;

    switch (op) {
    case FQ_OP_READ:
        c = nbd_aio_pread(p->h, io->buf + at, len, off, cb, 0);
        break;
    case FQ_OP_WRITE:
        c = nbd_aio_pwrite(p->h, io->buf ? io->buf + at : fq_zero_buffer(len), len, off, cb, 0);
        break;
    case FQ_OP_FLUSH:
        c = nbd_aio_flush(p->h, cb, 0);
        break;
    case FQ_OP_DISCARD:
        c = nbd_aio_trim(p->h, len, off, cb, 0);
        break;
    case FQ_OP_WRITE_ZEROES:
        c = nbd_aio_zero(p->h, len, off, cb,
                         (io->req->flags & FQ_ZERO_MAY_UNMAP) ? 0 : LIBNBD_CMD_FLAG_NO_HOLE);
        break;
    }
    if (c < 0)
        return nbd_last_errno();
    io->left++;
    p->inflight++;
    return 0;
}

/* Where a read or write's data is: the caller's buffer when the bytes
 * are one piece, else a bounce buffer (filled for a write). */
static int io_buffer(struct nbd_io *io, uint64_t len)
{
    struct fq_req *req = io->req;
    size_t off = req->iov_off;

    for (int i = 0; i < req->iovcnt; i++) {
        if (off >= req->iov[i].iov_len) {
            off -= req->iov[i].iov_len;
            continue;
        }
        if (req->iov[i].iov_len - off >= len) {
            io->buf = (uint8_t *)req->iov[i].iov_base + off;
            return 0;
        }
        break;
    }
    if (!(io->buf = malloc(len ? len : 1)))
        return -ENOMEM;
    io->bounce = true;
    if (req->op == FQ_OP_WRITE)
        fq_iov_to_buf(req->iov, req->iovcnt, req->iov_off, io->buf, len);
    return 0;
}

/* Check a request against the export. Returns 1 to go on, 0 when done
 * already (nothing to transfer), or -errno. Reads past the end read as
 * zeros (that part is filled here). */
static int check_req(struct fq_bdev *bs, struct fq_req *req)
{
    uint64_t end;

    if (req->op == FQ_OP_FLUSH)
        return 1;
    if (req->op != FQ_OP_READ && bs->readonly)
        return -EROFS;
    if (fq_add_ovf(req->off, req->len, &end))
        return -EINVAL;
    if (req->len == 0)
        return 0;
    if (req->op == FQ_OP_READ) {
        if (end > bs->size) {
            uint64_t keep = req->off < bs->size ? bs->size - req->off : 0;
            fq_iov_memset(req->iov, req->iovcnt, req->iov_off + keep, 0, req->len - keep);
            return keep ? 1 : 0;
        }
        return 1;
    }
    if (end > bs->size)
        return req->op == FQ_OP_DISCARD ? 0 : -ENOSPC;
    return 1;
}

static void nbd_submit(struct fq_bdev *bs, struct fq_req *req)
{
    struct nbd_priv *p = bs->priv;
    struct nbd_io *io;
    int r = check_req(bs, req);

    if (r <= 0 || (req->op == FQ_OP_DISCARD && !p->can_trim) ||
        (req->op == FQ_OP_FLUSH && !p->can_flush)) {
        fq_req_complete_later(bs, req, r < 0 ? r : 0);
        return;
    }
    if (!(io = calloc(1, sizeof(*io)))) {
        fq_req_complete_later(bs, req, -ENOMEM);
        return;
    }
    io->bs = bs;
    io->req = req;
    r = 0;
    uint64_t len = req->op == FQ_OP_READ ? FQ_MIN(req->len, bs->size - req->off) : req->len;
    enum fq_op op = req->op;
    uint64_t step = NBD_MAX_RANGE;
    if (op == FQ_OP_READ || op == FQ_OP_WRITE) {
        r = io_buffer(io, len);
        step = p->max_rw;
    } else if (op == FQ_OP_WRITE_ZEROES && !p->can_zero) {
        op = FQ_OP_WRITE;     /* zeros written: io->buf stays NULL */
        step = FQ_MIN(p->max_rw, 4u << 20);
    }
    if (op == FQ_OP_FLUSH)
        r = issue(io, op, 0, 0, 0);
    for (uint64_t at = 0; r == 0 && at < len && op != FQ_OP_FLUSH; at += step)
        r = issue(io, op, at, req->off + at, FQ_MIN(step, len - at));
    io->issued = true;
    if (r < 0 && !io->err)
        io->err = r;
    if (io->left == 0)
        io_finish(io);
    update_watch(p);
}

/* One blocking command; returns 0 or -errno. */
static int sync_cmd(struct nbd_priv *p, enum fq_op op, void *buf, uint64_t len, uint64_t off,
                    unsigned flags)
{
    int r = -1;

    switch (op) {
    case FQ_OP_READ:
        r = nbd_pread(p->h, buf, len, off, 0);
        break;
    case FQ_OP_WRITE:
        r = nbd_pwrite(p->h, buf ? buf : fq_zero_buffer(len), len, off, 0);
        break;
    case FQ_OP_FLUSH:
        r = nbd_flush(p->h, 0);
        break;
    case FQ_OP_DISCARD:
        r = nbd_trim(p->h, len, off, 0);
        break;
    case FQ_OP_WRITE_ZEROES:
        r = nbd_zero(p->h, len, off, (flags & FQ_ZERO_MAY_UNMAP) ? 0 : LIBNBD_CMD_FLAG_NO_HOLE);
        break;
    }
    return r < 0 ? nbd_last_errno() : 0;
}

static int nbd_io_sync(struct fq_bdev *bs, struct fq_req *req)
{
    struct nbd_priv *p = bs->priv;
    struct nbd_io io = { .bs = bs, .req = req };
    int r = check_req(bs, req);

    if (r <= 0 || (req->op == FQ_OP_DISCARD && !p->can_trim) ||
        (req->op == FQ_OP_FLUSH && !p->can_flush))
        return r < 0 ? r : 0;
    r = 0;
    uint64_t len = req->op == FQ_OP_READ ? FQ_MIN(req->len, bs->size - req->off) : req->len;
    enum fq_op op = req->op;
    uint64_t step = NBD_MAX_RANGE;
    if (op == FQ_OP_READ || op == FQ_OP_WRITE) {
        r = io_buffer(&io, len);
        step = p->max_rw;
    } else if (op == FQ_OP_WRITE_ZEROES && !p->can_zero) {
        op = FQ_OP_WRITE;
        step = FQ_MIN(p->max_rw, 4u << 20);
    }
    if (op == FQ_OP_FLUSH)
        r = sync_cmd(p, op, NULL, 0, 0, 0);
    for (uint64_t at = 0; r == 0 && at < len && op != FQ_OP_FLUSH; at += step)
        r = sync_cmd(p, op, io.buf ? io.buf + at : NULL, FQ_MIN(step, len - at), req->off + at,
                     req->flags);
    if (io.bounce) {
        if (r == 0 && op == FQ_OP_READ)
            fq_iov_from_buf(req->iov, req->iovcnt, req->iov_off, io.buf, len);
        free(io.buf);
    }
    update_watch(p);
    return r;
}

/* Block status of one command: the first extent. */
struct extent_out {
    uint64_t len;
    uint32_t flags;
    bool seen;
};

/* libnbd's block status callback: keep the first base:allocation extent. */
static int extent_cb(void *user_data, const char *metacontext, uint64_t offset,
                     uint32_t *entries, size_t nr_entries, int *error)
{
    struct extent_out *e = user_data;

    if (!e->seen && nr_entries >= 2 && !strcmp(metacontext, LIBNBD_CONTEXT_BASE_ALLOCATION)) {
        e->len = entries[0];
        e->flags = entries[1];
        e->seen = true;
    }
    return 0;
}

/* Allocation as the server reports it (base:allocation): data, or a hole
 * reading as zeros; all data when the server reports nothing. */
static int nbd_map(struct fq_bdev *bs, uint64_t off, uint64_t len, struct fq_map_entry *out)
{
    struct nbd_priv *p = bs->priv;
    struct extent_out e = { 0 };

    memset(out, 0, sizeof(*out));
    out->start = off;
    out->host_offset = off;
    out->length = len;
    out->flags = FQ_MAP_ALLOCATED | FQ_MAP_OFFSET;
    if (off >= bs->size) {
        out->flags |= FQ_MAP_ZERO;
        return 0;
    }
    len = FQ_MIN(len, bs->size - off);
    out->length = len;
    if (p->has_alloc) {
        nbd_extent_callback cb = { .callback = extent_cb, .user_data = &e };
        int r = nbd_block_status(p->h, FQ_MIN(len, NBD_MAX_RANGE), off, cb, 0);
        update_watch(p);
        if (r < 0)
            return nbd_last_errno();
    }
    if (e.seen && e.len > 0) {
        out->length = FQ_MIN(len, e.len);
        if (e.flags & LIBNBD_STATE_ZERO)
            out->flags |= FQ_MAP_ZERO;
        if (!(e.flags & LIBNBD_STATE_HOLE))
            out->flags |= FQ_MAP_DATA;
        return 0;
    }
    out->flags |= FQ_MAP_DATA;
    return 0;
}

static int64_t nbd_length(struct fq_bdev *bs)
{
    return (int64_t)bs->size;
}

static int nbd_get_info(struct fq_bdev *bs, struct fq_info *out)
{
    out->file_size = bs->size;
    out->actual_size = 0;     /* not known over the network */
    return 0;
}

static void nbd_close_dev(struct fq_bdev *bs)
{
    struct nbd_priv *p = bs->priv;

    fq_watch_stop(p->watch);
    if (!nbd_aio_is_dead(p->h) && !nbd_aio_is_closed(p->h))
        nbd_shutdown(p->h, LIBNBD_SHUTDOWN_ABANDON_PENDING);
    nbd_close(p->h);
    free(p);
}

static const struct fq_bdev_ops nbd_ops = {
    .name = "nbd",
    .identity_map = true,
    .map = nbd_map,
    .submit = nbd_submit,
    .io_sync = nbd_io_sync,
    .close = nbd_close_dev,
    .file_length = nbd_length,
    .get_info = nbd_get_info,
};

/* What the server said at the handshake, into the device. Returns 0 or
 * -errno with a message. */
static int take_export(struct fq_bdev *bs, struct nbd_priv *p, const char *name, unsigned flags,
                       char *err)
{
    int64_t size = nbd_get_size(p->h);
    int ro = nbd_is_read_only(p->h);

    if (size < 0 || ro < 0) {
        int r = nbd_last_errno();
        fq_seterr(err, "Could not open '%s': %s", name, nbd_get_error());
        return r;
    }
    if (ro && !(flags & FQ_FILE_RDONLY)) {
        fq_seterr(err, "Could not open '%s': the NBD server exports it read-only "
                  "(open it read-only): %s", name, strerror(EPERM));
        return -EPERM;
    }
    bs->size = (uint64_t)size;
    bs->readonly = flags & FQ_FILE_RDONLY;
    p->can_flush = nbd_can_flush(p->h) == 1;
    p->can_trim = nbd_can_trim(p->h) == 1;
    p->can_zero = nbd_can_zero(p->h) == 1;
    p->has_alloc = nbd_can_meta_context(p->h, LIBNBD_CONTEXT_BASE_ALLOCATION) == 1;
    int64_t max = nbd_get_block_size(p->h, LIBNBD_SIZE_MAXIMUM);
    p->max_rw = max > 0 ? FQ_MIN((uint64_t)max, NBD_MAX_RW) : NBD_MAX_RW;
    int64_t min = nbd_get_block_size(p->h, LIBNBD_SIZE_MINIMUM);
    bs->align = min > 1 && min <= 65536 ? (unsigned)min : 1;
    return 0;
}

/* Open the export `filename` names (FQ_FILE_* flags). */
static int nbd_open(struct fq_ctx *ctx, const char *filename, unsigned flags,
                    struct fq_bdev **out, char *err)
{
    struct fq_bdev *bs;
    struct nbd_priv *p;
    int r;

    if (flags & FQ_FILE_CREATE) {
        fq_seterr(err, "Could not create '%s': an NBD export cannot be created or emptied "
                  "(write into it with convert -n)", filename);
        return -ENOTSUP;
    }
    bs = calloc(1, sizeof(*bs));
    p = calloc(1, sizeof(*p));
    if (!bs || !p || !(bs->filename = strdup(filename))) {
        r = -ENOMEM;
        goto fail;
    }
    if ((r = fq_libnbd_load(filename, err)) < 0)
        goto fail;
    if (!(p->h = nbd_create())) {
        r = nbd_last_errno();
        fq_seterr(err, "Could not open '%s': %s", filename, nbd_get_error());
        goto fail;
    }
    nbd_add_meta_context(p->h, LIBNBD_CONTEXT_BASE_ALLOCATION);
    if ((r = nbd_name_connect(p->h, filename, err)) < 0 ||
        (r = take_export(bs, p, filename, flags, err)) < 0)
        goto fail;
    r = fq_watch_start(ctx, nbd_aio_get_fd(p->h), 0, nbd_ready, bs, &p->watch);
    if (r < 0) {
        fq_seterr(err, "Could not open '%s': cannot watch its socket: %s", filename, strerror(-r));
        goto fail;
    }
    bs->ops = &nbd_ops;
    bs->ctx = ctx;
    bs->priv = p;
    *out = bs;
    return 0;
fail:
    if (p && p->h)
        nbd_close(p->h);
    free(p);
    if (bs)
        free(bs->filename);
    free(bs);
    return r;
}

const struct fq_driver fq_driver_nbd = {
    .name = "nbd",
    .open_file = nbd_open,
    .claims = nbd_name_claims,
};
