/* ops.c: the file operations of `fastqcow mount`. The mounted file is the
 * FUSE root (inode 1) and it is a regular file: there are no lookups.
 *
 * read, write, fsync and fallocate become one aio call each, issued from
 * the dispatch of the request and answered from the completion callback
 * (a read's data is read into the request's slot and sent from there; a
 * write's data is written from where the request was read into). What the
 * library can only do on an idle image (resizing, for --growable) waits in
 * session.c's queue and runs from mount_run_waiting.
 *
 * Semantics: the size is the virtual size; writes past it fail with EFBIG
 * (or grow the image with --growable); truncation to another size fails
 * with EPERM (or resizes, --growable); fsync and fdatasync flush the
 * image; PUNCH_HOLE becomes write-zeroes that may unmap (the range reads
 * as zeros afterwards, as a punched file does) and ZERO_RANGE
 * write-zeroes; SEEK_DATA and SEEK_HOLE follow fq_map (a hole is a range
 * that reads as zeros without data behind it). FLUSH (close) does not
 * flush the image: as for any regular file, durability is fsync's.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/falloc.h>
#include <stdio.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "mount.h"
#include "../common/cli.h"

/* Attribute and entry validity: nobody but this process changes the file. */
#define ATTR_TIMEOUT 1.0

void mount_fill_stat(struct mnt *m, struct stat *st)
{
    struct fq_info info;

    *st = m->st;
    st->st_ino = FUSE_ROOT_ID;
    st->st_nlink = 1;
    st->st_size = (off_t)m->size;
    st->st_blksize = 4096;
    st->st_blocks = 0;
    if (fq_get_info(m->img, &info) == 0)
        st->st_blocks = (blkcnt_t)((info.actual_size + 511) / 512);
}

/* The connection's parameters: many requests in flight, the largest
 * requests the kernel sends, replies from memory. */
static void op_init(void *userdata, struct fuse_conn_info *conn)
{
    struct mnt *m = userdata;

    m->got_init = true;
    conn->want |= conn->capable & (FUSE_CAP_ASYNC_READ | FUSE_CAP_ASYNC_DIO);
    conn->want &= ~(unsigned)(FUSE_CAP_SPLICE_READ | FUSE_CAP_SPLICE_WRITE |
                              FUSE_CAP_SPLICE_MOVE | FUSE_CAP_ATOMIC_O_TRUNC |
                              FUSE_CAP_WRITEBACK_CACHE);
    conn->max_write = (unsigned)mount_max_io();
    conn->max_background = FQ_MOUNT_SLOTS;
    conn->congestion_threshold = FQ_MOUNT_SLOTS * 3 / 4;
}

/* Answer a request that kept its slot with an error and free the slot. */
static void fail_slot(struct mslot *s, int err)
{
    fuse_reply_err(s->req, err);
    mount_release_slot(s);
}

/* Count an aio call in flight (called before submitting it). */
static void io_start(struct mnt *m)
{
    m->io_inflight++;
}

/* The result of submitting an aio call counted with io_start: a refusal
 * answers the request at once. */
static void io_submitted(struct mslot *s, int r)
{
    if (r < 0) {
        s->m->io_inflight--;
        fail_slot(s, -r);
    }
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct mnt *m = fuse_req_userdata(req);
    struct stat st;

    (void)ino;
    (void)fi;
    mount_fill_stat(m, &st);
    fuse_reply_attr(req, &st, ATTR_TIMEOUT);
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
                       struct fuse_file_info *fi)
{
    struct mnt *m = fuse_req_userdata(req);
    struct stat st;

    (void)ino;
    (void)fi;
    bool resize = (to_set & FUSE_SET_ATTR_SIZE) && (uint64_t)attr->st_size != m->size;
    if (resize && m->o->readonly) {
        fuse_reply_err(req, EROFS);
        return;
    }
    if (resize && (!m->o->growable || attr->st_size < 0)) {
        fuse_reply_err(req, EPERM);
        return;
    }
    if (to_set & FUSE_SET_ATTR_MODE)
        m->st.st_mode = (m->st.st_mode & S_IFMT) | (attr->st_mode & 07777);
    if (to_set & FUSE_SET_ATTR_UID)
        m->st.st_uid = attr->st_uid;
    if (to_set & FUSE_SET_ATTR_GID)
        m->st.st_gid = attr->st_gid;
    if (to_set & FUSE_SET_ATTR_ATIME)
        m->st.st_atim = attr->st_atim;
    if (to_set & FUSE_SET_ATTR_MTIME)
        m->st.st_mtim = attr->st_mtim;
    if (to_set & FUSE_SET_ATTR_ATIME_NOW)
        clock_gettime(CLOCK_REALTIME, &m->st.st_atim);
    if (to_set & FUSE_SET_ATTR_MTIME_NOW)
        clock_gettime(CLOCK_REALTIME, &m->st.st_mtim);
    if (to_set & (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID))
        clock_gettime(CLOCK_REALTIME, &m->st.st_ctim);
    if (resize) {
        /* resizing needs an idle image: the reply comes from there */
        struct mslot *s = mount_keep_slot(m, req);
        s->op = MOP_TRUNCATE;
        s->len = (uint64_t)attr->st_size;
        mount_wait_idle(s);
        return;
    }
    mount_fill_stat(m, &st);
    fuse_reply_attr(req, &st, ATTR_TIMEOUT);
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct mnt *m = fuse_req_userdata(req);

    (void)ino;
    if (m->o->readonly && (fi->flags & O_ACCMODE) != O_RDONLY) {
        fuse_reply_err(req, EROFS);
        return;
    }
    fi->direct_io = m->o->direct_io;
    fi->keep_cache = !m->o->direct_io;
    fuse_reply_open(req, fi);
}

static void read_done(void *opaque, int ret)
{
    struct mslot *s = opaque;

    s->m->io_inflight--;
    if (ret < 0)
        fuse_reply_err(s->req, -ret);
    else
        fuse_reply_buf(s->req, s->iov.iov_base, s->iov.iov_len);
    mount_release_slot(s);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                    struct fuse_file_info *fi)
{
    struct mnt *m = fuse_req_userdata(req);

    (void)ino;
    (void)fi;
    if (off < 0 || (uint64_t)off >= m->size || size == 0) {
        fuse_reply_buf(req, NULL, 0);
        return;
    }
    uint64_t len = size;
    if (len > m->size - (uint64_t)off)
        len = m->size - (uint64_t)off;
    if (len > mount_max_io())
        len = mount_max_io(); /* never: the kernel asks at most max_pages */
    struct mslot *s = mount_keep_slot(m, req);
    s->rbuf = len > FQ_MOUNT_RBUF_MIN ? mount_rbuf_get(m) : NULL;
    s->iov.iov_base = s->rbuf ? s->rbuf : s->base;
    s->iov.iov_len = (size_t)len;
    io_start(m);
    int r = fq_aio_preadv(m->img, &s->iov, 1, 0, (size_t)len, (uint64_t)off, read_done, s);
    io_submitted(s, r);
}

static void write_done(void *opaque, int ret)
{
    struct mslot *s = opaque;

    s->m->io_inflight--;
    if (ret < 0)
        fuse_reply_err(s->req, -ret);
    else
        fuse_reply_write(s->req, s->iov.iov_len);
    mount_release_slot(s);
}

/* Issue a kept write whose data is s->iov at s->off. */
static void issue_write(struct mslot *s)
{
    struct mnt *m = s->m;

    io_start(m);
    int r = fq_aio_pwritev(m->img, &s->iov, 1, 0, s->iov.iov_len, s->off, write_done, s);
    io_submitted(s, r);
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size,
                     off_t off, struct fuse_file_info *fi)
{
    struct mnt *m = fuse_req_userdata(req);

    (void)ino;
    (void)fi;
    if (m->o->readonly) {
        fuse_reply_err(req, EROFS);
        return;
    }
    if (off < 0 || size > INT64_MAX - (uint64_t)off) {
        fuse_reply_err(req, EINVAL);
        return;
    }
    if (size == 0) {
        fuse_reply_write(req, 0);
        return;
    }
    uint64_t end = (uint64_t)off + size;
    if (end > m->size && !m->o->growable) {
        /* the file cannot grow: write what fits, as a short write */
        if ((uint64_t)off >= m->size) {
            fuse_reply_err(req, EFBIG);
            return;
        }
        size = (size_t)(m->size - (uint64_t)off);
        end = m->size;
    }
    struct mslot *s = mount_keep_slot(m, req);
    s->iov.iov_base = (void *)buf;
    s->iov.iov_len = size;
    s->off = (uint64_t)off;
    /* a long write to an image opened O_DIRECT is copied into a buffer in
     * huge pages: one segment for the block layer instead of one per page
     * of the slot (1 MiB writes at depth 1: 0.38-0.55 -> 0.62-1.19 GiB/s
     * on the development machine's disk); through the page cache the copy
     * would buy nothing */
    if (size > FQ_MOUNT_RBUF_MIN && size <= mount_max_io() &&
        (m->o->open.cache == FQ_CACHE_NONE || m->o->open.cache == FQ_CACHE_DIRECTSYNC) &&
        (s->rbuf = mount_rbuf_get(m))) {
        memcpy(s->rbuf, buf, size);
        s->iov.iov_base = s->rbuf;
    }
    if (end > m->size) {
        s->op = MOP_WRITE_GROW;
        s->len = end;
        mount_wait_idle(s);
        return;
    }
    issue_write(s);
}

/* FLUSH comes with every close(): nothing to do (fsync flushes). */
static void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)ino;
    (void)fi;
    fuse_reply_err(req, 0);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)ino;
    (void)fi;
    fuse_reply_err(req, 0);
}

static void simple_done(void *opaque, int ret)
{
    struct mslot *s = opaque;

    s->m->io_inflight--;
    fuse_reply_err(s->req, ret < 0 ? -ret : 0);
    mount_release_slot(s);
}

static void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
    struct mnt *m = fuse_req_userdata(req);

    (void)ino;
    (void)datasync;
    (void)fi;
    if (m->o->readonly) {
        fuse_reply_err(req, 0);
        return;
    }
    struct mslot *s = mount_keep_slot(m, req);
    io_start(m);
    int r = fq_aio_flush(m->img, simple_done, s);
    io_submitted(s, r);
}

/* Issue a fallocate request (kept slot; s->off, s->len inside the
 * image, s->mode the FALLOC_FL_ bits). */
static void issue_fallocate(struct mslot *s)
{
    struct mnt *m = s->m;
    int r;

    if (s->len == 0 || !(s->mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE))) {
        /* plain allocation: the image allocates on write */
        fail_slot(s, 0);
        return;
    }
    io_start(m);
    r = fq_aio_write_zeroes(m->img, s->off, s->len,
                            (s->mode & FALLOC_FL_PUNCH_HOLE) ? FQ_ZERO_MAY_UNMAP : 0,
                            simple_done, s);
    io_submitted(s, r);
}

static void op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off,
                         off_t length, struct fuse_file_info *fi)
{
    struct mnt *m = fuse_req_userdata(req);
    const int known = FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE;

    (void)ino;
    (void)fi;
    if (mode & ~known) {
        fuse_reply_err(req, EOPNOTSUPP);
        return;
    }
    if (off < 0 || length <= 0 || (uint64_t)length > INT64_MAX - (uint64_t)off) {
        fuse_reply_err(req, EINVAL);
        return;
    }
    if (m->o->readonly) {
        fuse_reply_err(req, EROFS);
        return;
    }
    uint64_t start = (uint64_t)off, end = start + (uint64_t)length;
    bool grow = end > m->size && !(mode & FALLOC_FL_KEEP_SIZE);
    if (grow && !m->o->growable) {
        fuse_reply_err(req, EFBIG);
        return;
    }
    struct mslot *s = mount_keep_slot(m, req);
    s->mode = mode;
    s->off = start;
    if (grow) {
        /* the new range reads as zeros: only the old part needs the work */
        s->op = MOP_FALLOCATE_GROW;
        s->len = end;
        mount_wait_idle(s);
        return;
    }
    if (start >= m->size)
        end = start;
    else if (end > m->size)
        end = m->size;
    s->len = end - start;
    issue_fallocate(s);
}

/* SEEK_DATA / SEEK_HOLE from the allocation status. */
static void op_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence,
                     struct fuse_file_info *fi)
{
    struct mnt *m = fuse_req_userdata(req);
    struct fq_map_entry e;
    uint64_t pos;

    (void)ino;
    (void)fi;
    if (whence != SEEK_DATA && whence != SEEK_HOLE) {
        fuse_reply_err(req, EINVAL);
        return;
    }
    if (off < 0 || (uint64_t)off >= m->size) {
        fuse_reply_err(req, ENXIO);
        return;
    }
    pos = (uint64_t)off;
    while (pos < m->size) {
        int r = fq_map(m->img, pos, m->size - pos, &e);
        if (r < 0) {
            fuse_reply_err(req, -r);
            return;
        }
        if (e.length == 0)
            break;
        bool data = (e.flags & FQ_MAP_DATA) != 0;
        if (data == (whence == SEEK_DATA)) {
            fuse_reply_lseek(req, (off_t)pos);
            return;
        }
        pos += e.length;
    }
    if (whence == SEEK_HOLE)
        fuse_reply_lseek(req, (off_t)m->size); /* the hole at the end */
    else
        fuse_reply_err(req, ENXIO);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
    struct mnt *m = fuse_req_userdata(req);
    struct statvfs sv;

    (void)ino;
    memset(&sv, 0, sizeof(sv));
    sv.f_bsize = 4096;
    sv.f_frsize = 4096;
    sv.f_blocks = (fsblkcnt_t)((m->size + 4095) / 4096);
    sv.f_files = 1;
    sv.f_namemax = 255;
    fuse_reply_statfs(req, &sv);
}

/* FQ_MOUNT_IOC_PID: the serving process, for `fastqcow umount`. */
static void op_ioctl(fuse_req_t req, fuse_ino_t ino, unsigned int cmd, void *arg,
                     struct fuse_file_info *fi, unsigned flags, const void *in_buf,
                     size_t in_bufsz, size_t out_bufsz)
{
    (void)ino;
    (void)arg;
    (void)fi;
    (void)in_buf;
    (void)in_bufsz;
    if (cmd != FQ_MOUNT_IOC_PID || (flags & FUSE_IOCTL_COMPAT) || out_bufsz < sizeof(uint64_t)) {
        fuse_reply_err(req, ENOTTY);
        return;
    }
    uint64_t pid = (uint64_t)getpid();
    fuse_reply_ioctl(req, 0, &pid, sizeof(pid));
}

/* Resize to `size` (--growable); the new range reads as zeros. */
static int grow_to(struct mnt *m, uint64_t size)
{
    char err[FQ_ERR_MAX] = "";
    unsigned flags = size < m->size ? FQ_RESIZE_SHRINK | FQ_RESIZE_DISCARD_DATA : 0;
    int r = fq_resize(m->img, size, flags, err);

    if (r < 0) {
        tool_error("resizing to %" PRIu64 " bytes: %s", size, err[0] ? err : strerror(-r));
        return r;
    }
    m->size = fq_size(m->img);
    return 0;
}

void mount_run_waiting(struct mslot *s)
{
    struct mnt *m = s->m;
    int r;
    struct stat st;

    switch (s->op) {
    case MOP_WRITE_GROW:
        s->op = MOP_NONE;
        if (s->len > m->size && (r = grow_to(m, s->len)) < 0) {
            fail_slot(s, -r);
            return;
        }
        issue_write(s);
        return;
    case MOP_FALLOCATE_GROW: {
        s->op = MOP_NONE;
        uint64_t old = m->size;
        if (s->len > m->size && (r = grow_to(m, s->len)) < 0) {
            fail_slot(s, -r);
            return;
        }
        s->len = s->off < old ? old - s->off : 0;
        issue_fallocate(s);
        return;
    }
    case MOP_TRUNCATE:
        s->op = MOP_NONE;
        if ((r = grow_to(m, s->len)) < 0) {
            fail_slot(s, -r);
            return;
        }
        clock_gettime(CLOCK_REALTIME, &m->st.st_mtim);
        m->st.st_ctim = m->st.st_mtim;
        mount_fill_stat(m, &st);
        fuse_reply_attr(s->req, &st, ATTR_TIMEOUT);
        mount_release_slot(s);
        return;
    default:
        fail_slot(s, EIO);
        return;
    }
}

const struct fuse_lowlevel_ops mount_ops = {
    .init = op_init,
    .getattr = op_getattr,
    .setattr = op_setattr,
    .open = op_open,
    .read = op_read,
    .write = op_write,
    .flush = op_flush,
    .release = op_release,
    .fsync = op_fsync,
    .statfs = op_statfs,
    .ioctl = op_ioctl,
    .fallocate = op_fallocate,
    .lseek = op_lseek,
};
