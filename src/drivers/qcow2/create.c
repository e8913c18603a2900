/* create.c: creating qcow2 images.
 *
 * A new image starts as header (cluster 0), refcount table (cluster 1) and
 * one refcount block (cluster 2) that counts those three; it is then opened
 * with the driver and the L1 table is allocated through the ordinary
 * allocator, so creation exercises the same code paths (including refcount
 * table growth, e.g. at 512-byte clusters with 1-bit refcounts) as every
 * later write. Preallocation (L2 tables and data clusters for the whole
 * disk) is planned in bulk and each table written once, in file order.
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
    if (o->data_file_raw && !o->data_file) {
        fq_seterr(err, "data-file-raw requires data-file");
        return -EINVAL;
    }
    if (o->data_file && o->version == 2) {
        fq_seterr(err, "External data files are only supported with compatibility level 1.1 and above (use version=v3 or greater)");
        return -EINVAL;
    }
    if (o->data_file && strlen(o->data_file) > QCOW2_MAX_DATA_FILE_NAME) {
        fq_seterr(err, "Data file name too long (at most %d bytes)", QCOW2_MAX_DATA_FILE_NAME);
        return -EINVAL;
    }
    if (o->backing_file && o->data_file_raw) {
        fq_seterr(err, "Backing file and data-file-raw cannot be used at the same time");
        return -EINVAL;
    }
    if (o->backing_file && o->prealloc != FQ_PREALLOC_OFF) {
        fq_seterr(err, "Backing file and preallocation can only be used at the same time if extended_l2 is on");
        return -EINVAL;
    }
    return qcow2_crypt_validate(o, err);
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

/* ---- preallocation ----
 * The whole layout is planned in memory, then every table is written once,
 * in file order: the cost follows the metadata, whatever the cluster size
 * or the cache. The plan is the one the allocator makes for the same
 * requests (so images look as they always did, and as qemu-img makes
 * them): per L2 table, the table's cluster, then its data clusters, each
 * followed by the refcount blocks it is the first to need. A refcount
 * table that must grow is placed after everything, with the blocks that
 * cover it; the old one is freed once the header points at the new one. */

struct plan {
    struct qcow2 *s;
    uint64_t c;               /* next free cluster */
    uint64_t *rt;             /* the refcount table being planned */
    uint64_t nrt;             /* entries in use (blocks up to it planned) */
    uint64_t cap;
    uint64_t first_new;       /* table index of the first block planned here */
};

/* Whether refcount block ri exists (before or in the plan). */
static bool plan_has(const struct plan *p, uint64_t ri)
{
    return ri < p->nrt && p->rt[ri];
}

static int plan_grow(struct plan *p, uint64_t n)
{
    if (n <= p->cap)
        return 0;
    uint64_t cap = FQ_MAX(n, p->cap * 2);
    uint64_t *v = realloc(p->rt, cap * sizeof(*v));
    if (!v)
        return -ENOMEM;
    memset(v + p->cap, 0, (cap - p->cap) * sizeof(*v));
    p->rt = v;
    p->cap = cap;
    return 0;
}

/* Plan n clusters (returned: the first), followed by the refcount blocks
 * that must cover them and themselves, as qcow2_alloc_clusters places them. */
static int plan_alloc(struct plan *p, uint64_t n, uint64_t *out)
{
    unsigned bits = p->s->rb_bits;
    uint64_t nb = 0, need;

    for (;;) {
        need = 0;
        for (uint64_t ri = p->c >> bits; ri <= (p->c + n + nb - 1) >> bits; ri++)
            need += !plan_has(p, ri);
        if (need <= nb)
            break;
        nb = need;
    }
    uint64_t last = (p->c + n + nb - 1) >> bits, k = 0;
    if (plan_grow(p, last + 1) < 0)
        return -ENOMEM;
    for (uint64_t ri = p->c >> bits; ri <= last; ri++)
        if (!plan_has(p, ri))
            p->rt[ri] = (p->c + n + k++) << p->s->cluster_bits;
    p->nrt = FQ_MAX(p->nrt, last + 1);
    *out = p->c;
    p->c += n + nb;
    return 0;
}

/* First cluster past every cluster whose refcount is not 0. */
static int used_end_cluster(struct qcow2 *s, uint64_t *out)
{
    *out = 1;
    for (uint64_t ri = FQ_MIN(s->rt_hi, s->rt_entries); ri-- > 0;) {
        struct qcache_entry *e;
        if (!s->rt[ri])
            continue;
        int r = qcache_get(&s->rb_cache, s->rt[ri], false, &e);
        if (r < 0)
            return r;
        uint64_t i = 1ull << s->rb_bits;
        while (i > 0 && !qcow2_rc_entry(e->data, s->refcount_bits, i - 1))
            i--;
        qcache_put(&s->rb_cache, e);
        if (i) {
            *out = (ri << s->rb_bits) + i;
            return 0;
        }
    }
    return 0;
}

/* Write the data clusters [c, c + n) as `mode` asks: zeros (full), blocks
 * reserved (falloc, which falls back to full where the file cannot). */
static int prealloc_data(struct qcow2 *s, enum fq_prealloc *mode, uint64_t c, uint64_t n)
{
    uint64_t off = c << s->cluster_bits, len = n << s->cluster_bits;
    int r;

    if (*mode == FQ_PREALLOC_FALLOC) {
        struct fq_req zr = { .op = FQ_OP_WRITE_ZEROES, .off = off, .len = len };
        r = s->file->ops->io_sync(s->file, &zr);
        if (r == -EOPNOTSUPP || r == -ENOTSUP || r == -EINVAL)
            *mode = FQ_PREALLOC_FULL;
        else if (r < 0)
            return r;
    }
    if (*mode == FQ_PREALLOC_FULL) {
        const void *z = fq_zero_buffer(1 << 20);
        for (uint64_t k = 0; k < len; k += 1 << 20) {
            r = fq_bdev_pwrite_sync(s->file, z, (size_t)FQ_MIN(len - k, (uint64_t)1 << 20), off + k);
            if (r < 0)
                return r;
        }
    }
    return 0;
}

/* Lay out and write the L2 tables and the data clusters of the whole disk
 * (as `mode` asks), in file order; the L1 entries are set in memory. */
static int prealloc_tables(struct qcow2 *s, struct plan *p, enum fq_prealloc mode)
{
    uint64_t cs = s->cluster_size, nclusters = FQ_DIV_UP(s->bs->size, cs);
    CLEANUP_FREE uint8_t *l2 = fq_memalign((size_t)cs);
    int r;

    if (!l2)
        return -ENOMEM;
    for (uint64_t gc = 0; gc < nclusters; gc += s->l2_entries) {
        uint64_t n = FQ_MIN(nclusters - gc, s->l2_entries), t, d;
        if ((r = plan_alloc(p, 1, &t)) < 0 || (r = plan_alloc(p, n, &d)) < 0)
            return r;
        memset(l2, 0, (size_t)cs);
        for (uint64_t i = 0; i < n; i++)
            qcow2_l2e_set(s, l2, i, ((d + i) << s->cluster_bits) | L2E_COPIED,
                          s->extl2 ? 0xffffffffull : 0);
        r = fq_bdev_pwrite_tagged(s->file, l2, (size_t)cs, t << s->cluster_bits, FQ_TAG_L2);
        if (r == 0)
            r = prealloc_data(s, &mode, d, n);
        if (r < 0)
            return r;
        s->l1[gc >> s->l2_bits] = (t << s->cluster_bits) | L2E_COPIED;
    }
    return 0;
}

/* Write the refcount blocks the plan added: refcount 1 for every cluster
 * of [from, to) they cover. */
static int prealloc_refblocks(struct qcow2 *s, const struct plan *p, uint64_t from, uint64_t to)
{
    uint64_t cs = s->cluster_size, per = 1ull << s->rb_bits;
    CLEANUP_FREE uint8_t *blk = fq_memalign((size_t)cs);
    int r;

    if (!blk)
        return -ENOMEM;
    for (uint64_t ri = p->first_new; ri < p->nrt; ri++) {
        if (!p->rt[ri] || (ri < s->rt_entries && s->rt[ri]))
            continue;
        memset(blk, 0, (size_t)cs);
        uint64_t a = FQ_MAX(from, ri * per), b = FQ_MIN(to, (ri + 1) * per);
        for (uint64_t c = a; c < b; c++)
            qcow2_rc_set_entry(blk, s->refcount_bits, c - ri * per, 1);
        r = fq_bdev_pwrite_tagged(s->file, blk, (size_t)cs, p->rt[ri], FQ_TAG_REFBLOCK);
        if (r < 0)
            return r;
    }
    return 0;
}

/* Preallocate the whole disk: plan, write the L2 tables (and data) and the
 * new refcount blocks, raise the refcounts the old blocks hold, then let
 * the ordered write-back switch the refcount table (if it moved) and
 * write the L1 table: the refcounts are on disk before anything that
 * points at the clusters they count. */
static int preallocate(struct qcow2 *s, enum fq_prealloc mode)
{
    uint64_t cs = s->cluster_size, start, per = 1ull << s->rb_bits;
    struct plan p = { .s = s };
    int r;

    if ((r = qcow2_writeback(s)) < 0 || (r = used_end_cluster(s, &start)) < 0)
        return r;
    p.c = start;
    p.nrt = FQ_MIN(s->rt_hi, s->rt_entries);
    p.first_new = p.nrt;
    if ((r = plan_grow(&p, FQ_MAX(p.nrt, (uint64_t)1))) < 0)
        return r;
    memcpy(p.rt, s->rt, p.nrt * sizeof(*p.rt));
    r = prealloc_tables(s, &p, mode);
    /* the refcount table: the old one if the blocks fit, else a new one
     * after everything (with the blocks that cover it) */
    uint64_t rtc = s->rt_clusters, rto = s->rt_offset >> s->cluster_bits;
    if (r == 0 && p.nrt > s->rt_entries) {
        struct plan save = p;
        for (rtc = FQ_DIV_UP(p.nrt * 8, cs);; rtc++) {
            p.c = save.c;
            p.nrt = save.nrt;
            if ((r = plan_alloc(&p, rtc, &rto)) < 0 || p.nrt * 8 <= rtc * cs)
                break;
            for (uint64_t ri = save.nrt; ri < p.nrt; ri++)
                p.rt[ri] = 0;
        }
        if (r == 0 && rtc * cs > QCOW2_MAX_RT_BYTES)
            r = -EFBIG;
    }
    if (r == 0)
        r = prealloc_refblocks(s, &p, start, p.c);
    /* the blocks there were before count the new clusters they cover */
    for (uint64_t ri = start / per; r == 0 && ri < FQ_MIN(p.first_new, s->rt_entries); ri++) {
        uint64_t a = FQ_MAX(start, ri * per), b = FQ_MIN(p.c, (ri + 1) * per);
        if (s->rt[ri] && a < b)
            r = qcow2_update_refcount(s, a << s->cluster_bits, b - a, 1);
    }
    if (r == 0)
        r = qcow2_writeback(s);       /* those blocks */
    if (r == 0)
        r = qcow2_flush_file(s);
    if (r == 0 && (p.nrt > s->rt_entries || p.nrt > FQ_MIN(s->rt_hi, s->rt_entries))) {
        /* the refcount table (and header) next: written by the write-back */
        uint64_t nent = rtc * cs / 8, old_off = s->rt_offset, old_n = s->rt_clusters;
        bool moved = (rto << s->cluster_bits) != s->rt_offset;
        if ((r = plan_grow(&p, nent)) == 0) {
            free(s->rt);
            s->rt = p.rt;
            p.rt = NULL;
            s->rt_entries = nent;
            s->rt_hi = p.nrt;
            s->rt_offset = rto << s->cluster_bits;
            s->rt_clusters = (uint32_t)rtc;
            s->rt_dirty = true;
            s->header_dirty |= moved;
            qcow2_meta_changed(s);
            if (moved)
                r = qcow2_free_deferred(s, old_off, old_n);
        }
    }
    for (uint32_t i = 0; r == 0 && i < s->l1_size; i++)
        if (s->l1[i])
            qcow2_mark_l1_dirty(s, i);
    if (r < 0)                        /* nothing may point at the tables */
        memset(s->l1, 0, (size_t)s->l1_size * 8);
    if (s->free_hint >= start)
        s->free_hint = p.c;
    free(p.rt);
    if (r == 0)
        r = qcow2_writeback(s);
    /* the data clusters at the end are holes: the file reaches them */
    if (r == 0 && s->file->ops->truncate && (p.c << s->cluster_bits) > s->file->size) {
        int t = s->file->ops->truncate(s->file, p.c << s->cluster_bits);
        if (t < 0 && t != -ENOTSUP)
            r = t;
    }
    return r;
}

/* An encrypted image: the LUKS header written into clusters of its own
 * (after the L1 table, as qemu lays it out), the extension that points at
 * it kept with the header. */
static int add_crypt_header(struct qcow2 *s, const struct fq_create_opts *o, char *err)
{
    uint8_t *hdr = NULL;
    size_t len;
    uint64_t off, cs = s->cluster_size;
    int r = qcow2_crypt_create(o, &hdr, &len, err);

    if (r < 0)
        return r;
    uint64_t n = FQ_DIV_UP((uint64_t)len, cs);
    CLEANUP_FREE uint8_t *buf = fq_zalign((size_t)(n * cs));
    uint8_t *ext = malloc(QEXT_CRYPTO_LEN);
    r = -ENOMEM;
    if (buf && ext)
        r = qcow2_alloc_clusters(s, n, &off);
    if (r == 0) {
        memcpy(buf, hdr, len);
        r = qcow2_writeback(s);     /* the refcounts first */
    }
    if (r == 0)
        r = fq_bdev_pwrite_tagged(s->file, buf, (size_t)(n * cs), off, FQ_TAG_OTHER_META);
    memset(hdr, 0, len);
    free(hdr);
    if (r < 0) {
        free(ext);
        return r;
    }
    fq_put_be64(ext, off);
    fq_put_be64(ext + 8, len);
    struct qext x = { QEXT_CRYPTO, QEXT_CRYPTO_LEN, ext };
    if (qext_vec_push(&s->exts, x) < 0) {
        free(ext);
        return -ENOMEM;
    }
    s->crypt_method = QCOW2_CRYPT_LUKS;
    s->crypt_hdr_off = off;
    s->crypt_hdr_len = len;
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
    if (o->encrypt.format && (r = add_crypt_header(s, o, err)) < 0)
        goto out;
    bs->size = o->size;
    if (o->backing_file)
        s->backing_file = strdup(o->backing_file);
    if (o->backing_format)
        s->backing_format = strdup(o->backing_format);
    if (o->data_file) {
        /* guest data in a data file, at its guest offsets */
        s->incompat |= QCOW2_INCOMPAT_DATA_FILE;
        if (o->data_file_raw)
            s->autoclear |= QCOW2_AUTOCLEAR_DATA_RAW;
        if ((r = qcow2_set_data_file_name(s, o->data_file)) < 0)
            goto out;
    }
    r = qcow2_write_header(s);
    if (r == 0)
        r = fq_bdev_flush_sync(s->file);
    if (r == 0 && o->data_file && (o->prealloc != FQ_PREALLOC_OFF || o->data_file_raw))
        r = qcow2_data_prealloc(s, 0);   /* every cluster mapped where it is */
    else if (r == 0 && o->prealloc != FQ_PREALLOC_OFF)
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
