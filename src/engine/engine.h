/* engine.h: the I/O engines (io_uring, threads, sync) behind one table of
 * function pointers. Core-private: the context (src/core) drives an
 * engine; devices only see fq_ctx_submit (aio.h).
 *
 * An engine executes fq_aio operations on file descriptors. Completions are
 * delivered by engine->ops->wait(), always on the context's thread, by
 * calling aio->done(). Nothing here calls a completion from inside submit.
 * SPDX-License-Identifier: MIT
 */
#ifndef FQ_ENGINE_H
#define FQ_ENGINE_H

#include "aio.h"

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
    /* Polls are cheap kernel operations that an is_cancel operation
     * cancels (io_uring): watches are polls in the engine. Otherwise the
     * context poll()s watched descriptors itself beside the engine's fd. */
    bool cancel_poll;
    /* Optional: prepare for operations on `fd` (io_uring: a fixed-file
     * slot, returned; -1: none); undo it. */
    int (*fd_register)(struct fq_engine *e, int fd);
    void (*fd_unregister)(struct fq_engine *e, int slot);
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

#endif
