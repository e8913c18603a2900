/* create.c: creating qcow2 images.
 *
 * A new image starts as header (cluster 0), refcount table (cluster 1) and
 * one refcount block (cluster 2) that counts those three; it is then opened
 * with the driver and the L1 table (and, with preallocation, L2 tables and
 * data clusters) is allocated through the ordinary allocator, so creation
 * exercises the same code paths (including refcount table growth, e.g. at
 * 512-byte clusters with 1-bit refcounts) as every later write.
 * SPDX-License-Identifier: MIT
 */
#include <stdio.h>

#include "qcow2.h"

static int validate(const struct fq_create_opts *o, uint64_t cs, int rbits, char *err)
{
    if (cs < 512 || cs > (2u << 20) || (cs & (cs - 1))) {
        fq_seterr(err, "Cluster size must be a power of two between 512 and 2048k (got %llu)",
                  (unsigned long long)cs);
        return -EINVAL;
    }
    if (o->version != 2 && o->version != 3) {
        fq_seterr(err, "Invalid compat level (version %d; use 0.10 or 1.1)", o->version);
        return -EINVAL;
    }
    if (rbits < 1 || rbits > 64 || (rbits & (rbits - 1))) {
        fq_seterr(err, "Refcount width must be a power of two and may not exceed 64 bits");
        return -EINVAL;
    }
    if (o->version == 2 && rbits != 16) {
        fq_seterr(err, "Different refcount widths than 16 bits require compatibility level 1.1 or above (use compat=1.1 or greater)");
        return -EINVAL;
    }
    if (o->version == 2 && o->lazy_refcounts) {
        fq_seterr(err, "Lazy refcounts only supported with compatibility level 1.1 and above (use compat=1.1 or greater)");
        return -EINVAL;
    }
    if (o->extended_l2 && o->version == 2) {
        fq_seterr(err, "Extended L2 entries are only supported with compatibility level 1.1 and above (use compat=1.1 or greater)");
        return -EINVAL;
    }
    if (o->extended_l2 && cs < 16384) {
        fq_seterr(err, "Extended L2 entries are only supported with cluster sizes of at least 16384 bytes");
        return -EINVAL;
    }
    if (o->compression_type && o->version == 2) {
        fq_seterr(err, "Non-zlib compression type is only supported with compatibility level 1.1 and above (use compat=1.1 or greater)");
        return -EINVAL;
    }
    if (o->backing_file && strlen(o->backing_file) > QCOW2_MAX_BACKING_NAME) {
        fq_seterr(err, "Backing file name too long (at most %d bytes)", QCOW2_MAX_BACKING_NAME);
        return -EINVAL;
    }
    if (o->backing_format && strlen(o->backing_format) > 63) {
        fq_seterr(err, "Backing format name too long");
        return -EINVAL;
    }
    if (o->backing_file && o->prealloc != FQ_PREALLOC_OFF) {
        fq_seterr(err, "Backing file and preallocation can only be used at the same time if extended_l2 is on");
        return -EINVAL;
    }
    return 0;
}

/* Write the three-cluster skeleton (header with size 0, table, block). */
static int write_skeleton(struct fq_bdev *child, const struct fq_create_opts *o,
                          unsigned cbits, int rbits, char *err)
{
    uint64_t cs = 1ull << cbits;
    CLEANUP_FREE uint8_t *buf = fq_zalign((size_t)(3 * cs));
    uint8_t *h, *rt, *rb;
    int order = __builtin_ctz((unsigned)rbits), r;

    if (!buf)
        return -ENOMEM;
    h = buf;
    rt = buf + cs;
    rb = buf + 2 * cs;
    fq_put_be32(h + QH_MAGIC, QCOW2_MAGIC);
    fq_put_be32(h + QH_VERSION, (uint32_t)o->version);
    fq_put_be32(h + QH_CLUSTER_BITS, cbits);
    fq_put_be64(h + QH_RT_OFFSET, cs);
    fq_put_be32(h + QH_RT_CLUSTERS, 1);
    if (o->version >= 3) {
        fq_put_be32(h + QH_REFCOUNT_ORDER, (uint32_t)order);
        fq_put_be32(h + QH_HEADER_LENGTH, QH_V3_LENGTH);
        uint64_t inc = 0;
        if (o->extended_l2)
            inc |= QCOW2_INCOMPAT_EXTL2;
        if (o->compression_type) {
            inc |= QCOW2_INCOMPAT_COMPRESSION;
            h[QH_COMPRESSION_TYPE] = (uint8_t)o->compression_type;
        }
        fq_put_be64(h + QH_INCOMPAT, inc);
        fq_put_be64(h + QH_COMPAT, o->lazy_refcounts ? QCOW2_COMPAT_LAZY_REFCOUNTS : 0);
    }
    fq_put_be64(rt, 2 * cs);
    /* refcount 1 for clusters 0, 1, 2 at any width */
    for (unsigned i = 0; i < 3; i++) {
        uint64_t bit = (uint64_t)i * (unsigned)rbits;
        if (rbits >= 8)
            rb[bit / 8 + (unsigned)rbits / 8 - 1] = 1;
        else
            rb[bit / 8] |= (uint8_t)(1u << (bit % 8));
    }
    r = fq_bdev_pwrite_tagged(child, buf, (size_t)(3 * cs), 0, FQ_TAG_HEADER);
    if (r < 0)
        fq_seterr(err, "Could not write the image: %s", strerror(-r));
    return r;
}

/* Allocate data clusters for the whole disk (preallocation). */
static int preallocate(struct qcow2 *s, enum fq_prealloc mode)
{
    uint64_t cs = s->cluster_size, nclusters = FQ_DIV_UP(s->bs->size, cs);
    uint64_t last_end = 0;

    for (uint64_t gc = 0; gc < nclusters;) {
        uint64_t n = FQ_MIN(nclusters - gc, s->l2_entries - (gc & (s->l2_entries - 1)));
        uint64_t host;
        int r;
        /* make sure the L2 table exists first, so that data stays contiguous */
        struct qcache_entry *l2;
        uint64_t idx;
        r = qcow2_get_l2(s, gc, true, &l2, &idx);
        if (r < 0)
            return r;
        qcache_put(&s->l2_cache, l2);
        r = qcow2_alloc_clusters(s, n, &host);
        if (r < 0)
            return r;
        r = qcow2_link_clusters(s, gc, n, host);
        if (r < 0)
            return r;
        if (mode == FQ_PREALLOC_FALLOC) {
            /* reserve the clusters' blocks (zeroed, allocated) without
             * writing them; where the file cannot, write zeros */
            struct fq_req zr = { .op = FQ_OP_WRITE_ZEROES, .off = host, .len = n * cs };
            r = s->file->ops->io_sync(s->file, &zr);
            if (r == -EOPNOTSUPP || r == -ENOTSUP || r == -EINVAL)
                mode = FQ_PREALLOC_FULL;
            else if (r < 0)
                return r;
        }
        if (mode == FQ_PREALLOC_FULL) {
            const void *z = fq_zero_buffer(1 << 20);
            for (uint64_t off = 0; off < n * cs; off += 1 << 20) {
                uint64_t k = FQ_MIN(n * cs - off, (uint64_t)1 << 20);
                r = fq_bdev_pwrite_sync(s->file, z, (size_t)k, host + off);
                if (r < 0)
                    return r;
            }
        }
        last_end = FQ_MAX(last_end, host + n * cs);
        gc += n;
    }
    if (s->file->ops->truncate && last_end > s->file->size) {
        int r = s->file->ops->truncate(s->file, last_end);
        if (r < 0 && r != -ENOTSUP)
            return r;
    }
    return 0;
}

int qcow2_create(struct fq_bdev *child, const struct fq_create_opts *o, char *err)
{
    uint64_t cs = o->cluster_size ? o->cluster_size : 65536;
    int rbits = o->refcount_bits ? o->refcount_bits : 16;
    struct fq_bdev *bs = NULL;
    struct fq_open_opts oo;
    int r;

    r = validate(o, cs, rbits, err);
    if (r < 0)
        return r;
    unsigned cbits = (unsigned)__builtin_ctzll(cs);
    uint64_t l2_entries = cs / (o->extended_l2 ? 16 : 8);
    uint64_t l1_size = FQ_DIV_UP(o->size, cs * l2_entries);
    if (l1_size * 8 > QCOW2_MAX_L1_BYTES) {
        fq_seterr(err, "Image size %llu is too large for cluster size %llu (the L1 table would exceed 32 MiB)",
                  (unsigned long long)o->size, (unsigned long long)cs);
        return -EFBIG;
    }
    if (child->size > 3 * cs && child->ops->truncate)
        child->ops->truncate(child, 0);
    r = write_skeleton(child, o, cbits, rbits, err);
    if (r < 0)
        return r;
    fq_open_opts_init(&oo);
    r = qcow2_open(child, &oo, &bs, err);
    if (r < 0)
        return r;
    struct qcow2 *s = bs->priv;
    if (o->version >= 3) {
        r = qcow2_default_feature_table(&s->feature_table, &s->feature_table_len);
        if (r < 0)
            goto out;
    }
    if (l1_size) {
        uint64_t l1c = FQ_DIV_UP(l1_size * 8, cs), off;
        r = qcow2_alloc_clusters(s, l1c, &off);
        if (r < 0)
            goto out;
        CLEANUP_FREE uint8_t *z = fq_zalign((size_t)(l1c * cs));
        if (!z) {
            r = -ENOMEM;
            goto out;
        }
        r = qcow2_writeback(s);     /* the refcounts first */
        if (r == 0)
            r = fq_bdev_pwrite_tagged(s->file, z, (size_t)(l1c * cs), off, FQ_TAG_L1);
        if (r == 0)
            r = fq_bdev_flush_sync(s->file);
        if (r < 0)
            goto out;
        s->l1_offset = off;
        s->l1_size = (uint32_t)l1_size;
        r = qcow2_load_l1(s, err);
        if (r < 0)
            goto out;
    }
    bs->size = o->size;
    if (o->backing_file)
        s->backing_file = strdup(o->backing_file);
    if (o->backing_format)
        s->backing_format = strdup(o->backing_format);
    r = qcow2_write_header(s);
    if (r == 0)
        r = fq_bdev_flush_sync(s->file);
    if (r == 0 && o->prealloc != FQ_PREALLOC_OFF)
        r = preallocate(s, o->prealloc);
    if (r == 0)
        r = qcow2_writeback(s);
    if (r == 0)
        r = fq_bdev_flush_sync(s->file);
out:
    if (r < 0 && err && !*err)
        fq_seterr(err, "Could not create the image: %s", strerror(-r));
    bs->child = NULL;          /* the caller owns `child` */
    bs->ops->close(bs);
    free(bs->filename);
    free(bs);
    return r;
}
