/* defrag_round.c: moving units to their targets, one round at a time.
 *
 * Choosing the moves of a round. A unit is *ready* when every cluster of
 * its target is free (a blob: free, or holding only blobs already where
 * they end up). Slots that become free are queued and their wanter looked
 * at, so ready moves follow one another along the chains of the layout's
 * permutation, many chains side by side. When too few are ready, the
 * evacuation front (every slot below it holds what it should, or is free
 * for its wanter) moves on: whatever occupies the next slot is moved to
 * its target if that is free, else into the staging zone [U, Z), which
 * frees the slot for its wanter. Each unit is evacuated at most once, and
 * nothing ever moves into a slot below U but the unit that ends up there.
 * An evacuation starts a chain: the units it will move one round after
 * another (up to as many as keep about a budget's worth of chains going)
 * are marked and not evacuated themselves, so that a cycle of the
 * permutation costs one extra copy, not one per unit.
 *
 * Carrying out a round (the order every allocating write of the driver
 * follows, so that a crash at any point leaves a consistent image):
 *  1. the destinations' refcounts are raised (in the cache);
 *  2. the copies are written (many in flight, reads gathered into one
 *     write per destination run); a flush is owed before any table;
 *  3. the tables are switched in memory: moved L2 tables get their new
 *     place in the cache and in the L1 entries naming them, data and
 *     compressed entries their new host offset (flags and subcluster
 *     bitmaps kept);
 *  4. the ordered write-back: refcount blocks, flush, L2 tables, flush,
 *     active L1; then the snapshots' L1 entries in place, and a flush:
 *     now nothing on disk points at a source;
 *  5. the sources' refcounts are lowered (written with the next round).
 * A crash before 4 completes leaves the old tables pointing at the old,
 * intact places (the new ones leak); after it, the old places leak until
 * their lowered refcounts are written. A source slot is written again only
 * in a later round, after step 4 made it unreferenced.
 * SPDX-License-Identifier: MIT
 */
#include <stdio.h>

#include "defrag.h"

/* ---- bookkeeping ---- */

bool defrag_final(const struct defrag *d, uint32_t id)
{
    const struct dunit *u = &d->u[id];

    if (u->tgt == DT_STAY)
        return true;
    if (u->tgt == DT_ANY)
        return u->cur >= d->U;
    if (u->kind == DK_SNAP || u->kind == DK_BITMAP) {
        const struct dgroup *g = u->kind == DK_SNAP ? &d->snap : &d->bm;
        uint64_t at = u->tgt;
        for (size_t i = 0; i < g->np; i++) {
            if (g->p[i].cur != at)
                return false;
            at += g->p[i].n;
        }
        return true;
    }
    return u->cur == u->tgt;
}

int defrag_push(struct defrag *d, uint64_t slot)
{
    if (slot >= d->U || d->want[slot] == DO_FREE)
        return 0;
    if (d->qn == d->qcap) {
        size_t nc = d->qcap ? d->qcap * 2 : 1024;
        uint64_t *nq = malloc(nc * sizeof(*nq));
        if (!nq)
            return -ENOMEM;
        for (size_t i = 0; i < d->qn; i++)
            nq[i] = d->q[(d->qh + i) % d->qcap];
        free(d->q);
        d->q = nq;
        d->qh = 0;
        d->qcap = nc;
    }
    d->q[(d->qh + d->qn++) % d->qcap] = slot;
    return 0;
}

void defrag_occupy(struct defrag *d, uint64_t c, uint64_t n, uint32_t id)
{
    for (uint64_t i = c; i < c + n; i++)
        d->occ[i] = id;
}

int defrag_release(struct defrag *d, uint64_t c, uint64_t n)
{
    int r = 0;

    for (uint64_t i = c; i < c + n && r == 0; i++) {
        d->occ[i] = DO_FREE;
        r = defrag_push(d, i);
    }
    return r;
}

int defrag_moved(struct defrag *d, uint32_t id)
{
    struct dunit *u = &d->u[id];

    u->flags &= (uint8_t)~(DF_ORIG | DF_MOVING | DF_CHAINED);
    if (defrag_final(d, id)) {
        uint64_t bytes = u->kind == DK_BLOB ? u->aux : (uint64_t)u->n * d->cs;
        d->left--;
        d->done += bytes;
        if (d->st)
            d->st->clusters_moved += u->kind == DK_BLOB ? 1 : u->n;
        return 0;
    }
    /* waiting in the staging zone: its target may be free already */
    if (u->tgt == DT_ANY || u->tgt == DT_STAY)
        return 0;
    return defrag_push(d, u->kind == DK_BLOB ? u->tgt / d->cs : u->tgt);
}

/* ---- choosing moves ---- */

static bool is_meta(const struct dunit *u)
{
    return u->kind == DK_RT || u->kind == DK_RB || u->kind == DK_L1 || u->kind == DK_SNAP ||
           u->kind == DK_BITMAP;
}

/* Can a blob go to byte `at`: each cluster it touches free, or holding
 * only blobs where they end up? */
static bool blob_fits(const struct defrag *d, const struct dunit *u, uint64_t at)
{
    uint64_t first, last;

    defrag_blob_span(d, at, u->aux, &first, &last);
    for (uint64_t c = first; c <= last; c++)
        if (d->occ[c] != DO_FREE && (d->occ[c] != DO_CMP || d->cnf[c]))
            return false;
    return true;
}

static bool ready(const struct defrag *d, uint32_t id)
{
    const struct dunit *u = &d->u[id];

    if ((u->flags & DF_MOVING) || u->tgt == DT_ANY || u->tgt == DT_STAY || defrag_final(d, id))
        return false;
    if (u->kind == DK_BLOB)
        return blob_fits(d, u, u->tgt);
    for (uint64_t c = u->tgt; c < u->tgt + u->n; c++)
        if (d->occ[c] != DO_FREE)
            return false;
    return true;
}

/* Reserve dst for unit id in this round (metadata moves at once). */
static int add_move(struct defrag *d, uint32_t id, uint64_t dst, uint64_t *bytes)
{
    struct dunit *u = &d->u[id];
    int r;

    if (is_meta(u)) {
        d->specials++;
        u->flags |= DF_MOVING;
        if ((r = defrag_move_meta(d, id, dst)) < 0)
            return r;
        return defrag_moved(d, id);
    }
    if (d->nmv == d->capmv) {
        size_t nc = d->capmv ? d->capmv * 2 : 256;
        struct dmove *nm = realloc(d->mv, nc * sizeof(*nm));
        if (!nm)
            return -ENOMEM;
        d->mv = nm;
        d->capmv = nc;
    }
    d->mv[d->nmv++] = (struct dmove){ id, u->cur, dst };
    u->flags |= DF_MOVING;
    if (u->kind == DK_BLOB) {
        uint64_t first, last;
        defrag_blob_span(d, dst, u->aux, &first, &last);
        for (uint64_t c = first; c <= last; c++) {
            d->occ[c] = DO_CMP;
            d->crc[c] += u->mult;
            d->cnf[c] += dst != u->tgt;
        }
        *bytes += u->aux;
    } else {
        defrag_occupy(d, dst, u->n, id);
        *bytes += (uint64_t)u->n * d->cs;
    }
    return 0;
}

/* Undo the reservations of the planned moves (a round that failed). */
static void unreserve(struct defrag *d)
{
    for (size_t i = 0; i < d->nmv; i++) {
        struct dmove *m = &d->mv[i];
        struct dunit *u = &d->u[m->u];
        u->flags &= (uint8_t)~DF_MOVING;
        if (u->kind != DK_BLOB) {
            for (uint64_t c = m->dst; c < m->dst + u->n; c++)
                d->occ[c] = DO_FREE;
            continue;
        }
        uint64_t first, last;
        defrag_blob_span(d, m->dst, u->aux, &first, &last);
        for (uint64_t c = first; c <= last; c++) {
            d->crc[c] -= u->mult;
            d->cnf[c] -= m->dst != u->tgt;
            if (!d->crc[c])
                d->occ[c] = DO_FREE;
        }
    }
    d->nmv = 0;
}

/* A free run of n clusters in the staging zone; UINT64_MAX if none. */
static uint64_t stage_run(struct defrag *d, uint64_t n)
{
    uint64_t zone = d->Z - d->U;

    if (n == 0 || n > zone)
        return UINT64_MAX;
    for (uint64_t tried = 0, c = d->stage; tried < zone + n;) {
        if (c < d->U || c + n > d->Z) {
            tried += c + n > d->Z ? d->Z - FQ_MIN(c, d->Z) : 0;
            c = d->U;
            continue;
        }
        uint64_t k = 0;
        while (k < n && d->occ[c + k] == DO_FREE)
            k++;
        if (k == n) {
            d->stage = c + n;
            return c;
        }
        tried += k + 1;
        c += k + 1;
    }
    return UINT64_MAX;
}

/* Where a blob can wait: packed after the previous one of this round's
 * staging (clusters this round took from the staging zone), or at the
 * start of a new staging run. UINT64_MAX if none. */
static uint64_t stage_blob(struct defrag *d, const struct dunit *u)
{
    uint64_t cs = d->cs;

    if (d->pack < d->pack_end && d->pack_end - d->pack >= u->aux) {
        uint64_t first, last, sum = 0;
        defrag_blob_span(d, d->pack, u->aux, &first, &last);
        for (uint64_t c = first; c <= last; c++)
            sum = FQ_MAX(sum, d->crc[c]);
        if (sum + u->mult <= d->s->refcount_max) {
            uint64_t at = d->pack;
            d->pack += u->aux;
            return at;
        }
    }
    uint64_t n = FQ_DIV_UP(u->aux, cs), c = stage_run(d, n);
    if (c == UINT64_MAX)
        return c;
    d->pack = c * cs + u->aux;
    d->pack_end = (c + n) * cs;
    return c * cs;
}

/* Mark the chain that freeing `slot` starts: its wanter moves in next,
 * which frees its slot for its own wanter, and so on. Only units of one
 * cluster with a cluster's target follow one another so. */
static void mark_chain(struct defrag *d, uint64_t slot)
{
    for (uint64_t steps = 0; steps < d->chain && slot < d->U; steps++) {
        uint32_t w = d->want[slot];
        if (w == DO_FREE || w == DO_CMP)
            return;
        struct dunit *u = &d->u[w];
        if (u->n != 1 || is_meta(u) || (u->flags & (DF_MOVING | DF_CHAINED)) || defrag_final(d, w))
            return;
        u->flags |= DF_CHAINED;
        slot = u->cur;
    }
}

/* Move unit id out of the slot it holds below U: to its target if that
 * is free, else into the staging zone. 0, 1 if there was no room, or
 * -errno. */
static int evacuate(struct defrag *d, uint32_t id, uint64_t *bytes)
{
    struct dunit *u = &d->u[id];
    uint64_t dst;

    if (ready(d, id))
        return add_move(d, id, u->tgt, bytes);
    if (u->kind == DK_BLOB)
        dst = stage_blob(d, u);
    else
        dst = stage_run(d, u->n);
    if (dst == UINT64_MAX)
        return 1;
    uint64_t from = u->cur;
    int r = add_move(d, id, dst, bytes);
    if (r == 0 && u->kind != DK_BLOB && !is_meta(u))
        mark_chain(d, from);
    return r;
}

/* Look at the wanters of a queued slot; add the ready ones. */
static int consider(struct defrag *d, uint64_t slot, uint64_t *bytes)
{
    uint32_t w = d->want[slot];

    if (w == DO_FREE)
        return 0;
    if (w != DO_CMP)
        return ready(d, w) ? add_move(d, w, d->u[w].tgt, bytes) : 0;
    /* blobs whose target touches the slot */
    for (size_t lo = defrag_blobs_near(d, d->blob_tgt, slot);
         lo < d->nblobs && d->blob_tgt[lo] < (slot + 1) * d->cs; lo++) {
        uint32_t b = d->blob_by_tgt[lo];
        int r;
        if (ready(d, b) && (r = add_move(d, b, d->u[b].tgt, bytes)) < 0)
            return r;
    }
    return 0;
}

/* Advance the evacuation front while the round has room. 0, 1 when the
 * staging zone is full, -errno. */
static int evacuate_front(struct defrag *d, uint64_t *bytes, uint64_t cap)
{
    int r;

    while (d->evac < d->U && *bytes < cap) {
        uint64_t c = d->evac;
        uint32_t o = d->occ[c];
        if (o == DO_CMP) {
            /* the blobs still where the plan found them, in this cluster */
            for (size_t lo = defrag_blobs_near(d, d->blob_orig, c);
                 lo < d->nblobs && d->blob_orig[lo] < (c + 1) * d->cs; lo++) {
                uint32_t b = d->blob_by_cur[lo];
                const struct dunit *u = &d->u[b];
                uint64_t first, last;
                if (!(u->flags & DF_ORIG) || (u->flags & DF_MOVING) || defrag_final(d, b))
                    continue;
                defrag_blob_span(d, u->cur, u->len, &first, &last);
                if (first <= c && c <= last && (r = evacuate(d, b, bytes)) != 0)
                    return r;
            }
        } else if (o != DO_FREE && !(d->u[o].flags & (DF_MOVING | DF_CHAINED)) &&
                   !defrag_final(d, o)) {
            if ((r = evacuate(d, o, bytes)) != 0)
                return r;
        }
        d->evac++;
    }
    return 0;
}

/* ---- carrying out a round ---- */

static struct defrag *sort_d;

static uint64_t move_dst_byte(const struct defrag *d, const struct dmove *m)
{
    return d->u[m->u].kind == DK_BLOB ? m->dst : m->dst * d->cs;
}

static int cmp_move(const void *a, const void *b)
{
    uint64_t x = move_dst_byte(sort_d, a), y = move_dst_byte(sort_d, b);

    return x < y ? -1 : x > y;
}

/* Jobs for the copies of this round: destination runs of at most 1 MiB,
 * each gathering the reads of its parts. */
static int make_jobs(struct defrag *d, struct djob **jobs, size_t *nj, struct dpart **parts,
                     size_t *np)
{
    const uint64_t max_job = 1u << 20;
    size_t cj = 0, cp = 0;

    *jobs = NULL;
    *parts = NULL;
    *nj = *np = 0;
    sort_d = d;
    if (d->nmv > 1)
        qsort(d->mv, d->nmv, sizeof(*d->mv), cmp_move);
    sort_d = NULL;
    for (size_t i = 0; i < d->nmv; i++) {
        const struct dmove *m = &d->mv[i];
        const struct dunit *u = &d->u[m->u];
        if (u->kind != DK_DATA && u->kind != DK_BLOB)
            continue;   /* L2 tables go through the cache; zero clusters need no copy */
        uint64_t dst = move_dst_byte(d, m), len = u->kind == DK_BLOB ? u->aux : d->cs;
        uint64_t src = u->kind == DK_BLOB ? m->src : m->src * d->cs;
        uint64_t rlen = u->kind == DK_BLOB ? u->len : d->cs;
        struct djob *j = *nj ? &(*jobs)[*nj - 1] : NULL;
        if (!j || j->dst + j->len != dst || j->len + len > max_job) {
            if (*nj == cj) {
                cj = cj ? cj * 2 : 64;
                struct djob *n = realloc(*jobs, cj * sizeof(*n));
                if (!n)
                    return -ENOMEM;
                *jobs = n;
            }
            j = &(*jobs)[(*nj)++];
            *j = (struct djob){ dst, 0, *np, 0, false };
        }
        j->zero |= u->kind == DK_BLOB;
        uint64_t boff = j->len;
        j->len += len;
        struct dpart *p = j->nparts ? &(*parts)[*np - 1] : NULL;
        if (p && p->src + p->len == src && p->boff + p->len == boff && rlen == len &&
            p->len % 512 == 0) {
            p->len += rlen;
            continue;
        }
        if (*np == cp) {
            cp = cp ? cp * 2 : 256;
            struct dpart *n = realloc(*parts, cp * sizeof(*n));
            if (!n)
                return -ENOMEM;
            *parts = n;
        }
        (*parts)[(*np)++] = (struct dpart){ src, rlen, boff };
        j->nparts++;
    }
    return 0;
}

/* Step 1: the destinations' refcounts up; a destination cluster of a
 * cluster unit must be unused. On failure *done moves were raised. */
static int raise_dsts(struct defrag *d, size_t *done)
{
    struct qcow2 *s = d->s;
    int r = 0;

    for (*done = 0; *done < d->nmv; (*done)++) {
        const struct dmove *m = &d->mv[*done];
        const struct dunit *u = &d->u[m->u];
        if (u->kind == DK_BLOB) {
            uint64_t first, last, c;
            defrag_blob_span(d, m->dst, u->aux, &first, &last);
            for (c = first; c <= last; c++)
                if ((r = qcow2_update_refcount(s, c * d->cs, 1, (int64_t)u->mult)) < 0)
                    break;
            if (r < 0) {
                while (c-- > first)
                    (void)qcow2_update_refcount(s, c * d->cs, 1, -(int64_t)u->mult);
                return r;
            }
            continue;
        }
        for (uint64_t c = m->dst; c < m->dst + u->n; c++) {
            uint64_t rc;
            if ((r = qcow2_get_refcount(s, c, &rc)) < 0)
                return r;
            if (rc) {
                fq_seterr(d->err, "Internal error: cluster %llu (destination of a %s) is in use",
                          (unsigned long long)c, defrag_kind_name(u->kind));
                return -EIO;
            }
        }
        if ((r = qcow2_update_refcount(s, m->dst * d->cs, u->n, (int64_t)u->mult)) < 0)
            return r;
    }
    return 0;
}

/* Lower the destinations raised by raise_dsts (moves [0, n)). */
static void lower_dsts(struct defrag *d, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const struct dmove *m = &d->mv[i];
        const struct dunit *u = &d->u[m->u];
        if (u->kind == DK_BLOB) {
            uint64_t first, last;
            defrag_blob_span(d, m->dst, u->aux, &first, &last);
            for (uint64_t c = first; c <= last; c++)
                (void)qcow2_update_refcount(d->s, c * d->cs, 1, -(int64_t)u->mult);
        } else {
            (void)qcow2_update_refcount(d->s, m->dst * d->cs, u->n, -(int64_t)u->mult);
        }
    }
}

/* Step 3a: an L2 table to its new place (cache entry and every L1 entry). */
static int relink_l2(struct defrag *d, const struct dmove *m)
{
    struct qcow2 *s = d->s;
    struct dunit *u = &d->u[m->u];
    struct qcache_entry *o, *n;
    uint64_t from = m->src * d->cs, to = m->dst * d->cs;
    int r;

    if ((r = qcache_get(&s->l2_cache, from, false, &o)) < 0)
        return r;
    if (o->dirty) {
        qcache_put(&s->l2_cache, o);
        fq_seterr(d->err, "Internal error: the L2 table at 0x%llx changed during a round",
                  (unsigned long long)from);
        return -EIO;
    }
    if ((r = qcache_get(&s->l2_cache, to, true, &n)) < 0) {
        qcache_put(&s->l2_cache, o);
        return r;
    }
    memcpy(n->data, o->data, s->cluster_size);
    qcache_mark_dirty(n);
    qcache_put(&s->l2_cache, n);
    qcache_put(&s->l2_cache, o);
    qcache_discard(&s->l2_cache, from);
    for (uint32_t j = 0; j < u->nref; j++) {
        struct dref ref = defrag_ref(d, u, j);
        uint64_t *l1 = ref.t == 0 ? s->l1 : d->snl1[ref.t - 1];
        if ((l1[ref.i] & L1E_OFFSET_MASK) != from) {
            fq_seterr(d->err, "Internal error: L1 entry %u does not point at 0x%llx", ref.i,
                      (unsigned long long)from);
            return -EIO;
        }
        l1[ref.i] = (l1[ref.i] & ~L1E_OFFSET_MASK) | to;
        if (ref.t == 0)
            qcow2_mark_l1_dirty(s, ref.i);
        else
            d->snl1_dirty[ref.t - 1][(uint64_t)ref.i * 8 / 4096] = 1;
    }
    u->cur = m->dst;
    return 0;
}

/* Step 3b: every entry naming a data, zero or compressed cluster. */
static int relink_entries(struct defrag *d, const struct dmove *m)
{
    struct qcow2 *s = d->s;
    const struct dunit *u = &d->u[m->u];
    bool blob = u->kind == DK_BLOB;
    uint64_t from = blob ? m->src : m->src * d->cs, to = blob ? m->dst : m->dst * d->cs;
    uint64_t ne = blob ? defrag_blob_entry(d, to, u->len) : 0;
    int r;

    for (uint32_t j = 0; j < u->nref; j++) {
        struct dref ref = defrag_ref(d, u, j);
        struct qcache_entry *t;
        if ((r = qcache_get(&s->l2_cache, d->u[ref.t].cur * d->cs, false, &t)) < 0)
            return r;
        uint64_t e = qcow2_l2e_get(s, t->data, ref.i), bm = qcow2_l2e_bitmap(s, t->data, ref.i);
        uint64_t host = 0, len = 0;
        if (blob && (e & L2E_COMPRESSED))
            qcow2_compressed_loc(s, e, &host, &len);
        bool ok = blob ? (e & L2E_COMPRESSED) && host == from && len == u->len
                       : !(e & L2E_COMPRESSED) && (e & L2E_OFFSET_MASK) == from;
        if (!ok) {
            qcache_put(&s->l2_cache, t);
            fq_seterr(d->err, "Internal error: L2 entry %u of the table at 0x%llx is 0x%llx, not "
                      "a reference to 0x%llx", ref.i,
                      (unsigned long long)(d->u[ref.t].cur * d->cs), (unsigned long long)e,
                      (unsigned long long)from);
            return -EIO;
        }
        qcow2_l2e_set(s, t->data, ref.i, blob ? ne : (e & ~L2E_OFFSET_MASK) | to, bm);
        qcache_mark_dirty(t);
        qcache_put(&s->l2_cache, t);
    }
    return 0;
}

/* Step 5: the sources' refcounts down, their slots free. */
static int lower_srcs(struct defrag *d)
{
    struct qcow2 *s = d->s;
    int r = 0;

    for (size_t i = 0; i < d->nmv && r == 0; i++) {
        const struct dmove *m = &d->mv[i];
        struct dunit *u = &d->u[m->u];
        if (u->kind != DK_BLOB) {
            r = qcow2_update_refcount(s, m->src * d->cs, u->n, -(int64_t)u->mult);
            if (r == 0)
                r = defrag_release(d, m->src, u->n);
        } else {
            uint64_t first, last;
            defrag_blob_span(d, m->src, u->len, &first, &last);
            for (uint64_t c = first; c <= last && r == 0; c++) {
                r = qcow2_update_refcount(s, c * d->cs, 1, -(int64_t)u->mult);
                d->crc[c] -= u->mult;
                d->cnf[c]--;
                if (!d->crc[c])
                    d->occ[c] = DO_FREE;
                if (r == 0 && (!d->crc[c] || !d->cnf[c]))
                    r = defrag_push(d, c);
            }
            /* its descriptor now names whole sectors from a sector start */
            u->cur = m->dst;
            u->len = u->aux;
        }
        if (u->kind == DK_DATA || u->kind == DK_ZERO)
            u->cur = m->dst;
        if (r == 0)
            r = defrag_moved(d, m->u);
    }
    return r;
}

static int exec_round(struct defrag *d)
{
    struct qcow2 *s = d->s;
    struct djob *jobs = NULL;
    struct dpart *parts = NULL;
    size_t nj, np, raised;
    int r;

    if (d->nmv == 0)
        return 0;
    raised = 0;
    if ((r = make_jobs(d, &jobs, &nj, &parts, &np)) < 0 || (r = raise_dsts(d, &raised)) < 0) {
        lower_dsts(d, raised);
        goto undo;
    }
    r = defrag_copy(d, jobs, nj, parts);
    if (r < 0) {
        lower_dsts(d, d->nmv);
        goto undo;
    }
    for (size_t i = 0; i < nj; i++)
        d->st->bytes_copied += jobs[i].len;
    s->flush_owed = true;   /* the copies before any table naming them */
    for (size_t i = 0; i < d->nmv && r == 0; i++)
        if (d->u[d->mv[i].u].kind == DK_L2) {
            r = relink_l2(d, &d->mv[i]);
            d->st->bytes_copied += d->cs;
        }
    for (size_t i = 0; i < d->nmv && r == 0; i++)
        if (d->u[d->mv[i].u].kind != DK_L2)
            r = relink_entries(d, &d->mv[i]);
    /* from here on the new places are referenced in memory: a failure
     * leaves them so (the old ones leak), never undone */
    if (r == 0)
        r = qcow2_writeback(s);
    if (r == 0)
        r = defrag_write_snl1(d);
    if (r == 0)
        r = lower_srcs(d);
    d->nmv = 0;
    d->pack = d->pack_end = 0;
    d->st->rounds++;
    free(jobs);
    free(parts);
    return r;
undo:
    unreserve(d);
    free(jobs);
    free(parts);
    return r;
}

/* ---- the loop ---- */

static void progress(struct defrag *d)
{
    if (d->o->progress)
        d->o->progress(d->o->opaque, FQ_MIN(d->done, d->todo), d->todo);
}

int defrag_rounds(struct defrag *d)
{
    uint64_t cap = FQ_MAX(2 * d->budget, (uint64_t)256) * d->cs;
    int r;

    d->left = d->todo = d->done = 0;
    for (uint32_t id = 0; id < d->nu; id++)
        if (!defrag_final(d, id)) {
            d->left++;
            d->todo += d->u[id].kind == DK_BLOB ? d->u[id].aux : (uint64_t)d->u[id].n * d->cs;
        }
    for (uint64_t c = 0; c < d->U; c++)
        if (d->want[c] != DO_FREE &&
            (d->occ[c] == DO_FREE || (d->occ[c] == DO_CMP && !d->cnf[c])) &&
            (r = defrag_push(d, c)) < 0)
            return r;
    d->evac = 0;
    d->stage = d->U;
    d->chain = FQ_MAX(d->left / FQ_MAX(d->budget, (uint64_t)1), (uint64_t)4);
    progress(d);
    while (d->left > 0) {
        uint64_t bytes = 0;
        bool full = false;
        d->nmv = 0;
        d->specials = 0;
        while (d->qn > 0 && bytes < cap) {
            uint64_t slot = d->q[d->qh];
            d->qh = (d->qh + 1) % d->qcap;
            d->qn--;
            if ((r = consider(d, slot, &bytes)) < 0)
                goto fail;
        }
        if (bytes < cap / 2) {
            r = evacuate_front(d, &bytes, cap);
            if (r < 0)
                goto fail;
            full = r == 1;
        }
        if (d->nmv == 0 && d->specials == 0 && d->qn == 0 && (full || d->evac >= d->U)) {
            fq_seterr(d->err, "Defragmentation cannot go on: %llu structures wait for room in "
                      "a staging zone of %llu bytes; run it again with a larger --budget",
                      (unsigned long long)d->left, (unsigned long long)((d->Z - d->U) * d->cs));
            return -ENOSPC;
        }
        if ((r = exec_round(d)) < 0)
            return r;
        progress(d);
    }
    return 0;
fail:
    unreserve(d);
    return r;
}
