/* ctx.c: the context: one I/O engine plus a queue of deferred calls, and
 * the loop (fq_ctx_run) that delivers completions. Single-threaded.
 *
 * Paths per file: with the default engine, a registered file whose
 * operations the kernel completes in memory anyway (tmpfs, ramfs) has its
 * small ones (up to 32 KiB) run inline by fq_ctx_submit while at most one
 * public request is in flight, their completions queued and delivered from
 * the loop like the engine's (never inside submit): io_uring cannot start
 * such operations without blocking and hands each one to a kernel worker
 * thread, which costs a small copy's latency several times over; larger
 * ones, and all of them while requests queue up, still go to the engine,
 * whose workers copy them on other cores in parallel.
 * SPDX-License-Identifier: MIT
 */
#include <linux/magic.h>
#include <stdio.h>
#include <string.h>
#include <sys/vfs.h>

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
    ctx->ready_tail = &ctx->ready;
    ctx->auto_paths = kind == FQ_ENGINE_DEFAULT;
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
    while (ctx->eng.inflight > 0 || ctx->bh_head || ctx->ready)
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

/* Inline operations are the small ones of a client that waits for each
 * request (at most one public request in flight): a kernel worker's
 * hand-off costs more than their copy, and the loop's thread does them at
 * once. Larger ones, and everything while requests queue up, go to the
 * engine, whose workers copy them on other cores in parallel (measured:
 * 4 KiB reads at depth 1 twice as fast inline, at depth 32 three times as
 * fast through the workers). */
#define INLINE_MAX (32u << 10)

static bool run_inline(const struct fq_ctx *ctx, const struct fq_aio *aio)
{
    if (!aio->reg || !aio->reg->inline_io || aio->is_poll || ctx->user_inflight > 1)
        return false;
    if (aio->op != FQ_OP_READ && aio->op != FQ_OP_WRITE)
        return true;
    size_t n = 0;
    for (int i = 0; i < aio->iovcnt && n <= INLINE_MAX; i++)
        n += aio->iov[i].iov_len;
    return n <= INLINE_MAX;
}

void fq_ctx_submit(struct fq_ctx *ctx, struct fq_aio *aio)
{
    if (run_inline(ctx, aio)) {
        aio->res = fq_aio_exec(aio->op, aio->fd, aio->off, aio->len, aio->iov, aio->iovcnt);
        aio->next = NULL;
        *ctx->ready_tail = aio;
        ctx->ready_tail = &aio->next;
        return;
    }
    ctx->eng.inflight++;
    ctx->eng.ops->submit(&ctx->eng, aio);
}

/* Is the file memory-backed: its operations complete without waiting? */
static bool memory_backed(int fd)
{
    struct statfs sf;

    if (fstatfs(fd, &sf) < 0)
        return false;
    return sf.f_type == TMPFS_MAGIC || sf.f_type == RAMFS_MAGIC;
}

struct fq_fdreg *fq_ctx_fd_register(struct fq_ctx *ctx, int fd)
{
    struct fq_fdreg *r = ctx ? calloc(1, sizeof(*r)) : NULL;

    if (!r)
        return NULL;
    r->fd = fd;
    r->eslot = -1;
    if (ctx->auto_paths && ctx->eng.ops != &fq_engine_sync_ops && memory_backed(fd)) {
        r->inline_io = true;
        if (!ctx->noted_inline && !ctx->engine_note[0])
            snprintf(ctx->engine_note, sizeof(ctx->engine_note),
                     "small operations on memory-backed files (tmpfs) run inline when one "
                     "request is in flight: %s would hand each one to a kernel worker", ctx->eng.ops->name);
        ctx->noted_inline = true;
    } else if (ctx->eng.ops->fd_register) {
        r->eslot = ctx->eng.ops->fd_register(&ctx->eng, fd);
    }
    if (!r->inline_io && r->eslot < 0) {
        free(r);
        return NULL;
    }
    return r;
}

void fq_ctx_fd_unregister(struct fq_ctx *ctx, struct fq_fdreg *reg)
{
    if (!reg)
        return;
    if (reg->eslot >= 0 && ctx->eng.ops->fd_unregister)
        ctx->eng.ops->fd_unregister(&ctx->eng, reg->eslot);
    free(reg);
}

void fq_ctx_kick(struct fq_ctx *ctx)
{
    if (!ctx->running)
        ctx->eng.ops->kick(&ctx->eng);
}

/* Deliver the completions of inline operations and run every queued
 * bottom half, including ones queued while running. */
static void run_bhs(struct fq_ctx *ctx)
{
    while (ctx->bh_head || ctx->ready) {
        if (ctx->ready) {
            struct fq_aio *a = ctx->ready;
            ctx->ready = a->next;
            if (!ctx->ready)
                ctx->ready_tail = &ctx->ready;
            a->done(a);
            continue;
        }
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
            if (ctx->bh_head || ctx->ready)
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
