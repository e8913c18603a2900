/* bufpool.c: payload buffers of reads and writes, 4 KiB aligned (so that
 * O_DIRECT images never bounce them), kept on free lists by power-of-two
 * size class once used: a busy export stops paying for allocation and page
 * faults of large buffers.
 *
 * The classes from 64 KiB to 1 MiB are carved from 2 MiB slabs of
 * fq_buf_alloc (huge pages where the system gives them): such a buffer is
 * physically contiguous, so a direct read or write of it reaches the disk
 * as one segment instead of one per 4 KiB page (docs/PERFORMANCE.md,
 * "Workers"). Slabs stay until the pool is freed; what they hold is bounded
 * by the most the server has in use at once (its memory cap). Buffers of
 * the other classes are kept up to a bound and beyond it go back to the
 * system; from 2 MiB up they are fq_buf_alloc'd too.
 * SPDX-License-Identifier: MIT
 */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "fastqcow.h"
#include "bufpool.h"

#define MIN_SHIFT 12           /* 4 KiB */
#define NCLASS 14              /* up to 32 MiB */
#define SLAB_SHIFT 21          /* 2 MiB */
#define SLAB_MIN 4             /* 64 KiB: the smallest class carved */

struct free_buf {
    struct free_buf *next;
};

struct bufpool {
    struct free_buf *list[NCLASS];
    uint64_t cached, max_cached;
    void **slabs;
    size_t nslabs, cap;
};

struct bufpool *bufpool_new(uint64_t max_cached)
{
    struct bufpool *p = calloc(1, sizeof(*p));

    if (p)
        p->max_cached = max_cached;
    return p;
}

static bool slabbed(int c)
{
    return c >= SLAB_MIN && MIN_SHIFT + c < SLAB_SHIFT;
}

void bufpool_free(struct bufpool *p)
{
    if (!p)
        return;
    for (int c = 0; c < NCLASS; c++)
        while (!slabbed(c) && p->list[c]) {
            struct free_buf *b = p->list[c];
            p->list[c] = b->next;
            fq_buf_free(b);
        }
    for (size_t i = 0; i < p->nslabs; i++)
        fq_buf_free(p->slabs[i]);
    free(p->slabs);
    free(p);
}

/* The size class of a length: the smallest 4 KiB << c that holds it. */
static int class_of(size_t len)
{
    int c = 0;

    while (c < NCLASS && ((size_t)1 << (MIN_SHIFT + c)) < len)
        c++;
    return c;
}

/* A new slab for class c: every buffer but the first goes on its list. */
static void *carve(struct bufpool *p, int c)
{
    size_t sz = (size_t)1 << (MIN_SHIFT + c), n = ((size_t)1 << SLAB_SHIFT) / sz;

    if (p->nslabs == p->cap) {
        size_t nc = p->cap ? p->cap * 2 : 8;
        void **ns = realloc(p->slabs, nc * sizeof(*ns));
        if (!ns)
            return NULL;
        p->slabs = ns;
        p->cap = nc;
    }
    uint8_t *s = fq_buf_alloc((size_t)1 << SLAB_SHIFT);
    if (!s)
        return NULL;
    p->slabs[p->nslabs++] = s;
    for (size_t i = n; i-- > 1;) {
        struct free_buf *b = (struct free_buf *)(s + i * sz);
        b->next = p->list[c];
        p->list[c] = b;
    }
    return s;
}

void *bufpool_get(struct bufpool *p, size_t len)
{
    int c = class_of(len);

    if (c < NCLASS && p->list[c]) {
        struct free_buf *b = p->list[c];
        p->list[c] = b->next;
        if (!slabbed(c))
            p->cached -= (size_t)1 << (MIN_SHIFT + c);
        return b;
    }
    if (slabbed(c))
        return carve(p, c);
    size_t sz = c < NCLASS ? (size_t)1 << (MIN_SHIFT + c) : len;
    return fq_buf_alloc(sz ? sz : 4096);
}

void bufpool_put(struct bufpool *p, void *buf, size_t len)
{
    int c = class_of(len);

    if (!buf)
        return;
    struct free_buf *b = buf;
    if (slabbed(c)) {
        b->next = p->list[c];
        p->list[c] = b;
        return;
    }
    size_t sz = (size_t)1 << (MIN_SHIFT + (c < NCLASS ? c : 0));
    if (c >= NCLASS || p->cached + sz > p->max_cached) {
        fq_buf_free(buf);
        return;
    }
    b->next = p->list[c];
    p->list[c] = b;
    p->cached += sz;
}
