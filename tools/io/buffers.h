/* io/buffers.h: the request buffers of `fastqcow io`.
 *
 * A plain buffer is what qemu-io uses: one 4 KiB-aligned piece per length
 * (or 16 bytes past the alignment, for -m).
 * A guarded buffer (used with -R on vectored commands) is an iovec array
 * of odd-sized pieces cut from one allocation with CANARY bytes between
 * them; the request starts part-way into the first iovec (non-zero
 * iov_off) and one more iovec lies past its end. After a read, every byte
 * outside the request's pieces must still be CANARY.
 * Only requests.c includes this.
 * SPDX-License-Identifier: MIT
 */
#ifndef FQ_TOOLS_IO_BUFFERS_H
#define FQ_TOOLS_IO_BUFFERS_H

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#include "../common/seeded.h"
#include "format.h"

#define CANARY 0xa5 /* guard bytes of a guarded buffer */


/* The memory of one request: plain (one 4 KiB-aligned buffer per length,
 * as qemu-io) or guarded (see the top of the file). */
struct iobuf {
    uint8_t *mem;
    size_t memlen;
    struct iovec *iov;
    int cnt;
    size_t iov_off;
    size_t len;
    bool guarded;
};

static void iobuf_free(struct iobuf *b)
{
    free(b->mem);
    free(b->iov);
    memset(b, 0, sizeof(*b));
}

/* `misalign` (qemu-io -m) starts each piece 16 bytes past its alignment. */
static int iobuf_plain(struct iobuf *b, const int64_t *lens, int n, int fill, bool misalign)
{
    size_t total = 0, skew = misalign ? 16 : 0;
    void *mem;

    memset(b, 0, sizeof(*b));
    for (int i = 0; i < n; i++)
        total += ((size_t)lens[i] + skew + 4095) & ~(size_t)4095;
    b->iov = calloc((size_t)n, sizeof(*b->iov));
    if (!b->iov || posix_memalign(&mem, 4096, total ? total : 1)) {
        free(b->iov);
        return -ENOMEM;
    }
    b->mem = mem;
    b->memlen = total;
    size_t pos = 0;
    for (int i = 0; i < n; i++) {
        b->iov[i].iov_base = b->mem + pos + skew;
        b->iov[i].iov_len = (size_t)lens[i];
        pos += ((size_t)lens[i] + skew + 4095) & ~(size_t)4095;
        b->len += (size_t)lens[i];
    }
    b->cnt = n;
    memset(b->mem, fill, total);
    return 0;
}

/* Guarded layout: [head][piece][gap][piece][gap]...[tail]; iov[0] covers
 * head + first piece and iov_off skips the head; the tail is one more
 * iovec beyond the request. Pieces have odd sizes cycling through `cyc`,
 * scaled so that a large request stays under ~300 iovecs. */
static int iobuf_guarded(struct iobuf *b, const int64_t *lens, int n)
{
    static const size_t cyc[] = { 1, 3, 511, 4097, 65535, 13, 8191, 129 };
    enum { HEAD = 13, GAP = 3, TAIL = 17 };
    size_t total = 0, scale, pieces = 0;

    memset(b, 0, sizeof(*b));
    for (int i = 0; i < n; i++)
        total += (size_t)lens[i];
    scale = total / (256 * 9810) + 1;
    for (int pass = 0; pass < 2; pass++) {
        size_t pos = HEAD, k = 0;
        int cnt = 0;
        for (int i = 0; i < n; i++)
            for (size_t rem = (size_t)lens[i]; rem > 0; k++) {
                size_t c = (cyc[k % 8] * scale) | 1;
                if (c > rem)
                    c = rem;
                if (pass) {
                    if (cnt == 0) {
                        b->iov[0].iov_base = b->mem;
                        b->iov[0].iov_len = HEAD + c;
                    } else {
                        b->iov[cnt].iov_base = b->mem + pos;
                        b->iov[cnt].iov_len = c;
                    }
                }
                cnt++;
                pos += c + GAP;
                rem -= c;
            }
        if (!pass) {
            pieces = (size_t)cnt;
            b->memlen = pos + TAIL;
            b->mem = malloc(b->memlen);
            b->iov = calloc(pieces + 2, sizeof(*b->iov));
            if (!b->mem || !b->iov) {
                iobuf_free(b);
                return -ENOMEM;
            }
            memset(b->mem, CANARY, b->memlen);
        } else {
            if (cnt == 0) {
                b->iov[0].iov_base = b->mem;
                b->iov[0].iov_len = HEAD;
                cnt = 1;
            }
            b->iov[cnt].iov_base = b->mem + pos;
            b->iov[cnt].iov_len = TAIL;
            b->cnt = cnt + 1;
        }
    }
    b->iov_off = HEAD;
    b->len = total;
    b->guarded = true;
    return 0;
}

struct walk_arg {
    uint64_t seed, off;
    int byte;
    size_t lo, hi, bad;      /* range to check, first bad position */
    uint8_t *out;
    const uint8_t *mem;
    size_t cursor;
};

static int w_fill_byte(uint8_t *p, size_t n, size_t pos, void *arg)
{
    memset(p, ((struct walk_arg *)arg)->byte, n);
    return 0;
}

static int w_fill_seed(uint8_t *p, size_t n, size_t pos, void *arg)
{
    struct walk_arg *w = arg;

    fqio_fill_seed(w->seed, w->off + pos, p, n);
    return 0;
}

static int w_verify_seed(uint8_t *p, size_t n, size_t pos, void *arg)
{
    struct walk_arg *w = arg;
    size_t i = fqio_verify_seed(w->seed, w->off + pos, p, n);

    if (i < n) {
        w->bad = pos + i;
        return 1;
    }
    return 0;
}

static int w_verify_byte(uint8_t *p, size_t n, size_t pos, void *arg)
{
    struct walk_arg *w = arg;
    size_t a = pos > w->lo ? pos : w->lo, e = pos + n < w->hi ? pos + n : w->hi;

    for (size_t i = a; i < e; i++)
        if (p[i - pos] != w->byte) {
            w->bad = i;
            return 1;
        }
    return 0;
}

static int w_copy(uint8_t *p, size_t n, size_t pos, void *arg)
{
    memcpy(((struct walk_arg *)arg)->out + pos, p, n);
    return 0;
}

/* Everything between the request's pieces must still be CANARY. */
static int w_guard(uint8_t *p, size_t n, size_t pos, void *arg)
{
    struct walk_arg *w = arg;

    for (size_t i = w->cursor; i < (size_t)(p - w->mem); i++)
        if (w->mem[i] != CANARY) {
            w->bad = i;
            return 1;
        }
    w->cursor = (size_t)(p - w->mem) + n;
    return 0;
}

static int iobuf_walk(const struct iobuf *b, fqio_piece_fn *fn, struct walk_arg *w)
{
    return fqio_iov_walk(b->iov, b->cnt, b->iov_off, b->len, fn, w);
}

/* Returns the position of the first changed guard byte in mem, or -1. */
static ssize_t iobuf_guard_check(const struct iobuf *b)
{
    struct walk_arg w = { .mem = b->mem };

    if (iobuf_walk(b, w_guard, &w))
        return (ssize_t)w.bad;
    for (size_t i = w.cursor; i < b->memlen; i++)
        if (b->mem[i] != CANARY)
            return (ssize_t)i;
    return -1;
}

/* A linear copy of the request's bytes (caller frees). */
static uint8_t *iobuf_linear(const struct iobuf *b)
{
    struct walk_arg w = { .out = malloc(b->len ? b->len : 1) };

    if (w.out)
        iobuf_walk(b, w_copy, &w);
    return w.out;
}

/* What a buffer holds: a pattern byte, seeded content (R) or, for a
 * write, the bytes of a file (src) repeated. */
struct content {
    bool R;
    int pattern;
    uint64_t seed;
    const char *src;
};

/* Fill a write buffer for guest offset `off`. Returns 0 or -errno (printed). */
static int iobuf_fill(struct iobuf *b, const struct content *o, int64_t off)
{
    struct walk_arg w = { .seed = o->seed, .off = (uint64_t)off, .byte = o->pattern };

    if (o->R) {
        iobuf_walk(b, w_fill_seed, &w);
        return 0;
    }
    if (!o->src) {
        iobuf_walk(b, w_fill_byte, &w);
        return 0;
    }
    /* -s: the file's bytes, repeated to fill the buffer */
    int fd = open(o->src, O_RDONLY);
    if (fd < 0) {
        fprintf(stderr, "%s: %s\n", o->src, strerror(errno));
        return -errno;
    }
    uint8_t *p = b->iov[0].iov_base;
    size_t got = 0;
    while (got < b->len) {
        ssize_t r = read(fd, p + got, b->len - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = errno;
            fprintf(stderr, "%s: %s\n", o->src, strerror(e));
            close(fd);
            return -e;
        }
        if (r == 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    if (got == 0 && b->len) {
        fprintf(stderr, "%s: file is empty\n", o->src);
        return -EINVAL;
    }
    for (size_t i = got; i < b->len; i++)
        p[i] = p[i - got];
    return 0;
}

/* Check a completed read of guest offset `off`: bytes [pat_off, pat_off +
 * pat_len) against the pattern byte if `P`, everything against the seeded
 * content if o->R, and the guard bytes. Prints qemu-io's failure line.
 * Returns 0 or -EINVAL. */
static int iobuf_verify(const struct iobuf *b, const struct content *o, bool P, int64_t off,
                        int64_t pat_off, int64_t pat_len)
{
    struct walk_arg w = { .seed = o->seed, .off = (uint64_t)off, .byte = o->pattern };
    int r = 0;

    if (P) {
        w.lo = (size_t)pat_off;
        w.hi = (size_t)(pat_off + pat_len);
        if (iobuf_walk(b, w_verify_byte, &w)) {
            printf("Pattern verification failed at offset %" PRId64 ", %" PRId64 " bytes\n",
                   off + pat_off, pat_len);
            r = -EINVAL;
        }
    }
    if (o->R && iobuf_walk(b, w_verify_seed, &w)) {
        uint8_t *lin = iobuf_linear(b);
        printf("Pattern verification failed at offset %" PRId64 ", %zu bytes\n", off, b->len);
        if (lin)
            printf("First mismatch at offset %" PRIu64 ": expected 0x%02x, found 0x%02x\n",
                   (uint64_t)off + w.bad, fqio_byte(o->seed, (uint64_t)off + w.bad), lin[w.bad]);
        free(lin);
        r = -EINVAL;
    }
    if (b->guarded) {
        ssize_t g = iobuf_guard_check(b);
        if (g >= 0) {
            printf("Buffer modified outside the request (guard byte %zd of the iovec memory)\n", g);
            r = -EINVAL;
        }
    }
    return r;
}

static void iobuf_dump(const struct iobuf *b, int64_t off)
{
    uint8_t *lin = iobuf_linear(b);

    if (lin)
        dump_buffer(lin, off, b->len);
    free(lin);
}

#endif
