/* check_repair.c: the repair actions of the check (check.c):
 * zeroing bad references, growing a truncated file to hold its refcount
 * blocks, rewriting an incomplete snapshot table, clearing the dirty and
 * corrupt bits. The pass that repairs writes the zeroed entries before it
 * changes any refcount (a crash in between leaks clusters at worst).
 * SPDX-License-Identifier: MIT
 */
#include "check.h"

/* Whether the cluster at `off` reads as an L2 table: every entry valid
 * and inside the file. Refcounts, read as L2 entries, name offsets far
 * past the end of the file. */
bool ck_looks_like_l2(const struct ck *k, uint64_t off)
{
    struct qcow2 *s = k->s;
    CLEANUP_FREE uint8_t *buf = malloc(s->cluster_size);
    uint64_t reserved = L2E_STD_RESERVED | ((s->version < 3 || s->extl2) ? L2E_ZERO : 0);

    if (!buf || fq_bdev_pread_sync(s->file, buf, s->cluster_size, off) < 0)
        return true;              /* when in doubt, keep it */
    for (uint64_t i = 0; i < s->l2_entries; i++) {
        uint64_t e = qcow2_l2e_get(s, buf, i), host = e & L2E_OFFSET_MASK, n = s->cluster_size;
        if (e & L2E_COMPRESSED)
            qcow2_compressed_loc(s, e, &host, &n);
        else if ((e & reserved) || !FQ_IS_ALIGNED(host, s->cluster_size))
            return false;
        if (host && !(qcow2_has_data_file(s) && !(e & L2E_COMPRESSED)) && ck_past_eof(k, host, n))
            return false;
    }
    return true;
}

/* Zero L2 entry i of table t (a bad reference): a zero cluster where the
 * format has one (version 3), unallocated in version 2. */
void ck_drop_l2e(struct ck *k, struct qcache_entry *t, uint64_t i)
{
    struct qcow2 *s = k->s;

    if (s->extl2)
        qcow2_l2e_set(s, t->data, i, 0, 0xffffffffull << 32);
    else
        qcow2_l2e_set(s, t->data, i, s->version >= 3 ? L2E_ZERO : 0, 0);
    qcache_mark_dirty(t);
}

/* Zero L1 entry i of the active L1 table (sn < 0) or of snapshot sn. */
void ck_drop_l1e(struct ck *k, uint64_t *l1, uint32_t i, long sn)
{
    struct qcow2 *s = k->s;
    static const uint8_t zero[8];

    l1[i] = 0;
    if (sn < 0) {
        qcow2_mark_l1_dirty(s, i);
        qcow2_meta_changed(s);
        return;
    }
    int r = fq_bdev_pwrite_tagged(s->file, zero, sizeof(zero),
                                  k->sn[sn].l1_offset + (uint64_t)i * 8, FQ_TAG_L1);
    if (r < 0) {
        ck_say(k, "%s: could not write L1 entry %u of snapshot %ld: %s", "ERROR", i, sn, strerror(-r));
        k->res->check_errors++;
    }
}

/* A refcount block past the end of the file (a truncated image) reads as
 * zeros: the file grows to hold it, as qemu-img does, so that the counted
 * refcounts can be stored. Only up to one block's span past the end: a
 * block further away is a wild pointer, left for the report. */
void ck_extend_for_refblocks(struct ck *k)
{
    struct qcow2 *s = k->s;
    int64_t flen = s->file->ops->file_length ? s->file->ops->file_length(s->file)
                                             : (int64_t)s->file->size;
    uint64_t fcl = flen > 0 ? FQ_DIV_UP((uint64_t)flen, s->cluster_size) : 0;

    for (uint64_t ri = 0; ri < s->rt_entries; ri++) {
        uint64_t c = s->rt[ri] >> s->cluster_bits;
        if (!s->rt[ri] || c < fcl || c >= fcl + (1ull << s->rb_bits) || !s->file->ops->truncate)
            continue;
        int r = s->file->ops->truncate(s->file, s->rt[ri] + s->cluster_size);
        if (r < 0) {
            ck_say(k, "%s could not resize image: %s", "ERROR", strerror(-r));
            continue;
        }
        ck_say(k, "Repairing refcount block %llu is outside image", (unsigned long long)ri);
        k->res->corruptions++;
        k->res->corruptions_fixed++;
        fcl = c + 1;
    }
}

/* Rewrite a snapshot table whose entries lack the extra data version 3
 * requires, once the refcounts are right (the rewrite allocates). */
void ck_fix_snapshot_table(struct ck *k)
{
    struct fq_check_result *res = k->res;
    int r;

    if (res->check_errors || res->corruptions - res->corruptions_fixed != k->incomplete) {
        ck_say(k, "%s: the snapshot table was not rewritten: other damage is left", "ERROR");
        return;
    }
    r = qcow2_writeback(k->s);
    if (r == 0)
        r = qcow2_snapshot_fix_extra(k->s);
    if (r == 0)
        res->corruptions_fixed += k->incomplete;
    else
        ck_say(k, "%s: the snapshot table was not rewritten: %s", "ERROR", strerror(-r));
}

/* After a repair that left no corruption: clear the dirty and corrupt
 * bits, as qemu-img does. */
int ck_mark_clean(struct qcow2 *s, const struct fq_check_result *res)
{
    const uint64_t bits = QCOW2_INCOMPAT_DIRTY | QCOW2_INCOMPAT_CORRUPT;
    int r;

    if (res->corruptions || res->check_errors || s->version < 3 || !(s->incompat & bits))
        return 0;
    if ((r = qcow2_writeback(s)) < 0 || (r = fq_bdev_flush_sync(s->file)) < 0)
        return r;
    s->incompat &= ~bits;
    s->corrupt = false;
    if ((r = qcow2_write_header(s)) < 0)
        return r;
    return fq_bdev_flush_sync(s->file);
}
