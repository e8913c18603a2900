/* check.h: the state of one check pass, shared by the check
 * (check.c) and its repair actions (check_repair.c).
 * SPDX-License-Identifier: MIT
 */
#ifndef FQ_QCOW2_CHECK_H
#define FQ_QCOW2_CHECK_H

#include "qcow2.h"
#include "ops.h"
#include "snapshot.h"

/* What a cluster holds, as far as the count has seen (struct ck.kind). */
enum {
    M_NONE, M_L2, M_HEADER, M_L1, M_RT, M_RB, M_SNAPTAB, M_SNAPL1, M_BITMAP,
};
#define M_KIND   0x7f
#define M_SHARED 0x80             /* also referenced otherwise: a corruption */

struct ck {
    struct qcow2 *s;
    struct fq_check_result *res;
    fq_msg_fn *msg;
    void *opaque;
    unsigned repair;
    bool only_repairs;        /* report only what is repaired */
    unsigned next_repair;     /* the repair this reporting pass precedes */
    bool dropped;             /* tables were changed while counting */
    bool tail_ref;            /* a reference to the cluster just past the file */
    bool partial;             /* part of the image could not be walked: no
                                 refcount is lowered */
    uint64_t flen;            /* file length */
    uint64_t fclusters;       /* clusters of the file (a partial last one too) */
    uint64_t nb;              /* clusters counted */
    uint64_t *refs;
    uint8_t *kind;            /* M_* | M_SHARED, per cluster */
    struct qsnap *sn;         /* the snapshot table */
    size_t nsn;
    uint64_t tbytes;
    uint64_t **snl1;          /* their L1 tables */
    int64_t incomplete;       /* entries lacking version 3 extra data */
    bool past_kept;           /* a reference past the end of the file was
                                 counted, not dropped */
    /* rebuild.c: the refcount structures are rebuilt from the count; the
     * old table, set aside while counting */
    bool rebuild;
    uint64_t *saved_rt, saved_rt_hi;
};

/* Pass a finding to the caller's message function; a repairing pass
 * passes only lines starting "Repairing" or formatted from "%s". */
void ck_say(struct ck *k, const char *fmt, ...) FQ_PRINTF(2, 3);
/* True if [off, off+len) ends a cluster or more past the end of the file. */
bool ck_past_eof(const struct ck *k, uint64_t off, uint64_t len);

/* ---- check_repair.c ---- */
/* Whether the cluster at `off` reads as an L2 table. */
bool ck_looks_like_l2(const struct ck *k, uint64_t off);
/* Zero a bad L2 entry (i of table t) or L1 entry (i of l1: the active
 * table for sn < 0, else snapshot sn's). */
void ck_drop_l2e(struct ck *k, struct qcache_entry *t, uint64_t i);
void ck_drop_l1e(struct ck *k, uint64_t *l1, uint32_t i, long sn);
/* Grow the file over refcount blocks just past its end. */
void ck_extend_for_refblocks(struct ck *k);
/* Rewrite a snapshot table with incomplete entries. */
void ck_fix_snapshot_table(struct ck *k);
/* After a repair: clear the dirty and corrupt bits if nothing is left. */
int ck_mark_clean(struct qcow2 *s, const struct fq_check_result *res);

/* ---- rebuild.c ---- */
/* After a count with the refcount blocks in it: whether the refcount
 * structures are damaged beyond repair in place. */
bool ck_rebuild_needed(const struct ck *k);
/* Before a count that repairs: set the refcount table aside, so that the
 * count leaves the old blocks out. */
int ck_rebuild_begin(struct ck *k);
/* After that count (r: how it went) and the drops it made are on disk:
 * build new refcount structures from it and switch to them, or report why
 * not (the old table is then put back). k->rebuild says whether it
 * happened. Returns 0 or r. */
int ck_rebuild(struct ck *k, int r);

#endif
