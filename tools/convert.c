/* convert.c: `fastqcow convert`, qemu-img convert: copy an image into a
 * new (or, with -n, an existing) one over the job engine of
 * common/xfer.c, with up to N jobs in flight.
 *
 * A range that fq_map says reads as zeros is never read, and not written
 * when the target reads as zeros already. Writes are submitted in source
 * order unless -W: a job's writes start only after those of every earlier
 * job, so that a new qcow2 target is laid out in order. -c writes whole
 * target clusters compressed. -B (or -o backing_file) gives the target a
 * backing file and copies only what the source allocates itself.
 * --bitmaps copies the persistent bitmaps after the data (each added,
 * disabled if it was, and merged from the source).
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/args.h"
#include "common/blockopts.h"
#include "common/create_opts.h"
#include "common/xfer.h"
#include "subcommands.h"

#define FQ_ALIGN_DOWN_C(v, a) ((v) / (a) * (a))
#define FQ_ALIGN_UP_C(v, a) (((v) + (a) - 1) / (a) * (a))

#define WMAX_CACHED (256u << 10)   /* see cmd_convert */

static void write_cb(void *j, int ret) { job_cb(j, ret, 1); }

/* Write [pos, pos+n) of a job: its data, or zeros when the target does
 * not read as zeros already. */
static void conv_emit(struct job *j, size_t pos, size_t n, bool zero, int *niov)
{
    struct iovec *v;
    int r;

    if (zero && j->x->zero_init)
        return;
    for (size_t w = j->x->wmax; !zero && w && n > w; pos += w, n -= w)
        conv_emit(j, pos, w, false, niov);
    v = &j->iov[*niov];
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

/* ---- progress, in qemu-img's steps ----
 * qemu-img convert counts the bytes it copies as data (runs that read as
 * zeros only with -S 0; none of those -B leaves to the backing file),
 * claims them in pieces of 2 MiB from the start of each run (one target
 * cluster with -c; a run ends where the status changes, or after
 * QEMU_RUN_MAX bytes), and moves the progress line as it claims each
 * piece. The same pieces are counted here, in a first pass over the
 * source's status runs, and reported as the copy reaches them. */

#define QEMU_PIECE (2u << 20)
#define QEMU_RUN_MAX 2147483136ull   /* the most one status query covers */

struct conv_pg {
    struct progress *pg;
    uint64_t total, done;      /* counted bytes */
    uint64_t next, end;        /* next piece of the current run, its end */
};

/* Does a status run count as copied data? */
static bool conv_counted(const struct xfer *x, unsigned st)
{
    if (x->top_only && (x->run[0].depth > 0 || !(st & FQ_MAP_ALLOCATED)))
        return false;
    return !(st & FQ_MAP_ZERO) || x->full;
}

/* The end of the run at `off` of length `len`, as qemu-img's query ends it. */
static uint64_t conv_run_end(uint64_t off, uint64_t len)
{
    return off + MIN(len, QEMU_RUN_MAX);
}

/* The first pass: the counted bytes of the whole source. */
static int conv_pg_total(struct xfer *x, struct conv_pg *c)
{
    uint64_t len;
    unsigned st;

    for (uint64_t off = 0; off < x->total; off = conv_run_end(off, len)) {
        int r = xfer_status(x, 0, off, &len, &st);
        if (r < 0)
            return r;
        if (conv_counted(x, st))
            c->total += conv_run_end(off, len) - off;
    }
    return 0;
}

/* The copy claimed everything before `upto`: report the pieces that
 * start there. */
static void conv_pg_claim(struct xfer *x, struct conv_pg *c, uint64_t upto)
{
    uint64_t piece = x->ccs ? x->ccs : QEMU_PIECE, len;
    unsigned st;

    while (c->pg->on && c->next < upto && c->next < x->total) {
        if (c->next >= c->end) {
            /* the next run: where the status changes, or where the last
             * query of a long one ended */
            if (xfer_status(x, 0, c->next, &len, &st) < 0)
                return;
            c->end = conv_run_end(c->next, len);
            if (!conv_counted(x, st)) {
                c->next = c->end;
                continue;
            }
        }
        uint64_t n = MIN(x->ccs ? piece - c->next % piece : piece, c->end - c->next);
        c->next += n;
        c->done += n;
        img_progress_set(c->pg, (float)(100.0 * (double)c->done / (double)c->total));
    }
}

/* Copy the source into the target. Returns 0 or -1 after the error. */
static int conv_run(struct xfer *x, struct progress *pg)
{
    struct conv_pg c = { .pg = pg };
    uint64_t off = 0, len;
    unsigned st;
    struct job *j;

    if (pg->on && conv_pg_total(x, &c) < 0)
        pg->on = false;
    while (off < x->total && !x->err) {
        int r = xfer_status(x, 0, off, &len, &st);
        if (r < 0) {
            tool_error("error while reading block status at offset %" PRIu64 ": %s", off, strerror(-r));
            x->err = -ECANCELED;
        } else if (x->top_only && (x->run[0].depth > 0 || !(st & FQ_MAP_ALLOCATED))) {
            off += len;   /* -B: the target's backing file shows through */
            x->done += len;
        } else if (x->ccs && (st & FQ_MAP_ZERO) && x->zero_init &&
                   FQ_ALIGN_DOWN_C(off + len, x->ccs) > off) {
            /* -c: jobs stay whole target clusters; skip whole ones only */
            len = off + len >= x->total ? x->total - off : FQ_ALIGN_DOWN_C(off + len, x->ccs) - off;
            off += len;
            x->done += len;
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
        } else if ((j = job_get(x, off, MIN(len, CHUNK - off % CHUNK)))) {
            if (!(j->zero[0] = st & FQ_MAP_ZERO))
                job_read(j, 0);
            off += j->len;
            job_put(j);
        }
        conv_pg_claim(x, &c, off);
    }
    xfer_drain(x);
    if (x->err && x->err != -ECANCELED)
        tool_error("error while %s at byte %" PRIu64 ": %s", x->err_side ? "writing" : "reading",
                   x->err_off, strerror(-x->err));
    return x->err ? -1 : 0;
}

/* Can `img` hold persistent bitmaps (qcow2 version 3)? */
static bool bitmap_capable(struct fq_image *img)
{
    struct fq_info in;

    return fq_get_info(img, &in) == 0 && !strcmp(in.format, "qcow2") && in.version >= 3;
}

/* --bitmaps, before anything is copied: the source can have bitmaps and
 * none is inconsistent (unless skip). Returns 0 or -1 after a message. */
static int bitmaps_check(struct fq_image *src, bool skip)
{
    struct fq_bitmap *bm = NULL;
    char err[FQ_ERR_MAX] = "";
    int n = 0, r = 0;

    if (!bitmap_capable(src)) {
        tool_error("Source lacks bitmap support");
        return -1;
    }
    if (fq_bitmap_list(src, &bm, &n, err) < 0) {
        tool_error("%s", err);
        return -1;
    }
    /* in the order qemu-img reports them: the last one first */
    for (int i = n - 1; i >= 0 && !skip; i--)
        if (bm[i].flags & FQ_BITMAP_IN_USE) {
            tool_error("Cannot copy inconsistent bitmap '%s'", bm[i].name);
            fprintf(stderr, "Try --skip-broken-bitmaps, or use 'qemu-img bitmap --remove' to "
                            "delete it\n");
            r = -1;
            break;
        }
    free(bm);
    return r;
}

/* --bitmaps, after the data: each bitmap added to the target with its
 * granularity, disabled if it was, and merged from the source. Returns 0
 * or -1 after a message. */
static int bitmaps_copy(struct fq_image *src, struct fq_image *dst, bool skip)
{
    struct fq_bitmap *bm = NULL;
    char err[FQ_ERR_MAX] = "";
    int n = 0, r = 0;

    if (fq_bitmap_list(src, &bm, &n, err) < 0) {
        tool_error("%s", err);
        return -1;
    }
    for (int i = n - 1; i >= 0 && skip; i--)   /* qemu-img's order */
        if (bm[i].flags & FQ_BITMAP_IN_USE)
            tool_error("warning: Skipping inconsistent bitmap '%s'", bm[i].name);
    /* added in the source's order, so that the directories match */
    for (int i = 0; i < n && r == 0; i++) {
        const char *name = bm[i].name;
        if (bm[i].flags & FQ_BITMAP_IN_USE)
            continue;
        if (fq_bitmap_change(dst, name, FQ_BITMAP_ADD, bm[i].granularity, err) < 0) {
            tool_error("Failed to create bitmap %s: %s", name, err);
            r = -1;
        } else if (!(bm[i].flags & FQ_BITMAP_AUTO) &&
                   fq_bitmap_change(dst, name, FQ_BITMAP_DISABLE, 0, err) < 0) {
            tool_error("Failed to create bitmap %s: %s", name, err);
            r = -1;
        } else if (fq_bitmap_merge(dst, name, src, name, err) < 0) {
            tool_error("Failed to populate bitmap %s: %s", name, err);
            r = -1;
        }
    }
    free(bm);
    return r;
}

int cmd_convert(int argc, char **argv)
{
    static const char usage[] =
        "usage: fastqcow convert [--object objectdef] [-U] [-c] [-p] [-q] [-n] [-W] [-m num]\n"
        "                        [-S sparse_size] [-f fmt] [-t cache] [-T src_cache] [-O output_fmt]\n"
        "                        [-B backing_file [-F backing_fmt]] [-o options]\n"
        "                        [--bitmaps [--skip-broken-bitmaps]] filename output\n"
        "\n"
        "Copy the contents of an image into a new one (qemu-img convert), with num\n"
        "(1..16) requests in flight; by default as many as the devices gain from\n"
        "(measured as it runs, up to 16).\n"
        "\n"
        "  -f fmt               format of the source (probed by default)\n"
        "  -O output_fmt        format of the target: raw (default) or qcow2\n"
        "  -o options           options of the target; '-o help' lists them\n"
        "  --bitmaps            copy the persistent bitmaps too (qcow2 to qcow2)\n"
        "  --skip-broken-bitmaps  with --bitmaps: leave inconsistent ones out\n"
        "  -B backing_file      give the target this backing file and copy only what\n"
        "                       the source allocates itself\n"
        "  -F backing_fmt       the format of that backing file\n"
        "  -n                   write into an existing target (do not create it)\n"
        "  -c                   write compressed clusters (qcow2)\n"
        "  -S sparse_size       ranges of zeros this long stay holes (0: write them)\n"
        "  -m num               requests in flight, 1 to 16 (default: measured)\n"
        "  -W                   write out of order\n"
        "  -t cache             cache mode for the target (default: through the page\n"
        "                       cache, never flushed; writeback flushes at the end)\n"
        "  -T src_cache         cache mode for the source\n"
        "  -p                   show progress\n"
        "  -q                   print nothing\n"
        "  -U, --force-share    read the source while other programs write it\n"
        "  --image-opts         the source is named by qemu's option list\n"
        "  --target-image-opts  so is the target (with -n)\n"
        "  --object objectdef   define an object (secret)\n"
        "  -h, --help           this help\n";
    struct xfer x = { .on_read = conv_job_read };
    struct progress pg = { 0 };
    struct fq_open_opts o[2];
    struct cspec c = { 0 };
    struct fq_info in;
    struct args a;
    int r = img_parse_args(argc, argv, ":f:O:o:m:S:t:T:pqWnchUB:F:", "ZE", usage, &a);

    if (r)
        return r < 0 ? 0 : r;
    if ((r = img_cspec_help(&a, a.out_fmt ? a.out_fmt : "raw", argc - optind >= 2 ? argv[argc - 1] : NULL)))
        return r < 0;
    if (argc - optind < 2) {
        tool_error("Must specify image file name");   /* no "Try", as qemu-img */
        return 1;
    }
    if (argc - optind > 2) {
        tool_error("Only one source image is supported");
        return 1;
    }
    if (a.skip_broken && !a.bitmaps) {
        tool_error("Use of --skip-broken-bitmaps requires --bitmaps");
        return 1;
    }
    if (tool_target_image_opts && !a.no_create) {
        tool_error("--target-image-opts requires use of -n flag");
        return 1;
    }
    if (a.compress && (!a.out_fmt || strcmp(a.out_fmt, "qcow2"))) {
        tool_error("Compression not supported for this file format");
        return 1;
    }
    /* -m forces the requests in flight; else they are measured (up to 16) */
    x.njobs = a.jobs ? a.jobs : 16;
    if (!a.jobs && fq_depth_new(0, 16, &x.depth) < 0) {
        tool_error("out of memory");
        return 1;
    }
    x.ooo = a.ooo;
    x.full = a.sparse == 0;
    pg.on = a.progress && !a.quiet;
    for (int s = 0; s < 2; s++) {
        tool_open_opts_init(&o[s]);
        x.name[s] = argv[optind + s];
    }
    o[0].format = a.fmt;
    o[0].cache = a.src_cache;
    o[0].readonly = 1;
    o[0].no_readahead = 1;
    o[1].format = c.fmt = a.out_fmt ? a.out_fmt : "raw";
    /* the target's default as qemu-img has it: written through the page
     * cache and never flushed (-t writeback flushes it at the end) */
    o[1].cache = a.cache_set ? a.cache : FQ_CACHE_UNSAFE;
    o[1].force_share = 0;   /* -U shares the source only */
    c.file = x.name[1];
    r = 1;
    if (xfer_open(&x, 0, &o[0]) < 0)
        goto out;
    x.total = x.size[0];
    if (a.bitmaps && bitmaps_check(x.img[0], a.skip_broken) < 0)
        goto out;
    if (!a.no_create) {
        if ((r = img_cspec_parse(&c, &a)) != 0) {
            r = r < 0;
            goto out;
        }
        r = 1;
        if (a.backing) {   /* -B and -F over -o */
            c.val[K_BFILE] = a.backing;
            c.val[K_BFMT] = a.fmt2;
        }
        if (c.val[K_BFILE] && strcmp(c.fmt, "qcow2")) {
            tool_error("Backing file not supported for file format '%s'", c.fmt);
            goto out;
        }
        if (c.val[K_BFILE] && !c.val[K_BFMT]) {
            tool_error("Use of backing file requires explicit backing format");
            goto out;
        }
        x.top_only = c.val[K_BFILE] != NULL;
        x.zero_init = !c.val[K_BFILE];   /* a new image reads as zeros */
        if (a.compress && (c.val[K_ENC_FORMAT] || c.on[K_ENCRYPTION])) {
            tool_error("Compression and encryption not supported at the same time");
            goto out;
        }
        img_cspec_num(&c, K_SIZE, x.total);
        if (img_create(&c) < 0)
            goto out;
        if (c.val[K_ENC_FORMAT])   /* the new image opens with its secret */
            o[1].key_secret = img_cspec_secret(&c, &o[1].key_secret_len);
    }
    bool src_opts = tool_image_opts;
    tool_image_opts = tool_target_image_opts;   /* for the target */
    int tr = xfer_open(&x, 1, &o[1]);
    tool_image_opts = src_opts;
    if (tr < 0)
        goto out;
    if (a.bitmaps && !bitmap_capable(x.img[1])) {
        tool_error("Format driver '%s' does not support bitmaps", fq_format(x.img[1]));
        goto out;
    }
    /* -B: ranges the source leaves to its own backing file are skipped */
    x.top_only = (x.top_only || a.backing) && fq_get_info(x.img[0], &in) == 0 && in.backing_file[0];
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
    /* Through the page cache, data goes in writes of at most WMAX_CACHED:
     * the kernel backs a large buffered write with large folios, taken
     * from the large free blocks that a VM's balloon with free page
     * reporting has handed back to the host, and every first touch of
     * those faults in the host (1 GiB written in 1 MiB writes took 0.8-2.2 s
     * of system time there, in 256 KiB writes 0.2-0.3 s). O_DIRECT writes
     * stay whole. */
    x.wmax = o[1].cache == FQ_CACHE_NONE || o[1].cache == FQ_CACHE_DIRECTSYNC ? 0 : WMAX_CACHED;
    /* at least a sector; a cluster for qcow2, which allocates whole ones */
    x.gran = a.sparse ? a.sparse < 512 ? 512 : a.sparse : 0;
    if (x.gran && fq_get_info(x.img[1], &in) == 0 && in.cluster_size > x.gran)
        x.gran = in.cluster_size;
    img_progress(&pg, 0, x.total, true);
    r = conv_run(&x, &pg) < 0;
    if (r == 0 && a.bitmaps && bitmaps_copy(x.img[0], x.img[1], a.skip_broken) < 0)
        r = 1;
out:
    if (xfer_close(&x) < 0 && r == 0) {
        tool_error("error while flushing %s", x.name[1]);
        r = 1;
    }
    if (r == 0 && pg.on) {
        img_progress(&pg, x.total, x.total, true);
        putchar('\n');
    }
    return r;
}
