/* util.c: helpers declared in util.h.
 * SPDX-License-Identifier: MIT
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

#include "util.h"

void fq_seterr(char *err, const char *fmt, ...)
{
    va_list ap;

    if (!err)
        return;
    va_start(ap, fmt);
    vsnprintf(err, FQ_ERR_MAX, fmt, ap);
    va_end(ap);
}

void *fq_memalign(size_t size)
{
    void *p = NULL;

    if (posix_memalign(&p, FQ_MEM_ALIGN, size ? size : 1))
        return NULL;
    return p;
}

void *fq_zalign(size_t size)
{
    void *p = fq_memalign(size);

    if (p)
        memset(p, 0, size);
    return p;
}

#define ZERO_BUF_SIZE (4u << 20)
static _Alignas(FQ_MEM_ALIGN) const uint8_t zero_buf[ZERO_BUF_SIZE];

const void *fq_zero_buffer(size_t size)
{
    return size <= ZERO_BUF_SIZE ? zero_buf : NULL;
}

size_t fq_iov_size(const struct iovec *iov, int cnt)
{
    size_t n = 0;

    for (int i = 0; i < cnt; i++)
        n += iov[i].iov_len;
    return n;
}

/* Walk the iovec range [off, off+len) calling fn on each contiguous piece. */
#define IOV_WALK(iov, cnt, off, len, BODY)                                     \
    do {                                                                       \
        size_t o_ = (off), l_ = (len), done_ = 0;                              \
        for (int i_ = 0; i_ < (cnt) && l_ > 0; i_++) {                         \
            if (o_ >= (iov)[i_].iov_len) { o_ -= (iov)[i_].iov_len; continue; }\
            size_t n_ = FQ_MIN((iov)[i_].iov_len - o_, l_);                    \
            uint8_t *p_ = (uint8_t *)(iov)[i_].iov_base + o_;                  \
            BODY;                                                              \
            done_ += n_; l_ -= n_; o_ = 0; (void)done_;                        \
        }                                                                      \
    } while (0)

void fq_iov_to_buf(const struct iovec *iov, int cnt, size_t off, void *buf, size_t len)
{
    IOV_WALK(iov, cnt, off, len, memcpy((uint8_t *)buf + done_, p_, n_));
}

void fq_iov_from_buf(const struct iovec *iov, int cnt, size_t off, const void *buf, size_t len)
{
    IOV_WALK(iov, cnt, off, len, memcpy(p_, (const uint8_t *)buf + done_, n_));
}

void fq_iov_memset(const struct iovec *iov, int cnt, size_t off, int c, size_t len)
{
    IOV_WALK(iov, cnt, off, len, memset(p_, c, n_));
}

void fq_iovb_init(struct fq_iovb *b)
{
    b->v = b->inl;
    b->cnt = 0;
    b->cap = (int)FQ_ARRAY_SIZE(b->inl);
}

void fq_iovb_free(struct fq_iovb *b)
{
    if (b->v != b->inl)
        free(b->v);
    fq_iovb_init(b);
}

int fq_iovb_add(struct fq_iovb *b, void *base, size_t len)
{
    if (len == 0)
        return 0;
    if (b->cnt > 0 && (uint8_t *)b->v[b->cnt - 1].iov_base + b->v[b->cnt - 1].iov_len == base) {
        b->v[b->cnt - 1].iov_len += len;
        return 0;
    }
    if (b->cnt == b->cap) {
        int nc = b->cap * 2;
        struct iovec *nv = malloc((size_t)nc * sizeof(*nv));
        if (!nv)
            return -ENOMEM;
        memcpy(nv, b->v, (size_t)b->cnt * sizeof(*nv));
        if (b->v != b->inl)
            free(b->v);
        b->v = nv;
        b->cap = nc;
    }
    b->v[b->cnt].iov_base = base;
    b->v[b->cnt].iov_len = len;
    b->cnt++;
    return 0;
}

int fq_iovb_add_slice(struct fq_iovb *b, const struct iovec *iov, int cnt, size_t off, size_t len)
{
    int r = 0;

    IOV_WALK(iov, cnt, off, len, if ((r = fq_iovb_add(b, p_, n_)) < 0) return r);
    return r;
}

uint64_t fq_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int fq_parse_size(const char *s, uint64_t *out)
{
    char *end;
    double v;
    uint64_t mult = 1;

    if (!s || !*s)
        return -EINVAL;
    errno = 0;
    v = strtod(s, &end);
    if (errno || end == s || v < 0)
        return -EINVAL;
    switch (*end) {
    case '\0': case 'b': case 'B': break;
    case 'k': case 'K': mult = 1ull << 10; break;
    case 'm': case 'M': mult = 1ull << 20; break;
    case 'g': case 'G': mult = 1ull << 30; break;
    case 't': case 'T': mult = 1ull << 40; break;
    case 'p': case 'P': mult = 1ull << 50; break;
    case 'e': case 'E': mult = 1ull << 60; break;
    default: return -EINVAL;
    }
    if (*end && end[1] != '\0' && !((end[1] == 'i' || end[1] == 'B') && (end[2] == '\0' || (end[1] == 'i' && end[2] == 'B' && end[3] == '\0'))))
        return -EINVAL;
    v *= (double)mult;
    if (v >= 18446744073709551615.0)
        return -ERANGE;
    if (v != (double)(uint64_t)v && mult == 1)
        return -EINVAL;
    *out = (uint64_t)v;
    return 0;
}

#define HUGE_FROM (256u << 10)
#define HUGE_SIZE (2u << 20)

void *fq_buf_alloc(size_t len)
{
    void *p = NULL;

    if (len < HUGE_FROM)
        return posix_memalign(&p, 4096, len ? len : 1) ? NULL : p;
    size_t sz = (len + HUGE_SIZE - 1) & ~(size_t)(HUGE_SIZE - 1);
    if (posix_memalign(&p, HUGE_SIZE, sz))
        return NULL;
    /* a hint: without transparent huge pages it is plain memory */
    (void)madvise(p, sz, MADV_HUGEPAGE);
    return p;
}

void fq_buf_free(void *buf)
{
    free(buf);
}

const char *fq_version(void)
{
    return "0.1.0";
}
