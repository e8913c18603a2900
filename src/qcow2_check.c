/* qcow2_check.c: consistency check and repair.
 *
 * The check counts every reference to every host cluster (header, L1 and
 * L2 tables of the active state and of each snapshot, data and compressed
 * clusters, refcount table and blocks, snapshot table, bitmap directory,
 * tables and data) and compares the counts with the stored refcounts. A
 * stored refcount below the count is a corruption; above it, a leak. It
 * also checks the COPIED flag of active L1/L2 entries and every reserved
 * bit. Repair sets refcounts to the counted values and fixes COPIED flags,
 * then the image is checked again; what is left is reported.
 * SPDX-License-Identifier: MIT
 */
#include <stdarg.h>
#include <stdio.h>

#include "qcow2.h"
#include "qcow2_ops.h"
#include "qcow2_snapshot.h"

struct ck {
    struct qcow2 *s;
    struct fq_check_result *res;
    fq_msg_fn *msg;
    void *opaque;
    unsigned repair;
    bool only_repairs;        /* report only what is repaired */
    uint64_t nb;              /* clusters counted */
    uint64_t *refs;
};

static void say(struct ck *k, const char *fmt, ...) FQ_PRINTF(2, 3);
static void say(struct ck *k, const char *fmt, ...)
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

/* Count one reference to each cluster of [off, off+len). */
static void inc(struct ck *k, uint64_t off, uint64_t len)
{
    struct qcow2 *s = k->s;

    if (len == 0)
        return;
    uint64_t first = off >> s->cluster_bits, last = (off + len - 1) >> s->cluster_bits;
    for (uint64_t c = first; c <= last; c++) {
        if (c >= k->nb) {
            say(k, "ERROR: reference to cluster %llu (offset 0x%llx) beyond the end of the image",
                (unsigned long long)c, (unsigned long long)(c << s->cluster_bits));
            k->res->corruptions++;
            return;
        }
        k->refs[c]++;
    }
}

static int walk_l2(struct ck *k, uint64_t l2off, bool active, uint64_t *next_host)
{
    struct qcow2 *s = k->s;
    struct qcache_entry *t;
    int r = qcache_get(&s->l2_cache, l2off, false, &t);

    if (r < 0) {
        say(k, "ERROR: could not read L2 table at 0x%llx: %s", (unsigned long long)l2off, strerror(-r));
        k->res->check_errors++;
        return 0;
    }
    for (uint64_t i = 0; i < s->l2_entries; i++) {
        uint64_t e = qcow2_l2e_get(s, t->data, i), bm = qcow2_l2e_bitmap(s, t->data, i);
        if (e & L2E_COMPRESSED) {
            uint64_t host, n;
            qcow2_compressed_loc(s, e, &host, &n);
            if (e & L2E_COPIED) {
                say(k, "ERROR: compressed cluster L2 entry 0x%llx has the copied flag",
                    (unsigned long long)e);
                k->res->corruptions++;
            }
            inc(k, host, n);
            if (active) {
                /* compressed clusters count as fragmented, as qemu-img does */
                k->res->allocated_clusters++;
                k->res->compressed_clusters++;
                k->res->fragmented_clusters++;
            }
            continue;
        }
        uint64_t off = e & L2E_OFFSET_MASK;
        uint64_t reserved = L2E_STD_RESERVED | ((s->version < 3 || s->extl2) ? L2E_ZERO : 0);
        if ((e & reserved) || (off & (s->cluster_size - 1))) {
            say(k, "ERROR: invalid L2 entry 0x%llx in table at 0x%llx (index %llu)",
                (unsigned long long)e, (unsigned long long)l2off, (unsigned long long)i);
            k->res->corruptions++;
            continue;
        }
        if (s->extl2 && ((bm & 0xffffffffull) & (bm >> 32))) {
            say(k, "ERROR: L2 entry %llu in table at 0x%llx: subclusters both allocated and zero",
                (unsigned long long)i, (unsigned long long)l2off);
            k->res->corruptions++;
        }
        if (s->extl2 && (bm & 0xffffffffull) && !off) {
            say(k, "ERROR: L2 entry %llu in table at 0x%llx: allocated subclusters without a cluster",
                (unsigned long long)i, (unsigned long long)l2off);
            k->res->corruptions++;
        }
        if (!off)
            continue;
        inc(k, off, s->cluster_size);
        if (active) {
            k->res->allocated_clusters++;
            if (*next_host && off != *next_host)
                k->res->fragmented_clusters++;
            *next_host = off + s->cluster_size;
        }
    }
    qcache_put(&s->l2_cache, t);
    return 0;
}

static int walk_l1(struct ck *k, const uint64_t *l1, uint32_t l1_size, bool active)
{
    struct qcow2 *s = k->s;
    uint64_t next_host = 0;

    for (uint32_t i = 0; i < l1_size; i++) {
        uint64_t e = l1[i], off = e & L1E_OFFSET_MASK;
        if (e & L1E_RESERVED_MASK) {
            say(k, "ERROR: L1 entry %u (0x%llx) has reserved bits set", i, (unsigned long long)e);
            k->res->corruptions++;
        }
        if (!off)
            continue;
        if (off & (s->cluster_size - 1)) {
            say(k, "ERROR l2_offset=%llx: Table is not cluster aligned; L1 entry corrupted",
                (unsigned long long)off);
            k->res->corruptions++;
            continue;
        }
        if ((off >> s->cluster_bits) >= k->nb) {
            inc(k, off, s->cluster_size);
            continue;
        }
        inc(k, off, s->cluster_size);
        int r = walk_l2(k, off, active, &next_host);
        if (r < 0)
            return r;
    }
    return 0;
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
            say(k, "ERROR: invalid bitmap directory (offset 0x%llx, %llu bytes)",
                (unsigned long long)doff, (unsigned long long)dsize);
            k->res->corruptions++;
            continue;
        }
        inc(k, doff, dsize);
        CLEANUP_FREE uint8_t *dir = malloc(dsize ? dsize : 1);
        if (!dir || fq_bdev_pread_sync(s->file, dir, dsize, doff) < 0) {
            k->res->check_errors++;
            continue;
        }
        for (uint64_t p = 0; p + 24 <= dsize;) {
            uint64_t toff = fq_be64(dir + p);
            uint32_t tsize = fq_be32(dir + p + 8);
            uint16_t nlen = fq_be16(dir + p + 18);
            uint32_t elen = fq_be32(dir + p + 20);
            if ((uint64_t)tsize * 8 > QCOW2_MAX_L1_BYTES || elen > (1u << 20))
                break;
            inc(k, toff, (uint64_t)tsize * 8);
            CLEANUP_FREE uint8_t *tab = malloc((size_t)tsize * 8 + 1);
            if (tab && fq_bdev_pread_sync(s->file, tab, (size_t)tsize * 8, toff) == 0)
                for (uint32_t j = 0; j < tsize; j++) {
                    uint64_t d = fq_be64(tab + (size_t)j * 8) & L2E_OFFSET_MASK;
                    if (d)
                        inc(k, d, s->cluster_size);
                }
            p += FQ_ALIGN_UP(24 + (uint64_t)elen + nlen, 8);
        }
    }
}

/* Count every reference. */
static int count_all(struct ck *k)
{
    struct qcow2 *s = k->s;
    int r;

    inc(k, 0, s->cluster_size);
    inc(k, s->l1_offset, (uint64_t)s->l1_size * 8);
    r = walk_l1(k, s->l1, s->l1_size, true);
    if (r < 0)
        return r;
    struct qsnap *sn;
    size_t nsn;
    uint64_t tbytes;
    char err[FQ_ERR_MAX] = "";
    r = qcow2_read_snapshots(s, &sn, &nsn, &tbytes, err);
    if (r < 0) {
        say(k, "ERROR: %s", err);
        k->res->corruptions++;
    } else {
        inc(k, s->snapshots_offset, tbytes);
        for (size_t i = 0; i < nsn; i++) {
            uint64_t *l1;
            inc(k, sn[i].l1_offset, (uint64_t)sn[i].l1_size * 8);
            if (qcow2_read_l1(s, sn[i].l1_offset, sn[i].l1_size, &l1) == 0) {
                walk_l1(k, l1, sn[i].l1_size, false);
                free(l1);
            } else {
                k->res->check_errors++;
            }
        }
        qcow2_snapshots_free(sn, nsn);
    }
    count_bitmaps(k);
    inc(k, s->rt_offset, (uint64_t)s->rt_clusters * s->cluster_size);
    for (uint64_t i = 0; i < s->rt_entries; i++) {
        if (!s->rt[i])
            continue;
        if ((s->rt[i] >> s->cluster_bits) >= k->nb) {
            say(k, "ERROR refcount block %llu is outside image", (unsigned long long)i);
            k->res->corruptions++;
            continue;
        }
        inc(k, s->rt[i], s->cluster_size);
    }
    return 0;
}

static int compare_refcounts(struct ck *k)
{
    struct qcow2 *s = k->s;

    for (uint64_t c = 0; c < k->nb; c++) {
        uint64_t rc;
        int r = qcow2_get_refcount(s, c, &rc);
        if (r < 0) {
            say(k, "ERROR: could not read the refcount of cluster %llu: %s",
                (unsigned long long)c, strerror(-r));
            k->res->check_errors++;
            continue;
        }
        uint64_t ref = k->refs[c];
        if (rc == ref)
            continue;
        bool leak = rc > ref;
        bool fix = leak ? (k->repair & FQ_CHECK_REPAIR_LEAKS) : (k->repair & FQ_CHECK_REPAIR_ERRORS);
        if (fix || !k->only_repairs)
            say(k, "%s cluster %llu refcount=%llu reference=%llu",
            fix ? "Repairing" : leak ? "Leaked" : "ERROR",
            (unsigned long long)c, (unsigned long long)rc, (unsigned long long)ref);
        if (leak)
            k->res->leaks++;
        else
            k->res->corruptions++;
        if (!fix)
            continue;
        r = qcow2_update_refcount(s, c << s->cluster_bits, 1, (int64_t)(ref - rc));
        if (r < 0) {
            say(k, "ERROR: could not repair the refcount of cluster %llu: %s",
                (unsigned long long)c, strerror(-r));
            k->res->check_errors++;
        } else if (leak) {
            k->res->leaks_fixed++;
        } else {
            k->res->corruptions_fixed++;
        }
    }
    return 0;
}

/* COPIED must be set exactly when the refcount is 1 (active tables). */
static void check_copied(struct ck *k)
{
    struct qcow2 *s = k->s;
    bool fix = k->repair & FQ_CHECK_REPAIR_ERRORS;

    for (uint32_t i = 0; i < s->l1_size; i++) {
        uint64_t e = s->l1[i], off = e & L1E_OFFSET_MASK, rc;
        if (!off || (off & (s->cluster_size - 1)) || (off >> s->cluster_bits) >= k->nb)
            continue;
        if (qcow2_get_refcount(s, off >> s->cluster_bits, &rc) < 0)
            continue;
        if ((rc == 1) != ((e & L2E_COPIED) != 0)) {
            if (fix || !k->only_repairs)
                say(k, "%s OFLAG_COPIED L2 cluster: l1_index=%u l1_entry=%llx refcount=%llu",
                    fix ? "Repairing" : "ERROR", i, (unsigned long long)e, (unsigned long long)rc);
            k->res->corruptions++;
            if (fix) {
                s->l1[i] = rc == 1 ? e | L2E_COPIED : e & ~L2E_COPIED;
                qcow2_mark_l1_dirty(s, i);
                k->res->corruptions_fixed++;
            }
        }
        struct qcache_entry *t;
        if (qcache_get(&s->l2_cache, off, false, &t) < 0)
            continue;
        for (uint64_t j = 0; j < s->l2_entries; j++) {
            uint64_t l2e = qcow2_l2e_get(s, t->data, j), d = l2e & L2E_OFFSET_MASK;
            if ((l2e & L2E_COMPRESSED) || !d || (d & (s->cluster_size - 1)) ||
                (d >> s->cluster_bits) >= k->nb)
                continue;
            if (qcow2_get_refcount(s, d >> s->cluster_bits, &rc) < 0)
                continue;
            if ((rc == 1) != ((l2e & L2E_COPIED) != 0)) {
                if (fix || !k->only_repairs)
                    say(k, "%s OFLAG_COPIED data cluster: l2_entry=%llx refcount=%llu",
                        fix ? "Repairing" : "ERROR", (unsigned long long)l2e, (unsigned long long)rc);
                k->res->corruptions++;
                if (fix) {
                    uint64_t ne = rc == 1 ? l2e | L2E_COPIED : l2e & ~L2E_COPIED;
                    qcow2_l2e_set(s, t->data, j, ne, qcow2_l2e_bitmap(s, t->data, j));
                    qcache_mark_dirty(t);
                    k->res->corruptions_fixed++;
                }
            }
        }
        qcache_put(&s->l2_cache, t);
    }
}

static int check_pass(struct qcow2 *s, unsigned repair, struct fq_check_result *res,
                      fq_msg_fn *msg, void *opaque)
{
    struct ck k = { .s = s, .res = res, .msg = msg, .opaque = opaque, .repair = repair,
                    .only_repairs = repair != 0 };
    int64_t flen = s->file->ops->file_length ? s->file->ops->file_length(s->file)
                                             : (int64_t)s->file->size;
    uint64_t fclusters = flen > 0 ? FQ_DIV_UP((uint64_t)flen, s->cluster_size) : 0;
    int r;

    /* refcounted clusters past the end of the file are counted too */
    k.nb = fclusters;
    for (uint64_t ri = 0; ri < s->rt_entries; ri++)
        if (s->rt[ri])
            k.nb = FQ_MAX(k.nb, FQ_MIN((ri + 1) << s->rb_bits, fclusters + (1ull << s->rb_bits)));
    k.nb = FQ_MAX(k.nb, (uint64_t)1);
    k.refs = calloc(k.nb, sizeof(uint64_t));
    if (!k.refs)
        return -ENOMEM;
    r = count_all(&k);
    if (r == 0)
        r = compare_refcounts(&k);
    if (r == 0)
        check_copied(&k);
    res->total_clusters = FQ_DIV_UP(s->bs->size, s->cluster_size);
    /* the end of what is referenced or refcounted (leaks included) */
    for (uint64_t c = k.nb; c-- > 0;) {
        uint64_t rc = 0;
        if (k.refs[c] || (qcow2_get_refcount(s, c, &rc) == 0 && rc)) {
            res->image_end_offset = (c + 1) << s->cluster_bits;
            break;
        }
    }
    free(k.refs);
    return r;
}

int qcow2_check(struct fq_bdev *bs, unsigned repair, struct fq_check_result *res,
                fq_msg_fn *msg, void *opaque)
{
    struct qcow2 *s = bs->priv;
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
    memset(res, 0, sizeof(*res));
    r = check_pass(s, 0, res, msg, opaque);
    if (r < 0 || !repair || (res->corruptions == 0 && res->leaks == 0))
        return r;
    memset(res, 0, sizeof(*res));
    r = check_pass(s, repair, res, msg, opaque);
    if (r < 0 || (res->corruptions_fixed == 0 && res->leaks_fixed == 0))
        return r;
    /* write the repairs, then check again: what remains is the result */
    r = qcow2_writeback(s);
    if (r == 0)
        r = fq_bdev_flush_sync(s->file);
    if (r < 0)
        return r;
    if (res->corruptions_fixed == res->corruptions && (s->incompat & QCOW2_INCOMPAT_CORRUPT)) {
        s->incompat &= ~QCOW2_INCOMPAT_CORRUPT;
        s->corrupt = false;
        if ((r = qcow2_write_header(s)) < 0 || (r = fq_bdev_flush_sync(s->file)) < 0)
            return r;
    }
    struct fq_check_result again;
    memset(&again, 0, sizeof(again));
    r = check_pass(s, 0, &again, NULL, NULL);
    again.corruptions_fixed = res->corruptions_fixed;
    again.leaks_fixed = res->leaks_fixed;
    *res = again;
    return r;
}
