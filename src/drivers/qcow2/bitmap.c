/* bitmap.c: persistent dirty bitmaps kept true while the image is written.
 *
 * On a read-write open every enabled ("auto") bitmap that was stored
 * consistently is *tracked*: its table is read and checked, the in-use
 * flag is set on disk before the first write (so that a crash leaves it
 * inconsistent, never silently wrong), and every write, write-zeroes and
 * discard the planner receives sets its bits (qcow2_bitmaps_dirty). The
 * bits live in memory, one cluster of bitmap data per table entry,
 * allocated when first touched: memory is bounded by the bitmap's size.
 *
 * Storing (qbm_commit, at close and around whole-image operations) never
 * writes over a cluster the directory on disk points at: changed data
 * clusters (old content OR new bits), the changed tables and the directory
 * go to new clusters; the refcounts of those are written, everything is
 * flushed, then one header write switches the bitmaps extension to the new
 * directory (flushed), and only then are the old clusters freed. A crash
 * before the switch leaves the old directory, with the in-use flags of the
 * tracked bitmaps set; after it, leaks at worst.
 *
 * Disabled bitmaps, bitmaps already in use and bitmaps with unknown extra
 * data or flags are left as they are. Everything read from the directory
 * and the tables is checked before use; a bitmap whose table points
 * outside its own clusters is never written or freed ("bad").
 * SPDX-License-Identifier: MIT
 */
#include <stdio.h>

#include "bitmap.h"

/* Size of one directory entry: fixed part, extra data, name, padding. */
static uint64_t entry_size(uint32_t extra, uint32_t name)
{
    return FQ_ALIGN_UP((uint64_t)QBE_FIXED + extra + name, 8);
}

/* The bitmaps extension among the kept ones, or NULL. */
static struct qext *bitmaps_ext(struct qcow2 *s)
{
    for (size_t i = 0; i < s->exts.len; i++)
        if (s->exts.ptr[i].type == QEXT_BITMAPS)
            return &s->exts.ptr[i];
    return NULL;
}

uint64_t qbm_table_entries(const struct qcow2 *s, uint8_t gran_bits)
{
    uint64_t bits = FQ_DIV_UP(s->bs->size, 1ull << gran_bits);

    return FQ_DIV_UP(FQ_DIV_UP(bits, 8), s->cluster_size);
}

void qbm_free_one(struct qbm *b)
{
    if (b->chunk)
        for (uint32_t i = 0; i < b->table_size; i++)
            free(b->chunk[i]);
    free(b->chunk);
    free(b->table);
    free(b->extra);
    free(b->rd);
    memset(b, 0, sizeof(*b));
}

/* Free the whole model. */
void qcow2_bitmaps_free(struct qcow2 *s)
{
    if (!s->bm)
        return;
    for (uint32_t i = 0; i < s->bm->n; i++)
        qbm_free_one(&s->bm->v[i]);
    free(s->bm->v);
    qfree_vec_reset(&s->bm->drop);
    free(s->bm);
    s->bm = NULL;
}

/* Parse the directory `d` (`dsize` bytes at `doff`, `nb` entries) into
 * the model. */
static int parse_dir(struct qcow2 *s, const uint8_t *d, uint64_t dsize, uint64_t doff,
                     uint32_t nb, char *err)
{
    struct qbitmaps *m = s->bm;
    uint64_t pos = 0;

    m->v = calloc(nb ? nb : 1, sizeof(*m->v));
    if (!m->v)
        return -ENOMEM;
    for (uint32_t i = 0; i < nb; i++) {
        const uint8_t *e = d + pos;
        struct qbm *b = &m->v[i];
        uint64_t esz = dsize - pos >= QBE_FIXED
                           ? entry_size(fq_be32(e + QBE_EXTRA_SIZE), fq_be16(e + QBE_NAME_SIZE))
                           : 0;
        uint16_t name = esz ? fq_be16(e + QBE_NAME_SIZE) : 0;
        if (!esz || esz > dsize - pos || name == 0 || name > QBM_MAX_NAME ||
            e[QBE_GRAN_BITS] < QBM_MIN_GRAN_BITS || e[QBE_GRAN_BITS] > QBM_MAX_GRAN_BITS) {
            fq_seterr(err, "Bitmap directory entry %u at 0x%llx is invalid", i,
                      (unsigned long long)(doff + pos));
            return -EINVAL;
        }
        m->n = i + 1;
        b->rd_idx = -1;
        b->table_off = fq_be64(e + QBE_TABLE_OFFSET);
        b->table_size = fq_be32(e + QBE_TABLE_SIZE);
        b->flags = fq_be32(e + QBE_FLAGS);
        b->type = e[QBE_TYPE];
        b->gran_bits = e[QBE_GRAN_BITS];
        b->extra_len = fq_be32(e + QBE_EXTRA_SIZE);
        b->name_len = name;
        memcpy(b->name, e + QBE_FIXED + b->extra_len, name);
        b->name[name] = 0;
        if (b->extra_len && !(b->extra = malloc(b->extra_len)))
            return -ENOMEM;
        if (b->extra_len)
            memcpy(b->extra, e + QBE_FIXED, b->extra_len);
        /* what this library cannot vouch for, it leaves alone */
        if ((b->flags & ~QBM_F_KNOWN) || b->type != QBM_TYPE_DIRTY ||
            (b->extra_len && !(b->flags & QBM_F_EXTRA_COMPAT)) || strlen(b->name) != name)
            b->bad = true;
        pos += esz;
    }
    return 0;
}

int qbm_model(struct qcow2 *s, char *err)
{
    const struct qext *x = bitmaps_ext(s);
    uint32_t nb = 0;
    uint64_t dsize = 0, doff = 0;
    CLEANUP_FREE uint8_t *d = NULL;
    int r;

    if (s->bm)
        return 0;
    if (!(s->bm = calloc(1, sizeof(*s->bm))))
        return -ENOMEM;
    if (!x || !(s->autoclear & QCOW2_AUTOCLEAR_BITMAPS))
        return 0;          /* none, or a stale directory: none */
    if (x->len < QBX_LEN) {
        fq_seterr(err, "Bitmaps extension is %u bytes (at least %d)", x->len, QBX_LEN);
        r = -EINVAL;
        goto fail;
    }
    nb = fq_be32(x->data + QBX_NB_BITMAPS);
    dsize = fq_be64(x->data + QBX_DIR_SIZE);
    doff = fq_be64(x->data + QBX_DIR_OFFSET);
    if (nb == 0)
        return 0;
    if (nb > QBM_MAX_BITMAPS || dsize < (uint64_t)QBE_FIXED * nb || dsize > QBM_MAX_DIR_BYTES ||
        (doff & (s->cluster_size - 1)) || doff < s->cluster_size || doff > (1ull << 56)) {
        fq_seterr(err, "Bitmap directory (%u bitmaps, %llu bytes at 0x%llx) is invalid", nb,
                  (unsigned long long)dsize, (unsigned long long)doff);
        r = -EINVAL;
        goto fail;
    }
    if (!(d = malloc((size_t)dsize))) {
        r = -ENOMEM;
        goto fail;
    }
    if ((r = fq_bdev_pread_sync(s->file, d, (size_t)dsize, doff)) < 0) {
        fq_seterr(err, "Could not read the bitmap directory at 0x%llx: %s",
                  (unsigned long long)doff, strerror(-r));
        goto fail;
    }
    s->bm->dir_off = doff;
    s->bm->dir_size = dsize;
    if ((r = parse_dir(s, d, dsize, doff, nb, err)) == 0)
        return 0;
fail:
    qcow2_bitmaps_free(s);
    return r;
}

struct qbm *qbm_find(struct qcow2 *s, const char *name)
{
    for (uint32_t i = 0; s->bm && i < s->bm->n; i++)
        if (!strcmp(s->bm->v[i].name, name))
            return &s->bm->v[i];
    return NULL;
}

/* Does [off, off + len) lie in clusters with a reference and no other
 * metadata? (Where the bitmaps' own clusters must lie.) */
static bool own_clusters(struct qcow2 *s, uint64_t off, uint64_t len)
{
    if (len == 0 || off > (1ull << 56) || qcow2_overlaps_metadata(s, off, len))
        return false;
    for (uint64_t c = off >> s->cluster_bits; c <= (off + len - 1) >> s->cluster_bits; c++) {
        uint64_t rc;
        if (qcow2_get_refcount(s, c, &rc) < 0 || rc == 0)
            return false;
    }
    return true;
}

int qbm_load_table(struct qcow2 *s, struct qbm *b, char *err)
{
    uint64_t want = qbm_table_entries(s, b->gran_bits), bytes = (uint64_t)b->table_size * 8;

    if (b->table)
        return 0;
    if (b->table_size != want || b->table_size > QBM_MAX_TABLE ||
        (b->table_size && (!b->table_off || (b->table_off & (s->cluster_size - 1)) ||
                           b->table_off > (1ull << 56)))) {
        fq_seterr(err, "Bitmap '%s' has an invalid table (%u entries at 0x%llx, %llu expected)",
                  b->name, b->table_size, (unsigned long long)b->table_off,
                  (unsigned long long)want);
        return -EINVAL;
    }
    uint64_t *t = calloc(b->table_size ? b->table_size : 1, 8);
    if (!t)
        return -ENOMEM;
    int r = bytes ? fq_bdev_pread_sync(s->file, t, (size_t)bytes, b->table_off) : 0;
    if (r < 0) {
        fq_seterr(err, "Could not read the table of bitmap '%s': %s", b->name, strerror(-r));
        free(t);
        return r;
    }
    for (uint32_t i = 0; i < b->table_size; i++) {
        t[i] = fq_be64(&t[i]);
        uint64_t off = t[i] & QBT_OFFSET_MASK;
        if ((t[i] & QBT_RESERVED) || (off && (t[i] & QBT_ALL_ONES)) ||
            (off & (s->cluster_size - 1))) {
            fq_seterr(err, "Bitmap '%s' has an invalid table entry %u (0x%llx)", b->name, i,
                      (unsigned long long)t[i]);
            free(t);
            return -EINVAL;
        }
    }
    b->table = t;
    b->disk_entries = b->table_size;
    return 0;
}

/* Host clusters a bitmap owns (its table, its data) appended to *v. */
static int owned_clusters(struct qcow2 *s, const struct qbm *b, struct qfree_vec *v)
{
    int r = 0;

    if (b->disk_entries)
        r = qfree_vec_push(v, (struct qfree){ b->table_off,
                                              FQ_DIV_UP((uint64_t)b->disk_entries * 8, s->cluster_size) });
    for (uint32_t i = 0; r == 0 && i < b->table_size; i++)
        if (b->table[i] & QBT_OFFSET_MASK)
            r = qfree_vec_push(v, (struct qfree){ b->table[i] & QBT_OFFSET_MASK, 1 });
    return r;
}

/* A run of clusters one bitmap (or the directory: owner -1) claims. */
struct claim {
    uint64_t off, end;        /* host bytes */
    int64_t owner;
};
FQ_VECTOR(claim_vec, struct claim)

static int cmp_claim(const void *a, const void *b)
{
    uint64_t x = ((const struct claim *)a)->off, y = ((const struct claim *)b)->off;

    return x < y ? -1 : x > y;
}

/* Table entries all the bitmaps of one image may hold in memory together. */
#define QBM_MAX_TOTAL_ENTRIES (1u << 25)

/* Before anything is written: read every table, and mark bad the bitmaps
 * whose clusters are not their own (no reference, other metadata, or
 * shared with another bitmap). A directory not in clusters of its own is
 * -EINVAL: it is never written. */
static int check_all(struct qcow2 *s, char *err)
{
    struct qbitmaps *m = s->bm;
    struct claim_vec all = { 0 };
    uint64_t total = 0;
    int r = 0;

    if (m->checked || !m->n)
        return 0;
    if (!own_clusters(s, m->dir_off, m->dir_size)) {
        fq_seterr(err, "Bitmap directory at 0x%llx is not in clusters of its own",
                  (unsigned long long)m->dir_off);
        return -EINVAL;
    }
    uint64_t dend = FQ_ALIGN_UP(m->dir_off + m->dir_size, s->cluster_size);
    r = claim_vec_push(&all, (struct claim){ m->dir_off, dend, -1 });
    for (uint32_t i = 0; r == 0 && i < m->n; i++) {
        struct qbm *b = &m->v[i];
        struct qfree_vec mine = { 0 };
        char e2[FQ_ERR_MAX];
        total += b->table_size;
        if (b->bad || total > QBM_MAX_TOTAL_ENTRIES || (r = qbm_load_table(s, b, e2)) == -EINVAL) {
            b->bad = true;
            r = 0;
            continue;
        }
        if (r < 0 || (r = owned_clusters(s, b, &mine)) < 0) {
            qfree_vec_reset(&mine);
            break;
        }
        for (size_t k = 0; k < mine.len && r == 0; k++) {
            uint64_t len = mine.ptr[k].nb_clusters * s->cluster_size;
            if (!own_clusters(s, mine.ptr[k].offset, len))
                b->bad = true;
            r = claim_vec_push(&all, (struct claim){ mine.ptr[k].offset,
                                                     mine.ptr[k].offset + len, i });
        }
        qfree_vec_reset(&mine);
    }
    if (r == 0 && all.len > 1) {
        /* clusters claimed twice: every bitmap involved is bad */
        qsort(all.ptr, all.len, sizeof(*all.ptr), cmp_claim);
        uint64_t end = all.ptr[0].end;
        int64_t last = all.ptr[0].owner;
        for (size_t k = 1; k < all.len && r == 0; k++) {
            struct claim *q = &all.ptr[k];
            if (q->off < end) {
                if (q->owner < 0 || last < 0) {
                    fq_seterr(err, "Bitmap directory at 0x%llx is shared with a bitmap",
                              (unsigned long long)m->dir_off);
                    r = -EINVAL;
                    break;
                }
                m->v[q->owner].bad = m->v[last].bad = true;
            }
            if (q->end > end) {
                end = q->end;
                last = q->owner;
            }
        }
    }
    claim_vec_reset(&all);
    if (r == 0)
        m->checked = true;
    return r;
}

int qbm_set_bits(struct qcow2 *s, struct qbm *b, uint64_t first, uint64_t end)
{
    uint64_t per = s->cluster_size * 8;

    if (!b->chunk && !(b->chunk = calloc(b->table_size ? b->table_size : 1, sizeof(*b->chunk)))) {
        b->lost = true;
        return -ENOMEM;
    }
    while (first < end) {
        uint64_t idx = first / per, lo = first % per, hi = FQ_MIN(per, lo + (end - first));
        uint8_t *c = b->chunk[idx];
        if (!c && !(c = b->chunk[idx] = calloc(1, s->cluster_size))) {
            b->lost = true;
            return -ENOMEM;
        }
        /* bit j of byte i is bit i * 8 + j */
        while (lo < hi && (lo & 7))
            c[lo >> 3] |= (uint8_t)(1u << (lo & 7)), lo++;
        if (hi - lo >= 8) {
            memset(c + (lo >> 3), 0xff, (hi - lo) >> 3);
            lo += (hi - lo) & ~7ull;
        }
        while (lo < hi)
            c[lo >> 3] |= (uint8_t)(1u << (lo & 7)), lo++;
        first += hi - first % per;
        b->rd_idx = -1;
    }
    return 0;
}

void qcow2_bitmaps_dirty(struct qcow2 *s, uint64_t off, uint64_t len)
{
    uint64_t end = FQ_MIN(off + len, s->bs->size);

    if (off >= end)
        return;
    for (uint32_t i = 0; i < s->bm->n; i++) {
        struct qbm *b = &s->bm->v[i];
        if (b->tracked && !b->lost)
            qbm_set_bits(s, b, off >> b->gran_bits, ((end - 1) >> b->gran_bits) + 1);
    }
}

int qbm_read_chunk(struct qcow2 *s, struct qbm *b, uint64_t idx, const uint8_t **out)
{
    int r;

    if (b->rd_idx == (int64_t)idx) {
        *out = b->rd;
        return 0;
    }
    if (!b->rd && !(b->rd = fq_memalign(s->cluster_size)))
        return -ENOMEM;
    b->rd_idx = -1;
    uint64_t e = b->replace || !b->table ? 0 : b->table[idx];
    if (e & QBT_OFFSET_MASK) {
        if ((r = fq_bdev_pread_sync(s->file, b->rd, s->cluster_size, e & QBT_OFFSET_MASK)) < 0)
            return r;
    } else {
        memset(b->rd, e & QBT_ALL_ONES ? 0xff : 0, s->cluster_size);
    }
    if (b->chunk && b->chunk[idx])
        for (uint64_t k = 0; k < s->cluster_size; k++)
            b->rd[k] |= b->chunk[idx][k];
    {
        /* the bits past the bitmap's end stay zero (all-ones entries, a
         * disk that shrank) */
        uint64_t bits = FQ_DIV_UP(s->bs->size, 1ull << b->gran_bits), per = s->cluster_size * 8;
        if ((idx + 1) * per > bits && bits >= idx * per) {
            uint64_t lo = bits - idx * per;
            for (uint64_t k = lo; k < FQ_ALIGN_UP(lo, 8); k++)
                b->rd[k >> 3] &= (uint8_t)~(1u << (k & 7));
            memset(b->rd + FQ_ALIGN_UP(lo, 8) / 8, 0, s->cluster_size - FQ_ALIGN_UP(lo, 8) / 8);
        }
    }
    b->rd_idx = (int64_t)idx;
    *out = b->rd;
    return 0;
}

/* Is the buffer all zeros? */
static bool all_zero(const uint8_t *p, size_t n)
{
    return n == 0 || (p[0] == 0 && memcmp(p, p + 1, n - 1) == 0);
}

/* A commit in progress: what it allocated (freed again on failure) and
 * what it replaces (freed after the switch). */
struct commit {
    struct qfree_vec news, olds;
    uint64_t **tables;        /* per bitmap: the new table, or NULL */
    uint64_t *table_offs;
};

/* Allocate `n` clusters and write `len` bytes of buf there. */
static int put_new(struct qcow2 *s, struct commit *c, const void *buf, uint64_t len, uint64_t *off)
{
    uint64_t n = FQ_DIV_UP(len, s->cluster_size);
    int r = qcow2_alloc_clusters(s, n, off);

    if (r < 0)
        return r;
    if ((r = qfree_vec_push(&c->news, (struct qfree){ *off, n })) < 0) {
        qcow2_free_deferred(s, *off, n);
        return r;
    }
    CLEANUP_FREE uint8_t *pad = NULL;
    if (len % s->cluster_size) {
        /* whole clusters: no stale bytes in the tail */
        if (!(pad = calloc(1, n * s->cluster_size)))
            return -ENOMEM;
        memcpy(pad, buf, len);
        buf = pad;
    }
    return fq_bdev_pwrite_tagged(s->file, buf, n * s->cluster_size, *off, FQ_TAG_OTHER_META);
}

/* The new table of a changed bitmap: changed data clusters written anew. */
static int commit_bitmap(struct qcow2 *s, struct commit *c, uint32_t i)
{
    struct qbm *b = &s->bm->v[i];
    uint64_t *t = calloc(b->table_size ? b->table_size : 1, 8);
    int r = 0;

    if (!t)
        return -ENOMEM;
    c->tables[i] = t;
    for (uint32_t k = 0; k < b->table_size; k++) {
        uint64_t old = b->table ? b->table[k] : 0;
        const uint8_t *data;
        if (!b->chunk || !b->chunk[k]) {
            t[k] = b->replace ? 0 : old;
            if (b->replace && (old & QBT_OFFSET_MASK))
                r = qfree_vec_push(&c->olds, (struct qfree){ old & QBT_OFFSET_MASK, 1 });
        } else if ((r = qbm_read_chunk(s, b, k, &data)) == 0) {
            if (all_zero(data, s->cluster_size))
                t[k] = 0;
            else
                r = put_new(s, c, data, s->cluster_size, &t[k]);
            if (r == 0 && (old & QBT_OFFSET_MASK))
                r = qfree_vec_push(&c->olds, (struct qfree){ old & QBT_OFFSET_MASK, 1 });
        }
        if (r < 0)
            return r;
    }
    c->table_offs[i] = 0;
    if (b->table_size) {
        for (uint32_t k = 0; k < b->table_size; k++)
            fq_put_be64(&t[k], t[k]);
        r = put_new(s, c, t, (uint64_t)b->table_size * 8, &c->table_offs[i]);
        for (uint32_t k = 0; k < b->table_size; k++)
            t[k] = fq_be64(&t[k]);
    }
    if (r == 0 && b->table && b->disk_entries)
        r = qfree_vec_push(&c->olds, (struct qfree){ b->table_off,
                                                     FQ_DIV_UP((uint64_t)b->disk_entries * 8, s->cluster_size) });
    return r;
}

/* Bytes of the directory the model describes; with `out`, write it. */
static uint64_t build_dir(struct qcow2 *s, const struct commit *c, bool in_use, uint8_t *out)
{
    uint64_t pos = 0;

    for (uint32_t i = 0; i < s->bm->n; i++) {
        const struct qbm *b = &s->bm->v[i];
        uint64_t esz = entry_size(b->extra_len, b->name_len);
        if (out) {
            uint8_t *e = out + pos;
            uint32_t flags = b->flags;
            if (b->tracked)
                flags = in_use || b->lost ? flags | QBM_F_IN_USE : flags & ~QBM_F_IN_USE;
            memset(e, 0, esz);
            fq_put_be64(e + QBE_TABLE_OFFSET, c && c->tables[i] ? c->table_offs[i] : b->table_off);
            fq_put_be32(e + QBE_TABLE_SIZE, b->table_size);
            fq_put_be32(e + QBE_FLAGS, flags);
            e[QBE_TYPE] = b->type;
            e[QBE_GRAN_BITS] = b->gran_bits;
            fq_put_be16(e + QBE_NAME_SIZE, b->name_len);
            fq_put_be32(e + QBE_EXTRA_SIZE, b->extra_len);
            if (b->extra_len)
                memcpy(e + QBE_FIXED, b->extra, b->extra_len);
            memcpy(e + QBE_FIXED + b->extra_len, b->name, b->name_len);
        }
        pos += esz;
    }
    return pos;
}

/* Set the bitmaps extension to describe `nb` bitmaps in a directory of
 * `dsize` bytes at `doff` (none: drop it and the bitmaps bit), in memory. */
static int set_ext(struct qcow2 *s, uint32_t nb, uint64_t dsize, uint64_t doff)
{
    struct qext *x = bitmaps_ext(s);

    if (nb == 0) {
        if (x) {
            free(x->data);
            *x = s->exts.ptr[--s->exts.len];
        }
        s->autoclear &= ~QCOW2_AUTOCLEAR_BITMAPS;
        return 0;
    }
    if (!x) {
        struct qext nx = { QEXT_BITMAPS, QBX_LEN, calloc(1, QBX_LEN) };
        if (!nx.data || qext_vec_push(&s->exts, nx) < 0) {
            free(nx.data);
            return -ENOMEM;
        }
        x = bitmaps_ext(s);
    }
    if (x->len < QBX_LEN)
        return -EINVAL;
    memset(x->data, 0, x->len);
    fq_put_be32(x->data + QBX_NB_BITMAPS, nb);
    fq_put_be64(x->data + QBX_DIR_SIZE, dsize);
    fq_put_be64(x->data + QBX_DIR_OFFSET, doff);
    s->autoclear |= QCOW2_AUTOCLEAR_BITMAPS;
    return 0;
}

/* Switch the header to the new directory (written and flushed). Returns
 * 0; -errno with nothing written (the old header stands); or, when the
 * header write or its flush failed, -errno with *unsure set: the header on
 * disk names the old or the new directory, so both are kept. */
static int switch_header(struct qcow2 *s, uint32_t nb, uint64_t dsize, uint64_t doff,
                         bool *unsure)
{
    const struct qbitmaps *m = s->bm;
    struct qext *x = bitmaps_ext(s);
    uint32_t old_nb = x && x->len >= QBX_LEN ? fq_be32(x->data + QBX_NB_BITMAPS) : 0;
    uint64_t old_ac = s->autoclear;
    int r = set_ext(s, nb, dsize, doff);

    *unsure = false;
    if (r == 0 && (r = qcow2_write_header(s)) == 0 && (r = qcow2_flush_file(s)) == 0)
        return 0;
    *unsure = true;
    /* the in-memory header names the old directory again */
    if (set_ext(s, m->dir_size ? old_nb : 0, m->dir_size, m->dir_off) == 0)
        s->autoclear = old_ac;
    return r;
}

/* Has b content to write (bits set, cleared, resized, or new)? */
static bool needs_store(const struct qbm *b)
{
    return !b->bad && (b->chunk || b->replace || b->resized || (!b->table && !b->table_off));
}

int qbm_commit(struct qcow2 *s, bool in_use, char *err)
{
    struct qbitmaps *m = s->bm;
    struct commit c = { 0 };
    uint64_t dsize = 0, doff = 0;
    int r = 0;

    if (!m)
        return 0;
    c.tables = calloc(m->n ? m->n : 1, sizeof(*c.tables));
    c.table_offs = calloc(m->n ? m->n : 1, sizeof(*c.table_offs));
    if (!c.tables || !c.table_offs)
        r = -ENOMEM;
    for (uint32_t i = 0; r == 0 && i < m->n; i++)
        if (needs_store(&m->v[i]))
            r = commit_bitmap(s, &c, i);
    if (r == 0 && m->n) {
        dsize = build_dir(s, &c, in_use, NULL);
        uint8_t *d = calloc(1, (size_t)dsize);
        r = d ? 0 : -ENOMEM;
        if (r == 0) {
            build_dir(s, &c, in_use, d);
            r = put_new(s, &c, d, dsize, &doff);
        }
        free(d);
    }
    /* the new clusters and their refcounts durable before the switch */
    bool unsure = false;
    if (r == 0 && (r = qcow2_writeback(s)) == 0 && (r = qcow2_flush_file(s)) == 0)
        r = switch_header(s, m->n, dsize, doff, &unsure);
    if (r < 0) {
        /* the new clusters go again, unless the header may name them */
        for (size_t k = 0; k < c.news.len && !unsure; k++)
            qcow2_free_deferred(s, c.news.ptr[k].offset, c.news.ptr[k].nb_clusters);
        fq_seterr(err, "Could not store the bitmaps: %s", strerror(-r));
        goto out;
    }
    /* switched: the model is what is on disk; free what it replaced */
    if (m->dir_size)
        qcow2_free_deferred(s, m->dir_off, FQ_DIV_UP(m->dir_size, s->cluster_size));
    for (size_t k = 0; k < c.olds.len; k++)
        qcow2_free_deferred(s, c.olds.ptr[k].offset, c.olds.ptr[k].nb_clusters);
    for (size_t k = 0; k < m->drop.len; k++)
        qcow2_free_deferred(s, m->drop.ptr[k].offset, m->drop.ptr[k].nb_clusters);
    qfree_vec_reset(&m->drop);
    m->dir_off = doff;
    m->dir_size = dsize;
    m->marked = in_use;
    for (uint32_t i = 0; i < m->n; i++) {
        struct qbm *b = &m->v[i];
        if (b->tracked)
            b->flags = in_use || b->lost ? b->flags | QBM_F_IN_USE : b->flags & ~QBM_F_IN_USE;
        if (!c.tables[i])
            continue;
        free(b->table);
        b->table = c.tables[i];
        c.tables[i] = NULL;
        b->table_off = c.table_offs[i];
        b->disk_entries = b->table_size;
        if (b->chunk)
            for (uint32_t k = 0; k < b->table_size; k++)
                free(b->chunk[k]);
        free(b->chunk);
        b->chunk = NULL;
        b->replace = b->changed = b->resized = false;
        b->rd_idx = -1;
    }
    r = qcow2_writeback(s);
out:
    for (uint32_t i = 0; c.tables && i < m->n; i++)
        free(c.tables[i]);
    free(c.tables);
    free(c.table_offs);
    qfree_vec_reset(&c.news);
    qfree_vec_reset(&c.olds);
    return r;
}

int qbm_forget(struct qcow2 *s, struct qbm *b)
{
    struct qbitmaps *m = s->bm;
    int r = 0;

    if (!b->bad && b->table && b->table_off)
        r = owned_clusters(s, b, &m->drop);
    if (r < 0)
        return r;
    qbm_free_one(b);
    size_t i = (size_t)(b - m->v);
    memmove(&m->v[i], &m->v[i + 1], (m->n - i - 1) * sizeof(*b));
    m->n--;
    return 0;
}

/* Write the directory in place with the tracked bitmaps' in-use flag set
 * or cleared: only flags change, so a torn write leaves each entry old or
 * new, and a cleared flag is true (no content changed). A directory of
 * another size is stored anew instead. */
static int write_flags(struct qcow2 *s, bool in_use)
{
    struct qbitmaps *m = s->bm;
    uint64_t dsize = build_dir(s, NULL, in_use, NULL);

    if (dsize != m->dir_size)
        return qbm_commit(s, in_use, NULL);
    CLEANUP_FREE uint8_t *d = calloc(1, (size_t)dsize);
    if (!d)
        return -ENOMEM;
    build_dir(s, NULL, in_use, d);
    int r = fq_bdev_pwrite_tagged(s->file, d, (size_t)dsize, m->dir_off, FQ_TAG_OTHER_META);
    if (r == 0 && (r = qcow2_flush_file(s)) == 0) {
        m->marked = in_use;
        for (uint32_t i = 0; i < m->n; i++) {
            struct qbm *b = &m->v[i];
            if (b->tracked)
                b->flags = in_use || b->lost ? b->flags | QBM_F_IN_USE : b->flags & ~QBM_F_IN_USE;
        }
    }
    return r;
}

/* Flag the tracked bitmaps in use on disk. */
static int mark_in_use(struct qcow2 *s)
{
    return write_flags(s, true);
}

int qcow2_bitmaps_track(struct qcow2 *s, char *err)
{
    struct qbitmaps *m;
    bool any = false;
    int r;

    if (s->readonly)
        return 0;
    if ((r = qbm_model(s, err)) < 0 || (r = check_all(s, err)) < 0)
        return r;
    m = s->bm;
    for (uint32_t i = 0; i < m->n; i++) {
        struct qbm *b = &m->v[i];
        if (!(b->flags & QBM_F_AUTO) || (b->flags & QBM_F_IN_USE))
            continue;
        /* an enabled bitmap this library cannot keep is flagged in use */
        b->tracked = true;
        b->lost = b->bad;
        any = true;
    }
    if (any && (r = mark_in_use(s)) < 0)
        fq_seterr(err, "Could not mark the bitmaps in use: %s", strerror(-r));
    return r;
}

/* Resize b's table (and pending bits) to `n` entries; the clusters of
 * the entries cut go with the next commit, and the new last entry is
 * rewritten so that no bit past the end stays set. */
static int resize_one(struct qcow2 *s, struct qbm *b, uint32_t n)
{
    uint32_t old = b->table_size;

    /* the data clusters of the entries cut go with the next commit */
    for (uint32_t k = n; k < old && b->table; k++)
        if ((b->table[k] & QBT_OFFSET_MASK) &&
            qfree_vec_push(&s->bm->drop, (struct qfree){ b->table[k] & QBT_OFFSET_MASK, 1 }) < 0)
            return -ENOMEM;
    uint64_t *t = b->table ? realloc(b->table, (n ? n : 1) * 8ull) : NULL;
    if (b->table && !t)
        return -ENOMEM;
    if (t)
        b->table = t;
    if (b->chunk) {
        for (uint32_t k = n; k < old; k++)
            free(b->chunk[k]);
        uint8_t **c = realloc(b->chunk, (n ? n : 1) * sizeof(*c));
        if (!c)
            return -ENOMEM;
        b->chunk = c;
    }
    for (uint32_t k = old; k < n; k++) {
        if (b->table)
            b->table[k] = 0;
        if (b->chunk)
            b->chunk[k] = NULL;
    }
    b->table_size = n;
    b->resized = true;
    b->rd_idx = -1;
    if (n && n <= old) {
        /* the last entry again, its tail bits cleared by qbm_read_chunk */
        if (!b->chunk && !(b->chunk = calloc(n, sizeof(*b->chunk))))
            return -ENOMEM;
        if (!b->chunk[n - 1] && !(b->chunk[n - 1] = calloc(1, s->cluster_size)))
            return -ENOMEM;
    }
    return 0;
}

int qcow2_bitmaps_resized(struct qcow2 *s)
{
    int r = 0;

    for (uint32_t i = 0; s->bm && i < s->bm->n && r == 0; i++) {
        struct qbm *b = &s->bm->v[i];
        uint64_t n = qbm_table_entries(s, b->gran_bits);
        if (b->bad || (b->table_off && !b->table))
            continue;          /* left as it is */
        if (n > QBM_MAX_TABLE) {
            b->lost = true;    /* cannot follow: stays in use */
            continue;
        }
        if (n != b->table_size)
            r = resize_one(s, b, (uint32_t)n);
    }
    return r;
}

int qcow2_bitmaps_store(struct qcow2 *s, bool force, bool reopen, char *err)
{
    struct qbitmaps *m = s->bm;
    bool content = force, track = false;
    int r;

    if (!m || s->readonly || s->corrupt)
        return 0;
    content |= m->drop.len > 0;
    for (uint32_t i = 0; i < m->n; i++) {
        if (m->v[i].changed || needs_store(&m->v[i]))
            content = true;
        track |= m->v[i].tracked;
    }
    if (content)
        r = qbm_commit(s, false, err);
    else if (track && m->marked)
        r = write_flags(s, false);   /* nothing changed: only the flags */
    else
        return 0;
    if (r < 0)
        fq_seterr(err, "Could not store the bitmaps: %s", strerror(-r));
    if (r == 0 && reopen && track && (r = mark_in_use(s)) < 0)
        fq_seterr(err, "Could not mark the bitmaps in use: %s", strerror(-r));
    return r;
}
