/* vbuf.h: caller buffers for test-random: a request's bytes split into
 * iovec elements of odd sizes, placed with canary gaps between them (or
 * all 4096-aligned, the O_DIRECT fast path), so that a request that
 * writes outside its elements, or reads from the wrong offset of the
 * vector, is seen.
 * SPDX-License-Identifier: MIT
 */
#ifndef FQ_TEST_VBUF_H
#define FQ_TEST_VBUF_H

#include <sys/uio.h>

#include "testlib.h"

#define MAX_IOV 7
#define CANARY 0xcc

/* A caller buffer: iovec elements of odd sizes placed in `mem` with canary
 * gaps between them; the request starts `iov_off` bytes into the vector. */
struct vbuf {
    uint8_t *mem;
    size_t memlen;
    struct iovec iov[MAX_IOV];
    int cnt;
    size_t iov_off;
};

static inline void vbuf_free(struct vbuf *v)
{
    free(v->mem);
    memset(v, 0, sizeof(*v));
}

/* Build a vector of `len` request bytes; `aligned` makes every element,
 * offset and length a multiple of 4096 in 4096-aligned memory (the O_DIRECT
 * fast path), otherwise sizes and placement are odd. */
static inline void vbuf_build(struct tl_rng *g, struct vbuf *v, uint64_t len, int aligned)
{
    size_t cut[MAX_IOV + 1], total, pos;
    int cnt;

    memset(v, 0, sizeof(*v));
    if (aligned) {
        v->iov_off = tl_pct(g, 50) ? 0 : 4096 * tl_range(g, 1, 2);
        total = v->iov_off + len + (tl_pct(g, 30) ? 4096 : 0);
    } else {
        v->iov_off = tl_pct(g, 30) ? 0 : tl_range(g, 1, 700);
        total = v->iov_off + len + (tl_pct(g, 30) ? tl_range(g, 1, 300) : 0);
    }
    cnt = tl_pct(g, 25) ? 1 : (int)tl_range(g, 2, MAX_IOV);
    cut[0] = 0;
    cut[cnt] = total;
    for (int i = 1; i < cnt; i++) {
        size_t c = tl_below(g, total + 1);
        if (aligned)
            c &= ~(size_t)4095;
        cut[i] = c;
    }
    /* sort the inner cut points (insertion sort: cnt is small) */
    for (int i = 2; i < cnt; i++)
        for (int j = i; j > 1 && cut[j - 1] > cut[j]; j--) {
            size_t t = cut[j];
            cut[j] = cut[j - 1];
            cut[j - 1] = t;
        }
    v->cnt = cnt;
    v->memlen = total + (size_t)cnt * (aligned ? 4096 : 16) + 64;
    if (posix_memalign((void **)&v->mem, 4096, v->memlen)) {
        perror("posix_memalign");
        exit(1);
    }
    memset(v->mem, CANARY, v->memlen);
    pos = aligned ? 0 : tl_below(g, 8);
    for (int i = 0; i < cnt; i++) {
        size_t n = cut[i + 1] - cut[i];
        v->iov[i].iov_base = v->mem + pos;
        v->iov[i].iov_len = n;
        pos += n + (aligned ? (tl_pct(g, 30) ? 4096 : 0) : tl_below(g, 16));
    }
}

/* Copy between the request's bytes [roff, roff+n) and `buf`. */
static inline void vbuf_copy(struct vbuf *v, size_t roff, uint8_t *buf, size_t n, int to_vec)
{
    size_t skip = v->iov_off + roff;

    for (int i = 0; i < v->cnt && n > 0; i++) {
        if (skip >= v->iov[i].iov_len) {
            skip -= v->iov[i].iov_len;
            continue;
        }
        size_t k = v->iov[i].iov_len - skip;
        if (k > n)
            k = n;
        uint8_t *p = (uint8_t *)v->iov[i].iov_base + skip;
        if (to_vec)
            memcpy(p, buf, k);
        else
            memcpy(buf, p, k);
        buf += k;
        n -= k;
        skip = 0;
    }
}

/* Check a completed read: the request bytes equal the model and every
 * other byte of the buffer still holds the canary. Returns 0 if good. */

#endif
