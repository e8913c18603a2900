/* overlap.c: does a range of the file touch live metadata?
 *
 * Asked before every data write and every table write, and when the
 * allocator hands out clusters, so an answer must cost a binary search
 * however many tables the image has. The L2 tables (from the L1 table) and
 * the refcount blocks (from the refcount table) each have a sorted index
 * of their offsets. A table added since the index was built (a new L2
 * table or refcount block: qcow2_meta_added) goes into a small sorted list
 * beside it, merged into the index when the list grows past about
 * sqrt-like bounds, so an image that allocates a hundred thousand tables
 * costs a few memmoves per table, not a sort per table. A table that went
 * away may linger in the index: a hit is confirmed against the tables
 * themselves, and a stale one rebuilds the index. Any other change
 * (qcow2_meta_changed: a new L1 or refcount table, entries dropped) makes
 * the next question rebuild it.
 * SPDX-License-Identifier: MIT
 */
#include "qcow2.h"

void qcow2_meta_changed(struct qcow2 *s)
{
    s->meta_gen++;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

void qcow2_meta_index_free(struct qcow2 *s)
{
    for (int k = 0; k < 2; k++) {
        free(s->meta_idx[k].v);
        free(s->meta_idx[k].add);
        memset(&s->meta_idx[k], 0, sizeof(s->meta_idx[k]));
    }
}

static bool index_fresh(const struct qcow2 *s)
{
    return s->meta_idx[0].v && s->meta_idx_gen == s->meta_gen && s->meta_idx_l1 == s->l1 &&
           s->meta_idx_rt == s->rt && s->meta_idx_l1_size == s->l1_size;
}

/* The offsets of one kind (0: L2 tables, 1: refcount blocks), sorted. */
static int index_build_one(struct qcow2 *s, int kind)
{
    struct qmeta_set *m = &s->meta_idx[kind];
    uint64_t n = kind ? FQ_MIN(s->rt_hi, s->rt_entries) : s->l1_size, k = 0;
    uint64_t *v = malloc((n + 1) * sizeof(*v));

    if (!v)
        return -ENOMEM;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t off = kind ? s->rt[i] : s->l1[i] & L1E_OFFSET_MASK;
        if (off)
            v[k++] = off;
    }
    qsort(v, k, sizeof(*v), cmp_u64);
    free(m->v);
    m->v = v;
    m->n = k;
    m->nadd = 0;
    return 0;
}

static int index_build(struct qcow2 *s)
{
    int r = index_build_one(s, 0);

    if (r == 0)
        r = index_build_one(s, 1);
    if (r < 0) {
        qcow2_meta_index_free(s);
        return r;
    }
    s->meta_idx_gen = s->meta_gen;
    s->meta_idx_l1 = s->l1;
    s->meta_idx_rt = s->rt;
    s->meta_idx_l1_size = s->l1_size;
    return 0;
}

/* Merge the list of additions into the index. */
static int index_merge(struct qmeta_set *m)
{
    uint64_t *v = malloc((m->n + m->nadd + 1) * sizeof(*v));
    size_t i = 0, j = 0, k = 0;

    if (!v)
        return -ENOMEM;
    while (i < m->n || j < m->nadd)
        v[k++] = j == m->nadd || (i < m->n && m->v[i] <= m->add[j]) ? m->v[i++] : m->add[j++];
    free(m->v);
    m->v = v;
    m->n = k;
    m->nadd = 0;
    return 0;
}

/* Position of the first entry >= key in a sorted array. */
static size_t lower_bound(const uint64_t *v, size_t n, uint64_t key)
{
    size_t lo = 0, hi = n;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (v[mid] < key)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

void qcow2_meta_added(struct qcow2 *s, uint64_t off, bool refblock)
{
    struct qmeta_set *m = &s->meta_idx[refblock];

    if (!off || !index_fresh(s))
        return;                   /* the next rebuild sees it */
    if (m->nadd == m->cap_add) {
        size_t cap = m->cap_add ? m->cap_add * 2 : 64;
        uint64_t *a = realloc(m->add, cap * sizeof(*a));
        if (!a) {
            s->meta_gen++;        /* rebuild instead */
            return;
        }
        m->add = a;
        m->cap_add = cap;
    }
    size_t p = lower_bound(m->add, m->nadd, off);
    memmove(m->add + p + 1, m->add + p, (m->nadd - p) * sizeof(*m->add));
    m->add[p] = off;
    m->nadd++;
    /* merged when the list costs more per insertion than a merge per
     * that many insertions */
    if (m->nadd > 256 + m->n / 256 && index_merge(m) < 0)
        s->meta_gen++;
}

static bool ranges_overlap(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
    return a < b + blen && b < a + alen;
}

/* Whether a sorted array holds a table overlapping [off, off+len): the
 * first table starting past off - cs overlaps iff it starts before
 * off + len. */
static bool sorted_hit(const uint64_t *v, size_t n, uint64_t off, uint64_t len, uint64_t cs)
{
    size_t i = lower_bound(v, n, off >= cs ? off - cs + 1 : 0);

    return i < n && v[i] < off + len;
}

/* Whether [off, off+len) touches a table of one kind, from the tables
 * themselves. */
static bool scan_hit(const struct qcow2 *s, int kind, uint64_t off, uint64_t len)
{
    uint64_t n = kind ? FQ_MIN(s->rt_hi, s->rt_entries) : s->l1_size;

    for (uint64_t i = 0; i < n; i++) {
        uint64_t t = kind ? s->rt[i] : s->l1[i] & L1E_OFFSET_MASK;
        if (t && ranges_overlap(off, len, t, s->cluster_size))
            return true;
    }
    return false;
}

/* Does [off, off+len) touch an L2 table (kind 0) or a refcount block (1)? */
static bool index_hit(struct qcow2 *s, int kind, uint64_t off, uint64_t len)
{
    uint64_t cs = s->cluster_size;

    if (!index_fresh(s) && index_build(s) < 0)
        return scan_hit(s, kind, off, len);     /* no memory for the index */
    struct qmeta_set *m = &s->meta_idx[kind];
    if (!sorted_hit(m->v, m->n, off, len, cs) && !sorted_hit(m->add, m->nadd, off, len, cs))
        return false;
    /* a table the index still holds may have gone away since */
    if (scan_hit(s, kind, off, len))
        return true;
    s->meta_gen++;
    return false;
}

bool qcow2_overlaps_metadata(struct qcow2 *s, uint64_t off, uint64_t len)
{
    uint64_t cs = s->cluster_size;

    if (ranges_overlap(off, len, 0, cs))
        return true;
    if (s->l1_size && ranges_overlap(off, len, s->l1_offset, FQ_ALIGN_UP((uint64_t)s->l1_size * 8, cs)))
        return true;
    if (ranges_overlap(off, len, s->rt_offset, (uint64_t)s->rt_clusters * cs))
        return true;
    if (s->nb_snapshots && ranges_overlap(off, len, s->snapshots_offset, cs))
        return true;
    if (s->crypt_hdr_len && ranges_overlap(off, len, s->crypt_hdr_off, s->crypt_hdr_len))
        return true;
    return index_hit(s, 1, off, len) || index_hit(s, 0, off, len);
}

int qcow2_check_meta_write(struct qcow2 *s, uint64_t off, uint64_t len, unsigned tag)
{
    uint64_t cs = s->cluster_size;
    const char *what = NULL;

    if (tag != FQ_TAG_HEADER && ranges_overlap(off, len, 0, cs))
        what = "the header";
    else if (tag != FQ_TAG_L1 && s->l1_size &&
             ranges_overlap(off, len, s->l1_offset, FQ_ALIGN_UP((uint64_t)s->l1_size * 8, cs)))
        what = "the L1 table";
    else if (tag != FQ_TAG_REFTABLE &&
             ranges_overlap(off, len, s->rt_offset, (uint64_t)s->rt_clusters * cs))
        what = "the refcount table";
    else if (s->nb_snapshots && ranges_overlap(off, len, s->snapshots_offset, cs))
        what = "the snapshot table";
    else if (tag != FQ_TAG_OTHER_META && s->crypt_hdr_len &&
             ranges_overlap(off, len, s->crypt_hdr_off, s->crypt_hdr_len))
        what = "the encryption header";
    else if (tag != FQ_TAG_REFBLOCK && index_hit(s, 1, off, len))
        what = "a refcount block";
    else if (tag != FQ_TAG_L2 && index_hit(s, 0, off, len))
        what = "an L2 table";
    if (!what)
        return 0;
    qcow2_signal_corruption(s, "%s write to 0x%llx+%llu would overwrite %s",
                            tag == FQ_TAG_L1 ? "L1 table" : tag == FQ_TAG_L2 ? "L2 table" :
                            tag == FQ_TAG_REFBLOCK ? "refcount block" :
                            tag == FQ_TAG_REFTABLE ? "refcount table" : "metadata",
                            (unsigned long long)off, (unsigned long long)len, what);
    return -EIO;
}
