/* util.h: small helpers shared by every module: byte order, checked
 * arithmetic, alignment, error messages, iovec slicing, growable vectors.
 * SPDX-License-Identifier: MIT
 */
#ifndef FQ_UTIL_H
#define FQ_UTIL_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include "fastqcow.h"

#define FQ_MIN(a, b) ((a) < (b) ? (a) : (b))
#define FQ_MAX(a, b) ((a) > (b) ? (a) : (b))
#define FQ_DIV_UP(a, b) (((a) + (b) - 1) / (b))
#define FQ_ALIGN_DOWN(a, b) ((a) & ~((__typeof__(a))(b) - 1))
#define FQ_ALIGN_UP(a, b) FQ_ALIGN_DOWN((a) + (b) - 1, (b))
#define FQ_IS_ALIGNED(a, b) (((a) & ((__typeof__(a))(b) - 1)) == 0)
#define FQ_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define FQ_UNUSED __attribute__((unused))
#define FQ_PRINTF(a, b) __attribute__((format(printf, a, b)))
#define CLEANUP_FREE __attribute__((cleanup(fq_cleanup_free)))

/* Memory alignment used for every buffer that may reach O_DIRECT. */
#define FQ_MEM_ALIGN 4096

static inline void fq_cleanup_free(void *p) { free(*(void **)p); }

/* ---- byte order: the on-disk format is big-endian ---- */
static inline uint16_t fq_be16(const void *p)
{
    const uint8_t *b = p;
    return (uint16_t)(b[0] << 8 | b[1]);
}
static inline uint32_t fq_be32(const void *p)
{
    const uint8_t *b = p;
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}
static inline uint64_t fq_be64(const void *p)
{
    return (uint64_t)fq_be32(p) << 32 | fq_be32((const uint8_t *)p + 4);
}
static inline void fq_put_be16(void *p, uint16_t v)
{
    uint8_t *b = p;
    b[0] = (uint8_t)(v >> 8); b[1] = (uint8_t)v;
}
static inline void fq_put_be32(void *p, uint32_t v)
{
    uint8_t *b = p;
    b[0] = (uint8_t)(v >> 24); b[1] = (uint8_t)(v >> 16);
    b[2] = (uint8_t)(v >> 8); b[3] = (uint8_t)v;
}
static inline void fq_put_be64(void *p, uint64_t v)
{
    fq_put_be32(p, (uint32_t)(v >> 32));
    fq_put_be32((uint8_t *)p + 4, (uint32_t)v);
}

/* ---- checked arithmetic for values computed from on-disk data ---- */
/* Each returns true on overflow. */
static inline bool fq_add_ovf(uint64_t a, uint64_t b, uint64_t *r)
{
    return __builtin_add_overflow(a, b, r);
}
static inline bool fq_mul_ovf(uint64_t a, uint64_t b, uint64_t *r)
{
    return __builtin_mul_overflow(a, b, r);
}

/* ---- errors ---- */
/* Format a message into an FQ_ERR_MAX buffer (no-op if err is NULL). */
/* qemu's size syntax (decimal or hex, a fraction with a suffix of k, M,
 * G, T, P or E). 0, -EINVAL (not a size) or -ERANGE (2^64 or more). */
int fq_qsize_parse(const char *v, uint64_t *out);
/* qemu's booleans: 1 (on, yes, true, y), 0 (off, no, false, n) or -1. */
int fq_bool_parse(const char *v);
void fq_seterr(char *err, const char *fmt, ...) FQ_PRINTF(2, 3);

/* ---- memory ---- */
/* Aligned allocation for I/O buffers; NULL on failure. Free with free(). */
void *fq_memalign(size_t size);
void *fq_zalign(size_t size);
/* A shared, read-only buffer of zeros of at least `size` bytes (<= 4 MiB). */
const void *fq_zero_buffer(size_t size);

/* ---- iovec helpers ---- */
/* Total length of an iovec array. */
size_t fq_iov_size(const struct iovec *iov, int cnt);
/* Copy between a flat buffer and the iovec range [off, off+len). */
void fq_iov_to_buf(const struct iovec *iov, int cnt, size_t off, void *buf, size_t len);
void fq_iov_from_buf(const struct iovec *iov, int cnt, size_t off, const void *buf, size_t len);
void fq_iov_memset(const struct iovec *iov, int cnt, size_t off, int c, size_t len);

/* A growable iovec array with inline storage for the common small case. */
struct fq_iovb {
    struct iovec *v;
    int cnt, cap;
    struct iovec inl[8];
};
void fq_iovb_init(struct fq_iovb *b);
void fq_iovb_free(struct fq_iovb *b);
int fq_iovb_add(struct fq_iovb *b, void *base, size_t len);
/* Append the slice [off, off+len) of an iovec array. */
int fq_iovb_add_slice(struct fq_iovb *b, const struct iovec *iov, int cnt, size_t off, size_t len);

/* ---- growable vector ---- */
#define FQ_VECTOR(name, type)                                                  \
    struct name { type *ptr; size_t len, cap; };                               \
    static inline int name##_push(struct name *v, type e)                      \
    {                                                                          \
        if (v->len == v->cap) {                                                \
            size_t nc = v->cap ? v->cap * 2 : 16;                              \
            type *np = realloc(v->ptr, nc * sizeof(type));                     \
            if (!np) return -ENOMEM;                                           \
            v->ptr = np; v->cap = nc;                                          \
        }                                                                      \
        v->ptr[v->len++] = e;                                                  \
        return 0;                                                              \
    }                                                                          \
    static inline void name##_reset(struct name *v)                            \
    {                                                                          \
        free(v->ptr); v->ptr = NULL; v->len = v->cap = 0;                      \
    }

/* ---- free lists ----
 * Objects of one size reused instead of malloc/free on the request path
 * (one owner, one thread). fq_fl_get returns an object that is not
 * cleared, or NULL without memory; at most `max` are kept. */
struct fq_freelist {
    void *head;
    unsigned n, max;
    size_t size;
};
static inline void fq_fl_init(struct fq_freelist *fl, size_t size, unsigned max)
{
    fl->head = NULL;
    fl->n = 0;
    fl->max = max;
    fl->size = size < sizeof(void *) ? sizeof(void *) : size;
}
static inline void *fq_fl_get(struct fq_freelist *fl)
{
    void *p = fl->head;

    if (!p)
        return malloc(fl->size);
    fl->head = *(void **)p;
    fl->n--;
    return p;
}
static inline void fq_fl_put(struct fq_freelist *fl, void *p)
{
    if (!p)
        return;
    if (fl->n >= fl->max) {
        free(p);
        return;
    }
    *(void **)p = fl->head;
    fl->head = p;
    fl->n++;
}
/* Free every kept object. */
static inline void fq_fl_drain(struct fq_freelist *fl)
{
    while (fl->head) {
        void *p = fl->head;
        fl->head = *(void **)p;
        free(p);
    }
    fl->n = 0;
}

/* Monotonic time in nanoseconds. */
uint64_t fq_now_ns(void);

#endif
