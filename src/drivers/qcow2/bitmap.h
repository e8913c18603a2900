/* bitmap.h: persistent dirty bitmaps, the state shared by bitmap.c (the
 * model: directory, tables, bits set since open, storing) and
 * bitmap_ops.c (the whole-image calls: list, add, remove, clear, enable,
 * disable, set, status, size).
 *
 * The model holds every bitmap of the directory. A bitmap's content on
 * disk is never changed in place: bits set since it was loaded live in
 * `chunk` (one cluster of bitmap data per table entry, allocated on the
 * first bit set in it), and storing (qbm_commit) writes the changed data
 * clusters, the tables and the directory to new clusters, switches the
 * header's bitmaps extension to them, and frees the old ones afterwards.
 * SPDX-License-Identifier: MIT
 */
#ifndef FQ_QCOW2_BITMAP_H
#define FQ_QCOW2_BITMAP_H

#include "qcow2.h"

/* Bitmaps extension (header extension QEXT_BITMAPS), big-endian. */
#define QBX_NB_BITMAPS     0         /* u32 */
#define QBX_RESERVED       4         /* u32, zero */
#define QBX_DIR_SIZE       8         /* u64 bytes */
#define QBX_DIR_OFFSET     16        /* u64, cluster aligned */
#define QBX_LEN            24

/* Bitmap directory entry, big-endian; then extra data, the name (not
 * NUL-terminated) and zero padding to a multiple of 8. */
#define QBE_TABLE_OFFSET   0         /* u64, cluster aligned */
#define QBE_TABLE_SIZE     8         /* u32 entries */
#define QBE_FLAGS          12        /* u32 */
#define QBE_TYPE           16        /* u8: 1 = dirty tracking */
#define QBE_GRAN_BITS      17        /* u8: granularity = 1 << it */
#define QBE_NAME_SIZE      18        /* u16, non-zero */
#define QBE_EXTRA_SIZE     20        /* u32 */
#define QBE_FIXED          24

#define QBM_F_IN_USE       (1u << 0)  /* not stored by its last writer */
#define QBM_F_AUTO         (1u << 1)  /* enabled: tracks every write */
#define QBM_F_EXTRA_COMPAT (1u << 2)  /* unknown extra data may be ignored */
#define QBM_F_KNOWN        0x7u
#define QBM_TYPE_DIRTY     1

/* Bitmap table entry. */
#define QBT_OFFSET_MASK    0x00fffffffffffe00ull   /* bits 9-55 */
#define QBT_ALL_ONES       1ull                    /* offset 0: reads as ones */
#define QBT_RESERVED       0xff000000000001feull

/* Limits (ours): what a writer of this library accepts in a directory. */
#define QBM_MAX_BITMAPS    65535
#define QBM_MAX_NAME       1023
#define QBM_MAX_DIR_BYTES  (64u << 20)
#define QBM_MAX_TABLE      (1u << 22)   /* entries of one table */
#define QBM_MIN_GRAN_BITS  9
#define QBM_MAX_GRAN_BITS  31

struct qbm {
    char name[QBM_MAX_NAME + 1];
    uint16_t name_len;
    uint8_t type, gran_bits;
    uint32_t flags;
    uint8_t *extra;           /* extra data, kept as is */
    uint32_t extra_len;
    uint64_t table_off;
    uint32_t table_size;      /* entries */
    uint32_t disk_entries;    /* entries of the table on disk at table_off
                                 (table_size differs after a resize) */
    uint64_t *table;          /* host order; NULL until loaded (or new) */
    uint8_t **chunk;          /* per table entry: bits set since the last
                                 store (a cluster of bitmap data), or NULL */
    bool replace;             /* content = the chunks alone (cleared, new) */
    bool resized;             /* the table changed size with the disk */
    bool changed;             /* its entry differs from the one on disk */
    bool tracked;             /* enabled and consistent: writes set bits */
    bool lost;                /* bits could not be recorded: stays in use */
    bool bad;                 /* failed validation: never written or freed */
    int64_t rd_idx;           /* table entry whose content rd holds, or -1 */
    uint8_t *rd;              /* status reads: one cluster of content */
};

struct qbitmaps {
    struct qbm *v;
    uint32_t n;
    uint64_t dir_off, dir_size;   /* the directory on disk (0: none) */
    bool checked;                 /* every table read and cross-checked */
    bool marked;                  /* the tracked ones are in use on disk */
    struct qfree_vec drop;        /* clusters of removed bitmaps, freed by
                                     the next commit */
};

/* bitmap.c */
/* The model, loaded on first use (the directory only; tables as needed).
 * Returns 0 (s->bm set, maybe with no bitmaps), -EINVAL with a message for
 * a damaged extension or directory, or an I/O error. */
int qbm_model(struct qcow2 *s, char *err);
/* The bitmap named `name`, or NULL. */
struct qbm *qbm_find(struct qcow2 *s, const char *name);
/* Read and check b's table (once). -EINVAL (message in err) if damaged. */
int qbm_load_table(struct qcow2 *s, struct qbm *b, char *err);
/* Entries b's table must have for the current disk size. */
uint64_t qbm_table_entries(const struct qcow2 *s, uint8_t gran_bits);
/* Set bits [first, end) of b (pending until stored). */
int qbm_set_bits(struct qcow2 *s, struct qbm *b, uint64_t first, uint64_t end);
/* The content of table entry `idx` of b as it would be stored: a cluster
 * of bitmap data (b->rd; valid until the next call). */
int qbm_read_chunk(struct qcow2 *s, struct qbm *b, uint64_t idx, const uint8_t **out);
/* Store every changed bitmap (and the directory) to new clusters and
 * switch the header to them; `in_use` is the flag the tracked bitmaps get
 * on disk. Returns 0 or -errno (the old bitmaps stay in place). */
int qbm_commit(struct qcow2 *s, bool in_use, char *err);
/* Drop a bitmap from the model (its clusters are freed by the next
 * commit unless it is bad). */
int qbm_forget(struct qcow2 *s, struct qbm *b);
/* Free one bitmap's memory. */
void qbm_free_one(struct qbm *b);

#endif
