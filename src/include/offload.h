/* offload.h: a pool of CPU worker threads for work that should not run on
 * the context's thread (decompression, compression). A job's `run` executes
 * on a worker; its `done` runs later on the context's thread, from the loop.
 * The loop learns of finished jobs through an eventfd that the context's
 * engine polls like any other operation.
 * SPDX-License-Identifier: MIT
 */
#ifndef FQ_OFFLOAD_H
#define FQ_OFFLOAD_H

#include "aio.h"

struct fq_job {
    void (*run)(struct fq_job *job);      /* on a worker thread */
    void (*done)(struct fq_job *job);     /* on the context's thread */
    struct fq_job *next;
};

/* Queue a job; 0 or -errno (then nothing was queued). */
int fq_offload_submit(struct fq_ctx *ctx, struct fq_job *job);

#endif
