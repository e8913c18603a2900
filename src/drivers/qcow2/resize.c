/* resize.c: changes to a whole image: the virtual size (growing
 * the L1 table, or shrinking: dropping what lies past the new end, or
 * only unused space when asked to keep data), the recorded backing file, and emptying the active state (after a
 * commit). Amend lives in amend.c.
 *
 * Ordering, as everywhere: a new L1 table is written and flushed before
 * the header points at it (qcow2_switch_l1); clusters are dropped by
 * clearing the entries that point at them and freeing through the deferred
 * frees, which land after those tables are on disk. A refused shrink
 * changes nothing: the check reads the tables before anything is written.
 * SPDX-License-Identifier: MIT
 */
#include <stdio.h>

#include "ops.h"
#include "snapshot.h"

/* Rewrite the header and flush. */
int qcow2_write_header_sync(struct qcow2 *s)
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
    if (s->corrupt || qcow2_rt_damage_guard(s) < 0) {
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
            if ((r = qcow2_tree_release(s, &e, 1)) < 0)
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
    *out = (e & L2E_COMPRESSED) || (e & L2E_OFFSET_MASK) ||
           (qcow2_has_data_file(s) && (e & L2E_COPIED) && !(e & L2E_ZERO));
    qcache_put(&s->l2_cache, l2);
    return 0;
}

/* The first guest offset in [from, to) that the active L1 tree maps to a
 * data or compressed cluster (*out = to if none). Zero clusters,
 * unallocated ranges (whatever a backing file holds there) and clusters
 * only snapshots reference do not count. */
static int first_data(struct qcow2 *s, uint64_t from, uint64_t to, uint64_t *out)
{
    unsigned tbits = s->l2_bits + s->cluster_bits;   /* guest bytes per L1 entry */

    for (uint64_t pos = from; pos < to;) {
        uint64_t l1i = pos >> tbits;
        struct qextent x;
        int r;
        if (l1i < s->l1_size && !(s->l1[l1i] & L1E_OFFSET_MASK)) {
            pos = (l1i + 1) << tbits;   /* no L2 table: nothing allocated */
            continue;
        }
        if ((r = qcow2_lookup(s, pos, to - pos, &x)) < 0)
            return r;
        if (x.kind == QK_DATA || x.kind == QK_COMPRESSED) {
            *out = pos;
            return 0;
        }
        if (x.len == 0)
            return -EIO;
        pos += x.len;
    }
    *out = to;
    return 0;
}

int qcow2_resize(struct qcow2 *s, uint64_t size, unsigned flags, char *err)
{
    uint64_t old = s->bs->size, cs = s->cluster_size;
    uint64_t per_l1 = cs * s->l2_entries, need = FQ_DIV_UP(size, per_l1), used = old;
    int r;

    if (err)
        err[0] = '\0';   /* the messages below are kept when set */
    if ((r = qcow2_op_writable(s, err)) < 0 || size == old)
        return r;
    if (s->version < 3 && s->nb_snapshots) {
        /* a version 2 snapshot records no disk size: one taken at
         * another size could not be applied */
        fq_seterr(err, "Can't resize a v2 image which has snapshots");
        return -ENOTSUP;
    }
    if (size < old && !(flags & FQ_RESIZE_SHRINK)) {
        fq_seterr(err, "Use the --shrink option to perform a shrink operation.");
        return -EINVAL;
    }
    if (size < old && (flags & FQ_RESIZE_KEEP_DATA)) {
        if ((r = first_data(s, size, old, &used)) < 0)
            goto fail;
        if (used < old)
            return fq_shrink_refused(err, size, used);
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
        if ((r = qcow2_write_header_sync(s)) < 0) {
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
        if ((r = qcow2_write_header_sync(s)) < 0)
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
    r = qcow2_tree_release(s, old, n);
    free(old);
    if (r == 0)
        r = qcow2_sync_meta(s);
    if (r == 0)
        r = qcow2_trim_file(s);
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
        r = qcow2_write_header_sync(s);
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
