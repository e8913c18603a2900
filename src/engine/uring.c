/* uring.c: the io_uring engine.
 *
 * Submissions are batched: submit() only fills SQEs; kick() and wait()
 * hand them to the kernel in one call, so the extents of a fragmented
 * request, and everything the completions of one batch start, enter the
 * kernel together. wait() reaps every completion ready in one pass and
 * submits what their callbacks queued once, at the end; when it must
 * sleep it submits and waits in the same system call. Operations that do
 * not fit the ring wait in an overflow list.
 *
 * The ring is set up with the flags the kernel has (tried in order, the
 * first accepted wins): cooperative task running (completions are posted
 * when the loop next enters the kernel instead of interrupting it; the
 * TASKRUN flag tells when that is owed) and submit-all. Deferred task
 * running (with its single issuer) is not used: measured, it cost more
 * CPU per request here, and it would tie a context to the thread that
 * first used it. Files the context
 * registers (fq_ctx_fd_register) get a slot in a sparse fixed-file table,
 * which spares the kernel a file lookup and reference per operation.
 * Registered buffers are not used: the buffers are the callers', any of
 * them, and the cache's tables are read rarely.
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
#define FIXED_FILES 64

struct uring_priv {
    struct io_uring ring;
    struct fq_aio *overflow, **overflow_tail;
    unsigned queued;          /* SQEs filled, not yet submitted */
    int efd;
    bool fixed;               /* a sparse fixed-file table is registered */
    bool slot_used[FIXED_FILES];
};

/* Set up the ring with the best flags this kernel takes. */
static int ring_setup(struct uring_priv *p)
{
    static const unsigned tries[] = {
        IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG | IORING_SETUP_SUBMIT_ALL,
        IORING_SETUP_SUBMIT_ALL,
        0,
    };
    int r = -EINVAL;

    for (size_t i = 0; i < FQ_ARRAY_SIZE(tries); i++) {
        struct io_uring_params prm;
        memset(&prm, 0, sizeof(prm));
        prm.flags = tries[i];
        r = io_uring_queue_init_params(RING_DEPTH, &p->ring, &prm);
        if (r != -EINVAL)
            break;
    }
    return r;
}

static int uring_init(struct fq_engine *e, char *err)
{
    struct uring_priv *p = calloc(1, sizeof(*p));
    int r;

    if (!p)
        return -ENOMEM;
    r = ring_setup(p);
    if (r < 0) {
        fq_seterr(err, "io_uring_queue_init: %s", strerror(-r));
        free(p);
        return r;
    }
    p->efd = -1;              /* made when someone asks for it (uring_fd) */
    p->fixed = io_uring_register_files_sparse(&p->ring, FIXED_FILES) == 0;
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

static int uring_fd_register(struct fq_engine *e, int fd)
{
    struct uring_priv *p = e->priv;

    if (!p->fixed)
        return -1;
    for (int i = 0; i < FIXED_FILES; i++) {
        if (p->slot_used[i])
            continue;
        if (io_uring_register_files_update(&p->ring, (unsigned)i, &fd, 1) != 1)
            return -1;
        p->slot_used[i] = true;
        return i;
    }
    return -1;
}

static void uring_fd_unregister(struct fq_engine *e, int slot)
{
    struct uring_priv *p = e->priv;
    int none = -1;

    if (slot < 0 || slot >= FIXED_FILES || !p->slot_used[slot])
        return;
    io_uring_register_files_update(&p->ring, (unsigned)slot, &none, 1);
    p->slot_used[slot] = false;
}

static bool fill_sqe(struct uring_priv *p, struct fq_aio *a)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&p->ring);
    int fd = a->fd;

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
    if (a->reg && a->reg->eslot >= 0)
        fd = a->reg->eslot;
    switch (a->op) {
    case FQ_OP_READ:
        if (a->iovcnt == 1)
            io_uring_prep_read(sqe, fd, a->iov[0].iov_base, (unsigned)a->iov[0].iov_len, a->off);
        else
            io_uring_prep_readv(sqe, fd, a->iov, (unsigned)a->iovcnt, a->off);
        break;
    case FQ_OP_WRITE:
        if (a->iovcnt == 1)
            io_uring_prep_write(sqe, fd, a->iov[0].iov_base, (unsigned)a->iov[0].iov_len, a->off);
        else
            io_uring_prep_writev(sqe, fd, a->iov, (unsigned)a->iovcnt, a->off);
        break;
    case FQ_OP_FLUSH:
        io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC);
        break;
    case FQ_OP_DISCARD:
        io_uring_prep_fallocate(sqe, fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                                a->off, a->len);
        break;
    case FQ_OP_WRITE_ZEROES:
        io_uring_prep_fallocate(sqe, fd, FALLOC_FL_ZERO_RANGE, a->off, a->len);
        break;
    }
    if (fd != a->fd)
        sqe->flags |= IOSQE_FIXED_FILE;
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

/* Move what waits in the overflow list into the ring, submitting full
 * rings on the way; leaves the rest queued (not submitted). */
static void drain_overflow(struct uring_priv *p)
{
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
}

static void uring_kick(struct fq_engine *e)
{
    struct uring_priv *p = e->priv;

    drain_overflow(p);
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

/* Completions the kernel owes but has not posted yet (cooperative task
 * running, or an overflowed completion ring): entering it posts them. */
static bool events_owed(const struct io_uring *ring)
{
    return IO_URING_READ_ONCE(*ring->sq.kflags) & (IORING_SQ_TASKRUN | IORING_SQ_CQ_OVERFLOW);
}

/* Call the completions ready now (one pass over the completion ring);
 * returns how many. */
static int reap(struct fq_engine *e)
{
    struct uring_priv *p = e->priv;
    unsigned ready = io_uring_cq_ready(&p->ring);
    int n = 0;

    while (ready--) {
        struct io_uring_cqe *cqe;
        if (io_uring_peek_cqe(&p->ring, &cqe) < 0)
            break;
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
    }
    return n;
}

static int uring_wait(struct fq_engine *e, int timeout_ms)
{
    struct uring_priv *p = e->priv;
    int n, r;

    drain_overflow(p);
    if (!io_uring_cq_ready(&p->ring) && events_owed(&p->ring)) {
        io_uring_submit_and_get_events(&p->ring);
        p->queued = 0;
    }
    n = reap(e);
    while (n == 0 && timeout_ms != 0) {
        /* nothing ready: submit what is queued and sleep in one call */
        struct io_uring_cqe *cqe;
        if (timeout_ms < 0) {
            r = io_uring_submit_and_wait(&p->ring, 1);
        } else {
            struct __kernel_timespec ts = {
                .tv_sec = timeout_ms / 1000,
                .tv_nsec = (long long)(timeout_ms % 1000) * 1000000,
            };
            r = io_uring_submit_and_wait_timeout(&p->ring, &cqe, 1, &ts, NULL);
        }
        p->queued = 0;
        if (r == -ETIME || r == -EINTR)
            break;
        if (r < 0 && r != -EBUSY && r != -EAGAIN)
            return r;
        n = reap(e);
        if (timeout_ms > 0)
            break;
    }
    /* one submission for everything the callbacks started */
    uring_kick(e);
    if (p->efd >= 0) {
        uint64_t v;
        if (read(p->efd, &v, sizeof(v)) < 0) {
            /* EAGAIN: nothing signalled */
        }
    }
    return n;
}

/* The eventfd the kernel signals on completions: registered only once a
 * caller wants to poll the context, since draining it costs a system call
 * per wait. */
static int uring_fd(struct fq_engine *e)
{
    struct uring_priv *p = e->priv;

    if (p->efd < 0) {
        p->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (p->efd >= 0 && io_uring_register_eventfd(&p->ring, p->efd) < 0) {
            close(p->efd);
            p->efd = -1;
        }
        /* completions posted before it existed signalled nothing */
        uint64_t one = 1;
        if (p->efd >= 0 && (io_uring_cq_ready(&p->ring) || events_owed(&p->ring) || e->inflight) &&
            write(p->efd, &one, sizeof(one)) < 0) {
            /* cannot fail short of a counter overflow */
        }
    }
    return p->efd;
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
    .fd_register = uring_fd_register,
    .fd_unregister = uring_fd_unregister,
};
#else
static int uring_init(struct fq_engine *e, char *err)
{
    fq_seterr(err, "built without io_uring");
    return -ENOSYS;
}
const struct fq_engine_ops fq_engine_uring_ops = { .name = "io_uring", .init = uring_init };
#endif
