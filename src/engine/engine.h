/* engine.h: the I/O engines (io_uring, threads, sync) behind one table of
 * function pointers, and the context that drives them.
 *
 * An engine executes fq_aio operations on file descriptors. Completions are
 * delivered by engine->ops->wait(), always on the context's thread, by
 * calling aio->done(). Nothing here calls a completion from inside submit.
 * SPDX-License-Identifier: MIT
 */
#ifndef FQ_ENGINE_H
#define FQ_ENGINE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "fastqcow.h"

enum fq_op {
    FQ_OP_READ,
    FQ_OP_WRITE,
    FQ_OP_FLUSH,
    FQ_OP_DISCARD,
    FQ_OP_WRITE_ZEROES,
};

struct fq_aio {
    enum fq_op op;
    int fd;
    uint64_t off;
    uint64_t len;             /* discard / write-zeroes length */
    const struct iovec *iov;
    int iovcnt;
    int64_t res;              /* filled by the engine: bytes or -errno */
    bool is_poll;             /* instead of `op`: wait until `fd` is readable */
    void (*done)(struct fq_aio *aio);
    struct fq_aio *next;      /* engine-internal queue link */
};

struct fq_engine;
struct fq_engine_ops {
    const char *name;
    int (*init)(struct fq_engine *e, char *err);
    void (*fini)(struct fq_engine *e);
    /* Queue an operation. Never fails: errors come back as completions. */
    void (*submit)(struct fq_engine *e, struct fq_aio *aio);
    /* Push queued submissions to the kernel / workers without waiting. */
    void (*kick)(struct fq_engine *e);
    /* Kick, then reap completions, waiting up to timeout_ms (-1 forever)
     * when none are ready. Calls aio->done for each. Returns the number
     * reaped or negative errno. */
    int (*wait)(struct fq_engine *e, int timeout_ms);
    /* Readable when completions are ready, or -1. */
    int (*fd)(struct fq_engine *e);
};

struct fq_engine {
    const struct fq_engine_ops *ops;
    unsigned inflight;        /* submitted, not yet completed */
    void *priv;
};

extern const struct fq_engine_ops fq_engine_uring_ops;
extern const struct fq_engine_ops fq_engine_threads_ops;
extern const struct fq_engine_ops fq_engine_sync_ops;

/* Call the completion of every aio on a list of finished ones (linked by
 * `next`), counting them out of the engine. Returns how many. */
int fq_engine_complete_list(struct fq_engine *e, struct fq_aio *list);

/* Block until aio->fd is readable (the is_poll operation); 0 or -errno. */
int64_t fq_aio_poll_exec(int fd);

/* Perform one operation synchronously (shared by the sync and thread
 * engines, and by the file device's blocking path). Returns bytes or -errno;
 * reads and writes loop over short transfers (a read at EOF stops short). */
int64_t fq_aio_exec(enum fq_op op, int fd, uint64_t off, uint64_t len,
                    const struct iovec *iov, int iovcnt);

/* ---- context ---- */

/* A deferred call run from the context loop ("bottom half"). */
struct fq_bh {
    void (*fn)(void *opaque);
    void *opaque;
    struct fq_bh *next;
};

struct fq_offload;

struct fq_ctx {
    struct fq_engine eng;
    struct fq_offload *offload; /* CPU worker pool, created on first use */
    struct fq_bh *bh_head, **bh_tail;
    unsigned user_inflight;   /* public requests not yet completed */
    uint64_t user_completed;  /* public callbacks run, ever */
    int running;              /* inside fq_ctx_run */
    char engine_note[FQ_ERR_MAX];
};

/* Queue a bottom half; it runs from the loop, after the current callback. */
void fq_ctx_defer(struct fq_ctx *ctx, struct fq_bh *bh, void (*fn)(void *), void *opaque);
/* Push queued submissions unless the loop is running (it will). */
void fq_ctx_kick(struct fq_ctx *ctx);
/* Hand an aio to the context's engine. */
void fq_ctx_submit(struct fq_ctx *ctx, struct fq_aio *aio);

#endif
