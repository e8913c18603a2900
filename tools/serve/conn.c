/* conn.c: a client connection (see conn.h): bytes in from the socket (or
 * the TLS session), the handshake, the output queue, and the lifetime.
 *
 * Input: one receive buffer; the handshake consumes whole options from it
 * (it grows to the largest option accepted), the transmission phase
 * consumes request headers, and a write's payload goes straight into the
 * request's buffer (what already sits in the receive buffer is copied,
 * the rest is received in place). A readable socket is read a bounded
 * number of times per wake-up so that one busy client cannot starve the
 * others. A connection stops being watched for input while it holds its
 * share of memory (or the server its total), and resumes when replies
 * leave.
 *
 * Output: replies are queued; the main loop sends each connection's queue
 * after every round of completions with one sendmsg (up to IOV_MAX
 * pieces), and watches for POLLOUT only when the socket is full.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "conn.h"

#define RBUF_MAX (256u << 10)      /* receive buffer of a busy connection */
#define RBUF_MIN 4096              /* ... of a new or quiet one */
#define READS_PER_WAKE 8
#define STALL_MS 30000             /* output blocked this long, under memory pressure */
#define PAYLOAD_IDLE_MS 60000      /* nothing received in the middle of a request */
#define DRAIN_MS 10000             /* shutdown: time left to in-flight requests */

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void conn_event(void *opaque, int revents);
static void conn_maybe_free(struct conn *c);

/* Log a line about a connection when verbose. */
static void conn_log(const struct conn *c, const char *fmt, const char *arg)
{
    if (!c->s->o->verbose)
        return;
    fprintf(stderr, "fastqcow serve: client %llu: ", (unsigned long long)c->id);
    fprintf(stderr, fmt, arg);
    fputc('\n', stderr);
}

/* ---- watch ---- */

/* Whether the connection wants input now. */
static bool want_read(const struct conn *c)
{
    switch (c->st) {
    case CS_HANDSHAKE:
        return !c->out_blocked;
    case CS_TLS_HANDSHAKE:
        return !tls_want_write(c->tls);
    case CS_XMIT:
        return xmit_can_take(c) || c->rx_left || c->skip_left;
    default:
        return false;
    }
}

/* Set the events watched from what the connection wants. */
static void conn_rewatch(struct conn *c)
{
    unsigned ev = 0;

    if (c->st == CS_DEAD)
        return;
    if (want_read(c))
        ev |= POLLIN;
    if (c->out_blocked || (c->st == CS_TLS_HANDSHAKE && tls_want_write(c->tls)))
        ev |= POLLOUT;
    if (ev != c->wevents) {
        c->wevents = ev;
        fq_watch_modify(c->w, ev);
    }
}

/* ---- lifetime ---- */

/* Close the socket now; requests in the image finish on their own. */
static void conn_close(struct conn *c)
{
    struct server *s = c->s;

    if (c->st == CS_DEAD)
        return;
    c->st = CS_DEAD;
    fq_watch_stop(c->w);
    c->w = NULL;
    if (c->tls) {
        tls_bye(c->tls);
        tls_session_free(c->tls);
        c->tls = NULL;
    }
    close(c->fd);
    c->fd = -1;
    xmit_drop(c);
    if (c->held) {
        c->held->done(c->held);
        c->held = NULL;
    }
    while (c->out_head) {
        struct out *o = c->out_head;
        c->out_head = o->next;
        o->done(o);
    }
    c->out_tail = &c->out_head;
    nbd_buf_free(&c->hsout);
    free(c->rbuf);
    c->rbuf = NULL;
    s->nconns--;
    if (s->listen_paused && !s->stopping)
        listen_pause(s, false);
    conn_kick(c);              /* freed by the main loop, never under a caller */
}

/* Free a dead connection once nothing refers to it (from the main loop
 * only: callers up the stack may still hold it). */
static void conn_maybe_free(struct conn *c)
{
    struct server *s = c->s;

    if (c->st != CS_DEAD || c->inflight || c->flush_queued || c->rx_req)
        return;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    free(c);
}

void conn_fail(struct conn *c, const char *why)
{
    conn_log(c, "dropped: %s", why);
    conn_close(c);
}

void conn_request_start(struct conn *c, uint64_t mem)
{
    c->inflight++;
    c->mem += mem;
    c->s->mem_used += mem;
}

void conn_request_done(struct conn *c, uint64_t mem)
{
    struct server *s = c->s;
    bool starved = s->mem_used >= s->mem_cap;

    c->inflight--;
    c->mem -= mem;
    s->mem_used -= mem;
    if (c->st == CS_DEAD) {
        conn_kick(c);
        return;
    }
    /* input may wait in the buffer: look at it after this send round */
    if (starved && s->mem_used < s->mem_cap) {
        for (struct conn *o = s->conns; o; o = o->next)
            conn_kick(o);
    } else {
        conn_kick(c);
    }
}

/* ---- output ---- */

void conn_kick(struct conn *c)
{
    struct server *s = c->s;

    if (c->flush_queued)
        return;
    c->flush_queued = true;
    c->flush_next = s->flush_head;
    s->flush_head = c;
}

void conn_queue(struct conn *c, struct out *o)
{
    if (c->st == CS_DEAD) {
        o->done(o);
        return;
    }
    if (c->hold_reply) {
        c->hold_reply = false;
        if (c->skip_left) {
            c->held = o;
            return;
        }
    }
    o->next = NULL;
    o->idx = 0;
    o->off = 0;
    *c->out_tail = o;
    c->out_tail = &o->next;
    conn_kick(c);
}

/* The bytes of the handshake's output buffer, queued as one piece. */
struct out_bytes {
    struct out o;
    struct iovec v;
    uint8_t data[];
};

static void out_bytes_done(struct out *o)
{
    free(o);
}

/* Queue what the handshake produced. */
static void queue_hsout(struct conn *c)
{
    if (!c->hsout.len)
        return;
    struct out_bytes *b = malloc(sizeof(*b) + c->hsout.len);
    if (!b) {
        conn_fail(c, "out of memory");
        return;
    }
    memcpy(b->data, c->hsout.p, c->hsout.len);
    b->v.iov_base = b->data;
    b->v.iov_len = c->hsout.len;
    b->o.iov = &b->v;
    b->o.niov = 1;
    b->o.done = out_bytes_done;
    c->hsout.len = 0;
    conn_queue(c, &b->o);
}

/* Gather up to IOV_MAX unsent pieces of the queue. */
static int gather(struct conn *c, struct iovec *v)
{
    int n = 0;

    for (struct out *o = c->out_head; o && n < IOV_MAX; o = o->next) {
        for (int i = o->idx; i < o->niov && n < IOV_MAX; i++) {
            size_t skip = (o == c->out_head && i == o->idx) ? o->off : 0;
            if (o->iov[i].iov_len == skip)
                continue;
            v[n].iov_base = (uint8_t *)o->iov[i].iov_base + skip;
            v[n].iov_len = o->iov[i].iov_len - skip;
            n++;
        }
    }
    return n;
}

/* Drop `n` sent bytes from the head of the queue, finishing what is sent. */
static void advance(struct conn *c, size_t n)
{
    while (c->out_head) {
        struct out *o = c->out_head;
        while (o->idx < o->niov) {
            size_t left = o->iov[o->idx].iov_len - o->off;
            if (n < left) {
                o->off += n;
                return;
            }
            n -= left;
            o->idx++;
            o->off = 0;
        }
        c->out_head = o->next;
        if (!c->out_head)
            c->out_tail = &c->out_head;
        o->done(o);
    }
}

/* Send what is queued until done or the socket is full. Returns 0, or -1
 * when the connection was closed. */
static int conn_send(struct conn *c)
{
    static struct iovec v[IOV_MAX];

    while (c->out_head) {
        int n = gather(c, v);
        ssize_t r;
        if (n == 0) {
            advance(c, 0);
            continue;
        }
        if (c->tls) {
            r = tls_send(c->tls, v, n);
        } else {
            struct msghdr mh = { .msg_iov = v, .msg_iovlen = (size_t)n };
            r = sendmsg(c->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (r < 0)
                r = -errno;
        }
        if (r == -EAGAIN || r == -EWOULDBLOCK || r == -EINTR) {
            if (r == -EINTR)
                continue;
            break;
        }
        if (r < 0) {
            conn_fail(c, "send failed");
            return -1;
        }
        advance(c, (size_t)r);
    }
    if (c->tls && c->st != CS_DEAD) {
        int r = tls_flush(c->tls);
        if (r < 0 && r != -EAGAIN) {
            conn_fail(c, "send failed");
            return -1;
        }
        if (r == -EAGAIN && !c->out_head) {
            /* records made, not yet out: keep POLLOUT */
            if (!c->out_blocked)
                c->out_since_ns = now_ns();
            c->out_blocked = true;
            conn_rewatch(c);
            return 0;
        }
    }
    bool blocked = c->out_head != NULL;
    if (blocked && !c->out_blocked)
        c->out_since_ns = now_ns();
    c->out_blocked = blocked;
    conn_rewatch(c);
    return 0;
}

static void tls_begin(struct conn *c);
static void conn_process(struct conn *c);

/* After sending: requests that waited in the receive buffer for memory,
 * and the state changes that wait for an empty queue. */
static void conn_after_send(struct conn *c)
{
    if (c->st == CS_XMIT && c->rstart < c->rend && want_read(c)) {
        conn_process(c);
        if (c->st == CS_DEAD)
            return;
        conn_rewatch(c);
    }
    if (c->out_head || c->out_blocked)
        return;
    if (c->st == CS_CLOSING || (c->st == CS_XMIT && c->disc && !c->inflight) ||
        (c->st == CS_XMIT && c->s->stopping && !c->inflight))
        conn_close(c);
    else if (c->st == CS_TLS_START)
        tls_begin(c);
}

void conn_flush_all(struct server *s)
{
    while (s->flush_head) {
        struct conn *c = s->flush_head;
        s->flush_head = c->flush_next;
        c->flush_queued = false;
        if (c->st != CS_DEAD && conn_send(c) == 0)
            conn_after_send(c);
        if (c->st == CS_DEAD)
            conn_maybe_free(c);
    }
}

/* ---- input ---- */

/* Receive into buf: > 0 bytes, 0 at end of stream, -EAGAIN, -errno. */
static ssize_t conn_recv(struct conn *c, void *buf, size_t len)
{
    if (c->tls)
        return tls_recv(c->tls, buf, len);
    ssize_t r = recv(c->fd, buf, len, MSG_DONTWAIT);
    if (r < 0)
        return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    return r;
}

/* Make the receive buffer hold at least `want` bytes from rstart. */
static int rbuf_reserve(struct conn *c, size_t want)
{
    if (c->rstart > 0 && (c->rend == c->rstart || c->rcap - c->rstart < want)) {
        memmove(c->rbuf, c->rbuf + c->rstart, c->rend - c->rstart);
        c->rend -= c->rstart;
        c->rstart = 0;
    }
    if (want <= c->rcap)
        return 0;
    uint8_t *p = realloc(c->rbuf, want);
    if (!p)
        return -ENOMEM;
    c->rbuf = p;
    c->rcap = want;
    return 0;
}

/* Handle the handshake's event. Returns false when input must stop. */
static bool hs_event(struct conn *c, enum nbd_hs_event ev)
{
    queue_hsout(c);
    switch (ev) {
    case NBD_HS_MORE:
        return c->st == CS_HANDSHAKE;
    case NBD_HS_CLOSE:
        conn_log(c, "handshake ended%s", "");
        c->st = CS_CLOSING;
        conn_kick(c);          /* closes once the replies queued left */
        return false;
    case NBD_HS_STARTTLS:
        if (c->rend != c->rstart) {
            /* bytes sent in clear after STARTTLS: never trust them */
            conn_fail(c, "data after STARTTLS");
            return false;
        }
        c->st = CS_TLS_START;
        return false;
    case NBD_HS_GO:
        c->exp = &c->s->exports[c->hs.export_idx];
        c->deadline_ns = 0;
        conn_log(c, "export '%s'", c->exp->name);
        xmit_start(c);
        return true;
    }
    return false;
}

/* Consume what the receive buffer holds. */
static void conn_process(struct conn *c)
{
    while (c->st != CS_DEAD && c->rstart < c->rend) {
        size_t avail = c->rend - c->rstart;
        if (c->skip_left) {
            size_t n = avail < c->skip_left ? avail : (size_t)c->skip_left;
            c->rstart += n;
            c->skip_left -= n;
            if (!c->skip_left && c->held) {
                struct out *o = c->held;
                c->held = NULL;
                conn_queue(c, o);
            }
            continue;
        }
        if (c->rx_left) {
            size_t n = avail < c->rx_left ? avail : c->rx_left;
            memcpy(c->rx_ptr, c->rbuf + c->rstart, n);
            c->rx_ptr += n;
            c->rx_left -= n;
            c->rstart += n;
            if (!c->rx_left)
                xmit_payload_done(c);
            continue;
        }
        if (c->st == CS_HANDSHAKE) {
            enum nbd_hs_event ev;
            size_t need;
            size_t used = nbd_hs_input(&c->hs, &c->s->hs_cfg, c->rbuf + c->rstart, avail,
                                       &c->hsout, &ev, &need);
            c->rstart += used;
            c->need = need;
            if (need > avail - used && rbuf_reserve(c, need) < 0) {
                conn_fail(c, "out of memory");
                return;
            }
            if (!hs_event(c, ev) || (used == 0 && ev == NBD_HS_MORE))
                return;
            continue;
        }
        if (c->st != CS_XMIT || avail < NBD_REQUEST_SIZE)
            return;
        size_t used = xmit_input(c, c->rbuf + c->rstart, avail);
        if (!used)
            return;
        c->rstart += used;
    }
    if (c->rstart == c->rend)
        c->rstart = c->rend = 0;
}

/* The socket is readable: read a bounded number of times. */
static void conn_readable(struct conn *c)
{
    for (int i = 0; i < READS_PER_WAKE && c->st != CS_DEAD && want_read(c); i++) {
        ssize_t n;
        size_t space;
        if (c->rx_left && c->rstart == c->rend) {
            /* the rest of a payload: straight into the request's buffer */
            space = c->rx_left;
            n = conn_recv(c, c->rx_ptr, space);
            if (n > 0) {
                c->rx_ptr += n;
                c->rx_left -= (size_t)n;
                c->last_rx_ns = now_ns();
                if (!c->rx_left)
                    xmit_payload_done(c);
            }
        } else {
            if (c->rstart == c->rend)
                c->rstart = c->rend = 0;
            else if (c->rend == c->rcap)
                rbuf_reserve(c, c->rend - c->rstart + 1);
            space = c->rcap - c->rend;
            if (space == 0) {
                conn_fail(c, "receive buffer full");
                return;
            }
            n = conn_recv(c, c->rbuf + c->rend, space);
            if (n > 0) {
                c->rend += (size_t)n;
                c->last_rx_ns = now_ns();
                conn_process(c);
                /* a full buffer: a busy client, give it room for many
                 * requests per receive (idle ones keep 4 KiB) */
                if ((size_t)n == space && c->st == CS_XMIT && c->rcap < RBUF_MAX &&
                    rbuf_reserve(c, c->rcap * 4 < RBUF_MAX ? c->rcap * 4 : RBUF_MAX) < 0) {
                    conn_fail(c, "out of memory");
                    return;
                }
            }
        }
        if (n == 0) {
            conn_log(c, "disconnected%s", "");
            conn_close(c);
            return;
        }
        if (n == -EAGAIN || n == -EINTR)
            break;
        if (n < 0) {
            conn_fail(c, "receive failed");
            return;
        }
        if ((size_t)n < space && !(c->tls && tls_pending(c->tls)))
            break;
    }
    if (c->st != CS_DEAD)
        conn_rewatch(c);
}

/* ---- TLS ---- */

/* Drive the TLS handshake; back to options once it is done. */
static void tls_step(struct conn *c)
{
    int r = tls_handshake(c->tls);

    if (r == -EAGAIN) {
        conn_rewatch(c);
        return;
    }
    if (r < 0) {
        conn_fail(c, "TLS handshake failed");
        return;
    }
    conn_log(c, "TLS established%s", "");
    c->hs.tls = true;
    c->st = CS_HANDSHAKE;
    conn_rewatch(c);
    conn_readable(c);          /* records may already wait in the session */
}

/* The STARTTLS acknowledgement left: start the TLS handshake. */
static void tls_begin(struct conn *c)
{
    c->tls = tls_session_new(c->s->tls, c->fd);
    if (!c->tls) {
        conn_fail(c, "TLS session setup failed");
        return;
    }
    c->st = CS_TLS_HANDSHAKE;
    tls_step(c);
}

/* ---- events ---- */

static void conn_event(void *opaque, int revents)
{
    struct conn *c = opaque;

    if (revents < 0) {
        conn_fail(c, "socket error");
        return;
    }
    if (c->st == CS_TLS_HANDSHAKE) {
        tls_step(c);
        return;
    }
    if ((revents & POLLOUT) && c->out_blocked) {
        c->out_blocked = false;
        if (conn_send(c) < 0)
            return;
        conn_after_send(c);
        if (c->st == CS_DEAD)
            return;
    }
    if (revents & (POLLIN | POLLHUP | POLLERR))
        conn_readable(c);
}

void conn_new(struct server *s, int fd)
{
    static uint64_t next_id;
    struct conn *c = calloc(1, sizeof(*c));

    if (!c) {
        close(fd);
        return;
    }
    c->s = s;
    c->fd = fd;
    c->id = ++next_id;
    c->out_tail = &c->out_head;
    c->rbuf = malloc(RBUF_MIN);
    c->rcap = RBUF_MIN;
    nbd_hs_init(&c->hs);
    nbd_buf_init(&c->hsout, 256u << 10);
    c->last_rx_ns = now_ns();
    if (s->o->handshake_ms > 0)
        c->deadline_ns = c->last_rx_ns + (uint64_t)s->o->handshake_ms * 1000000ull;
    if (!c->rbuf || nbd_hs_greeting(&c->hsout) < 0 ||
        fq_watch_start(s->ctx, fd, POLLIN, conn_event, c, &c->w) < 0) {
        nbd_buf_free(&c->hsout);
        free(c->rbuf);
        free(c);
        close(fd);
        return;
    }
    c->wevents = POLLIN;
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    s->nconns++;
    s->served = true;
    conn_log(c, "connected%s", "");
    queue_hsout(c);
}

int conn_timers(struct server *s, uint64_t now)
{
    uint64_t next = now + 1000000000ull;

    /* accepting paused for want of descriptors: try again */
    if (s->listen_paused && !s->stopping && s->nconns < s->max_conns)
        listen_pause(s, false);
    for (struct conn *c = s->conns, *n; c; c = n) {
        n = c->next;
        if (c->st == CS_DEAD)
            continue;
        if (c->deadline_ns && now >= c->deadline_ns) {
            conn_fail(c, "handshake not finished in time");
            continue;
        }
        if (c->deadline_ns && c->deadline_ns < next)
            next = c->deadline_ns;
        if ((c->rx_left || c->skip_left) && now - c->last_rx_ns > PAYLOAD_IDLE_MS * 1000000ull) {
            conn_fail(c, "request payload not sent");
            continue;
        }
        bool pressure = s->mem_used >= s->mem_cap || s->stopping;
        if (c->out_blocked && pressure &&
            now - c->out_since_ns > (s->stopping ? DRAIN_MS : STALL_MS) * 1000000ull) {
            conn_fail(c, "replies not read");
            continue;
        }
    }
    return (int)((next - now) / 1000000ull) + 1;
}

void conn_stop_all(struct server *s)
{
    for (struct conn *c = s->conns, *n; c; c = n) {
        n = c->next;
        if (c->st == CS_DEAD)
            continue;
        if (c->st != CS_XMIT) {
            conn_close(c);
            continue;
        }
        /* no new request is read; a payload still arriving belongs to a
         * request the client sent, so it is received and served (the
         * drain deadline bounds a client that never finishes it) */
        conn_rewatch(c);
        if (!c->inflight && !c->out_head && !c->rx_left && !c->skip_left)
            conn_close(c);
    }
}

void conn_kill_all(struct server *s)
{
    for (struct conn *c = s->conns, *n; c; c = n) {
        n = c->next;
        conn_close(c);
    }
}
