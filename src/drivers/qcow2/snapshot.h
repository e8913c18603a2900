/* snapshot.h: internal snapshots: the snapshot table and the
 * create / apply / delete operations (snapshot.c).
 * SPDX-License-Identifier: MIT
 */
#ifndef FQ_QCOW2_SNAPSHOT_H
#define FQ_QCOW2_SNAPSHOT_H

#include "qcow2.h"

struct qsnap {
    uint64_t l1_offset;
    uint32_t l1_size;
    char *id;
    char *name;
    uint32_t date_sec, date_nsec;
    uint64_t vm_clock_nsec;
    uint64_t vm_state_size;
    uint64_t disk_size;
    uint64_t icount;          /* UINT64_MAX when not recorded */
    uint8_t *extra;
    uint32_t extra_len;
    uint64_t tpos;            /* where the entry starts in the table */
};

/* Read and validate the snapshot table. `table_bytes` is its length. */
int qcow2_read_snapshots(struct qcow2 *s, struct qsnap **out, size_t *count,
                         uint64_t *table_bytes, char *err);
void qcow2_snapshots_free(struct qsnap *v, size_t n);

/* Each needs a writable, idle image (see ops.h) and names what went
 * wrong in `err`. Returns 0 or -errno (-ENOENT: no such snapshot). */
/* Take a snapshot of the active state named `name`; its ID is the next
 * free number. */
int qcow2_snapshot_create(struct qcow2 *s, const char *name, char *err);
/* Make the snapshot whose ID (or else name) is `which` the active state
 * (the virtual size becomes the snapshot's); the old state is dropped. */
int qcow2_snapshot_apply(struct qcow2 *s, const char *which, char *err);
/* Delete the snapshot whose ID (or else name) is `which`. */
int qcow2_snapshot_delete(struct qcow2 *s, const char *which, char *err);
/* Rewrite the table if an entry lacks the extra data version 3 requires
 * (virtual size and VM state size), e.g. before an upgrade. */
int qcow2_snapshot_fix_extra(struct qcow2 *s);

#endif
