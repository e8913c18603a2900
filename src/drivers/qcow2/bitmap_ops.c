/* bitmap_ops.c: the whole-image calls on persistent bitmaps: list, the
 * bytes a copy needs (measure), add / remove / clear / enable / disable,
 * setting bits (merges), and the dirty status of a range (dumps, the NBD
 * dirty-bitmap context).
 *
 * A change is made in the model (bitmap.h) and stored at once
 * (qcow2_bitmaps_store: new clusters, one header switch); the tracked
 * bitmaps are flagged in use again afterwards while the image stays open
 * for writing. Status reads the stored content OR the bits set since.
 * SPDX-License-Identifier: MIT
 */
#include <stdio.h>

#include "bitmap.h"

int qcow2_bitmap_list(struct qcow2 *s, struct fq_bitmap **out, int *count, char *err)
{
    int r;

    *out = NULL;
    *count = 0;
    if ((r = qbm_model(s, err)) < 0 || s->bm->n == 0)
        return r;
    struct fq_bitmap *l = calloc(s->bm->n, sizeof(*l));
    if (!l)
        return -ENOMEM;
    for (uint32_t i = 0; i < s->bm->n; i++) {
        const struct qbm *b = &s->bm->v[i];
        l[i].granularity = 1ull << b->gran_bits;
        l[i].flags = (b->flags & QBM_F_IN_USE ? FQ_BITMAP_IN_USE : 0) |
                     (b->flags & QBM_F_AUTO ? FQ_BITMAP_AUTO : 0);
        snprintf(l[i].name, sizeof(l[i].name), "%s", b->name);
    }
    *out = l;
    *count = (int)s->bm->n;
    return 0;
}

int qcow2_bitmaps_size(struct qcow2 *s, uint64_t cs, uint64_t *out, char *err)
{
    uint64_t total = 0, dir_bytes = 0;
    int r;

    *out = 0;
    if ((r = qbm_model(s, err)) < 0 || s->bm->n == 0)
        return r;
    /* what a copy needs: each bitmap wholly allocated (its data clusters
     * and its table, rounded up to clusters), plus the directory, whose
     * entries carry no extra data */
    for (uint32_t i = 0; i < s->bm->n; i++) {
        const struct qbm *b = &s->bm->v[i];
        uint64_t bits = FQ_DIV_UP(s->bs->size, 1ull << b->gran_bits);
        uint64_t data_clusters = FQ_DIV_UP(FQ_DIV_UP(bits, 8), cs);
        total += data_clusters * cs + FQ_ALIGN_UP(data_clusters * 8, cs);
        dir_bytes += FQ_ALIGN_UP((uint64_t)QBE_FIXED + b->name_len, 8);
    }
    *out = total + FQ_ALIGN_UP(dir_bytes, cs);
    return 0;
}

/* The bitmap `name`, usable for `what` (its table loaded): -ENOENT and
 * -EUCLEAN (inconsistent) with qemu's messages, -EINVAL if damaged. */
static int usable(struct qcow2 *s, const char *name, struct qbm **out, char *err)
{
    int r = qbm_model(s, err);
    struct qbm *b = r < 0 ? NULL : qbm_find(s, name);

    if (r < 0)
        return r;
    if (!b) {
        fq_seterr(err, "Dirty bitmap '%s' not found", name);
        return -ENOENT;
    }
    if ((b->flags & QBM_F_IN_USE) && !b->tracked) {
        fq_seterr(err, "Bitmap '%s' is inconsistent and cannot be used", name);
        return -EUCLEAN;
    }
    if (b->bad) {
        fq_seterr(err, "Bitmap '%s' is damaged and cannot be used", name);
        return -EINVAL;
    }
    if (b->table_off && (r = qbm_load_table(s, b, err)) < 0)
        return r;
    *out = b;
    return 0;
}

/* Add an empty, enabled bitmap. */
static int add(struct qcow2 *s, const char *name, uint64_t gran, char *err)
{
    struct qbitmaps *m = s->bm;
    size_t len = strlen(name);

    if (qbm_find(s, name)) {
        fq_seterr(err, "Bitmap already exists: %s", name);
        return -EEXIST;
    }
    if (gran < 512 || gran > (1ull << QBM_MAX_GRAN_BITS) || (gran & (gran - 1))) {
        fq_seterr(err, "Granularity must be power of 2 and at least 512");
        return -EINVAL;
    }
    if (len > QBM_MAX_NAME) {
        fq_seterr(err, "Can't make bitmap '%s' persistent in '%s': Name length exceeds maximum "
                       "(%d characters)", name, s->bs->filename ? s->bs->filename : "", QBM_MAX_NAME);
        return -EINVAL;
    }
    if (s->version < 3) {
        fq_seterr(err, "Can't make bitmap '%s' persistent in '%s': Cannot store dirty bitmaps "
                       "in qcow2 v2 files", name, s->bs->filename ? s->bs->filename : "");
        return -ENOTSUP;
    }
    uint8_t gb = (uint8_t)__builtin_ctzll(gran);
    if (m->n >= QBM_MAX_BITMAPS || qbm_table_entries(s, gb) > QBM_MAX_TABLE) {
        fq_seterr(err, "Can't make bitmap '%s' persistent in '%s': too many bitmaps or a "
                       "too large bitmap", name, s->bs->filename ? s->bs->filename : "");
        return -EINVAL;
    }
    struct qbm *v = realloc(m->v, (m->n + 1) * sizeof(*v));
    if (!v)
        return -ENOMEM;
    m->v = v;
    struct qbm *b = &v[m->n];
    memset(b, 0, sizeof(*b));
    memcpy(b->name, name, len + 1);
    b->name_len = (uint16_t)len;
    b->type = QBM_TYPE_DIRTY;
    b->gran_bits = gb;
    b->flags = QBM_F_AUTO;
    b->table_size = (uint32_t)qbm_table_entries(s, gb);
    b->rd_idx = -1;
    b->tracked = true;       /* a new enabled bitmap tracks from now on */
    m->n++;
    return 0;
}

/* The default granularity of a new bitmap: the cluster size, between 4
 * KiB and 64 KiB. */
static uint64_t default_gran(const struct qcow2 *s)
{
    return FQ_MIN(FQ_MAX(s->cluster_size, 4096), 65536);
}

int qcow2_bitmap_change(struct qcow2 *s, const char *name, int op, uint64_t gran, char *err)
{
    struct qbm *b = NULL;
    int r = 0;

    if (s->readonly)
        return -EROFS;
    if ((r = qbm_model(s, err)) < 0)
        return r;
    switch (op) {
    case FQ_BITMAP_ADD:
        r = add(s, name, gran ? gran : default_gran(s), err);
        break;
    case FQ_BITMAP_REMOVE:
        if (!(b = qbm_find(s, name))) {
            fq_seterr(err, "Dirty bitmap '%s' not found", name);
            return -ENOENT;
        }
        r = qbm_forget(s, b);
        break;
    case FQ_BITMAP_CLEAR:
        if ((r = usable(s, name, &b, err)) == 0) {
            if (b->chunk)
                for (uint32_t k = 0; k < b->table_size; k++) {
                    free(b->chunk[k]);
                    b->chunk[k] = NULL;
                }
            b->replace = true;
            b->rd_idx = -1;
        }
        break;
    case FQ_BITMAP_ENABLE:
    case FQ_BITMAP_DISABLE:
        if ((r = usable(s, name, &b, err)) == 0) {
            bool on = op == FQ_BITMAP_ENABLE;
            b->flags = on ? b->flags | QBM_F_AUTO : b->flags & ~QBM_F_AUTO;
            if (on && !b->tracked)
                b->tracked = true;
            else if (!on && b->tracked) {
                b->tracked = false;
                b->flags &= ~QBM_F_IN_USE;   /* stored now, consistent */
            }
            b->changed = true;
        }
        break;
    case FQ_BITMAP_STORE:
        break;
    default:
        return -EINVAL;
    }
    if (r < 0)
        return r;
    return qcow2_bitmaps_store(s, true, true, err);
}

int qcow2_bitmap_set(struct qcow2 *s, const char *name, uint64_t off, uint64_t len, char *err)
{
    struct qbm *b;
    int r;

    if (s->readonly)
        return -EROFS;
    if ((r = usable(s, name, &b, err)) < 0)
        return r;
    if (off >= s->bs->size || len == 0)
        return 0;
    uint64_t end = FQ_MIN(s->bs->size - off, len) + off;
    r = qbm_set_bits(s, b, off >> b->gran_bits, ((end - 1) >> b->gran_bits) + 1);
    if (r < 0)
        fq_seterr(err, "Could not set the bits of bitmap '%s': %s", name, strerror(-r));
    return r;
}

/* Bit `bit` of a cluster of bitmap data. */
static inline bool bit_at(const uint8_t *c, uint64_t bit)
{
    return (c[bit >> 3] >> (bit & 7)) & 1;
}

int qcow2_bitmap_status(struct qcow2 *s, const char *name, uint64_t off, uint64_t len,
                        uint64_t *run, bool *dirty, char *err)
{
    struct qbm *b;
    int r;

    *run = 0;
    *dirty = false;
    if ((r = usable(s, name, &b, err)) < 0)
        return r;
    if (off >= s->bs->size || len == 0)
        return 0;
    uint64_t end = FQ_MIN(s->bs->size - off, len) + off;
    uint64_t per = s->cluster_size * 8, bit = off >> b->gran_bits;
    uint64_t last = (end - 1) >> b->gran_bits;   /* the last bit asked about */
    const uint8_t *c;
    bool first = true, want = false;

    while (bit <= last) {
        uint64_t idx = bit / per, k = bit % per;
        if ((r = qbm_read_chunk(s, b, idx, &c)) < 0) {
            fq_seterr(err, "Could not read bitmap '%s': %s", name, strerror(-r));
            return r;
        }
        if (first) {
            want = bit_at(c, k);
            first = false;
        }
        uint64_t stop = FQ_MIN(per, last - idx * per + 1);
        while (k < stop) {
            /* whole bytes of the wanted value at once */
            if (!(k & 7) && k + 8 <= stop && c[k >> 3] == (want ? 0xff : 0)) {
                k += 8;
                continue;
            }
            if (bit_at(c, k) != want)
                break;
            k++;
        }
        bit = idx * per + k;
        if (k < stop)
            break;
    }
    uint64_t stop_byte = bit > last ? end : bit << b->gran_bits;
    *run = FQ_MIN(stop_byte, end) - off;
    *dirty = want;
    return 0;
}
