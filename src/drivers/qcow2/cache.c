/* cache.c: a cache of cluster-sized metadata tables (L2 tables or
 * refcount blocks), keyed by host offset, with LRU eviction.
 *
 * Invariants: an entry is in the hash iff offset != 0. Pinned entries
 * (pin > 0) are never evicted. A dirty refcount block may be written at any
 * time (refcount increases are always safe to persist, decreases are only
 * applied after the references are gone from disk). A dirty L2 table may
 * only be written after the refcounts it depends on: evicting one runs the
 * owner's `evict_dirty` hook (the whole ordered write-back of refcount.c).
 * Every write first passes the owner's `check_write` hook (the overlap
 * check), so that this module calls no other module of the driver but the
 * header's corruption signal.
 * SPDX-License-Identifier: MIT
 */
#include "qcow2.h"

static size_t hash_of(const struct qcache *c, uint64_t off)
{
    uint64_t h = off * 0x9e3779b97f4a7c15ull;
    return (size_t)(h >> 20) & (c->hsize - 1);
}

int qcache_init(struct qcache *c, struct qcow2 *s, size_t entries, const struct qcache_hooks *h)
{
    memset(c, 0, sizeof(*c));
    c->s = s;
    c->what = h->what;
    c->is_l2 = h->tag == FQ_TAG_L2;
    c->hooks = h;
    c->n = FQ_MAX(entries, (size_t)4);
    c->hsize = 16;
    while (c->hsize < c->n * 2)
        c->hsize <<= 1;
    c->e = calloc(c->n, sizeof(*c->e));
    c->hash = calloc(c->hsize, sizeof(*c->hash));
    if (!c->e || !c->hash)
        return -ENOMEM;
    for (size_t i = 0; i < c->n; i++)
        if (!(c->e[i] = calloc(1, sizeof(**c->e))))
            return -ENOMEM;
    return 0;
}

void qcache_destroy(struct qcache *c)
{
    for (size_t i = 0; c->e && i < c->n; i++) {
        if (c->e[i])
            free(c->e[i]->data);
        free(c->e[i]);
    }
    free(c->e);
    free(c->hash);
    memset(c, 0, sizeof(*c));
}

static struct qcache_entry *lookup(struct qcache *c, uint64_t off)
{
    for (struct qcache_entry *e = c->hash[hash_of(c, off)]; e; e = e->hnext)
        if (e->offset == off)
            return e;
    return NULL;
}

static void unhash(struct qcache *c, struct qcache_entry *e)
{
    struct qcache_entry **pp = &c->hash[hash_of(c, e->offset)];

    while (*pp && *pp != e)
        pp = &(*pp)->hnext;
    if (*pp)
        *pp = e->hnext;
    e->hnext = NULL;
    e->offset = 0;
}

static int write_entry(struct qcache *c, struct qcache_entry *e)
{
    struct qcow2 *s = c->s;
    unsigned tag = c->is_l2 ? FQ_TAG_L2 : FQ_TAG_REFBLOCK;
    int r = c->hooks->check_write(s, e->offset, s->cluster_size, tag);

    if (r < 0)
        return r;
    r = fq_bdev_pwrite_tagged(s->file, e->data, (size_t)s->cluster_size, e->offset, tag);
    if (r == 0)
        e->dirty = false;
    if (r == 0 && !c->is_l2)
        s->flush_owed = true;   /* before any L2 table that relies on it */
    return r;
}

/* Find a slot to reuse: a free one, else the least recently used unpinned
 * entry (written back first if dirty). */
static int find_victim(struct qcache *c, struct qcache_entry **out)
{
    struct qcache_entry *best = NULL;

    for (size_t i = 0; i < c->n; i++) {
        struct qcache_entry *e = c->e[i];
        if (e->offset == 0) {
            best = e;
            break;
        }
        if (e->pin)
            continue;
        if (!best || e->lru < best->lru)
            best = e;
    }
    if (!best) {
        /* everything pinned: grow (rare; bounded by the number of tables
         * one operation holds at once) */
        size_t nn = c->n * 2;
        struct qcache_entry **ne = realloc(c->e, nn * sizeof(*ne));
        if (!ne)
            return -ENOMEM;
        c->e = ne;
        for (size_t i = c->n; i < nn; i++)
            if (!(c->e[i] = calloc(1, sizeof(**c->e)))) {
                c->n = i;
                return -ENOMEM;
            }
        best = c->e[c->n];
        c->n = nn;
    }
    if (best->offset && best->dirty) {
        int r = c->hooks->evict_dirty ? c->hooks->evict_dirty(c->s) : write_entry(c, best);
        if (r < 0)
            return r;
    }
    if (best->offset)
        unhash(c, best);
    *out = best;
    return 0;
}

int qcache_get(struct qcache *c, uint64_t offset, bool fresh, struct qcache_entry **out)
{
    struct qcow2 *s = c->s;
    struct qcache_entry *e = lookup(c, offset);
    int r;

    if (e) {
        if (fresh) {
            memset(e->data, 0, s->cluster_size);
            e->dirty = true;
        }
        goto found;
    }
    r = find_victim(c, &e);
    if (r < 0)
        return r;
    if (!e->data) {
        e->data = fq_memalign(s->cluster_size);
        if (!e->data)
            return -ENOMEM;
    }
    if (fresh) {
        memset(e->data, 0, s->cluster_size);
        e->dirty = true;
    } else {
        /* every table is written before it can be loaded: one that starts
         * past the end of the file comes from a damaged image (and writing
         * it back would grow the file to wherever it claims to be) */
        int64_t flen = s->file->ops->file_length ? s->file->ops->file_length(s->file)
                                                 : (int64_t)s->file->size;
        if (flen >= 0 && offset >= (uint64_t)flen) {
            qcow2_signal_corruption(s, "%s at 0x%llx lies beyond the end of the file (%lld bytes)",
                                    c->what, (unsigned long long)offset, (long long)flen);
            return -EIO;
        }
        r = fq_bdev_pread_sync(s->file, e->data, (size_t)s->cluster_size, offset);
        if (r < 0)
            return r;
        e->dirty = false;
    }
    e->offset = offset;
    e->pin = 0;
    size_t h = hash_of(c, offset);
    e->hnext = c->hash[h];
    c->hash[h] = e;
found:
    e->pin++;
    e->lru = ++c->stamp;
    *out = e;
    return 0;
}

void qcache_put(struct qcache *c, struct qcache_entry *e)
{
    if (e && e->pin)
        e->pin--;
}

int qcache_write_dirty(struct qcache *c)
{
    for (size_t i = 0; i < c->n; i++) {
        struct qcache_entry *e = c->e[i];
        if (e->offset && e->dirty) {
            int r = write_entry(c, e);
            if (r < 0)
                return r;
        }
    }
    return 0;
}

bool qcache_has_dirty(struct qcache *c)
{
    for (size_t i = 0; i < c->n; i++)
        if (c->e[i]->offset && c->e[i]->dirty)
            return true;
    return false;
}

void qcache_discard(struct qcache *c, uint64_t offset)
{
    struct qcache_entry *e = lookup(c, offset);

    if (e && !e->pin) {
        e->dirty = false;
        unhash(c, e);
    }
}
