/* defrag_plan.c: the image as units, and the layout they end up in.
 *
 * defrag_build walks every structure the check counts (header, refcount
 * table and blocks, the active L1 table, the snapshot table and the
 * snapshots' L1 tables, the bitmap directory, tables and data, every L2
 * table any L1 table names, every data and compressed cluster any L2 table
 * names) into units, records who points at each (the L1 or L2 entries),
 * and compares every stored refcount with the references counted: a
 * refcount below its references, or a cluster claimed twice, refuses the
 * plan before anything is written; one above counts as a leak.
 *
 * defrag_layout gives each unit its target. The order is that of a fresh
 * image written sequentially: the header, the refcount table, the first
 * refcount block and the active L1 table; then, for each L2 table of the
 * active L1 in guest order (then those only snapshots reach), the table,
 * the data clusters first seen in it in guest order, and its compressed
 * clusters packed on 512-byte boundaries. Structures with no place of
 * their own in that order (the other refcount blocks, the snapshot group,
 * the bitmap group) *float*: each follows the unit it follows on disk now,
 * so that an image already in order stays where it is. Refcount blocks
 * that would cover only what lies past the final end (they exist for the
 * staging zone) go nowhere: they are dropped at the end.
 * SPDX-License-Identifier: MIT
 */
#include <stdarg.h>
#include <stdio.h>

#include "defrag.h"

static const char *const kind_names[] = {
    [DK_HDR] = "header", [DK_RT] = "refcount table", [DK_RB] = "refcount block",
    [DK_L1] = "L1 table", [DK_L2] = "L2 table", [DK_DATA] = "data cluster",
    [DK_ZERO] = "zero cluster", [DK_BLOB] = "compressed cluster",
    [DK_SNAP] = "snapshot tables", [DK_BITMAP] = "bitmaps",
};

const char *defrag_kind_name(unsigned kind)
{
    return kind < FQ_ARRAY_SIZE(kind_names) ? kind_names[kind] : "?";
}

int defrag_grow_maps(struct defrag *d, uint64_t n)
{
    if (n <= d->nb)
        return 0;
    if (n > SIZE_MAX / sizeof(uint64_t))
        return -ENOMEM;
    uint32_t *occ = realloc(d->occ, n * sizeof(*occ));
    if (occ)
        d->occ = occ;
    uint32_t *want = realloc(d->want, n * sizeof(*want));
    if (want)
        d->want = want;
    if (!occ || !want)
        return -ENOMEM;
    for (uint64_t c = d->nb; c < n; c++)
        d->occ[c] = d->want[c] = DO_FREE;
    if (d->crc) {
        uint64_t *crc = realloc(d->crc, n * sizeof(*crc));
        if (crc)
            d->crc = crc;
        uint32_t *cnf = realloc(d->cnf, n * sizeof(*cnf));
        if (cnf)
            d->cnf = cnf;
        if (!crc || !cnf)
            return -ENOMEM;
        memset(d->crc + d->nb, 0, (n - d->nb) * sizeof(*crc));
        memset(d->cnf + d->nb, 0, (n - d->nb) * sizeof(*cnf));
    }
    d->nb = n;
    return 0;
}

void defrag_blob_span(const struct defrag *d, uint64_t at, uint64_t len, uint64_t *first,
                      uint64_t *last)
{
    *first = at / d->cs;
    *last = (at + (len ? len : 1) - 1) / d->cs;
}

uint64_t defrag_blob_entry(const struct defrag *d, uint64_t host, uint64_t len)
{
    unsigned x = 62 - (d->s->cluster_bits - 8);
    uint64_t extra = ((host + len - 1) >> 9) - (host >> 9);

    return L2E_COMPRESSED | (extra << x) | host;
}

size_t defrag_blobs_near(const struct defrag *d, const uint64_t *keys, uint64_t c)
{
    uint64_t from = c * d->cs >= 2 * d->cs ? c * d->cs - 2 * d->cs : 0;
    size_t lo = 0, hi = d->nblobs;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (keys[mid] < from)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

struct dref defrag_ref(const struct defrag *d, const struct dunit *u, uint32_t j)
{
    if (j == 0)
        return (struct dref){ 0, u->t0, u->i0 };
    return d->xref[u->more + j - 1];
}

/* ---- building ---- */

/* Refuse: the message names what is wrong. */
static int refuse(struct defrag *d, int r, const char *fmt, ...) FQ_PRINTF(3, 4);
static int refuse(struct defrag *d, int r, const char *fmt, ...)
{
    va_list ap;
    char msg[FQ_ERR_MAX];

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    fq_seterr(d->err, "%s", msg);
    return r;
}

static int claim_conflict(struct defrag *d, uint64_t c, unsigned kind)
{
    uint32_t o = d->occ[c];
    const char *other = o == DO_CMP ? "compressed data" : defrag_kind_name(d->u[o].kind);

    return refuse(d, -EINVAL, "Cluster %llu is used both as %s and as %s; run 'check -r all' first",
                  (unsigned long long)c, other, defrag_kind_name(kind));
}

/* Give the clusters [c, c + n) to unit id. */
static int claim(struct defrag *d, uint64_t c, uint64_t n, uint32_t id)
{
    uint64_t end;

    if (fq_add_ovf(c, n, &end) || end > d->nb)
        return refuse(d, -EINVAL, "A %s at cluster %llu lies beyond the end of the file; run "
                      "'check -r all' first", defrag_kind_name(d->u[id].kind),
                      (unsigned long long)c);
    for (uint64_t i = c; i < end; i++) {
        if (d->occ[i] != DO_FREE)
            return claim_conflict(d, i, d->u[id].kind);
        d->occ[i] = id;
    }
    return 0;
}

/* A new unit of `n` clusters at cluster `cur` (claimed unless n is 0). */
static int new_unit(struct defrag *d, unsigned kind, uint64_t cur, uint32_t n, uint32_t *out)
{
    if (d->nu >= DU_MAX)
        return refuse(d, -EFBIG, "The image has too many clusters to defragment");
    if (d->nu == d->capu) {
        uint32_t nc = d->capu ? (d->capu > DU_MAX / 2 ? DU_MAX : d->capu * 2) : 1024;
        struct dunit *nu = realloc(d->u, (size_t)nc * sizeof(*nu));
        if (!nu)
            return -ENOMEM;
        d->u = nu;
        d->capu = nc;
    }
    uint32_t id = d->nu++;
    struct dunit *u = &d->u[id];
    memset(u, 0, sizeof(*u));
    u->cur = u->tgt = cur;
    u->n = n;
    u->kind = (uint8_t)kind;
    u->flags = DF_ORIG;
    u->mult = 1;
    *out = id;
    return n ? claim(d, cur, n, id) : 0;
}

static int add_ref(struct defrag *d, uint32_t id, uint32_t t, uint32_t i)
{
    struct dunit *u = &d->u[id];

    if (u->nref == UINT32_MAX)
        return refuse(d, -EFBIG, "Cluster %llu has too many references",
                      (unsigned long long)u->cur);
    if (u->nref++ == 0) {
        u->t0 = t;
        u->i0 = i;
        return 0;
    }
    if (d->nx == d->capx) {
        size_t nc = d->capx ? d->capx * 2 : 256;
        struct dref *nx = realloc(d->xref, nc * sizeof(*nx));
        if (!nx)
            return -ENOMEM;
        d->xref = nx;
        d->capx = nc;
    }
    d->xref[d->nx++] = (struct dref){ id, t, i };
    return 0;
}

static int push_u32(uint32_t **v, size_t *n, size_t *cap, uint32_t x)
{
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 256;
        uint32_t *nv = realloc(*v, nc * sizeof(*nv));
        if (!nv)
            return -ENOMEM;
        *v = nv;
        *cap = nc;
    }
    (*v)[(*n)++] = x;
    return 0;
}

/* Blobs by (host, length): an open-addressing table of unit ids. */
struct blobtab {
    uint32_t *slot;
    size_t size, used;
};

static size_t blob_hash(uint64_t host, uint32_t len, size_t size)
{
    return (size_t)(((host ^ ((uint64_t)len << 48)) * 0x9e3779b97f4a7c15ull) >> 17) & (size - 1);
}

static int blob_find(struct defrag *d, struct blobtab *bt, uint64_t host, uint32_t len,
                     uint32_t *out)
{
    if ((bt->used + 1) * 2 > bt->size) {
        size_t ns = bt->size ? bt->size * 2 : 1024;
        uint32_t *nslot = malloc(ns * sizeof(*nslot));
        if (!nslot)
            return -ENOMEM;
        for (size_t i = 0; i < ns; i++)
            nslot[i] = DU_NONE;
        for (size_t i = 0; i < bt->size; i++) {
            uint32_t id = bt->slot[i];
            if (id == DU_NONE)
                continue;
            size_t h = blob_hash(d->u[id].cur, d->u[id].len, ns);
            while (nslot[h] != DU_NONE)
                h = (h + 1) & (ns - 1);
            nslot[h] = id;
        }
        free(bt->slot);
        bt->slot = nslot;
        bt->size = ns;
    }
    size_t h = blob_hash(host, len, bt->size);
    for (; bt->slot[h] != DU_NONE; h = (h + 1) & (bt->size - 1)) {
        struct dunit *u = &d->u[bt->slot[h]];
        if (u->cur == host && u->len == len) {
            *out = bt->slot[h];
            return 0;
        }
    }
    *out = DU_NONE;
    bt->slot[h] = d->nu;   /* the caller creates it next */
    bt->used++;
    return 0;
}

/* The L2 tables the L1 table `l1` (n entries; `which`: 0 active, k + 1
 * snapshot k) names, in order; new ones appended to l2s. */
static int walk_l1(struct defrag *d, const uint64_t *l1, uint32_t n, uint32_t which,
                   uint32_t **l2s, size_t *nl2, size_t *cap)
{
    int r;

    for (uint32_t i = 0; i < n; i++) {
        uint64_t e = l1[i], off = e & L1E_OFFSET_MASK, c = off / d->cs;
        uint32_t id;
        if (!off)
            continue;
        if ((e & L1E_RESERVED_MASK) || (off & (d->cs - 1)) || c >= d->nb)
            return refuse(d, -EINVAL, "L1 entry %u (0x%llx) is invalid; run 'check -r all' first",
                          i, (unsigned long long)e);
        if (d->occ[c] == DO_FREE) {
            if ((r = new_unit(d, DK_L2, c, 1, &id)) < 0 || (r = push_u32(l2s, nl2, cap, id)) < 0)
                return r;
        } else if (d->occ[c] != DO_CMP && d->u[d->occ[c]].kind == DK_L2) {
            id = d->occ[c];
        } else {
            return claim_conflict(d, c, DK_L2);
        }
        if ((r = add_ref(d, id, which, i)) < 0)
            return r;
    }
    return 0;
}

/* A compressed entry: its blob (new ones appended to `blobs`). */
static int add_blob(struct defrag *d, struct blobtab *bt, uint64_t e, uint32_t t, uint32_t j,
                    uint32_t **blobs, size_t *nblobs, size_t *cap)
{
    uint64_t host, len, first, last;
    uint32_t id;
    int r;

    qcow2_compressed_loc(d->s, e, &host, &len);
    if (!d->crc) {
        d->crc = calloc(d->nb, sizeof(*d->crc));
        d->cnf = calloc(d->nb, sizeof(*d->cnf));
        if (!d->crc || !d->cnf)
            return -ENOMEM;
    }
    if ((r = blob_find(d, bt, host, (uint32_t)len, &id)) < 0)
        return r;
    if (id == DU_NONE) {
        defrag_blob_span(d, host, len, &first, &last);
        if (host < d->cs || last >= d->nb)
            return refuse(d, -EINVAL, "Compressed cluster at 0x%llx (%llu bytes) lies outside "
                          "the file; run 'check -r all' first", (unsigned long long)host,
                          (unsigned long long)len);
        for (uint64_t c = first; c <= last; c++) {
            if (d->occ[c] != DO_FREE && d->occ[c] != DO_CMP)
                return claim_conflict(d, c, DK_BLOB);
            d->occ[c] = DO_CMP;
        }
        if ((r = new_unit(d, DK_BLOB, host, 0, &id)) < 0 ||
            (r = push_u32(blobs, nblobs, cap, id)) < 0)
            return r;
        d->u[id].len = (uint32_t)len;
        d->u[id].aux = (uint32_t)FQ_ALIGN_UP(len, 512);
        d->nblobs++;
    }
    return add_ref(d, id, t, j);
}

/* The data and compressed clusters of L2 unit t, appended to the stream
 * after it: data first seen here, then blobs first seen here. */
static int walk_l2(struct defrag *d, uint32_t t, struct blobtab *bt, uint32_t **blobs,
                   size_t *bcap, size_t *scap)
{
    struct qcow2 *s = d->s;
    struct qcache_entry *e;
    size_t nblobs = 0;
    int r = qcache_get(&s->l2_cache, d->u[t].cur * d->cs, false, &e);

    if (r < 0)
        return refuse(d, r, "Could not read the L2 table at 0x%llx: %s",
                      (unsigned long long)(d->u[t].cur * d->cs), strerror(-r));
    r = push_u32(&d->stream, &d->nstream, scap, t);
    for (uint64_t j = 0; j < s->l2_entries && r == 0; j++) {
        uint64_t l2e = qcow2_l2e_get(s, e->data, j), off = l2e & L2E_OFFSET_MASK;
        uint64_t c = off / d->cs;
        uint32_t id;
        if (l2e & L2E_COMPRESSED) {
            if (s->extl2 && qcow2_l2e_bitmap(s, e->data, j))
                r = refuse(d, -EINVAL, "Compressed L2 entry with subcluster bits in the table "
                           "at 0x%llx; run 'check -r all' first",
                           (unsigned long long)(d->u[t].cur * d->cs));
            else
                r = add_blob(d, bt, l2e, t, (uint32_t)j, blobs, &nblobs, bcap);
            continue;
        }
        if (!off)
            continue;
        uint64_t reserved = L2E_STD_RESERVED | ((s->version < 3 || s->extl2) ? L2E_ZERO : 0);
        if ((l2e & reserved) || (off & (d->cs - 1)) || c >= d->nb) {
            r = refuse(d, -EINVAL, "L2 entry 0x%llx in the table at 0x%llx is invalid; run "
                       "'check -r all' first", (unsigned long long)l2e,
                       (unsigned long long)(d->u[t].cur * d->cs));
            break;
        }
        bool zero = !s->extl2 && (l2e & L2E_ZERO);
        if (d->occ[c] == DO_FREE) {
            if ((r = new_unit(d, zero ? DK_ZERO : DK_DATA, c, 1, &id)) == 0)
                r = push_u32(&d->stream, &d->nstream, scap, id);
        } else if (d->occ[c] != DO_CMP &&
                   (d->u[d->occ[c]].kind == DK_DATA || d->u[d->occ[c]].kind == DK_ZERO)) {
            id = d->occ[c];
            if (!zero)
                d->u[id].kind = DK_DATA;   /* some path reads its content */
        } else {
            r = claim_conflict(d, c, zero ? DK_ZERO : DK_DATA);
            break;
        }
        if (r == 0)
            r = add_ref(d, id, t, (uint32_t)j);
    }
    qcache_put(&s->l2_cache, e);
    for (size_t i = 0; i < nblobs && r == 0; i++)
        r = push_u32(&d->stream, &d->nstream, scap, (*blobs)[i]);
    return r;
}

/* A group unit over pieces (each claimed for it). */
static int new_group(struct defrag *d, unsigned kind, struct dgroup *g)
{
    uint64_t total = 0;
    uint32_t id;
    int r;

    if (g->np == 0)
        return 0;
    if ((r = new_unit(d, kind, g->p[0].cur, 0, &id)) < 0)
        return r;
    for (size_t i = 0; i < g->np; i++) {
        if ((r = claim(d, g->p[i].cur, g->p[i].n, id)) < 0)
            return r;
        total += g->p[i].n;
    }
    if (total > UINT32_MAX)
        return refuse(d, -EFBIG, "The %s are too large to move", defrag_kind_name(kind));
    d->u[id].n = (uint32_t)total;
    g->unit = id;
    return 0;
}

static int add_piece(struct dgroup *g, uint64_t off, uint64_t bytes, uint64_t cs, uint32_t what,
                     uint32_t bm, uint32_t idx)
{
    struct dpiece *np = realloc(g->p, (g->np + 1) * sizeof(*np));

    if (!np)
        return -ENOMEM;
    g->p = np;
    g->p[g->np++] = (struct dpiece){ off / cs, (uint32_t)FQ_DIV_UP(bytes, cs), what, bm, idx };
    return 0;
}

/* The snapshot table and the snapshots' L1 tables, kept in memory. */
static int load_snapshots(struct defrag *d)
{
    struct qcow2 *s = d->s;
    int r = qcow2_read_snapshots(s, &d->sn, &d->nsn, &d->snap_bytes, d->err);

    if (r < 0 || d->nsn == 0)
        return r;
    d->snl1 = calloc(d->nsn, sizeof(*d->snl1));
    d->snl1_dirty = calloc(d->nsn, sizeof(*d->snl1_dirty));
    if (!d->snl1 || !d->snl1_dirty)
        return -ENOMEM;
    if ((r = add_piece(&d->snap, s->snapshots_offset, d->snap_bytes, d->cs, 0, 0, 0)) < 0)
        return r;
    for (size_t k = 0; k < d->nsn; k++) {
        const struct qsnap *sn = &d->sn[k];
        if ((r = qcow2_read_l1(s, sn->l1_offset, sn->l1_size, &d->snl1[k])) < 0)
            return refuse(d, r, "Could not read the L1 table of snapshot %s: %s", sn->id,
                          strerror(-r));
        d->snl1_dirty[k] = calloc(FQ_DIV_UP((uint64_t)sn->l1_size * 8, 4096) + 1, 1);
        if (!d->snl1_dirty[k])
            return -ENOMEM;
        if (sn->l1_size &&
            (r = add_piece(&d->snap, sn->l1_offset, (uint64_t)sn->l1_size * 8, d->cs,
                           (uint32_t)k + 1, 0, 0)) < 0)
            return r;
    }
    return new_group(d, DK_SNAP, &d->snap);
}

/* The bitmap directory, tables and data clusters, kept in memory. */
static int load_bitmaps(struct defrag *d)
{
    struct qcow2 *s = d->s;
    const struct qext *x = NULL;
    int r;

    for (size_t i = 0; i < s->exts.len; i++)
        if (s->exts.ptr[i].type == QEXT_BITMAPS) {
            x = &s->exts.ptr[i];
            d->bm_ext = i;
        }
    if (!x)
        return 0;
    if (x->len < 24)
        return refuse(d, -EINVAL, "The bitmaps extension is damaged; run 'check -r all' first");
    uint32_t nb = fq_be32(x->data);
    uint64_t dsize = fq_be64(x->data + 8), doff = fq_be64(x->data + 16);
    if (nb == 0 || dsize == 0)
        return 0;
    if (dsize > (64u << 20) || !FQ_IS_ALIGNED(doff, d->cs) || doff == 0)
        return refuse(d, -EINVAL, "The bitmap directory (%llu bytes at 0x%llx) is invalid",
                      (unsigned long long)dsize, (unsigned long long)doff);
    if (!(d->bmdir = malloc(dsize)) || !(d->bmtab = calloc(nb, sizeof(*d->bmtab))) ||
        !(d->bmtab_n = calloc(nb, sizeof(*d->bmtab_n))) ||
        !(d->bmtab_off = calloc(nb, sizeof(*d->bmtab_off))))
        return -ENOMEM;
    d->bmdir_bytes = dsize;
    d->nbm = nb;
    if ((r = fq_bdev_pread_sync(s->file, d->bmdir, dsize, doff)) < 0)
        return refuse(d, r, "Could not read the bitmap directory: %s", strerror(-r));
    if ((r = add_piece(&d->bm, doff, dsize, d->cs, 0, 0, 0)) < 0)
        return r;
    uint64_t p = 0;
    for (uint32_t k = 0; k < nb; k++) {
        if (p + 24 > dsize)
            return refuse(d, -EINVAL, "The bitmap directory is truncated");
        uint64_t toff = fq_be64(d->bmdir + p);
        uint32_t tsize = fq_be32(d->bmdir + p + 8);
        uint64_t esz = FQ_ALIGN_UP(24ull + fq_be32(d->bmdir + p + 20) + fq_be16(d->bmdir + p + 18), 8);
        if ((uint64_t)tsize * 8 > QCOW2_MAX_L1_BYTES || esz > dsize - p ||
            (tsize && (!FQ_IS_ALIGNED(toff, d->cs) || toff == 0)))
            return refuse(d, -EINVAL, "Bitmap %u of the directory is invalid", k);
        d->bmtab_off[k] = p;
        d->bmtab_n[k] = tsize;
        if (!(d->bmtab[k] = malloc((size_t)tsize * 8 + 8)))
            return -ENOMEM;
        if (tsize && (r = fq_bdev_pread_sync(s->file, d->bmtab[k], (size_t)tsize * 8, toff)) < 0)
            return refuse(d, r, "Could not read a bitmap table: %s", strerror(-r));
        if (tsize && (r = add_piece(&d->bm, toff, (uint64_t)tsize * 8, d->cs, k + 1, k, 0)) < 0)
            return r;
        for (uint32_t j = 0; j < tsize; j++) {
            uint64_t de = fq_be64((uint8_t *)d->bmtab[k] + (size_t)j * 8);
            uint64_t off = de & L2E_OFFSET_MASK;
            if (off && (r = add_piece(&d->bm, off, d->cs, d->cs, DP_BMDATA, k, j)) < 0)
                return r;
        }
        p += esz;
    }
    return new_group(d, DK_BITMAP, &d->bm);
}

static int cmp_xref(const void *a, const void *b)
{
    const struct dref *x = a, *y = b;

    if (x->u != y->u)
        return x->u < y->u ? -1 : 1;
    if (x->t != y->t)
        return x->t < y->t ? -1 : 1;
    return x->i < y->i ? -1 : x->i > y->i;
}

/* Each unit's references in one place, and its multiplicity: an L2 table
 * holds one reference per L1 entry naming it, a data or compressed
 * cluster one per L1 path to each entry naming it. */
static int settle_refs(struct defrag *d)
{
    if (d->nx)
        qsort(d->xref, d->nx, sizeof(*d->xref), cmp_xref);
    for (size_t i = d->nx; i-- > 0;)
        d->u[d->xref[i].u].more = (uint32_t)i;
    if (d->nx > UINT32_MAX)
        return refuse(d, -EFBIG, "The image has too many references to defragment");
    for (uint32_t id = 0; id < d->nu; id++) {
        struct dunit *u = &d->u[id];
        if (u->kind == DK_L2) {
            u->mult = u->nref;
        } else if (u->kind == DK_DATA || u->kind == DK_ZERO || u->kind == DK_BLOB) {
            uint64_t m = 0;
            for (uint32_t j = 0; j < u->nref; j++)
                m += d->u[defrag_ref(d, u, j).t].mult;
            u->mult = m;
        }
    }
    return 0;
}

/* Every stored refcount against the references: below is refused, above
 * is a leak. The clusters of the file and of refcount blocks straddling
 * its end are compared. */
static int verify_refcounts(struct defrag *d, uint64_t *leaks)
{
    struct qcow2 *s = d->s;
    uint64_t end = d->fclusters + (1ull << s->rb_bits);

    *leaks = 0;
    for (uint32_t id = 0; id < d->nu; id++)
        if (d->u[id].kind == DK_BLOB) {
            uint64_t first, last;
            defrag_blob_span(d, d->u[id].cur, d->u[id].len, &first, &last);
            for (uint64_t c = first; c <= last; c++)
                d->crc[c] += d->u[id].mult;
        }
    for (uint64_t c = 0; c < end; c++) {
        uint64_t ri = c >> s->rb_bits, rc, want;
        if (ri >= s->rt_entries || !s->rt[ri]) {
            c = ((ri + 1) << s->rb_bits) - 1;   /* not covered: refcounts are 0 */
            if (ri >= s->rt_entries)
                break;
            continue;
        }
        int r = qcow2_get_refcount(s, c, &rc);
        if (r < 0)
            return refuse(d, r, "Could not read the refcount of cluster %llu: %s",
                          (unsigned long long)c, strerror(-r));
        uint32_t o = c < d->nb ? d->occ[c] : DO_FREE;
        want = o == DO_FREE ? 0 : o == DO_CMP ? d->crc[c] : d->u[o].mult;
        if (rc > want && c >= d->fclusters && !want) {
            /* past the end of the file, where the check does not look:
             * reclaimed by defrag_reclaim_tail */
            if (d->ntail == d->captail) {
                size_t nc = d->captail ? d->captail * 2 : 64;
                uint64_t *nt = realloc(d->tail, nc * sizeof(*nt));
                if (!nt)
                    return -ENOMEM;
                d->tail = nt;
                d->captail = nc;
            }
            d->tail[d->ntail++] = c;
            (*leaks)++;
        } else if (rc > want) {
            (*leaks)++;
        }
        else if (rc < want)
            return refuse(d, -EINVAL, "Cluster %llu has a refcount of %llu but %llu references; "
                          "run 'check -r all' first", (unsigned long long)c,
                          (unsigned long long)rc, (unsigned long long)want);
    }
    return 0;
}

int defrag_build(struct defrag *d, uint64_t *leaks)
{
    struct qcow2 *s = d->s;
    int64_t flen = s->file->ops->file_length ? s->file->ops->file_length(s->file)
                                             : (int64_t)s->file->size;
    uint32_t *l2s = NULL, *blobs = NULL, id;
    size_t nl2 = 0, l2cap = 0, bcap = 0, scap = 0;
    struct blobtab bt = { 0 };
    int r;

    d->fclusters = FQ_DIV_UP(flen > 0 ? (uint64_t)flen : 0, d->cs);
    d->snap.unit = d->bm.unit = DU_NONE;
    d->l1 = DU_NONE;
    if ((r = defrag_grow_maps(d, d->fclusters + 1)) < 0)
        return r;
    if ((r = new_unit(d, DK_HDR, 0, 1, &d->hdr)) < 0 ||
        (r = new_unit(d, DK_RT, s->rt_offset / d->cs, s->rt_clusters, &d->rt)) < 0)
        return r;
    for (uint64_t ri = 0; ri < s->rt_entries; ri++) {
        if (!s->rt[ri])
            continue;
        if ((r = new_unit(d, DK_RB, s->rt[ri] / d->cs, 1, &id)) < 0)
            return r;
        d->u[id].aux = (uint32_t)ri;
    }
    if (s->l1_size &&
        (r = new_unit(d, DK_L1, s->l1_offset / d->cs,
                      (uint32_t)FQ_DIV_UP((uint64_t)s->l1_size * 8, d->cs), &d->l1)) < 0)
        return r;
    if ((r = load_snapshots(d)) < 0 || (r = load_bitmaps(d)) < 0)
        return r;
    r = walk_l1(d, s->l1, s->l1_size, 0, &l2s, &nl2, &l2cap);
    for (size_t k = 0; k < d->nsn && r == 0; k++)
        r = walk_l1(d, d->snl1[k], d->sn[k].l1_size, (uint32_t)k + 1, &l2s, &nl2, &l2cap);
    for (size_t i = 0; i < nl2 && r == 0; i++)
        r = walk_l2(d, l2s[i], &bt, &blobs, &bcap, &scap);
    free(l2s);
    free(blobs);
    free(bt.slot);
    if (r == 0)
        r = settle_refs(d);
    if (r == 0)
        r = verify_refcounts(d, leaks);
    return r;
}

int defrag_reclaim_tail(struct defrag *d)
{
    int r = 0;

    for (size_t i = 0; i < d->ntail && r == 0; i++) {
        uint64_t rc;
        if ((r = qcow2_get_refcount(d->s, d->tail[i], &rc)) == 0 && rc)
            r = qcow2_update_refcount(d->s, d->tail[i] * d->cs, 1, -(int64_t)rc);
    }
    return r < 0 ? r : qcow2_sync_meta(d->s);
}

void defrag_free_plan(struct defrag *d)
{
    defrag_copy_free(d);
    free(d->u);
    free(d->xref);
    free(d->occ);
    free(d->want);
    free(d->crc);
    free(d->cnf);
    for (size_t k = 0; k < d->nsn; k++) {
        free(d->snl1 ? d->snl1[k] : NULL);
        free(d->snl1_dirty ? d->snl1_dirty[k] : NULL);
    }
    free(d->snl1);
    free(d->snl1_dirty);
    qcow2_snapshots_free(d->sn, d->nsn);
    free(d->snap.p);
    free(d->bm.p);
    for (uint32_t k = 0; d->bmtab && k < d->nbm; k++)
        free(d->bmtab[k]);
    free(d->bmtab);
    free(d->bmtab_n);
    free(d->bmtab_off);
    free(d->bmdir);
    free(d->stream);
    free(d->blob_by_tgt);
    free(d->blob_by_cur);
    free(d->blob_orig);
    free(d->blob_tgt);
    free(d->tail);
    free(d->q);
    free(d->mv);
    d->u = NULL;
    d->xref = NULL;
    d->occ = d->want = d->cnf = NULL;
    d->crc = NULL;
    d->snl1 = NULL;
    d->snl1_dirty = NULL;
    d->sn = NULL;
    d->snap.p = d->bm.p = NULL;
    d->bmtab = NULL;
    d->bmtab_n = NULL;
    d->bmtab_off = NULL;
    d->bmdir = NULL;
    d->stream = d->blob_by_tgt = d->blob_by_cur = NULL;
    d->blob_orig = d->blob_tgt = NULL;
    d->tail = NULL;
    d->ntail = d->captail = 0;
    d->q = NULL;
    d->mv = NULL;
    d->nu = d->capu = d->nblobs = 0;
    d->nx = d->capx = d->nsn = d->snap.np = d->bm.np = d->nstream = 0;
    d->qh = d->qn = d->qcap = d->nmv = d->capmv = 0;
    d->nbm = 0;
    d->nb = 0;
}
