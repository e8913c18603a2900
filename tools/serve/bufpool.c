/* bufpool.c: payload buffers of reads and writes, 4 KiB aligned (so that
 * O_DIRECT images never bounce them), kept on free lists by power-of-two
 * size class once used: a busy server stops paying for allocation and page
 * faults of large buffers. What the lists hold is bounded; buffers beyond
 * that go back to the system.
 * SPDX-License-Identifier: MIT
 */
#include <stdlib.h>
#include <string.h>

#include "server.h"

#define MIN_SHIFT 12           /* 4 KiB */
#define NCLASS 14              /* up to 32 MiB */

struct free_buf {
    struct free_buf *next;
};

struct bufpool {
    struct free_buf *list[NCLASS];
    uint64_t cached, max_cached;
};

struct bufpool *bufpool_new(uint64_t max_cached)
{
    struct bufpool *p = calloc(1, sizeof(*p));

    if (p)
        p->max_cached = max_cached;
    return p;
}

void bufpool_free(struct bufpool *p)
{
    if (!p)
        return;
    for (int c = 0; c < NCLASS; c++)
        while (p->list[c]) {
            struct free_buf *b = p->list[c];
            p->list[c] = b->next;
            free(b);
        }
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

void *bufpool_get(struct bufpool *p, size_t len)
{
    int c = class_of(len);
    void *buf;

    if (c < NCLASS && p->list[c]) {
        struct free_buf *b = p->list[c];
        p->list[c] = b->next;
        p->cached -= (size_t)1 << (MIN_SHIFT + c);
        return b;
    }
    size_t sz = c < NCLASS ? (size_t)1 << (MIN_SHIFT + c) : len;
    if (posix_memalign(&buf, 4096, sz ? sz : 4096) != 0)
        return NULL;
    return buf;
}

void bufpool_put(struct bufpool *p, void *buf, size_t len)
{
    int c = class_of(len);

    if (!buf)
        return;
    size_t sz = (size_t)1 << (MIN_SHIFT + (c < NCLASS ? c : 0));
    if (c >= NCLASS || p->cached + sz > p->max_cached) {
        free(buf);
        return;
    }
    struct free_buf *b = buf;
    b->next = p->list[c];
    p->list[c] = b;
    p->cached += sz;
}
