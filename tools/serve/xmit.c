/* xmit.c: the transmission phase: each request becomes an asynchronous
 * image call (fq_aio_*), answered when it completes, in any order, many at
 * once per connection.
 *
 *   READ          one read of the whole range into a pooled buffer; with
 *                 structured replies, ranges the map shows as zeros go out
 *                 as OFFSET_HOLE chunks (and are not read when the whole
 *                 request is zeros); the data chunks point into the
 *                 buffer (no copy)
 *   WRITE         payload received into a pooled buffer, then written;
 *                 with --detect-zeroes an all-zero payload becomes a
 *                 write-zeroes
 *   WRITE_ZEROES  NO_HOLE keeps the range allocated; FAST_ZERO fails with
 *                 ENOTSUP where zeroing would write zeros
 *   TRIM          discarded with --discard=unmap, else acknowledged only
 *   FUA           a flush after the write, before the reply
 *   FLUSH         fq_aio_flush: every write answered before it, on any
 *                 connection, is durable (one image, one cache: this is
 *                 what CAN_MULTI_CONN promises)
 *   CACHE         read and dropped (warms the caches)
 *   BLOCK_STATUS  computed at once from the map (meta.c)
 *
 * A request holds memory (its payload) from its header until its reply
 * left; conn.c stops reading a connection over its share.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conn.h"

#define MAX_INFLIGHT 512           /* requests per connection */
#define REQ_OVERHEAD 1024          /* bytes counted per request besides its payload */
#define MAX_RUNS 16                /* data/hole chunks of one read reply */
#define HOLE_MIN_READ (64u << 10)  /* raw images: look for holes from this size */

struct req {
    struct out o;
    struct conn *c;
    struct nbd_request rq;
    uint8_t *buf;                  /* payload: read data or write data */
    size_t buflen;
    uint64_t mem;
    bool fua;                      /* flush before replying */
    int nruns;                     /* read: data and hole runs, 0 = one data run */
    struct read_run runs[MAX_RUNS];
    struct iovec aio_iov;
    struct iovec iov[1 + 2 * MAX_RUNS];
    uint8_t hdr[MAX_RUNS * 32 + NBD_CHUNK_HEADER_SIZE + 6 + 256];
    struct nbd_buf bs;             /* block status reply */
};

void xmit_start(struct conn *c)
{
    struct export *e = c->exp;
    int idx = (int)(e - c->s->exports);

    c->x.size = e->size;
    c->x.structured = c->hs.structured;
    c->x.tflags = (uint16_t)(c->s->infos[idx].tflags | (c->hs.structured ? NBD_FLAG_SEND_DF : 0));
    c->x.meta_sel = c->hs.meta_export == idx ? c->hs.meta_sel : 0;
    c->x.max_payload = NBD_MAX_PAYLOAD;
    c->st = CS_XMIT;
}

bool xmit_can_take(const struct conn *c)
{
    const struct server *s = c->s;

    return c->st == CS_XMIT && !c->disc && !s->stopping && !c->rx_req &&
           c->inflight < MAX_INFLIGHT && c->mem < s->conn_mem_cap && s->mem_used < s->mem_cap;
}

/* The reply left (or the connection went): give everything back. */
static void req_free(struct out *o)
{
    struct req *r = (struct req *)o;
    struct conn *c = r->c;

    if (r->buf)
        bufpool_put(c->s->pool, r->buf, r->buflen);
    nbd_buf_free(&r->bs);
    uint64_t mem = r->mem;
    free(r);
    conn_request_done(c, mem);
}

/* Queue the reply built in r->iov[0..n). */
static void send_reply(struct req *r, int n)
{
    r->o.iov = r->iov;
    r->o.niov = n;
    r->o.done = req_free;
    conn_queue(r->c, &r->o);
}

/* A short message for an NBD error, for the human at the other end. */
static const char *err_msg(uint32_t err, uint16_t type)
{
    switch (err) {
    case NBD_EPERM:
        return "read-only export";
    case NBD_ENOSPC:
        return "request past the end of the export";
    case NBD_ENOTSUP:
        return "zeroing would not be fast";
    case NBD_ENOMEM:
        return "out of memory";
    case NBD_ESHUTDOWN:
        return "server shutting down";
    case NBD_EIO:
        return "I/O error";
    case NBD_EINVAL:
        return type > NBD_CMD_BLOCK_STATUS ? "unknown command" : "invalid request";
    default:
        return NULL;
    }
}

/* Reply with a status only: a simple reply, or with structured replies an
 * error chunk (READ never gets a simple reply then). */
static void reply_status(struct req *r, uint32_t err)
{
    const struct conn *c = r->c;
    size_t n;

    if (c->x.structured && (err || r->rq.type == NBD_CMD_READ)) {
        if (err)
            n = nbd_error_chunk(r->hdr, r->rq.handle, err, err_msg(err, r->rq.type));
        else
            n = nbd_chunk_header(r->hdr, r->rq.handle, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE, 0);
    } else {
        n = nbd_simple_reply(r->hdr, r->rq.handle, err);
    }
    r->iov[0] = (struct iovec){ r->hdr, n };
    send_reply(r, 1);
}

/* A successful read: the data (simple), or data and hole chunks. */
static void reply_read(struct req *r)
{
    const struct conn *c = r->c;
    uint32_t len = r->rq.length;

    if (!c->x.structured) {
        r->iov[0] = (struct iovec){ r->hdr, nbd_simple_reply(r->hdr, r->rq.handle, 0) };
        r->iov[1] = (struct iovec){ r->buf, len };
        send_reply(r, len ? 2 : 1);
        return;
    }
    if (len == 0) {
        reply_status(r, 0);
        return;
    }
    struct read_run one = { 0, len, false };
    struct read_run *runs = r->nruns ? r->runs : &one;
    int nruns = r->nruns ? r->nruns : 1, n = 0;
    uint8_t *h = r->hdr;
    for (int i = 0; i < nruns; i++) {
        uint16_t flags = i + 1 == nruns ? NBD_REPLY_FLAG_DONE : 0;
        uint64_t off = r->rq.offset + runs[i].off;
        if (runs[i].zero) {
            nbd_chunk_header(h, r->rq.handle, flags, NBD_REPLY_TYPE_OFFSET_HOLE, 12);
            nbd_put64(h + 20, off);
            nbd_put32(h + 28, runs[i].len);
            r->iov[n++] = (struct iovec){ h, 32 };
        } else {
            nbd_chunk_header(h, r->rq.handle, flags, NBD_REPLY_TYPE_OFFSET_DATA, 8 + runs[i].len);
            nbd_put64(h + 20, off);
            r->iov[n++] = (struct iovec){ h, 28 };
            r->iov[n++] = (struct iovec){ r->buf + runs[i].off, runs[i].len };
        }
        h += 32;
    }
    send_reply(r, n);
}

/* Completion of every image call of a request. */
static void req_done(void *opaque, int ret)
{
    struct req *r = opaque;
    struct conn *c = r->c;
    struct export *e = c->exp;

    if (c->st == CS_DEAD) {
        req_free(&r->o);
        return;
    }
    if (ret == 0 && r->fua) {
        r->fua = false;
        ret = fq_aio_flush(e->img, req_done, r);
        if (ret == 0)
            return;
    }
    if (ret < 0) {
        if (c->s->o->verbose)
            fprintf(stderr, "fastqcow serve: client %llu: request type %u at %llu: %s\n",
                    (unsigned long long)c->id, r->rq.type, (unsigned long long)r->rq.offset,
                    strerror(-ret));
        reply_status(r, nbd_errno(ret));
        return;
    }
    if (r->rq.type == NBD_CMD_READ)
        reply_read(r);
    else
        reply_status(r, 0);
}

/* Answer a call that could not even be submitted. */
static void req_submitted(struct req *r, int ret)
{
    if (ret < 0)
        reply_status(r, nbd_errno(ret));
}

/* Whether looking for holes pays for this read. */
static bool want_holes(const struct conn *c, const struct req *r)
{
    return c->x.structured && !(r->rq.flags & NBD_CMD_FLAG_DF) && r->rq.length &&
           (c->exp->qcow2 || r->rq.length >= HOLE_MIN_READ);
}

static void start_read(struct req *r, bool cache)
{
    struct conn *c = r->c;
    struct export *e = c->exp;

    if (!cache && want_holes(c, r)) {
        int n = meta_read_runs(e, r->rq.offset, r->rq.length, r->runs, MAX_RUNS);
        r->nruns = n > 1 || (n == 1 && r->runs[0].zero) ? n : 0;
        if (r->nruns == 1) {
            reply_read(r);     /* all zeros: nothing to read */
            return;
        }
    }
    if (r->rq.length == 0) {
        req_done(r, 0);
        return;
    }
    r->buflen = r->rq.length;
    r->buf = bufpool_get(c->s->pool, r->buflen);
    if (!r->buf) {
        reply_status(r, NBD_ENOMEM);
        return;
    }
    r->aio_iov = (struct iovec){ r->buf, r->rq.length };
    req_submitted(r, fq_aio_preadv(e->img, &r->aio_iov, 1, 0, r->rq.length,
                                   e->offset + r->rq.offset, req_done, r));
}

/* Whether a buffer holds only zeros. */
static bool all_zero(const uint8_t *p, size_t len)
{
    return len == 0 || (p[0] == 0 && !memcmp(p, p + 1, len - 1));
}

/* A write's payload is in r->buf: write it (or zero the range). */
static void start_write(struct req *r)
{
    struct conn *c = r->c;
    struct export *e = c->exp;
    const struct serve_opts *o = c->s->o;

    r->fua = r->rq.flags & NBD_CMD_FLAG_FUA;
    if (r->rq.length && o->detect_zeroes != DZ_OFF && all_zero(r->buf, r->rq.length)) {
        unsigned zf = o->detect_zeroes == DZ_UNMAP && o->discard == DISCARD_UNMAP ? FQ_ZERO_MAY_UNMAP : 0;
        req_submitted(r, fq_aio_write_zeroes(e->img, e->offset + r->rq.offset, r->rq.length, zf,
                                             req_done, r));
        return;
    }
    r->aio_iov = (struct iovec){ r->buf, r->rq.length };
    req_submitted(r, fq_aio_pwritev(e->img, &r->aio_iov, 1, 0, r->rq.length,
                                    e->offset + r->rq.offset, req_done, r));
}

void xmit_payload_done(struct conn *c)
{
    struct req *r = c->rx_req;

    c->rx_req = NULL;
    c->rx_ptr = NULL;
    start_write(r);
}

void xmit_drop(struct conn *c)
{
    struct req *r = c->rx_req;

    if (!r)
        return;
    c->rx_req = NULL;
    c->rx_ptr = NULL;
    c->rx_left = 0;
    req_free(&r->o);
}

/* The commands that only need a call and a status. */
static void start_other(struct req *r)
{
    struct conn *c = r->c;
    struct export *e = c->exp;
    const struct serve_opts *o = c->s->o;
    uint64_t off = e->offset + r->rq.offset;
    int ret;

    r->fua = r->rq.flags & NBD_CMD_FLAG_FUA;
    switch (r->rq.type) {
    case NBD_CMD_FLUSH:
        r->fua = false;
        req_submitted(r, fq_aio_flush(e->img, req_done, r));
        return;
    case NBD_CMD_TRIM:
        if (o->discard != DISCARD_UNMAP || r->rq.length == 0) {
            r->fua = false;
            req_done(r, 0);
            return;
        }
        req_submitted(r, fq_aio_discard(e->img, off, r->rq.length, req_done, r));
        return;
    case NBD_CMD_WRITE_ZEROES: {
        if ((r->rq.flags & NBD_CMD_FLAG_FAST_ZERO) && !e->fast_zero) {
            reply_status(r, NBD_ENOTSUP);
            return;
        }
        if (r->rq.length == 0) {
            req_done(r, 0);
            return;
        }
        unsigned zf = !(r->rq.flags & NBD_CMD_FLAG_NO_HOLE) && o->discard == DISCARD_UNMAP
                          ? FQ_ZERO_MAY_UNMAP : 0;
        req_submitted(r, fq_aio_write_zeroes(e->img, off, r->rq.length, zf, req_done, r));
        return;
    }
    case NBD_CMD_BLOCK_STATUS:
        nbd_buf_init(&r->bs, 1u << 20);
        ret = meta_block_status(e, c->x.meta_sel, r->rq.handle, r->rq.offset, r->rq.length,
                                r->rq.flags & NBD_CMD_FLAG_REQ_ONE, &r->bs);
        if (ret < 0) {
            reply_status(r, nbd_errno(ret));
            return;
        }
        r->iov[0] = (struct iovec){ r->bs.p, r->bs.len };
        send_reply(r, 1);
        return;
    }
}

size_t xmit_input(struct conn *c, const uint8_t *in, size_t len)
{
    struct nbd_request rq;
    uint32_t payload;

    if (len < NBD_REQUEST_SIZE || !xmit_can_take(c))
        return 0;
    int v = nbd_request_decode(in, &c->x, &rq, &payload);
    if (v < 0) {
        conn_fail(c, "bad request magic");
        return 0;
    }
    if (rq.type == NBD_CMD_DISC) {
        c->disc = true;
        conn_kick(c);          /* closes once the requests in flight are answered */
        return NBD_REQUEST_SIZE;
    }
    struct req *r = calloc(1, sizeof(*r));
    if (!r) {
        conn_fail(c, "out of memory");
        return 0;
    }
    r->c = c;
    r->rq = rq;
    r->mem = REQ_OVERHEAD;
    if (!v && (rq.type == NBD_CMD_READ || rq.type == NBD_CMD_WRITE || rq.type == NBD_CMD_CACHE))
        r->mem += rq.length;
    conn_request_start(c, r->mem);
    if (v) {
        c->skip_left = payload;
        c->hold_reply = true;
        reply_status(r, (uint32_t)v);
        return NBD_REQUEST_SIZE;
    }
    switch (rq.type) {
    case NBD_CMD_READ:
        start_read(r, false);
        break;
    case NBD_CMD_CACHE:
        start_read(r, true);
        break;
    case NBD_CMD_WRITE:
        if (rq.length == 0) {
            start_write(r);
            break;
        }
        r->buflen = rq.length;
        r->buf = bufpool_get(c->s->pool, r->buflen);
        if (!r->buf) {
            c->skip_left = payload;
            c->hold_reply = true;
            reply_status(r, NBD_ENOMEM);
            break;
        }
        c->rx_req = r;
        c->rx_ptr = r->buf;
        c->rx_left = rq.length;
        break;
    default:
        start_other(r);
        break;
    }
    return NBD_REQUEST_SIZE;
}
