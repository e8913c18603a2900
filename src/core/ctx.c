/* ctx.c: the context: one I/O engine plus a queue of deferred calls, and
 * the loop (fq_ctx_run) that delivers completions. Single-threaded.
 * SPDX-License-Identifier: MIT
 */
#include <stdio.h>
#include <string.h>

#include "config.h"
#include "core/ctx.h"
#include "util.h"

int fq_engine_parse(const char *name, enum fq_engine_kind *out)
{
    if (!strcmp(name, "io_uring") || !strcmp(name, "native"))
        *out = FQ_ENGINE_IO_URING;
    else if (!strcmp(name, "threads"))
        *out = FQ_ENGINE_THREADS;
    else if (!strcmp(name, "sync"))
        *out = FQ_ENGINE_SYNC;
    else if (!strcmp(name, "default"))
        *out = FQ_ENGINE_DEFAULT;
    else
        return -EINVAL;
    return 0;
}

int fq_ctx_new(enum fq_engine_kind kind, struct fq_ctx **out, char *err)
{
    struct fq_ctx *ctx = calloc(1, sizeof(*ctx));
    int r = -EINVAL;

    if (!ctx)
        return -ENOMEM;
    ctx->bh_tail = &ctx->bh_head;
    switch (kind) {
    case FQ_ENGINE_DEFAULT:
    case FQ_ENGINE_IO_URING:
        ctx->eng.ops = &fq_engine_uring_ops;
        r = ctx->eng.ops->init(&ctx->eng, err);
        if (r == 0 || kind == FQ_ENGINE_IO_URING)
            break;
        snprintf(ctx->engine_note, sizeof(ctx->engine_note),
                 "io_uring unavailable (%s), using threads", strerror(-r));
        /* fall through */
    case FQ_ENGINE_THREADS:
        ctx->eng.ops = &fq_engine_threads_ops;
        r = ctx->eng.ops->init(&ctx->eng, err);
        break;
    case FQ_ENGINE_SYNC:
        ctx->eng.ops = &fq_engine_sync_ops;
        r = ctx->eng.ops->init(&ctx->eng, err);
        break;
    }
    if (r < 0) {
        free(ctx);
        return r;
    }
    *out = ctx;
    return 0;
}

void fq_ctx_free(struct fq_ctx *ctx)
{
    if (!ctx)
        return;
    while (ctx->eng.inflight > 0 || ctx->bh_head)
        if (fq_ctx_run(ctx, 0, -1) < 0)
            break;
    while (ctx->finis) {
        struct fq_ctx_fini *f = ctx->finis;
        ctx->finis = f->next;
        f->fn(f->opaque);
    }
    ctx->eng.ops->fini(&ctx->eng);
    free(ctx);
}

const char *fq_ctx_engine_name(const struct fq_ctx *ctx)
{
    return ctx->eng.ops->name;
}

const char *fq_ctx_engine_note(const struct fq_ctx *ctx)
{
    return ctx->engine_note;
}

int fq_ctx_fd(struct fq_ctx *ctx)
{
    return ctx->eng.ops->fd(&ctx->eng);
}

unsigned fq_ctx_inflight(const struct fq_ctx *ctx)
{
    return ctx->user_inflight;
}

void fq_ctx_at_free(struct fq_ctx *ctx, struct fq_ctx_fini *f, void (*fn)(void *), void *opaque)
{
    f->fn = fn;
    f->opaque = opaque;
    f->next = ctx->finis;
    ctx->finis = f;
}

void fq_ctx_defer(struct fq_ctx *ctx, struct fq_bh *bh, void (*fn)(void *), void *opaque)
{
    bh->fn = fn;
    bh->opaque = opaque;
    bh->next = NULL;
    *ctx->bh_tail = bh;
    ctx->bh_tail = &bh->next;
}

void fq_ctx_submit(struct fq_ctx *ctx, struct fq_aio *aio)
{
    ctx->eng.inflight++;
    ctx->eng.ops->submit(&ctx->eng, aio);
}

void fq_ctx_kick(struct fq_ctx *ctx)
{
    if (!ctx->running)
        ctx->eng.ops->kick(&ctx->eng);
}

/* Run every queued bottom half, including ones queued while running. */
static void run_bhs(struct fq_ctx *ctx)
{
    while (ctx->bh_head) {
        struct fq_bh *bh = ctx->bh_head;
        ctx->bh_head = bh->next;
        if (!ctx->bh_head)
            ctx->bh_tail = &ctx->bh_head;
        bh->fn(bh->opaque);
    }
}

int fq_ctx_run(struct fq_ctx *ctx, unsigned min_complete, int timeout_ms)
{
    uint64_t start = ctx->user_completed;
    uint64_t deadline = timeout_ms > 0 ? fq_now_ns() + (uint64_t)timeout_ms * 1000000ull : 0;
    int r = 0;

    if (ctx->running)
        return -EDEADLK;
    ctx->running = 1;
    for (;;) {
        run_bhs(ctx);
        if (ctx->user_completed - start >= min_complete && min_complete > 0)
            break;
        if (ctx->eng.inflight == 0) {
            if (ctx->bh_head)
                continue;
            break;
        }
        int t = timeout_ms;
        if (timeout_ms > 0) {
            uint64_t now = fq_now_ns();
            if (now >= deadline)
                t = 0;
            else
                t = (int)((deadline - now) / 1000000ull) + 1;
        }
        r = ctx->eng.ops->wait(&ctx->eng, t);
        if (r < 0)
            break;
        run_bhs(ctx);
        if (min_complete == 0 || (r == 0 && t >= 0 && timeout_ms >= 0 &&
                                  (timeout_ms == 0 || fq_now_ns() >= deadline)))
            break;
    }
    ctx->eng.ops->kick(&ctx->eng);
    ctx->running = 0;
    if (r < 0)
        return r;
    return (int)(ctx->user_completed - start);
}
