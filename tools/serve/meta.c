/* meta.c: what NBD_CMD_BLOCK_STATUS and sparse reads report, from fq_map:
 *
 *   base:allocation        NBD_STATE_HOLE where no data is read from any
 *                          layer, NBD_STATE_ZERO where the range reads as
 *                          zeros (as the image's map reports them);
 *   qemu:allocation-depth  0 where no layer of the chain allocates the
 *                          range, 1 where the image itself does, 2 for its
 *                          backing file, and so on (a range past the end
 *                          of a backing file counts as that file's);
 *   qemu:dirty-bitmap:NAME NBD_STATE_DIRTY where the persistent bitmap
 *                          NAME (-B) has its bits set, at its granularity
 *                          (what this session wrote included).
 *
 * Each context is a kind plus (for dirty bitmaps) an argument; the walk
 * over the image's map is shared by the map's contexts, each bitmap has a
 * walk of its own over fq_bitmap_status runs; both are bounded in calls
 * and extents per reply, so a client asking about 4 GiB of a fragmented
 * image gets a shorter answer instead of stalling the loop.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/cli.h"
#include "server.h"

#define MAX_EXTENTS 2048       /* per context and reply (16 KiB) */
#define MAX_MAP_CALLS 65536    /* per request */

int meta_export_init(struct export *e, const struct serve_opts *o)
{
    e->nmeta = 0;
    e->meta[e->nmeta] = "base:allocation";
    e->meta_kind[e->nmeta++] = META_BASE_ALLOCATION;
    if (o->allocation_depth) {
        e->meta[e->nmeta] = "qemu:allocation-depth";
        e->meta_kind[e->nmeta++] = META_ALLOCATION_DEPTH;
    }
    for (int i = 0; i < o->nbitmaps; i++) {
        char err[FQ_ERR_MAX] = "";
        uint64_t run;
        int dirty, r = fq_bitmap_status(e->img, o->bitmaps[i], 0, 0, &run, &dirty, err);
        if (r == -ENOENT || r == -ENOTSUP) {
            tool_error("Bitmap '%s' is not found", o->bitmaps[i]);
            return -1;
        }
        if (r < 0) {
            tool_error("%s", err[0] ? err : strerror(-r));
            return -1;
        }
        size_t n = strlen(o->bitmaps[i]) + sizeof("qemu:dirty-bitmap:");
        char *name = malloc(n);
        if (!name)
            return -1;
        snprintf(name, n, "qemu:dirty-bitmap:%s", o->bitmaps[i]);
        e->meta_owned[i] = name;
        e->meta[e->nmeta] = name;
        e->meta_arg[e->nmeta] = o->bitmaps[i];
        e->meta_kind[e->nmeta++] = META_DIRTY_BITMAP;
    }
    return 0;
}

void meta_export_free(struct export *e)
{
    for (int i = 0; i < SERVE_MAX_BITMAPS; i++) {
        free(e->meta_owned[i]);
        e->meta_owned[i] = NULL;
    }
}

/* The status a context gives a map run. */
static uint32_t status_of(enum meta_kind k, const struct fq_map_entry *m)
{
    switch (k) {
    case META_BASE_ALLOCATION:
        return ((m->flags & FQ_MAP_DATA) ? 0 : NBD_STATE_HOLE) |
               ((m->flags & FQ_MAP_ZERO) ? NBD_STATE_ZERO : 0);
    case META_ALLOCATION_DEPTH:
        /* 1-based layers; a range past the end of a backing file counts
         * as that backing file's */
        if (m->flags & FQ_MAP_ALLOCATED)
            return (uint32_t)m->depth + 1;
        return (m->flags & FQ_MAP_PAST_BACKING) ? (uint32_t)m->depth + 2 : 0;
    case META_DIRTY_BITMAP:
        break;             /* not from the map: bitmap_walk */
    }
    return 0;
}

/* Extents being built for one context. */
struct ext_list {
    unsigned ctx;              /* index in the export's list */
    uint8_t *p;                /* 4-byte id, then 8-byte descriptors */
    unsigned n;
    bool full;
    uint64_t cur_len;          /* the open extent, not yet written */
    uint32_t cur_status;
};

/* Close the open extent of `l` (cut at 4 GiB - 512 per descriptor). */
static void ext_close(struct ext_list *l)
{
    while (l->cur_len && !l->full) {
        uint32_t part = l->cur_len > 0xfffffe00u ? 0xfffffe00u : (uint32_t)l->cur_len;
        nbd_put32(l->p + 4 + 8 * l->n, part);
        nbd_put32(l->p + 4 + 8 * l->n + 4, l->cur_status);
        l->n++;
        l->cur_len -= part;
        if (l->n == MAX_EXTENTS)
            l->full = true;
    }
    l->cur_len = 0;
}

/* The extents of a dirty-bitmap context over [off, end): its own walk
 * over the bitmap's runs. Returns 0 or -errno. */
static int bitmap_walk(struct export *e, struct ext_list *x, uint64_t off, uint64_t end,
                       bool req_one)
{
    unsigned calls = 0;

    while (off < end && !x->full && calls++ < MAX_MAP_CALLS) {
        uint64_t run;
        int dirty;
        int r = fq_bitmap_status(e->img, e->meta_arg[x->ctx], e->offset + off, end - off, &run,
                                 &dirty, NULL);
        if (r < 0)
            return r;
        if (run == 0)
            return -EIO;
        uint32_t st = dirty ? NBD_STATE_DIRTY : 0;
        if (x->cur_len && st != x->cur_status)
            ext_close(x);
        if (x->full || (req_one && x->n > 0))
            break;
        x->cur_status = st;
        x->cur_len += run;
        off += run;
    }
    return 0;
}

int meta_block_status(struct export *e, uint64_t sel, uint64_t handle, uint64_t off,
                      uint32_t len, bool req_one, struct nbd_buf *out)
{
    struct ext_list lists[NBD_META_MAX];
    unsigned nl = 0;
    int r = 0;

    for (unsigned c = 0; c < e->nmeta; c++) {
        if (!(sel & (1ull << c)))
            continue;
        lists[nl] = (struct ext_list){ .ctx = c };
        lists[nl].p = malloc(4 + 8 * MAX_EXTENTS);
        if (!lists[nl].p) {
            r = -ENOMEM;
            goto out;
        }
        nbd_put32(lists[nl].p, c + 1);
        nl++;
    }
    uint64_t pos = off, end = off + len;
    unsigned calls = 0;
    bool more = false;
    for (unsigned i = 0; i < nl; i++) {
        if (e->meta_kind[lists[i].ctx] != META_DIRTY_BITMAP)
            more = true;           /* a context of the map's */
        else if ((r = bitmap_walk(e, &lists[i], off, end, req_one)) < 0)
            goto out;
    }
    while (pos < end && more && calls < MAX_MAP_CALLS) {
        struct fq_map_entry m;
        r = fq_map(e->img, e->offset + pos, end - pos, &m);
        if (r < 0)
            goto out;
        calls++;
        if (m.length == 0) {
            r = -EIO;
            goto out;
        }
        uint64_t l = m.length < end - pos ? m.length : end - pos;
        for (unsigned i = 0; i < nl; i++) {
            struct ext_list *x = &lists[i];
            if (e->meta_kind[x->ctx] == META_DIRTY_BITMAP)
                continue;
            uint32_t st = status_of(e->meta_kind[x->ctx], &m);
            if (x->cur_len && st != x->cur_status)
                ext_close(x);
            if (x->full) {
                more = false;
                continue;
            }
            x->cur_status = st;
            x->cur_len += l;
            /* with REQ_ONE, one extent per context: stop at the first
             * change of status in any of them */
            if (req_one && x->n > 0)
                more = false;
        }
        pos += l;
    }
    for (unsigned i = 0; i < nl; i++) {
        ext_close(&lists[i]);
        if (req_one && lists[i].n > 1)
            lists[i].n = 1;
        uint8_t h[NBD_CHUNK_HEADER_SIZE];
        uint32_t plen = 4 + 8 * lists[i].n;
        nbd_chunk_header(h, handle, i + 1 == nl ? NBD_REPLY_FLAG_DONE : 0,
                         NBD_REPLY_TYPE_BLOCK_STATUS, plen);
        if (nbd_buf_put(out, h, sizeof(h)) < 0 || nbd_buf_put(out, lists[i].p, plen) < 0) {
            r = -ENOMEM;
            goto out;
        }
    }
out:
    for (unsigned i = 0; i < nl; i++)
        free(lists[i].p);
    return r;
}

int meta_read_runs(struct export *e, uint64_t off, uint32_t len, struct read_run *runs, int max)
{
    uint32_t pos = 0;
    int n = 0;

    while (pos < len) {
        struct fq_map_entry m;
        int r = fq_map(e->img, e->offset + off + pos, len - pos, &m);
        if (r < 0)
            return r;
        if (m.length == 0)
            return -EIO;
        uint32_t l = m.length < len - pos ? (uint32_t)m.length : len - pos;
        bool zero = (m.flags & FQ_MAP_ZERO) != 0;
        if (n > 0 && runs[n - 1].zero == zero) {
            runs[n - 1].len += l;
        } else if (n == max) {
            /* too fragmented to be worth it: the rest is read as data */
            runs[n - 1].zero = false;
            runs[n - 1].len = len - runs[n - 1].off;
            return n;
        } else {
            runs[n++] = (struct read_run){ .off = pos, .len = l, .zero = zero };
        }
        pos += l;
    }
    return n;
}
