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
 * Cost follows the metadata: the L2 tables are read many at once in host
 * order (scan.c) into buffers of the pass's own, never through the
 * metadata cache; the refcount blocks likewise, in table order, by the
 * comparison (check_compare.c); nothing is formatted unless it is printed
 * (check_state.c holds the per-cluster state, about 1.4 bytes per cluster
 * of the file, and the messages). The active L2 tables are read a second
 * time only when the COPIED flags they gave a cluster may disagree with
 * its refcount.
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
#include <stdio.h>

#include "check.h"
#include "scan.h"

const char *const ck_kind_names[] = {
    [M_L2] = "L2 table", [M_HEADER] = "header", [M_L1] = "L1 table",
    [M_RT] = "refcount table", [M_RB] = "refcount block", [M_SNAPTAB] = "snapshot table",
    [M_SNAPL1] = "snapshot L1 table", [M_BITMAP] = "bitmap", [M_CRYPT] = "encryption header",
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
        ck_ref_inc(k, c);
    if (!past && last >= k->fclusters)
        k->tail_ref = true;
    return !past;
}

/* Say what the clusters of [off, off+len) hold (counted already): a
 * second claim on a cluster makes it shared, a corruption. */
static void claim(struct ck *k, uint64_t off, uint64_t len, uint8_t m)
{
    struct qcow2 *s = k->s;
    uint64_t first = off >> s->cluster_bits;
    uint64_t last = (FQ_MIN(off, UINT64_MAX - len) + len - 1) >> s->cluster_bits;

    for (uint64_t c = first; c <= last && c < k->nb; c++) {
        uint8_t kind = ck_kind(k, c), old = kind & M_KIND;
        if (!old)
            ck_kind_set(k, c, m);
        else if (old != M_L2 || m != M_L2)
            ck_kind_set(k, c, kind | M_SHARED);
    }
}

/* Count [off, off+len) as metadata of kind `m`: a cluster another table
 * already holds is shared (only L2 tables may be held many times). */
static void mark(struct ck *k, uint64_t off, uint64_t len, uint8_t m)
{
    if (len == 0)
        return;
    inc(k, off, len);
    claim(k, off, len, m);
}

/* Kind of the first metadata cluster of [off, off+len) (0: none). */
uint8_t ck_meta_at(const struct ck *k, uint64_t off, uint64_t len, uint64_t *cluster)
{
    uint64_t first = off >> k->s->cluster_bits, last = (off + len - 1) >> k->s->cluster_bits;

    for (uint64_t c = first; c <= last && c < k->nb; c++)
        if (ck_bit(k->is_meta, c)) {
            *cluster = c;
            return ck_kind(k, c) & M_KIND;
        }
    return 0;
}

/* Which entry a reference comes from, formatted only for a message. */
struct where {
    bool l2;                  /* L2 entry i of the table at `table`, else L1 entry i */
    uint64_t i, table;
    long sn;                  /* L1: the snapshot's, -1 for the active table */
};

static const char *where_str(const struct where *w, char *buf, size_t n)
{
    if (w->l2)
        snprintf(buf, n, "L2 entry %llu in the table at 0x%llx", (unsigned long long)w->i,
                 (unsigned long long)w->table);
    else if (w->sn < 0)
        snprintf(buf, n, "L1 entry %llu", (unsigned long long)w->i);
    else
        snprintf(buf, n, "L1 entry %llu of snapshot %ld", (unsigned long long)w->i, w->sn);
    return buf;
}

/* The cache's copy of the walked table, to change it: the repair pass
 * reads what the walk read (the cache holds no change of this pass, see
 * CK_TABLE_CHANGED). Returns false if it cannot be had. */
bool ck_walk_writable(struct ck *k, struct ck_walk *w)
{
    struct qcow2 *s = k->s;

    if (w->t)
        return true;
    if (!w->can_fix || qcache_get(&s->l2_cache, w->off, false, &w->t) < 0) {
        w->t = NULL;
        w->can_fix = false;
        return false;
    }
    w->l2 = w->t->data;
    uint64_t c = w->off >> s->cluster_bits;
    if (c < k->nb && ck_bit(k->is_meta, c))
        ck_map_set(k, &k->kinds, c, ck_map_get(&k->kinds, c) | CK_TABLE_CHANGED);
    return true;
}

/* Count the reference of an entry to [off, off+len) (as kind `as`: an L2
 * table, or 0 for data), unless it is bad: beyond the end of the file, or
 * into metadata (any for data, exclusive for an L2 table). A repair drops a
 * bad reference (the caller zeroes the entry) if `can_drop` (and, for an
 * L2 entry, the table `w` can be changed). Returns true for a reference
 * to drop. */
static bool ref_entry(struct ck *k, uint64_t off, uint64_t len, uint8_t as, bool can_drop,
                      const struct where *at, struct ck_walk *w)
{
    uint64_t c = 0;
    uint8_t m = ck_meta_at(k, off, len, &c);
    bool fix = (k->repair & FQ_CHECK_REPAIR_ERRORS) && can_drop;
    char wb[96];

    if (ck_past_eof(k, off, len)) {
        if (fix && w)
            fix = ck_walk_writable(k, w);
        if (!fix)
            return inc(k, off, len), false;
        /* reported in qemu-img's words by the pass that only reports */
        if (k->msg)
            ck_say(k, "Repairing %s: it points beyond the end of the file (offset 0x%llx); "
                   "entry cleared", where_str(at, wb, sizeof(wb)), (unsigned long long)off);
    } else if (m && (as != M_L2 || m != M_L2)) {
        /* an L1 entry into a refcount block, a snapshot L1 table or a
         * bitmap may be the good one of the two (and a whole table of
         * data would go with it): dropped only if the cluster is no L2
         * table */
        if (fix && as == M_L2 && m != M_HEADER && m != M_L1 && m != M_RT && m != M_SNAPTAB &&
            m != M_CRYPT)
            fix = !ck_looks_like_l2(k, off);
        if (fix && w)
            fix = ck_walk_writable(k, w);
        if ((fix || !k->only_repairs) && k->msg)
            ck_say(k, "%s %s: it points into the %s at cluster %llu%s", fix ? "Repairing" : "ERROR",
                   where_str(at, wb, sizeof(wb)), ck_kind_names[m], (unsigned long long)c,
                   fix ? "; entry cleared" : "");
        if (!fix) {
            /* one corruption, counted where the refcounts are compared */
            inc(k, off, len);
            ck_kind_set(k, c, ck_kind(k, c) | M_SHARED);
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
bool ck_range_clean(const struct ck *k, uint64_t off, uint64_t len)
{
    if (ck_past_eof(k, off, len))
        return false;
    for (uint64_t c = off >> k->s->cluster_bits; len && c <= (off + len - 1) >> k->s->cluster_bits; c++)
        if (c >= k->nb || (ck_kind(k, c) & M_SHARED))
            return false;
    return true;
}

/* ---- counting ---- */

/* Walk the entries of the L2 table at `l2off` (read into `buf`, or not:
 * ret < 0). An unaligned table (a damaged L1 entry) is read as it is, as
 * qemu-img does, only to count the clusters it may name: a repair frees
 * nothing it could still use, and changes nothing in it. */
static void walk_l2(struct ck *k, uint64_t l2off, bool active, const uint8_t *buf, int ret)
{
    struct qcow2 *s = k->s;
    struct ck_walk w = { .off = l2off, .l2 = buf };
    uint64_t next_host = 0;       /* fragmentation counts within one table */
    uint64_t cs = s->cluster_size, esz = s->l2_entry_size;
    uint64_t reserved = L2E_STD_RESERVED | ((s->version < 3 || s->extl2) ? L2E_ZERO : 0);
    uint64_t c0 = l2off >> s->cluster_bits;

    w.can_fix = (k->repair & FQ_CHECK_REPAIR_ERRORS) && FQ_IS_ALIGNED(l2off, cs);
    /* a table this pass changed already (it is named twice) is the cache's */
    if (ret == 0 && w.can_fix && c0 < k->nb && ck_bit(k->is_meta, c0) &&
        (ck_map_get(&k->kinds, c0) & CK_TABLE_CHANGED) && !ck_walk_writable(k, &w))
        ret = -EIO;
    if (ret < 0) {
        ck_say(k, "ERROR: could not read L2 table at 0x%llx: %s", (unsigned long long)l2off, strerror(-ret));
        k->res->check_errors++;
        k->partial = true;
        return;
    }
    for (uint64_t i = 0; i < s->l2_entries; i++) {
        const uint8_t *p = w.l2 + i * esz;
        uint64_t e = fq_be64(p), bm = s->extl2 ? fq_be64(p + 8) : 0;
        if (!e && !bm)
            continue;
        struct where at = { .l2 = true, .i = i, .table = l2off };
        if (e & L2E_COMPRESSED) {
            uint64_t host, n;
            bool stats = active;
            qcow2_compressed_loc(s, e, &host, &n);
            if (e & L2E_COPIED) {
                bool fix = (k->repair & FQ_CHECK_REPAIR_ERRORS) && ck_walk_writable(k, &w);
                if (fix || !k->only_repairs)
                    ck_say(k, "%s: compressed cluster L2 entry 0x%llx has the copied flag",
                           fix ? "Repairing" : "ERROR", (unsigned long long)e);
                k->res->corruptions++;
                if (fix) {
                    e &= ~L2E_COPIED;
                    qcow2_l2e_set(s, w.t->data, i, e, bm);
                    qcache_mark_dirty(w.t);
                    k->res->corruptions_fixed++;
                    k->dropped = true;
                }
            }
            if (s->extl2 && bm) {
                /* qemu-img leaves the entry out of its figures */
                bool fix = (k->repair & FQ_CHECK_REPAIR_ERRORS) && ck_walk_writable(k, &w);
                if (fix || !k->only_repairs)
                    ck_say(k, "%s compressed cluster %llu with non-zero subcluster allocation "
                           "bitmap, entry=0x%llx", fix ? "Repairing" : "ERROR",
                           (unsigned long long)i, (unsigned long long)e);
                k->res->corruptions++;
                stats = false;
                if (fix) {
                    qcow2_l2e_set(s, w.t->data, i, e, 0);
                    qcache_mark_dirty(w.t);
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
            if (ref_entry(k, host, n, 0, w.can_fix, &at, &w))
                ck_drop_l2e(k, w.t, i);
            continue;
        }
        uint64_t off = e & L2E_OFFSET_MASK;
        /* an invalid entry is reported, and its clusters still counted */
        if ((e & reserved) || (off & (cs - 1))) {
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
        /* offset 0 is a data cluster in an external data file if COPIED */
        if (!off && !(qcow2_has_data_file(s) && (e & L2E_COPIED)))
            continue;
        uint64_t c = off >> s->cluster_bits;
        if (active) {
            k->res->allocated_clusters++;
            if (next_host && off != next_host)
                k->res->fragmented_clusters++;
            next_host = off + cs;
        }
        if (qcow2_has_data_file(s))
            continue;   /* in the data file: no refcount, no COPIED check */
        if (active) {
            /* what check_copied needs to know whether to look again (a
             * cluster past the file: always) */
            if (!(off & (cs - 1)) && off < k->flen)
                ck_bit_set((e & L2E_COPIED) ? k->cp_set : k->cp_clear, c);
            else if (!(off & (cs - 1)))
                k->copied_suspect = true;
        }
        /* the common case: a data cluster in the file, no metadata */
        if (off < k->flen && !(off & (cs - 1)) && !ck_bit(k->is_meta, c)) {
            ck_ref_inc(k, c);
            continue;
        }
        if (ref_entry(k, off, cs, 0, w.can_fix, &at, &w))
            ck_drop_l2e(k, w.t, i);
    }
    if (w.t)
        qcache_put(&s->l2_cache, w.t);
}

/* Whether an L1 entry names a sound L2 table (COPIED flags are checked). */
bool ck_is_l2(const struct ck *k, uint64_t e)
{
    uint64_t off = e & L1E_OFFSET_MASK, c = off >> k->s->cluster_bits;

    return off && FQ_IS_ALIGNED(off, k->s->cluster_size) && c < k->nb &&
           (ck_kind(k, c) & M_KIND) == M_L2 && !ck_past_eof(k, off, k->s->cluster_size);
}

/* Whether the table an L1 entry names is walked: a sound one, or an
 * unaligned one inside the file. */
static bool walked(const struct ck *k, uint64_t e)
{
    uint64_t off = e & L1E_OFFSET_MASK;

    return ck_is_l2(k, e) || (off && !FQ_IS_ALIGNED(off, k->s->cluster_size) &&
                           !ck_past_eof(k, off, k->s->cluster_size));
}

/* Count the L2 tables an L1 table names (snapshot `sn`, -1: active). */
static void l1_refs(struct ck *k, uint64_t *l1, uint32_t l1_size, long sn)
{
    struct qcow2 *s = k->s;
    /* the table an entry is zeroed in must be sound itself */
    bool can_drop = sn < 0 ? ck_range_clean(k, s->l1_offset, (uint64_t)s->l1_size * 8)
                           : ck_range_clean(k, k->sn[sn].l1_offset, (uint64_t)l1_size * 8);

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
        struct where at = { .l2 = false, .i = i, .sn = sn };
        /* flags with an offset of 0 name the header, as qemu-img reads them */
        if (ref_entry(k, off, s->cluster_size, M_L2, can_drop, &at, NULL))
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
    /* the table is counted whole; it claims the clusters that hold the
     * fixed part of an entry, not those that only an entry's lengths
     * reach (lengths may be damaged: what lies there is counted twice,
     * and a repair raises its refcount instead of dropping a table) */
    inc(k, s->snapshots_offset, k->tbytes);
    uint64_t next = s->snapshots_offset >> s->cluster_bits;   /* first not claimed yet */
    for (size_t i = 0; i < k->nsn; i++) {
        uint64_t a = s->snapshots_offset + k->sn[i].tpos, z = a + 39;
        a = FQ_MAX(a >> s->cluster_bits, next);
        z >>= s->cluster_bits;
        if (a <= z)
            claim(k, a << s->cluster_bits, (z - a + 1) << s->cluster_bits, M_SNAPTAB);
        next = FQ_MAX(next, z + 1);
    }
    for (size_t i = 0; i < k->nsn; i++) {
        mark(k, k->sn[i].l1_offset, (uint64_t)k->sn[i].l1_size * 8, M_SNAPL1);
        if (qcow2_read_l1(s, k->sn[i].l1_offset, k->sn[i].l1_size, &k->snl1[i]) < 0) {
            k->res->check_errors++;
            k->partial = true;
        }
    }
}

/* A table to walk: named by entry `seq` of the L1 tables in walk order
 * (the active table's, then each snapshot's). */
struct witem {
    uint64_t off;
    uint64_t seq : 63, active : 1;
};

struct wscan {
    struct ck *k;
    struct witem *v;
};

static int witem_cmp(const void *a, const void *b)
{
    const struct witem *x = a, *y = b;

    if (x->off != y->off)
        return x->off < y->off ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static uint64_t witem_off(void *opaque, size_t i)
{
    return ((struct wscan *)opaque)->v[i].off;
}

static int witem_walk(void *opaque, size_t i, const uint8_t *buf, int ret)
{
    struct wscan *w = opaque;
    struct witem *it = &w->v[i];

    w->k->hold_key = it->seq;
    walk_l2(w->k, it->off, it->active, buf, ret);
    return w->k->oom ? -ENOMEM : 0;
}

/* Walk every L2 table the L1 tables name, once per naming entry, in host
 * order; the messages come out in the order of the naming entries. */
static int walk_all(struct ck *k)
{
    struct qcow2 *s = k->s;
    size_t n = 0, cap = 0;
    uint64_t seq = 0;
    struct witem *v = NULL;

    for (long t = -1; t < (long)k->nsn; t++) {
        const uint64_t *l1 = t < 0 ? s->l1 : k->snl1[t];
        uint32_t size = t < 0 ? s->l1_size : k->sn[t].l1_size;
        for (uint32_t j = 0; l1 && j < size; j++, seq++) {
            if (!walked(k, l1[j]))
                continue;
            if (n == cap) {
                cap = cap ? cap * 2 : 256;
                struct witem *nv = realloc(v, cap * sizeof(*v));
                if (!nv) {
                    free(v);
                    return -ENOMEM;
                }
                v = nv;
            }
            v[n++] = (struct witem){ .off = l1[j] & L1E_OFFSET_MASK, .seq = seq, .active = t < 0 };
        }
    }
    if (n > 1)
        qsort(v, n, sizeof(*v), witem_cmp);
    struct wscan w = { .k = k, .v = v };
    k->hold = k->msg != NULL;
    int r = qcow2_scan(s, n, (size_t)s->cluster_size, witem_off, witem_walk, &w);
    if (k->hold)
        ck_release_msgs(k);
    free(v);
    return r;
}

/* Count every reference: exclusive metadata, then L2 tables, then data. */
static int count_all(struct ck *k)
{
    struct qcow2 *s = k->s;

    count_snapshots(k);
    mark(k, 0, s->cluster_size, M_HEADER);
    mark(k, s->l1_offset, (uint64_t)s->l1_size * 8, M_L1);
    count_bitmaps(k);
    mark(k, s->crypt_hdr_off, s->crypt_hdr_len, M_CRYPT);
    mark(k, s->rt_offset, (uint64_t)s->rt_clusters * s->cluster_size, M_RT);
    /* the table as on disk: an entry with reserved bits names no block */
    CLEANUP_FREE uint64_t *raw = NULL;
    if (qcow2_rt_read_raw(s, &raw) < 0)
        raw = NULL;           /* the open read it: only what is in memory is said */
    for (uint64_t i = 0; i < s->rt_entries; i++)
        if (s->rt[i] && (s->rt[i] >> s->cluster_bits) < k->fclusters &&
            !(raw && (raw[i] & RTE_RESERVED_MASK)))
            mark(k, s->rt[i], s->cluster_size, M_RB);

    l1_refs(k, s->l1, s->l1_size, -1);
    for (size_t i = 0; i < k->nsn; i++)
        if (k->snl1[i])
            l1_refs(k, k->snl1[i], k->sn[i].l1_size, (long)i);
    if (k->oom)
        return -ENOMEM;
    int r = walk_all(k);
    if (r < 0)
        return r;

    /* refcount table entries: no reserved bits, naming a block that is
     * aligned, inside the file and referenced once (qemu-img's words) */
    for (uint64_t i = 0; i < s->rt_entries; i++) {
        uint64_t c = s->rt[i] >> s->cluster_bits, bad;
        if (raw && (raw[i] & RTE_RESERVED_MASK)) {
            ck_say(k, "ERROR refcount table entry %llu has reserved bits set", (unsigned long long)i);
            k->res->corruptions++;
            continue;
        }
        if (qcow2_rt_bad(s, i, &bad)) {
            if ((bad & RTE_OFFSET_MASK) & (s->cluster_size - 1))
                ck_say(k, "ERROR refcount block %llu is not cluster aligned; refcount table entry "
                       "corrupted", (unsigned long long)i);
            else
                ck_say(k, "ERROR refcount block %llu is outside image", (unsigned long long)i);
            k->res->corruptions++;
            continue;
        }
        if (!s->rt[i])
            continue;
        if (c >= k->fclusters) {
            ck_say(k, "ERROR refcount block %llu is outside image", (unsigned long long)i);
            k->res->corruptions++;
        } else if (ck_ref(k, c) != 1) {
            ck_say(k, "ERROR refcount block %llu refcount=%llu", (unsigned long long)i,
                   (unsigned long long)ck_ref(k, c));
            k->res->corruptions++;
        }
    }
    return k->oom ? -ENOMEM : 0;
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
    r = ck_state_init(&k);
    if (r == 0)
        r = count_all(&k);
    /* cleared references are on disk before any refcount drops */
    if (r == 0 && k.dropped && (r = qcow2_writeback(s)) == 0)
        r = qcow2_flush_file(s);
    /* a rebuild that did not happen leaves refcounts that nothing may be
     * derived from */
    bool sound = true;
    if (k.rebuild) {
        r = ck_rebuild(&k, r);
        sound = k.rebuild;
        if (r == 0 && sound)
            ck_note_rebuilt(&k);
    } else if (r == 0) {
        r = ck_compare_refcounts(&k);
    }
    if (r == 0 && rebuild)
        *rebuild = repair ? k.rebuild : ck_rebuild_needed(&k);
    if (r == 0 && sound)
        r = ck_check_copied(&k);
    if (r == 0 && sound && k.incomplete && (repair & FQ_CHECK_REPAIR_ERRORS))
        ck_fix_snapshot_table(&k);
    res->total_clusters = FQ_DIV_UP(s->bs->size, s->cluster_size);
    for (size_t i = 0; k.snl1 && i < k.nsn; i++)
        free(k.snl1[i]);
    free(k.snl1);
    qcow2_snapshots_free(k.sn, k.nsn);
    ck_state_free(&k);
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
