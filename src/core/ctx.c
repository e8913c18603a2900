/* ctx.c: the context: one I/O engine plus a queue of deferred calls, and
 * the loop (fq_ctx_run) that delivers completions. Single-threaded.
 *
 * Watched descriptors (fq_watch_*): with an engine that polls natively
 * (io_uring) a watch is a poll operation in the engine, re-armed after each
 * wake-up, so it is level-triggered and rides the same submissions as the
 * disk I/O; a change of events or a stop cancels it in the engine. With the
 * other engines the loop poll()s the watched descriptors beside the
 * engine's eventfd. A watch stopped while the engine still holds its poll,
 * or while a watch callback runs, is kept on the zombie list and freed when
 * both are over, so a callback may stop any watch, its own included.
 *
 * Paths per file: with the default engine, a registered file whose
 * operations the kernel completes in memory anyway (tmpfs, ramfs) has its
 * small ones (up to 32 KiB) run inline by fq_ctx_submit while at most one
 * public request is in flight, their completions queued and delivered from
 * the loop like the engine's (never inside submit): io_uring cannot start
 * such operations without blocking and hands each one to a kernel worker
 * thread, which costs a small copy's latency several times over; larger
 * ones, and all of them while requests queue up, still go to the engine,
 * whose workers copy them on other cores in parallel. A larger one (up to
 * 2 MiB) is held back instead: if nothing follows it before the loop
 * waits, it was a lone piece of a lone request, and the loop runs it
 * inline too (no worker could overlap it with anything); if another
 * operation comes first, both go to the engine.
 * SPDX-License-Identifier: MIT
 */
#include <poll.h>
#include <linux/magic.h>
#include <stdio.h>
#include <string.h>
#include <sys/vfs.h>

#include "config.h"
#include "core/ctx.h"
#include "util.h"

int fq_engine_parse(const char *name, enum fq_engine_kind *out)
{
    /* "native" is qemu's native AIO: the fastest kernel path, which here
     * is the default (io_uring, small operations on memory-backed files
     * inline, as native AIO completes them in the submitting call);
     * "io_uring" is io_uring for every operation */
    if (!strcmp(name, "io_uring"))
        *out = FQ_ENGINE_IO_URING;
    else if (!strcmp(name, "native"))
        *out = FQ_ENGINE_DEFAULT;
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
    while (ctx->watches)
        fq_watch_stop(ctx->watches);
    while (ctx->eng.inflight > 0 || ctx->bh_head || ctx->ready || ctx->held)
        if (fq_ctx_run(ctx, 0, -1) < 0)
            break;
    while (ctx->finis) {
        struct fq_ctx_fini *f = ctx->finis;
        ctx->finis = f->next;
        f->fn(f->opaque);
    }
    ctx->eng.ops->fini(&ctx->eng);
    free(ctx->pfd);
    free(ctx->pfd_watch);
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
/* A lone operation runs inline up to this size (a longer copy would hold
 * the loop from new requests for too long). */
#define LONE_MAX (2u << 20)

enum path { PATH_ENGINE, PATH_INLINE, PATH_LONE };

static enum path choose_path(const struct fq_ctx *ctx, const struct fq_aio *aio)
{
    if (!aio->reg || !aio->reg->inline_io || aio->is_poll || aio->is_cancel || ctx->user_inflight > 1)
        return PATH_ENGINE;
    if (aio->op != FQ_OP_READ && aio->op != FQ_OP_WRITE)
        return PATH_INLINE;
    size_t n = 0;
    for (int i = 0; i < aio->iovcnt && n <= LONE_MAX; i++)
        n += aio->iov[i].iov_len;
    return n <= INLINE_MAX ? PATH_INLINE : n <= LONE_MAX ? PATH_LONE : PATH_ENGINE;
}

static void engine_submit(struct fq_ctx *ctx, struct fq_aio *aio)
{
    ctx->eng.inflight++;
    ctx->eng.ops->submit(&ctx->eng, aio);
}

static void exec_inline(struct fq_ctx *ctx, struct fq_aio *aio)
{
    aio->res = fq_aio_exec(aio->op, aio->fd, aio->off, aio->len, aio->iov, aio->iovcnt);
    ctx->ran_inline++;
    aio->next = NULL;
    *ctx->ready_tail = aio;
    ctx->ready_tail = &aio->next;
}

/* The loop is about to wait (or deliver): a held operation that is still
 * alone runs inline now, unless requests have queued up meanwhile. */
static void release_held(struct fq_ctx *ctx)
{
    struct fq_aio *aio = ctx->held;

    if (!aio)
        return;
    ctx->held = NULL;
    if (ctx->user_inflight > 1)
        engine_submit(ctx, aio);
    else
        exec_inline(ctx, aio);
}

void fq_ctx_submit(struct fq_ctx *ctx, struct fq_aio *aio)
{
    enum path p = choose_path(ctx, aio);

    if (ctx->held) {
        /* a second operation: the held one was not alone */
        engine_submit(ctx, ctx->held);
        ctx->held = NULL;
        if (p == PATH_LONE)
            p = PATH_ENGINE;
    }
    switch (p) {
    case PATH_INLINE:
        exec_inline(ctx, aio);
        break;
    case PATH_LONE:
        ctx->held = aio;
        break;
    case PATH_ENGINE:
        engine_submit(ctx, aio);
        break;
    }
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
                     "small operations on memory-backed files (tmpfs), and lone ones up to "
                     "2 MiB, run inline when one request is in flight: %s would hand each one "
                     "to a kernel worker", ctx->eng.ops->name);
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
 * bottom half, including ones queued while running; then a held
 * operation is let go (nothing followed it: it runs inline). */
static void run_bhs(struct fq_ctx *ctx)
{
    while (ctx->bh_head || ctx->ready || ctx->held) {
        if (!ctx->bh_head && !ctx->ready) {
            release_held(ctx);
            continue;
        }
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

/* ---- watches ---- */

#define WATCH_EVENTS (POLLIN | POLLOUT | POLLPRI | POLLRDHUP)

static void watch_link(struct fq_watch **head, struct fq_watch *w)
{
    w->prev = NULL;
    w->next = *head;
    if (*head)
        (*head)->prev = w;
    *head = w;
}

static void watch_unlink(struct fq_watch **head, struct fq_watch *w)
{
    if (w->prev)
        w->prev->next = w->next;
    else
        *head = w->next;
    if (w->next)
        w->next->prev = w->prev;
    w->prev = w->next = NULL;
}

/* Free a stopped watch once the engine holds nothing of it and no watch
 * callback is running. */
static void watch_reap(struct fq_watch *w)
{
    if (w->stopped && !w->polling && !w->cancelling && !w->ctx->dispatching) {
        watch_unlink(&w->ctx->zombies, w);
        free(w);
    }
}

/* Free every zombie that can go (after the last callback returned). */
static void watch_reap_all(struct fq_ctx *ctx)
{
    struct fq_watch *w = ctx->zombies, *next;

    for (; w; w = next) {
        next = w->next;
        watch_reap(w);
    }
}

/* Report `rev` (revents filtered to what is watched, or -errno) to the
 * owner of a live watch. An error pauses the watch. Returns 1 if the
 * callback ran. */
static int watch_dispatch(struct fq_watch *w, int rev)
{
    struct fq_ctx *ctx = w->ctx;

    if (w->stopped || !w->events || rev == 0)
        return 0;
    if (rev < 0) {
        if (!ctx->eng.ops->cancel_poll)
            ctx->watch_armed--;
        w->events = 0;
    }
    ctx->user_completed++;
    ctx->dispatching++;
    w->cb(w->opaque, rev);
    ctx->dispatching--;
    if (!ctx->dispatching)
        watch_reap_all(ctx);
    return 1;
}

/* What a poll's revents mean for watch w: the events it wants (errors and
 * hang-ups always), or -EBADF for a descriptor that is not open. */
static int watch_revents(const struct fq_watch *w, int revents)
{
    if (revents < 0)
        return revents;
    if (revents & POLLNVAL)
        return -EBADF;
    return revents & (int)(w->events | POLLERR | POLLHUP);
}

static void watch_poll_done(struct fq_aio *aio);

/* Engine-polled watch: put a poll for its current events in the engine. */
static void watch_arm(struct fq_watch *w)
{
    memset(&w->poll, 0, sizeof(w->poll));
    w->poll.is_poll = true;
    w->poll.fd = w->fd;
    w->poll.poll_events = w->events;
    w->poll.done = watch_poll_done;
    w->polling = true;
    fq_ctx_submit(w->ctx, &w->poll);
}

/* The cancel of a watch's poll came back (whatever it found). */
static void watch_cancel_done(struct fq_aio *aio)
{
    struct fq_watch *w = (struct fq_watch *)((char *)aio - offsetof(struct fq_watch, cancel));

    w->cancelling = false;
    watch_reap(w);
}

/* Ask the engine to drop the watch's poll; it completes with -ECANCELED
 * (or with readiness, if that came first). Requests queued after this
 * cannot be hit by it: the engine keeps submission order. */
static void watch_cancel(struct fq_watch *w)
{
    if (!w->polling || w->cancelling)
        return;
    memset(&w->cancel, 0, sizeof(w->cancel));
    w->cancel.is_cancel = true;
    w->cancel.fd = -1;
    w->cancel.target = &w->poll;
    w->cancel.done = watch_cancel_done;
    w->cancelling = true;
    fq_ctx_submit(w->ctx, &w->cancel);
}

/* An engine poll of a watch completed: report, then re-arm while watched. */
static void watch_poll_done(struct fq_aio *aio)
{
    struct fq_watch *w = (struct fq_watch *)((char *)aio - offsetof(struct fq_watch, poll));
    int res = (int)aio->res;

    w->polling = false;
    w->ctx->dispatching++;      /* keep w while its callback may stop it */
    if (res != -ECANCELED)
        watch_dispatch(w, watch_revents(w, res));
    if (!w->stopped && w->events && !w->polling)
        watch_arm(w);
    w->ctx->dispatching--;
    if (!w->ctx->dispatching)
        watch_reap_all(w->ctx);
}

int fq_watch_start(struct fq_ctx *ctx, int fd, unsigned events, fq_watch_cb *cb,
                   void *opaque, struct fq_watch **out)
{
    struct fq_watch *w;

    if (fd < 0)
        return -EBADF;
    if ((events & ~(unsigned)WATCH_EVENTS) || !cb)
        return -EINVAL;
    w = calloc(1, sizeof(*w));
    if (!w)
        return -ENOMEM;
    w->ctx = ctx;
    w->fd = fd;
    w->cb = cb;
    w->opaque = opaque;
    watch_link(&ctx->watches, w);
    *out = w;
    return fq_watch_modify(w, events);
}

int fq_watch_modify(struct fq_watch *w, unsigned events)
{
    struct fq_ctx *ctx = w->ctx;

    if ((events & ~(unsigned)WATCH_EVENTS) || w->stopped)
        return -EINVAL;
    if (!ctx->eng.ops->cancel_poll) {
        ctx->watch_armed += (events != 0) - (w->events != 0);
        w->events = events;
        return 0;
    }
    w->events = events;
    if (w->polling) {
        /* a poll that misses a wanted event (or a paused watch) is replaced
         * when its cancel lands; extra events it waits for are filtered */
        if (!events || (events & ~w->poll.poll_events))
            watch_cancel(w);
    } else if (events) {
        watch_arm(w);
    }
    fq_ctx_kick(ctx);
    return 0;
}

void fq_watch_stop(struct fq_watch *w)
{
    struct fq_ctx *ctx;

    if (!w || w->stopped)
        return;
    ctx = w->ctx;
    if (!ctx->eng.ops->cancel_poll && w->events)
        ctx->watch_armed--;
    watch_unlink(&ctx->watches, w);
    w->stopped = true;
    w->cb = NULL;
    watch_link(&ctx->zombies, w);
    if (w->polling) {
        watch_cancel(w);
        fq_ctx_kick(ctx);
    }
    watch_reap(w);
}

/* One wait of the loop for an engine that does not poll natively, with
 * watches armed: complete what the engine finished, poll() the watched
 * descriptors and the engine's eventfd together, report the ready ones.
 * Returns the number of completions and callbacks, or negative errno. */
static int wait_polled(struct fq_ctx *ctx, int timeout_ms)
{
    struct fq_engine *e = &ctx->eng;
    int n = 0, efd = e->ops->fd(e);

    if (e->inflight) {
        n = e->ops->wait(e, 0);
        if (n < 0)
            return n;
    }
    size_t need = (size_t)ctx->watch_armed + 1, cnt = 0;
    if (need > ctx->pfd_cap) {
        size_t cap = need * 2;
        struct pollfd *p = realloc(ctx->pfd, cap * sizeof(*p));
        if (!p)
            return -ENOMEM;
        ctx->pfd = p;
        struct fq_watch **pw = realloc(ctx->pfd_watch, cap * sizeof(*pw));
        if (!pw)
            return -ENOMEM;
        ctx->pfd_watch = pw;
        ctx->pfd_cap = cap;
    }
    if (efd >= 0 && e->inflight) {
        ctx->pfd[cnt] = (struct pollfd){ .fd = efd, .events = POLLIN };
        ctx->pfd_watch[cnt++] = NULL;
    }
    for (struct fq_watch *w = ctx->watches; w && cnt < need; w = w->next) {
        if (!w->events)
            continue;
        ctx->pfd[cnt] = (struct pollfd){ .fd = w->fd, .events = (short)w->events };
        ctx->pfd_watch[cnt++] = w;
    }
    /* finished work waits for nobody; an engine without an eventfd (sync)
     * finished its work at submission */
    bool busy = n > 0 || ctx->bh_head || (e->inflight && efd < 0);
    int pr = poll(ctx->pfd, (nfds_t)cnt, busy ? 0 : timeout_ms);
    if (pr < 0)
        return errno == EINTR ? n : -errno;
    ctx->dispatching++;
    for (size_t i = 0; i < cnt && pr > 0; i++) {
        if (!ctx->pfd[i].revents || !ctx->pfd_watch[i])
            continue;
        n += watch_dispatch(ctx->pfd_watch[i], watch_revents(ctx->pfd_watch[i], ctx->pfd[i].revents));
    }
    ctx->dispatching--;
    if (!ctx->dispatching)
        watch_reap_all(ctx);
    if (e->inflight) {
        int m = e->ops->wait(e, 0);
        if (m < 0)
            return m;
        n += m;
    }
    return n;
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
        if (ctx->eng.inflight == 0 && ctx->watch_armed == 0) {
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
        if (ctx->watch_armed && !ctx->eng.ops->cancel_poll)
            r = wait_polled(ctx, t);
        else
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
