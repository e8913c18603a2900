/* compare.c: `fastqcow compare`, qemu-img compare: the contents of two
 * images, byte for byte (with -s, their allocation status too), over the
 * job engine of common/xfer.c. A range that reads as zeros in both images
 * is never read; beyond its end an image reads as zeros.
 * SPDX-License-Identifier: MIT
 */
#include <getopt.h>
#include <inttypes.h>
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
            img_progress(&x->pg, x->done, x->total, false);
        } else if ((j = job_get(x, off, MIN(len, CHUNK - off % CHUNK)))) {
            for (int s = 0; s < 2; s++)
                if (!(j->zero[s] = zero[s]))
                    job_read(j, s);
            off += j->len;
            job_put(j);
        }
    }
    xfer_drain(x);
    if (x->err)
        tool_error("Error while reading offset %" PRIu64 " of %s: %s", x->err_off,
                   x->name[x->err_side], strerror(-x->err));
    return x->err ? 4 : 0;
}

int cmd_compare(int argc, char **argv)
{
    static const char usage[] =
        "usage: fastqcow compare [-f fmt] [-F fmt] [-T cache] [-p] [-q] [-s] filename1 filename2\n\n"
        "Compare the contents of two images (qemu-img compare). Exit codes: 0 identical,\n"
        "1 different, 2 open error, 3 allocation query error, 4 read error.\n";
    struct xfer x = { .mismatch = UINT64_MAX, .status_mismatch = UINT64_MAX, .njobs = 8,
                      .on_read = cmp_job_read };
    struct fq_open_opts o[2];
    struct args a;
    int r = img_parse_args(argc, argv, ":f:F:T:spqhU", "", usage, &a);

    if (r)
        return r < 0 ? 0 : r;
    if (optind != argc - 2)
        return img_usage_err("Expecting two image file names");
    x.strict = a.strict;
    x.pg.on = a.progress && !a.quiet;
    for (int s = 0; s < 2; s++) {
        tool_open_opts_init(&o[s]);
        o[s].format = s ? a.fmt2 : a.fmt;
        o[s].cache = a.src_cache;
        o[s].readonly = 1;
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
    img_progress(&x.pg, 0, x.total, true);
    r = cmp_range(&x, 0, small);
    if (r == 0 && x.mismatch == UINT64_MAX && x.status_mismatch == UINT64_MAX && small != big) {
        if (!a.quiet)
            printf("Warning: Image size mismatch!\n");
        r = cmp_range(&x, small, big);
    }
    if (r == 0) {
        img_progress(&x.pg, x.total, x.total, true);
        r = x.mismatch != UINT64_MAX || x.status_mismatch != UINT64_MAX;
        if (a.quiet)
            ;
        else if (x.mismatch < x.status_mismatch)   /* qemu reports the 512-byte sector */
            printf("Content mismatch at offset %" PRIu64 "!\n", x.mismatch & ~(uint64_t)511);
        else if (r)
            printf("Strict mode: Offset %" PRIu64 " block status mismatch!\n", x.status_mismatch);
        else
            printf("Images are identical.\n");
        if (x.pg.on)
            putchar('\n');
    }
out:
    xfer_close(&x);
    return r;
}
