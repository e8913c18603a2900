/* check.c: consistency check and repair.
 *
 * The check counts every reference to every host cluster (header, L1 and
 * L2 tables of the active state and of each snapshot, data and compressed
 * clusters, refcount table and blocks, snapshot table, bitmap directory,
 * tables and data) and compares the counts with the stored refcounts. A
 * stored refcount below the count is a corruption; above it, a leak. It
 * also checks the COPIED flag of active L1/L2 entries, every reserved bit,
 * the snapshot table entries, and two rules the refcounts alone miss:
 *
 *  - Nothing may lie a cluster or more past the end of the file (as
 *    qemu-img counts it: the last cluster may be partly written).
 *  - Metadata is never shared: the header, the L1 tables, the refcount
 *    table and blocks, the snapshot table and the bitmaps are referenced
 *    exactly once, and an L2 table only by L1 entries (of any number of
 *    L1 tables). Exclusive metadata is marked first, then every L2 table,
 *    then the data entries are walked; an entry pointing into metadata
 *    marked before it is the bad reference.
 *
 * Repair (check_repair.c holds the actions) zeroes the bad
 * references it can (data and compressed entries, L1 entries), writes
 * them before any refcount changes, then sets refcounts to the counted
 * values (never raising the refcount of shared metadata), fixes COPIED
 * flags and the snapshot table; the image is checked again and what is
 * left is reported. A repair that leaves no corruption clears the dirty
 * and corrupt bits.
 * SPDX-License-Identifier: MIT
 */
#include <stdarg.h>
#include <stdio.h>

#include "check.h"

void ck_say(struct ck *k, const char *fmt, ...)
{
    char line[512];
    va_list ap;

    if (!k->msg || (k->only_repairs && strncmp(fmt, "Repairing", 9) && strncmp(fmt, "%s", 2)))
        return;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    k->msg(k->opaque, line);
}

static const char *const kind_names[] = {
    [M_L2] = "L2 table", [M_HEADER] = "header", [M_L1] = "L1 table",
    [M_RT] = "refcount table", [M_RB] = "refcount block", [M_SNAPTAB] = "snapshot table",
    [M_SNAPL1] = "snapshot L1 table", [M_BITMAP] = "bitmap",
};

/* True if [off, off+len) ends a cluster or more past the end of the file. */
bool ck_past_eof(const struct ck *k, uint64_t off, uint64_t len)
{
    uint64_t end;

    return fq_add_ovf(off, len, &end) || end - FQ_MIN(end, k->flen) >= k->s->cluster_size;
}

/* Count one reference to each cluster of [off, off+len) that the count
 * covers; a range past the end of the file is a corruption (counted all
 * the same, so that a repair never frees what it points at). Returns
 * false for such a range. */
static bool inc(struct ck *k, uint64_t off, uint64_t len)
{
    struct qcow2 *s = k->s;

    if (len == 0)
        return true;
    bool past = ck_past_eof(k, off, len);
    if (past) {
        ck_say(k, "ERROR: counting reference for region exceeding the end of the file by one "
               "cluster or more: offset 0x%llx size 0x%llx", (unsigned long long)off,
               (unsigned long long)len);
        k->res->corruptions++;
        k->past_kept = true;
    }
    uint64_t first = off >> s->cluster_bits;
    uint64_t last = (FQ_MIN(off, UINT64_MAX - len) + len - 1) >> s->cluster_bits;
    for (uint64_t c = first; c <= last && c < k->nb; c++)
        k->refs[c]++;
    if (!past && last >= k->fclusters)
        k->tail_ref = true;
    return !past;
}

/* Count [off, off+len) as metadata of kind `m`: a cluster another table
 * already holds is shared (only L2 tables may be held many times). */
static void mark(struct ck *k, uint64_t off, uint64_t len, uint8_t m)
{
    struct qcow2 *s = k->s;

    if (len == 0)
        return;
    inc(k, off, len);
    uint64_t first = off >> s->cluster_bits;
    uint64_t last = (FQ_MIN(off, UINT64_MAX - len) + len - 1) >> s->cluster_bits;
    for (uint64_t c = first; c <= last && c < k->nb; c++) {
        uint8_t old = k->kind[c] & M_KIND;
        if (!old)
            k->kind[c] = m;
        else if (old != M_L2 || m != M_L2)
            k->kind[c] |= M_SHARED;
    }
}

/* Kind of the first metadata cluster of [off, off+len) (0: none). */
static uint8_t meta_at(const struct ck *k, uint64_t off, uint64_t len, uint64_t *cluster)
{
    uint64_t first = off >> k->s->cluster_bits, last = (off + len - 1) >> k->s->cluster_bits;

    for (uint64_t c = first; c <= last && c < k->nb; c++)
        if (k->kind[c] & M_KIND) {
            *cluster = c;
            return k->kind[c] & M_KIND;
        }
    return 0;
}

/* Count the reference of an entry to [off, off+len) (as kind `as`: an L2
 * table, or 0 for data), unless it is bad: beyond the end of the file, or
 * into metadata (any for data, exclusive for an L2 table). A repair drops a
 * bad reference (the caller zeroes the entry) if `can_drop`. Returns true
 * for a reference to drop. */
static bool ref_entry(struct ck *k, uint64_t off, uint64_t len, uint8_t as, bool can_drop,
                      const char *where)
{
    uint64_t c = 0;
    uint8_t m = meta_at(k, off, len, &c);
    bool fix = (k->repair & FQ_CHECK_REPAIR_ERRORS) && can_drop;

    if (ck_past_eof(k, off, len)) {
        if (!fix)
            return inc(k, off, len), false;
        /* reported in qemu-img's words by the pass that only reports */
        ck_say(k, "Repairing %s: it points beyond the end of the file (offset 0x%llx); "
               "entry cleared", where, (unsigned long long)off);
    } else if (m && (as != M_L2 || m != M_L2)) {
        /* an L1 entry into a refcount block, a snapshot L1 table or a
         * bitmap may be the good one of the two (and a whole table of
         * data would go with it): dropped only if the cluster is no L2
         * table */
        if (fix && as == M_L2 && m != M_HEADER && m != M_L1 && m != M_RT && m != M_SNAPTAB)
            fix = !ck_looks_like_l2(k, off);
        if (fix || !k->only_repairs)
            ck_say(k, "%s %s: it points into the %s at cluster %llu%s", fix ? "Repairing" : "ERROR",
                   where, kind_names[m], (unsigned long long)c, fix ? "; entry cleared" : "");
        if (!fix) {
            /* one corruption, counted where the refcounts are compared */
            inc(k, off, len);
            k->kind[c] |= M_SHARED;
            return false;
        }
    } else {
        if (as)
            mark(k, off, len, as);
        else
            inc(k, off, len);
        return false;
    }
    k->res->corruptions++;
    k->res->corruptions_fixed++;
    k->dropped = true;
    return true;
}

/* True if [off, off+len) lies in the file and shares no cluster. */
static bool range_clean(const struct ck *k, uint64_t off, uint64_t len)
{
    if (ck_past_eof(k, off, len))
        return false;
    for (uint64_t c = off >> k->s->cluster_bits; len && c <= (off + len - 1) >> k->s->cluster_bits; c++)
        if (c >= k->nb || (k->kind[c] & M_SHARED))
            return false;
    return true;
}

/* ---- counting ---- */

/* Walk the entries of the L2 table at `l2off`. An unaligned table (a
 * damaged L1 entry) is read as it is, as qemu-img does, only to count the
 * clusters it may name: a repair frees nothing it could still use. */
static void walk_l2(struct ck *k, uint64_t l2off, bool active)
{
    struct qcow2 *s = k->s;
    struct qcache_entry *t = NULL;
    CLEANUP_FREE uint8_t *buf = NULL;
    uint64_t next_host = 0;       /* fragmentation counts within one table */
    char where[96];
    int r;

    if (FQ_IS_ALIGNED(l2off, s->cluster_size))
        r = qcache_get(&s->l2_cache, l2off, false, &t);
    else
        r = (buf = malloc(s->cluster_size)) ? fq_bdev_pread_sync(s->file, buf, s->cluster_size, l2off)
                                            : -ENOMEM;
    if (r < 0) {
        ck_say(k, "ERROR: could not read L2 table at 0x%llx: %s", (unsigned long long)l2off, strerror(-r));
        k->res->check_errors++;
        k->partial = true;
        return;
    }
    uint8_t *l2 = t ? t->data : buf;
    bool fix = (k->repair & FQ_CHECK_REPAIR_ERRORS) && t;
    for (uint64_t i = 0; i < s->l2_entries; i++) {
        uint64_t e = qcow2_l2e_get(s, l2, i), bm = qcow2_l2e_bitmap(s, l2, i);
        snprintf(where, sizeof(where), "L2 entry %llu in the table at 0x%llx", (unsigned long long)i,
                 (unsigned long long)l2off);
        if (e & L2E_COMPRESSED) {
            uint64_t host, n;
            bool stats = active;
            qcow2_compressed_loc(s, e, &host, &n);
            if (e & L2E_COPIED) {
                if (fix || !k->only_repairs)
                    ck_say(k, "%s: compressed cluster L2 entry 0x%llx has the copied flag",
                           fix ? "Repairing" : "ERROR", (unsigned long long)e);
                k->res->corruptions++;
                if (fix) {
                    e &= ~L2E_COPIED;
                    qcow2_l2e_set(s, l2, i, e, bm);
                    qcache_mark_dirty(t);
                    k->res->corruptions_fixed++;
                    k->dropped = true;
                }
            }
            if (s->extl2 && bm) {
                /* qemu-img leaves the entry out of its figures */
                if (fix || !k->only_repairs)
                    ck_say(k, "%s compressed cluster %llu with non-zero subcluster allocation "
                           "bitmap, entry=0x%llx", fix ? "Repairing" : "ERROR",
                           (unsigned long long)i, (unsigned long long)e);
                k->res->corruptions++;
                stats = false;
                if (fix) {
                    qcow2_l2e_set(s, l2, i, e, 0);
                    qcache_mark_dirty(t);
                    k->res->corruptions_fixed++;
                    k->dropped = true;
                }
            }
            if (stats) {
                /* compressed clusters count as fragmented, as qemu-img does */
                k->res->allocated_clusters++;
                k->res->compressed_clusters++;
                k->res->fragmented_clusters++;
            }
            if (ref_entry(k, host, n, 0, t != NULL, where))
                ck_drop_l2e(k, t, i);
            continue;
        }
        uint64_t off = e & L2E_OFFSET_MASK;
        uint64_t reserved = L2E_STD_RESERVED | ((s->version < 3 || s->extl2) ? L2E_ZERO : 0);
        /* an invalid entry is reported, and its clusters still counted */
        if ((e & reserved) || (off & (s->cluster_size - 1))) {
            ck_say(k, "ERROR: invalid L2 entry 0x%llx in table at 0x%llx (index %llu)",
                (unsigned long long)e, (unsigned long long)l2off, (unsigned long long)i);
            k->res->corruptions++;
        }
        if (s->extl2 && ((bm & 0xffffffffull) & (bm >> 32))) {
            ck_say(k, "ERROR: L2 entry %llu in table at 0x%llx: subclusters both allocated and zero",
                (unsigned long long)i, (unsigned long long)l2off);
            k->res->corruptions++;
        }
        if (s->extl2 && (bm & 0xffffffffull) && !off) {
            ck_say(k, "ERROR: L2 entry %llu in table at 0x%llx: allocated subclusters without a cluster",
                (unsigned long long)i, (unsigned long long)l2off);
            k->res->corruptions++;
        }
        if (!off)
            continue;
        if (active) {
            k->res->allocated_clusters++;
            if (next_host && off != next_host)
                k->res->fragmented_clusters++;
            next_host = off + s->cluster_size;
        }
        if (ref_entry(k, off, s->cluster_size, 0, t != NULL, where))
            ck_drop_l2e(k, t, i);
    }
    if (t)
        qcache_put(&s->l2_cache, t);
}

/* Whether an L1 entry names a sound L2 table (COPIED flags are checked). */
static bool is_l2(const struct ck *k, uint64_t e)
{
    uint64_t off = e & L1E_OFFSET_MASK, c = off >> k->s->cluster_bits;

    return off && FQ_IS_ALIGNED(off, k->s->cluster_size) && c < k->nb &&
           (k->kind[c] & M_KIND) == M_L2 && !ck_past_eof(k, off, k->s->cluster_size);
}

/* Whether the table an L1 entry names is walked: a sound one, or an
 * unaligned one inside the file. */
static bool walked(const struct ck *k, uint64_t e)
{
    uint64_t off = e & L1E_OFFSET_MASK;

    return is_l2(k, e) || (off && !FQ_IS_ALIGNED(off, k->s->cluster_size) &&
                           !ck_past_eof(k, off, k->s->cluster_size));
}

/* Count the L2 tables an L1 table names (snapshot `sn`, -1: active). */
static void l1_refs(struct ck *k, uint64_t *l1, uint32_t l1_size, long sn)
{
    struct qcow2 *s = k->s;
    char where[96];
    /* the table an entry is zeroed in must be sound itself */
    bool can_drop = sn < 0 ? range_clean(k, s->l1_offset, (uint64_t)s->l1_size * 8)
                           : range_clean(k, k->sn[sn].l1_offset, (uint64_t)l1_size * 8);

    for (uint32_t i = 0; i < l1_size; i++) {
        uint64_t e = l1[i], off = e & L1E_OFFSET_MASK;
        if (!e)
            continue;
        if (e & L1E_RESERVED_MASK) {
            ck_say(k, "ERROR: L1 entry %u (0x%llx) has reserved bits set", i, (unsigned long long)e);
            k->res->corruptions++;
        }
        if (off & (s->cluster_size - 1)) {
            /* counted, and walked, as qemu-img does; not repaired */
            ck_say(k, "ERROR l2_offset=%llx: Table is not cluster aligned; L1 entry corrupted",
                (unsigned long long)off);
            k->res->corruptions++;
            inc(k, off, s->cluster_size);
            continue;
        }
        if (sn < 0)
            snprintf(where, sizeof(where), "L1 entry %u", i);
        else
            snprintf(where, sizeof(where), "L1 entry %u of snapshot %ld", i, sn);
        /* flags with an offset of 0 name the header, as qemu-img reads them */
        if (ref_entry(k, off, s->cluster_size, M_L2, can_drop, where))
            ck_drop_l1e(k, l1, i, sn);
    }
}

static void count_bitmaps(struct ck *k)
{
    struct qcow2 *s = k->s;

    for (size_t i = 0; i < s->exts.len; i++) {
        struct qext *x = &s->exts.ptr[i];
        if (x->type != QEXT_BITMAPS || x->len < 24)
            continue;
        uint64_t dsize = fq_be64(x->data + 8), doff = fq_be64(x->data + 16);
        if (dsize > (64u << 20) || !FQ_IS_ALIGNED(doff, s->cluster_size)) {
            ck_say(k, "ERROR: invalid bitmap directory (offset 0x%llx, %llu bytes)",
                   (unsigned long long)doff, (unsigned long long)dsize);
            k->res->corruptions++;
            continue;
        }
        mark(k, doff, dsize, M_BITMAP);
        CLEANUP_FREE uint8_t *dir = malloc(dsize ? dsize : 1);
        if (!dir || fq_bdev_pread_sync(s->file, dir, dsize, doff) < 0) {
            k->res->check_errors++;
            k->partial = true;
            continue;
        }
        for (uint64_t p = 0; p + 24 <= dsize;) {
            uint64_t toff = fq_be64(dir + p);
            uint32_t tsize = fq_be32(dir + p + 8);
            uint16_t nlen = fq_be16(dir + p + 18);
            uint32_t elen = fq_be32(dir + p + 20);
            if ((uint64_t)tsize * 8 > QCOW2_MAX_L1_BYTES || elen > (1u << 20))
                break;
            mark(k, toff, (uint64_t)tsize * 8, M_BITMAP);
            CLEANUP_FREE uint8_t *tab = malloc((size_t)tsize * 8 + 1);
            if (tab && fq_bdev_pread_sync(s->file, tab, (size_t)tsize * 8, toff) == 0)
                for (uint32_t j = 0; j < tsize; j++) {
                    uint64_t d = fq_be64(tab + (size_t)j * 8) & L2E_OFFSET_MASK;
                    if (d)
                        mark(k, d, s->cluster_size, M_BITMAP);
                }
            p += FQ_ALIGN_UP(24 + (uint64_t)elen + nlen, 8);
        }
    }
}

/* The snapshot table and the L1 tables of the snapshots. */
static void count_snapshots(struct ck *k)
{
    struct qcow2 *s = k->s;
    char err[FQ_ERR_MAX] = "";
    bool fix = k->repair & FQ_CHECK_REPAIR_ERRORS;

    if (qcow2_read_snapshots(s, &k->sn, &k->nsn, &k->tbytes, err) < 0) {
        ck_say(k, "ERROR: %s", err);
        k->res->corruptions++;
        k->nsn = 0;
        k->partial = true;
        return;
    }
    for (size_t i = 0; i < k->nsn; i++)
        if (s->version >= 3 && k->sn[i].extra_len < 16) {
            /* said once, as qemu-img does: by the pass that repairs it */
            if (fix || (!k->only_repairs && !(k->next_repair & FQ_CHECK_REPAIR_ERRORS)))
                ck_say(k, "%s snapshot table entry %zu is incomplete", fix ? "Repairing" : "ERROR", i);
            k->res->corruptions++;
            k->incomplete++;
        }
    k->snl1 = calloc(k->nsn ? k->nsn : 1, sizeof(*k->snl1));
    if (!k->snl1) {
        k->res->check_errors++;
        k->nsn = 0;
        k->partial = true;
    }
    mark(k, s->snapshots_offset, k->tbytes, M_SNAPTAB);
    for (size_t i = 0; i < k->nsn; i++) {
        mark(k, k->sn[i].l1_offset, (uint64_t)k->sn[i].l1_size * 8, M_SNAPL1);
        if (qcow2_read_l1(s, k->sn[i].l1_offset, k->sn[i].l1_size, &k->snl1[i]) < 0) {
            k->res->check_errors++;
            k->partial = true;
        }
    }
}

/* Count every reference: exclusive metadata, then L2 tables, then data. */
static void count_all(struct ck *k)
{
    struct qcow2 *s = k->s;

    count_snapshots(k);
    mark(k, 0, s->cluster_size, M_HEADER);
    mark(k, s->l1_offset, (uint64_t)s->l1_size * 8, M_L1);
    count_bitmaps(k);
    mark(k, s->rt_offset, (uint64_t)s->rt_clusters * s->cluster_size, M_RT);
    for (uint64_t i = 0; i < s->rt_entries; i++)
        if (s->rt[i] && (s->rt[i] >> s->cluster_bits) < k->fclusters)
            mark(k, s->rt[i], s->cluster_size, M_RB);

    l1_refs(k, s->l1, s->l1_size, -1);
    for (size_t i = 0; i < k->nsn; i++)
        if (k->snl1[i])
            l1_refs(k, k->snl1[i], k->sn[i].l1_size, (long)i);
    for (uint32_t i = 0; i < s->l1_size; i++)
        if (walked(k, s->l1[i]))
            walk_l2(k, s->l1[i] & L1E_OFFSET_MASK, true);
    for (size_t i = 0; i < k->nsn; i++)
        for (uint32_t j = 0; k->snl1[i] && j < k->sn[i].l1_size; j++)
            if (walked(k, k->snl1[i][j]))
                walk_l2(k, k->snl1[i][j] & L1E_OFFSET_MASK, false);

    /* refcount blocks: inside the file, referenced once (qemu-img's words) */
    for (uint64_t i = 0; i < s->rt_entries; i++) {
        uint64_t c = s->rt[i] >> s->cluster_bits;
        if (!s->rt[i])
            continue;
        if (c >= k->fclusters) {
            ck_say(k, "ERROR refcount block %llu is outside image", (unsigned long long)i);
            k->res->corruptions++;
        } else if (k->refs[c] != 1) {
            ck_say(k, "ERROR refcount block %llu refcount=%llu", (unsigned long long)i,
                   (unsigned long long)k->refs[c]);
            k->res->corruptions++;
        }
    }
}

/* Whether refcounts of cluster c may be written: its refcount block is
 * in the file and sound (a block that is shared would change the
 * refcounts of other clusters too). */
static bool rb_sound(const struct ck *k, uint64_t c)
{
    uint64_t ri = c >> k->s->rb_bits, b;

    if (ri >= k->s->rt_entries || !k->s->rt[ri])
        return false;
    b = k->s->rt[ri] >> k->s->cluster_bits;
    return b < k->fclusters && k->refs[b] == 1 && !(k->kind[b] & M_SHARED);
}

/* The stored refcount of cluster c; a refcount block past the end of the
 * file reads as zeros (as qemu-img reads it), without touching it. */
static int get_rc(const struct ck *k, uint64_t c, uint64_t *rc)
{
    uint64_t ri = c >> k->s->rb_bits;

    if (ri < k->s->rt_entries && (k->s->rt[ri] >> k->s->cluster_bits) >= k->fclusters) {
        *rc = 0;
        return 0;
    }
    return qcow2_get_refcount(k->s, c, rc);
}

/* Compare the counts with the stored refcounts (and fix them). */
static void compare_refcounts(struct ck *k)
{
    struct qcow2 *s = k->s;
    /* what qemu-img compares: the clusters of the file; a repair also
     * releases refcounts of clusters past it that nothing references */
    uint64_t in_file = k->fclusters + k->tail_ref;
    uint64_t end = k->repair ? k->nb : in_file;

    for (uint64_t c = 0; c < end; c++) {
        uint64_t rc;
        int r = get_rc(k, c, &rc);
        if (r < 0) {
            ck_say(k, "ERROR: could not read the refcount of cluster %llu: %s",
                   (unsigned long long)c, strerror(-r));
            k->res->check_errors++;
            continue;
        }
        uint64_t ref = k->refs[c];
        bool shared = k->kind[c] & M_SHARED;
        if ((rc || ref) && c < in_file)
            k->res->image_end_offset = (c + 1) << s->cluster_bits;
        if (rc == ref) {
            if (shared && (k->kind[c] & M_KIND) != M_RB) {
                /* refcounts that agree with a reference too many */
                ck_say(k, "ERROR cluster %llu refcount=%llu reference=%llu: %s shared with other "
                       "data", (unsigned long long)c, (unsigned long long)rc,
                       (unsigned long long)ref, kind_names[k->kind[c] & M_KIND]);
                k->res->corruptions++;
            }
            continue;
        }
        bool leak = rc > ref;
        /* metadata that is shared keeps its refcount (raising it would
         * make the sharing look legitimate), and no leak is released
         * while part of the image could not be walked */
        bool fix = (leak ? (k->repair & FQ_CHECK_REPAIR_LEAKS) && !k->partial
                         : (k->repair & FQ_CHECK_REPAIR_ERRORS) && !shared) && rb_sound(k, c);
        if (fix || !k->only_repairs)
            ck_say(k, "%s cluster %llu refcount=%llu reference=%llu",
                   fix ? "Repairing" : leak ? "Leaked" : "ERROR",
                   (unsigned long long)c, (unsigned long long)rc, (unsigned long long)ref);
        if (leak)
            k->res->leaks++;
        else
            k->res->corruptions++;
        if (!fix)
            continue;
        /* lowering a refcount drops the cluster from the metadata caches:
         * the refcounts fixed so far in a block being lowered must be
         * written first */
        if (leak && (k->kind[c] & M_KIND) == M_RB && (r = qcow2_writeback(s)) < 0) {
            k->res->check_errors++;
            continue;
        }
        r = qcow2_update_refcount(s, c << s->cluster_bits, 1, (int64_t)(ref - rc));
        if (r < 0) {
            ck_say(k, "ERROR: could not repair the refcount of cluster %llu: %s",
                   (unsigned long long)c, strerror(-r));
            k->res->check_errors++;
        } else if (leak) {
            k->res->leaks_fixed++;
        } else {
            k->res->corruptions_fixed++;
        }
    }
}

/* COPIED must be set exactly when the refcount is 1 (active tables). A
 * repair of leaks fixes the flags too when nothing else is left, as the
 * refcounts it lowered to 1 leave them clear. */
static void check_copied(struct ck *k)
{
    struct qcow2 *s = k->s;
    struct fq_check_result *res = k->res;
    bool fix = (k->repair & FQ_CHECK_REPAIR_ERRORS) ||
               ((k->repair & FQ_CHECK_REPAIR_LEAKS) && !res->check_errors &&
                res->corruptions == res->corruptions_fixed && res->leaks == res->leaks_fixed);
    /* an L1 table that shares clusters with other metadata is not written */
    bool fix_l1 = fix && range_clean(k, s->l1_offset, (uint64_t)s->l1_size * 8);

    for (uint32_t i = 0; i < s->l1_size; i++) {
        uint64_t e = s->l1[i], off = e & L1E_OFFSET_MASK, rc;
        if (!is_l2(k, e) || get_rc(k, off >> s->cluster_bits, &rc) < 0)
            continue;
        if ((rc == 1) != ((e & L2E_COPIED) != 0)) {
            if (fix_l1 || !k->only_repairs)
                ck_say(k, "%s OFLAG_COPIED L2 cluster: l1_index=%u l1_entry=%llx refcount=%llu",
                       fix_l1 ? "Repairing" : "ERROR", i, (unsigned long long)e, (unsigned long long)rc);
            res->corruptions++;
            if (fix_l1) {
                s->l1[i] = rc == 1 ? e | L2E_COPIED : e & ~L2E_COPIED;
                qcow2_mark_l1_dirty(s, i);
                res->corruptions_fixed++;
            }
        }
        struct qcache_entry *t;
        if (qcache_get(&s->l2_cache, off, false, &t) < 0)
            continue;
        for (uint64_t j = 0; j < s->l2_entries; j++) {
            uint64_t l2e = qcow2_l2e_get(s, t->data, j), d = l2e & L2E_OFFSET_MASK, c = 0;
            if ((l2e & L2E_COMPRESSED) || !d || (d & (s->cluster_size - 1)) ||
                ck_past_eof(k, d, s->cluster_size) || meta_at(k, d, s->cluster_size, &c))
                continue;
            if (get_rc(k, d >> s->cluster_bits, &rc) < 0)
                continue;
            if ((rc == 1) != ((l2e & L2E_COPIED) != 0)) {
                if (fix || !k->only_repairs)
                    ck_say(k, "%s OFLAG_COPIED data cluster: l2_entry=%llx refcount=%llu",
                           fix ? "Repairing" : "ERROR", (unsigned long long)l2e, (unsigned long long)rc);
                res->corruptions++;
                if (fix) {
                    uint64_t ne = rc == 1 ? l2e | L2E_COPIED : l2e & ~L2E_COPIED;
                    qcow2_l2e_set(s, t->data, j, ne, qcow2_l2e_bitmap(s, t->data, j));
                    qcache_mark_dirty(t);
                    res->corruptions_fixed++;
                }
            }
        }
        qcache_put(&s->l2_cache, t);
    }
}

/* One pass: count, compare, and repair what `repair` asks for; `next`:
 * the repair a pass that only reports is followed by. `rebuild` (may be
 * NULL): a pass that reports says whether the refcount structures need a
 * rebuild; one that repairs rebuilds them if it is true, and says whether
 * it did (rebuild.c). */
static int check_pass(struct qcow2 *s, unsigned repair, unsigned next, bool *rebuild,
                      struct fq_check_result *res, fq_msg_fn *msg, void *opaque)
{
    struct ck k = { .s = s, .res = res, .msg = msg, .opaque = opaque, .repair = repair,
                    .only_repairs = repair != 0, .next_repair = next };
    int r = 0;

    if (rebuild && *rebuild && (repair & FQ_CHECK_REPAIR_ERRORS) && (r = ck_rebuild_begin(&k)) < 0)
        return r;
    if (repair & FQ_CHECK_REPAIR_ERRORS)
        ck_extend_for_refblocks(&k);
    int64_t flen = s->file->ops->file_length ? s->file->ops->file_length(s->file)
                                             : (int64_t)s->file->size;
    k.flen = flen > 0 ? (uint64_t)flen : 0;
    k.fclusters = FQ_DIV_UP(k.flen, s->cluster_size);
    /* the clusters of the file, one more for a last cluster partly in it,
     * and those of refcount blocks up to one block's span past it */
    k.nb = k.fclusters + 1;
    for (uint64_t ri = 0; ri < s->rt_entries; ri++)
        if (s->rt[ri])
            k.nb = FQ_MAX(k.nb, FQ_MIN((ri + 1) << s->rb_bits, k.fclusters + (1ull << s->rb_bits)));
    k.refs = calloc(k.nb, sizeof(uint64_t));
    k.kind = calloc(k.nb, 1);
    if (!k.refs || !k.kind) {
        free(k.refs);
        free(k.kind);
        return k.rebuild ? ck_rebuild(&k, -ENOMEM) : -ENOMEM;
    }
    count_all(&k);
    /* cleared references are on disk before any refcount drops */
    if (k.dropped && (r = qcow2_writeback(s)) == 0)
        r = qcow2_flush_file(s);
    /* a rebuild that did not happen leaves refcounts that nothing may be
     * derived from */
    bool sound = true;
    if (k.rebuild) {
        r = ck_rebuild(&k, r);
        sound = k.rebuild;
    } else if (r == 0) {
        compare_refcounts(&k);
    }
    if (r == 0 && rebuild)
        *rebuild = repair ? k.rebuild : ck_rebuild_needed(&k);
    if (r == 0 && sound)
        check_copied(&k);
    if (r == 0 && sound && k.incomplete && (repair & FQ_CHECK_REPAIR_ERRORS))
        ck_fix_snapshot_table(&k);
    res->total_clusters = FQ_DIV_UP(s->bs->size, s->cluster_size);
    for (size_t i = 0; k.snl1 && i < k.nsn; i++)
        free(k.snl1[i]);
    free(k.snl1);
    qcow2_snapshots_free(k.sn, k.nsn);
    free(k.refs);
    free(k.kind);
    return r;
}

int qcow2_check(struct fq_bdev *bs, unsigned repair, struct fq_check_result *res,
                fq_msg_fn *msg, void *opaque)
{
    struct qcow2 *s = bs->priv;
    struct fq_check_result found;
    int r;

    if (repair && s->readonly)
        return -EROFS;
    if (!s->readonly) {
        r = qcow2_writeback(s);
        if (r < 0)
            return r;
    }
    /* report every finding first, then repair (reporting the repairs),
     * then check again: what remains is the result */
    bool rebuild = false;
    memset(res, 0, sizeof(*res));
    r = check_pass(s, 0, repair, (repair & FQ_CHECK_REPAIR_ERRORS) ? &rebuild : NULL, res, msg, opaque);
    if (r < 0 || !repair)
        return r;
    if (res->corruptions || res->leaks) {
        found = *res;
        memset(res, 0, sizeof(*res));
        r = check_pass(s, repair, 0, &rebuild, res, msg, opaque);
        if (r < 0)
            return r;
        if (!rebuild && res->corruptions_fixed == 0 && res->leaks_fixed == 0) {
            *res = found;
            return ck_mark_clean(s, res);
        }
        /* write the repairs, then check again */
        r = qcow2_writeback(s);
        if (r == 0)
            r = fq_bdev_flush_sync(s->file);
        if (r < 0)
            return r;
        struct fq_check_result again;
        memset(&again, 0, sizeof(again));
        r = check_pass(s, 0, 0, NULL, &again, NULL, NULL);
        if (r < 0)
            return r;
        again.corruptions_fixed = res->corruptions_fixed;
        again.leaks_fixed = res->leaks_fixed;
        if (rebuild) {
            /* every refcount was written anew: what was found and is gone
             * was repaired */
            again.corruptions_fixed = FQ_MAX(again.corruptions_fixed,
                                             found.corruptions - FQ_MIN(found.corruptions, again.corruptions));
            again.leaks_fixed = FQ_MAX(again.leaks_fixed, found.leaks - FQ_MIN(found.leaks, again.leaks));
        }
        *res = again;
    }
    return ck_mark_clean(s, res);
}
