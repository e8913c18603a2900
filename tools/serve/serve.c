/* serve.c: `fastqcow serve`: open the images on one context, listen, and
 * run the loop that drives sockets and image I/O together until told to
 * stop (SIGINT, SIGTERM, SIGHUP) or, without -t, until the last client
 * left. Stopping drains: no new request is read, those in flight finish
 * and their replies are sent (clients that do not read them are dropped
 * after a while), then the images are flushed and closed.
 *
 * --fork forks before anything is opened (an io_uring ring does not
 * survive a fork); the parent exits 0 once the child listens (its pid file
 * written) or 1 with the child's error message.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../common/cli.h"
#include "../subcommands.h"
#include "server.h"

#define MEM_CAP (1ull << 30)           /* payload bytes held, all connections */
#define CONN_MEM_CAP (64ull << 20)     /* payload bytes held by one connection */
#define POOL_CACHED (64ull << 20)      /* free payload buffers kept */
#define MAX_CONNS 4096                 /* -e 0 */
#define DRAIN_MS 15000

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Write the pid file (once listening: a readiness signal). */
static int write_pid_file(const char *path)
{
    char tmp[4200];
    snprintf(tmp, sizeof(tmp), "%s.tmp%d", path, (int)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f || fprintf(f, "%d\n", (int)getpid()) < 0 || fclose(f) != 0 || rename(tmp, path) < 0) {
        tool_error("Failed to write pid file '%s': %s", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

/* --fork: the parent waits for the child's word and exits. Returns in
 * the child with the write end of the pipe in *ready_fd. */
static void fork_off(int *ready_fd)
{
    int p[2];

    if (pipe2(p, O_CLOEXEC) < 0) {
        tool_error("pipe: %s", strerror(errno));
        exit(1);
    }
    pid_t pid = fork();
    if (pid < 0) {
        tool_error("fork: %s", strerror(errno));
        exit(1);
    }
    if (pid > 0) {
        char c = 0;
        close(p[1]);
        ssize_t n;
        do
            n = read(p[0], &c, 1);
        while (n < 0 && errno == EINTR);
        if (n == 1 && c == 'R')
            exit(0);
        int st;
        waitpid(pid, &st, 0);
        exit(1);
    }
    close(p[0]);
    setsid();
    *ready_fd = p[1];
}

/* The server listens: tell the parent (with --fork) and detach stdio. */
static void ready(struct server *s, int ready_fd)
{
    if (ready_fd < 0)
        return;
    int null = open("/dev/null", O_RDWR);
    if (null >= 0) {
        dup2(null, 0);
        dup2(null, 1);
        if (!s->o->verbose)
            dup2(null, 2);
        if (null > 2)
            close(null);
    }
    if (write(ready_fd, "R", 1) != 1) {
        /* the parent is gone: serve anyway */
    }
    close(ready_fd);
}

/* A stop signal arrived (SIGINT, SIGTERM, SIGHUP). */
static void on_signal(void *opaque, int revents)
{
    struct server *s = opaque;
    struct signalfd_siginfo si;

    while (read(s->sigfd, &si, sizeof(si)) == sizeof(si))
        s->stopping = true;
}

/* The loop: completions and sockets, then replies out, then timers. */
static void run(struct server *s)
{
    uint64_t stop_at = 0;

    for (;;) {
        uint64_t now = now_ns();
        int t = conn_timers(s, now);
        if (s->stopping) {
            if (!stop_at) {
                stop_at = now + DRAIN_MS * 1000000ull;
                listen_close(s);
                conn_stop_all(s);
                conn_flush_all(s);
            } else if (now >= stop_at) {
                conn_kill_all(s);
            }
            if (!s->conns)
                break;
            if (t > 200)
                t = 200;
        } else if (!s->o->persistent && s->served && s->nconns == 0) {
            s->stopping = true;
            continue;
        }
        int r = fq_ctx_run(s->ctx, 1, t);
        if (r < 0 && r != -EINTR) {
            tool_error("event loop: %s", strerror(-r));
            s->exit_code = 1;
            s->stopping = true;
        }
        conn_flush_all(s);
    }
}

int cmd_serve(int argc, char **argv)
{
    struct serve_opts o;
    struct server srv, *s = &srv;
    char err[FQ_ERR_MAX] = "";
    int ready_fd = -1, sigfd = -1;
    struct fq_watch *sigw = NULL;
    bool pid_written = false;

    int pr = serve_parse_args(argc, argv, &o);
    if (pr)
        return pr == 2 ? 0 : 1;
    memset(s, 0, sizeof(*s));
    s->o = &o;
    s->max_conns = o.shared ? (unsigned)o.shared : MAX_CONNS;
    s->mem_cap = MEM_CAP;
    s->conn_mem_cap = CONN_MEM_CAP;
    if (o.fork)
        fork_off(&ready_fd);

    signal(SIGPIPE, SIG_IGN);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    sigprocmask(SIG_BLOCK, &set, NULL);
    sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    s->sigfd = sigfd;

    int ret = 1;
    bool socket_made = false;
    if (sigfd < 0) {
        tool_error("signalfd: %s", strerror(errno));
        goto out;
    }
    if (fq_ctx_new(o.engine, &s->ctx, err) < 0) {
        tool_error("%s", err);
        goto out;
    }
    s->pool = bufpool_new(POOL_CACHED);
    if (!s->pool || exports_open(s) < 0)
        goto out;
    if (o.tls_creds) {
        s->tls = tls_creds_load(&o);
        if (!s->tls)
            goto out;
        s->hs_cfg.tls = true;
    }
    if (listen_open(s) < 0)
        goto out;
    socket_made = o.socket != NULL;
    if (listen_start(s) < 0 ||
        fq_watch_start(s->ctx, sigfd, POLLIN, on_signal, s, &sigw) < 0)
        goto out;
    if (o.pid_file) {
        if (write_pid_file(o.pid_file) < 0)
            goto out;
        pid_written = true;
    }
    ready(s, ready_fd);
    ready_fd = -1;
    run(s);
    ret = s->exit_code;
out:
    if (sigw)
        fq_watch_stop(sigw);
    conn_kill_all(s);
    conn_flush_all(s);
    listen_close(s);
    /* requests still in the image finish before the images close */
    if (exports_close(s) < 0)
        ret = 1;
    conn_flush_all(s);         /* frees the connections they held */
    fq_ctx_free(s->ctx);
    bufpool_free(s->pool);
    tls_creds_free(s->tls);
    if (socket_made)
        unlink(o.socket);
    if (pid_written)
        unlink(o.pid_file);
    if (sigfd >= 0)
        close(sigfd);
    return ret;
}
