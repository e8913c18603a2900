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

struct fq_ctx {
    struct fq_engine eng;
    struct fq_offload *offload; /* CPU worker pool (offload.c), created on first use */
    struct fq_ctx_fini *finis;
    struct fq_bh *bh_head, **bh_tail;
    struct fq_aio *ready, **ready_tail; /* operations run inline, their
                                 completions not yet delivered */
    bool auto_paths;          /* the default engine: paths chosen per file */
    bool noted_inline;        /* the engine note tells of inline files */
    unsigned user_inflight;   /* public requests not yet completed */
    uint64_t user_completed;  /* public callbacks run, ever */
    int running;              /* inside fq_ctx_run */
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
