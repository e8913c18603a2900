/* proto.h: the NBD protocol as pure functions over bytes, with no socket,
 * image or clock behind them, so that they can be tested and fuzzed alone:
 *
 *  - the handshake (handshake.c): the server's greeting, then the client's
 *    flags and options in, option replies out, until the client enters
 *    transmission (GO, EXPORT_NAME), asks for TLS, aborts or must be
 *    dropped;
 *  - the transmission phase (request.c): a request header decoded and
 *    checked against what was negotiated (the NBD error it earns, or a
 *    hard disconnect), and the reply headers encoded.
 *
 * The caller owns the buffers: input is consumed from a byte array, output
 * is appended to an nbd_buf whose size is bounded.
 * SPDX-License-Identifier: MIT
 */
#ifndef FQ_SERVE_PROTO_H
#define FQ_SERVE_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "nbd.h"

/* ---- output buffer ---- */

/* Bytes to send; `cap_max` bounds its growth (a failed append leaves it
 * unchanged and sets `failed`). */
struct nbd_buf {
    uint8_t *p;
    size_t len, cap, cap_max;
    bool failed;
};
void nbd_buf_init(struct nbd_buf *b, size_t cap_max);
void nbd_buf_free(struct nbd_buf *b);
/* Append n bytes; 0 or -ENOMEM. */
int nbd_buf_put(struct nbd_buf *b, const void *data, size_t n);

/* ---- what the handshake knows of the exports ---- */

/* Metadata contexts one export offers, at most this many (their IDs are
 * their index + 1 in the export's list). */
#define NBD_META_MAX 64

struct nbd_export_info {
    const char *name;
    const char *description;       /* NULL = none */
    uint64_t size;
    uint16_t tflags;               /* transmission flags, SEND_DF excluded
                                      (it depends on structured replies) */
    uint32_t block_min, block_pref, block_max;
    const char *const *meta;       /* context names ("base:allocation"...) */
    unsigned nmeta;
};

struct nbd_hs_config {
    const struct nbd_export_info *exports;
    size_t nexports;
    bool tls;                      /* FORCEDTLS: nothing before STARTTLS */
    bool shutdown;                 /* the server is stopping */
};

/* ---- handshake ---- */

/* Option data is buffered whole up to this size; a longer option is
 * skipped and refused (NBD_REP_ERR_TOO_BIG), or ends the session for
 * NBD_OPT_EXPORT_NAME. */
#define NBD_OPT_MAX (64u << 10)
#define NBD_OPT_HEADER 16

enum nbd_hs_phase { NBD_HS_FLAGS, NBD_HS_OPTIONS, NBD_HS_SKIP, NBD_HS_DONE };

/* What the caller must do after nbd_hs_input returned. */
enum nbd_hs_event {
    NBD_HS_MORE,      /* send `out`, call again with more input */
    NBD_HS_STARTTLS,  /* send `out` (the ACK) in clear, then start TLS */
    NBD_HS_GO,        /* send `out`; transmission phase on export_idx */
    NBD_HS_CLOSE,     /* send `out` (if any), then close the connection */
};

struct nbd_hs {
    enum nbd_hs_phase phase;
    bool fixed;                    /* client set FIXED_NEWSTYLE */
    bool no_zeroes;
    bool structured;               /* STRUCTURED_REPLY negotiated */
    bool tls;                      /* TLS is running (caller sets it) */
    uint32_t skip_opt;             /* NBD_HS_SKIP: the option skipped */
    uint64_t skip_left;
    int meta_export;               /* export of the last SET_META_CONTEXT, -1 */
    uint64_t meta_sel;             /* its selected contexts (bit = index) */
    int export_idx;                /* NBD_HS_GO: the export chosen */
    unsigned options;              /* options seen (for diagnostics) */
};

void nbd_hs_init(struct nbd_hs *h);
/* The server's greeting: NBDMAGIC, IHAVEOPT, handshake flags. */
int nbd_hs_greeting(struct nbd_buf *out);
/* Consume client bytes from `in`. Returns the number consumed (the rest
 * stays for the next call, or for the transmission phase after GO) and
 * sets *ev. When a whole option is not there yet, *need says how many
 * bytes from `in` the next call needs (at most NBD_OPT_HEADER +
 * NBD_OPT_MAX), else 0. */
size_t nbd_hs_input(struct nbd_hs *h, const struct nbd_hs_config *cfg,
                    const uint8_t *in, size_t len, struct nbd_buf *out,
                    enum nbd_hs_event *ev, size_t *need);

/* ---- transmission ---- */

struct nbd_request {
    uint16_t flags;
    uint16_t type;
    uint64_t handle;
    uint64_t offset;
    uint32_t length;
};

/* What a request is checked against. */
struct nbd_xmit {
    uint64_t size;
    uint16_t tflags;               /* as sent to the client */
    bool structured;
    uint64_t meta_sel;             /* contexts selected for this export */
    uint32_t max_payload;          /* READ/WRITE/CACHE length limit */
};

/* Decode and check a request header (NBD_REQUEST_SIZE bytes). Returns 0
 * (valid), an NBD error to reply with (NBD_EINVAL, NBD_EPERM,
 * NBD_ENOSPC...), or -1: a bad magic, the connection must be dropped.
 * *payload is the number of payload bytes that follow the header and must
 * be consumed whatever the verdict (WRITE's length). */
int nbd_request_decode(const uint8_t *hdr, const struct nbd_xmit *x,
                       struct nbd_request *rq, uint32_t *payload);

/* Reply headers, encoded into `p`; each returns the bytes written. */
size_t nbd_simple_reply(uint8_t p[NBD_SIMPLE_REPLY_SIZE], uint64_t handle, uint32_t error);
size_t nbd_chunk_header(uint8_t p[NBD_CHUNK_HEADER_SIZE], uint64_t handle, uint16_t flags,
                        uint16_t type, uint32_t length);
/* An NBD_REPLY_TYPE_ERROR chunk (flags DONE) with message `msg` (may be
 * NULL); `p` holds NBD_CHUNK_HEADER_SIZE + 6 + strlen(msg) bytes, the
 * message being cut at 255 bytes. */
size_t nbd_error_chunk(uint8_t *p, uint64_t handle, uint32_t error, const char *msg);
/* The NBD error for a negative errno of the library. */
uint32_t nbd_errno(int err);

#endif
