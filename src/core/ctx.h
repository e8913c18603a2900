/* ctx.h: the context's state (core-private): one engine, the queue of
 * deferred calls, the counters of public requests, and what is torn down
 * with it. The public calls on it are in fastqcow.h, the device-facing
 * ones in aio.h.
 * SPDX-License-Identifier: MIT
 */
#ifndef FQ_CORE_CTX_H
#define FQ_CORE_CTX_H

#include "engine/engine.h"

/* Something freed with the context, after its last operation completed
 * (the offload pool registers itself so). */
struct fq_ctx_fini {
    void (*fn)(void *opaque);
    void *opaque;
    struct fq_ctx_fini *next;
};

struct fq_offload;
struct pollfd;

/* A watched descriptor (fq_watch_start). With a cancel_poll engine it is a
 * poll operation re-armed after each wake-up (level-triggered); otherwise
 * the context's loop poll()s it. A watch stopped while its poll (or the
 * cancel of it) is in the engine, or while the loop dispatches, is freed
 * once that is over. */
struct fq_watch {
    struct fq_ctx *ctx;
    int fd;
    unsigned events;          /* wanted; 0 = paused */
    fq_watch_cb *cb;
    void *opaque;
    bool stopped;
    bool polling;             /* `poll` is in the engine */
    bool cancelling;          /* `cancel` is in the engine */
    struct fq_aio poll, cancel;
    struct fq_watch *prev, *next; /* ctx->watches, or ctx->zombies once stopped */
};

struct fq_ctx {
    struct fq_engine eng;
    struct fq_offload *offload; /* CPU worker pool (offload.c), created on first use */
    struct fq_ctx_fini *finis;
    struct fq_bh *bh_head, **bh_tail;
    struct fq_aio *ready, **ready_tail; /* operations run inline, their
                                 completions not yet delivered */
    struct fq_aio *held;      /* a larger inline-path operation that may be
                                 its request's only one (ctx.c) */
    uint64_t ran_inline;      /* operations the loop's thread ran, ever */
    bool auto_paths;          /* the default engine: paths chosen per file */
    bool noted_inline;        /* the engine note tells of inline files */
    unsigned user_inflight;   /* public requests not yet completed */
    uint64_t user_completed;  /* public callbacks run, ever */
    int running;              /* inside fq_ctx_run */
    struct fq_watch *watches; /* started, not stopped */
    struct fq_watch *zombies; /* stopped, waiting for the engine or the dispatch */
    unsigned watch_armed;     /* watches with events (poll()ed by the loop) */
    int dispatching;          /* the loop is calling watch callbacks */
    struct pollfd *pfd;       /* poll() set of the fallback loop */
    struct fq_watch **pfd_watch;
    size_t pfd_cap;
    char engine_note[FQ_ERR_MAX];
};

/* Run `f->fn(f->opaque)` when the context is freed (last registered runs
 * first). */
void fq_ctx_at_free(struct fq_ctx *ctx, struct fq_ctx_fini *f, void (*fn)(void *), void *opaque);

/* A public request was queued / its callback is about to run. */
static inline void fq_ctx_user_start(struct fq_ctx *ctx) { ctx->user_inflight++; }
static inline void fq_ctx_user_done(struct fq_ctx *ctx)
{
    ctx->user_inflight--;
    ctx->user_completed++;
}

#endif
