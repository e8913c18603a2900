/* ops.h: image-level operations of the qcow2 driver beyond the
 * request planner: compressed cluster writes (compress.c); resize,
 * backing-file changes and emptying (resize.c); amend, the refcount
 * width included (amend.c); new refcount structures switched in whole
 * (rcbuild.c, for amend and check); walking whole L1 trees
 * (snapshot.c, also used by the others and by txn.c); defragmentation
 * (defrag*.c); the VM state area (vmstate.c).
 *
 * Each runs synchronously (metadata and data through io_sync, never the
 * context loop), so it is safe from completion callbacks. Except for
 * compressed writes, each needs the image idle (qcow2_busy() false): a
 * table switch must not race with a request planned on the old tables.
 * SPDX-License-Identifier: MIT
 */
#ifndef FQ_QCOW2_OPS_H
#define FQ_QCOW2_OPS_H

#include "qcow2.h"

/* True while requests of this image have host I/O, allocations, table
 * reads or a write-back in flight. */
bool qcow2_busy(struct qcow2 *s);
/* Preconditions of whole-image operations; 0 or -EROFS/-EIO/-EBUSY with
 * a message in err. */
int qcow2_op_writable(struct qcow2 *s, char *err);

/* ---- compress.c ---- */
/* Write guest cluster `gc` compressed from `data` (a whole cluster; for the
 * last, partial cluster of the disk only the bytes inside the disk are
 * used). Falls back to an ordinary write when compression saves no
 * sector. Returns 0 or -errno. */
int qcow2_write_compressed(struct qcow2 *s, const uint8_t *data, uint64_t gc);
/* The two halves of it, for compressing on another thread:
 * qcow2_compress_cluster reads only the cluster size and compression type
 * (safe on any thread): it compresses the whole cluster `src` into `dst`
 * (cluster size + 512 bytes) and returns the length, 0 if it does not
 * shrink, or -errno. qcow2_store_compressed, on the context's thread,
 * stores that result (`clen` as returned; `data` is written plainly when
 * it is 0) for guest cluster `gc`. */
int64_t qcow2_compress_cluster(const struct qcow2 *s, const uint8_t *src, uint8_t *dst);
int qcow2_store_compressed(struct qcow2 *s, uint64_t gc, const uint8_t *data, uint8_t *blob,
                           int64_t clen);

/* ---- snapshot.c: L1 trees ---- */
/* Call fn for each reference the L1 table `l1` (host byte order) holds:
 * each L2 table (once per L1 entry) and, in it, each data cluster (once
 * per entry, none in an external data file; a compressed entry names the
 * clusters its data spans), as
 * the format counts them; stops at the first error. Unaligned entries
 * mark the image corrupt (-EIO). */
typedef int qcow2_ref_fn(struct qcow2 *s, uint64_t off, uint64_t n, void *opaque);
int qcow2_tree_walk(struct qcow2 *s, const uint64_t *l1, uint32_t n, qcow2_ref_fn *fn,
                    void *opaque);
/* Release every reference of the tree (qcow2_free_deferred: it lands
 * once the tables that dropped the references are on disk). */
int qcow2_tree_release(struct qcow2 *s, const uint64_t *l1, uint32_t n);
/* Read an L1 table of `n` entries at `off` into host byte order. */
int qcow2_read_l1(struct qcow2 *s, uint64_t off, uint32_t n, uint64_t **out);
/* Write an L1 table (host byte order) to `off`, COPIED flags cleared when
 * `clear_copied`, padded with zeros to whole clusters. */
int qcow2_write_l1_at(struct qcow2 *s, const uint64_t *l1, uint32_t n, uint64_t off,
                      bool clear_copied);
/* Allocate clusters for, write and flush a new active L1 table of `n`
 * entries (a copy of the current one, grown or cut); then point the header
 * at it (with virtual size `size`) and free the old table. */
int qcow2_switch_l1(struct qcow2 *s, const uint64_t *l1, uint32_t n, uint64_t size);

/* ---- resize.c ---- */
/* Change the virtual size. Shrinking needs FQ_RESIZE_SHRINK in `flags` and
 * drops every cluster past the new end; with FQ_RESIZE_KEEP_DATA it is
 * refused instead (-ENOTEMPTY, nothing changed) while the active state
 * maps data or compressed clusters there. Growing reads as zeros in the
 * new range, also where a backing file would show through. */
int qcow2_resize(struct qcow2 *s, uint64_t size, unsigned flags, char *err);
/* Record another backing file name and format (NULL name = none), only
 * in the header: the data is not touched. */
int qcow2_set_backing(struct qcow2 *s, const char *name, const char *fmt, char *err);
/* Drop every cluster of the active state: all reads go to the backing
 * file (or read zeros). */
int qcow2_make_empty(struct qcow2 *s);
/* Cut the host file after its last cluster in use. */
int qcow2_trim_file(struct qcow2 *s);
/* Rewrite the header and flush. */
int qcow2_write_header_sync(struct qcow2 *s);

/* ---- rcbuild.c ---- */
/* Where the refcounts of new refcount structures come from. */
struct qcow2_rc_source {
    /* the refcount of cluster c: 0 or -errno (with its own message) */
    int (*get)(void *opaque, uint64_t c, uint64_t *v);
    /* the first cluster at or past c that may have a refcount
     * (UINT64_MAX: none); NULL: any cluster below `limit` may */
    uint64_t (*next)(void *opaque, uint64_t c);
    /* let go of what get() holds (a cached block); may be NULL */
    void (*release)(void *opaque);
    void *opaque;
    uint64_t limit;            /* every cluster from here on has refcount 0 */
    bool counts_old;           /* the old table and blocks are counted: free
                                  them through the new structures once the
                                  switch is durable */
    /* -ERANGE: the first cluster whose refcount the width cannot hold */
    uint64_t too_big_cluster, too_big_value;
};
/* Build refcount structures of `bits`-bit entries holding the source's
 * refcounts past every cluster in use and past the end of the file, and
 * switch the header to them (the design note of rcbuild.c has the
 * crash-safety argument). The caller wrote back and flushed what the
 * source reads. Returns 0; -ERANGE when a refcount does not fit `bits`
 * (no change made); or -errno with a message in err (the old structures
 * stay in use, unless the message says the old ones leak). */
int qcow2_rc_build(struct qcow2 *s, unsigned bits, struct qcow2_rc_source *src, char *err);

/* ---- amend.c ---- */
/* Amend the compat level (2 or 3; 0 keeps it), the lazy refcounts bit (0
 * or 1; -1 keeps it) and the refcount width (1, 2, 4, ... 64 bits; 0 keeps
 * it). Every change is checked before any is made (a refusal changes
 * nothing); then: upgrade, refcount width, lazy refcounts, downgrade. */
int qcow2_amend(struct qcow2 *s, int version, int lazy_refcounts, int refcount_bits, char *err);

/* ---- defrag.c ---- */
/* fq_defrag (fastqcow.h): copies go to the file asynchronously, waited for
 * through `w`; `st` is filled. */
int qcow2_defrag(struct fq_bdev *bs, const struct fq_defrag_opts *o, struct fq_defrag_stats *st,
                 const struct fq_waiter *w, char *err);

/* ---- vmstate.c ---- */
/* Guest offset where the VM state area starts: the first L1 entry past the
 * disk. */
uint64_t qcow2_vmstate_offset(const struct qcow2 *s);
/* Read or write [pos, pos+len) of the VM state area; a write grows the L1
 * table to cover it, a read past what the L1 table covers reads zeros.
 * Returns 0, -EIO past what an L1 table can map, or -errno. */
int qcow2_vmstate_rw(struct qcow2 *s, void *buf, uint64_t len, uint64_t pos, bool write);

#endif
