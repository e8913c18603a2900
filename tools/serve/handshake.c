/* handshake.c: the fixed newstyle handshake as a pure state machine (see
 * proto.h). Each call consumes whole options from the caller's bytes and
 * appends the replies; an option longer than NBD_OPT_MAX is skipped as it
 * arrives, without being buffered. Every length the client sends is
 * checked against the bytes of its option before it is used.
 *
 * With TLS configured the server is in FORCEDTLS mode: before STARTTLS
 * every option but STARTTLS and ABORT gets NBD_REP_ERR_TLS_REQD, and
 * EXPORT_NAME ends the session. A successful STARTTLS forgets what was
 * negotiated before it, as the specification requires.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"

void nbd_buf_init(struct nbd_buf *b, size_t cap_max)
{
    memset(b, 0, sizeof(*b));
    b->cap_max = cap_max;
}

void nbd_buf_free(struct nbd_buf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

int nbd_buf_put(struct nbd_buf *b, const void *data, size_t n)
{
    if (n > b->cap_max || b->len > b->cap_max - n) {
        b->failed = true;
        return -ENOMEM;
    }
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n)
            cap *= 2;
        if (cap > b->cap_max)
            cap = b->cap_max;
        uint8_t *p = realloc(b->p, cap);
        if (!p) {
            b->failed = true;
            return -ENOMEM;
        }
        b->p = p;
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->len, data, n);
    b->len += n;
    return 0;
}

void nbd_hs_init(struct nbd_hs *h)
{
    memset(h, 0, sizeof(*h));
    h->phase = NBD_HS_FLAGS;
    h->meta_export = -1;
    h->export_idx = -1;
}

int nbd_hs_greeting(struct nbd_buf *out)
{
    uint8_t g[18];

    nbd_put64(g, NBD_MAGIC);
    nbd_put64(g + 8, NBD_IHAVEOPT);
    nbd_put16(g + 16, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
    return nbd_buf_put(out, g, sizeof(g));
}

/* One option reply: header plus `len` bytes of data. */
static void reply(struct nbd_buf *out, uint32_t opt, uint32_t type, const void *data, uint32_t len)
{
    uint8_t h[20];

    nbd_put64(h, NBD_REP_MAGIC);
    nbd_put32(h + 8, opt);
    nbd_put32(h + 12, type);
    nbd_put32(h + 16, len);
    nbd_buf_put(out, h, sizeof(h));
    nbd_buf_put(out, data, len);
}

/* An error reply with a message for the human at the other end. */
static void reply_err(struct nbd_buf *out, uint32_t opt, uint32_t type, const char *msg)
{
    reply(out, opt, type, msg, (uint32_t)strlen(msg));
}

/* The export called name[0..len), or -1. */
static int find_export(const struct nbd_hs_config *cfg, const uint8_t *name, uint32_t len)
{
    for (size_t i = 0; i < cfg->nexports; i++) {
        const char *n = cfg->exports[i].name;
        if (strlen(n) == len && !memcmp(n, name, len))
            return (int)i;
    }
    return -1;
}

/* Transmission flags as this session sends them. */
static uint16_t session_tflags(const struct nbd_hs *h, const struct nbd_export_info *e)
{
    return (uint16_t)(e->tflags | (h->structured ? NBD_FLAG_SEND_DF : 0));
}

/* NBD_REP_SERVER for each export, then ACK. */
static void opt_list(const struct nbd_hs_config *cfg, uint32_t opt, struct nbd_buf *out)
{
    for (size_t i = 0; i < cfg->nexports; i++) {
        const struct nbd_export_info *e = &cfg->exports[i];
        size_t nl = strlen(e->name), dl = e->description ? strlen(e->description) : 0;
        uint8_t *d = malloc(4 + nl + dl);
        if (!d) {
            out->failed = true;
            return;
        }
        nbd_put32(d, (uint32_t)nl);
        memcpy(d + 4, e->name, nl);
        if (dl)
            memcpy(d + 4 + nl, e->description, dl);
        reply(out, opt, NBD_REP_SERVER, d, (uint32_t)(4 + nl + dl));
        free(d);
    }
    reply(out, opt, NBD_REP_ACK, NULL, 0);
}

/* One NBD_REP_INFO item. */
static void info_reply(struct nbd_buf *out, uint32_t opt, uint16_t type, const void *data, size_t len)
{
    uint8_t d[2 + NBD_MAX_STRING];

    nbd_put16(d, type);
    memcpy(d + 2, data, len);
    reply(out, opt, NBD_REP_INFO, d, (uint32_t)(2 + len));
}

/* INFO and GO: name, then a count of info requests. Returns true when GO
 * succeeded (transmission starts). */
static bool opt_info_go(struct nbd_hs *h, const struct nbd_hs_config *cfg, uint32_t opt,
                        const uint8_t *d, uint32_t len, struct nbd_buf *out)
{
    if (len < 6) {
        reply_err(out, opt, NBD_REP_ERR_INVALID, "option too short");
        return false;
    }
    uint32_t nl = nbd_get32(d);
    if (nl > len - 6 || nl > NBD_MAX_STRING) {
        reply_err(out, opt, NBD_REP_ERR_INVALID, "name length past the option");
        return false;
    }
    uint16_t nreq = nbd_get16(d + 4 + nl);
    if ((uint64_t)4 + nl + 2 + 2ull * nreq != len) {
        reply_err(out, opt, NBD_REP_ERR_INVALID, "information request count does not match the option length");
        return false;
    }
    int idx = find_export(cfg, d + 4, nl);
    if (idx < 0) {
        reply_err(out, opt, NBD_REP_ERR_UNKNOWN, "export unknown");
        return false;
    }
    const struct nbd_export_info *e = &cfg->exports[idx];
    bool want_name = false, want_desc = false;
    for (uint16_t i = 0; i < nreq; i++) {
        uint16_t t = nbd_get16(d + 4 + nl + 2 + 2 * i);
        want_name |= t == NBD_INFO_NAME;
        want_desc |= t == NBD_INFO_DESCRIPTION;
    }
    uint8_t x[14];
    nbd_put64(x, e->size);
    nbd_put16(x + 8, session_tflags(h, e));
    info_reply(out, opt, NBD_INFO_EXPORT, x, 10);
    if (want_name)
        info_reply(out, opt, NBD_INFO_NAME, e->name, strlen(e->name));
    if (want_desc && e->description)
        info_reply(out, opt, NBD_INFO_DESCRIPTION, e->description, strlen(e->description));
    nbd_put32(x, e->block_min);
    nbd_put32(x + 4, e->block_pref);
    nbd_put32(x + 8, e->block_max);
    info_reply(out, opt, NBD_INFO_BLOCK_SIZE, x, 12);
    reply(out, opt, NBD_REP_ACK, NULL, 0);
    if (opt != NBD_OPT_GO)
        return false;
    h->export_idx = idx;
    if (h->meta_export != idx)
        h->meta_sel = 0;
    return true;
}

/* Whether `query` selects context `name`: the same string, or for a list
 * a namespace prefix ending in ':' ("base:", "qemu:", "qemu:dirty-bitmap:"). */
static bool meta_match(const char *name, const uint8_t *q, uint32_t ql, bool list)
{
    size_t nl = strlen(name);

    if (ql == nl && !memcmp(name, q, ql))
        return true;
    return list && ql > 0 && ql < nl && q[ql - 1] == ':' && !memcmp(name, q, ql);
}

/* LIST_META_CONTEXT and SET_META_CONTEXT: export name, query count, the
 * queries. The whole option is checked before anything is selected. */
static void opt_meta(struct nbd_hs *h, const struct nbd_hs_config *cfg, uint32_t opt,
                     const uint8_t *d, uint32_t len, struct nbd_buf *out)
{
    bool list = opt == NBD_OPT_LIST_META_CONTEXT;

    if (!list) {
        /* replaced even when the request fails */
        h->meta_export = -1;
        h->meta_sel = 0;
    }
    if (!h->structured) {
        reply_err(out, opt, NBD_REP_ERR_INVALID, "structured replies not negotiated");
        return;
    }
    if (len < 8) {
        reply_err(out, opt, NBD_REP_ERR_INVALID, "option too short");
        return;
    }
    uint32_t nl = nbd_get32(d);
    if (nl > len - 8 || nl > NBD_MAX_STRING) {
        reply_err(out, opt, NBD_REP_ERR_INVALID, "name length past the option");
        return;
    }
    uint32_t nq = nbd_get32(d + 4 + nl), pos = 8 + nl;
    for (uint32_t i = 0; i < nq; i++) {
        if (len - pos < 4) {
            reply_err(out, opt, NBD_REP_ERR_INVALID, "query past the option");
            return;
        }
        uint32_t ql = nbd_get32(d + pos);
        if (ql > len - pos - 4 || ql > NBD_MAX_STRING) {
            reply_err(out, opt, NBD_REP_ERR_INVALID, "query length past the option");
            return;
        }
        if (!memchr(d + pos + 4, ':', ql)) {
            reply_err(out, opt, NBD_REP_ERR_INVALID, "query without a namespace");
            return;
        }
        pos += 4 + ql;
    }
    if (pos != len) {
        reply_err(out, opt, NBD_REP_ERR_INVALID, "bytes after the last query");
        return;
    }
    int idx = find_export(cfg, d + 4, nl);
    if (idx < 0) {
        reply_err(out, opt, NBD_REP_ERR_UNKNOWN, "export unknown");
        return;
    }
    const struct nbd_export_info *e = &cfg->exports[idx];
    uint64_t sel = 0;
    for (unsigned c = 0; c < e->nmeta && c < NBD_META_MAX; c++) {
        bool hit = list && nq == 0;
        pos = 8 + nl;
        for (uint32_t i = 0; i < nq && !hit; i++) {
            uint32_t ql = nbd_get32(d + pos);
            hit = meta_match(e->meta[c], d + pos + 4, ql, list);
            pos += 4 + ql;
        }
        if (hit)
            sel |= 1ull << c;
    }
    for (unsigned c = 0; c < e->nmeta && c < NBD_META_MAX; c++) {
        if (!(sel & (1ull << c)))
            continue;
        size_t ml = strlen(e->meta[c]);
        uint8_t r[4 + NBD_MAX_STRING];
        nbd_put32(r, list ? 0 : c + 1);
        memcpy(r + 4, e->meta[c], ml);
        reply(out, opt, NBD_REP_META_CONTEXT, r, (uint32_t)(4 + ml));
    }
    reply(out, opt, NBD_REP_ACK, NULL, 0);
    if (!list) {
        h->meta_export = idx;
        h->meta_sel = sel;
    }
}

/* NBD_OPT_EXPORT_NAME: the old way into transmission (no error possible). */
static bool opt_export_name(struct nbd_hs *h, const struct nbd_hs_config *cfg,
                            const uint8_t *d, uint32_t len, struct nbd_buf *out)
{
    int idx = find_export(cfg, d, len);
    uint8_t r[10 + 124];

    if (idx < 0)
        return false;
    memset(r, 0, sizeof(r));
    nbd_put64(r, cfg->exports[idx].size);
    nbd_put16(r + 8, session_tflags(h, &cfg->exports[idx]));
    nbd_buf_put(out, r, h->no_zeroes ? 10 : sizeof(r));
    h->export_idx = idx;
    if (h->meta_export != idx)
        h->meta_sel = 0;
    return true;
}

/* Handle one whole option; returns the event it causes. */
static enum nbd_hs_event option(struct nbd_hs *h, const struct nbd_hs_config *cfg, uint32_t opt,
                                const uint8_t *d, uint32_t len, struct nbd_buf *out)
{
    h->options++;
    if (!h->fixed && opt != NBD_OPT_EXPORT_NAME)
        return NBD_HS_CLOSE;       /* plain newstyle has no other option */
    if (opt == NBD_OPT_EXPORT_NAME) {
        if (cfg->shutdown || (cfg->tls && !h->tls))
            return NBD_HS_CLOSE;
        return opt_export_name(h, cfg, d, len, out) ? NBD_HS_GO : NBD_HS_CLOSE;
    }
    if (opt == NBD_OPT_ABORT) {
        reply(out, opt, NBD_REP_ACK, NULL, 0);
        return NBD_HS_CLOSE;
    }
    if (cfg->tls && !h->tls && opt != NBD_OPT_STARTTLS) {
        reply_err(out, opt, NBD_REP_ERR_TLS_REQD, "TLS required: start it with NBD_OPT_STARTTLS");
        return NBD_HS_MORE;
    }
    if (cfg->shutdown) {
        reply_err(out, opt, NBD_REP_ERR_SHUTDOWN, "server shutting down");
        return NBD_HS_MORE;
    }
    switch (opt) {
    case NBD_OPT_LIST:
        if (len)
            reply_err(out, opt, NBD_REP_ERR_INVALID, "NBD_OPT_LIST takes no data");
        else
            opt_list(cfg, opt, out);
        return NBD_HS_MORE;
    case NBD_OPT_STARTTLS:
        if (len)
            reply_err(out, opt, NBD_REP_ERR_INVALID, "NBD_OPT_STARTTLS takes no data");
        else if (!cfg->tls)
            reply_err(out, opt, NBD_REP_ERR_POLICY, "TLS not configured on this server");
        else if (h->tls)
            reply_err(out, opt, NBD_REP_ERR_INVALID, "TLS already started");
        else {
            reply(out, opt, NBD_REP_ACK, NULL, 0);
            h->structured = false;
            h->meta_export = -1;
            h->meta_sel = 0;
            return NBD_HS_STARTTLS;
        }
        return NBD_HS_MORE;
    case NBD_OPT_INFO:
    case NBD_OPT_GO:
        return opt_info_go(h, cfg, opt, d, len, out) ? NBD_HS_GO : NBD_HS_MORE;
    case NBD_OPT_STRUCTURED_REPLY:
        if (len) {
            reply_err(out, opt, NBD_REP_ERR_INVALID, "NBD_OPT_STRUCTURED_REPLY takes no data");
        } else {
            h->structured = true;
            reply(out, opt, NBD_REP_ACK, NULL, 0);
        }
        return NBD_HS_MORE;
    case NBD_OPT_LIST_META_CONTEXT:
    case NBD_OPT_SET_META_CONTEXT:
        opt_meta(h, cfg, opt, d, len, out);
        return NBD_HS_MORE;
    default:
        reply_err(out, opt, NBD_REP_ERR_UNSUP, "option not supported");
        return NBD_HS_MORE;
    }
}

size_t nbd_hs_input(struct nbd_hs *h, const struct nbd_hs_config *cfg,
                    const uint8_t *in, size_t len, struct nbd_buf *out,
                    enum nbd_hs_event *ev, size_t *need)
{
    size_t pos = 0;

    *ev = NBD_HS_MORE;
    *need = 0;
    while (pos < len || h->phase == NBD_HS_DONE) {
        if (out->failed) {
            *ev = NBD_HS_CLOSE;    /* replies past the bound: a hostile client */
            return pos;
        }
        switch (h->phase) {
        case NBD_HS_FLAGS: {
            if (len - pos < 4) {
                *need = 4;
                return pos;
            }
            uint32_t f = nbd_get32(in + pos);
            pos += 4;
            if (f & ~(uint32_t)(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES)) {
                *ev = NBD_HS_CLOSE;
                return pos;
            }
            h->fixed = f & NBD_FLAG_C_FIXED_NEWSTYLE;
            h->no_zeroes = f & NBD_FLAG_C_NO_ZEROES;
            h->phase = NBD_HS_OPTIONS;
            break;
        }
        case NBD_HS_OPTIONS: {
            if (len - pos < NBD_OPT_HEADER) {
                *need = NBD_OPT_HEADER;
                return pos;
            }
            if (nbd_get64(in + pos) != NBD_IHAVEOPT) {
                *ev = NBD_HS_CLOSE;
                return pos;
            }
            uint32_t opt = nbd_get32(in + pos + 8), olen = nbd_get32(in + pos + 12);
            if (olen > NBD_OPT_MAX) {
                if (opt == NBD_OPT_EXPORT_NAME) {
                    *ev = NBD_HS_CLOSE;
                    return pos;
                }
                pos += NBD_OPT_HEADER;
                h->phase = NBD_HS_SKIP;
                h->skip_opt = opt;
                h->skip_left = olen;
                break;
            }
            if (len - pos < NBD_OPT_HEADER + olen) {
                *need = NBD_OPT_HEADER + olen;
                return pos;
            }
            enum nbd_hs_event e = option(h, cfg, opt, in + pos + NBD_OPT_HEADER, olen, out);
            pos += NBD_OPT_HEADER + olen;
            if (e == NBD_HS_GO)
                h->phase = NBD_HS_DONE;
            if (e != NBD_HS_MORE) {
                *ev = out->failed ? NBD_HS_CLOSE : e;
                return pos;
            }
            break;
        }
        case NBD_HS_SKIP: {
            size_t n = len - pos < h->skip_left ? len - pos : (size_t)h->skip_left;
            pos += n;
            h->skip_left -= n;
            if (h->skip_left == 0) {
                h->phase = NBD_HS_OPTIONS;
                if (cfg->tls && !h->tls && h->skip_opt != NBD_OPT_STARTTLS)
                    reply_err(out, h->skip_opt, NBD_REP_ERR_TLS_REQD, "TLS required");
                else
                    reply_err(out, h->skip_opt, NBD_REP_ERR_TOO_BIG, "option too long");
            }
            break;
        }
        case NBD_HS_DONE:
            *ev = NBD_HS_GO;
            return pos;
        }
    }
    if (out->failed)
        *ev = NBD_HS_CLOSE;
    return pos;
}
