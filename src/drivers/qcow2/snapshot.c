/* snapshot.c: internal snapshots: reading and writing the snapshot
 * table, the reference changes of whole L1 trees, and the create / apply /
 * delete operations.
 *
 * Reference model (the format's, and what the check counts): an L2 table
 * holds one reference per L1 entry pointing at it, a data cluster one per
 * (L1 table, L2 entry) path leading to it; so taking a snapshot adds one to
 * every L2 table and every data cluster reachable from the active L1, and
 * dropping an L1 tree subtracts one from each. The COPIED flags of the
 * active tables must say exactly where a refcount is 1.
 *
 * Crash safety: create, apply and delete change refcounts and COPIED
 * flags together, which no order of in-place writes can do without an
 * intermediate state that a check reports (a refcount of 2 under a COPIED
 * flag, or a refcount of 1 without one). Each is therefore one metadata
 * transaction (txn.c): new refcount blocks, the L2 tables whose flags
 * change, the L1 tables and the snapshot table are written to free
 * clusters and switched in by one header write. A crash leaves the old
 * image or the new one, with exact refcounts either way.
 *
 * Every entry read from disk is validated (L1 offset aligned, L1 size
 * bounded, lengths inside the table) before use.
 * SPDX-License-Identifier: MIT
 */
#include <stdio.h>
#include <time.h>

#include "ops.h"
#include "snapshot.h"
#include "txn.h"

#define SNAP_EXTRA_LEN 24     /* vm_state_size, disk_size, icount */

void qcow2_snapshots_free(struct qsnap *v, size_t n)
{
    for (size_t i = 0; v && i < n; i++) {
        free(v[i].id);
        free(v[i].name);
        free(v[i].extra);
    }
    free(v);
}

/* Read [off, off+len) of the image file; what lies past its end (flen,
 * unknown if < 0) reads as zeros. */
static int read_zfill(struct qcow2 *s, void *buf, size_t len, uint64_t off, int64_t flen)
{
    size_t in = len;

    if (flen >= 0)
        in = off >= (uint64_t)flen ? 0 : (size_t)FQ_MIN((uint64_t)len, (uint64_t)flen - off);
    memset((uint8_t *)buf + in, 0, len - in);
    return in ? fq_bdev_pread_sync(s->file, buf, in, off) : 0;
}

int qcow2_read_snapshots(struct qcow2 *s, struct qsnap **out, size_t *count,
                         uint64_t *table_bytes, char *err)
{
    uint64_t off = s->snapshots_offset, pos = 0, end;
    int64_t flen = s->file->ops->file_length ? s->file->ops->file_length(s->file)
                                             : (int64_t)s->file->size;
    struct qsnap *v;
    int r = 0;

    *out = NULL;
    *count = 0;
    *table_bytes = 0;
    if (s->nb_snapshots == 0)
        return 0;
    v = calloc(s->nb_snapshots, sizeof(*v));
    if (!v)
        return -ENOMEM;
    for (uint32_t i = 0; i < s->nb_snapshots; i++) {
        uint8_t h[40];
        /* an entry past the end of the file would read as zeros: with
         * nb_snapshots up to 65536 that is a lot of work for nothing. What
         * an entry's lengths reach past the end reads as zeros (below). */
        if (fq_add_ovf(off, pos + sizeof(h), &end) || (flen >= 0 && end > (uint64_t)flen)) {
            fq_seterr(err, "Snapshot %u: its table entry at 0x%llx lies beyond the end of the file",
                      i, (unsigned long long)(off + pos));
            r = -EINVAL;
            goto fail;
        }
        if ((r = read_zfill(s, h, sizeof(h), off + pos, flen)) < 0)
            goto fail;
        struct qsnap *sn = &v[i];
        sn->tpos = pos;
        sn->l1_offset = fq_be64(h);
        sn->l1_size = fq_be32(h + 8);
        uint16_t id_len = fq_be16(h + 12), name_len = fq_be16(h + 14);
        sn->date_sec = fq_be32(h + 16);
        sn->date_nsec = fq_be32(h + 20);
        sn->vm_clock_nsec = fq_be64(h + 24);
        sn->vm_state_size = fq_be32(h + 32);
        uint32_t extra = fq_be32(h + 36);
        if (extra > 1024) {
            fq_seterr(err, "Too much extra metadata in snapshot table entry %u", i);
            r = -EINVAL;
            goto fail;
        }
        if (!FQ_IS_ALIGNED(sn->l1_offset, s->cluster_size) ||
            (uint64_t)sn->l1_size * 8 > QCOW2_MAX_L1_BYTES ||
            (sn->l1_size && sn->l1_offset == 0)) {
            fq_seterr(err, "Snapshot %u: invalid L1 table (offset 0x%llx, %u entries)", i,
                      (unsigned long long)sn->l1_offset, sn->l1_size);
            r = -EINVAL;
            goto fail;
        }
        if (fq_add_ovf(off, pos + 40 + extra + id_len + name_len, &end)) {
            fq_seterr(err, "Snapshot %u: its table entry at 0x%llx is beyond the addressable "
                      "range", i, (unsigned long long)(off + pos));
            r = -EINVAL;
            goto fail;
        }
        sn->extra_len = extra;
        sn->extra = malloc(extra + 1);
        sn->id = calloc(1, (size_t)id_len + 1);
        sn->name = calloc(1, (size_t)name_len + 1);
        if (!sn->extra || !sn->id || !sn->name) {
            r = -ENOMEM;
            goto fail;
        }
        pos += 40;
        if ((extra && (r = read_zfill(s, sn->extra, extra, off + pos, flen)) < 0))
            goto fail;
        if (extra >= 8)
            sn->vm_state_size = fq_be64(sn->extra);
        sn->disk_size = extra >= 16 ? fq_be64(sn->extra + 8) : s->bs->size;
        sn->icount = extra >= 24 ? fq_be64(sn->extra + 16) : UINT64_MAX;
        pos += extra;
        if ((id_len && (r = read_zfill(s, sn->id, id_len, off + pos, flen)) < 0))
            goto fail;
        pos += id_len;
        if ((name_len && (r = read_zfill(s, sn->name, name_len, off + pos, flen)) < 0))
            goto fail;
        pos += name_len;
        pos = FQ_ALIGN_UP(pos, 8);
        if (pos > (64ull << 20)) {
            fq_seterr(err, "Snapshot table is larger than 64 MiB");
            r = -EFBIG;
            goto fail;
        }
    }
    *out = v;
    *count = s->nb_snapshots;
    *table_bytes = pos;
    return 0;
fail:
    if (err && !*err)
        fq_seterr(err, "Could not read the snapshot table: %s", strerror(-r));
    qcow2_snapshots_free(v, s->nb_snapshots);
    return r;
}

/* ---- L1 tables ---- */

int qcow2_read_l1(struct qcow2 *s, uint64_t off, uint32_t n, uint64_t **out)
{
    size_t bytes = (size_t)n * 8;
    CLEANUP_FREE uint8_t *buf = fq_memalign(FQ_MAX(bytes, (size_t)8));
    uint64_t *l1 = calloc(FQ_MAX(n, 1u), sizeof(uint64_t));
    int r;

    if (!buf || !l1) {
        free(l1);
        return -ENOMEM;
    }
    r = bytes ? fq_bdev_pread_sync(s->file, buf, bytes, off) : 0;
    if (r < 0) {
        free(l1);
        return r;
    }
    for (uint32_t i = 0; i < n; i++)
        l1[i] = fq_be64(buf + (size_t)i * 8);
    *out = l1;
    return 0;
}

int qcow2_write_l1_at(struct qcow2 *s, const uint64_t *l1, uint32_t n, uint64_t off,
                      bool clear_copied)
{
    size_t bytes = (size_t)FQ_ALIGN_UP((uint64_t)n * 8, s->cluster_size);
    CLEANUP_FREE uint8_t *buf = fq_zalign(bytes ? bytes : 1);

    if (!buf)
        return -ENOMEM;
    for (uint32_t i = 0; i < n; i++)
        fq_put_be64(buf + (size_t)i * 8, clear_copied ? l1[i] & ~L2E_COPIED : l1[i]);
    return bytes ? fq_bdev_pwrite_tagged(s->file, buf, bytes, off, FQ_TAG_L1) : 0;
}

int qcow2_switch_l1(struct qcow2 *s, const uint64_t *l1, uint32_t n, uint64_t size)
{
    uint64_t cs = s->cluster_size, nc = FQ_DIV_UP((uint64_t)n * 8, cs), off = 0;
    uint64_t old_off = s->l1_offset, old_nc = FQ_DIV_UP((uint64_t)s->l1_size * 8, cs);
    uint32_t old_n = s->l1_size;
    uint64_t old_size = s->bs->size;
    uint64_t *nl1 = calloc(FQ_MAX(n, 1u), sizeof(uint64_t));
    uint8_t *ndirty = calloc(FQ_DIV_UP((uint64_t)n * 8, 4096) + 1, 1);
    int r = -ENOMEM;

    if ((uint64_t)n * 8 > QCOW2_MAX_L1_BYTES)
        r = -EFBIG;
    else if (nl1 && ndirty)
        r = 0;
    if (r == 0 && nc)
        r = qcow2_alloc_clusters(s, nc, &off);
    /* the refcounts of the new table, then the table, each durable
     * before the header points at it */
    if (r == 0)
        r = qcow2_sync_meta(s);
    if (r == 0)
        r = qcow2_write_l1_at(s, l1, n, off, false);
    if (r == 0)
        r = qcow2_flush_file(s);
    if (r < 0) {
        free(nl1);
        free(ndirty);
        return r;   /* the new clusters leak if allocated: never referenced */
    }
    memcpy(nl1, l1, (size_t)n * sizeof(uint64_t));
    uint64_t *ol1 = s->l1;
    uint8_t *odirty = s->l1_dirty;
    s->l1 = nl1;
    qcow2_meta_changed(s);
    s->l1_dirty = ndirty;
    s->l1_offset = off;
    s->l1_size = n;
    s->bs->size = size;
    r = qcow2_write_header(s);
    if (r == 0)
        r = qcow2_flush_file(s);
    if (r < 0) {
        /* which header is on disk is unknown: keep the old one in memory
         * (both tables stay allocated, so either is safe) */
        s->l1 = ol1;
        qcow2_meta_changed(s);
        s->l1_dirty = odirty;
        s->l1_offset = old_off;
        s->l1_size = old_n;
        s->bs->size = old_size;
        free(nl1);
        free(ndirty);
        return r;
    }
    free(ol1);
    free(odirty);
    return old_nc ? qcow2_free_deferred(s, old_off, old_nc) : 0;
}

/* ---- the references of L1 trees ---- */

int qcow2_tree_walk(struct qcow2 *s, const uint64_t *l1, uint32_t n, qcow2_ref_fn *fn,
                    void *opaque)
{
    int r = 0;

    for (uint32_t i = 0; i < n && r == 0; i++) {
        uint64_t off = l1[i] & L1E_OFFSET_MASK;
        struct qcache_entry *t;
        if (!off)
            continue;
        if (!FQ_IS_ALIGNED(off, s->cluster_size)) {
            qcow2_signal_corruption(s, "L1 entry %u (0x%llx) is not aligned", i,
                                    (unsigned long long)l1[i]);
            return -EIO;
        }
        if ((r = fn(s, off, 1, opaque)) < 0 || (r = qcache_get(&s->l2_cache, off, false, &t)) < 0)
            break;
        for (uint64_t j = 0; j < s->l2_entries && r == 0; j++) {
            uint64_t e = qcow2_l2e_get(s, t->data, j), d = e & L2E_OFFSET_MASK;
            if (e & L2E_COMPRESSED) {
                uint64_t host, len;
                qcow2_compressed_loc(s, e, &host, &len);
                uint64_t first = FQ_ALIGN_DOWN(host, s->cluster_size);
                uint64_t last = FQ_ALIGN_DOWN(host + len - 1, s->cluster_size);
                r = fn(s, first, (last - first) / s->cluster_size + 1, opaque);
            } else if (d && !FQ_IS_ALIGNED(d, s->cluster_size)) {
                qcow2_signal_corruption(s, "L2 entry 0x%llx in table at 0x%llx is not aligned",
                                        (unsigned long long)e, (unsigned long long)off);
                r = -EIO;
            } else if (d && !qcow2_has_data_file(s)) {
                r = fn(s, d, 1, opaque);   /* (a data file's clusters are not ours) */
            }
        }
        qcache_put(&s->l2_cache, t);
    }
    return r;
}

static int release_ref(struct qcow2 *s, uint64_t off, uint64_t n, void *opaque)
{
    return qcow2_free_deferred(s, off, n);
}

int qcow2_tree_release(struct qcow2 *s, const uint64_t *l1, uint32_t n)
{
    return qcow2_tree_walk(s, l1, n, release_ref, NULL);
}

/* ---- the snapshot table ---- */

static uint64_t entry_bytes(const struct qsnap *sn)
{
    return FQ_ALIGN_UP(40 + (uint64_t)sn->extra_len + strlen(sn->id) + strlen(sn->name), 8);
}

/* Give an entry the extra data this library writes (at least up to the
 * icount), keeping any longer extra data as it is. */
static int normalize_extra(struct qsnap *sn)
{
    if (sn->extra_len >= SNAP_EXTRA_LEN) {
        fq_put_be64(sn->extra, sn->vm_state_size);
        fq_put_be64(sn->extra + 8, sn->disk_size);
        return 0;
    }
    uint8_t *x = calloc(1, SNAP_EXTRA_LEN);
    if (!x)
        return -ENOMEM;
    fq_put_be64(x, sn->vm_state_size);
    fq_put_be64(x + 8, sn->disk_size);
    fq_put_be64(x + 16, sn->icount);
    free(sn->extra);
    sn->extra = x;
    sn->extra_len = SNAP_EXTRA_LEN;
    return 0;
}

/* Serialize a table of `n` entries into *buf (whole clusters, *alloc
 * bytes; NULL and 0 when n is 0); *bytes is the table's own length. */
static int build_table(struct qcow2 *s, struct qsnap *v, size_t n, uint8_t **buf,
                       uint64_t *alloc, uint64_t *bytes)
{
    uint64_t total = 0, pos = 0;
    int r;

    *buf = NULL;
    *alloc = *bytes = 0;
    for (size_t i = 0; i < n; i++) {
        if ((r = normalize_extra(&v[i])) < 0)
            return r;
        if (strlen(v[i].id) > 65535 || strlen(v[i].name) > 65535)
            return -ENAMETOOLONG;
        total += entry_bytes(&v[i]);
    }
    if (total == 0)
        return 0;
    if (total > (64ull << 20))
        return -EFBIG;
    uint64_t len = FQ_ALIGN_UP(total, s->cluster_size);
    uint8_t *b = fq_zalign((size_t)len);
    if (!b)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        struct qsnap *sn = &v[i];
        uint8_t *p = b + pos;
        size_t il = strlen(sn->id), nl = strlen(sn->name);
        fq_put_be64(p, sn->l1_offset);
        fq_put_be32(p + 8, sn->l1_size);
        fq_put_be16(p + 12, (uint16_t)il);
        fq_put_be16(p + 14, (uint16_t)nl);
        fq_put_be32(p + 16, sn->date_sec);
        fq_put_be32(p + 20, sn->date_nsec);
        fq_put_be64(p + 24, sn->vm_clock_nsec);
        fq_put_be32(p + 32, (uint32_t)FQ_MIN(sn->vm_state_size, (uint64_t)UINT32_MAX));
        fq_put_be32(p + 36, sn->extra_len);
        memcpy(p + 40, sn->extra, sn->extra_len);
        memcpy(p + 40 + sn->extra_len, sn->id, il);
        memcpy(p + 40 + sn->extra_len + il, sn->name, nl);
        pos += entry_bytes(sn);
    }
    *buf = b;
    *alloc = len;
    *bytes = total;
    return 0;
}

/* Write a table of `n` entries to new clusters; *off is 0 when n is 0. */
static int write_table(struct qcow2 *s, struct qsnap *v, size_t n, uint64_t *off, uint64_t *bytes)
{
    uint8_t *buf;
    uint64_t alloc;
    int r = build_table(s, v, n, &buf, &alloc, bytes);

    *off = 0;
    if (r == 0 && buf)
        r = qcow2_alloc_clusters(s, alloc / s->cluster_size, off);
    if (r == 0 && buf)
        r = fq_bdev_pwrite_tagged(s->file, buf, (size_t)alloc, *off, FQ_TAG_OTHER_META);
    free(buf);
    return r;
}

/* In a transaction: a new table of `n` entries replaces the old one
 * (`old_bytes` long); *off is 0 when n is 0. */
static int tx_table(struct qtx *tx, struct qsnap *v, size_t n, uint64_t old_bytes, uint64_t *off)
{
    struct qcow2 *s = tx->s;
    uint8_t *buf;
    uint64_t alloc, bytes;
    int r = build_table(s, v, n, &buf, &alloc, &bytes);

    *off = 0;
    if (r == 0 && buf)
        r = qtx_write(tx, buf, (size_t)alloc, FQ_TAG_OTHER_META, off);
    free(buf);
    if (r == 0 && old_bytes)
        r = qtx_ref(tx, s->snapshots_offset, FQ_DIV_UP(old_bytes, s->cluster_size), -1);
    return r;
}

/* Point the header at a new table. On failure the old one stays in memory. */
static int switch_table(struct qcow2 *s, uint32_t n, uint64_t off)
{
    uint32_t old_n = s->nb_snapshots;
    uint64_t old_off = s->snapshots_offset;
    int r = qcow2_sync_meta(s);

    if (r < 0)
        return r;
    s->nb_snapshots = n;
    s->snapshots_offset = off;
    r = qcow2_write_header(s);
    if (r == 0)
        r = qcow2_flush_file(s);
    if (r < 0) {
        s->nb_snapshots = old_n;
        s->snapshots_offset = old_off;
    }
    return r;
}

int qcow2_snapshot_fix_extra(struct qcow2 *s)
{
    struct qsnap *v = NULL;
    size_t n = 0;
    uint64_t tbytes, old_off = s->snapshots_offset, toff, tb;
    bool short_extra = false;
    int r = qcow2_read_snapshots(s, &v, &n, &tbytes, NULL);

    for (size_t i = 0; r == 0 && i < n; i++)
        short_extra |= v[i].extra_len < 16;
    if (r == 0 && short_extra) {
        r = write_table(s, v, n, &toff, &tb);
        if (r == 0)
            r = switch_table(s, (uint32_t)n, toff);
        if (r == 0)
            r = qcow2_free_deferred(s, old_off, FQ_DIV_UP(tbytes, s->cluster_size));
        if (r == 0)
            r = qcow2_sync_meta(s);
    }
    qcow2_snapshots_free(v, n);
    return r;
}

/* Index of the snapshot whose ID, or else name, is `which`; -1 if none. */
static long find_snapshot(const struct qsnap *v, size_t n, const char *which)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(v[i].id, which))
            return (long)i;
    for (size_t i = 0; i < n; i++)
        if (!strcmp(v[i].name, which))
            return (long)i;
    return -1;
}

/* Common preconditions; reads the table. */
static int begin(struct qcow2 *s, struct qsnap **v, size_t *n, uint64_t *tbytes, char *err)
{
    int r = qcow2_op_writable(s, err);

    if (r < 0)
        return r;
    r = qcow2_sync_meta(s);
    if (r < 0) {
        fq_seterr(err, "Could not write back the metadata: %s", strerror(-r));
        return r;
    }
    return qcow2_read_snapshots(s, v, n, tbytes, err);
}

/* End a transaction whose reference changes are made (`r` so far):
 * the active L1 table `l1` (n entries) is written anew unless it is what
 * the image holds now, the snapshot table becomes `v` (`nv` entries;
 * v NULL: unchanged, `tbytes`: the old one's length), and the header
 * switches to them with virtual size `size`; or, after an error, the
 * transaction is dropped. */
static int tx_finish(struct qtx *tx, int r, const uint64_t *l1, uint32_t n, struct qsnap *v,
                     size_t nv, uint64_t tbytes, uint64_t size, char *err)
{
    struct qcow2 *s = tx->s;
    uint64_t l1off = s->l1_offset, toff = s->snapshots_offset;
    uint32_t nsn = v ? (uint32_t)nv : s->nb_snapshots;

    if (r == 0 && (n != s->l1_size || memcmp(l1, s->l1, (size_t)n * sizeof(uint64_t)))) {
        r = qtx_write_l1(tx, l1, n, &l1off);
        if (r == 0 && s->l1_size)
            r = qtx_ref(tx, s->l1_offset, FQ_DIV_UP((uint64_t)s->l1_size * 8, s->cluster_size), -1);
    }
    if (r == 0 && v)
        r = tx_table(tx, v, nv, tbytes, &toff);
    if (r < 0) {
        qtx_abort(tx);
        return r;
    }
    return qtx_commit(tx, &(struct qtx_switch){ l1, n, l1off, nsn, toff, size }, err);
}

int qcow2_snapshot_create(struct qcow2 *s, const char *name, char *err)
{
    struct qsnap *v = NULL, *nv;
    size_t n = 0;
    uint64_t tbytes, *nl1 = NULL;
    unsigned long long maxid = 0;
    uint32_t n1 = s->l1_size;
    struct qtx tx;
    int r;

    if (strlen(name) > 65535) {
        fq_seterr(err, "Snapshot name is too long (%zu bytes, at most 65535)", strlen(name));
        return -ENAMETOOLONG;
    }
    if ((r = begin(s, &v, &n, &tbytes, err)) < 0)
        return r;
    if (n >= QCOW2_MAX_SNAPSHOTS) {
        fq_seterr(err, "Too many snapshots (at most %d)", QCOW2_MAX_SNAPSHOTS);
        r = -EFBIG;
        goto out;
    }
    if (!(nv = realloc(v, (n + 1) * sizeof(*v)))) {
        r = -ENOMEM;
        goto out;
    }
    v = nv;
    for (size_t i = 0; i < n; i++) {
        char *end;
        unsigned long long id = strtoull(v[i].id, &end, 10);
        if (!*end && id > maxid)
            maxid = id;
    }
    struct qsnap *sn = &v[n];
    struct timespec now;
    char idbuf[32];
    clock_gettime(CLOCK_REALTIME, &now);
    snprintf(idbuf, sizeof(idbuf), "%llu", maxid + 1);
    memset(sn, 0, sizeof(*sn));
    sn->id = strdup(idbuf);
    sn->name = strdup(name);
    sn->extra = calloc(1, SNAP_EXTRA_LEN);
    n++;
    nl1 = malloc(FQ_MAX(n1, 1u) * sizeof(uint64_t));
    if (!sn->id || !sn->name || !sn->extra || !nl1) {
        r = -ENOMEM;
        goto out;
    }
    sn->extra_len = SNAP_EXTRA_LEN;
    sn->date_sec = (uint32_t)now.tv_sec;
    sn->date_nsec = (uint32_t)(now.tv_nsec / 1000 * 1000);
    sn->disk_size = s->bs->size;
    sn->icount = 0;
    sn->l1_size = n1;
    memcpy(nl1, s->l1, (size_t)n1 * sizeof(uint64_t));

    if ((r = qtx_begin(s, &tx)) < 0)
        goto out;
    /* the snapshot's references: one more on every table and cluster the
     * active state reaches */
    r = qtx_tree_ref(&tx, s->l1, n1, 1);
    if (r == -ERANGE)
        fq_seterr(err, "Refcounts of %u bits cannot count another snapshot's references",
                  s->refcount_bits);
    /* every data cluster is shared now: the active tables that carry
     * COPIED flags are replaced by copies without them, and the snapshot
     * takes the copies too (the originals lose both references) */
    if (r == 0)
        r = qtx_fix_copied(&tx, nl1, n1, NULL);
    for (uint32_t i = 0; r == 0 && i < n1; i++) {
        uint64_t was = s->l1[i] & L1E_OFFSET_MASK, now_off = nl1[i] & L1E_OFFSET_MASK;
        if (was != now_off && (r = qtx_ref(&tx, now_off, 1, 1)) == 0)
            r = qtx_ref(&tx, was, 1, -1);
    }
    if (r == 0)
        r = qtx_set_l1_copied(&tx, nl1, n1);
    if (r == 0) {
        /* the snapshot's L1 table: the same tables, no flags */
        uint64_t *sl1 = malloc(FQ_MAX(n1, 1u) * sizeof(uint64_t));
        if (!sl1)
            r = -ENOMEM;
        for (uint32_t i = 0; r == 0 && i < n1; i++)
            sl1[i] = nl1[i] & ~L2E_COPIED;
        if (r == 0)
            r = qtx_write_l1(&tx, sl1, n1, &sn->l1_offset);
        free(sl1);
    }
    r = tx_finish(&tx, r, nl1, n1, v, n, tbytes, s->bs->size, err);
out:
    if (r < 0 && err && !*err)
        fq_seterr(err, "Could not create snapshot '%s': %s", name, strerror(-r));
    free(nl1);
    qcow2_snapshots_free(v, n);
    return r;
}

int qcow2_snapshot_apply(struct qcow2 *s, const char *which, char *err)
{
    struct qsnap *v = NULL;
    size_t n = 0;
    uint64_t tbytes, *sl1 = NULL, *nl1 = NULL;
    struct qtx tx;
    int r;

    if ((r = begin(s, &v, &n, &tbytes, err)) < 0)
        return r;
    long i = find_snapshot(v, n, which);
    if (i < 0) {
        fq_seterr(err, "Snapshot '%s' not found", which);
        r = -ENOENT;
        goto out;
    }
    struct qsnap *sn = &v[i];
    uint64_t per_l1 = s->cluster_size * s->l2_entries;
    if (FQ_DIV_UP(sn->disk_size, per_l1) > sn->l1_size) {
        fq_seterr(err, "Snapshot '%s': disk size %llu needs more than its %u L1 entries", which,
                  (unsigned long long)sn->disk_size, sn->l1_size);
        r = -EINVAL;
        goto out;
    }
    uint32_t nn = FQ_MAX(sn->l1_size, s->l1_size);
    if ((r = qcow2_read_l1(s, sn->l1_offset, sn->l1_size, &sl1)) < 0)
        goto out;
    if (!(nl1 = calloc(FQ_MAX(nn, 1u), sizeof(uint64_t)))) {
        r = -ENOMEM;
        goto out;
    }
    for (uint32_t k = 0; k < sn->l1_size; k++)
        nl1[k] = sl1[k] & ~L2E_COPIED;
    if ((r = qtx_begin(s, &tx)) < 0)
        goto out;
    /* the snapshot's tree gains the active state's references, the old
     * active tree loses them; the flags follow the refcounts */
    r = qtx_tree_ref(&tx, nl1, nn, 1);
    if (r == -ERANGE)
        fq_seterr(err, "Refcounts of %u bits cannot count the references of another copy",
                  s->refcount_bits);
    if (r == 0)
        r = qtx_tree_ref(&tx, s->l1, s->l1_size, -1);
    if (r == 0)
        r = qtx_fix_copied(&tx, nl1, nn, NULL);
    if (r == 0)
        r = qtx_set_l1_copied(&tx, nl1, nn);
    r = tx_finish(&tx, r, nl1, nn, NULL, 0, 0, sn->disk_size, err);
out:
    if (r < 0 && err && !*err)
        fq_seterr(err, "Could not apply snapshot '%s': %s", which, strerror(-r));
    free(sl1);
    free(nl1);
    qcow2_snapshots_free(v, n);
    return r;
}

int qcow2_snapshot_delete(struct qcow2 *s, const char *which, char *err)
{
    struct qsnap *v = NULL, gone;
    size_t n = 0;
    uint64_t tbytes, *sl1 = NULL, *nl1 = NULL;
    uint32_t n1 = s->l1_size;
    struct qtx tx;
    bool removed = false;
    int r;

    if ((r = begin(s, &v, &n, &tbytes, err)) < 0)
        return r;
    long i = find_snapshot(v, n, which);
    if (i < 0) {
        fq_seterr(err, "Snapshot '%s' not found", which);
        r = -ENOENT;
        goto out;
    }
    if ((r = qcow2_read_l1(s, v[i].l1_offset, v[i].l1_size, &sl1)) < 0)
        goto out;
    if (!(nl1 = malloc(FQ_MAX(n1, 1u) * sizeof(uint64_t)))) {
        r = -ENOMEM;
        goto out;
    }
    memcpy(nl1, s->l1, (size_t)n1 * sizeof(uint64_t));
    gone = v[i];
    memmove(&v[i], &v[i + 1], (n - (size_t)i - 1) * sizeof(*v));
    n--;
    removed = true;
    if ((r = qtx_begin(s, &tx)) < 0)
        goto out;
    /* the snapshot's tree and L1 table lose its references; what the
     * active tables now hold alone gets its COPIED flag */
    r = qtx_tree_ref(&tx, sl1, gone.l1_size, -1);
    if (r == 0 && gone.l1_size)
        r = qtx_ref(&tx, gone.l1_offset, FQ_DIV_UP((uint64_t)gone.l1_size * 8, s->cluster_size), -1);
    if (r == 0)
        r = qtx_fix_copied(&tx, nl1, n1, NULL);
    if (r == 0)
        r = qtx_set_l1_copied(&tx, nl1, n1);
    r = tx_finish(&tx, r, nl1, n1, v, n, tbytes, s->bs->size, err);
out:
    if (removed) {
        free(gone.id);
        free(gone.name);
        free(gone.extra);
    }
    if (r < 0 && err && !*err)
        fq_seterr(err, "Could not delete snapshot '%s': %s", which, strerror(-r));
    free(sl1);
    free(nl1);
    qcow2_snapshots_free(v, n);
    return r;
}
