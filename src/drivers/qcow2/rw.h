/* rw.h: what the request state machines (rw.c: the planner, reads,
 * writes, zeroing) and their tasks (rw_task.c: the in-flight allocation
 * registry, allocations in order, tasks and their completion) share.
 * Internal to the qcow2 driver.
 * SPDX-License-Identifier: MIT
 */
#ifndef FQ_QCOW2_RW_H
#define FQ_QCOW2_RW_H

#include "crypt.h"
#include "offload.h"
#include "qcow2.h"

struct qreq {
    struct qcow2 *s;
    struct fq_req *req;
    uint64_t pos, end;
    uint64_t zfill_end;      /* write-zeroes: zeros written as data up to
                                here (zero.c) */
    struct fq_taskpool pool;
    bool sync;               /* io_sync mode */
    bool planning;           /* plan() is on the stack */
    bool in_submit;          /* completing now would be inline: defer */
    bool parked;             /* waiting on a qalloc, a table or a write-back */
    bool finished;
    uint64_t flush_seq;      /* flushes: s->wb_seq when it arrived */
    bool alloc_parked;       /* its allocating step parked: later ones queue */
    struct qreq *next_waiter;
    struct qmeta_wait mw;    /* the asynchronous context of its steps */
    struct fq_bh bh;
};

enum tkind { T_READ, T_BACKING, T_COMPRESSED, T_WRITE, T_ALLOC, T_SUB, T_FLUSH };

struct qtask {
    struct fq_req child;     /* first: the completion gets it back */
    struct qreq *q;
    enum tkind kind;
    uint64_t guest;          /* guest offset of the task's data */
    uint64_t len;
    size_t iov_off;          /* into the parent's iovec array */
    struct fq_iovb iovb;
    uint8_t *buf;            /* compressed data / fill buffers */
    uint8_t *buf2;
    struct qalloc *alloc;    /* registered range (allocating writes) */
    struct qcache_entry *l2; /* allocating writes: the L2 entry they link
                                into, pinned until then */
    uint64_t host;
    uint64_t n;              /* clusters allocated */
    bool reused;             /* T_ALLOC: the n clusters at host were the
                                zero clusters' own: linked, never freed */
    /* allocating writes: the caller's data, to redo it if bypassed */
    uint64_t wguest, wlen;
    const struct iovec *src_iov;
    int src_cnt;
    size_t src_off;
    bool src_zero;
    uint32_t sc_mask;        /* T_SUB: the subclusters written */
    /* allocating writes: head and tail fills (the current content of the
     * partially written clusters) read asynchronously before the write */
    struct fq_req fill[2];
    struct iovec fill_iov[2];
    int fills;               /* fill reads in flight */
    int fill_err;
    uint64_t wr_off, wr_len; /* the data write issued once filled */
    /* compressed reads: decompression runs on a CPU worker; so does the
     * en/decryption of encrypted data (crypt.c), in cbuf */
    struct fq_job job;
    int jret;
    uint8_t *cbuf;           /* encrypted images: the ciphertext */
    struct iovec cvec;
    size_t chead;            /* reads: bytes of cbuf before the data */
};

struct qalloc *qcow2_rw_alloc_register(struct qcow2 *s, uint64_t first, uint64_t n);
/* Make q wait for the allocating writes in flight over guest clusters
 * [first, first + n). Returns 1 when q is parked (it re-plans when the
 * allocation linked), 0 when there is nothing to wait for. A synchronous
 * request cannot wait (it must not run the loop): it goes ahead instead and
 * marks those allocations bypassed, so that each, when its data write
 * completes, discards its own clusters and rewrites its data over the new
 * state (merge_bypassed). */
int qcow2_rw_wait_allocs(struct qreq *q, uint64_t first, uint64_t n);
/* Whether an allocating write is in flight over guest clusters
 * [first, first + n). */
bool qcow2_rw_allocs_overlap(struct qcow2 *s, uint64_t first, uint64_t n);
/* 0, or QCOW2_PARKED when q must queue behind a parked allocation. */
int qcow2_rw_alloc_turn(struct qreq *q);
/* q's allocating step parked (r) inside an allocation. */
int qcow2_rw_alloc_parked(struct qreq *q, int r);
/* q's allocation is done (or given up): the queue may go on once the
 * step is over (qcow2_rw_alloc_queue_go). */
void qcow2_rw_alloc_turn_done(struct qreq *q);
/* Between steps: plan the queued allocating steps if nothing is parked. */
void qcow2_rw_alloc_queue_go(struct qcow2 *s);
/* A new task of q for [guest, guest+len), or NULL. */
struct qtask *qcow2_rw_task_new(struct qreq *q, enum tkind kind, uint64_t guest, uint64_t len);
/* Give back a task's buffers and the task. */
void qcow2_rw_task_free(struct qtask *t);
/* Issue a task's child request to `dev`. */
void qcow2_rw_task_issue(struct qtask *t, struct fq_bdev *dev, enum fq_op op, uint64_t off,
                       const struct iovec *iov, int iovcnt, size_t iov_off, uint64_t len);
/* How far a request may reach: the end of the disk, or for the VM state
 * area (FQ_REQ_VMSTATE) the end of what the L1 table maps. */
uint64_t qcow2_rw_req_limit(const struct qcow2 *s, const struct fq_req *req);
/* Issue an allocating write (T_ALLOC, T_SUB) of [host, host+len) from
 * t->iovb once its fills (head [hoff, hoff+head) and tail [toff,
 * toff+tail), guest offsets, into t->buf and t->buf2) are read. In sync
 * mode the fills are read inline. */
void qcow2_rw_alloc_issue(struct qtask *t, uint64_t hoff, uint64_t head, uint64_t toff,
                        uint64_t tail, uint64_t host, uint64_t len);
/* Complete q if its range is planned and its tasks are done. */
void qcow2_rw_maybe_finish(struct qreq *q);
/* Write zeros as data over [q->pos, q->pos + len) (len within the shared
 * zero buffer: a cluster at most, or QCOW2_ZFILL_MAX): one write step
 * (rw.c). */
#define QCOW2_ZFILL_MAX (1u << 20)
int qcow2_rw_write_zeros(struct qreq *q, uint64_t len);
/* One step of a write-zeroes or discard request (zero.c). */
int qcow2_zero_step(struct qreq *q);
/* Plan q's next steps (rw.c). */
void qcow2_rw_plan(struct qreq *q);

#endif
