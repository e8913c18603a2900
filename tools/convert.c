/* convert.c: the qemu-img compatible subcommands compare and convert.
 *
 * Both put their two images on one context and keep up to N jobs (ranges
 * of at most CHUNK bytes) in flight. A range that fq_map says reads as
 * zeros is never read: compare skips it when it is zero in both images,
 * convert when the target reads as zeros already. convert submits writes
 * in source order unless -W: a job's writes start only after those of
 * every earlier job, so that a new qcow2 target is laid out in order.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/args.h"
#include "subcommands.h"

#define FQ_ALIGN_DOWN_C(v, a) ((v) / (a) * (a))
#define FQ_ALIGN_UP_C(v, a) (((v) + (a) - 1) / (a) * (a))

/* ---- jobs in flight ---------------------------------------------------------- */

enum { J_FREE, J_READING, J_READY, J_WRITING };

struct xfer;
struct job {
    struct xfer *x;
    uint64_t off, len, seq;
    int state, pending;       /* pending: requests + 1 while being set up */
    bool zero[2];             /* this side reads as zeros and is not read */
    uint8_t *buf[2];
    struct iovec *iov;        /* [0], [1]: the reads; from [2]: the writes */
};

/* compare: img[0] vs img[1]; convert: img[0] (source) into img[1]. */
struct xfer {
    struct fq_ctx *ctx;
    struct fq_image *img[2];
    const char *name[2];
    uint64_t size[2], done, total, err_off, next_seq, write_seq;
    uint64_t mismatch, status_mismatch;   /* compare: first offsets found */
    struct fq_map_entry run[2];           /* cached status runs */
    struct job job[16];
    int njobs, busy, err, err_side;
    bool strict, ooo, zero_init, full;
    size_t gran;                          /* convert: zero detection block */
    uint64_t ccs;                         /* convert -c: target cluster size */
    size_t chunk;                         /* job buffer size (0 = CHUNK) */
    struct progress pg;
    void (*on_read)(struct job *j);       /* all reads of a job are in */
};

static void xfer_fail(struct xfer *x, int ret, uint64_t off, int side)
{
    if (!x->err) {
        x->err = ret;
        x->err_off = off;
        x->err_side = side;
    }
}

static void job_release(struct job *j)
{
    j->state = J_FREE;
    j->x->busy--;
    j->x->done += j->len;
    img_progress(&j->x->pg, j->x->done, j->x->total, false);
}

/* Drop a reference; the last one after the reads hands the job on. */
static void job_put(struct job *j)
{
    if (--j->pending > 0)
        return;
    if (j->state == J_READING)
        j->x->on_read(j);
    else
        job_release(j);
}

static void job_cb(struct job *j, int ret, int side)
{
    if (ret < 0)
        xfer_fail(j->x, ret, j->off, side);
    job_put(j);
}

static void read_cb0(void *j, int ret) { job_cb(j, ret, 0); }
static void read_cb1(void *j, int ret) { job_cb(j, ret, 1); }

static void job_read(struct job *j, int s)
{
    j->iov[s] = (struct iovec){ j->buf[s], j->len };
    j->pending++;
    int r = fq_aio_preadv(j->x->img[s], &j->iov[s], 1, 0, j->len, j->off, s ? read_cb1 : read_cb0, j);
    if (r < 0)
        job_cb(j, r, s);
}

/* A free job set up for [off, off+len), or NULL after running the loop. */
static struct job *job_get(struct xfer *x, uint64_t off, uint64_t len)
{
    for (int i = 0; i < x->njobs; i++) {
        struct job *j = &x->job[i];
        if (j->state != J_FREE)
            continue;
        *j = (struct job){ .x = x, .off = off, .len = len, .seq = x->next_seq++, .pending = 1,
                           .state = J_READING, .buf = { j->buf[0], j->buf[1] }, .iov = j->iov };
        x->busy++;
        return j;
    }
    int r = fq_ctx_inflight(x->ctx) ? fq_ctx_run(x->ctx, 1, -1) : -EIO;   /* -EIO: stuck */
    if (r < 0)
        xfer_fail(x, r, off, 0);
    return NULL;
}

static void xfer_drain(struct xfer *x)
{
    while (x->busy && fq_ctx_inflight(x->ctx) && fq_ctx_run(x->ctx, 1, -1) >= 0)
        ;
}

/* The status of image s at `off`: its flags, and 0x100 if the run reaches
 * the end of the image. For compare -s, runs are merged as far as qemu's
 * block status would report them (equal flags and layer, continuing host
 * offsets, a compressed cluster alone) since the end bit depends on it.
 * The run is cached. Returns 0 or a negative errno. */
static int xfer_status(struct xfer *x, int s, uint64_t off, uint64_t *len, unsigned *st)
{
    struct fq_map_entry *m = &x->run[s], n;
    int r = 0;

    if (off < m->start || off >= m->start + m->length) {
        r = fq_map(x->img[s], off, x->size[s] - off, m);
        while (x->strict && r == 0 && m->length && m->start + m->length < x->size[s] &&
               !(m->flags & FQ_MAP_COMPRESSED)) {
            uint64_t next = m->start + m->length;
            if (fq_map(x->img[s], next, x->size[s] - next, &n) < 0 || n.flags != m->flags ||
                n.depth != m->depth ||
                ((m->flags & FQ_MAP_OFFSET) && n.host_offset != m->host_offset + m->length))
                break;
            m->length += n.length;
        }
        if (r < 0 || m->length == 0) {
            m->length = 0;
            return r < 0 ? r : -EIO;
        }
    }
    *len = m->start + m->length - off;
    *st = (m->flags & ~FQ_MAP_COMPRESSED) | (m->start + m->length >= x->size[s] ? 0x100 : 0);
    return 0;
}

/* Open image s on the shared context (made on first use). Returns 0 or
 * -1 after printing the error. */
static int xfer_open(struct xfer *x, int s, struct fq_open_opts *o)
{
    char err[FQ_ERR_MAX] = "";

    if (!x->ctx && fq_ctx_new(FQ_ENGINE_DEFAULT, &x->ctx, err) < 0) {
        tool_error("%s", err);
        return -1;
    }
    o->ctx = x->ctx;
    if (!(x->img[s] = img_open(x->name[s], o)))
        return -1;
    x->size[s] = fq_size(x->img[s]);
    return 0;
}

/* Allocate the job buffers. Returns 0 or -1 after printing the error. */
static int xfer_alloc(struct xfer *x, int nbuf, size_t niov)
{
    for (int i = 0; i < x->njobs; i++) {
        struct job *j = &x->job[i];
        j->iov = calloc(niov, sizeof(*j->iov));
        for (int b = 0; b < nbuf; b++)
            j->buf[b] = x->chunk > CHUNK ? aligned_alloc(4096, x->chunk) : img_alloc_buf();
        if (!j->iov || !j->buf[0] || (nbuf > 1 && !j->buf[1])) {
            tool_error("Out of memory");
            return -1;
        }
    }
    return 0;
}

/* Close what xfer_open and xfer_alloc set up. Returns the result of
 * closing (flushing) the target. */
static int xfer_close(struct xfer *x)
{
    int r = 0;

    fq_close(x->img[0]);
    if (x->img[1])
        r = fq_close(x->img[1]);
    for (int i = 0; i < x->njobs; i++) {
        free(x->job[i].buf[0]);
        free(x->job[i].buf[1]);
        free(x->job[i].iov);
    }
    fq_ctx_free(x->ctx);
    return r;
}

/* ---- compare -------------------------------------------------------------- */

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

/* ---- convert -------------------------------------------------------------- */

static void write_cb(void *j, int ret) { job_cb(j, ret, 1); }

/* Write [pos, pos+n) of a job: its data, or zeros when the target does
 * not read as zeros already. */
static void conv_emit(struct job *j, size_t pos, size_t n, bool zero, int *niov)
{
    struct iovec *v = &j->iov[*niov];
    int r;

    if (zero && j->x->zero_init)
        return;
    j->pending++;
    if (zero) {
        r = fq_aio_write_zeroes(j->x->img[1], j->off + pos, n, 0, write_cb, j);
    } else {
        *v = (struct iovec){ j->buf[0] + pos, n };
        (*niov)++;
        r = fq_aio_pwritev(j->x->img[1], v, 1, 0, n, j->off + pos, write_cb, j);
    }
    if (r < 0)
        job_cb(j, r, 1);
}

/* Submit a job's writes, merging blocks of x->gran bytes into runs of
 * data and runs of zeros. */
static void conv_write(struct job *j)
{
    size_t pos = 0, run = 0;
    int niov = 2;
    bool zrun = j->zero[0];

    j->state = J_WRITING;
    j->pending = 1;
    if (j->zero[0] && j->x->full) {   /* -S 0: write zeros as data */
        memset(j->buf[0], 0, j->len);
        zrun = false;
    }
    if (j->zero[0])
        pos = run = j->len;
    while (pos < j->len) {
        size_t g = j->x->gran, n = g ? MIN(j->len - pos, g - (j->off + pos) % g) : j->len;
        bool z = g && img_is_zero(j->buf[0] + pos, n);
        if (run && z != zrun) {
            conv_emit(j, pos - run, run, zrun, &niov);
            run = 0;
        }
        zrun = z;
        run += n;
        pos += n;
    }
    if (run)
        conv_emit(j, pos - run, run, zrun, &niov);
    job_put(j);
}

/* convert -c: write a job (whole target clusters) cluster by cluster,
 * compressed; clusters of zeros stay holes in a target that reads as
 * zeros (written as zeros otherwise). */
static void conv_write_compressed(struct job *j)
{
    struct xfer *x = j->x;
    int niov = 2;

    j->state = J_WRITING;
    j->pending = 1;
    if (j->zero[0])
        memset(j->buf[0], 0, j->len);
    for (size_t pos = 0; pos < j->len;) {
        size_t n = (size_t)MIN(x->ccs, j->len - pos);
        uint64_t off = j->off + pos;
        if (x->gran && img_is_zero(j->buf[0] + pos, n)) {
            conv_emit(j, pos, n, true, &niov);
        } else if (n < x->ccs && off + n != x->size[1]) {
            conv_emit(j, pos, n, false, &niov);   /* not a whole cluster of the target */
        } else {
            struct iovec *v = &j->iov[niov++];
            *v = (struct iovec){ j->buf[0] + pos, n };
            j->pending++;
            int r = fq_aio_pwritev_compressed(x->img[1], v, 1, 0, n, off, write_cb, j);
            if (r < 0)
                job_cb(j, r, 1);
        }
        pos += n;
    }
    job_put(j);
}

/* A job's data is in: start the writes of every job whose turn it is (in
 * source order unless -W). After an error, drop them instead. */
static void conv_job_read(struct job *j)
{
    struct xfer *x = j->x;

    j->state = J_READY;
    for (bool again = true; again;) {
        again = false;
        for (int i = 0; i < x->njobs; i++) {
            struct job *k = &x->job[i];
            if (k->state != J_READY || (!x->ooo && !x->err && k->seq != x->write_seq))
                continue;
            x->write_seq++;
            again = true;
            if (x->err)
                job_release(k);
            else if (x->ccs)
                conv_write_compressed(k);
            else
                conv_write(k);
        }
    }
}

/* Copy the source into the target. Returns 0 or -1 after the error. */
static int conv_run(struct xfer *x)
{
    uint64_t off = 0, len;
    unsigned st;
    struct job *j;

    while (off < x->total && !x->err) {
        int r = xfer_status(x, 0, off, &len, &st);
        if (r < 0) {
            tool_error("error while reading block status at offset %" PRIu64 ": %s", off, strerror(-r));
            x->err = -ECANCELED;
        } else if (x->ccs && (st & FQ_MAP_ZERO) && x->zero_init &&
                   FQ_ALIGN_DOWN_C(off + len, x->ccs) > off) {
            /* -c: jobs stay whole target clusters; skip whole ones only */
            len = off + len >= x->total ? x->total - off : FQ_ALIGN_DOWN_C(off + len, x->ccs) - off;
            off += len;
            x->done += len;
            img_progress(&x->pg, x->done, x->total, false);
        } else if (x->ccs) {
            size_t chunk = x->chunk > CHUNK ? x->chunk : CHUNK;
            uint64_t jl = MIN(FQ_ALIGN_UP_C(off + len, x->ccs), x->total) - off;
            if ((j = job_get(x, off, MIN(jl, chunk - off % chunk)))) {
                if (!(j->zero[0] = (st & FQ_MAP_ZERO) && len >= j->len))
                    job_read(j, 0);
                off += j->len;
                job_put(j);
            }
        } else if ((st & FQ_MAP_ZERO) && x->zero_init) {
            off += len;
            x->done += len;
            img_progress(&x->pg, x->done, x->total, false);
        } else if ((j = job_get(x, off, MIN(len, CHUNK - off % CHUNK)))) {
            if (!(j->zero[0] = st & FQ_MAP_ZERO))
                job_read(j, 0);
            off += j->len;
            job_put(j);
        }
    }
    xfer_drain(x);
    if (x->err && x->err != -ECANCELED)
        tool_error("error while %s at byte %" PRIu64 ": %s", x->err_side ? "writing" : "reading",
                   x->err_off, strerror(-x->err));
    return x->err ? -1 : 0;
}

int cmd_convert(int argc, char **argv)
{
    static const char usage[] =
        "usage: fastqcow convert [-p] [-q] [-n] [-c] [-W] [-m num] [-S size] [-f fmt] [-O fmt]\n"
        "                        [-o options] [-t cache] [-T src_cache] src dst\n\n"
        "Copy the contents of an image into a new one (qemu-img convert), with up to\n"
        "num (1..16, default 8) requests in flight. -n writes into an existing dst.\n";
    struct xfer x = { .on_read = conv_job_read };
    struct fq_open_opts o[2];
    struct cspec c = { 0 };
    struct fq_info in;
    struct args a;
    int r = img_parse_args(argc, argv, ":f:O:o:m:S:t:T:pqWnchU", "", usage, &a);

    if (r)
        return r < 0 ? 0 : r;
    if (argc - optind < 2)
        return img_usage_err("Must specify image file name");
    if (argc - optind > 2) {
        tool_error("Only one source image is supported");
        return 1;
    }
    if (a.compress && (!a.out_fmt || strcmp(a.out_fmt, "qcow2"))) {
        tool_error("Compression not supported for this file format");
        return 1;
    }
    x.njobs = a.jobs;
    x.ooo = a.ooo;
    x.full = a.sparse == 0;
    x.pg.on = a.progress && !a.quiet;
    for (int s = 0; s < 2; s++) {
        tool_open_opts_init(&o[s]);
        x.name[s] = argv[optind + s];
    }
    o[0].format = a.fmt;
    o[0].cache = a.src_cache;
    o[0].readonly = 1;
    o[1].format = c.fmt = a.out_fmt ? a.out_fmt : "raw";
    o[1].cache = a.cache;
    c.file = x.name[1];
    r = 1;
    if (xfer_open(&x, 0, &o[0]) < 0)
        goto out;
    x.total = x.size[0];
    if (!a.no_create) {
        if ((r = img_cspec_parse(&c, &a)) != 0) {
            r = r < 0;
            goto out;
        }
        r = 1;
        x.zero_init = !c.val[K_BFILE];   /* a new image reads as zeros */
        img_cspec_num(&c, K_SIZE, x.total);
        if (img_create(&c) < 0)
            goto out;
    }
    if (xfer_open(&x, 1, &o[1]) < 0)
        goto out;
    if (a.compress) {
        /* jobs of whole target clusters, written compressed one by one */
        if (fq_get_info(x.img[1], &in) < 0 || !in.cluster_size) {
            tool_error("Compression not supported for this file format");
            goto out;
        }
        x.ccs = in.cluster_size;
        x.chunk = in.cluster_size > CHUNK ? in.cluster_size : CHUNK;
    }
    if (xfer_alloc(&x, 1, (x.chunk ? x.chunk : CHUNK) / 512 + 3) < 0)
        goto out;
    if (x.size[1] < x.total) {
        tool_error("%s: the target is smaller than the source (%" PRIu64 " < %" PRIu64 " bytes)",
                   x.name[1], x.size[1], x.total);
        goto out;
    }
    x.zero_init = x.zero_init && !x.full;
    /* at least a sector; a cluster for qcow2, which allocates whole ones */
    x.gran = a.sparse ? a.sparse < 512 ? 512 : a.sparse : 0;
    if (x.gran && fq_get_info(x.img[1], &in) == 0 && in.cluster_size > x.gran)
        x.gran = in.cluster_size;
    img_progress(&x.pg, 0, x.total, true);
    r = conv_run(&x) < 0;
out:
    if (xfer_close(&x) < 0 && r == 0) {
        tool_error("error while flushing %s", x.name[1]);
        r = 1;
    }
    if (r == 0 && x.pg.on) {
        img_progress(&x.pg, x.total, x.total, true);
        putchar('\n');
    }
    return r;
}
