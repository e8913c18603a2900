/* bufpool.h: payload buffers reused by size class (bufpool.c), shared by
 * the exports (serve's request payloads, mount's long reads and writes).
 * SPDX-License-Identifier: MIT
 */
#ifndef FQ_TOOLS_BUFPOOL_H
#define FQ_TOOLS_BUFPOOL_H

#include <stddef.h>
#include <stdint.h>

struct bufpool;

/* A pool keeping at most max_cached bytes of the classes outside the
 * 2 MiB slabs on its free lists; NULL when out of memory. */
struct bufpool *bufpool_new(uint64_t max_cached);
void bufpool_free(struct bufpool *p);
/* A buffer of at least len bytes, 4 KiB aligned (O_DIRECT needs no
 * bounce); NULL when out of memory. */
void *bufpool_get(struct bufpool *p, size_t len);
void bufpool_put(struct bufpool *p, void *buf, size_t len);

#endif
