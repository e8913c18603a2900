/* damage.c: refcount table entries that name no usable refcount block.
 *
 * An entry that is not aligned to a cluster, or that points past the
 * addressable range, does not keep the image from opening: reads need no
 * refcount, and neither do writes into clusters the image owns alone.
 * Such an entry is set aside when the table is loaded: the table in
 * memory holds 0 there, and this list holds the index and the value on
 * disk. Every path that would read or change a refcount counted by that
 * entry meets the list first (refcount.c's get_block and the scans that
 * would otherwise take the range for free) and fails with -EIO, marking
 * the image corrupt; the whole-image operations that build new refcount
 * structures from the old ones refuse to start. The table is always
 * written back with the values on disk at these indexes, so nothing is
 * lost or silently "repaired" by a write; only check -r all (a rebuild of
 * the refcount structures) clears the list.
 *
 * The list is sorted by index (it is filled in table order) and at most
 * as long as the table, which the header bounds.
 * SPDX-License-Identifier: MIT
 */
#include <stdio.h>

#include "qcow2.h"

/* Set entry ri aside (the open calls it in table order). */
int qcow2_rt_damage_note(struct qcow2 *s, uint64_t ri, uint64_t raw)
{
    struct qrt_bad b = { ri, raw };

    return qrt_bad_vec_push(&s->rt_bad, b);
}

/* Binary search of the list for table index ri. */
static const struct qrt_bad *find_bad(const struct qcow2 *s, uint64_t ri)
{
    size_t lo = 0, hi = s->rt_bad.len;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (s->rt_bad.ptr[mid].ri == ri)
            return &s->rt_bad.ptr[mid];
        if (s->rt_bad.ptr[mid].ri < ri)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* Whether entry ri was set aside; its value on disk in *raw. */
bool qcow2_rt_bad(const struct qcow2 *s, uint64_t ri, uint64_t *raw)
{
    const struct qrt_bad *b = s->rt_bad.len ? find_bad(s, ri) : NULL;

    if (b && raw)
        *raw = b->raw;
    return b != NULL;
}

/* Whether entry ri was set aside as not aligned to a cluster. */
bool qcow2_rt_unaligned(const struct qcow2 *s, uint64_t ri)
{
    uint64_t raw;

    return qcow2_rt_bad(s, ri, &raw) && ((raw & RTE_OFFSET_MASK) & (s->cluster_size - 1));
}

/* What is wrong with the entry, in the words of the corruption message. */
void qcow2_rt_bad_describe(const struct qcow2 *s, uint64_t ri, uint64_t raw, char *buf,
                           size_t len)
{
    uint64_t off = raw & RTE_OFFSET_MASK;

    if (off & (s->cluster_size - 1))
        snprintf(buf, len, "Refblock offset %#llx unaligned (reftable index: %#llx)",
                 (unsigned long long)off, (unsigned long long)ri);
    else
        snprintf(buf, len, "Refblock offset %#llx beyond the addressable range (reftable "
                 "index: %#llx)", (unsigned long long)off, (unsigned long long)ri);
}

/* A refcount entry ri counts was needed: the image is corrupt. */
int qcow2_rt_bad_fail(struct qcow2 *s, uint64_t ri)
{
    char why[160];
    uint64_t raw = 0;

    (void)qcow2_rt_bad(s, ri, &raw);
    qcow2_rt_bad_describe(s, ri, raw, why, sizeof(why));
    qcow2_signal_corruption(s, "%s", why);
    return -EIO;
}

/* Refuse (marking the image corrupt) while any entry is damaged. */
int qcow2_rt_damage_guard(struct qcow2 *s)
{
    return s->rt_bad.len ? qcow2_rt_bad_fail(s, s->rt_bad.ptr[0].ri) : 0;
}

/* The value table entry ri is written back with. */
uint64_t qcow2_rt_disk_entry(const struct qcow2 *s, uint64_t ri)
{
    uint64_t raw;

    return qcow2_rt_bad(s, ri, &raw) ? raw : s->rt[ri];
}

/* Forget the damaged entries (a rebuild replaced the table). */
void qcow2_rt_damage_clear(struct qcow2 *s)
{
    qrt_bad_vec_reset(&s->rt_bad);
}

/* The refcount table as on disk, for the check's report. */
int qcow2_rt_read_raw(struct qcow2 *s, uint64_t **out)
{
    size_t bytes = (size_t)s->rt_entries * 8;
    CLEANUP_FREE uint8_t *buf = fq_memalign(FQ_MAX(bytes, (size_t)8));
    uint64_t *v = malloc(FQ_MAX(bytes, (size_t)8));
    int r = buf && v ? fq_bdev_pread_sync(s->file, buf, bytes, s->rt_offset) : -ENOMEM;

    if (r < 0) {
        free(v);
        return r;
    }
    for (uint64_t i = 0; i < s->rt_entries; i++)
        v[i] = fq_be64(buf + i * 8);
    *out = v;
    return 0;
}
