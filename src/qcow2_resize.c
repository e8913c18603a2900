/* qcow2_resize.c: changes to a whole image: the virtual size (growing
 * the L1 table, or dropping every cluster past a new, smaller end), the
 * compat level and lazy refcounts (amend), the recorded backing file, and
 * emptying the active state (after a commit).
 *
 * Ordering, as everywhere: a new L1 table is written and flushed before
 * the header points at it (qcow2_switch_l1); clusters are dropped by
 * clearing the entries that point at them and freeing through the deferred
 * frees, which land after those tables are on disk. A header change that
 * alters how the image reads (version 2: no zero flag) comes after the
 * tables no longer need what it removes.
 * SPDX-License-Identifier: MIT
 */
#include <stdio.h>

#include "qcow2_ops.h"
#include "qcow2_snapshot.h"

static int write_header_sync(struct qcow2 *s)
{
    int r = qcow2_write_header(s);

    return r < 0 ? r : qcow2_flush_file(s);
}

/* Preconditions of every whole-image operation (resize, amend, rebase,
 * commit, snapshots): writable, not corrupt, idle. */
int qcow2_op_writable(struct qcow2 *s, char *err)
{
    if (s->readonly) {
        fq_seterr(err, "The image is opened read-only");
        return -EROFS;
    }
    if (s->corrupt) {
        fq_seterr(err, "The image is corrupt; run 'check -r all' first");
        return -EIO;
    }
    if (qcow2_busy(s)) {
        fq_seterr(err, "Requests are in flight on the image");
        return -EBUSY;
    }
    return 0;
}

static int guest_sync(struct qcow2 *s, enum fq_op op, uint64_t off, uint64_t len, const void *buf)
{
    struct iovec v = { (void *)buf, (size_t)len };
    struct fq_req req = { .op = op, .off = off, .len = len, .iov = buf ? &v : NULL,
                          .iovcnt = buf ? 1 : 0 };

    return len ? qcow2_io_sync(s->bs, &req) : 0;
}

/* ---- resize ---- */

/* Drop guest clusters [first, end of the L1 table) of the active state. */
static int drop_from(struct qcow2 *s, uint64_t first)
{
    uint64_t l1i = first >> s->l2_bits;
    int r;

    for (; l1i < s->l1_size; l1i++) {
        uint64_t e = s->l1[l1i];
        if (!(e & L1E_OFFSET_MASK))
            continue;
        uint64_t start = (l1i << s->l2_bits) < first ? first & (s->l2_entries - 1) : 0;
        if (start == 0) {
            /* the whole table goes */
            s->l1[l1i] = 0;
            qcow2_mark_l1_dirty(s, l1i);
            if ((r = qcow2_tree_refs(s, &e, 1, -1)) < 0)
                return r;
            continue;
        }
        struct qcache_entry *l2;
        uint64_t idx;
        if ((r = qcow2_get_l2(s, l1i << s->l2_bits, true, &l2, &idx)) < 0)
            return r;
        for (uint64_t j = start; j < s->l2_entries && r == 0; j++) {
            uint64_t old = qcow2_l2e_get(s, l2->data, j);
            if (!old && !qcow2_l2e_bitmap(s, l2->data, j))
                continue;
            qcow2_l2e_set(s, l2->data, j, 0, 0);
            qcache_mark_dirty(l2);
            r = qcow2_release_entry(s, old);
        }
        qcache_put(&s->l2_cache, l2);
        if (r < 0)
            return r;
    }
    return 0;
}

/* Is guest cluster gc backed by a host cluster (data or compressed)? */
static int cluster_allocated(struct qcow2 *s, uint64_t gc, bool *out)
{
    struct qcache_entry *l2;
    uint64_t idx;
    int r = qcow2_get_l2(s, gc, false, &l2, &idx);

    *out = false;
    if (r < 0 || !l2)
        return r;
    uint64_t e = qcow2_l2e_get(s, l2->data, idx);
    *out = (e & L2E_COMPRESSED) || (e & L2E_OFFSET_MASK);
    qcache_put(&s->l2_cache, l2);
    return 0;
}

int qcow2_resize(struct qcow2 *s, uint64_t size, bool shrink, char *err)
{
    uint64_t old = s->bs->size, cs = s->cluster_size;
    uint64_t per_l1 = cs * s->l2_entries, need = FQ_DIV_UP(size, per_l1);
    int r;

    if ((r = qcow2_op_writable(s, err)) < 0 || size == old)
        return r;
    if (size < old && !shrink) {
        fq_seterr(err, "Use the --shrink option to perform a shrink operation.");
        return -EINVAL;
    }
    if (size > (1ull << 62) || need * 8 > QCOW2_MAX_L1_BYTES) {
        fq_seterr(err, "Virtual size %llu is too large for %llu-byte clusters (the L1 table "
                  "would exceed %u bytes)", (unsigned long long)size, (unsigned long long)cs,
                  QCOW2_MAX_L1_BYTES);
        return -EFBIG;
    }
    if ((r = qcow2_sync_meta(s)) < 0)
        goto fail;
    if (size < old) {
        /* everything past the new end goes; the L1 table keeps its size */
        if ((r = drop_from(s, FQ_DIV_UP(size, cs))) < 0)
            goto fail;
        if ((r = qcow2_sync_meta(s)) < 0)
            goto fail;
        s->bs->size = size;
        if ((r = write_header_sync(s)) < 0) {
            s->bs->size = old;
            goto fail;
        }
        r = qcow2_trim_file(s);
        goto fail;
    }
    if (need > s->l1_size) {
        uint64_t *nl1 = calloc(need, sizeof(uint64_t));
        if (!nl1) {
            r = -ENOMEM;
            goto fail;
        }
        memcpy(nl1, s->l1, (size_t)s->l1_size * sizeof(uint64_t));
        r = qcow2_switch_l1(s, nl1, (uint32_t)need, size);
        free(nl1);
        if (r == 0)
            r = qcow2_sync_meta(s);   /* frees the old table */
    } else {
        s->bs->size = size;
        if ((r = write_header_sync(s)) < 0)
            s->bs->size = old;
    }
    if (r < 0)
        goto fail;
    /* The new range must read as zeros: write zeros where a backing file
     * would show through, and over the tail of a last cluster that held
     * data past the old end. */
    uint64_t zend = old;
    struct fq_bdev *b = s->bs->backing;
    if (b && b->size > old)
        zend = FQ_MIN(size, b->size);
    bool alloc;
    if (!FQ_IS_ALIGNED(old, cs) && (r = cluster_allocated(s, old / cs, &alloc)) == 0 && alloc)
        zend = FQ_MAX(zend, FQ_MIN(size, FQ_ALIGN_UP(old, cs)));
    if (r == 0 && zend > old)
        r = guest_sync(s, FQ_OP_WRITE_ZEROES, old, zend - old, NULL);
    if (r == 0)
        r = qcow2_sync_meta(s);
fail:
    if (r < 0 && err && !*err)
        fq_seterr(err, "Could not resize the image: %s", strerror(-r));
    return r;
}

int qcow2_trim_file(struct qcow2 *s)
{
    struct fq_bdev *f = s->file;
    uint64_t c = FQ_DIV_UP(f->size, s->cluster_size), rc = 0;
    int r;

    if (!f->ops->truncate)
        return 0;
    while (c > 1) {
        if ((r = qcow2_get_refcount(s, c - 1, &rc)) < 0)
            return r;
        if (rc)
            break;
        c--;
    }
    if (c * s->cluster_size >= f->size)
        return 0;
    r = f->ops->truncate(f, c * s->cluster_size);
    return r == -ENOTSUP ? 0 : r;
}

/* ---- emptying ---- */

int qcow2_make_empty(struct qcow2 *s)
{
    uint32_t n = s->l1_size;
    uint64_t *old;
    int r;

    if ((r = qcow2_op_writable(s, NULL)) < 0)
        return r;
    if ((r = qcow2_sync_meta(s)) < 0)
        return r;
    if (!(old = malloc(FQ_MAX(n, 1u) * sizeof(uint64_t))))
        return -ENOMEM;
    memcpy(old, s->l1, (size_t)n * sizeof(uint64_t));
    for (uint32_t i = 0; i < n; i++)
        if (s->l1[i]) {
            s->l1[i] = 0;
            qcow2_mark_l1_dirty(s, i);
        }
    /* the L1 table is written before the frees land */
    r = qcow2_tree_refs(s, old, n, -1);
    free(old);
    if (r == 0)
        r = qcow2_sync_meta(s);
    if (r == 0)
        r = qcow2_trim_file(s);
    return r;
}

/* ---- amend ---- */

/* Does any L2 entry reachable from the L1 table `l1` carry the zero flag,
 * or describe a compressed cluster? */
static int tree_scan(struct qcow2 *s, const uint64_t *l1, uint32_t n, bool *zero, bool *compressed)
{
    for (uint32_t i = 0; i < n; i++) {
        uint64_t off = l1[i] & L1E_OFFSET_MASK;
        struct qcache_entry *t;
        if (!off)
            continue;
        int r = qcache_get(&s->l2_cache, off, false, &t);
        if (r < 0)
            return r;
        for (uint64_t j = 0; j < s->l2_entries; j++) {
            uint64_t e = qcow2_l2e_get(s, t->data, j);
            if (e & L2E_COMPRESSED)
                *compressed = true;
            else if (e & L2E_ZERO)
                *zero = true;
        }
        qcache_put(&s->l2_cache, t);
    }
    return 0;
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
    int r = 0;

    if (!zeros)
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
            if (off && (r = fq_bdev_pwrite_tagged(s->file, zeros, (size_t)cs, off, FQ_TAG_DATA)) < 0)
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

static int downgrade(struct qcow2 *s, char *err)
{
    struct qsnap *v = NULL;
    size_t n = 0;
    uint64_t tb, bad = s->incompat & ~(QCOW2_INCOMPAT_DIRTY | QCOW2_INCOMPAT_COMPRESSION);
    bool zero = false, compressed = false;
    int r;

    if (bad) {
        fq_seterr(err, "Cannot downgrade an image with incompatible features 0x%llx set",
                  (unsigned long long)bad);
        return -ENOTSUP;
    }
    if (s->refcount_bits != 16) {
        fq_seterr(err, "compat=0.10 requires refcount_bits=16");
        return -ENOTSUP;
    }
    for (size_t i = 0; i < s->exts.len; i++)
        if (s->exts.ptr[i].type == QEXT_BITMAPS) {
            fq_seterr(err, "Cannot downgrade an image with bitmaps");
            return -ENOTSUP;
        }
    /* every L1 table: the snapshots' first, then the active one; scan
     * all before changing any */
    if ((r = qcow2_read_snapshots(s, &v, &n, &tb, err)) < 0)
        return r;
    uint64_t **l1 = calloc(n + 1, sizeof(*l1));
    uint32_t *l1n = calloc(n + 1, sizeof(*l1n));
    if (!l1 || !l1n)
        r = -ENOMEM;
    for (size_t i = 0; i < n && r == 0; i++) {
        l1n[i] = v[i].l1_size;
        r = qcow2_read_l1(s, v[i].l1_offset, v[i].l1_size, &l1[i]);
    }
    if (r == 0) {
        l1[n] = s->l1;
        l1n[n] = s->l1_size;
    }
    for (size_t i = 0; i <= n && r == 0; i++)
        r = tree_scan(s, l1[i], l1n[i], &zero, &compressed);
    if (r == 0 && s->compression_type && compressed) {
        fq_seterr(err, "Cannot downgrade an image with zstd compression type and existing "
                  "compressed clusters");
        r = -ENOTSUP;
    }
    for (size_t i = 0; i <= n && r == 0 && zero; i++)
        r = expand_zero_tree(s, l1[i], l1n[i]);
    for (size_t i = 0; l1 && i < n; i++)
        free(l1[i]);
    free(l1);
    free(l1n);
    qcow2_snapshots_free(v, n);
    if (r < 0 || (r = qcow2_sync_meta(s)) < 0)
        return r;
    uint32_t ohl = s->header_length;
    uint64_t oinc = s->incompat, ocompat = s->compat, oac = s->autoclear;
    uint8_t oct = s->compression_type;
    s->version = 2;
    s->header_length = QH_V2_LENGTH;
    s->incompat = s->compat = s->autoclear = 0;
    s->compression_type = 0;
    if ((r = write_header_sync(s)) < 0) {
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
    int r = write_header_sync(s);
    if (r < 0) {
        s->version = 2;
        s->header_length = QH_V2_LENGTH;
    }
    return r;
}

int qcow2_amend(struct qcow2 *s, int version, int lazy, char *err)
{
    int r;

    if ((r = qcow2_op_writable(s, err)) < 0)
        return r;
    if (version && version != 2 && version != 3) {
        fq_seterr(err, "Invalid compat level %d (2 = 0.10, 3 = 1.1)", version);
        return -EINVAL;
    }
    int target = version ? version : (int)s->version;
    if (target < 3 && lazy == 1) {
        fq_seterr(err, "Lazy refcounts only supported with compatibility level 1.1 and above "
                  "(use compat=1.1 or greater)");
        return -EINVAL;
    }
    if ((r = qcow2_sync_meta(s)) < 0)
        return r;
    if (target == 2 && s->version == 3)
        r = downgrade(s, err);
    else if (target == 3 && s->version == 2)
        r = upgrade(s);
    if (r == 0 && lazy >= 0 && s->version >= 3) {
        uint64_t old = s->compat;
        if (lazy)
            s->compat |= QCOW2_COMPAT_LAZY_REFCOUNTS;
        else
            s->compat &= ~QCOW2_COMPAT_LAZY_REFCOUNTS;
        if (s->compat != old && (r = write_header_sync(s)) < 0)
            s->compat = old;
    }
    if (r < 0 && err && !*err)
        fq_seterr(err, "Could not amend the image: %s", strerror(-r));
    return r;
}

/* ---- backing file ---- */

int qcow2_set_backing(struct qcow2 *s, const char *name, const char *fmt, char *err)
{
    char *ob = s->backing_file, *of = s->backing_format;
    int r;

    if ((r = qcow2_op_writable(s, err)) < 0)
        return r;
    if (name && !*name)
        name = NULL;
    if (name && strlen(name) > QCOW2_MAX_BACKING_NAME) {
        fq_seterr(err, "Backing file name too long (at most %d bytes)", QCOW2_MAX_BACKING_NAME);
        return -EINVAL;
    }
    if (fmt && strlen(fmt) > 63) {
        fq_seterr(err, "Backing format name too long");
        return -EINVAL;
    }
    if ((r = qcow2_sync_meta(s)) < 0)
        return r;
    s->backing_file = name ? strdup(name) : NULL;
    s->backing_format = name && fmt && *fmt ? strdup(fmt) : NULL;
    if ((name && !s->backing_file) || (name && fmt && *fmt && !s->backing_format))
        r = -ENOMEM;
    else
        r = write_header_sync(s);
    if (r < 0) {
        free(s->backing_file);
        free(s->backing_format);
        s->backing_file = ob;
        s->backing_format = of;
        if (r == -ENOSPC)
            fq_seterr(err, "The backing file name does not fit into the header cluster");
        else
            fq_seterr(err, "Could not change the backing file: %s", strerror(-r));
        return r;
    }
    free(ob);
    free(of);
    return 0;
}
