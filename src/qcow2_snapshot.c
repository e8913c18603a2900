/* qcow2_snapshot.c: reading the internal snapshot table. Each entry is
 * validated (L1 offset aligned, L1 size bounded, lengths inside the table)
 * before use.
 * SPDX-License-Identifier: MIT
 */
#include <stdio.h>

#include "qcow2.h"
#include "qcow2_snapshot.h"

void qcow2_snapshots_free(struct qsnap *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(v[i].id);
        free(v[i].name);
        free(v[i].extra);
    }
    free(v);
}

int qcow2_read_snapshots(struct qcow2 *s, struct qsnap **out, size_t *count,
                         uint64_t *table_bytes, char *err)
{
    uint64_t off = s->snapshots_offset, pos = 0;
    struct qsnap *v;
    int r = 0;

    *out = NULL;
    *count = 0;
    *table_bytes = 0;
    if (s->nb_snapshots == 0)
        return 0;
    v = calloc(s->nb_snapshots, sizeof(*v));
    if (!v)
        return -ENOMEM;
    for (uint32_t i = 0; i < s->nb_snapshots; i++) {
        uint8_t h[40];
        if ((r = fq_bdev_pread_sync(s->file, h, sizeof(h), off + pos)) < 0)
            goto fail;
        struct qsnap *sn = &v[i];
        sn->l1_offset = fq_be64(h);
        sn->l1_size = fq_be32(h + 8);
        uint16_t id_len = fq_be16(h + 12), name_len = fq_be16(h + 14);
        sn->date_sec = fq_be32(h + 16);
        sn->date_nsec = fq_be32(h + 20);
        sn->vm_clock_nsec = fq_be64(h + 24);
        sn->vm_state_size = fq_be32(h + 32);
        uint32_t extra = fq_be32(h + 36);
        if (extra > 1024) {
            fq_seterr(err, "Snapshot %u: extra data size %u is too large", i, extra);
            r = -EINVAL;
            goto fail;
        }
        if (!FQ_IS_ALIGNED(sn->l1_offset, s->cluster_size) ||
            (uint64_t)sn->l1_size * 8 > QCOW2_MAX_L1_BYTES) {
            fq_seterr(err, "Snapshot %u: invalid L1 table (offset 0x%llx, %u entries)", i,
                      (unsigned long long)sn->l1_offset, sn->l1_size);
            r = -EINVAL;
            goto fail;
        }
        sn->extra_len = extra;
        sn->extra = malloc(extra + 1);
        sn->id = calloc(1, (size_t)id_len + 1);
        sn->name = calloc(1, (size_t)name_len + 1);
        if (!sn->extra || !sn->id || !sn->name) {
            r = -ENOMEM;
            goto fail;
        }
        pos += 40;
        if ((extra && (r = fq_bdev_pread_sync(s->file, sn->extra, extra, off + pos)) < 0))
            goto fail;
        if (extra >= 16)
            sn->vm_state_size = fq_be64(sn->extra);
        if (extra >= 16)
            sn->disk_size = fq_be64(sn->extra + 8);
        else
            sn->disk_size = s->bs->size;
        pos += extra;
        if ((id_len && (r = fq_bdev_pread_sync(s->file, sn->id, id_len, off + pos)) < 0))
            goto fail;
        pos += id_len;
        if ((name_len && (r = fq_bdev_pread_sync(s->file, sn->name, name_len, off + pos)) < 0))
            goto fail;
        pos += name_len;
        pos = FQ_ALIGN_UP(pos, 8);
        if (pos > (64ull << 20)) {
            fq_seterr(err, "Snapshot table is larger than 64 MiB");
            r = -EFBIG;
            goto fail;
        }
    }
    *out = v;
    *count = s->nb_snapshots;
    *table_bytes = pos;
    return 0;
fail:
    if (err && !*err)
        fq_seterr(err, "Could not read the snapshot table: %s", strerror(-r));
    qcow2_snapshots_free(v, s->nb_snapshots);
    return r;
}
