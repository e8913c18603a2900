/* testdev.h: block devices for testing failure paths.
 *
 * fault:  a pass-through device that counts the operations it sees and
 *         fails the Nth one of a chosen kind (reads, writes, flushes,
 *         discards, writes with a given tag, or any), once or from then on.
 * record: a pass-through device that logs every write (offset and data),
 *         write-zeroes, discard, truncate and flush into a log that outlives
 *         it; the replayer rebuilds the storage as a power loss could have
 *         left it after any prefix of the log, including reordered and torn
 *         (512-byte sector granularity) writes since the last flush.
 *
 * Both are drivers like any other: they sit under a format driver or under
 * its file, and forward everything they do not fail to their child. With
 * FQ_TESTDEV_BORROW they do not close their child, so a test can reopen the
 * storage underneath after closing the stack above.
 * SPDX-License-Identifier: MIT
 */
#ifndef FQ_BDEV_TEST_H
#define FQ_BDEV_TEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "driver.h"

/* In-memory device (tests, fuzzing): starts with a copy of `data` (may be
 * NULL) of `size` bytes; writes may grow it up to `max_size`. */
int fq_mem_open(struct fq_ctx *ctx, const void *data, size_t size, size_t max_size,
                struct fq_bdev **out);

/* Flags for fq_fault_open / fq_record_open. */
#define FQ_TESTDEV_BORROW 1u   /* closing the device leaves the child open */

/* ---- fault injection ---- */

enum fq_fault_kind {
    FQ_FAULT_NONE = 0,
    FQ_FAULT_READ,       /* FQ_OP_READ */
    FQ_FAULT_WRITE,      /* FQ_OP_WRITE and FQ_OP_WRITE_ZEROES */
    FQ_FAULT_FLUSH,
    FQ_FAULT_DISCARD,
    FQ_FAULT_TAG,        /* writes carrying `tag` (enum fq_tag) */
    FQ_FAULT_ANY,        /* every operation */
};

struct fq_fault_spec {
    enum fq_fault_kind kind;
    unsigned tag;        /* FQ_FAULT_TAG: the tag to match */
    uint64_t nth;        /* fail the nth matching op counted from arming (1-based) */
    int err;             /* negative errno returned: -EIO, -ENOSPC ... */
    bool sticky;         /* fail every matching op from the nth on */
};

/* Operation counts since the device was opened or last armed. */
struct fq_fault_counts {
    uint64_t reads, writes, flushes, discards, any;
    uint64_t tags[8];    /* writes by tag (FQ_TAG_DATA .. FQ_TAG_OTHER_META) */
    uint64_t injected;   /* operations failed on purpose */
};

int fq_fault_open(struct fq_bdev *child, unsigned flags, struct fq_bdev **out);
/* Set the fault (kind FQ_FAULT_NONE disarms) and reset the counts. */
void fq_fault_arm(struct fq_bdev *bs, const struct fq_fault_spec *spec);
void fq_fault_counts(struct fq_bdev *bs, struct fq_fault_counts *out);
/* Keep *out equal to the counts from now on, also after the device was
 * closed (a stack closes its devices with its top). */
void fq_fault_mirror(struct fq_bdev *bs, struct fq_fault_counts *out);
/* Matching operations seen so far for `kind` (and `tag` for FQ_FAULT_TAG). */
uint64_t fq_fault_count(const struct fq_fault_counts *c, enum fq_fault_kind kind, unsigned tag);

/* ---- recording and crash replay ---- */

enum fq_rec_kind {
    FQ_REC_WRITE,
    FQ_REC_ZERO,         /* write-zeroes (and discard: reads may become zero) */
    FQ_REC_FLUSH,
    FQ_REC_TRUNCATE,
};

struct fq_rec {
    enum fq_rec_kind kind;
    unsigned tag;        /* FQ_REC_WRITE: the request's tag */
    uint64_t off, len;   /* FQ_REC_TRUNCATE: len = new size */
    uint8_t *data;       /* FQ_REC_WRITE: len bytes */
};

struct fq_reclog;

/* A log whose replays start from a copy of `base` (`len` bytes, may be
 * NULL/0 for an empty device). */
struct fq_reclog *fq_reclog_new(const void *base, size_t len);
void fq_reclog_free(struct fq_reclog *log);
/* Number of records, and record i (valid until the next append). */
size_t fq_reclog_count(const struct fq_reclog *log);
const struct fq_rec *fq_reclog_get(const struct fq_reclog *log, size_t i);
/* Stop (false) or resume (true) appending; operations still pass through. */
void fq_reclog_enable(struct fq_reclog *log, bool on);
/* Index just past the last flush among the first n records (0 if none):
 * records before it were durable when record n was about to be written. */
size_t fq_reclog_epoch_start(const struct fq_reclog *log, size_t n);

/* A recording device over `child` appending to `log` (not owned). */
int fq_record_open(struct fq_bdev *child, struct fq_reclog *log, unsigned flags,
                   struct fq_bdev **out);

/* Storage after the first n records, all applied in order. The caller
 * frees *data. */
int fq_reclog_replay(const struct fq_reclog *log, size_t n, uint8_t **data, size_t *len);

/* Storage as a power loss right after record n-1 could leave it: every
 * record up to the last flush is applied; each later write or zeroing is
 * applied with probability keep_pct percent, in a random order, and an
 * applied one is torn (a random subset of its 512-byte sectors lands) with
 * probability torn_pct percent. Truncates after the last flush are applied
 * in place. Deterministic in `seed`. */
int fq_reclog_replay_crash(const struct fq_reclog *log, size_t n, uint64_t seed,
                           unsigned keep_pct, unsigned torn_pct,
                           uint8_t **data, size_t *len);

#endif
