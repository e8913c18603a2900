/* amend.c: amending the options of an existing image: the compat
 * level (version 2 <-> 3), the lazy refcounts bit and the refcount width.
 *
 * One amend checks every change it was asked for before it makes any, so
 * that a refusal leaves the image untouched, then applies them in a fixed
 * order: an upgrade to version 3 first (the others may need it), the
 * refcount width, the lazy refcounts bit, and a downgrade to version 2
 * last (it needs 16-bit refcounts, which the width change may provide).
 *
 * Changing the refcount width builds a second, complete set of refcount
 * structures of the new width (rcbuild.c) from the current refcounts,
 * the old table and blocks included (in use until the switch; freed
 * through the new structures once the header that switched is durable).
 * A crash before the switch leaves the old image with unreferenced
 * clusters past its end; after it, at worst the old structures leak.
 *
 * A downgrade turns zero clusters (also those of snapshots) into what
 * version 2 can express (expand_zero_tree); its header write comes after
 * the tables no longer need the zero flag.
 * SPDX-License-Identifier: MIT
 */
#include <stdio.h>

#include "ops.h"
#include "snapshot.h"

/* ---- refcount width ---- */

/* The source of the new structures' refcounts: the current refcounts,
 * read cluster by cluster, holding one refcount block (of the current
 * width) at a time; the old table and blocks count too (freed after the
 * switch). */
struct rc_reader {
    struct qcow2 *s;
    uint64_t hi;              /* table entries in use */
    uint64_t ri;              /* table index of `e`; UINT64_MAX: none yet */
    struct qcache_entry *e;   /* NULL: no block there, all refcounts 0 */
    char *err;                /* for a failed read */
};

/* Refcount of cluster c in the current structures. */
static int rc_read(void *opaque, uint64_t c, uint64_t *v)
{
    struct rc_reader *rd = opaque;
    struct qcow2 *s = rd->s;
    uint64_t ri = c >> s->rb_bits;

    if (ri != rd->ri) {
        qcache_put(&s->rb_cache, rd->e);
        rd->e = NULL;
        rd->ri = UINT64_MAX;
        if (ri < s->rt_entries && s->rt[ri]) {
            int r = qcache_get(&s->rb_cache, s->rt[ri], false, &rd->e);
            if (r < 0) {
                rd->e = NULL;
                fq_seterr(rd->err, "Could not read the refcount block at 0x%llx: %s",
                          (unsigned long long)s->rt[ri], strerror(-r));
                return r;
            }
        }
        rd->ri = ri;
    }
    *v = rd->e ? qcow2_rc_entry(rd->e->data, s->refcount_bits, c & ((1ull << s->rb_bits) - 1)) : 0;
    return 0;
}

/* The first cluster at or past c that a refcount block covers. */
static uint64_t rc_next(void *opaque, uint64_t c)
{
    struct rc_reader *rd = opaque;
    struct qcow2 *s = rd->s;

    for (uint64_t ri = c >> s->rb_bits; ri < rd->hi; ri++, c = ri << s->rb_bits)
        if (s->rt[ri])
            return c;
    return UINT64_MAX;
}

static void rc_reader_done(void *opaque)
{
    struct rc_reader *rd = opaque;

    qcache_put(&rd->s->rb_cache, rd->e);
    rd->e = NULL;
    rd->ri = UINT64_MAX;
}

/* Rebuild the refcount structures with `bits`-bit entries (a power of two,
 * 1..64, other than the current width; version 3). */
static int change_refcount_width(struct qcow2 *s, unsigned bits, char *err)
{
    /* hi <= 2^20 entries (QCOW2_MAX_RT_BYTES) and rb_bits <= 24: no overflow */
    struct rc_reader rd = { s, FQ_MIN(s->rt_hi, s->rt_entries), UINT64_MAX, NULL, err };
    struct qcow2_rc_source src = { .get = rc_read, .next = rc_next, .release = rc_reader_done,
                                   .opaque = &rd, .limit = rd.hi << s->rb_bits,
                                   .counts_old = true };
    int r;

    if ((r = qcow2_sync_meta(s)) < 0)
        return r;
    r = qcow2_rc_build(s, bits, &src, err);
    if (r == -ERANGE)
        fq_seterr(err, "Cannot decrease refcount entry width to %u bits: Cluster at offset 0x%llx "
                  "has a refcount of %llu", bits,
                  (unsigned long long)(src.too_big_cluster << s->cluster_bits),
                  (unsigned long long)src.too_big_value);
    return r == -ERANGE ? -EINVAL : r;
}

/* ---- downgrade, upgrade ---- */

/* Does any L2 entry reachable from the L1 table `l1` carry the zero flag,
 * or describe a compressed cluster? */
struct scan {
    bool *zero, *compressed;
};

static int scan_l2(struct qcow2 *s, struct qcache_entry *t, void *opaque)
{
    struct scan *sc = opaque;

    for (uint64_t j = 0; j < s->l2_entries; j++) {
        uint64_t e = qcow2_l2e_get(s, t->data, j);
        if (e & L2E_COMPRESSED)
            *sc->compressed = true;
        else if (e & L2E_ZERO)
            *sc->zero = true;
    }
    return 0;
}

static int tree_scan(struct qcow2 *s, const uint64_t *l1, uint32_t n, bool *zero, bool *compressed)
{
    struct scan sc = { zero, compressed };

    return qcow2_for_each_l2(s, l1, n, scan_l2, &sc);
}

/* Turn every zero cluster reachable from the L1 table `l1` into one
 * version 2 can express: a preallocated one gets zeros written into its
 * cluster; a plain one becomes unallocated where nothing shows through,
 * else a new cluster of zeros (referenced once per L1 path, like the L2
 * table holding it). The L2 tables change in place: each L1 table sharing
 * one reads the same before and after. */
static int expand_zero_tree(struct qcow2 *s, const uint64_t *l1, uint32_t n)
{
    uint64_t cs = s->cluster_size;
    const void *zeros = fq_zero_buffer((size_t)cs);
    bool backing = s->bs->backing != NULL;
    CLEANUP_FREE uint8_t *enc = s->crypt ? fq_memalign((size_t)cs) : NULL;
    int r = 0;

    if (!zeros || (s->crypt && !enc))
        return -ENOMEM;
    for (uint32_t i = 0; i < n && r == 0; i++) {
        uint64_t l2off = l1[i] & L1E_OFFSET_MASK, rc;
        struct qcache_entry *t;
        if (!l2off)
            continue;
        if ((r = qcow2_get_refcount(s, l2off >> s->cluster_bits, &rc)) < 0 ||
            (r = qcache_get(&s->l2_cache, l2off, false, &t)) < 0)
            break;
        for (uint64_t j = 0; j < s->l2_entries && r == 0; j++) {
            uint64_t e = qcow2_l2e_get(s, t->data, j), off = e & L2E_OFFSET_MASK, ne;
            if ((e & L2E_COMPRESSED) || !(e & L2E_ZERO))
                continue;
            if (off) {
                ne = e & ~L2E_ZERO;
            } else if (!backing) {
                ne = 0;
            } else {
                if ((r = qcow2_alloc_clusters(s, 1, &off)) < 0)
                    break;
                if (rc > 1 && (r = qcow2_update_refcount(s, off, 1, (int64_t)rc - 1)) < 0)
                    break;
                ne = off | (rc == 1 ? L2E_COPIED : 0);
            }
            if (off && enc) {       /* encrypted zeros, bound to their offset */
                memset(enc, 0, (size_t)cs);
                qcow2_crypt_buf(s, off, enc, (size_t)cs, true);
            }
            if (off && (r = fq_bdev_pwrite_tagged(s->file, enc ? enc : zeros, (size_t)cs, off,
                                                  FQ_TAG_DATA)) < 0)
                break;
            /* the zeros are durable before the entry that exposes them */
            s->flush_owed = true;
            qcow2_l2e_set(s, t->data, j, ne, 0);
            qcache_mark_dirty(t);
        }
        qcache_put(&s->l2_cache, t);
    }
    return r;
}

/* What a downgrade works on: every L1 table, the snapshots' first, then
 * the active one (l1[n], not owned), and whether any holds zero clusters. */
struct down {
    size_t n;
    uint64_t **l1;
    uint32_t *l1n;
    bool zero;
};

static void down_free(struct down *d)
{
    for (size_t i = 0; d->l1 && i < d->n; i++)
        free(d->l1[i]);
    free(d->l1);
    free(d->l1n);
    memset(d, 0, sizeof(*d));
}

/* Everything that can refuse a downgrade, checked before any change:
 * incompatible features, the refcount width it will have (`bits`),
 * bitmaps, zstd-compressed clusters. Fills `d`. */
static int downgrade_check(struct qcow2 *s, unsigned bits, struct down *d, char *err)
{
    struct qsnap *v = NULL;
    size_t n = 0;
    uint64_t tb, bad = s->incompat & ~(QCOW2_INCOMPAT_DIRTY | QCOW2_INCOMPAT_COMPRESSION);
    bool compressed = false;
    int r;

    if (bad) {
        fq_seterr(err, "Cannot downgrade an image with incompatible features 0x%llx set",
                  (unsigned long long)bad);
        return -ENOTSUP;
    }
    if (bits != 16) {
        fq_seterr(err, "compat=0.10 requires refcount_bits=16");
        return -ENOTSUP;
    }
    for (size_t i = 0; i < s->exts.len; i++)
        if (s->exts.ptr[i].type == QEXT_BITMAPS) {
            fq_seterr(err, "Cannot downgrade an image with bitmaps");
            return -ENOTSUP;
        }
    if ((r = qcow2_read_snapshots(s, &v, &n, &tb, err)) < 0)
        return r;
    d->n = n;
    d->l1 = calloc(n + 1, sizeof(*d->l1));
    d->l1n = calloc(n + 1, sizeof(*d->l1n));
    if (!d->l1 || !d->l1n)
        r = -ENOMEM;
    for (size_t i = 0; i < n && r == 0; i++) {
        d->l1n[i] = v[i].l1_size;
        r = qcow2_read_l1(s, v[i].l1_offset, v[i].l1_size, &d->l1[i]);
    }
    qcow2_snapshots_free(v, n);
    if (r == 0) {
        d->l1[n] = s->l1;
        d->l1n[n] = s->l1_size;
    }
    for (size_t i = 0; i <= n && r == 0; i++)
        r = tree_scan(s, d->l1[i], d->l1n[i], &d->zero, &compressed);
    if (r == 0 && s->compression_type && compressed) {
        fq_seterr(err, "Cannot downgrade an image with zstd compression type and existing "
                  "compressed clusters");
        r = -ENOTSUP;
    }
    return r;
}

/* Expand the zero clusters, then write the version 2 header. */
static int downgrade_apply(struct qcow2 *s, struct down *d)
{
    int r = 0;

    d->l1[d->n] = s->l1;   /* the active table as it is now */
    d->l1n[d->n] = s->l1_size;
    for (size_t i = 0; i <= d->n && r == 0 && d->zero; i++)
        r = expand_zero_tree(s, d->l1[i], d->l1n[i]);
    if (r < 0 || (r = qcow2_sync_meta(s)) < 0)
        return r;
    uint32_t ohl = s->header_length;
    uint64_t oinc = s->incompat, ocompat = s->compat, oac = s->autoclear;
    uint8_t oct = s->compression_type;
    s->version = 2;
    s->header_length = QH_V2_LENGTH;
    s->incompat = s->compat = s->autoclear = 0;
    s->compression_type = 0;
    if ((r = qcow2_write_header_sync(s)) < 0) {
        s->version = 3;
        s->header_length = ohl;
        s->incompat = oinc;
        s->compat = ocompat;
        s->autoclear = oac;
        s->compression_type = oct;
    }
    return r;
}

static int upgrade(struct qcow2 *s)
{
    /* version 3 snapshot entries carry the virtual size and more */
    int r0 = qcow2_snapshot_fix_extra(s);
    if (r0 < 0)
        return r0;
    s->version = 3;
    s->header_length = QH_V3_LENGTH;
    s->refcount_order = 4;
    s->incompat = s->compat = s->autoclear = 0;
    if (!s->feature_table) {
        int r = qcow2_default_feature_table(&s->feature_table, &s->feature_table_len);
        if (r < 0)
            return r;
    }
    int r = qcow2_write_header_sync(s);
    if (r < 0) {
        s->version = 2;
        s->header_length = QH_V2_LENGTH;
    }
    return r;
}

/* ---- amend ---- */

int qcow2_amend(struct qcow2 *s, int version, int lazy, int refcount_bits, char *err)
{
    struct down d = { 0 };
    int r;

    if (err)
        err[0] = '\0';   /* the messages below are kept when set */
    if ((r = qcow2_op_writable(s, err)) < 0)
        return r;
    if (version && version != 2 && version != 3) {
        fq_seterr(err, "Invalid compat level %d (2 = 0.10, 3 = 1.1)", version);
        return -EINVAL;
    }
    if (refcount_bits < 0 || refcount_bits > 64 || (refcount_bits & (refcount_bits - 1))) {
        fq_seterr(err, "Refcount width must be a power of two and may not exceed 64 bits");
        return -EINVAL;
    }
    int target = version ? version : (int)s->version;
    unsigned bits = refcount_bits ? (unsigned)refcount_bits : s->refcount_bits;
    if (target < 3 && lazy == 1) {
        fq_seterr(err, "Lazy refcounts only supported with compatibility level 1.1 and above "
                  "(use compat=1.1 or greater)");
        return -EINVAL;
    }
    if (target < 3 && refcount_bits && bits != 16) {
        fq_seterr(err, "Refcount widths other than 16 bits require compatibility level 1.1 or "
                  "above (use compat=1.1 or greater)");
        return -EINVAL;
    }
    bool down = target == 2 && s->version == 3;
    r = qcow2_sync_meta(s);
    if (r == 0 && down)
        r = downgrade_check(s, bits, &d, err);
    if (r == 0 && target == 3 && s->version == 2)
        r = upgrade(s);
    if (r == 0 && bits != s->refcount_bits)
        r = change_refcount_width(s, bits, err);
    if (r == 0 && lazy >= 0 && s->version >= 3) {
        uint64_t old = s->compat;
        if (lazy)
            s->compat |= QCOW2_COMPAT_LAZY_REFCOUNTS;
        else
            s->compat &= ~QCOW2_COMPAT_LAZY_REFCOUNTS;
        if (s->compat != old && (r = qcow2_write_header_sync(s)) < 0)
            s->compat = old;
    }
    if (r == 0 && down)
        r = downgrade_apply(s, &d);
    down_free(&d);
    if (r < 0 && err && !*err)
        fq_seterr(err, "Could not amend the image: %s", strerror(-r));
    return r;
}
