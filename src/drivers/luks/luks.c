/* luks.c: a bare LUKS1 container (format "luks"): the LUKS header and key
 * material first, the encrypted disk from the header's payload offset on.
 * Opening unlocks the master key with the passphrase of the open options
 * (src/crypto/ does the header and the cipher); guest sector n is
 * encrypted with the initial vector of n (offsets counted from the
 * payload).
 *
 * Requests go through a bounce buffer of whole 512-byte sectors: a read
 * is decrypted there when the child's read completed, a write encrypted
 * there before it is sent. A write or write-zeroes that covers part of a
 * sector is a read-modify-write of its sectors, synchronous, so that two
 * never interleave on one sector; write-zeroes writes encrypted zeros
 * (synchronously, a MiB at a time); discard does nothing (the content
 * must stay readable as what it was). A container is never created here.
 * Opened for check / info (check_mode) without a key, it does no I/O.
 * SPDX-License-Identifier: MIT
 */
#include "crypt.h"
#include "driver.h"
#include "util.h"

static const uint8_t luks_magic[6] = { 'L', 'U', 'K', 'S', 0xba, 0xbe };

struct luks {
    struct fq_cipher *c;
    uint64_t payload;           /* bytes before the disk in the child */
};

/* One request in flight to the child. */
struct lio {
    struct fq_req child;        /* first: the completion gets it back */
    struct fq_bdev *bs;
    struct fq_req *req;
    uint8_t *buf;
    struct iovec v;
    size_t head;                /* reads: bytes of buf before the data */
};

/* 100 when the device starts with the LUKS magic. */
static int luks_probe(struct fq_bdev *file)
{
    uint8_t m[sizeof(luks_magic)];

    if (file->size < sizeof(m) || fq_bdev_pread_sync(file, m, sizeof(m), 0) < 0)
        return 0;
    return memcmp(m, luks_magic, sizeof(m)) ? 0 : 100;
}

static int luks_check(struct fq_bdev *bs, const struct fq_req *req)
{
    if (!((struct luks *)bs->priv)->c)
        return -EACCES;         /* opened without its key */
    return fq_req_check(bs, req);
}

/* A whole-sector bounce request for `req` (a read, or an aligned write,
 * encrypted here). 0 or -ENOMEM. */
static int lio_prep(struct fq_bdev *bs, struct fq_req *req, struct lio *io)
{
    struct luks *l = bs->priv;
    uint64_t lo = FQ_ALIGN_DOWN(req->off, FQ_CRYPT_SECTOR);
    uint64_t hi = FQ_ALIGN_UP(req->off + req->len, (uint64_t)FQ_CRYPT_SECTOR);

    io->bs = bs;
    io->req = req;
    io->head = (size_t)(req->off - lo);
    if (!(io->buf = fq_memalign((size_t)(hi - lo))))
        return -ENOMEM;
    io->v = (struct iovec){ io->buf, (size_t)(hi - lo) };
    io->child = (struct fq_req){ .op = req->op, .off = l->payload + lo, .len = hi - lo,
                                 .iov = &io->v, .iovcnt = 1, .opaque = io };
    if (req->op == FQ_OP_WRITE) {
        fq_iov_to_buf(req->iov, req->iovcnt, req->iov_off, io->buf, (size_t)req->len);
        fq_cipher_sectors(l->c, lo / FQ_CRYPT_SECTOR, io->buf, (size_t)(hi - lo), true);
    }
    return 0;
}

/* The child's part is done: a read decrypted and copied out. */
static int lio_finish(struct lio *io, int ret)
{
    struct luks *l = io->bs->priv;
    struct fq_req *req = io->req;

    if (ret == 0 && req->op == FQ_OP_READ) {
        fq_cipher_sectors(l->c, (io->child.off - l->payload) / FQ_CRYPT_SECTOR, io->buf,
                          io->v.iov_len, false);
        fq_iov_from_buf(req->iov, req->iovcnt, req->iov_off, io->buf + io->head, (size_t)req->len);
    }
    free(io->buf);
    return ret;
}

static void lio_done(struct fq_req *child, int ret)
{
    struct lio *io = (struct lio *)child;
    struct fq_req *req = io->req;

    ret = lio_finish(io, ret);
    free(io);
    req->cb(req, ret);
}

static int luks_io_sync(struct fq_bdev *bs, struct fq_req *req);

/* Write [off, off+len) of `src` (NULL: zeros) as whole sectors, those
 * covered in part read first. */
static int rmw(struct fq_bdev *bs, uint64_t off, uint64_t len, const struct fq_req *src)
{
    uint64_t lo = FQ_ALIGN_DOWN(off, FQ_CRYPT_SECTOR);
    uint64_t hi = FQ_ALIGN_UP(off + len, (uint64_t)FQ_CRYPT_SECTOR);
    CLEANUP_FREE uint8_t *buf = fq_memalign((size_t)(hi - lo));
    struct iovec v = { buf, (size_t)(hi - lo) };
    struct fq_req r = { .op = FQ_OP_READ, .off = lo, .len = hi - lo, .iov = &v, .iovcnt = 1 };
    int ret;

    if (!buf)
        return -ENOMEM;
    if (off != lo || off + len != hi) {
        if ((ret = luks_io_sync(bs, &r)) < 0)
            return ret;
    }
    if (src)
        fq_iov_to_buf(src->iov, src->iovcnt, src->iov_off, buf + (off - lo), (size_t)len);
    else
        memset(buf + (off - lo), 0, (size_t)len);
    r.op = FQ_OP_WRITE;
    return luks_io_sync(bs, &r);
}

/* Requests that run synchronously: unaligned writes, write-zeroes. */
static int slow_path(struct fq_bdev *bs, struct fq_req *req)
{
    if (req->op == FQ_OP_WRITE)
        return rmw(bs, req->off, req->len, req);
    for (uint64_t off = req->off, end = req->off + req->len; off < end;) {
        uint64_t n = FQ_MIN(end - off, (uint64_t)(1u << 20) - (off & (FQ_CRYPT_SECTOR - 1)));
        int r = rmw(bs, off, n, NULL);
        if (r < 0)
            return r;
        off += n;
    }
    return 0;
}

static bool slow(const struct fq_req *req)
{
    return req->op == FQ_OP_WRITE_ZEROES ||
           (req->op == FQ_OP_WRITE && !FQ_IS_ALIGNED(req->off | req->len, FQ_CRYPT_SECTOR));
}

static void luks_submit(struct fq_bdev *bs, struct fq_req *req)
{
    int r = luks_check(bs, req);
    struct lio *io;

    if (r == 0 && req->op == FQ_OP_FLUSH) {
        bs->child->ops->submit(bs->child, req);
        return;
    }
    if (r < 0 || req->op == FQ_OP_DISCARD || req->len == 0 || slow(req)) {
        if (r == 0 && slow(req) && req->len)
            r = slow_path(bs, req);
        fq_req_complete_later(bs, req, r);
        return;
    }
    if (!(io = calloc(1, sizeof(*io))) || (r = lio_prep(bs, req, io)) < 0) {
        free(io);
        fq_req_complete_later(bs, req, -ENOMEM);
        return;
    }
    io->child.cb = lio_done;
    bs->child->ops->submit(bs->child, &io->child);
}

static int luks_io_sync(struct fq_bdev *bs, struct fq_req *req)
{
    struct lio io;
    int r = luks_check(bs, req);

    if (r < 0 || req->op == FQ_OP_DISCARD || (req->len == 0 && req->op != FQ_OP_FLUSH))
        return r;
    if (req->op == FQ_OP_FLUSH)
        return bs->child->ops->io_sync(bs->child, req);
    if (slow(req))
        return slow_path(bs, req);
    if ((r = lio_prep(bs, req, &io)) < 0)
        return r;
    return lio_finish(&io, bs->child->ops->io_sync(bs->child, &io.child));
}

static void luks_close(struct fq_bdev *bs)
{
    struct luks *l = bs->priv;

    fq_cipher_free(l->c);
    free(l);
}

static int luks_get_info(struct fq_bdev *bs, struct fq_info *out)
{
    struct fq_info f;

    strcpy(out->format, "luks");
    out->virtual_size = bs->size;
    out->encrypted = 1;
    memset(&f, 0, sizeof(f));
    if (bs->child->ops->get_info && bs->child->ops->get_info(bs->child, &f) == 0) {
        out->file_size = f.file_size;
        out->actual_size = f.actual_size;
    }
    return 0;
}

static const struct fq_bdev_ops luks_ops = {
    .name = "luks",
    .submit = luks_submit,
    .io_sync = luks_io_sync,
    .close = luks_close,
    .get_info = luks_get_info,
};

/* The header's bytes (fq_crypt_read_fn). */
static int hdr_read(void *opaque, void *buf, size_t len, uint64_t off)
{
    return fq_bdev_pread_sync(opaque, buf, len, off);
}

static int luks_open(struct fq_bdev *child, const struct fq_open_opts *opts,
                     struct fq_bdev **out, char *err)
{
    struct fq_encrypt_info info;
    struct fq_cipher *c = NULL;
    struct fq_bdev *bs;
    struct luks *l;
    int r;

    if (!opts || (!opts->key_secret && !opts->check_mode)) {
        fq_seterr(err, "Parameter 'key-secret' is required for cipher");
        return -EINVAL;
    }
    /* check_mode (info): the header only, no I/O */
    r = fq_luks_open(hdr_read, child, child->size, opts->check_mode ? NULL : opts->key_secret,
                     opts->key_secret_len, &info, &c, err);
    if (r < 0)
        return r;
    bs = calloc(1, sizeof(*bs));
    l = calloc(1, sizeof(*l));
    if (!bs || !l) {
        free(bs);
        free(l);
        fq_cipher_free(c);
        return -ENOMEM;
    }
    l->c = c;
    l->payload = info.payload_offset;
    bs->ops = &luks_ops;
    bs->ctx = child->ctx;
    bs->priv = l;
    bs->size = FQ_ALIGN_DOWN(child->size - l->payload, FQ_CRYPT_SECTOR);
    bs->readonly = child->readonly || opts->readonly;
    bs->align = 1;
    bs->child = child;
    bs->filename = child->filename ? strdup(child->filename) : NULL;
    *out = bs;
    return 0;
}

const struct fq_driver fq_driver_luks = {
    .name = "luks",
    .probe = luks_probe,
    .open = luks_open,
};
