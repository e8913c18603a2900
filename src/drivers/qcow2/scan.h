/* scan.h: reading many metadata tables at once, for the commands that walk
 * a whole image (check, and whatever else reads every L2 table or refcount
 * block once). scan.c has the design note.
 * SPDX-License-Identifier: MIT
 */
#ifndef FQ_QCOW2_SCAN_H
#define FQ_QCOW2_SCAN_H

#include "qcow2.h"

/* Offset of table i (the order in which the tables are handed over). */
typedef uint64_t qscan_off_fn(void *opaque, size_t i);
/* Table i: `buf` holds its bytes, or ret < 0 if it could not be read.
 * Returns 0 to go on, or a negative errno to stop the scan with. */
typedef int qscan_fn(void *opaque, size_t i, const uint8_t *buf, int ret);

/* Read n tables of `len` bytes each from the image file, table i at
 * off(opaque, i), and call fn on each in the order i = 0, 1, ... n-1.
 * Reads are issued in that order, many at once through the file's
 * context (the caller sorts the tables by host offset when their order
 * does not matter); the buffers take about 2 MiB whatever the image.
 * Must not be called from inside the context loop (it then reads one
 * table at a time). Returns 0, or what fn stopped the scan with. */
int qcow2_scan(struct qcow2 *s, size_t n, size_t len, qscan_off_fn *off, qscan_fn *fn,
               void *opaque);

#endif
