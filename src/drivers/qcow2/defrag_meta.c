/* defrag_meta.c: moving the structures no L1 or L2 entry points at:
 * the active L1 table, the refcount table and blocks (the header and the
 * refcount table point at them), the snapshot group (the snapshot table
 * and every snapshot's L1 table; the header points at the table) and the
 * bitmap group (directory, tables, data; the header's bitmaps extension
 * points at the directory).
 *
 * Each move, whatever it moves, goes:
 *  1. the destination's refcounts raised and written, flush;
 *  2. the copy written (from memory: the structures are kept current), flush;
 *  3. the one pointer switched (one header write, or one refcount table
 *     entry), flush; a failed switch writes the old pointer back, since
 *     which one reached the disk is unknown and both name a complete copy;
 *  4. the old place's refcounts lowered (written with the next write-back).
 * A crash before 3 leaves the copy unreferenced (leaked); after 3, the old
 * place leaks until 4 is written. The pointer each switch changes lies in
 * one 512-byte sector (the header's fields, a refcount table entry, the
 * directory offset of the bitmaps extension), so a torn write cannot mix
 * old and new.
 * SPDX-License-Identifier: MIT
 */
#include <stdio.h>

#include "defrag.h"

/* Step 1 for clusters [dst, dst + n), which must be unused. */
static int reserve(struct defrag *d, uint64_t dst, uint64_t n)
{
    struct qcow2 *s = d->s;
    int r;

    for (uint64_t c = dst; c < dst + n; c++) {
        uint64_t rc;
        if ((r = qcow2_get_refcount(s, c, &rc)) < 0)
            return r;
        if (rc) {
            fq_seterr(d->err, "Internal error: cluster %llu is in use", (unsigned long long)c);
            return -EIO;
        }
    }
    if ((r = qcow2_update_refcount(s, dst * d->cs, n, 1)) < 0)
        return r;
    return qcow2_sync_meta(s);
}

/* Step 3: the header with one field changed (written and flushed). On
 * failure the old value goes back, on disk too if possible; if not,
 * further writes are refused until the image is opened again. */
static int switch_header(struct defrag *d, uint64_t *field, uint64_t val)
{
    struct qcow2 *s = d->s;
    uint64_t old = *field;
    int r;

    *field = val;
    qcow2_meta_changed(s);
    if ((r = qcow2_write_header(s)) == 0 && (r = qcow2_flush_file(s)) == 0)
        return 0;
    *field = old;
    qcow2_meta_changed(s);
    if (qcow2_write_header(s) < 0 || qcow2_flush_file(s) < 0) {
        s->corrupt = true;   /* in memory only: the old and the new are both sound */
        fq_seterr(d->err, "Could not switch the header to a moved structure, nor write the old "
                  "header back: %s; further writes refused", strerror(-r));
    }
    return r;
}

/* Step 4 and the maps: the unit left [old, old + n) for [dst, dst + n). */
static int finish(struct defrag *d, uint32_t id, uint64_t old, uint64_t n, uint64_t dst)
{
    int r = qcow2_update_refcount(d->s, old * d->cs, n, -1);

    if (r == 0)
        r = defrag_release(d, old, n);
    defrag_occupy(d, dst, n, id);
    d->st->bytes_copied += n * d->cs;
    return r;
}

/* The L1 table or the refcount table: a copy of the table in memory
 * (`v`, n entries, in host byte order) written at dst, then the header
 * field `field` switched to it. */
static int move_table(struct defrag *d, uint32_t id, uint64_t dst, const uint64_t *v, uint64_t n,
                      unsigned tag, uint64_t *field)
{
    struct qcow2 *s = d->s;
    struct dunit *u = &d->u[id];
    uint64_t old = u->cur, bytes = (uint64_t)u->n * d->cs;
    int r;

    if ((r = reserve(d, dst, u->n)) < 0)
        return r;
    CLEANUP_FREE uint8_t *buf = fq_zalign((size_t)bytes);
    if (!buf)
        return -ENOMEM;
    for (uint64_t i = 0; i < n; i++)
        fq_put_be64(buf + i * 8, v[i]);
    if ((r = qcow2_check_meta_write(s, dst * d->cs, bytes, tag)) < 0 ||
        (r = fq_bdev_pwrite_tagged(s->file, buf, (size_t)bytes, dst * d->cs, tag)) < 0 ||
        (r = qcow2_flush_file(s)) < 0 || (r = switch_header(d, field, dst * d->cs)) < 0)
        return r;
    u->cur = dst;
    return finish(d, id, old, u->n, dst);
}

/* A refcount block: its table entry is the pointer. */
static int move_rb(struct defrag *d, uint32_t id, uint64_t dst)
{
    struct qcow2 *s = d->s;
    struct dunit *u = &d->u[id];
    uint64_t old = u->cur, ri = u->aux;
    struct qcache_entry *e;
    int r;

    if ((r = reserve(d, dst, 1)) < 0)
        return r;
    CLEANUP_FREE uint8_t *buf = fq_memalign((size_t)d->cs);
    if (!buf)
        return -ENOMEM;
    if ((r = qcache_get(&s->rb_cache, old * d->cs, false, &e)) < 0)
        return r;
    memcpy(buf, e->data, d->cs);
    qcache_put(&s->rb_cache, e);
    if ((r = qcow2_check_meta_write(s, dst * d->cs, d->cs, FQ_TAG_REFBLOCK)) < 0 ||
        (r = fq_bdev_pwrite_tagged(s->file, buf, (size_t)d->cs, dst * d->cs, FQ_TAG_REFBLOCK)) < 0 ||
        (r = qcow2_flush_file(s)) < 0)
        return r;
    /* the cached copy is clean (reserve wrote it back): read it anew from
     * its new place from now on */
    qcache_discard(&s->rb_cache, old * d->cs);
    s->rt[ri] = dst * d->cs;
    qcow2_meta_changed(s);
    s->rt_dirty = true;
    if ((r = qcow2_sync_meta(s)) < 0) {
        s->rt[ri] = old * d->cs;
        qcow2_meta_changed(s);
        s->rt_dirty = true;
        if (qcow2_sync_meta(s) < 0) {
            s->corrupt = true;
            fq_seterr(d->err, "Could not switch refcount block %llu, nor write the old table "
                      "entry back: %s; further writes refused", (unsigned long long)ri,
                      strerror(-r));
        }
        return r;
    }
    u->cur = dst;
    return finish(d, id, old, 1, dst);
}

/* Offsets of the entries of the raw snapshot table `t` (`bytes` long). */
static int snap_entry_offsets(const uint8_t *t, uint64_t bytes, size_t n, uint64_t *at)
{
    uint64_t p = 0;

    for (size_t k = 0; k < n; k++) {
        if (p + 40 > bytes)
            return -EINVAL;
        at[k] = p;
        p = FQ_ALIGN_UP(p + 40 + fq_be32(t + p + 36) + fq_be16(t + p + 12) + fq_be16(t + p + 14), 8);
    }
    return p > bytes ? -EINVAL : 0;
}

/* The snapshot group: the table, then each snapshot's L1 table. */
static int move_snap(struct defrag *d, uint32_t id, uint64_t dst)
{
    struct qcow2 *s = d->s;
    struct dunit *u = &d->u[id];
    struct dgroup *g = &d->snap;
    uint64_t tb = FQ_ALIGN_UP(d->snap_bytes, d->cs);
    int r;

    if ((r = reserve(d, dst, u->n)) < 0)
        return r;
    CLEANUP_FREE uint8_t *t = fq_zalign((size_t)tb);
    CLEANUP_FREE uint64_t *at = calloc(d->nsn + 1, sizeof(*at));
    CLEANUP_FREE uint64_t *nw = calloc(g->np + 1, sizeof(*nw));
    if (!t || !at || !nw)
        return -ENOMEM;
    if ((r = fq_bdev_pread_sync(s->file, t, (size_t)d->snap_bytes, s->snapshots_offset)) < 0)
        return r;
    if (snap_entry_offsets(t, d->snap_bytes, d->nsn, at) < 0) {
        fq_seterr(d->err, "The snapshot table changed under defragmentation");
        return -EIO;
    }
    uint64_t next = dst;
    for (size_t i = 0; i < g->np; i++) {
        nw[i] = next;
        next += g->p[i].n;
        if (g->p[i].what == 0)
            continue;
        size_t k = g->p[i].what - 1;
        fq_put_be64(t + at[k], nw[i] * d->cs);
        if ((r = qcow2_check_meta_write(s, nw[i] * d->cs, (uint64_t)g->p[i].n * d->cs,
                                        FQ_TAG_L1)) < 0 ||
            (r = qcow2_write_l1_at(s, d->snl1[k], d->sn[k].l1_size, nw[i] * d->cs, false)) < 0)
            return r;
    }
    if ((r = fq_bdev_pwrite_tagged(s->file, t, (size_t)tb, nw[0] * d->cs, FQ_TAG_OTHER_META)) < 0 ||
        (r = qcow2_flush_file(s)) < 0 || (r = switch_header(d, &s->snapshots_offset, nw[0] * d->cs)) < 0)
        return r;
    for (size_t i = 0; i < g->np && r == 0; i++) {
        uint64_t old = g->p[i].cur;
        if (g->p[i].what)
            d->sn[g->p[i].what - 1].l1_offset = nw[i] * d->cs;
        g->p[i].cur = nw[i];
        r = qcow2_update_refcount(s, old * d->cs, g->p[i].n, -1);
        if (r == 0)
            r = defrag_release(d, old, g->p[i].n);
    }
    defrag_occupy(d, dst, u->n, id);
    u->cur = dst;
    d->st->bytes_copied += (uint64_t)u->n * d->cs;
    return r;
}

/* The bitmap group: the directory, then each bitmap's table and data. */
static int move_bitmaps(struct defrag *d, uint32_t id, uint64_t dst)
{
    struct qcow2 *s = d->s;
    struct dunit *u = &d->u[id];
    struct dgroup *g = &d->bm;
    uint64_t cs = d->cs;
    int r;

    if ((r = reserve(d, dst, u->n)) < 0)
        return r;
    CLEANUP_FREE uint64_t *nw = calloc(g->np + 1, sizeof(*nw));
    CLEANUP_FREE uint8_t *buf = fq_memalign((size_t)cs);
    if (!nw || !buf)
        return -ENOMEM;
    uint64_t next = dst;
    for (size_t i = 0; i < g->np; i++) {
        nw[i] = next;
        next += g->p[i].n;
    }
    /* data clusters, then the tables naming them, then the directory */
    for (size_t i = 0; i < g->np; i++) {
        const struct dpiece *p = &g->p[i];
        if (p->what != DP_BMDATA)
            continue;
        if ((r = fq_bdev_pread_sync(s->file, buf, (size_t)cs, p->cur * cs)) < 0 ||
            (r = fq_bdev_pwrite_tagged(s->file, buf, (size_t)cs, nw[i] * cs, FQ_TAG_OTHER_META)) < 0)
            return r;
        uint8_t *ent = (uint8_t *)d->bmtab[p->bm] + (size_t)p->idx * 8;
        fq_put_be64(ent, (fq_be64(ent) & ~L2E_OFFSET_MASK) | nw[i] * cs);
    }
    CLEANUP_FREE uint8_t *dir = malloc((size_t)d->bmdir_bytes);
    if (!dir)
        return -ENOMEM;
    memcpy(dir, d->bmdir, d->bmdir_bytes);
    for (size_t i = 0; i < g->np; i++) {
        const struct dpiece *p = &g->p[i];
        if (p->what == DP_BMDATA || p->what == 0)
            continue;
        uint32_t k = p->what - 1;
        uint64_t bytes = FQ_ALIGN_UP((uint64_t)d->bmtab_n[k] * 8, cs);
        CLEANUP_FREE uint8_t *tab = fq_zalign((size_t)bytes);
        if (!tab)
            return -ENOMEM;
        memcpy(tab, d->bmtab[k], (size_t)d->bmtab_n[k] * 8);
        if ((r = fq_bdev_pwrite_tagged(s->file, tab, (size_t)bytes, nw[i] * cs, FQ_TAG_OTHER_META)) < 0)
            return r;
        fq_put_be64(dir + d->bmtab_off[k], nw[i] * cs);
    }
    uint64_t db = FQ_ALIGN_UP(d->bmdir_bytes, cs);
    CLEANUP_FREE uint8_t *dbuf = fq_zalign((size_t)db);
    if (!dbuf)
        return -ENOMEM;
    memcpy(dbuf, dir, d->bmdir_bytes);
    if ((r = fq_bdev_pwrite_tagged(s->file, dbuf, (size_t)db, nw[0] * cs, FQ_TAG_OTHER_META)) < 0 ||
        (r = qcow2_flush_file(s)) < 0)
        return r;
    /* the switch: the directory offset in the bitmaps extension */
    uint8_t *ext = s->exts.ptr[d->bm_ext].data + 16;
    uint64_t old_dir = fq_be64(ext);
    fq_put_be64(ext, nw[0] * cs);
    if ((r = qcow2_write_header(s)) < 0 || (r = qcow2_flush_file(s)) < 0) {
        fq_put_be64(ext, old_dir);
        if (qcow2_write_header(s) < 0 || qcow2_flush_file(s) < 0) {
            s->corrupt = true;
            fq_seterr(d->err, "Could not switch the bitmap directory, nor write the old header "
                      "back: %s; further writes refused", strerror(-r));
        }
        return r;
    }
    memcpy(d->bmdir, dir, d->bmdir_bytes);
    for (size_t i = 0; i < g->np && r == 0; i++) {
        uint64_t old = g->p[i].cur;
        g->p[i].cur = nw[i];
        r = qcow2_update_refcount(s, old * cs, g->p[i].n, -1);
        if (r == 0)
            r = defrag_release(d, old, g->p[i].n);
    }
    defrag_occupy(d, dst, u->n, id);
    u->cur = dst;
    d->st->bytes_copied += (uint64_t)u->n * cs;
    return r;
}

int defrag_move_meta(struct defrag *d, uint32_t id, uint64_t dst)
{
    switch (d->u[id].kind) {
    case DK_L1:
        return move_table(d, id, dst, d->s->l1, d->s->l1_size, FQ_TAG_L1, &d->s->l1_offset);
    case DK_RT:
        return move_table(d, id, dst, d->s->rt, d->s->rt_entries, FQ_TAG_REFTABLE,
                          &d->s->rt_offset);
    case DK_RB: return move_rb(d, id, dst);
    case DK_SNAP: return move_snap(d, id, dst);
    case DK_BITMAP: return move_bitmaps(d, id, dst);
    }
    return -EINVAL;
}

int defrag_write_snl1(struct defrag *d)
{
    struct qcow2 *s = d->s;
    bool flushed = false;
    int r;

    for (size_t k = 0; k < d->nsn; k++) {
        uint64_t bytes = (uint64_t)d->sn[k].l1_size * 8, chunks = FQ_DIV_UP(bytes, 4096);
        for (uint64_t i = 0; i < chunks; i++) {
            if (!d->snl1_dirty[k][i])
                continue;
            /* the L2 tables the entries name now are durable first */
            if (!flushed && (r = qcow2_flush_file(s)) < 0)
                return r;
            flushed = true;
            uint8_t buf[4096];
            uint64_t n = FQ_MIN((uint64_t)4096, bytes - i * 4096), off = d->sn[k].l1_offset + i * 4096;
            for (uint64_t j = 0; j < n / 8; j++)
                fq_put_be64(buf + j * 8, d->snl1[k][i * 512 + j]);
            if ((r = qcow2_check_meta_write(s, off, n, FQ_TAG_L1)) < 0 ||
                (r = fq_bdev_pwrite_tagged(s->file, buf, (size_t)n, off, FQ_TAG_L1)) < 0)
                return r;
            d->snl1_dirty[k][i] = 0;
        }
    }
    return qcow2_flush_file(s);
}

/* Is unit id a refcount block only the staging zone needed, still in the
 * table? */
static bool temp_block(const struct defrag *d, uint32_t id)
{
    const struct dunit *u = &d->u[id];

    return u->kind == DK_RB && u->tgt == DT_ANY && d->s->rt[u->aux];
}

/* Does temp block id count a cluster of another temp block still in the
 * table? */
static bool counts_other(const struct defrag *d, uint32_t id)
{
    uint64_t per = 1ull << d->s->rb_bits, lo = (uint64_t)d->u[id].aux * per;

    for (uint32_t o = 0; o < d->nu; o++)
        if (o != id && temp_block(d, o) && d->u[o].cur >= lo && d->u[o].cur < lo + per)
            return true;
    return false;
}

int defrag_drop_blocks(struct defrag *d)
{
    struct qcow2 *s = d->s;
    uint64_t per = 1ull << s->rb_bits;
    int r;

    if ((r = qcow2_sync_meta(s)) < 0)
        return r;
    /* only blocks whose every refcount belongs to such blocks */
    for (uint32_t id = 0; id < d->nu; id++) {
        struct dunit *u = &d->u[id];
        if (!temp_block(d, id))
            continue;
        struct qcache_entry *e;
        if ((r = qcache_get(&s->rb_cache, u->cur * d->cs, false, &e)) < 0)
            return r;
        for (uint64_t i = 0; i < per; i++) {
            uint64_t c = (uint64_t)u->aux * per + i;
            if (!qcow2_rc_entry(e->data, s->refcount_bits, i))
                continue;
            uint32_t o = c < d->nb ? d->occ[c] : DO_FREE;
            if (o == DO_FREE || o == DO_CMP || d->u[o].kind != DK_RB || d->u[o].tgt != DT_ANY) {
                qcache_put(&s->rb_cache, e);
                return 0;   /* still counts something: keep them all */
            }
        }
        qcache_put(&s->rb_cache, e);
    }
    /* In batches: a block goes only once no other block still in the
     * table lies in its range, so that whichever entries of a torn table
     * write land, every block left in the table is still counted. */
    for (;;) {
        uint32_t *batch = calloc(d->nu + 1, sizeof(*batch));
        size_t nb = 0;
        if (!batch)
            return -ENOMEM;
        for (uint32_t id = 0; id < d->nu; id++)
            if (temp_block(d, id) && !counts_other(d, id))
                batch[nb++] = id;
        for (size_t i = 0; i < nb; i++) {
            struct dunit *u = &d->u[batch[i]];
            qcache_discard(&s->rb_cache, u->cur * d->cs);
            s->rt[u->aux] = 0;
        }
        if (nb) {
            qcow2_meta_changed(s);
            s->rt_dirty = true;
            r = qcow2_sync_meta(s);
        }
        /* gone from the table: those a kept block counts are freed there,
         * the others lie in no block's range any more */
        for (size_t i = 0; i < nb && r == 0; i++) {
            struct dunit *u = &d->u[batch[i]];
            uint64_t ri = u->cur >> s->rb_bits;
            if (ri < s->rt_entries && s->rt[ri])
                r = qcow2_update_refcount(s, u->cur * d->cs, 1, -1);
            d->occ[u->cur] = DO_FREE;
        }
        free(batch);
        if (r < 0 || nb == 0)
            return r;
    }
}
