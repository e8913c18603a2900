/* rebuild.c: check's repair of damaged refcount structures: new ones
 * built from the references the check counted.
 *
 * A refcount table or block that cannot be trusted (a table entry with
 * reserved bits or unaligned, a block outside the file, a block shared
 * with other metadata or named twice whose content is no refcount block's,
 * the table itself shared, clusters in use that no block covers: an entry
 * zeroed, a table too short) cannot be
 * repaired in place: a write through it would change other metadata, or
 * there is nothing to write into. The pass that reports finds it
 * (ck_rebuild_needed); the pass that repairs then counts without the old
 * blocks (ck_rebuild_begin: the table is set aside in memory, so nothing
 * points into them, no reference is dropped for pointing there and no write
 * is refused because of them) and, once the references it drops are on
 * disk, builds the new structures from the count (ck_rebuild) with the
 * same machinery as amend's change of the refcount width (rcbuild.c): past
 * every cluster in use and past the end of the file, written and flushed,
 * then switched to by one header write. The count does not include the
 * old table and blocks, so they are simply no longer referenced.
 *
 * Crash safety: before the header write is durable, the image on disk is
 * the damaged one (plus unreferenced clusters past its end), which the
 * next check repairs the same way; after it, the new structures hold the
 * counted references exactly. Nothing else is written in between. A count
 * that is incomplete (part of the image could not be read, or a reference
 * past the end of the file stays) would give refcounts too low: no
 * rebuild is made then.
 * SPDX-License-Identifier: MIT
 */
#include <stdio.h>

#include "check.h"

/* Whether an entry of the table on disk has reserved bits or names no
 * usable block (the open set such entries aside, damage.c). */
static bool raw_entries_bad(const struct ck *k)
{
    struct qcow2 *s = k->s;
    CLEANUP_FREE uint64_t *raw = NULL;

    if (s->rt_bad.len)
        return true;
    if (qcow2_rt_read_raw(s, &raw) < 0)
        return false;
    for (uint64_t i = 0; i < s->rt_entries; i++)
        if (raw[i] & RTE_RESERVED_MASK)
            return true;
    return false;
}

/* Whether the cluster that table entry i names holds the refcounts of
 * the clusters it covers (most of those it gives or counts agree): then
 * another reference into it is the bad one (repaired by dropping that
 * reference), not the entry. An L2 table, data or a table named by mistake
 * disagrees almost everywhere. */
static bool block_genuine(const struct ck *k, uint64_t i)
{
    struct qcow2 *s = k->s;
    CLEANUP_FREE uint8_t *buf = fq_memalign(s->cluster_size);
    uint64_t agree = 0, disagree = 0, first = i << s->rb_bits;

    if (!buf || fq_bdev_pread_sync(s->file, buf, s->cluster_size, s->rt[i]) < 0)
        return false;
    for (uint64_t j = 0; j < (1ull << s->rb_bits); j++) {
        uint64_t stored = qcow2_rc_entry(buf, s->refcount_bits, j);
        uint64_t want = first + j < k->nb ? ck_ref(k, first + j) : 0;
        if (stored == want)
            agree += want != 0;
        else
            disagree++;
    }
    return agree > disagree;
}

bool ck_rebuild_needed(const struct ck *k)
{
    struct qcow2 *s = k->s;
    uint64_t span = 1ull << s->rb_bits;

    if (raw_entries_bad(k))
        return true;
    for (uint64_t i = 0; i < s->rt_entries; i++) {
        uint64_t c = s->rt[i] >> s->cluster_bits;
        if (!s->rt[i])
            continue;
        /* a block past the end of the file, further than the repair
         * grows the file for one */
        if (c >= k->fclusters + span)
            return true;
        /* a block shared with other metadata, or named twice (unless it is
         * a sound block that a bad reference points into) */
        if (c < k->fclusters && c < k->nb && (ck_ref(k, c) != 1 || (ck_kind(k, c) & M_SHARED)) &&
            !block_genuine(k, i))
            return true;
    }
    /* the table shares clusters with other metadata */
    for (uint64_t c = s->rt_offset >> s->cluster_bits;
         c < (s->rt_offset >> s->cluster_bits) + s->rt_clusters && c < k->nb; c++)
        if (ck_kind(k, c) & M_SHARED)
            return true;
    /* clusters in use that no block covers */
    for (uint64_t c = 0; c < k->nb; c++) {
        uint64_t ri = c >> s->rb_bits;
        if (ck_ref(k, c) && (ri >= s->rt_entries || !s->rt[ri]))
            return true;
    }
    return false;
}

int ck_rebuild_begin(struct ck *k)
{
    struct qcow2 *s = k->s;
    uint64_t *none = calloc(s->rt_entries, sizeof(uint64_t));

    if (!none)
        return -ENOMEM;
    /* cached blocks of the old structures are clean (the check wrote
     * everything back first) and are never read again */
    for (uint64_t i = 0; i < FQ_MIN(s->rt_hi, s->rt_entries); i++)
        if (s->rt[i])
            qcache_discard(&s->rb_cache, s->rt[i]);
    k->saved_rt = s->rt;
    k->saved_rt_hi = s->rt_hi;
    k->saved_bad = s->rt_bad;
    memset(&s->rt_bad, 0, sizeof(s->rt_bad));
    s->rt = none;
    s->rt_hi = 0;
    qcow2_meta_changed(s);
    k->rebuild = true;
    return 0;
}

/* Put the old table back in memory (the build did not happen). */
static void put_back(struct ck *k)
{
    struct qcow2 *s = k->s;

    free(s->rt);
    s->rt = k->saved_rt;
    s->rt_hi = k->saved_rt_hi;
    k->saved_rt = NULL;
    qcow2_rt_damage_clear(s);
    s->rt_bad = k->saved_bad;
    memset(&k->saved_bad, 0, sizeof(k->saved_bad));
    qcow2_meta_changed(s);
    k->rebuild = false;
}

/* The counted references of cluster c, less the old refcount table's
 * own (it is referenced by the header until the switch, not after). */
static int counted(void *opaque, uint64_t c, uint64_t *v)
{
    const struct ck *k = opaque;
    uint64_t rt0 = k->s->rt_offset >> k->s->cluster_bits;

    *v = c < k->nb ? ck_ref(k, c) : 0;
    if (*v && c >= rt0 && c - rt0 < k->s->rt_clusters)
        (*v)--;
    return 0;
}

int ck_rebuild(struct ck *k, int r)
{
    struct qcow2 *s = k->s;
    char err[FQ_ERR_MAX] = "";

    if (r < 0) {
        put_back(k);
        return r;
    }
    if (k->partial || k->past_kept) {
        ck_say(k, "%s", "ERROR: the refcount structures were not rebuilt: part of the image "
               "could not be counted, or references past the end of the file remain");
        k->res->check_errors++;
        put_back(k);
        return 0;
    }
    ck_say(k, "%s", "Rebuilding refcount structure");
    struct qcow2_rc_source src = { .get = counted, .opaque = k, .limit = k->nb };
    r = qcow2_rc_build(s, s->refcount_bits, &src, err);
    if (r == -ERANGE)
        snprintf(err, sizeof(err), "cluster %llu is referenced %llu times, more than %u-bit "
                 "refcounts hold", (unsigned long long)src.too_big_cluster,
                 (unsigned long long)src.too_big_value, s->refcount_bits);
    if (r < 0) {
        ck_say(k, "ERROR: the refcount structures could not be rebuilt: %s",
               err[0] ? err : strerror(-r));
        k->res->check_errors++;
        /* without the old structures to free, a failure means the switch
         * did not happen or was undone: the old table is the one on disk */
        put_back(k);
        return 0;
    }
    free(k->saved_rt);
    k->saved_rt = NULL;
    qrt_bad_vec_reset(&k->saved_bad);   /* the damaged table is gone */
    /* the file grew by the new structures: what follows reads their
     * refcounts (a block past the old end would read as zeros) */
    int64_t flen = s->file->ops->file_length ? s->file->ops->file_length(s->file)
                                             : (int64_t)s->file->size;
    if (flen > 0 && (uint64_t)flen > k->flen) {
        k->flen = (uint64_t)flen;
        k->fclusters = FQ_DIV_UP(k->flen, s->cluster_size);
    }
    return 0;
}
