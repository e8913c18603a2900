/* aio.h: the asynchronous operations a device hands to its context, and
 * the deferred calls ("bottom halves") it may queue on the context's loop.
 * This is what protocol drivers (the file device) and any code that must
 * complete later use; the engines behind it are core-private.
 *
 * An operation is submitted with fq_ctx_submit; its `done` runs later from
 * the context loop (fq_ctx_run), on the context's thread, never inside the
 * submitting call.
 * SPDX-License-Identifier: MIT
 */
#ifndef FQ_AIO_H
#define FQ_AIO_H

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

/* A file descriptor registered with the context (fq_ctx_fd_register). */
struct fq_fdreg {
    int fd;
    int eslot;                /* the engine's fixed-file slot, or -1 */
    bool inline_io;           /* operations run inline (memory-backed file) */
};

struct fq_aio {
    enum fq_op op;
    int fd;
    const struct fq_fdreg *reg; /* fd's registration, or NULL */
    uint64_t off;
    uint64_t len;             /* discard / write-zeroes length */
    const struct iovec *iov;
    int iovcnt;
    int64_t res;              /* filled by the engine: bytes or -errno */
    bool is_poll;             /* instead of `op`: wait until `fd` is ready for
                                 poll_events (0 = POLLIN); res = revents */
    unsigned poll_events;
    bool is_cancel;           /* instead of `op`: cancel the poll `target`
                                 (engines with cancel_poll only) */
    struct fq_aio *target;
    void (*done)(struct fq_aio *aio);
    struct fq_aio *next;      /* engine-internal queue link */
};

/* Hand an operation to the context's engine. */
void fq_ctx_submit(struct fq_ctx *ctx, struct fq_aio *aio);
/* Register a file descriptor that operations will name (fq_aio.reg): the
 * engine may prepare for it (io_uring: a fixed file), and with the default
 * engine operations on a memory-backed file (tmpfs, ramfs), which an
 * engine would only hand to a kernel worker, run inline on the loop's
 * thread instead (completing from the loop all the same; the engine note
 * says so). Returns NULL when nothing is gained or without memory: plain
 * descriptors work as before. */
struct fq_fdreg *fq_ctx_fd_register(struct fq_ctx *ctx, int fd);
void fq_ctx_fd_unregister(struct fq_ctx *ctx, struct fq_fdreg *reg);
/* Push queued submissions unless the loop is running (it will). */
void fq_ctx_kick(struct fq_ctx *ctx);

/* A deferred call run from the context loop ("bottom half"). */
struct fq_bh {
    void (*fn)(void *opaque);
    void *opaque;
    struct fq_bh *next;
};

/* Queue a bottom half; it runs from the loop, after the current callback. */
void fq_ctx_defer(struct fq_ctx *ctx, struct fq_bh *bh, void (*fn)(void *), void *opaque);

/* Perform one operation synchronously (the sync and thread engines, and
 * blocking paths of devices). Returns bytes or -errno; reads and writes
 * loop over short transfers (a read at EOF stops short). */
int64_t fq_aio_exec(enum fq_op op, int fd, uint64_t off, uint64_t len,
                    const struct iovec *iov, int iovcnt);
/* Block until fd is ready for `events` (0 = POLLIN) (the is_poll
 * operation); returns revents or -errno. */
int64_t fq_aio_poll_exec(int fd, unsigned events);

#endif
