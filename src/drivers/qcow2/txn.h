/* txn.h: metadata transactions: new metadata built in free space and
 * switched in by one write of the header's first sector (txn.c).
 * SPDX-License-Identifier: MIT
 */
#ifndef FQ_QCOW2_TXN_H
#define FQ_QCOW2_TXN_H

#include "qcow2.h"

struct qtx_op {               /* a refcount change not yet applied */
    uint64_t off, n;
    int64_t delta;
};
FQ_VECTOR(qtx_ops, struct qtx_op)

struct qtx {
    struct qcow2 *s;
    struct qcache rb;         /* the new refcount blocks, by their new offsets */
    uint64_t *rt;             /* the new refcount table (host byte order) */
    uint8_t *own;             /* per entry of rt: the block is a new one */
    uint64_t rt_entries;
    uint64_t hint;            /* allocation only moves forward from here */
    uint64_t low_free;        /* lowest cluster whose refcount became 0 */
    uint64_t flen0;           /* file length when the transaction began */
    struct qtx_ops todo;
    bool changed;             /* a refcount changed: a new refcount table */
};

/* What the header points at after the switch. */
struct qtx_switch {
    const uint64_t *l1;       /* the active L1 table (host byte order) */
    uint32_t l1_size;
    uint64_t l1_offset;       /* where it was written (qtx_write), or the old one */
    uint32_t nb_snapshots;
    uint64_t snapshots_offset;
    uint64_t size;            /* virtual size */
};

/* Start a transaction on an idle, writable image: everything cached is
 * written back and flushed first. Returns 0 or -errno. */
int qtx_begin(struct qcow2 *s, struct qtx *tx);
/* Drop a transaction that was not committed: what it wrote is free space
 * (refcount 0 on disk); the file is cut back to its former length. */
void qtx_abort(struct qtx *tx);
/* The refcount cluster `c` will have after the switch. */
int qtx_rc(struct qtx *tx, uint64_t c, uint64_t *out);
/* Add `delta` to the refcounts of the n clusters at host offset `off`
 * (in the new refcount blocks). -ERANGE if one would exceed the width,
 * -EIO (image marked corrupt) if one would drop below 0. */
int qtx_ref(struct qtx *tx, uint64_t off, uint64_t n, int64_t delta);
/* Take n contiguous clusters that are free on disk and in the new
 * refcounts (refcount 1 from now on in the new ones). */
int qtx_alloc(struct qtx *tx, uint64_t n, uint64_t *off);
/* Allocate clusters for `len` bytes and write `buf` there, padded with
 * zeros to whole clusters; `tag` names the kind of metadata. */
int qtx_write(struct qtx *tx, const void *buf, size_t len, unsigned tag, uint64_t *off);
/* Write the new refcount structures, flush, point the header at the new
 * state and flush; then the driver works on it (caches dropped, tables
 * reloaded). On failure nothing changed on disk that the old header
 * reaches, and the transaction is aborted. Returns 0 or -errno (err). */
int qtx_commit(struct qtx *tx, const struct qtx_switch *sw, char *err);

/* ---- L1 trees inside a transaction ---- */
/* Add `delta` to the refcount of every L2 table and host cluster reachable
 * from the L1 table `l1` (one reference per path, as the format counts). */
int qtx_tree_ref(struct qtx *tx, const uint64_t *l1, uint32_t n, int64_t delta);
/* Make the COPIED flags of the L2 entries of the active tree `l1` (n
 * entries, changed in place) agree with the refcounts after the switch:
 * an L2 table whose entries need other flags is replaced by a copy that
 * has them (the copy is the active tree's alone). *moved (may be NULL)
 * counts the copies. */
int qtx_fix_copied(struct qtx *tx, uint64_t *l1, uint32_t n, uint64_t *moved);
/* Set each L1 entry's COPIED flag where its table's refcount after the
 * switch is 1 (after every reference change of the transaction). */
int qtx_set_l1_copied(struct qtx *tx, uint64_t *l1, uint32_t n);
/* Write an L1 table of n entries (host byte order); *off is 0 when n is 0. */
int qtx_write_l1(struct qtx *tx, const uint64_t *l1, uint32_t n, uint64_t *off);

#endif
