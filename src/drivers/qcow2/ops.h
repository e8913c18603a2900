/* ops.h: image-level operations of the qcow2 driver beyond the
 * request planner: compressed cluster writes (compress.c); resize,
 * backing-file changes and emptying (resize.c); amend, the refcount
 * width included (amend.c); walking whole L1 trees
 * (snapshot.c, also used by the others); the VM state area (vmstate.c).
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

/* True while requests of this image have host I/O or allocations in flight. */
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
/* Add `delta` (+1 or -1) to the refcount of every L2 table and host
 * cluster reachable from the L1 table `l1` (host byte order), counting
 * data once per L1 path as the format does. A decrement is deferred
 * (qcow2_free_deferred): it lands once the tables that dropped the
 * references are on disk. An increment that fails is undone. */
int qcow2_tree_refs(struct qcow2 *s, const uint64_t *l1, uint32_t l1_size, int delta);
/* Set the COPIED flag of every active L1 and L2 entry exactly where the
 * refcount of what it points to is 1. */
int qcow2_rebuild_copied(struct qcow2 *s);
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

/* ---- amend.c ---- */
/* Amend the compat level (2 or 3; 0 keeps it), the lazy refcounts bit (0
 * or 1; -1 keeps it) and the refcount width (1, 2, 4, ... 64 bits; 0 keeps
 * it). Every change is checked before any is made (a refusal changes
 * nothing); then: upgrade, refcount width, lazy refcounts, downgrade. */
int qcow2_amend(struct qcow2 *s, int version, int lazy_refcounts, int refcount_bits, char *err);

/* ---- vmstate.c ---- */
/* Guest offset where the VM state area starts: the first L1 entry past the
 * disk. */
uint64_t qcow2_vmstate_offset(const struct qcow2 *s);
/* Read or write [pos, pos+len) of the VM state area; a write grows the L1
 * table to cover it, a read past what the L1 table covers reads zeros.
 * Returns 0, -EIO past what an L1 table can map, or -errno. */
int qcow2_vmstate_rw(struct qcow2 *s, void *buf, uint64_t len, uint64_t pos, bool write);

#endif
