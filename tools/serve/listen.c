/* listen.c: the listening sockets: a Unix socket (-k), TCP on every
 * address the bind name resolves to (-b, -p), or the sockets systemd-style
 * socket activation hands over (LISTEN_PID/LISTEN_FDS, fds 3 and up: how
 * `nbdinfo -- [ fastqcow serve IMG ]` starts the server). Accepting stops
 * while the connection limit (-e) is reached and resumes when a
 * connection closes; clients beyond the limit wait in the backlog.
 * SPDX-License-Identifier: MIT
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "../common/cli.h"
#include "server.h"

#define BACKLOG 128

/* Add a listening socket to the server's list. */
static int add_fd(struct server *s, int fd)
{
    int *l = realloc(s->lfd, (s->nlisten + 1) * sizeof(*l));

    if (!l)
        return -1;
    s->lfd = l;
    s->lfd[s->nlisten++] = fd;
    return 0;
}

/* The sockets of socket activation, if this process was given some. */
static int take_activated(struct server *s)
{
    const char *pid = getenv("LISTEN_PID"), *fds = getenv("LISTEN_FDS");
    char *end;

    if (!pid || !fds)
        return 0;
    long p = strtol(pid, &end, 10);
    if (*end || p != (long)getpid())
        return 0;
    long n = strtol(fds, &end, 10);
    if (*end || n < 1 || n > 64) {
        tool_error("LISTEN_FDS='%s' is not a number of sockets", fds);
        return -1;
    }
    for (int fd = 3; fd < 3 + n; fd++) {
        int fl = fcntl(fd, F_GETFL);
        if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 ||
            fcntl(fd, F_SETFD, FD_CLOEXEC) < 0 || add_fd(s, fd) < 0) {
            tool_error("socket activation: fd %d: %s", fd, strerror(errno));
            return -1;
        }
    }
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
    return 1;
}

/* Listen on a Unix socket at path. */
static int open_unix(struct server *s, const char *path)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };

    if (strlen(path) >= sizeof(sa.sun_path)) {
        tool_error("socket path too long: %s", path);
        return -1;
    }
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, BACKLOG) < 0) {
        tool_error("Failed to bind socket to %s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    if (add_fd(s, fd) < 0) {
        close(fd);
        return -1;
    }
    if (s->o->verbose)
        fprintf(stderr, "fastqcow serve: listening on unix:%s\n", path);
    return 0;
}

/* Print the address a TCP socket listens on (the port may have been 0). */
static void print_addr(int fd)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    char host[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;

    if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0)
        return;
    if (ss.ss_family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
        port = ntohs(a->sin_port);
    } else if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
        port = ntohs(a->sin6_port);
    }
    fprintf(stderr, "fastqcow serve: listening on %s port %u\n", host, port);
}

/* Listen on TCP: every address the bind name resolves to. */
static int open_tcp(struct server *s, const char *host, const char *port)
{
    struct addrinfo hints = { .ai_flags = AI_PASSIVE, .ai_socktype = SOCK_STREAM }, *res;
    int r = getaddrinfo(host, port, &hints, &res), bound = 0, err = 0;

    if (r) {
        tool_error("address '%s' port '%s': %s", host, port, gai_strerror(r));
        return -1;
    }
    for (struct addrinfo *a = res; a; a = a->ai_next) {
        int fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, a->ai_protocol);
        int one = 1;
        if (fd < 0) {
            err = errno;
            continue;
        }
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (a->ai_family == AF_INET6)
            setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
        if (bind(fd, a->ai_addr, a->ai_addrlen) < 0 || listen(fd, BACKLOG) < 0 || add_fd(s, fd) < 0) {
            err = errno;
            close(fd);
            continue;
        }
        if (s->o->verbose)
            print_addr(fd);
        bound++;
    }
    freeaddrinfo(res);
    if (!bound) {
        tool_error("Failed to bind socket to %s:%s: %s", host, port, strerror(err));
        return -1;
    }
    return 0;
}

int listen_open(struct server *s)
{
    const struct serve_opts *o = s->o;
    int r = take_activated(s);

    if (r < 0)
        return -1;
    if (r > 0)
        return 0;
    if (o->socket)
        return open_unix(s, o->socket);
    return open_tcp(s, o->bind ? o->bind : "0.0.0.0", o->port ? o->port : "10809");
}

/* A listening socket is readable: accept while below the limit. */
static void on_accept(void *opaque, int revents)
{
    struct server *s = opaque;

    for (size_t i = 0; i < s->nlisten && !s->stopping; i++) {
        while (s->nconns < s->max_conns) {
            int fd = accept4(s->lfd[i], NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
            if (fd < 0) {
                if (errno == EMFILE || errno == ENFILE) {
                    /* no descriptor left: let connections close first */
                    listen_pause(s, true);
                }
                break;
            }
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
            conn_new(s, fd);
        }
    }
    if (s->nconns >= s->max_conns)
        listen_pause(s, true);
}

int listen_start(struct server *s)
{
    s->lwatch = calloc(s->nlisten, sizeof(*s->lwatch));
    if (!s->lwatch)
        return -1;
    for (size_t i = 0; i < s->nlisten; i++) {
        int r = fq_watch_start(s->ctx, s->lfd[i], POLLIN, on_accept, s, &s->lwatch[i]);
        if (r < 0) {
            tool_error("cannot watch the listening socket: %s", strerror(-r));
            return -1;
        }
    }
    return 0;
}

void listen_pause(struct server *s, bool pause)
{
    if (s->listen_paused == pause || !s->lwatch)
        return;
    s->listen_paused = pause;
    for (size_t i = 0; i < s->nlisten; i++)
        if (s->lwatch[i])
            fq_watch_modify(s->lwatch[i], pause ? 0 : POLLIN);
}

void listen_close(struct server *s)
{
    for (size_t i = 0; i < s->nlisten; i++) {
        if (s->lwatch && s->lwatch[i])
            fq_watch_stop(s->lwatch[i]);
        close(s->lfd[i]);
    }
    free(s->lwatch);
    free(s->lfd);
    s->lwatch = NULL;
    s->lfd = NULL;
    s->nlisten = 0;
}
