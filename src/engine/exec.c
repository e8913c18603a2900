/* exec.c: the blocking executor of one operation (fq_aio_exec), shared by
 * the sync and thread engines and by the blocking paths of devices, and
 * the completion helper of the engines that finish work off the ring.
 * SPDX-License-Identifier: MIT
 */
#include <fcntl.h>
#include <linux/falloc.h>
#include <limits.h>
#include <poll.h>
#include <unistd.h>

#include "engine/engine.h"
#include "util.h"

/* Advance an iovec array by n bytes, copying into a scratch array. */
static int iov_advance(struct iovec *dst, const struct iovec *iov, int cnt, size_t n)
{
    int o = 0;

    for (int i = 0; i < cnt; i++) {
        if (n >= iov[i].iov_len) {
            n -= iov[i].iov_len;
            continue;
        }
        dst[o].iov_base = (uint8_t *)iov[i].iov_base + n;
        dst[o].iov_len = iov[i].iov_len - n;
        n = 0;
        o++;
    }
    return o;
}

static int64_t rw_loop(enum fq_op op, int fd, uint64_t off, const struct iovec *iov, int cnt)
{
    size_t total = fq_iov_size(iov, cnt), done = 0;
    struct iovec small[16], *tmp = cnt <= 16 ? small : malloc((size_t)cnt * sizeof(*tmp));

    if (!tmp)
        return -ENOMEM;
    while (done < total) {
        int n = iov_advance(tmp, iov, cnt, done);
        int use = n > IOV_MAX ? IOV_MAX : n;
        ssize_t r = op == FQ_OP_READ ? preadv(fd, tmp, use, (off_t)(off + done))
                                     : pwritev(fd, tmp, use, (off_t)(off + done));
        if (r < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            if (tmp != small)
                free(tmp);
            return -errno;
        }
        if (r == 0) {
            if (op == FQ_OP_WRITE) {
                if (tmp != small)
                    free(tmp);
                return -EIO;
            }
            break;    /* end of file */
        }
        done += (size_t)r;
    }
    if (tmp != small)
        free(tmp);
    return (int64_t)done;
}

int fq_engine_complete_list(struct fq_engine *e, struct fq_aio *list)
{
    int n = 0;

    while (list) {
        struct fq_aio *a = list;
        list = a->next;
        e->inflight--;
        n++;
        a->done(a);
    }
    return n;
}

int64_t fq_aio_poll_exec(int fd, unsigned events)
{
    struct pollfd pfd = { .fd = fd, .events = (short)(events ? events : POLLIN) };

    for (;;) {
        int r = poll(&pfd, 1, -1);
        if (r > 0)
            return pfd.revents;
        if (r < 0 && errno != EINTR)
            return -errno;
    }
}

int64_t fq_aio_exec(enum fq_op op, int fd, uint64_t off, uint64_t len,
                    const struct iovec *iov, int iovcnt)
{
    switch (op) {
    case FQ_OP_READ:
    case FQ_OP_WRITE:
        return rw_loop(op, fd, off, iov, iovcnt);
    case FQ_OP_FLUSH:
        return fdatasync(fd) < 0 ? -errno : 0;
    case FQ_OP_DISCARD:
        if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len) < 0)
            return -errno;
        return 0;
    case FQ_OP_WRITE_ZEROES:
        if (fallocate(fd, FALLOC_FL_ZERO_RANGE, (off_t)off, (off_t)len) < 0)
            return -errno;
        return 0;
    }
    return -EINVAL;
}
