/* cache.c: the metadata cache: L2 tables (whole, or slices of them) and
 * refcount blocks, keyed by host offset, with least-recently-used
 * eviction that prefers clean entries.
 *
 * Entries. An entry is FREE (not hashed), LOADING (hashed, its read in
 * flight) or READY. Pinned entries (pin > 0: a user holds a pointer),
 * loading ones and those whose write-back copy is in flight (writing > 0)
 * are never evicted; every other entry sits on the clean or the dirty
 * list, oldest first. A dirty refcount block may be written at any time
 * (increases are always safe to persist, decreases are only applied once
 * the references are gone from disk); a dirty L2 table only after the
 * refcounts it depends on: making room by writing dirty entries runs the
 * owner's hooks (the ordered write-back), so that this module calls no
 * other module of the driver but the header's corruption signal. Every
 * write first passes the owner's check_write hook (the overlap check).
 *
 * Synchronous and asynchronous use. qcache_get keeps its synchronous
 * contract for the whole-image operations, nested images and the
 * blocking paths: a miss is a blocking read. When a request's planning
 * step runs in an asynchronous context (s->aw), a miss instead starts a
 * read through the image file's submit and parks the request on the
 * entry (QCOW2_PARKED); further misses on the same table join that read,
 * and the request is planned anew when it arrives. The read goes into a
 * buffer of its own, swapped in on completion, so that a synchronous
 * caller meeting a loading entry can read it itself meanwhile. A step's
 * entries stay pinned until the step completes (qmeta_wait.held), so a
 * step that parked finds them again. When only dirty entries could make
 * room, an asynchronous context parks on a write-back instead; a
 * synchronous one writes back (hook evict_dirty) unless a write-back is
 * already in flight, and entries that cannot be evicted make the cache
 * grow past its size, shrinking back as they are released.
 *
 * L2 slices (l2-cache-entry-size): the request path gets entries of
 * `slice` bytes (qcache_get_part); whole-table callers (qcache_get) merge
 * the slices of their table into one whole entry first. The two never
 * coexist for one table, and a slice request is served by a whole entry
 * when there is one.
 * SPDX-License-Identifier: MIT
 */
#include <time.h>

#include "qcow2.h"

/* An entry's read in flight. */
struct qcache_load {
    struct fq_req req;        /* first: the completion gets it back */
    struct iovec iov;
    struct qcache *c;
    struct qcache_entry *e;
    uint8_t *buf;
    struct qwait_list waiters;
};

/* ---- lists, hash, slots ---- */

static void list_init(struct qcache_entry *h)
{
    h->prev = h->next = h;
}

static bool list_empty(const struct qcache_entry *h)
{
    return h->next == h;
}

static void unlist(struct qcache_entry *e)
{
    if (!e->prev)
        return;
    e->prev->next = e->next;
    e->next->prev = e->prev;
    e->prev = e->next = NULL;
}

static void list_append(struct qcache_entry *h, struct qcache_entry *e)
{
    e->prev = h->prev;
    e->next = h;
    h->prev->next = e;
    h->prev = e;
}

static size_t hash_of(const struct qcache *c, uint64_t off)
{
    uint64_t h = (off >> 9) * 0x9e3779b97f4a7c15ull;
    return (size_t)(h >> 32) & (c->hsize - 1);
}

/* The hashed entry at `off` of `len` bytes (a slice 0 and its whole
 * table share an offset, never the cache). */
static struct qcache_entry *lookup(const struct qcache *c, uint64_t off, uint32_t len)
{
    for (struct qcache_entry *e = c->hash[hash_of(c, off)]; e; e = e->hnext)
        if (e->offset == off && e->len == len)
            return e;
    return NULL;
}

static void hash_add(struct qcache *c, struct qcache_entry *e)
{
    size_t h = hash_of(c, e->offset);

    e->hnext = c->hash[h];
    c->hash[h] = e;
}

static void unhash(struct qcache *c, struct qcache_entry *e)
{
    if (e->state == QCE_FREE)
        return;
    struct qcache_entry **pp = &c->hash[hash_of(c, e->offset)];
    while (*pp && *pp != e)
        pp = &(*pp)->hnext;
    if (*pp)
        *pp = e->hnext;
    e->hnext = NULL;
    e->state = QCE_FREE;
    e->dirty = false;
}

static void *alloc_data(uint32_t len)
{
    void *p = NULL;

    return posix_memalign(&p, FQ_MIN(len, (uint32_t)FQ_MEM_ALIGN), len) == 0 ? p : NULL;
}

#define POOL_CHUNK_SLICES 64
#define HUGE_CACHE (8u << 20)   /* from this size on, 2 MiB chunks */
#define HUGE_CHUNK (2u << 20)

/* Slices are carved from chunks of POOL_CHUNK_SLICES (an aligned
 * allocation each costs about as much again in the allocator's padding);
 * a free slice holds the link to the next one. A cache of HUGE_CACHE or
 * more carves its slices, or its whole tables, from chunks of 2 MiB in
 * transparent huge pages (fq_buf_alloc): a random lookup over many tables
 * then misses the TLB far less, and filling the cache faults in a chunk at
 * a time. The chunks stay until the cache is destroyed: they never
 * outgrow the cache's largest size by more than one chunk. */
static bool huge_chunks(const struct qcache *c)
{
    return (uint64_t)c->target * c->slice >= HUGE_CACHE && c->slice <= HUGE_CHUNK / 4;
}

static bool pooled(const struct qcache *c, uint32_t len)
{
    return len == c->slice && (c->slice < c->cs || huge_chunks(c));
}

/* A data buffer of `len` bytes. */
static void *buf_get(struct qcache *c, uint32_t len)
{
    if (!pooled(c, len))
        return alloc_data(len);
    if (!c->pool) {
        uint8_t **nc = realloc(c->chunks, (c->nchunks + 1) * sizeof(*nc));
        if (!nc)
            return NULL;
        c->chunks = nc;
        bool huge = huge_chunks(c);
        unsigned n = huge ? HUGE_CHUNK / len : POOL_CHUNK_SLICES;
        uint8_t *ch = huge ? fq_buf_alloc(HUGE_CHUNK) : alloc_data(len * POOL_CHUNK_SLICES);
        if (!ch)
            return NULL;
        c->chunks[c->nchunks++] = ch;
        for (unsigned i = n; i-- > 0;) {
            uint8_t *p = ch + (size_t)i * len;
            memcpy(p, &c->pool, sizeof(c->pool));
            c->pool = p;
        }
    }
    uint8_t *p = c->pool;
    memcpy(&c->pool, p, sizeof(c->pool));
    return p;
}

/* Give back a buffer of buf_get. */
static void buf_put(struct qcache *c, void *p, uint32_t len)
{
    if (!p)
        return;
    if (!pooled(c, len)) {
        free(p);
        return;
    }
    memcpy(p, &c->pool, sizeof(c->pool));
    c->pool = p;
}

static struct qcache_entry *entry_new(struct qcache *c)
{
    struct qcache_entry *e;

    if (c->count == c->cap) {
        size_t nc = c->cap ? c->cap * 2 : 16;
        struct qcache_entry **na = realloc(c->all, nc * sizeof(*na));
        if (!na)
            return NULL;
        c->all = na;
        c->cap = nc;
    }
    if (!(e = calloc(1, sizeof(*e))))
        return NULL;
    e->slot = c->count;
    c->all[c->count++] = e;
    return e;
}

/* Give back an unused entry's memory (it is unhashed, off the lists). */
static void entry_free(struct qcache *c, struct qcache_entry *e)
{
    struct qcache_entry *last = c->all[--c->count];

    if (e->data)
        c->units -= e->len / c->slice;

    c->all[e->slot] = last;
    last->slot = e->slot;
    if (!c->spare && e->len == c->slice)
        c->spare = e->data;
    else
        buf_put(c, e->data, e->len);
    free(e);
}

/* Put an entry nobody uses on its list; then give back clean entries
 * while the cache is over its size. */
static void settle(struct qcache *c, struct qcache_entry *e)
{
    if (e && e->state == QCE_READY && !e->pin && !e->writing && !e->prev)
        list_append(e->dirty ? &c->dirty : &c->clean, e);
    while (c->units > c->target && !list_empty(&c->clean)) {
        struct qcache_entry *old = c->clean.next;
        unlist(old);
        unhash(c, old);
        entry_free(c, old);
    }
}

int qcache_init(struct qcache *c, struct qcow2 *s, size_t entries, uint32_t slice,
                const struct qcache_hooks *h)
{
    memset(c, 0, sizeof(*c));
    c->s = s;
    c->what = h->what;
    c->is_l2 = h->tag == FQ_TAG_L2;
    c->hooks = h;
    c->cs = (uint32_t)s->cluster_size;
    c->slice = slice && slice <= c->cs ? slice : c->cs;
    c->target = FQ_MAX(entries, (size_t)2);
    c->hsize = 16;
    while (c->hsize < c->target * 2 && c->hsize < ((size_t)1 << 24))
        c->hsize <<= 1;
    list_init(&c->clean);
    list_init(&c->dirty);
    c->hash = calloc(c->hsize, sizeof(*c->hash));
    return c->hash ? 0 : -ENOMEM;
}

void qcache_destroy(struct qcache *c)
{
    for (size_t i = 0; c->all && i < c->count; i++) {
        buf_put(c, c->all[i]->data, c->all[i]->len);
        free(c->all[i]);
    }
    buf_put(c, c->spare, c->slice);
    for (size_t i = 0; i < c->nchunks; i++)
        free(c->chunks[i]);
    free(c->chunks);
    free(c->all);
    free(c->hash);
    memset(c, 0, sizeof(*c));
}

/* ---- writing ---- */

static unsigned tag_of(const struct qcache *c)
{
    return c->is_l2 ? FQ_TAG_L2 : FQ_TAG_REFBLOCK;
}

static int write_entry(struct qcache *c, struct qcache_entry *e)
{
    struct qcow2 *s = c->s;
    int r = c->hooks->check_write(s, e->offset, e->len, tag_of(c));

    if (r < 0)
        return r;
    r = fq_bdev_pwrite_tagged(s->file, e->data, e->len, e->offset, tag_of(c));
    if (r < 0)
        return r;
    e->dirty = false;
    if (e->prev) {              /* dirty list -> clean list (no shrinking:
                                   callers iterate over the entries) */
        unlist(e);
        list_append(&c->clean, e);
    }
    if (!c->is_l2)
        s->flush_owed = true;   /* before any L2 table that relies on it */
    return 0;
}

int qcache_write_dirty(struct qcache *c)
{
    for (size_t i = 0; i < c->count; i++) {
        struct qcache_entry *e = c->all[i];
        if (e->state == QCE_READY && e->dirty) {
            int r = write_entry(c, e);
            if (r < 0)
                return r;
        }
    }
    return 0;
}

int qcache_write_one(struct qcache *c, uint64_t offset)
{
    struct qcache_entry *e = lookup(c, offset, c->cs);

    return e && e->state == QCE_READY && e->dirty ? write_entry(c, e) : 0;
}

bool qcache_writing(struct qcache *c, uint64_t offset)
{
    struct qcache_entry *e = lookup(c, offset, c->cs);

    return e && e->writing;
}

bool qcache_has_dirty(struct qcache *c)
{
    for (size_t i = 0; i < c->count; i++)
        if (c->all[i]->state == QCE_READY && c->all[i]->dirty)
            return true;
    return false;
}

bool qcache_busy(const struct qcache *c)
{
    return c->loads > 0;
}

/* ---- finding room ---- */

/* An entry to (re)use, unhashed and off the lists: a new one while the
 * cache is below its size, else the oldest clean one; when only dirty
 * ones could make room, write back (synchronously, or park the request
 * of an asynchronous context when `may_park`); when nothing can, one more
 * than the size. */
static int take_slot(struct qcache *c, bool may_park, struct qcache_entry **out)
{
    struct qcow2 *s = c->s;
    struct qcache_entry *e = NULL;
    int r;

    for (int tries = 0; !e; tries++) {
        if (c->units < c->target)
            break;
        if (!list_empty(&c->clean)) {
            e = c->clean.next;
            unlist(e);
            unhash(c, e);
            break;
        }
        if (list_empty(&c->dirty) || tries > 1)
            break;
        if (s->aw) {
            if (!may_park)
                break;
            r = c->hooks->evict_dirty_async(s, &s->aw->w);
            s->stats.evict_parks += r == QCOW2_PARKED;
        } else if (s->wb) {
            break;          /* the write-back in flight will clean them */
        } else {
            r = c->hooks->evict_dirty ? c->hooks->evict_dirty(s) : write_entry(c, c->dirty.next);
        }
        if (r < 0)
            return r;
    }
    if (!e && !(e = entry_new(c)))
        return -ENOMEM;
    *out = e;
    return 0;
}

int qcache_reserve(struct qcache *c, size_t n)
{
    struct qcow2 *s = c->s;
    size_t room = c->units < c->target ? c->target - c->units : 0;

    if (!s->aw)
        return 0;
    for (struct qcache_entry *e = c->clean.next; room < n && e != &c->clean; e = e->next)
        room++;
    if (room >= n || list_empty(&c->dirty))
        return 0;
    int r = c->hooks->evict_dirty_async(s, &s->aw->w);
    return r < 0 ? r : 0;
}

/* ---- loading ---- */

/* A table that starts past the end of the file comes from a damaged image
 * (every table is written before it can be loaded; writing it back would
 * grow the file to wherever it claims to be). */
static int check_in_file(struct qcache *c, uint64_t off)
{
    struct qcow2 *s = c->s;

    /* within the size known at open or since changed by our own writes: no
     * system call per miss (a file shrunk by another program under a
     * shared open reads as zeros past its end, as any read there does) */
    if (off < s->file->size)
        return 0;
    int64_t flen = s->file->ops->file_length ? s->file->ops->file_length(s->file)
                                             : (int64_t)s->file->size;

    if (flen >= 0 && off >= (uint64_t)flen) {
        qcow2_signal_corruption(s, "%s at 0x%llx lies beyond the end of the file (%lld bytes)",
                                c->what, (unsigned long long)off, (long long)flen);
        return -EIO;
    }
    return 0;
}

static int ensure_data(struct qcache *c, struct qcache_entry *e, uint32_t len)
{
    if (e->data && e->len == len)
        return 0;
    if (e->data)
        c->units -= e->len / c->slice;
    buf_put(c, e->data, e->len);
    e->len = len;
    e->data = buf_get(c, len);
    if (!e->data)
        return -ENOMEM;
    c->units += len / c->slice;
    return 0;
}

static void load_done(struct fq_req *req, int ret)
{
    struct qcache_load *ld = (struct qcache_load *)req;
    struct qcache *c = ld->c;
    struct qcache_entry *e = ld->e;
    struct qwait_list waiters = ld->waiters;

    c->loads--;
    e->load = NULL;
    if (e->state != QCE_LOADING) {
        ret = 0;                /* a synchronous caller read it meanwhile */
    } else if (ret == 0) {
        uint8_t *t = e->data;
        e->data = ld->buf;
        ld->buf = t;
        e->state = QCE_READY;
        e->dirty = false;
    } else {
        unhash(c, e);           /* nobody may find it any more */
    }
    if (!c->spare && ld->buf && e->len == c->slice)
        c->spare = ld->buf;
    else
        buf_put(c, ld->buf, e->len);
    free(ld);
    /* the load's pin keeps the entry while its waiters are planned again */
    qwait_wake_all(&waiters, ret);
    if (--e->pin == 0 && e->state == QCE_FREE)
        entry_free(c, e);
    else
        settle(c, e);
}

/* Start reading entry e (hashed, LOADING, pinned by the load). */
static int load_start(struct qcache *c, struct qcache_entry *e)
{
    struct qcow2 *s = c->s;
    struct qcache_load *ld = calloc(1, sizeof(*ld));

    if (!ld)
        return -ENOMEM;
    if (c->spare && e->len == c->slice) {
        ld->buf = c->spare;
        c->spare = NULL;
    } else if (!(ld->buf = buf_get(c, e->len))) {
        free(ld);
        return -ENOMEM;
    }
    ld->c = c;
    ld->e = e;
    ld->iov = (struct iovec){ ld->buf, e->len };
    ld->req = (struct fq_req){ .op = FQ_OP_READ, .off = e->offset, .len = e->len,
                               .iov = &ld->iov, .iovcnt = 1, .cb = load_done };
    e->load = ld;
    c->loads++;
    s->file->ops->submit(s->file, &ld->req);
    return 0;
}

/* Hold e for the running step of an asynchronous context. */
static void hold(struct qcache *c, struct qcache_entry *e)
{
    struct qmeta_wait *mw = c->s->aw;

    if (!mw)
        return;
    for (unsigned i = 0; i < mw->nheld; i++)
        if (mw->held[i] == e)
            return;
    if (mw->nheld == QCOW2_HELD_MAX)
        return;
    e->pin++;
    mw->held[mw->nheld] = e;
    mw->held_c[mw->nheld++] = c;
}

void qcache_release_held(struct qmeta_wait *mw)
{
    unsigned n = mw->nheld;

    mw->nheld = 0;
    for (unsigned i = 0; i < n; i++)
        qcache_put(mw->held_c[i], mw->held[i]);
}

/* Get the entry of `len` bytes at `off` (no entry of the other size
 * covers it). */
static int get_entry(struct qcache *c, uint64_t off, uint32_t len, bool fresh,
                     struct qcache_entry **out)
{
    struct qcow2 *s = c->s;
    struct qcache_entry *e = lookup(c, off, len);
    int r;

    if (e && e->state == QCE_LOADING) {
        if (fresh)
            return -EIO;        /* a table being read is in use, not free */
        if (s->aw) {
            qwait_add(&e->load->waiters, &s->aw->w);
            s->stats.joined++;
            return QCOW2_PARKED;
        }
        /* a synchronous caller cannot wait for the loop: read it here */
        s->stats.sync_fills++;
        r = fq_bdev_pread_sync(s->file, e->data, e->len, off);
        if (r < 0)
            return r;
        e->state = QCE_READY;
        e->dirty = false;
    }
    if (e) {
        if (fresh) {
            memset(e->data, 0, e->len);
            e->dirty = true;
        }
        goto found;
    }
    if (!fresh && (r = check_in_file(c, off)) < 0)
        return r;
    if ((r = take_slot(c, !fresh, &e)) < 0)
        return r;
    if ((r = ensure_data(c, e, len)) < 0) {
        entry_free(c, e);
        return r;
    }
    e->offset = off;
    e->pin = 0;
    e->dirty = fresh;
    if (fresh) {
        memset(e->data, 0, len);
    } else if (s->aw) {
        e->state = QCE_LOADING;
        e->pin = 1;             /* the load's */
        hash_add(c, e);
        if ((r = load_start(c, e)) < 0) {
            unhash(c, e);
            entry_free(c, e);
            return r;
        }
        qwait_add(&e->load->waiters, &s->aw->w);
        s->stats.loads++;
        return QCOW2_PARKED;
    } else if ((r = fq_bdev_pread_sync(s->file, e->data, len, off)) < 0) {
        entry_free(c, e);
        return r;
    }
    e->state = QCE_READY;
    hash_add(c, e);
found:
    unlist(e);
    e->pin++;
    e->lru = ++c->stamp;
    hold(c, e);
    *out = e;
    return 0;
}

/* A whole table while slices of it may be cached: they are merged into it
 * (their changes kept). */
static int get_whole_merge(struct qcache *c, uint64_t off, bool fresh, struct qcache_entry **out)
{
    struct qcow2 *s = c->s;
    uint32_t n = c->cs / c->slice;
    struct qcache_entry *e;
    struct qmeta_wait *aw = s->aw;
    int r;

    if (lookup(c, off, c->cs))
        return get_entry(c, off, c->cs, fresh, out);
    for (uint32_t i = 0; i < n; i++) {
        struct qcache_entry *p = lookup(c, off + (uint64_t)i * c->slice, c->slice);
        if (p && (p->pin || p->state != QCE_READY || p->writing))
            return -EBUSY;      /* whole-table callers need the image idle */
    }
    s->aw = NULL;               /* a merge is always synchronous */
    r = fresh ? 0 : check_in_file(c, off);
    if (r == 0)
        r = take_slot(c, false, &e);
    s->aw = aw;
    if (r < 0)
        return r;
    if ((r = ensure_data(c, e, c->cs)) < 0 ||
        (!fresh && (r = fq_bdev_pread_sync(s->file, e->data, c->cs, off)) < 0)) {
        entry_free(c, e);
        return r;
    }
    e->offset = off;
    e->pin = 0;
    e->dirty = fresh;
    if (fresh)
        memset(e->data, 0, c->cs);
    for (uint32_t i = 0; i < n; i++) {
        struct qcache_entry *p = lookup(c, off + (uint64_t)i * c->slice, c->slice);
        if (!p)
            continue;
        if (!fresh) {
            memcpy(e->data + (size_t)i * c->slice, p->data, c->slice);
            e->dirty |= p->dirty;
        }
        unlist(p);
        unhash(c, p);
        entry_free(c, p);
    }
    e->state = QCE_READY;
    hash_add(c, e);
    unlist(e);
    e->pin++;
    e->lru = ++c->stamp;
    *out = e;
    return 0;
}

int qcache_get(struct qcache *c, uint64_t offset, bool fresh, struct qcache_entry **out)
{
    if (c->slice < c->cs)
        return get_whole_merge(c, offset, fresh, out);
    return get_entry(c, offset, c->cs, fresh, out);
}

int qcache_get_part(struct qcache *c, uint64_t offset, bool fresh, struct qcache_entry **out)
{
    uint64_t base = FQ_ALIGN_DOWN(offset, (uint64_t)c->cs);

    if (c->slice == c->cs || lookup(c, base, c->cs))
        return get_entry(c, base, c->cs, fresh, out);
    return get_entry(c, FQ_ALIGN_DOWN(offset, (uint64_t)c->slice), c->slice, fresh, out);
}

void qcache_put(struct qcache *c, struct qcache_entry *e)
{
    if (!e)
        return;
    if (e->pin && --e->pin == 0)
        settle(c, e);
}

/* Drop one entry if nobody uses it. */
static void discard_one(struct qcache *c, struct qcache_entry *e)
{
    if (!e || e->pin || e->writing || e->state != QCE_READY)
        return;
    unlist(e);
    unhash(c, e);
    entry_free(c, e);
}

void qcache_discard(struct qcache *c, uint64_t offset)
{
    discard_one(c, lookup(c, offset, c->cs));
    if (c->slice < c->cs)
        for (uint32_t i = 0; i < c->cs / c->slice; i++)
            discard_one(c, lookup(c, offset + (uint64_t)i * c->slice, c->slice));
}

void qcache_drop_all(struct qcache *c)
{
    /* downwards: entry_free moves the last entry into the freed slot */
    for (size_t i = c->count; i-- > 0;) {
        struct qcache_entry *e = c->all[i];
        if (e->pin || e->writing || e->state != QCE_READY)
            continue;
        e->dirty = false;
        discard_one(c, e);
    }
}

void qcache_clean_unused(struct qcache *c)
{
    for (struct qcache_entry *e = c->clean.next, *next; e != &c->clean; e = next) {
        next = e->next;
        if (e->lru <= c->clean_stamp) {
            unlist(e);
            unhash(c, e);
            entry_free(c, e);
        }
    }
    buf_put(c, c->spare, c->slice);
    c->spare = NULL;
    c->clean_stamp = c->stamp;
}

/* ---- asynchronous write-back copies ---- */

/* The entries a snapshot takes, into `pick`: every dirty one, or (with
 * max_units) the oldest evictable dirty ones up to max_units slices.
 * *more: dirty entries are left behind. */
static size_t pick_dirty(struct qcache *c, size_t max_units, struct qcache_entry **pick, bool *more)
{
    size_t k = 0, dirty = 0, units = 0;

    for (size_t i = 0; i < c->count; i++)
        dirty += c->all[i]->state == QCE_READY && c->all[i]->dirty;
    if (!max_units) {
        for (size_t i = 0; i < c->count; i++)
            if (c->all[i]->state == QCE_READY && c->all[i]->dirty)
                pick[k++] = c->all[i];
    } else {
        for (struct qcache_entry *e = c->dirty.next; e != &c->dirty && units < max_units; e = e->next) {
            if (e->state != QCE_READY || !e->dirty)
                continue;
            pick[k++] = e;
            units += e->len / c->slice;
        }
    }
    *more = k < dirty;
    return k;
}

int qcache_snapshot_dirty(struct qcache *c, size_t max_units, struct qcache_wio **list, unsigned *n,
                          bool *partial)
{
    struct qcow2 *s = c->s;
    struct qcache_wio *head = NULL;
    CLEANUP_FREE struct qcache_entry **pick = malloc((c->count ? c->count : 1) * sizeof(*pick));
    bool more = false;
    size_t k;

    *list = NULL;
    *n = 0;
    if (partial)
        *partial = false;
    if (!pick)
        return -ENOMEM;
    k = pick_dirty(c, max_units, pick, &more);
    for (size_t i = 0; i < k; i++) {
        int r = c->hooks->check_write(s, pick[i]->offset, pick[i]->len, tag_of(c));
        if (r < 0)
            return r;
    }
    for (size_t i = 0; i < k; i++) {
        struct qcache_entry *e = pick[i];
        struct qcache_wio *w;
        if (!(w = calloc(1, sizeof(*w))) || !(w->buf = alloc_data(e->len))) {
            free(w);
            for (struct qcache_wio *x = head, *nx; x; x = nx) {
                nx = x->next;
                qcache_wio_finish(x, -ENOMEM);
            }
            return -ENOMEM;
        }
        memcpy(w->buf, e->data, e->len);
        w->c = c;
        w->e = e;
        unlist(e);
        e->dirty = false;
        e->writing++;
        w->next = head;
        head = w;
    }
    *list = head;
    *n = (unsigned)k;
    if (partial)
        *partial = more;
    return 0;
}

void qcache_wio_submit(struct qcache_wio *w, fq_req_cb *cb, void *opaque)
{
    struct qcow2 *s = w->c->s;

    w->iov = (struct iovec){ w->buf, w->e->len };
    w->req = (struct fq_req){ .op = FQ_OP_WRITE, .off = w->e->offset, .len = w->e->len,
                              .iov = &w->iov, .iovcnt = 1, .tag = tag_of(w->c), .cb = cb,
                              .opaque = opaque };
    s->file->ops->submit(s->file, &w->req);
}

void qcache_wio_finish(struct qcache_wio *w, int ret)
{
    struct qcache *c = w->c;
    struct qcache_entry *e = w->e;

    if (ret < 0)
        e->dirty = true;        /* what is on disk is not known: again */
    e->writing--;
    free(w->buf);
    free(w);
    settle(c, e);
}

void qcow2_cache_tick(struct qcow2 *s)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);   /* cheap: once per request */
    uint64_t now = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;

    if (now < s->next_clean)
        return;
    if (s->next_clean) {
        qcache_clean_unused(&s->l2_cache);
        qcache_clean_unused(&s->rb_cache);
    }
    s->next_clean = now + s->clean_interval_ns;
}
