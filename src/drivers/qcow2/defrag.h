/* defrag.h: in-place defragmentation (fq_defrag), shared by its files:
 *
 *   defrag.c        the operation: preconditions, leak repair, coverage of
 *                   the staging zone, the rounds, the final cut
 *   defrag_plan.c   the image as units (what occupies which host clusters,
 *                   who points at it) and the layout they end up in
 *   defrag_round.c  choosing the moves of a round (ready moves, then
 *                   evacuations into the staging zone) and carrying out a
 *                   round: refcounts up, copies, switch, flush, old places
 *                   freed
 *   defrag_meta.c   moves whose pointer is not in an L1 or L2 table: the L1
 *                   table, the refcount table and blocks, the snapshot
 *                   group, the bitmap group; and the final removal of the
 *                   refcount blocks only the staging zone needed
 *   defrag_io.c     the copier: jobs that gather reads into one write,
 *                   many in flight through the context's engine
 *
 * A *unit* is what moves as one: the header (never), the refcount table,
 * one refcount block, the active L1 table, one L2 table, one data cluster
 * (or a preallocated zero cluster, whose content is never copied), one
 * compressed cluster (a *blob*: the bytes its descriptor names, placed
 * anew on 512-byte boundaries), the snapshot group (the snapshot table and
 * every snapshot's L1 table) and the bitmap group (directory, tables and
 * bitmap data). Units hold host clusters (blobs: bytes inside clusters
 * shared with other blobs); `occ` says what holds each host cluster and
 * `want` which unit ends up there.
 *
 * Refcounts: a unit's clusters hold `mult` references for it (a data
 * cluster one per L1 path to it, as the format counts; a blob adds its
 * `mult` to every cluster it touches). A move raises the destination by
 * the same amount and, once nothing on disk points at the source, lowers
 * the source by it. The plan checks every stored refcount against these
 * counts before the first move.
 * SPDX-License-Identifier: MIT
 */
#ifndef FQ_QCOW2_DEFRAG_H
#define FQ_QCOW2_DEFRAG_H

#include "ops.h"
#include "snapshot.h"

enum dkind { DK_HDR, DK_RT, DK_RB, DK_L1, DK_L2, DK_DATA, DK_ZERO, DK_BLOB, DK_SNAP, DK_BITMAP };

#define DU_NONE UINT32_MAX          /* no unit */
#define DO_FREE UINT32_MAX          /* occ / want: nothing */
#define DO_CMP (UINT32_MAX - 1)     /* occ: compressed data; want: a compressed area */
#define DU_MAX (UINT32_MAX - 2)     /* units at most */
#define DT_ANY UINT64_MAX           /* tgt: anywhere at or past the final end */
#define DT_STAY (UINT64_MAX - 1)    /* tgt: where it is (compact only) */

#define DF_MOVING 1u                /* in the round being planned or carried out */
#define DF_ORIG 2u                  /* still where the plan found it */
#define DF_CHAINED 4u               /* a chain under way will move it: not
                                       evacuated */

struct dunit {
    uint64_t cur;      /* first host cluster (blob: host byte) */
    uint64_t tgt;      /* where it ends up, same unit as cur; DT_ANY */
    uint64_t mult;     /* references each of its clusters holds for it */
    uint32_t n;        /* clusters; 0 for a blob */
    uint32_t len;      /* blob: bytes its descriptor names */
    uint32_t aux;      /* RB: refcount table index; blob: its footprint */
    uint32_t nref;     /* references: (t0, i0), then xref[more ..] */
    uint32_t t0, i0;   /* L2 and data: the L2 unit (data) or L1 (0: active,
                          k + 1: snapshot k) and the entry index */
    uint32_t more;
    uint8_t kind;
    uint8_t flags;
};

struct dref {
    uint32_t u;        /* the unit referenced (while building) */
    uint32_t t, i;
};

/* A part of a group unit: the snapshot table (what 0) or the L1 table of
 * snapshot k (what k + 1); the bitmap directory (0), the table of bitmap k
 * (k + 1, in directory order) or a data cluster of one (DP_BMDATA). */
#define DP_BMDATA UINT32_MAX
struct dpiece {
    uint64_t cur;      /* host cluster */
    uint32_t n;        /* clusters */
    uint32_t what;
    uint32_t bm, idx;  /* DP_BMDATA: bitmap and table entry */
};

struct dgroup {
    uint32_t unit;     /* DU_NONE: no such group */
    struct dpiece *p;
    size_t np;
};

/* A move of the round being planned. */
struct dmove {
    uint32_t u;
    uint64_t src, dst; /* cluster (blob: byte) */
};

/* Reads gathered into one write (defrag_io.c). */
struct dpart {
    uint64_t src, len, boff;
};
struct djob {
    uint64_t dst, len;
    size_t part0, nparts;
    bool zero;         /* its parts leave gaps (compressed clusters' padding) */
};

struct defrag {
    struct qcow2 *s;
    const struct fq_defrag_opts *o;
    struct fq_defrag_stats *st;
    const struct fq_waiter *w;
    char *err;
    uint64_t cs;
    uint64_t budget;          /* clusters of staging at most */
    bool compact;             /* --compact-only */
    uint64_t fclusters;       /* clusters of the file when planned */
    uint64_t nb;              /* clusters the maps cover */

    struct dunit *u;
    uint32_t nu, capu;
    struct dref *xref;        /* references past the first, by unit */
    size_t nx, capx;
    uint32_t *occ, *want;     /* per host cluster: unit, DO_FREE, DO_CMP */
    uint64_t *crc;            /* compressed clusters: references the blobs
                                 in them hold (NULL: no blobs) */
    uint32_t *cnf;            /* compressed clusters: blobs not yet where
                                 they end up */
    uint32_t hdr, rt, l1;     /* units (l1: DU_NONE for an empty L1) */
    uint32_t nb_keep;         /* refcount blocks the final image keeps */
    uint64_t *tail;           /* leaked clusters past the end of the file */
    size_t ntail, captail;

    /* the snapshots and their L1 tables (host byte order), kept current */
    struct qsnap *sn;
    size_t nsn;
    uint64_t snap_bytes;
    uint64_t **snl1;
    uint8_t **snl1_dirty;     /* per 4 KiB of each table: rewrite in place */
    struct dgroup snap;

    /* the bitmap directory and tables, kept current */
    size_t bm_ext;            /* index in s->exts */
    uint8_t *bmdir;
    uint64_t bmdir_bytes;
    uint32_t nbm;
    uint64_t **bmtab;         /* per bitmap: its table, raw big-endian */
    uint32_t *bmtab_n;
    uint64_t *bmtab_off;      /* per bitmap: where its entry sits in bmdir */
    struct dgroup bm;

    /* the final layout */
    uint32_t *stream;         /* units in the order they end up (L2 table,
                                 its data, its blobs), floating units apart */
    size_t nstream;
    uint32_t *blob_by_tgt;    /* blobs sorted by target, and by where the */
    uint32_t *blob_by_cur;    /*   plan found them (that place: blob_orig; */
    uint64_t *blob_orig;      /*   the target: blob_tgt) */
    uint64_t *blob_tgt;
    uint32_t nblobs;
    uint64_t U;               /* clusters of the final image */
    uint64_t Z;               /* the staging zone is [U, Z) */

    /* the rounds */
    uint64_t *q;              /* slots to look at: freed, or usable */
    size_t qh, qn, qcap;
    uint64_t evac;            /* evacuation front: slots below are final */
    uint64_t chain;           /* units an evacuation marks as chained */
    uint64_t stage;           /* staging cursor */
    uint64_t pack, pack_end;  /* staging bytes open for blobs */
    struct dmove *mv;
    size_t nmv, capmv;
    uint8_t **bufs;           /* the copier's buffers, kept across rounds */
    size_t nbufs;
    uint64_t buf_len;         /* bytes each */
    uint64_t todo, done;      /* bytes to place, placed (progress) */
    uint64_t left;            /* units not yet where they end up */
    uint64_t specials;        /* metadata moves made while planning a round */
};

/* ---- defrag_plan.c ---- */
/* Walk the image into units and references; 0, or -EINVAL with the reason
 * in d->err (a structure it does not understand, a refcount that
 * disagrees with the references). `leaks` counts clusters whose refcount
 * is higher than their references (fixed later, then planned again). */
int defrag_build(struct defrag *d, uint64_t *leaks);
/* Free the leaked clusters past the end of the file (nothing points at
 * them; the check does not look there), then write back. */
int defrag_reclaim_tail(struct defrag *d);
/* The final layout: targets, U and Z, `want`. */
int defrag_layout(struct defrag *d);
/* Compact-only targets: the last units into the first holes. */
int defrag_layout_compact(struct defrag *d);
void defrag_free_plan(struct defrag *d);
/* Where in `keys` (blob_orig or blob_tgt: byte offsets, sorted) the
 * blobs that may touch host cluster c start. */
size_t defrag_blobs_near(const struct defrag *d, const uint64_t *keys, uint64_t c);
/* Reference j of unit u. */
struct dref defrag_ref(const struct defrag *d, const struct dunit *u, uint32_t j);
/* First and last host cluster a blob at byte `at` of `len` bytes touches. */
void defrag_blob_span(const struct defrag *d, uint64_t at, uint64_t len, uint64_t *first,
                      uint64_t *last);
/* The L2 descriptor of a compressed cluster of `len` bytes at `host`. */
uint64_t defrag_blob_entry(const struct defrag *d, uint64_t host, uint64_t len);
const char *defrag_kind_name(unsigned kind);
/* Make the maps cover clusters [0, n). */
int defrag_grow_maps(struct defrag *d, uint64_t n);

/* ---- defrag_round.c ---- */
/* Move every unit to its target. */
int defrag_rounds(struct defrag *d);
/* A slot became free (or usable for blobs): look at its wanter. */
int defrag_push(struct defrag *d, uint64_t slot);
/* Mark clusters [c, c + n) free after unit moved away (occ and queue). */
int defrag_release(struct defrag *d, uint64_t c, uint64_t n);
/* Take the clusters [c, c + n) for unit id. */
void defrag_occupy(struct defrag *d, uint64_t c, uint64_t n, uint32_t id);
/* Unit id moved from src to its current place (d->u[id].cur): bookkeeping
 * of finished units, progress, and a look at its target if it is not
 * there yet. */
int defrag_moved(struct defrag *d, uint32_t id);
/* Is unit id where it ends up? */
bool defrag_final(const struct defrag *d, uint32_t id);

/* ---- defrag_meta.c ---- */
/* Move unit id (a refcount table or block, the L1 table, a group) to
 * cluster dst, which is free: copy, flush, switch, flush, free. */
int defrag_move_meta(struct defrag *d, uint32_t id, uint64_t dst);
/* Write the snapshot L1 chunks that changed in memory, then flush. */
int defrag_write_snl1(struct defrag *d);
/* Remove the refcount blocks past nb_keep (they covered only staging). */
int defrag_drop_blocks(struct defrag *d);

/* ---- defrag_io.c ---- */
/* Carry out `nj` jobs (parts in `parts`), several in flight; 0 or the
 * first error (every job in flight finished first). */
int defrag_copy(struct defrag *d, const struct djob *jobs, size_t nj, const struct dpart *parts);
/* Free the copier's buffers. */
void defrag_copy_free(struct defrag *d);

#endif
