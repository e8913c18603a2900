/* check_compare.c: the stored refcounts compared with the count, and
 * the COPIED flags checked against them (check.c has the design note).
 * SPDX-License-Identifier: MIT
 */
#include <stdio.h>

#include "check.h"
#include "scan.h"

/* Whether refcounts of cluster c may be written: its refcount block is
 * in the file and sound (a block that is shared would change the
 * refcounts of other clusters too). */
static bool rb_sound(const struct ck *k, uint64_t c)
{
    uint64_t ri = c >> k->s->rb_bits, b;

    if (ri >= k->s->rt_entries || !k->s->rt[ri])
        return false;
    b = k->s->rt[ri] >> k->s->cluster_bits;
    return b < k->fclusters && ck_ref(k, b) == 1 && !(ck_kind(k, b) & M_SHARED);
}

/* The stored refcount of cluster c; a refcount block past the end of the
 * file (or past the addressable range) reads as zeros (as qemu-img reads
 * it), without touching it. */
static int get_rc(const struct ck *k, uint64_t c, uint64_t *rc)
{
    uint64_t ri = c >> k->s->rb_bits;

    if (ri < k->s->rt_entries && ((k->s->rt[ri] >> k->s->cluster_bits) >= k->fclusters ||
                                  (qcow2_rt_bad(k->s, ri, NULL) && !qcow2_rt_unaligned(k->s, ri)))) {
        *rc = 0;
        return 0;
    }
    return qcow2_get_refcount(k->s, c, rc);
}

/* What the rest of the pass needs of the refcount `rc` cluster c has once
 * compared: an L2 table's (for its L1 entry's COPIED flag), and whether
 * the COPIED flags the active L2 entries gave it may be wrong. */
static void note_rc(struct ck *k, uint64_t c, uint64_t rc, uint8_t kind)
{
    if ((kind & M_KIND) == M_L2) {
        uint64_t v = ck_map_get(&k->kinds, c) & ~(3ull << CK_RC_SHIFT);
        ck_map_set(k, &k->kinds, c, v | (FQ_MIN(rc, 2) + 1) << CK_RC_SHIFT);
    }
    if (c < k->nb && (rc == 1 ? ck_bit(k->cp_clear, c) : ck_bit(k->cp_set, c)))
        k->copied_suspect = true;
}

/* After a rebuild every stored refcount is the count: note what the
 * COPIED check needs, as a compare would have, and have it read the
 * active L2 tables again. */
void ck_note_rebuilt(struct ck *k)
{
    for (uint64_t c = 0; c < k->nb; c++)
        if (ck_bit(k->is_meta, c))
            note_rc(k, c, ck_ref(k, c), ck_kind(k, c));
    k->copied_suspect = true;
}

/* Compare cluster c's stored refcount `rc` (unless it could not be read:
 * rerr < 0) with its count, report and repair. */
static void cmp_cluster(struct ck *k, uint64_t c, uint64_t rc, int rerr, uint64_t in_file)
{
    struct qcow2 *s = k->s;
    int r;

    if (rerr < 0) {
        ck_say(k, "Can't get refcount for cluster %llu: %s", (unsigned long long)c,
               strerror(-rerr));
        k->res->check_errors++;
        return;
    }
    uint64_t ref = ck_ref(k, c);
    uint8_t kind = ck_kind(k, c);
    bool shared = kind & M_SHARED;
    if ((rc || ref) && c < in_file)
        k->res->image_end_offset = (c + 1) << s->cluster_bits;
    if (rc == ref) {
        if (shared && (kind & M_KIND) != M_RB) {
            /* refcounts that agree with a reference too many */
            ck_say(k, "ERROR cluster %llu refcount=%llu reference=%llu: %s shared with other "
                   "data", (unsigned long long)c, (unsigned long long)rc,
                   (unsigned long long)ref, ck_kind_names[kind & M_KIND]);
            k->res->corruptions++;
        }
        note_rc(k, c, rc, kind);
        return;
    }
    bool leak = rc > ref;
    /* metadata that is shared keeps its refcount (raising it would
     * make the sharing look legitimate), and no leak is released
     * while part of the image could not be walked */
    bool fix = (leak ? (k->repair & FQ_CHECK_REPAIR_LEAKS) && !k->partial
                     : (k->repair & FQ_CHECK_REPAIR_ERRORS) && !shared) && rb_sound(k, c);
    /* the pass that repairs says again what it leaves, as qemu-img does */
    ck_say(k, "%s cluster %llu refcount=%llu reference=%llu",
           fix ? "Repairing" : leak ? "Leaked" : "ERROR",
           (unsigned long long)c, (unsigned long long)rc, (unsigned long long)ref);
    if (leak)
        k->res->leaks++;
    else
        k->res->corruptions++;
    if (!fix) {
        note_rc(k, c, rc, kind);
        return;
    }
    /* lowering a refcount drops the cluster from the metadata caches:
     * the refcounts fixed so far in a block being lowered must be
     * written first */
    if (leak && (kind & M_KIND) == M_RB && (r = qcow2_writeback(s)) < 0) {
        k->res->check_errors++;
        note_rc(k, c, rc, kind);
        return;
    }
    r = qcow2_update_refcount(s, c << s->cluster_bits, 1, (int64_t)(ref - rc));
    if (r < 0) {
        ck_say(k, "ERROR: could not repair the refcount of cluster %llu: %s",
               (unsigned long long)c, strerror(-r));
        k->res->check_errors++;
        note_rc(k, c, rc, kind);
        return;
    }
    if (leak)
        k->res->leaks_fixed++;
    else
        k->res->corruptions_fixed++;
    note_rc(k, c, ref, kind);
}

/* The first refcount a damaged table entry keeps the check from reading
 * is reported as the image's corruption (as a read-only open reports it;
 * the check marks nothing). */
static void ck_damaged_notice(struct ck *k, uint64_t ri)
{
    char why[160];
    uint64_t raw = 0;

    if (k->damage_said)
        return;
    k->damage_said = true;
    (void)qcow2_rt_bad(k->s, ri, &raw);
    qcow2_rt_bad_describe(k->s, ri, raw, why, sizeof(why));
    ck_say(k, "qcow2: Image is corrupt: %s; further non-fatal corruption events will be "
           "suppressed", why);
}

static uint64_t rc_at(const uint8_t *blk, unsigned bits, uint64_t i)
{
    return bits == 16 ? fq_be16(blk + i * 2) : qcow2_rc_entry(blk, bits, i);
}

/* Compare clusters [from, to) whose refcounts are in `blk` (entry 0 for
 * cluster `base`), or are 0 (blk NULL), or could not be read (ret < 0). */
static void cmp_range(struct ck *k, uint64_t from, uint64_t to, uint64_t base, const uint8_t *blk,
                      int ret, uint64_t in_file)
{
    unsigned bits = k->s->refcount_bits;

    for (uint64_t c = from; c < to; c++) {
        uint64_t rc = blk && ret == 0 ? rc_at(blk, bits, c - base) : 0;
        if (!blk && ret == 0 && k->s->rt_bad.len && qcow2_rt_unaligned(k->s, c >> k->s->rb_bits)) {
            /* counted by an unaligned table entry: no refcount to compare
             * (one far past the end of the file reads as zeros) */
            ck_damaged_notice(k, c >> k->s->rb_bits);
            cmp_cluster(k, c, 0, -EIO, in_file);
            continue;
        }
        uint8_t ref = k->refs[c];
        /* the common case: agreed, no metadata, nothing to say */
        if (ret == 0 && ref < CK_REF_BIG && rc == ref && !ck_bit(k->is_meta, c)) {
            if (!rc)
                continue;
            if (c < in_file)
                k->res->image_end_offset = (c + 1) << k->s->cluster_bits;
            if (rc == 1 ? ck_bit(k->cp_clear, c) : ck_bit(k->cp_set, c))
                k->copied_suspect = true;
            continue;
        }
        cmp_cluster(k, c, rc, ret, in_file);
    }
}

struct rscan {
    struct ck *k;
    uint64_t *ri;             /* the refcount blocks to read, in table order */
    uint64_t next, end, in_file;
};

static uint64_t rscan_off(void *opaque, size_t i)
{
    struct rscan *r = opaque;

    return r->k->s->rt[r->ri[i]];
}

static int rscan_block(void *opaque, size_t i, const uint8_t *buf, int ret)
{
    struct rscan *r = opaque;
    struct ck *k = r->k;
    uint64_t base = r->ri[i] << k->s->rb_bits;
    uint64_t to = FQ_MIN(r->end, base + (1ull << k->s->rb_bits));

    cmp_range(k, r->next, base, 0, NULL, 0, r->in_file);
    cmp_range(k, base, to, base, buf, ret, r->in_file);
    r->next = to;
    return k->oom ? -ENOMEM : 0;
}

/* Compare the counts with the stored refcounts (and fix them), cluster by
 * cluster in order; the refcount blocks are read many at once. */
int ck_compare_refcounts(struct ck *k)
{
    struct qcow2 *s = k->s;
    /* what qemu-img compares: the clusters of the file; a repair also
     * releases refcounts of clusters past it that nothing references */
    struct rscan rs = { .k = k, .in_file = k->fclusters + k->tail_ref };
    size_t n = 0;

    /* the end is past the header at least, even if no refcount could be read */
    k->res->image_end_offset = FQ_MAX(k->res->image_end_offset, s->cluster_size);

    rs.end = k->repair ? k->nb : rs.in_file;
    uint64_t nri = FQ_MIN(s->rt_entries, FQ_DIV_UP(rs.end, 1ull << s->rb_bits));
    rs.ri = malloc(FQ_MAX(nri, (uint64_t)1) * sizeof(*rs.ri));
    if (!rs.ri)
        return -ENOMEM;
    for (uint64_t ri = 0; ri < nri; ri++)
        if (s->rt[ri] && (s->rt[ri] >> s->cluster_bits) < k->fclusters)
            rs.ri[n++] = ri;
    int r = qcow2_scan(s, n, (size_t)s->cluster_size, rscan_off, rscan_block, &rs);
    if (r == 0)
        cmp_range(k, rs.next, rs.end, 0, NULL, 0, rs.in_file);
    free(rs.ri);
    return r < 0 ? r : k->oom ? -ENOMEM : 0;
}

/* The refcount compare_refcounts left to the L2 table at cluster c
 * (false: unknown, its refcount could not be read). */
static bool table_rc(const struct ck *k, uint64_t c, uint64_t *rc)
{
    uint64_t v = (ck_map_get(&k->kinds, c) >> CK_RC_SHIFT) & 3;

    *rc = v - 1;
    return v != 0;
}

struct cscan {
    struct ck *k;
    uint32_t *idx;            /* active L1 entries naming sound tables */
    bool fix, fix_l1;
    bool say;                 /* print the findings */
};

static uint64_t cscan_off(void *opaque, size_t i)
{
    struct cscan *cs = opaque;

    return cs->k->s->l1[cs->idx[i]] & L1E_OFFSET_MASK;
}

/* The COPIED flag of active L1 entry i, and (with the table, l2 != NULL)
 * of its L2 entries. */
static int copied_l1e(struct ck *k, struct cscan *cs, uint32_t i, const uint8_t *l2)
{
    struct qcow2 *s = k->s;
    struct fq_check_result *res = k->res;
    uint64_t e = s->l1[i], off = e & L1E_OFFSET_MASK, rc;

    if (!table_rc(k, off >> s->cluster_bits, &rc))
        return 0;
    if ((rc == 1) != ((e & L2E_COPIED) != 0)) {
        if (cs->say)
            ck_say(k, "%s OFLAG_COPIED L2 cluster: l1_index=%u l1_entry=%llx refcount=%llu",
                   cs->fix_l1 ? "Repairing" : "ERROR", i, (unsigned long long)e, (unsigned long long)rc);
        res->corruptions++;
        if (cs->fix_l1) {
            s->l1[i] = rc == 1 ? e | L2E_COPIED : e & ~L2E_COPIED;
            qcow2_mark_l1_dirty(s, i);
            res->corruptions_fixed++;
        }
    }
    if (!l2)
        return 0;
    struct ck_walk w = { .off = off, .l2 = l2, .can_fix = cs->fix };
    uint64_t c0 = off >> s->cluster_bits;
    if (cs->fix && (ck_map_get(&k->kinds, c0) & CK_TABLE_CHANGED) && !ck_walk_writable(k, &w))
        return 0;
    for (uint64_t j = 0; j < s->l2_entries; j++) {
        uint64_t l2e = qcow2_l2e_get(s, w.l2, j), d = l2e & L2E_OFFSET_MASK, c = 0;
        /* past the end of the file too, as qemu-img does (refcount 0) */
        if ((l2e & L2E_COMPRESSED) || !d || (d & (s->cluster_size - 1)) ||
            ck_meta_at(k, d, s->cluster_size, &c))
            continue;
        if (get_rc(k, d >> s->cluster_bits, &rc) < 0)
            continue;
        if ((rc == 1) != ((l2e & L2E_COPIED) != 0)) {
            bool fix = cs->fix && ck_walk_writable(k, &w);
            if (cs->say)
                ck_say(k, "%s OFLAG_COPIED data cluster: l2_entry=%llx refcount=%llu",
                       fix ? "Repairing" : "ERROR", (unsigned long long)l2e, (unsigned long long)rc);
            res->corruptions++;
            if (fix) {
                uint64_t ne = rc == 1 ? l2e | L2E_COPIED : l2e & ~L2E_COPIED;
                qcow2_l2e_set(s, w.t->data, j, ne, qcow2_l2e_bitmap(s, w.t->data, j));
                qcache_mark_dirty(w.t);
                res->corruptions_fixed++;
            }
        }
    }
    if (w.t)
        qcache_put(&s->l2_cache, w.t);
    return k->oom ? -ENOMEM : 0;
}

static int cscan_table(void *opaque, size_t i, const uint8_t *buf, int ret)
{
    struct cscan *cs = opaque;

    /* a table that cannot be read has no entries to check */
    return copied_l1e(cs->k, cs, cs->idx[i], ret < 0 ? NULL : buf);
}

/* COPIED must be set exactly when the refcount is 1 (active tables). A
 * repair of leaks fixes the flags too when nothing else is left, as the
 * refcounts it lowered to 1 leave them clear. The L2 entries are read
 * again only if compare_refcounts found a cluster whose flags may be
 * wrong. */
int ck_check_copied(struct ck *k)
{
    struct qcow2 *s = k->s;
    struct fq_check_result *res = k->res;
    struct cscan cs = { .k = k };
    size_t n = 0;
    int r = 0;

    cs.fix = (k->repair & FQ_CHECK_REPAIR_ERRORS) ||
             ((k->repair & FQ_CHECK_REPAIR_LEAKS) && !res->check_errors &&
              res->corruptions == res->corruptions_fixed && res->leaks == res->leaks_fixed);
    /* an L1 table that shares clusters with other metadata is not written */
    cs.fix_l1 = cs.fix && ck_range_clean(k, s->l1_offset, (uint64_t)s->l1_size * 8);
    /* said once, as qemu-img does: by the pass that repairs, if one follows */
    cs.say = k->repair || !k->next_repair;
    if (!k->copied_suspect) {
        for (uint32_t i = 0; i < s->l1_size && r == 0; i++)
            if (ck_is_l2(k, s->l1[i]))
                r = copied_l1e(k, &cs, i, NULL);
        return r;
    }
    cs.idx = malloc(FQ_MAX(s->l1_size, 1u) * sizeof(*cs.idx));
    if (!cs.idx)
        return -ENOMEM;
    for (uint32_t i = 0; i < s->l1_size; i++)
        if (ck_is_l2(k, s->l1[i]))
            cs.idx[n++] = i;
    r = qcow2_scan(s, n, (size_t)s->cluster_size, cscan_off, cscan_table, &cs);
    free(cs.idx);
    return r;
}
