/* conn.h: one client connection, shared by conn.c (socket input, the
 * handshake, the output queue, the connection's lifetime) and xmit.c (the
 * transmission phase's requests). Private to tools/serve.
 *
 * Lifetime: a connection is counted against the -e limit until its socket
 * closes; its struct lives on while requests it issued are in the image
 * (their completions find it dead and only free themselves).
 * SPDX-License-Identifier: MIT
 */
#ifndef FQ_SERVE_CONN_H
#define FQ_SERVE_CONN_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "server.h"

/* Something to send: an array of pieces, sent in order; `done` runs once
 * it is sent or the connection is gone. */
struct out {
    struct out *next;
    struct iovec *iov;
    int niov;
    int idx;                   /* first piece not fully sent */
    size_t off;                /* bytes of iov[idx] already sent */
    void (*done)(struct out *o);
};

enum conn_state {
    CS_HANDSHAKE,              /* options */
    CS_TLS_START,              /* STARTTLS acknowledged; waiting for the ACK to leave */
    CS_TLS_HANDSHAKE,          /* TLS handshake in progress */
    CS_XMIT,                   /* transmission */
    CS_CLOSING,                /* send what is queued, then close */
    CS_DEAD,                   /* socket closed; waiting for requests in the image */
};

struct conn {
    struct server *s;
    struct conn *prev, *next;  /* s->conns */
    struct conn *flush_next;   /* s->flush_head */
    bool flush_queued;
    int fd;
    struct fq_watch *w;
    unsigned wevents;
    void *tls;                 /* TLS session (tls.c), NULL = clear */
    enum conn_state st;
    uint64_t id;

    /* input */
    uint8_t *rbuf;
    size_t rcap, rstart, rend;
    size_t need;               /* bytes the handshake waits for */
    uint8_t *rx_ptr;           /* a payload being received */
    size_t rx_left;
    uint64_t skip_left;        /* payload of a refused write, dropped */
    bool hold_reply;           /* the next reply queued is its reply: */
    struct out *held;          /* sent once the payload is in (a client
                                  expects no reply to a request it is
                                  still sending) */
    uint64_t last_rx_ns;
    uint64_t deadline_ns;      /* handshake deadline, 0 = none */

    /* handshake */
    struct nbd_hs hs;
    struct nbd_buf hsout;

    /* transmission */
    struct export *exp;
    struct nbd_xmit x;
    struct req *rx_req;        /* the write whose payload is arriving */
    unsigned inflight;         /* requests not yet answered and sent */
    uint64_t mem;              /* bytes they hold */
    bool disc;                 /* NBD_CMD_DISC received */

    /* output */
    struct out *out_head, **out_tail;
    bool out_blocked;          /* the socket was full */
    uint64_t out_since_ns;     /* blocked since */
};

/* conn.c */
/* Have the main loop look at the connection after this round (send,
 * resume input, close once drained). */
void conn_kick(struct conn *c);
/* Queue `o` for sending (after what is queued); the main loop sends it. */
void conn_queue(struct conn *c, struct out *o);
/* A request of `mem` bytes finished (its reply sent or dropped). */
void conn_request_done(struct conn *c, uint64_t mem);
/* Account `mem` bytes for a new request. */
void conn_request_start(struct conn *c, uint64_t mem);
/* The client broke the protocol or the connection failed: drop it. */
void conn_fail(struct conn *c, const char *why);

/* xmit.c */
/* Set up the transmission phase on export c->exp. */
void xmit_start(struct conn *c);
/* Decode one request from `in` (at least NBD_REQUEST_SIZE bytes) and start
 * it. Returns the bytes consumed (the header; a write's payload is then
 * received into c->rx_ptr, or skipped through c->skip_left), 0 if the
 * connection may not take another request now (memory, shutdown) or was
 * dropped. */
size_t xmit_input(struct conn *c, const uint8_t *in, size_t len);
/* The payload of c->rx_req has arrived: start the write. */
void xmit_payload_done(struct conn *c);
/* Whether the connection may take one more request now. */
bool xmit_can_take(const struct conn *c);
/* The connection closes: free the write whose payload was arriving. */
void xmit_drop(struct conn *c);

#endif
