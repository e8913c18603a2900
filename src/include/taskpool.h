/* taskpool.h: the task pool (QEMU calls it the aio task pool): bounds how
 * many extents of one request are in flight and keeps the first error.
 * Owners call fq_pool_can_start() before issuing a task, fq_pool_start()
 * when they issue it and fq_pool_end() when it completes; a request is
 * finished when nothing is left to issue and fq_pool_idle() is true.
 * SPDX-License-Identifier: MIT
 */
#ifndef FQ_TASKPOOL_H
#define FQ_TASKPOOL_H

#include <stdbool.h>

/* Extents in flight per request where the measuring starts (the depth
 * controller, fq_depth_*, then follows the device: docs/PERFORMANCE.md),
 * and for callers without one. */
#define FQ_DEFAULT_WORKERS 16

struct fq_taskpool {
    unsigned max;
    unsigned busy;
    int err;          /* first error, 0 if none */
};

void fq_pool_init(struct fq_taskpool *p, unsigned max);
/* A new task may start: a slot is free and no task failed. */
bool fq_pool_can_start(const struct fq_taskpool *p);
void fq_pool_start(struct fq_taskpool *p);
/* Record a task's end; keeps the first error. */
void fq_pool_end(struct fq_taskpool *p, int ret);
/* Record an error found while planning (no task involved). */
void fq_pool_fail(struct fq_taskpool *p, int ret);
bool fq_pool_idle(const struct fq_taskpool *p);

#endif
