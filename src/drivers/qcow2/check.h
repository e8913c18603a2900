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
    M_NONE, M_L2, M_HEADER, M_L1, M_RT, M_RB, M_SNAPTAB, M_SNAPL1, M_BITMAP, M_CRYPT,
};
#define M_KIND   0x7f
#define M_SHARED 0x80             /* also referenced otherwise: a corruption */

/* A map from cluster numbers to 64-bit values (open addressing): the
 * kinds of the metadata clusters, and the counts that outgrow a byte. */
struct ck_map {
    uint64_t *key;            /* cluster + 1; 0 = empty slot */
    uint64_t *val;
    size_t cap, n;
};

/* A message of the L2 walk (which runs in host order), held until the
 * walk is over and printed in the order of the tables in the L1 tables. */
struct ck_msg {
    uint64_t key;             /* position of the table in that order */
    uint64_t seq;             /* order of the messages of one table */
    char *line;
};
FQ_VECTOR(ck_msg_vec, struct ck_msg)

/* Values of ck_map kinds: the kind (M_*, M_SHARED) in the low byte, and
 * for an L2 table its stored refcount once compared (CK_RC_*). */
#define CK_TABLE_CHANGED 0x100ull /* changed in the cache by this pass */
#define CK_RC_SHIFT 16            /* stored refcount + 1, at most 3 (0: unknown) */
#define CK_REF_BIG 255u           /* refs[c] == 255: the count is in `big` */

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
    bool oom;                 /* a map could not grow: the pass fails */
    bool copied_suspect;      /* a COPIED flag may be wrong: check_copied
                                 reads the active L2 tables again */
    uint64_t flen;            /* file length */
    uint64_t fclusters;       /* clusters of the file (a partial last one too) */
    uint64_t nb;              /* clusters counted */
    /* per cluster, about 1.4 bytes in all: */
    uint8_t *refs;            /* references counted (CK_REF_BIG: see big) */
    uint64_t *is_meta;        /* bit: holds metadata, its kind in `kinds` */
    uint64_t *cp_set;         /* bit: an active L2 entry names it, COPIED set */
    uint64_t *cp_clear;       /* bit: ... with COPIED clear */
    struct ck_map big;        /* counts of CK_REF_BIG and more */
    struct ck_map kinds;      /* metadata clusters: M_* | M_SHARED, ... */
    struct ck_msg_vec msgs;   /* held messages (while `hold`) */
    bool hold;
    uint64_t hold_key;
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
    bool damage_said;         /* the damaged-entry notice was given */
    struct qrt_bad_vec saved_bad;   /* the damaged entries, set aside with the table */
};

static inline bool ck_bit(const uint64_t *b, uint64_t c)
{
    return (b[c >> 6] >> (c & 63)) & 1;
}
static inline void ck_bit_set(uint64_t *b, uint64_t c)
{
    b[c >> 6] |= 1ull << (c & 63);
}

/* ---- check_state.c ---- */
/* Allocate the per-cluster state for k->nb clusters; free it. */
int ck_state_init(struct ck *k);
void ck_state_free(struct ck *k);
/* The value stored for cluster c (0 if none); set it. */
uint64_t ck_map_get(const struct ck_map *m, uint64_t c);
void ck_map_set(struct ck *k, struct ck_map *m, uint64_t c, uint64_t v);
/* References counted to cluster c (< k->nb); count one more. */
uint64_t ck_ref(const struct ck *k, uint64_t c);
void ck_ref_inc_big(struct ck *k, uint64_t c);
static inline void ck_ref_inc(struct ck *k, uint64_t c)
{
    if (k->refs[c] < CK_REF_BIG - 1)
        k->refs[c]++;
    else
        ck_ref_inc_big(k, c);
}
/* Kind of cluster c (< k->nb): M_* | M_SHARED, 0 for none; set it. */
static inline uint8_t ck_kind(const struct ck *k, uint64_t c)
{
    return ck_bit(k->is_meta, c) ? (uint8_t)ck_map_get(&k->kinds, c) : 0;
}
void ck_kind_set(struct ck *k, uint64_t c, uint8_t kind);
/* Print the held messages in key order and stop holding. */
void ck_release_msgs(struct ck *k);

/* Pass a finding to the caller's message function; a repairing pass
 * passes only lines starting "Repairing" or formatted from "%s". */
void ck_say(struct ck *k, const char *fmt, ...) FQ_PRINTF(2, 3);
/* True if [off, off+len) ends a cluster or more past the end of the file. */
bool ck_past_eof(const struct ck *k, uint64_t off, uint64_t len);

/* ---- check.c ---- */
extern const char *const ck_kind_names[];
/* Kind of the first metadata cluster of [off, off+len) (0: none), and
 * which cluster it is. */
uint8_t ck_meta_at(const struct ck *k, uint64_t off, uint64_t len, uint64_t *cluster);
/* True if [off, off+len) lies in the file and shares no cluster. */
bool ck_range_clean(const struct ck *k, uint64_t off, uint64_t len);
/* Whether an L1 entry names a sound L2 table. */
bool ck_is_l2(const struct ck *k, uint64_t e);
/* The L2 table being walked, and how a repair may change it. */
struct ck_walk {
    uint64_t off;             /* its offset */
    const uint8_t *l2;        /* its entries: read for the walk, or the cache's */
    struct qcache_entry *t;   /* the cache's copy once the walk changes it */
    bool can_fix;             /* a repair may change it (an aligned table) */
};

/* The cache's copy of the walked table, to change it (false if it cannot
 * be had). */
bool ck_walk_writable(struct ck *k, struct ck_walk *w);

/* ---- check_compare.c ---- */
/* Compare the counts with the stored refcounts (and fix them). */
int ck_compare_refcounts(struct ck *k);
/* Check (and fix) the COPIED flags of the active L1 and L2 entries. */
int ck_check_copied(struct ck *k);
/* After a rebuild (stored refcounts = counts): what the COPIED check
 * would have had from the compare. */
void ck_note_rebuilt(struct ck *k);

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
