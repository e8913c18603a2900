/* test-watch.c: file descriptors watched from the context's loop
 * (fq_watch_*), on every engine: readiness is reported level-triggered and
 * counts for min_complete, pausing and changing events, POLLHUP, stopping a
 * watch from its own callback and from another's in the same round (the
 * stopped one never runs), closing and reusing the descriptor after a
 * stop, hundreds of watches at once, watches and image I/O in one loop,
 * timeouts with nothing ready, bad arguments, and a context freed with
 * watches still armed.
 * SPDX-License-Identifier: MIT
 */
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>

#include "testlib.h"

struct wstate {
    int calls;
    int last;                  /* revents of the last call */
    int drain_fd;              /* read a byte from it in the callback; -1 = no */
    struct fq_watch *self;
    struct fq_watch *stop_other; /* stop this watch from the callback */
    int stop_self;
    int pause_self;
};

static void wcb(void *opaque, int revents)
{
    struct wstate *s = opaque;
    char c;

    s->calls++;
    s->last = revents;
    if (s->drain_fd >= 0 && (revents & POLLIN))
        TL_CHECK(read(s->drain_fd, &c, 1) == 1, "drain read");
    if (s->stop_other) {
        fq_watch_stop(s->stop_other);
        s->stop_other = NULL;
    }
    if (s->pause_self)
        TL_CHECK(fq_watch_modify(s->self, 0) == 0, "pause from callback");
    if (s->stop_self) {
        fq_watch_stop(s->self);
        s->self = NULL;
    }
}

static void wstate_init(struct wstate *s)
{
    memset(s, 0, sizeof(*s));
    s->drain_fd = -1;
}

/* Readiness, level triggering, pausing, more events, hang-up. */
static void test_basic(struct fq_ctx *ctx, const char *eng)
{
    int p[2];
    struct wstate s;
    struct fq_watch *w;

    wstate_init(&s);
    TL_CHECK(pipe(p) == 0, "pipe");
    TL_CHECK(fq_watch_start(ctx, p[0], POLLIN, wcb, &s, &w) == 0, "%s: start", eng);
    s.self = w;
    /* nothing ready: the run times out */
    TL_CHECK(fq_ctx_run(ctx, 1, 30) == 0 && s.calls == 0, "%s: not ready: %d calls", eng, s.calls);
    TL_CHECK(write(p[1], "ab", 2) == 2, "write");
    int r = fq_ctx_run(ctx, 1, 2000);
    TL_CHECK(r == 1 && s.calls == 1 && s.last == POLLIN, "%s: ready: r %d calls %d revents %#x",
             eng, r, s.calls, s.last);
    /* level-triggered: the data is still there, so it is reported again */
    r = fq_ctx_run(ctx, 1, 2000);
    TL_CHECK(r == 1 && s.calls == 2, "%s: level: r %d calls %d", eng, r, s.calls);
    /* drained by the callback: two more reports (one per byte), then none */
    s.drain_fd = p[0];
    r = fq_ctx_run(ctx, 2, 2000);
    TL_CHECK(r == 2 && s.calls == 4, "%s: drain: r %d calls %d", eng, r, s.calls);
    TL_CHECK(fq_ctx_run(ctx, 1, 30) == 0 && s.calls == 4, "%s: drained: %d calls", eng, s.calls);
    /* paused: never reported, and the loop has nothing to wait for */
    TL_CHECK(write(p[1], "c", 1) == 1, "write");
    TL_CHECK(fq_watch_modify(w, 0) == 0, "%s: pause", eng);
    TL_CHECK(fq_ctx_run(ctx, 1, 30) == 0 && s.calls == 4, "%s: paused: %d calls", eng, s.calls);
    TL_CHECK(fq_watch_modify(w, POLLIN) == 0, "%s: resume", eng);
    r = fq_ctx_run(ctx, 1, 2000);
    TL_CHECK(r == 1 && s.calls == 5, "%s: resumed: r %d calls %d", eng, r, s.calls);
    /* hang-up: reported whatever the events */
    s.drain_fd = -1;
    close(p[1]);
    s.pause_self = 1;
    for (int i = 0; i < 3 && !(s.last & POLLHUP); i++)
        fq_ctx_run(ctx, 1, 2000);
    TL_CHECK(s.last & POLLHUP, "%s: hang-up: revents %#x", eng, s.last);
    fq_watch_stop(w);
    close(p[0]);

    /* a socket: POLLOUT added to a POLLIN watch is reported at once */
    int sv[2];
    TL_CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0, "socketpair");
    wstate_init(&s);
    TL_CHECK(fq_watch_start(ctx, sv[0], POLLIN, wcb, &s, &w) == 0, "%s: start", eng);
    s.self = w;
    TL_CHECK(fq_ctx_run(ctx, 1, 30) == 0 && s.calls == 0, "%s: socket idle", eng);
    TL_CHECK(fq_watch_modify(w, POLLIN | POLLOUT) == 0, "%s: modify", eng);
    r = fq_ctx_run(ctx, 1, 2000);
    TL_CHECK(r == 1 && s.last == POLLOUT, "%s: POLLOUT: r %d revents %#x", eng, r, s.last);
    /* back to POLLIN only: POLLOUT is never reported again */
    TL_CHECK(fq_watch_modify(w, POLLIN) == 0, "%s: modify back", eng);
    int before = s.calls;
    fq_ctx_run(ctx, 1, 30);
    TL_CHECK(s.calls == before || !(s.last & POLLOUT), "%s: POLLOUT after removal %#x", eng, s.last);
    TL_CHECK(write(sv[1], "x", 1) == 1, "write");
    s.drain_fd = sv[0];
    r = fq_ctx_run(ctx, 1, 2000);
    TL_CHECK(r >= 1 && s.last == POLLIN, "%s: POLLIN: r %d revents %#x", eng, r, s.last);
    fq_watch_stop(w);
    close(sv[0]);
    close(sv[1]);
}

/* Stops from callbacks: the stopped watch never runs, even when it was
 * ready in the same round; its descriptor can be closed and reused. */
static void test_stop(struct fq_ctx *ctx, const char *eng)
{
    int a[2], b[2];
    struct wstate sa, sb;
    struct fq_watch *wa, *wb;

    TL_CHECK(pipe(a) == 0 && pipe(b) == 0, "pipe");
    for (int round = 0; round < 2; round++) {
        wstate_init(&sa);
        wstate_init(&sb);
        TL_CHECK(fq_watch_start(ctx, a[0], POLLIN, wcb, &sa, &wa) == 0, "start a");
        TL_CHECK(fq_watch_start(ctx, b[0], POLLIN, wcb, &sb, &wb) == 0, "start b");
        sa.self = wa;
        sb.self = wb;
        /* whichever runs first stops the other, and itself */
        sa.stop_other = wb;
        sb.stop_other = wa;
        sa.stop_self = sb.stop_self = 1;
        if (round == 0) {
            TL_CHECK(write(a[1], "1", 1) == 1 && write(b[1], "1", 1) == 1, "write");
        }
        int r = fq_ctx_run(ctx, 1, round == 0 ? 2000 : 30);
        if (round == 0)
            TL_CHECK(r == 1 && sa.calls + sb.calls == 1, "%s: stop other: r %d calls %d+%d",
                     eng, r, sa.calls, sb.calls);
        /* both stopped now: nothing left to report */
        TL_CHECK(fq_ctx_run(ctx, 1, 30) == 0, "%s: after stops", eng);
        int total = sa.calls + sb.calls;
        TL_CHECK(total == (round == 0), "%s: calls %d", eng, total);
        if (round == 0) {
            char c;
            TL_CHECK(read(a[0], &c, 1) == 1 && read(b[0], &c, 1) == 1, "drain");
        } else {
            /* nothing was ready: neither ran; stop them here */
            fq_watch_stop(wa);
            fq_watch_stop(wb);
        }
    }
    /* stop outside the loop, close, reuse the number for a new pipe */
    int fdnum = a[0];
    close(a[0]);
    close(a[1]);
    close(b[0]);
    close(b[1]);
    int c[2];
    TL_CHECK(pipe(c) == 0, "pipe");
    wstate_init(&sa);
    TL_CHECK(fq_watch_start(ctx, c[0], POLLIN, wcb, &sa, &wa) == 0, "start c");
    sa.self = wa;
    sa.drain_fd = c[0];
    TL_CHECK(write(c[1], "z", 1) == 1, "write");
    TL_CHECK(fq_ctx_run(ctx, 1, 2000) == 1 && sa.calls == 1, "%s: reused fd %d (was %d): %d calls",
             eng, c[0], fdnum, sa.calls);
    fq_watch_stop(wa);
    /* stop while a poll is pending (not ready), then close at once */
    TL_CHECK(fq_watch_start(ctx, c[0], POLLIN, wcb, &sa, &wa) == 0, "start c2");
    fq_ctx_run(ctx, 1, 10);
    fq_watch_stop(wa);
    close(c[0]);
    TL_CHECK(write(c[1], "y", 1) < 0 || 1, "write after close");
    close(c[1]);
    TL_CHECK(fq_ctx_run(ctx, 1, 30) == 0 && sa.calls == 1, "%s: stopped watch ran: %d", eng, sa.calls);
}

#define NSOCK 300

/* Hundreds of sockets, each ready once; every one is reported. */
static void test_many(struct fq_ctx *ctx, const char *eng)
{
    static int sv[NSOCK][2];
    static struct wstate s[NSOCK];
    static struct fq_watch *w[NSOCK];
    int opened = 0;

    for (int i = 0; i < NSOCK; i++) {
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv[i]) < 0)
            break;
        wstate_init(&s[i]);
        s[i].drain_fd = sv[i][0];
        TL_CHECK(fq_watch_start(ctx, sv[i][0], POLLIN, wcb, &s[i], &w[i]) == 0, "start %d", i);
        s[i].self = w[i];
        opened++;
    }
    TL_CHECK(opened > 100, "only %d socket pairs", opened);
    for (int i = 0; i < opened; i += 2)
        TL_CHECK(write(sv[i][1], "m", 1) == 1, "write");
    int got = 0;
    for (int i = 0; i < 100 && got < (opened + 1) / 2; i++) {
        int r = fq_ctx_run(ctx, 1, 2000);
        if (r <= 0)
            break;
        got += r;
    }
    TL_CHECK(got == (opened + 1) / 2, "%s: %d of %d reported", eng, got, (opened + 1) / 2);
    for (int i = 0; i < opened; i++) {
        TL_CHECK(s[i].calls == !(i & 1), "%s: socket %d: %d calls", eng, i, s[i].calls);
        fq_watch_stop(w[i]);
        close(sv[i][0]);
        close(sv[i][1]);
    }
}

struct iostate {
    int done;
    int ret;
};

static void io_cb(void *opaque, int ret)
{
    struct iostate *s = opaque;

    s->done++;
    s->ret = ret;
}

/* A watch and image requests in one loop: both count as completions. */
static void test_with_io(struct fq_ctx *ctx, const char *eng, const char *dir)
{
    char path[4200], err[FQ_ERR_MAX];
    struct fq_create_opts co;
    struct fq_open_opts oo;
    struct fq_image *img;
    int p[2];

    snprintf(path, sizeof(path), "%s/w-%s.qcow2", dir, eng);
    fq_create_opts_init(&co);
    co.size = 4 << 20;
    TL_CHECK(fq_create(path, &co, err) == 0, "create: %s", err);
    fq_open_opts_init(&oo);
    oo.ctx = ctx;
    if (fq_open(path, &oo, &img, err) < 0) {
        TL_CHECK(0, "open: %s", err);
        return;
    }
    static uint8_t buf[65536];
    struct iovec v = { buf, sizeof(buf) };
    struct iostate io = { 0 };
    struct wstate s;
    struct fq_watch *w;

    tl_fill_pattern(buf, sizeof(buf), 7, 0);
    TL_CHECK(pipe(p) == 0, "pipe");
    wstate_init(&s);
    s.drain_fd = p[0];
    TL_CHECK(fq_watch_start(ctx, p[0], POLLIN, wcb, &s, &w) == 0, "start");
    TL_CHECK(fq_aio_pwritev(img, &v, 1, 0, sizeof(buf), 65536, io_cb, &io) == 0, "aio write");
    TL_CHECK(write(p[1], "q", 1) == 1, "write");
    int got = 0;
    for (int i = 0; i < 10 && got < 2; i++) {
        int r = fq_ctx_run(ctx, 2 - (unsigned)got, 2000);
        if (r < 0)
            break;
        got += r;
    }
    TL_CHECK(got == 2 && io.done == 1 && io.ret == 0 && s.calls == 1,
             "%s: io + watch: %d completions, io %d/%d, watch %d", eng, got, io.done, io.ret, s.calls);
    /* the watch is still armed: a sync call on the context still works
     * (it waits for its own request) */
    static uint8_t back[65536];
    TL_CHECK(fq_pread(img, back, sizeof(back), 65536) == 0 && !memcmp(back, buf, sizeof(buf)),
             "%s: read back", eng);
    fq_watch_stop(w);
    TL_CHECK(fq_close(img) == 0, "close");
    close(p[0]);
    close(p[1]);
    unlink(path);
}

/* Bad arguments; a context freed with watches armed, paused and ready. */
static void test_edges(enum fq_engine_kind kind, const char *eng)
{
    struct fq_ctx *ctx;
    struct fq_watch *w[3];
    struct wstate s;
    int p[2];

    TL_CHECK(fq_ctx_new(kind, &ctx, NULL) == 0, "ctx");
    wstate_init(&s);
    TL_CHECK(fq_watch_start(ctx, -1, POLLIN, wcb, &s, &w[0]) == -EBADF, "%s: fd -1", eng);
    TL_CHECK(fq_watch_start(ctx, 0, 0x8000, wcb, &s, &w[0]) == -EINVAL, "%s: bad events", eng);
    TL_CHECK(fq_watch_start(ctx, 0, POLLIN, NULL, &s, &w[0]) == -EINVAL, "%s: no callback", eng);
    TL_CHECK(pipe(p) == 0, "pipe");
    TL_CHECK(write(p[1], "r", 1) == 1, "write");
    TL_CHECK(fq_watch_start(ctx, p[0], POLLIN, wcb, &s, &w[0]) == 0, "start");
    TL_CHECK(fq_watch_start(ctx, p[1], POLLOUT, wcb, &s, &w[1]) == 0, "start");
    TL_CHECK(fq_watch_start(ctx, p[0], 0, wcb, &s, &w[2]) == 0, "start paused");
    TL_CHECK(fq_watch_modify(w[1], 0x8000) == -EINVAL, "%s: modify bad events", eng);
    fq_ctx_free(ctx);
    TL_CHECK(s.calls == 0, "%s: callbacks ran in free: %d", eng, s.calls);
    close(p[0]);
    close(p[1]);
}

int main(void)
{
    static const struct {
        enum fq_engine_kind kind;
        const char *name;
    } engines[] = {
        { FQ_ENGINE_IO_URING, "io_uring" },
        { FQ_ENGINE_THREADS, "threads" },
        { FQ_ENGINE_SYNC, "sync" },
    };
    tl_name = "test-watch";
    signal(SIGPIPE, SIG_IGN);
    const char *dir = tl_mkdir();

    for (size_t i = 0; i < sizeof(engines) / sizeof(engines[0]); i++) {
        struct fq_ctx *ctx;
        char err[FQ_ERR_MAX] = "";

        if (fq_ctx_new(engines[i].kind, &ctx, err) < 0) {
            printf("%s: engine unavailable (%s), skipped\n", engines[i].name, err);
            continue;
        }
        test_basic(ctx, engines[i].name);
        test_stop(ctx, engines[i].name);
        test_many(ctx, engines[i].name);
        test_with_io(ctx, engines[i].name, dir);
        fq_ctx_free(ctx);
        test_edges(engines[i].kind, engines[i].name);
        printf("%s: done\n", engines[i].name);
    }
    if (tl_failures) {
        fprintf(stderr, "test-watch: %d failures\n", tl_failures);
        return 1;
    }
    printf("test-watch: ok\n");
    return 0;
}
