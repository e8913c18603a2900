/* qcow2_snapshot.h: the internal snapshot table.
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
    uint8_t *extra;
    uint32_t extra_len;
};

/* Read and validate the snapshot table. `table_bytes` is its length. */
int qcow2_read_snapshots(struct qcow2 *s, struct qsnap **out, size_t *count,
                         uint64_t *table_bytes, char *err);
void qcow2_snapshots_free(struct qsnap *v, size_t n);

#endif
