/* common/xfer.h: the job engine of compare and convert: two images on one
 * context, up to N jobs (ranges of at most CHUNK bytes, or whole target
 * clusters for convert -c) in flight. A job reads its range from one or
 * both images; when all its reads are in, the subcommand's on_read hook
 * takes it over (compare checks it, convert writes it). The status of each
 * image is asked in runs (xfer_status), so that ranges reading as zeros
 * need no read.
 * SPDX-License-Identifier: MIT
 */
#ifndef FQ_TOOLS_XFER_H
#define FQ_TOOLS_XFER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "image.h"
#include "output.h"

#define CHUNK (1u << 20)   /* largest range of one job */

enum { J_FREE, J_READING, J_READY, J_WRITING };

struct xfer;
struct job {
    struct xfer *x;
    uint64_t off, len, seq;
    int state, pending;       /* pending: requests + 1 while being set up */
    bool zero[2];             /* this side reads as zeros and is not read */
    uint8_t *buf[2];
    struct iovec *iov;        /* [0], [1]: the reads; from [2]: the writes */
};

/* compare: img[0] vs img[1]; convert: img[0] (source) into img[1]. */
struct xfer {
    struct fq_ctx *ctx;
    struct fq_image *img[2];
    const char *name[2];
    uint64_t size[2], done, total, err_off, next_seq, write_seq;
    uint64_t mismatch, status_mismatch;   /* compare: first offsets found */
    struct fq_map_entry run[2];           /* cached status runs */
    struct job job[16];
    int njobs, busy, err, err_side;
    struct fq_depth *depth;               /* jobs in flight by measurement
                                             (NULL: njobs) */
    bool strict, ooo, zero_init, full;
    bool top_only;                        /* convert -B: what the source does not
                                             allocate itself is left to the
                                             target's backing file */
    size_t gran;                          /* convert: zero detection block */
    uint64_t ccs;                         /* convert -c: target cluster size */
    size_t chunk;                         /* job buffer size (0 = CHUNK) */
    uint8_t *arena;                       /* every job's buffers */
    size_t wmax;                          /* convert: largest data write
                                             (0: a run in one write) */
    struct progress pg;
    void (*on_read)(struct job *j);       /* all reads of a job are in */
    void *user;                           /* the subcommand's own state */
};

/* A job is done: free its slot and count its bytes as progress. */
void job_release(struct job *j);
/* Drop a reference; the last one after the reads hands the job on. */
void job_put(struct job *j);
/* A request of the job on side `side` completed with `ret`: note an
 * error, drop its reference. */
void job_cb(struct job *j, int ret, int side);
/* Read the job's range of image s into buf[s]. */
void job_read(struct job *j, int s);
/* A free job set up for [off, off+len), or NULL after running the loop. */
struct job *job_get(struct xfer *x, uint64_t off, uint64_t len);
/* Run the loop until no job is busy (or the loop fails). */
void xfer_drain(struct xfer *x);
/* The status of image s at `off`: its flags, and 0x100 if the run reaches
 * the end of the image; *len the rest of the run. Returns 0 or a negative
 * errno. */
int xfer_status(struct xfer *x, int s, uint64_t off, uint64_t *len, unsigned *st);
/* Open image s on the shared context (made on first use). Returns 0 or
 * -1 after printing the error. */
int xfer_open(struct xfer *x, int s, struct fq_open_opts *o);
/* Allocate nbuf buffers and niov iovecs per job. Returns 0 or -1 after
 * printing the error. */
int xfer_alloc(struct xfer *x, int nbuf, size_t niov);
/* Close what xfer_open and xfer_alloc set up. Returns the result of
 * closing (flushing) the target. */
int xfer_close(struct xfer *x);
/* Whether n bytes at p are all zero. */
bool img_is_zero(const uint8_t *p, size_t n);

#endif
