/* fuzz-nbd.c: libFuzzer target: the NBD server's protocol parser
 * (tools/serve/handshake.c and request.c) fed a client's byte stream.
 *
 * Input: byte 0 picks the server's configuration (TLS required, shutting
 * down, one to three exports, with or without qemu:allocation-depth),
 * byte 1 seeds how the stream is cut into the pieces a socket would
 * deliver; the rest is what the client sends. The handshake runs as the
 * server runs it (the receive window grows to what the parser says it
 * needs, STARTTLS is taken as done); after GO or EXPORT_NAME the rest is
 * decoded as requests, write payloads skipped.
 *
 * Checked: nothing crashes or trips a sanitizer; the parser never
 * consumes more than it was given nor asks for more than one option's
 * worth; every option reply it writes is well formed (magic, the option
 * it answers, a length that matches); output stays bounded; a request it
 * accepts lies inside the export and within the payload limit, with only
 * the flags its command and the negotiation allow.
 * SPDX-License-Identifier: MIT
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c) do { if (!(c)) abort(); } while (0)

static const char *const meta_names[] = { "base:allocation", "qemu:allocation-depth" };

/* Every option reply in out[from..len) is well formed; with `go_tail`
 * the last bytes may be EXPORT_NAME's answer (size, flags, zeros). */
static void check_replies(const struct nbd_buf *out, size_t from, bool go_tail)
{
    size_t p = from;

    while (p < out->len) {
        size_t left = out->len - p;
        if (go_tail && (left == 10 || left == 134) && nbd_get64(out->p + p) != NBD_REP_MAGIC)
            return;
        CHECK(out->len - p >= 20);
        CHECK(nbd_get64(out->p + p) == NBD_REP_MAGIC);
        uint32_t type = nbd_get32(out->p + p + 12), len = nbd_get32(out->p + p + 16);
        CHECK(out->len - p - 20 >= len);
        if (type == NBD_REP_ACK)
            CHECK(len == 0);
        if (type == NBD_REP_INFO) {
            uint16_t it = nbd_get16(out->p + p + 20);
            if (it == NBD_INFO_EXPORT)
                CHECK(len == 12);
            if (it == NBD_INFO_BLOCK_SIZE)
                CHECK(len == 14);
        }
        p += 20 + len;
    }
}

/* A tiny PRNG for the piece sizes. */
static uint32_t next(uint32_t *s)
{
    *s = *s * 1103515245u + 12345u;
    return *s >> 8;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    uint8_t cfgb = data[0];
    uint32_t seed = data[1];
    data += 2;
    size -= 2;

    struct nbd_export_info ex[3];
    static const char *const names[] = { "", "second", "a-much-longer-export-name" };
    size_t nex = 1 + (cfgb >> 2) % 3;
    for (size_t i = 0; i < nex; i++) {
        ex[i] = (struct nbd_export_info){
            .name = names[i],
            .description = i == 1 ? "described" : NULL,
            .size = i == 2 ? 4096 : (1ull << 30) + 512 * i,
            .tflags = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA |
                      (i == 1 ? NBD_FLAG_READ_ONLY : NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES |
                                                      NBD_FLAG_SEND_FAST_ZERO),
            .block_min = 1, .block_pref = 4096, .block_max = NBD_MAX_PAYLOAD,
            .meta = meta_names, .nmeta = (cfgb & 16) ? 2 : 1,
        };
    }
    struct nbd_hs_config cfg = { .exports = ex, .nexports = nex, .tls = cfgb & 1, .shutdown = cfgb & 2 };
    struct nbd_hs h;
    struct nbd_buf out;
    nbd_hs_init(&h);
    nbd_buf_init(&out, 1u << 20);
    CHECK(nbd_hs_greeting(&out) == 0 && out.len == 18);

    /* the receive window: data[start, end) */
    size_t start = 0, end = 0;
    enum nbd_hs_event ev = NBD_HS_MORE;
    for (;;) {
        size_t before = out.len, need;
        size_t used = nbd_hs_input(&h, &cfg, data + start, end - start, &out, &ev, &need);
        CHECK(used <= end - start);
        CHECK(need <= NBD_OPT_HEADER + NBD_OPT_MAX);
        CHECK(out.len <= out.cap_max);
        check_replies(&out, before, ev == NBD_HS_GO);
        start += used;
        /* the server sends what is queued: keep the buffer small */
        out.len = 0;
        if (ev == NBD_HS_CLOSE || ev == NBD_HS_GO)
            break;
        if (ev == NBD_HS_STARTTLS) {
            h.tls = true;
            continue;
        }
        if (end == size)
            break;
        size_t piece = 1 + next(&seed) % 4096;
        if (need > end - start && need - (end - start) > piece)
            piece = need - (end - start);
        end = end + piece > size ? size : end + piece;
    }
    if (ev == NBD_HS_GO) {
        CHECK(h.export_idx >= 0 && (size_t)h.export_idx < nex);
        const struct nbd_export_info *e = &ex[h.export_idx];
        struct nbd_xmit x = {
            .size = e->size,
            .tflags = (uint16_t)(e->tflags | (h.structured ? NBD_FLAG_SEND_DF : 0)),
            .structured = h.structured,
            .meta_sel = h.meta_export == h.export_idx ? h.meta_sel : 0,
            .max_payload = NBD_MAX_PAYLOAD,
        };
        size_t p = start;
        while (size - p >= NBD_REQUEST_SIZE) {
            struct nbd_request rq;
            uint32_t payload;
            int v = nbd_request_decode(data + p, &x, &rq, &payload);
            p += NBD_REQUEST_SIZE;
            if (v < 0) {
                CHECK(nbd_get32(data + p - NBD_REQUEST_SIZE) != NBD_REQUEST_MAGIC);
                break;
            }
            if (v == 0 && rq.type != NBD_CMD_DISC && rq.type != NBD_CMD_FLUSH) {
                CHECK(rq.offset <= x.size && rq.length <= x.size - rq.offset);
                if (rq.type == NBD_CMD_READ || rq.type == NBD_CMD_WRITE)
                    CHECK(rq.length <= x.max_payload);
                if (rq.type != NBD_CMD_READ && rq.type != NBD_CMD_BLOCK_STATUS)
                    CHECK(!(rq.flags & (NBD_CMD_FLAG_DF | NBD_CMD_FLAG_REQ_ONE)));
                if (x.tflags & NBD_FLAG_READ_ONLY)
                    CHECK(rq.type != NBD_CMD_WRITE && rq.type != NBD_CMD_TRIM &&
                          rq.type != NBD_CMD_WRITE_ZEROES);
                if (rq.type == NBD_CMD_BLOCK_STATUS)
                    CHECK(x.structured && x.meta_sel);
            }
            uint8_t reply[NBD_CHUNK_HEADER_SIZE + 6 + 256];
            size_t n = v > 0 ? nbd_error_chunk(reply, rq.handle, (uint32_t)v, "invalid request")
                             : nbd_simple_reply(reply, rq.handle, 0);
            CHECK(n <= sizeof(reply));
            CHECK(nbd_errno(-(int)(rq.length & 0xff)) != 0);
            if (rq.type == NBD_CMD_DISC)
                break;
            if (payload > size - p)
                break;
            p += payload;
        }
    }
    nbd_buf_free(&out);
    return 0;
}
