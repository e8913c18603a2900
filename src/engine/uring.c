/* uring.c: the io_uring engine. Submissions are batched: submit()
 * only fills SQEs, and kick()/wait() hand them to the kernel in one call,
 * so the extents of a fragmented request enter the kernel together.
 * Operations that do not fit the ring wait in an overflow list.
 * SPDX-License-Identifier: MIT
 */
#include "config.h"
#include "engine/engine.h"
#include "util.h"

#if FQ_HAVE_URING
#include <liburing.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define RING_DEPTH 256

struct uring_priv {
    struct io_uring ring;
    struct fq_aio *overflow, **overflow_tail;
    unsigned queued;      /* SQEs filled, not yet submitted */
    int efd;
};

static int uring_init(struct fq_engine *e, char *err)
{
    struct uring_priv *p = calloc(1, sizeof(*p));
    int r;

    if (!p)
        return -ENOMEM;
    r = io_uring_queue_init(RING_DEPTH, &p->ring, 0);
    if (r < 0) {
        fq_seterr(err, "io_uring_queue_init: %s", strerror(-r));
        free(p);
        return r;
    }
    p->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (p->efd >= 0)
        io_uring_register_eventfd(&p->ring, p->efd);
    p->overflow_tail = &p->overflow;
    e->priv = p;
    return 0;
}

static void uring_fini(struct fq_engine *e)
{
    struct uring_priv *p = e->priv;

    if (!p)
        return;
    io_uring_queue_exit(&p->ring);
    if (p->efd >= 0)
        close(p->efd);
    free(p);
    e->priv = NULL;
}

static bool fill_sqe(struct uring_priv *p, struct fq_aio *a)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&p->ring);

    if (!sqe)
        return false;
    if (a->is_poll || a->is_cancel) {
        if (a->is_poll)
            io_uring_prep_poll_add(sqe, a->fd, a->poll_events ? a->poll_events : POLLIN);
        else
            io_uring_prep_poll_remove(sqe, (__u64)(uintptr_t)a->target);
        io_uring_sqe_set_data(sqe, a);
        p->queued++;
        return true;
    }
    switch (a->op) {
    case FQ_OP_READ:
        io_uring_prep_readv(sqe, a->fd, a->iov, (unsigned)a->iovcnt, a->off);
        break;
    case FQ_OP_WRITE:
        io_uring_prep_writev(sqe, a->fd, a->iov, (unsigned)a->iovcnt, a->off);
        break;
    case FQ_OP_FLUSH:
        io_uring_prep_fsync(sqe, a->fd, IORING_FSYNC_DATASYNC);
        break;
    case FQ_OP_DISCARD:
        io_uring_prep_fallocate(sqe, a->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                                a->off, a->len);
        break;
    case FQ_OP_WRITE_ZEROES:
        io_uring_prep_fallocate(sqe, a->fd, FALLOC_FL_ZERO_RANGE, a->off, a->len);
        break;
    }
    io_uring_sqe_set_data(sqe, a);
    p->queued++;
    return true;
}

static void uring_submit(struct fq_engine *e, struct fq_aio *aio)
{
    struct uring_priv *p = e->priv;

    aio->next = NULL;
    if (p->overflow || !fill_sqe(p, aio)) {
        *p->overflow_tail = aio;
        p->overflow_tail = &aio->next;
    }
}

static void uring_kick(struct fq_engine *e)
{
    struct uring_priv *p = e->priv;

    while (p->overflow) {
        struct fq_aio *a = p->overflow;
        if (!fill_sqe(p, a)) {
            if (p->queued == 0)
                break;
            io_uring_submit(&p->ring);
            p->queued = 0;
            continue;
        }
        p->overflow = a->next;
        if (!p->overflow)
            p->overflow_tail = &p->overflow;
    }
    if (p->queued) {
        io_uring_submit(&p->ring);
        p->queued = 0;
    }
}

/* A short read or write is finished with a blocking call for the rest:
 * it happens only at end of file or under memory pressure. */
static void finish_short(struct fq_aio *a)
{
    if ((a->op != FQ_OP_READ && a->op != FQ_OP_WRITE) || a->res <= 0)
        return;
    size_t total = fq_iov_size(a->iov, a->iovcnt);
    if ((size_t)a->res >= total)
        return;
    struct fq_iovb b;
    fq_iovb_init(&b);
    if (fq_iovb_add_slice(&b, a->iov, a->iovcnt, (size_t)a->res, total - (size_t)a->res) < 0) {
        a->res = -ENOMEM;
        return;
    }
    int64_t r = fq_aio_exec(a->op, a->fd, a->off + (uint64_t)a->res, 0, b.v, b.cnt);
    fq_iovb_free(&b);
    a->res = r < 0 ? r : a->res + r;
}

static int uring_wait(struct fq_engine *e, int timeout_ms)
{
    struct uring_priv *p = e->priv;
    struct io_uring_cqe *cqe;
    unsigned batch = 0;
    int n = 0, r;

    uring_kick(e);
    /* Reap the completions ready when reaping starts (one batch): those
     * of work submitted meanwhile wait for the next call, so an operation
     * that completes as soon as it is queued again (a poll on a descriptor
     * that stays ready) cannot keep this call from returning. */
    for (;;) {
        if (batch == 0) {
            if (n > 0)
                break;
            batch = io_uring_cq_ready(&p->ring);
        }
        if (batch == 0) {
            if (timeout_ms == 0)
                break;
            if (timeout_ms < 0) {
                r = io_uring_wait_cqe(&p->ring, &cqe);
            } else {
                struct __kernel_timespec ts = {
                    .tv_sec = timeout_ms / 1000,
                    .tv_nsec = (long long)(timeout_ms % 1000) * 1000000,
                };
                r = io_uring_wait_cqe_timeout(&p->ring, &cqe, &ts);
            }
            if (r == -ETIME || r == -EINTR)
                break;
            if (r < 0)
                return r;
            batch = io_uring_cq_ready(&p->ring);
            continue;
        }
        r = io_uring_peek_cqe(&p->ring, &cqe);
        if (r == -EAGAIN)
            break;
        if (r < 0)
            return r;
        batch--;
        struct fq_aio *a = io_uring_cqe_get_data(cqe);
        a->res = cqe->res;
        io_uring_cqe_seen(&p->ring, cqe);
        /* a poll's result is its revents (or -errno), a cancel's 0 or
         * -ENOENT / -EALREADY: both are passed on as they are */
        if (!a->is_poll && !a->is_cancel) {
            if (a->res == -EINTR || a->res == -EAGAIN)
                a->res = fq_aio_exec(a->op, a->fd, a->off, a->len, a->iov, a->iovcnt);
            finish_short(a);
        }
        e->inflight--;
        n++;
        a->done(a);
        /* hand new work to the kernel at once: the device stays busy
         * while the rest of the completions are processed */
        if (p->overflow || p->queued)
            uring_kick(e);
    }
    if (p->efd >= 0) {
        uint64_t v;
        if (read(p->efd, &v, sizeof(v)) < 0) {
            /* EAGAIN: nothing signalled */
        }
    }
    return n;
}

static int uring_fd(struct fq_engine *e)
{
    return ((struct uring_priv *)e->priv)->efd;
}

const struct fq_engine_ops fq_engine_uring_ops = {
    .name = "io_uring",
    .init = uring_init,
    .fini = uring_fini,
    .submit = uring_submit,
    .kick = uring_kick,
    .wait = uring_wait,
    .fd = uring_fd,
    .cancel_poll = true,
};
#else
static int uring_init(struct fq_engine *e, char *err)
{
    fq_seterr(err, "built without io_uring");
    return -ENOSYS;
}
const struct fq_engine_ops fq_engine_uring_ops = { .name = "io_uring", .init = uring_init };
#endif
