/* defrag_layout.c: where every unit ends up (defrag.h has the order).
 *
 * Full defragmentation: the front (header, refcount table, first refcount
 * block, active L1 table), then the stream of defrag_build (each L2 table,
 * its data in guest order, its compressed clusters packed), with floating
 * units (other refcount blocks, the snapshot group, the bitmap group) each
 * right after the unit that precedes it on disk now. Compressed clusters
 * are packed on 512-byte boundaries in areas that start on a cluster, so
 * that a blob never shares a sector with another and each can be written
 * alone; a cluster never holds more references than the refcount width
 * allows. The final image has U clusters; the staging zone, where units
 * wait for their place, is [U, Z) with Z = max(file end, U + budget).
 *
 * Compact only: units stay, except that the last ones move into the first
 * holes (blobs packed into holes), until no hole lies below them.
 * SPDX-License-Identifier: MIT
 */
#include <stdio.h>

#include "defrag.h"

/* A floating unit, the unit it follows on disk and its rank in disk order. */
struct follow {
    uint32_t anchor, unit;
    size_t at;
};

struct emitter {
    struct defrag *d;
    uint64_t next;            /* next free cluster */
    bool in_area;             /* packing blobs */
    uint64_t pos;             /* next byte of the area */
    uint64_t last_c, last_sum;/* the area's last cluster, references in it */
    bool dry;                 /* count only (no targets written) */
    struct follow *f;
    size_t nf;
};

static bool is_floating(const struct defrag *d, const struct dunit *u)
{
    return (u->kind == DK_RB && u->aux != 0) || u->kind == DK_SNAP || u->kind == DK_BITMAP;
}

/* Units whose place in the order is their own (anchors for floating ones). */
static bool is_anchor(const struct defrag *d, const struct dunit *u)
{
    return !is_floating(d, u) && u->kind != DK_BLOB;
}

static void close_area(struct emitter *e)
{
    if (e->in_area) {
        e->next = FQ_DIV_UP(e->pos, e->d->cs);
        e->in_area = false;
    }
}

static void place(struct emitter *e, uint32_t id)
{
    struct dunit *u = &e->d->u[id];

    close_area(e);
    if (!e->dry)
        u->tgt = e->next;
    e->next += u->n;
}

/* Pack a blob into the current area (opened at the next cluster). */
static void place_blob(struct emitter *e, uint32_t id)
{
    struct defrag *d = e->d;
    struct dunit *u = &d->u[id];
    uint64_t cs = d->cs, max = d->s->refcount_max;

    if (!e->in_area) {
        e->in_area = true;
        e->pos = e->next * cs;
        e->last_c = UINT64_MAX;
        e->last_sum = 0;
    }
    /* the cluster it starts in may hold too many references already */
    if (e->pos / cs == e->last_c && e->last_sum + u->mult > max)
        e->pos = FQ_ALIGN_UP(e->pos + 1, cs);
    uint64_t first = e->pos / cs, last = (e->pos + u->aux - 1) / cs;
    if (!e->dry)
        u->tgt = e->pos;
    e->last_sum = (last == first && first == e->last_c ? e->last_sum : 0) + u->mult;
    e->last_c = last;
    e->pos += u->aux;
}

static void emit_followers(struct emitter *e, uint32_t anchor);

static void emit(struct emitter *e, uint32_t id)
{
    if (e->d->u[id].kind == DK_BLOB)
        place_blob(e, id);
    else
        place(e, id);
    emit_followers(e, id);
}

/* The floating units that follow `anchor` on disk, in disk order. */
static void emit_followers(struct emitter *e, uint32_t anchor)
{
    size_t lo = 0, hi = e->nf;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (e->f[mid].anchor < anchor)
            lo = mid + 1;
        else
            hi = mid;
    }
    for (; lo < e->nf && e->f[lo].anchor == anchor; lo++)
        if (e->d->u[e->f[lo].unit].tgt != DT_ANY)
            place(e, e->f[lo].unit);
}

static int cmp_follow(const void *a, const void *b)
{
    const struct follow *x = a, *y = b;

    if (x->anchor != y->anchor)
        return x->anchor < y->anchor ? -1 : 1;
    return x->at < y->at ? -1 : x->at > y->at;
}

/* A floating unit that follows a data cluster on disk would split the
 * data of an L2 table: it follows the last unit of that table's group
 * (the table, its data, its blobs) instead. */
static int group_ends(struct defrag *d, struct emitter *e)
{
    uint32_t *pos;
    bool any = false;

    for (size_t i = 0; i < e->nf && !any; i++)
        any = d->u[e->f[i].anchor].kind == DK_DATA || d->u[e->f[i].anchor].kind == DK_ZERO;
    if (!any)
        return 0;
    if (!(pos = malloc(((size_t)d->nu + 1) * sizeof(*pos))))
        return -ENOMEM;
    for (size_t i = 0; i < d->nstream; i++)
        pos[d->stream[i]] = (uint32_t)i;
    for (size_t i = 0; i < e->nf; i++) {
        const struct dunit *a = &d->u[e->f[i].anchor];
        if (a->kind != DK_DATA && a->kind != DK_ZERO)
            continue;
        size_t k = pos[e->f[i].anchor];
        while (k + 1 < d->nstream && d->u[d->stream[k + 1]].kind != DK_L2)
            k++;
        e->f[i].anchor = d->stream[k];
    }
    free(pos);
    return 0;
}

/* Anchor every floating unit to the unit before it on disk (an anchor in
 * the front stands for the end of the front); by anchor, in disk order. */
static int find_anchors(struct defrag *d, struct emitter *e)
{
    uint32_t last = d->hdr, front_end = d->l1 != DU_NONE ? d->l1 : d->rt;
    size_t cap = 0;

    for (uint64_t c = 0; c < d->nb; c++) {
        uint32_t o = d->occ[c];
        if (o == DO_FREE || o == DO_CMP)
            continue;
        struct dunit *u = &d->u[o];
        if (is_anchor(d, u)) {
            if (u->cur == c)
                last = o;
            continue;
        }
        if (u->flags & DF_MOVING)
            continue;    /* a group seen at an earlier piece */
        u->flags |= DF_MOVING;
        if (e->nf == cap) {
            cap = cap ? cap * 2 : 16;
            struct follow *nf = realloc(e->f, cap * sizeof(*nf));
            if (!nf)
                return -ENOMEM;
            e->f = nf;
        }
        bool front = last == d->hdr || last == d->rt || last == d->l1 ||
                     (d->u[last].kind == DK_RB && d->u[last].aux == 0);
        e->f[e->nf] = (struct follow){ front ? front_end : last, o, e->nf };
        e->nf++;
    }
    for (size_t i = 0; i < e->nf; i++)
        d->u[e->f[i].unit].flags &= (uint8_t)~DF_MOVING;
    int r = group_ends(d, e);
    if (r == 0 && e->nf)
        qsort(e->f, e->nf, sizeof(*e->f), cmp_follow);
    return r;
}

/* One pass over the whole order. */
static void emit_all(struct defrag *d, struct emitter *e)
{
    uint32_t rb0 = DU_NONE;

    for (uint32_t id = 0; id < d->nu; id++)
        if (d->u[id].kind == DK_RB && d->u[id].aux == 0 && d->u[id].tgt != DT_ANY)
            rb0 = id;
    e->next = 0;
    e->in_area = false;
    place(e, d->hdr);
    place(e, d->rt);
    if (rb0 != DU_NONE)
        place(e, rb0);
    if (d->l1 != DU_NONE)
        place(e, d->l1);
    emit_followers(e, d->l1 != DU_NONE ? d->l1 : d->rt);
    for (size_t i = 0; i < d->nstream; i++)
        emit(e, d->stream[i]);
    close_area(e);
}

static struct defrag *sort_d;

static int cmp_by_tgt(const void *a, const void *b)
{
    uint64_t x = sort_d->u[*(const uint32_t *)a].tgt, y = sort_d->u[*(const uint32_t *)b].tgt;

    return x < y ? -1 : x > y;
}

static int cmp_by_cur(const void *a, const void *b)
{
    uint64_t x = sort_d->u[*(const uint32_t *)a].cur, y = sort_d->u[*(const uint32_t *)b].cur;

    return x < y ? -1 : x > y;
}

/* Blobs by where they are now (and, not sorted yet, by target). */
static int index_blobs(struct defrag *d)
{
    uint32_t k = 0;

    free(d->blob_by_tgt);
    free(d->blob_by_cur);
    free(d->blob_orig);
    free(d->blob_tgt);
    d->blob_by_tgt = malloc(((size_t)d->nblobs + 1) * sizeof(uint32_t));
    d->blob_by_cur = malloc(((size_t)d->nblobs + 1) * sizeof(uint32_t));
    d->blob_orig = malloc(((size_t)d->nblobs + 1) * sizeof(uint64_t));
    d->blob_tgt = malloc(((size_t)d->nblobs + 1) * sizeof(uint64_t));
    if (!d->blob_by_tgt || !d->blob_by_cur || !d->blob_orig || !d->blob_tgt)
        return -ENOMEM;
    for (uint32_t id = 0; id < d->nu; id++)
        if (d->u[id].kind == DK_BLOB) {
            d->blob_by_tgt[k] = d->blob_by_cur[k] = id;
            k++;
        }
    sort_d = d;
    if (k)
        qsort(d->blob_by_cur, k, sizeof(uint32_t), cmp_by_cur);
    sort_d = NULL;
    for (uint32_t i = 0; i < k; i++)
        d->blob_orig[i] = d->u[d->blob_by_cur[i]].cur;
    return 0;
}

/* Blobs by target, once the targets are known. */
static void sort_blob_targets(struct defrag *d)
{
    sort_d = d;
    if (d->nblobs)
        qsort(d->blob_by_tgt, d->nblobs, sizeof(uint32_t), cmp_by_tgt);
    sort_d = NULL;
    for (uint32_t i = 0; i < d->nblobs; i++)
        d->blob_tgt[i] = d->u[d->blob_by_tgt[i]].tgt;
}

/* The blobs not yet where they end up, per cluster they lie in. */
static void count_unplaced(struct defrag *d)
{
    if (!d->cnf)
        return;
    memset(d->cnf, 0, d->nb * sizeof(*d->cnf));
    for (uint32_t id = 0; id < d->nu; id++)
        if (d->u[id].kind == DK_BLOB && !defrag_final(d, id)) {
            uint64_t first, last;
            defrag_blob_span(d, d->u[id].cur, d->u[id].len, &first, &last);
            for (uint64_t c = first; c <= last; c++)
                d->cnf[c]++;
        }
}

/* `want` from the targets. */
static void fill_want(struct defrag *d)
{
    for (uint64_t c = 0; c < d->nb; c++)
        d->want[c] = DO_FREE;
    for (uint32_t id = 0; id < d->nu; id++) {
        struct dunit *u = &d->u[id];
        if (u->tgt == DT_ANY || u->tgt == DT_STAY)
            continue;
        if (u->kind == DK_BLOB) {
            uint64_t first, last;
            defrag_blob_span(d, u->tgt, u->aux, &first, &last);
            for (uint64_t c = first; c <= last; c++)
                d->want[c] = DO_CMP;
        } else {
            for (uint64_t c = u->tgt; c < u->tgt + u->n; c++)
                d->want[c] = id;
        }
    }
}

int defrag_layout(struct defrag *d)
{
    struct qcow2 *s = d->s;
    struct emitter e = { .d = d, .dry = true };
    unsigned x = 62 - (s->cluster_bits - 8);
    int r;

    /* the clusters of everything but refcount blocks, then the blocks
     * that must cover them and themselves */
    for (uint32_t id = 0; id < d->nu; id++)
        if (d->u[id].kind == DK_RB)
            d->u[id].tgt = DT_ANY;
    if ((r = find_anchors(d, &e)) < 0) {
        free(e.f);
        return r;
    }
    emit_all(d, &e);
    uint64_t base = e.next, k = 1;
    while ((k << s->rb_bits) < base + k)
        k++;
    d->nb_keep = (uint32_t)FQ_MIN(k, (uint64_t)UINT32_MAX);
    for (uint32_t id = 0; id < d->nu; id++)
        if (d->u[id].kind == DK_RB && d->u[id].aux < d->nb_keep)
            d->u[id].tgt = 0;   /* placed by the pass below */
    e.dry = false;
    emit_all(d, &e);
    free(e.f);
    d->U = e.next;
    /* compressed clusters must stay addressable by their descriptors */
    if (d->U + d->budget >= (1ull << (x - s->cluster_bits))) {
        fq_seterr(d->err, "The image is too large for its compressed clusters to move");
        return -EFBIG;
    }
    if ((r = defrag_grow_maps(d, d->U + d->budget + 2)) < 0 || (r = index_blobs(d)) < 0)
        return r;
    sort_blob_targets(d);
    fill_want(d);
    count_unplaced(d);
    /* staging never holds more than what is not in place yet */
    uint64_t need = 0;
    for (uint32_t id = 0; id < d->nu && need < d->budget; id++)
        if (!defrag_final(d, id))
            need += d->u[id].kind == DK_BLOB ? FQ_DIV_UP(d->u[id].aux, d->cs) + 1 : d->u[id].n;
    d->Z = FQ_MAX(d->fclusters, d->U + FQ_MIN(need, d->budget));
    return 0;
}

/* ---- compact only ---- */

/* The next slot at or after c that is free and nobody's target. */
static uint64_t next_hole(struct defrag *d, uint64_t c, uint64_t end)
{
    while (c < end && (d->occ[c] != DO_FREE || d->want[c] != DO_FREE))
        c++;
    return c;
}

/* The first run of n holes below `below`, from `from`; `below` if none. */
static uint64_t find_run(struct defrag *d, uint64_t from, uint64_t n, uint64_t below)
{
    for (uint64_t c = next_hole(d, from, below); c + n <= below; c = next_hole(d, c + 1, below)) {
        uint64_t k = 0;
        while (k < n && d->occ[c + k] == DO_FREE && d->want[c + k] == DO_FREE)
            k++;
        if (k == n)
            return c;
        c += k;
    }
    return below;
}

/* Blobs in cluster c still where they were found and not yet given a
 * place: packed into holes below their first cluster. Returns false when
 * no room is left below. */
static bool compact_blobs(struct defrag *d, uint64_t c, uint64_t *hole, uint64_t *pack,
                          uint64_t *pack_end, uint64_t *pack_sum)
{
    uint64_t cs = d->cs;

    for (size_t lo = defrag_blobs_near(d, d->blob_orig, c);
         lo < d->nblobs && d->blob_orig[lo] < (c + 1) * cs; lo++) {
        struct dunit *u = &d->u[d->blob_by_cur[lo]];
        uint64_t first, last;
        defrag_blob_span(d, u->cur, u->len, &first, &last);
        if (last < c || first > c || u->tgt != DT_STAY)
            continue;
        if (*pack_end - *pack < u->aux || *pack_sum + u->mult > d->s->refcount_max) {
            uint64_t need = FQ_DIV_UP(u->aux, cs), at = find_run(d, *hole, need, first);
            if (at + need > first)
                return false;
            *pack = at * cs;
            *pack_end = (at + need) * cs;
            *pack_sum = 0;
            for (uint64_t i = at; i < at + need; i++)
                d->want[i] = DO_CMP;
            *hole = next_hole(d, *hole, d->fclusters);
        }
        u->tgt = *pack;
        *pack += u->aux;
        *pack_sum += u->mult;
    }
    return true;
}

int defrag_layout_compact(struct defrag *d)
{
    uint64_t end = d->fclusters, hole, pack = 0, pack_end = 0, pack_sum = 0;
    int r;

    d->nb_keep = UINT32_MAX;
    for (uint32_t id = 0; id < d->nu; id++)
        d->u[id].tgt = DT_STAY;
    if ((r = index_blobs(d)) < 0)
        return r;
    for (uint64_t c = 0; c < d->nb; c++)
        d->want[c] = DO_FREE;
    hole = next_hole(d, 1, end);
    for (uint64_t c = end; c-- > 1 && hole < c;) {
        uint32_t o = d->occ[c];
        if (o == DO_FREE)
            continue;
        if (o == DO_CMP) {
            if (!compact_blobs(d, c, &hole, &pack, &pack_end, &pack_sum))
                break;
            continue;
        }
        struct dunit *u = &d->u[o];
        if (u->kind == DK_HDR || u->tgt != DT_STAY)
            continue;
        uint64_t low = u->cur;
        if (u->kind == DK_SNAP || u->kind == DK_BITMAP) {
            const struct dgroup *g = u->kind == DK_SNAP ? &d->snap : &d->bm;
            for (size_t i = 0; i < g->np; i++)
                low = FQ_MIN(low, g->p[i].cur);
        } else if (c != u->cur + u->n - 1) {
            continue;
        }
        uint64_t at = u->n == 1 ? hole : find_run(d, hole, u->n, low);
        if (at >= low)
            continue;
        u->tgt = at;
        for (uint64_t i = at; i < at + u->n; i++)
            d->want[i] = o;
        hole = next_hole(d, hole, end);
    }
    fill_want(d);
    d->U = d->Z = end;
    count_unplaced(d);
    sort_blob_targets(d);
    return 0;
}
