/* io/requests.c: the request commands of `fastqcow io`: read, readv, write,
 * writev, aio_read, aio_write, aio_flush, flush and discard, and the
 * option parsing they share.
 *
 * Each checks its options and range in qemu-io 7.2's order with its
 * messages and prints its report lines; a request beyond the end of the
 * image fails with EIO, as in qemu. aio_* requests complete from the
 * context loop (aio_done), which the interpreter runs while it waits for
 * input, in sleep and in aio_flush.
 *
 * What the image was opened with shapes the requests as in qemu: -b reads
 * and writes the VM state area (fq_vmstate_*), copy-on-read (-C) first
 * copies into the top image the clusters a read covers that it does not
 * allocate, detect-zeroes turns all-zero writes into write-zeroes, and
 * discard=ignore (-d) makes discards do nothing.
 *
 * Beyond qemu-io, -R SEED on read/write/readv/writev/aio_* writes or checks
 * content that depends on SEED and on the absolute guest offset of each
 * byte (common/seeded.h). The vectored forms then use a "guarded" buffer: an
 * iovec array of odd-sized pieces with canary bytes between them, the
 * request starting part-way into the first iovec (non-zero iov_off) and an
 * extra iovec past its end, so a misplaced piece, a wrong iov_off or a
 * write outside the request is caught (buffers.h).
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../common/seeded.h"
#include "buffers.h"
#include "commands.h"
#include "format.h"

#define MAX_REQ 2147483136ll /* qemu's per-request limit (INT_MAX & ~511) */
#define READ_FILL 0xab       /* read buffers start out with this byte */
#define WRITE_FILL 0xcd      /* default write pattern */
#define COR_CHUNK (16u << 20) /* copy-on-read copies at most this much at once */

/* ---- option parsing and shared steps ------------------------------------------ */

struct rwopts {
    bool C, q, v, P, R, z, u, n, f, c, b, sflag, lflag;
    struct content d;         /* -P / -R / -s */
    int64_t pat_off, pat_len; /* read -s / -l */
};

/* getopt over a command's argv into `o`; values are parsed (and refused,
 * with qemu-io's message) as they come. aio's -i ends the command at once
 * (returns 1). Returns 0, 1 or -EINVAL (printed). */
static int parse_rwopts(const struct io_cmd *ct, int argc, char **argv, const char *optstr,
                        bool is_write, struct rwopts *o)
{
    char *end;
    int c;

    memset(o, 0, sizeof(*o));
    o->d.pattern = is_write ? WRITE_FILL : 0;
    optind = 0;
    while ((c = getopt(argc, argv, optstr)) != -1) {
        switch (c) {
        case 'C': o->C = true; break;
        case 'q': o->q = true; break;
        case 'v': o->v = true; break;
        case 'z': o->z = true; break;
        case 'u': o->u = true; break;
        case 'n': o->n = true; break;
        case 'f': o->f = true; break;
        case 'c': o->c = true; break;
        case 'b': o->b = true; break;
        case 'p': break;
        case 'i':
            printf("injecting invalid %s request\n", is_write ? "write" : "read");
            return 1;
        case 'P':
            o->P = true;
            if ((o->d.pattern = parse_pattern(optarg)) < 0)
                return -EINVAL;
            break;
        case 'R':
            o->R = o->d.R = true;
            errno = 0;
            o->d.seed = strtoull(optarg, &end, 0);
            if (!*optarg || *end || errno || *optarg == '-') {
                printf("%s is not a valid seed\n", optarg);
                return -EINVAL;
            }
            break;
        case 's':
            o->sflag = true;
            if (is_write)
                o->d.src = optarg;
            else if (getnum(optarg, &o->pat_off) < 0)
                return -EINVAL;
            break;
        case 'l':
            o->lflag = true;
            if (getnum(optarg, &o->pat_len) < 0)
                return -EINVAL;
            break;
        default:
            return io_usage(ct);
        }
    }
    if (o->P && o->R) {
        printf("-P and -R cannot be specified at the same time\n");
        return -EINVAL;
    }
    return 0;
}

/* write's checks of its flags, in qemu-io's order. */
static int check_write_flags(const struct rwopts *o)
{
    const char *msg = NULL;

    if (o->b && o->z)
        msg = "-b and -z cannot be specified at the same time";
    else if (o->f && (o->b || o->c))
        msg = "-f and -b or -c cannot be specified at the same time";
    else if (o->n && !o->z)
        msg = "-n requires -z to be specified";
    else if (o->u && !o->z)
        msg = "-u requires -z to be specified";
    else if (o->z + o->P + o->R + (o->d.src != NULL) > 1)
        msg = o->R ? "Only one of -z, -P, -R and -s can be specified at the same time"
                   : "Only one of -z, -P, and -s can be specified at the same time";
    if (msg)
        printf("%s\n", msg);
    return msg ? -EINVAL : 0;
}

/* Offset then one or more lengths from argv[first..argc). Returns the
 * number of lengths or -EINVAL (printed). */
static int parse_off_lens(char **argv, int first, int argc, int64_t *off, int64_t **lens)
{
    int n = argc - first - 1;
    int64_t total = 0;

    if (getnum(argv[first], off) < 0)
        return -EINVAL;
    *lens = calloc((size_t)n, sizeof(**lens));
    if (!*lens)
        return -ENOMEM;
    for (int i = 0; i < n; i++) {
        const char *a = argv[first + 1 + i];
        if (getnum(a, &(*lens)[i]) < 0)
            goto fail;
        if ((*lens)[i] > MAX_REQ) {
            printf("Argument '%s' exceeds maximum size %lld\n", a, MAX_REQ);
            goto fail;
        }
        if (total > MAX_REQ - (*lens)[i]) {
            printf("The total number of bytes exceed the maximum size %lld\n", MAX_REQ);
            goto fail;
        }
        total += (*lens)[i];
    }
    return n;
fail:
    free(*lens);
    *lens = NULL;
    return -EINVAL;
}

/* The sector alignment -b and -c need. Returns 0 or -EINVAL (printed). */
static int check_sectors(int64_t off, int64_t len)
{
    if (off % 512) {
        printf("%" PRId64 " is not a sector-aligned value for 'offset'\n", off);
        return -EINVAL;
    }
    if (len % 512) {
        printf("%" PRId64 " is not a sector-aligned value for 'count'\n", len);
        return -EINVAL;
    }
    return 0;
}

/* qemu reports requests beyond the end of the image as EIO. */
static int range_ok(struct io *io, int64_t off, int64_t len)
{
    uint64_t size = fq_size(io->img);

    return (uint64_t)off <= size && (uint64_t)len <= size - (uint64_t)off;
}

/* The buffer of a request: guarded for -R on the vectored forms. */
static int alloc_buf(struct io *io, struct iobuf *b, const struct rwopts *o, const int64_t *lens,
                     int n, bool vec, bool is_write)
{
    if (vec && o->R)
        return iobuf_guarded(b, lens, n);
    return iobuf_plain(b, lens, n, is_write ? o->d.pattern : READ_FILL, io->misalign);
}

/* True if the request's data is all zero (detect-zeroes). */
static bool buf_is_zero(const struct iobuf *b)
{
    for (int i = 0; i < b->cnt; i++) {
        const uint8_t *p = b->iov[i].iov_base;
        size_t from = i == 0 ? b->iov_off : 0;
        for (size_t j = from; j < b->iov[i].iov_len; j++)
            if (p[j])
                return false;
    }
    return true;
}

/* The write-zeroes flags of -u or detect-zeroes=unmap (discard=ignore
 * does not stop them, as in qemu-io). */
static unsigned zero_flags(bool unmap)
{
    return unmap ? FQ_ZERO_MAY_UNMAP : 0;
}

/* Copy-on-read (-C): before a read of [off, off+len), copy into the top
 * image every run of whole clusters it does not allocate itself, as the
 * chain reads it: runs of zeros as write-zeroes, others as data. */
static int cor_fill(struct io *io, uint64_t off, uint64_t len)
{
    struct fq_info fi;
    uint64_t size = fq_size(io->img);

    if (io->readonly || len == 0 || fq_get_info(io->img, &fi) < 0 || !fi.cluster_size)
        return 0;   /* raw: the image allocates everything */
    uint64_t cs = fi.cluster_size, pos = off / cs * cs;
    uint64_t end = MIN((off + len + cs - 1) / cs * cs, size);
    uint8_t *buf = NULL;
    int r = 0;

    while (pos < end && r == 0) {
        uint64_t run;
        bool alloc;
        if ((r = io_top_alloc_run(io, pos, end - pos, &alloc, &run)) < 0 || run == 0)
            break;
        for (uint64_t done = 0; !alloc && done < run && r == 0;) {
            size_t n = (size_t)MIN(run - done, COR_CHUNK);
            if (!buf && !(buf = malloc(COR_CHUNK)))
                return -ENOMEM;
            if ((r = fq_pread(io->img, buf, n, pos + done)) < 0)
                break;
            bool zero = buf[0] == 0 && !memcmp(buf, buf + 1, n - 1);
            r = zero ? fq_write_zeroes(io->img, pos + done, n, 0) : fq_pwrite(io->img, buf, n, pos + done);
            done += n;
        }
        pos += run;
    }
    free(buf);
    return r;
}

/* ---- synchronous read/write commands ---------------------------------------- */

/* The I/O of a synchronous read or write, as its options say. */
static int rw_io(struct io *io, const struct rwopts *o, struct iobuf *b, int64_t off, bool is_write)
{
    int r;

    if (o->b)
        return is_write ? fq_vmstate_pwrite(io->img, b->iov[0].iov_base, b->len, (uint64_t)off)
                        : fq_vmstate_pread(io->img, b->iov[0].iov_base, b->len, (uint64_t)off);
    if (!range_ok(io, off, (int64_t)b->len))
        return -EIO;
    if (o->z)
        return fq_write_zeroes(io->img, (uint64_t)off, b->len, zero_flags(o->u));
    if (o->c)
        return fq_pwritev_compressed(io->img, b->iov, b->cnt, b->iov_off, b->len, (uint64_t)off);
    if (!is_write && io->cor && (r = cor_fill(io, (uint64_t)off, b->len)) < 0)
        return r;
    if (is_write && io->detect_zeroes && buf_is_zero(b))
        r = fq_write_zeroes(io->img, (uint64_t)off, b->len, zero_flags(io->detect_zeroes == 2));
    else if (b->cnt == 1 && !b->iov_off)
        r = is_write ? fq_pwrite(io->img, b->iov[0].iov_base, b->len, (uint64_t)off)
                     : fq_pread(io->img, b->iov[0].iov_base, b->len, (uint64_t)off);
    else
        r = is_write ? fq_pwritev(io->img, b->iov, b->cnt, b->iov_off, b->len, (uint64_t)off)
                     : fq_preadv(io->img, b->iov, b->cnt, b->iov_off, b->len, (uint64_t)off);
    if (r >= 0 && is_write && o->f)
        r = fq_flush(io->img);
    return r;
}

/* The checks of read and write (not vectored) after their options. */
static int rw_single_args(const struct io_cmd *ct, int argc, char **argv, struct rwopts *o,
                          bool is_write, int64_t *off, int64_t *len)
{
    if (optind != argc - 2)
        return io_usage(ct);
    if (is_write && check_write_flags(o) < 0)
        return -EINVAL;
    if (getnum(argv[optind], off) < 0 || getnum(argv[optind + 1], len) < 0)
        return -EINVAL;
    if (*len > MAX_REQ && !(o->z && o->n)) {
        printf(is_write ? "length cannot exceed %lld without -n, given %s\n"
                        : "length cannot exceed %lld, given %s\n", MAX_REQ, argv[optind + 1]);
        return -EINVAL;
    }
    if (!is_write) {
        if (!o->P && (o->sflag || o->lflag))
            return io_usage(ct);
        if (!o->lflag)
            o->pat_len = *len - o->pat_off;
        if (o->pat_len < 0 || o->pat_off + o->pat_len > *len) {
            printf("pattern verification range exceeds end of read data\n");
            return -EINVAL;
        }
    }
    if ((o->b || (is_write && o->c)) && check_sectors(*off, *len) < 0)
        return -EINVAL;
    return 0;
}

/* read, readv (vec) and write, writev share one body. */
static int rw_common(struct io *io, const struct io_cmd *ct, int argc, char **argv,
                     bool is_write, bool vec)
{
    const char *optstr = is_write ? (vec ? "CfqP:R:" : "bcCfnpP:qs:uzR:")
                                  : (vec ? "CqvP:R:" : "bCl:pP:qs:vR:");
    const char *what = is_write ? (vec ? "writev" : "write") : (vec ? "readv" : "read");
    struct rwopts o;
    struct iobuf b = { 0 };
    int64_t off, *lens = NULL;
    int n, r;

    if ((r = parse_rwopts(ct, argc, argv, optstr, is_write, &o)) < 0)
        return r;
    if (vec) {
        if (optind > argc - 2)
            return io_usage(ct);
        if ((n = parse_off_lens(argv, optind, argc, &off, &lens)) < 0)
            return n;
        o.pat_len = 0;
        for (int i = 0; i < n; i++)
            o.pat_len += lens[i];
    } else {
        if (!(lens = calloc(1, sizeof(*lens))))
            return -ENOMEM;
        n = 1;
        if ((r = rw_single_args(ct, argc, argv, &o, is_write, &off, &lens[0])) < 0) {
            free(lens);
            return r;
        }
    }
    if (o.z) {
        b.len = (size_t)lens[0];
    } else {
        r = alloc_buf(io, &b, &o, lens, n, vec, is_write);
        if (r < 0) {
            free(lens);
            printf("%s failed: %s\n", what, strerror(-r));
            return r;
        }
        if (is_write && (r = iobuf_fill(&b, &o.d, off)) < 0)
            goto out;
    }
    struct timespec t0 = now();
    r = rw_io(io, &o, &b, off, is_write);
    double t = secs_since(t0);
    if (r < 0) {
        printf("%s failed: %s\n", what, strerror(-r));
        goto out;
    }
    r = 0;
    if (!is_write)
        r = iobuf_verify(&b, &o.d, o.P, off, o.pat_off, o.pat_len);
    if (!o.q) {
        if (!is_write && o.v)
            iobuf_dump(&b, off);
        print_report(is_write ? "wrote" : "read", t, off, (int64_t)b.len, o.C);
    }
out:
    iobuf_free(&b);
    free(lens);
    return r;
}

int read_f(struct io *io, const struct io_cmd *ct, int argc, char **argv)
{
    return rw_common(io, ct, argc, argv, false, false);
}

int readv_f(struct io *io, const struct io_cmd *ct, int argc, char **argv)
{
    return rw_common(io, ct, argc, argv, false, true);
}

int write_f(struct io *io, const struct io_cmd *ct, int argc, char **argv)
{
    return rw_common(io, ct, argc, argv, true, false);
}

int writev_f(struct io *io, const struct io_cmd *ct, int argc, char **argv)
{
    return rw_common(io, ct, argc, argv, true, true);
}

/* ---- asynchronous commands ------------------------------------------------------ */

struct aioreq {
    struct io *io;
    bool write, flushing;
    struct rwopts o;
    struct iobuf b;
    int64_t off;
    struct timespec t0;
};

/* Completion of aio_read / aio_write: verify and print, like qemu-io. */
static void aio_done(void *opaque, int ret)
{
    struct aioreq *a = opaque;

    if (ret >= 0 && a->write && a->o.f && !a->flushing) {
        a->flushing = true;
        ret = fq_aio_flush(a->io->img, aio_done, a);
        if (ret == 0)
            return;
    }
    double t = secs_since(a->t0);
    if (ret < 0) {
        printf("%s failed: %s\n", a->write ? "aio_write" : "readv", strerror(-ret));
    } else {
        if (!a->write)
            iobuf_verify(&a->b, &a->o.d, a->o.P, a->off, 0, (int64_t)a->b.len);
        if (!a->o.q) {
            if (!a->write && a->o.v)
                iobuf_dump(&a->b, a->off);
            print_report(a->write ? "wrote" : "read", t, a->off, (int64_t)a->b.len, a->o.C);
        }
    }
    iobuf_free(&a->b);
    free(a);
}

/* aio_write's checks after its options, in qemu-io's order. */
static int aio_write_args(const struct rwopts *o, int argc)
{
    const char *msg = NULL;

    if (o->z && (o->P || o->R))
        msg = "-z and -P cannot be specified at the same time";
    else if (o->u && !o->z)
        msg = "-u requires -z to be specified";
    else if (o->z && optind != argc - 2)
        msg = "-z supports only a single length parameter";
    if (msg)
        printf("%s\n", msg);
    return msg ? -EINVAL : 0;
}

static int aio_common(struct io *io, const struct io_cmd *ct, int argc, char **argv, bool is_write)
{
    struct aioreq *a;
    int64_t *lens = NULL;
    int n, r;

    a = calloc(1, sizeof(*a));
    if (!a)
        return -ENOMEM;
    a->io = io;
    a->write = is_write;
    r = parse_rwopts(ct, argc, argv, is_write ? "CfiqP:uzR:" : "CiqvP:R:", is_write, &a->o);
    if (r == 1) {   /* -i */
        free(a);
        return 0;
    }
    if (r < 0)
        goto fail;
    if (optind > argc - 2) {
        r = io_usage(ct);
        goto fail;
    }
    if (is_write && (r = aio_write_args(&a->o, argc)) < 0)
        goto fail;
    if ((n = parse_off_lens(argv, optind, argc, &a->off, &lens)) < 0) {
        r = n;
        goto fail;
    }
    a->o.pat_len = 0;
    for (int i = 0; i < n; i++)
        a->o.pat_len += lens[i];
    if (a->o.z)
        a->b.len = (size_t)lens[0];
    else if ((r = alloc_buf(io, &a->b, &a->o, lens, n, true, is_write)) < 0)
        goto fail;
    if (is_write && !a->o.z)
        iobuf_fill(&a->b, &a->o.d, a->off);
    free(lens);
    if (!is_write && io->cor && range_ok(io, a->off, (int64_t)a->b.len))
        cor_fill(io, (uint64_t)a->off, a->b.len);
    bool zero = a->o.z || (is_write && io->detect_zeroes && buf_is_zero(&a->b));
    a->t0 = now();
    if (!range_ok(io, a->off, (int64_t)a->b.len))
        r = -EIO;
    else if (zero)
        r = fq_aio_write_zeroes(io->img, (uint64_t)a->off, a->b.len,
                                zero_flags(a->o.z ? a->o.u : io->detect_zeroes == 2), aio_done, a);
    else if (is_write)
        r = fq_aio_pwritev(io->img, a->b.iov, a->b.cnt, a->b.iov_off, a->b.len, (uint64_t)a->off,
                           aio_done, a);
    else
        r = fq_aio_preadv(io->img, a->b.iov, a->b.cnt, a->b.iov_off, a->b.len, (uint64_t)a->off,
                          aio_done, a);
    if (r < 0) /* reported as the completion would be; still "submitted" */
        aio_done(a, r);
    return 0;
fail:
    free(lens);
    iobuf_free(&a->b);
    free(a);
    return r;
}

int aio_read_f(struct io *io, const struct io_cmd *ct, int argc, char **argv)
{
    return aio_common(io, ct, argc, argv, false);
}

int aio_write_f(struct io *io, const struct io_cmd *ct, int argc, char **argv)
{
    return aio_common(io, ct, argc, argv, true);
}

int io_drain(struct io *io)
{
    while (io->ctx && fq_ctx_inflight(io->ctx) > 0) {
        int r = fq_ctx_run(io->ctx, 1, -1);
        if (r < 0)
            return r;
    }
    return 0;
}

int aio_flush_f(struct io *io, const struct io_cmd *ct, int argc, char **argv)
{
    return io_drain(io);
}

/* ---- flush and discard ------------------------------------------------------------ */

int flush_f(struct io *io, const struct io_cmd *ct, int argc, char **argv)
{
    int r = fq_flush(io->img);

    if (r < 0)
        printf("flush failed: %s\n", strerror(-r));
    return r;
}

int discard_f(struct io *io, const struct io_cmd *ct, int argc, char **argv)
{
    struct rwopts o;
    int64_t off, len;
    int r;

    if ((r = parse_rwopts(ct, argc, argv, "Cq", false, &o)) < 0)
        return r;
    if (optind != argc - 2)
        return io_usage(ct);
    if (getnum(argv[optind], &off) < 0 || getnum(argv[optind + 1], &len) < 0)
        return -EINVAL;
    if (len > MAX_REQ) {
        printf("length cannot exceed %lld, given %s\n", MAX_REQ, argv[optind + 1]);
        return -EINVAL;
    }
    struct timespec t0 = now();
    if (!range_ok(io, off, len))
        r = -EIO;
    else if (io->unmap)   /* discard=ignore: nothing is done, as in qemu */
        r = fq_discard(io->img, (uint64_t)off, (uint64_t)len);
    if (r < 0) {
        printf("discard failed: %s\n", strerror(-r));
        return r;
    }
    if (!o.q)
        print_report("discard", secs_since(t0), off, len, o.C);
    return 0;
}
