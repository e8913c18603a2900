/* compare.c: `fastqcow compare`, qemu-img compare: the contents of two
 * images, byte for byte (with -s, their allocation status too), over the
 * job engine of common/xfer.c. A range that reads as zeros in both images
 * is never read; beyond its end an image reads as zeros.
 * SPDX-License-Identifier: MIT
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "common/args.h"
#include "common/xfer.h"
#include "subcommands.h"

/* Index of the first byte where a and b (NULL = zeros) differ, or n. */
static size_t first_diff(const uint8_t *a, const uint8_t *b, size_t n)
{
    for (size_t i = 0; i < n; i += 4096) {
        size_t l = MIN(n - i, 4096);
        if (b ? memcmp(a + i, b + i, l) : !img_is_zero(a + i, l))
            for (size_t k = i; k < i + l; k++)
                if (a[k] != (b ? b[k] : 0))
                    return k;
    }
    return n;
}

/* ---- progress, in qemu-img's steps ----
 * qemu-img compare walks both images in chunks: the run where both
 * statuses stay the same (both reading as zeros: the whole run; else at
 * most 2 MiB), then past the smaller image the runs of the larger one;
 * after each chunk it moves the progress line by the chunk's share of the
 * larger size (accumulated in single precision, printed on moves of more
 * than 2%). The same chunks are planned here in a first pass and reported
 * once everything before their end is found equal. */

#define QEMU_CHUNK (2u << 20)

struct cmp_pg {
    struct progress pg;
    uint64_t *end;             /* the chunks' ends, in order */
    size_t n, cap, next;       /* count, room, next to report */
    uint64_t cursor;           /* where the comparison submits next */
};

static int pg_push(struct cmp_pg *c, uint64_t end)
{
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 256;
        uint64_t *e = realloc(c->end, cap * sizeof(*e));
        if (!e)
            return -1;
        c->end = e;
        c->cap = cap;
    }
    c->end[c->n++] = end;
    return 0;
}

/* The first pass: qemu-img's chunks over [0, small) then [small, big). */
static int pg_plan(struct xfer *x, struct cmp_pg *c, uint64_t small, uint64_t big)
{
    uint64_t off = 0, l;
    unsigned st[2];

    while (off < small) {
        uint64_t len = small - off;
        bool zero = true;
        for (int s = 0; s < 2; s++) {
            if (xfer_status(x, s, off, &l, &st[s]) < 0)
                return -1;
            len = MIN(len, l);
            zero = zero && (st[s] & FQ_MAP_ZERO);
        }
        off += zero ? len : MIN(len, QEMU_CHUNK);
        if (pg_push(c, off) < 0)
            return -1;
    }
    int s = x->size[0] > x->size[1] ? 0 : 1;
    while (off < big) {
        if (xfer_status(x, s, off, &l, &st[s]) < 0)
            return -1;
        bool data = (st[s] & FQ_MAP_ALLOCATED) && !(st[s] & FQ_MAP_ZERO);
        off += data ? MIN(l, QEMU_CHUNK) : l;
        if (pg_push(c, off) < 0)
            return -1;
    }
    return 0;
}

/* Report the chunks that end where everything before is found equal:
 * below every job in flight, the submission cursor and any mismatch. */
static void pg_report(struct xfer *x)
{
    struct cmp_pg *c = x->user;
    uint64_t mark = MIN(c->cursor, x->mismatch);

    if (!c->pg.on)
        return;
    for (int i = 0; i < x->njobs; i++)
        if (x->job[i].state != J_FREE)
            mark = MIN(mark, x->job[i].off);
    for (; c->next < c->n && c->end[c->next] <= mark; c->next++) {
        uint64_t start = c->next ? c->end[c->next - 1] : 0;
        float d = ((float)(c->end[c->next] - start) / (float)x->total) * 100;
        img_progress_set(&c->pg, c->pg.cur + d / 100 * 100);
    }
}

static void cmp_job_read(struct job *j)
{
    struct xfer *x = j->x;
    size_t d = j->len;

    if (!x->err)
        d = j->zero[0] ? first_diff(j->buf[1], NULL, j->len) : j->zero[1] ?
            first_diff(j->buf[0], NULL, j->len) : first_diff(j->buf[0], j->buf[1], j->len);
    if (d < j->len && j->off + d < x->mismatch)
        x->mismatch = j->off + d;
    job_release(j);
    pg_report(x);
}

/* Compare [off, end); beyond its end an image reads as zeros. Stops at
 * the first difference. Returns 0 or the exit code after an error. */
static int cmp_range(struct xfer *x, uint64_t off, uint64_t end)
{
    while (off < end && x->mismatch == UINT64_MAX && !x->err) {
        uint64_t len = end - off, l;
        unsigned st[2] = { 0, 0 };
        bool zero[2];
        struct job *j;

        for (int s = 0; s < 2; s++) {
            if (off < x->size[s] && xfer_status(x, s, off, &l, &st[s]) < 0) {
                tool_error("Sector allocation test failed for %s", x->name[s]);
                xfer_drain(x);
                return 3;
            }
            zero[s] = off >= x->size[s] || (st[s] & FQ_MAP_ZERO);
            len = off < x->size[s] ? MIN(len, l) : len;
        }
        if (x->strict && st[0] != st[1]) {
            x->status_mismatch = off;
            break;
        }
        if (zero[0] && zero[1]) {
            off += len;
            x->done += len;
        } else if ((j = job_get(x, off, MIN(len, CHUNK - off % CHUNK)))) {
            for (int s = 0; s < 2; s++)
                if (!(j->zero[s] = zero[s]))
                    job_read(j, s);
            off += j->len;
            job_put(j);
        }
        ((struct cmp_pg *)x->user)->cursor = off;
        pg_report(x);
    }
    xfer_drain(x);
    pg_report(x);
    if (x->err)
        tool_error("Error while reading offset %" PRIu64 " of %s: %s", x->err_off,
                   x->name[x->err_side], strerror(-x->err));
    return x->err ? 4 : 0;
}

int cmd_compare(int argc, char **argv)
{
    static const char usage[] =
        "usage: fastqcow compare [--object objectdef] [-f fmt] [-F fmt] [-T src_cache] [-p] [-q]\n"
        "                        [-s] [-U] filename1 filename2\n"
        "\n"
        "Compare the contents of two images (qemu-img compare). Exit codes: 0 identical,\n"
        "1 different, 2 open error, 3 allocation query error, 4 read error.\n"
        "\n"
        "  -f fmt               format of the first image (probed by default)\n"
        "  -F fmt               format of the second image\n"
        "  -s                   strict: the allocation status must match too\n"
        "  -T src_cache         cache mode for both images\n"
        "  -p                   show progress\n"
        "  -q                   print nothing\n"
        "  -U, --force-share    read the images while other programs write them\n"
        "  --image-opts         the images are named by qemu's option lists\n"
        "  --object objectdef   define an object (secret)\n"
        "  -h, --help           this help\n";
    struct xfer x = { .mismatch = UINT64_MAX, .status_mismatch = UINT64_MAX, .njobs = 8,
                      .on_read = cmp_job_read };
    struct fq_open_opts o[2];
    struct cmp_pg c = { .pg.min_skip = 2.0f };
    struct args a;
    int r = img_parse_args(argc, argv, ":f:F:T:spqhU", "", usage, &a);

    if (r)
        return r < 0 ? 0 : r;
    if (optind != argc - 2)
        return img_usage_err("Expecting two image file names");
    x.strict = a.strict;
    x.user = &c;
    c.pg.on = a.progress && !a.quiet;
    for (int s = 0; s < 2; s++) {
        tool_open_opts_init(&o[s]);
        o[s].format = s ? a.fmt2 : a.fmt;
        o[s].cache = a.src_cache;
        o[s].readonly = 1;
        o[s].no_readahead = 1;
        x.name[s] = argv[optind + s];
    }
    r = 2;
    if (xfer_open(&x, 0, &o[0]) < 0 || xfer_open(&x, 1, &o[1]) < 0 || xfer_alloc(&x, 2, 2) < 0)
        goto out;
    uint64_t small = MIN(x.size[0], x.size[1]), big = x.size[0] + x.size[1] - small;
    x.total = big;
    if (x.strict && small != big) {
        if (!a.quiet)
            printf("Strict mode: Image size mismatch!\n");
        r = 1;
        goto out;
    }
    if (c.pg.on && pg_plan(&x, &c, small, big) < 0)
        c.pg.on = false;
    img_progress(&c.pg, 0, x.total, true);
    r = cmp_range(&x, 0, small);
    if (r == 0 && x.mismatch == UINT64_MAX && x.status_mismatch == UINT64_MAX && small != big) {
        if (!a.quiet)
            printf("Warning: Image size mismatch!\n");
        r = cmp_range(&x, small, big);
    }
    if (r == 0) {
        r = x.mismatch != UINT64_MAX || x.status_mismatch != UINT64_MAX;
        if (a.quiet)
            ;
        else if (x.mismatch < x.status_mismatch)   /* qemu reports the 512-byte sector */
            printf("Content mismatch at offset %" PRIu64 "!\n", x.mismatch & ~(uint64_t)511);
        else if (r)
            printf("Strict mode: Offset %" PRIu64 " block status mismatch!\n", x.status_mismatch);
        else
            printf("Images are identical.\n");
        if (c.pg.on)
            putchar('\n');
    }
out:
    xfer_close(&x);
    free(c.end);
    return r;
}
