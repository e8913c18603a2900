/* cmd_io.c: `fastqcow io`, a qemu-io compatible exerciser.
 *
 * Commands come from -c (in order) or, without -c, from stdin one per line
 * with qemu-io's "qemu-io> " prompt. Output lines, error texts and the exit
 * status follow qemu-io 7.2: a failing command prints its message and the
 * run goes on; the exit status is 1 if any command failed (a failed pattern
 * verification counts; aio_* count as successful once submitted).
 *
 * Beyond qemu-io, -R SEED on read/write/readv/writev/aio_* writes or checks
 * content that depends on SEED and on the absolute guest offset of each
 * byte (io_util.h). The vectored forms then use a "guarded" buffer: an
 * iovec array of odd-sized pieces with canary bytes between them, the
 * request starting part-way into the first iovec (non-zero iov_off) and an
 * extra iovec past its end, so a misplaced piece, a wrong iov_off or a
 * write outside the request is caught.
 * SPDX-License-Identifier: MIT
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "io_buf.h"
#include "io_fmt.h"
#include "io_util.h"
#include "tool.h"

#define MAX_REQ 2147483136ll /* qemu's per-request limit (INT_MAX & ~511) */
#define READ_FILL 0xab       /* read buffers start out with this byte */
#define WRITE_FILL 0xcd      /* default write pattern */

struct io {
    struct fq_image *img;
    struct fq_ctx *ctx;
    bool readonly;
    bool quit;
};

struct io_cmd {
    const char *name, *alt;
    int (*fn)(struct io *io, const struct io_cmd *ct, int argc, char **argv);
    int argmin, argmax;       /* argmax -1 = no limit */
    const char *args;         /* NULL: none shown */
    const char *oneline;
    const char *help;         /* extended help text, or NULL */
};

/* ---- read/write option parsing and shared steps ------------------------------ */

struct rwopts {
    bool C, q, v, P, R, z, u, n, f, c, inval, sflag, lflag;
    struct content d;         /* -P / -R / -s */
    int64_t pat_off, pat_len; /* read -s / -l */
};

static int usage(const struct io_cmd *ct)
{
    printf("%s %s -- %s\n", ct->name, ct->args ? ct->args : "", ct->oneline);
    return -EINVAL;
}

/* getopt over a command's argv into `o`. Returns 0 or -EINVAL (printed). */
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
        case 'i': o->inval = true; break;
        case 'p': break;
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
            return usage(ct);
        }
    }
    if (o->P && o->R) {
        printf("-P and -R cannot be specified at the same time\n");
        return -EINVAL;
    }
    if (is_write && (o->z + o->P + o->R + (o->d.src != NULL)) > 1) {
        printf(o->R ? "Only one of -z, -P, -R and -s can be specified at the same time\n"
                    : "Only one of -z, -P, and -s can be specified at the same time\n");
        return -EINVAL;
    }
    if (o->u && !o->z) {
        printf("-u requires -z to be specified\n");
        return -EINVAL;
    }
    if (o->n && !o->z) {
        printf("-n requires -z to be specified\n");
        return -EINVAL;
    }
    return 0;
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

/* qemu reports requests beyond the end of the image as EIO. */
static int range_ok(struct io *io, int64_t off, int64_t len)
{
    uint64_t size = fq_size(io->img);

    return (uint64_t)off <= size && (uint64_t)len <= size - (uint64_t)off;
}

static int check_writable(struct io *io)
{
    if (!io->readonly)
        return 0;
    fprintf(stderr, "fastqcow: Block node is read-only\n");
    return -EACCES;
}

/* ---- synchronous read/write commands ---------------------------------------- */

/* read, readv (vec) and write, writev share one body. */
static int rw_common(struct io *io, const struct io_cmd *ct, int argc, char **argv,
                     bool is_write, bool vec)
{
    const char *optstr = is_write ? (vec ? "CfqP:R:" : "cCfnpP:qs:uzR:")
                                  : (vec ? "CqvP:R:" : "Cl:pP:qs:vR:");
    const char *what = is_write ? (vec ? "writev" : "write") : (vec ? "readv" : "read");
    struct rwopts o;
    struct iobuf b = { 0 };
    int64_t off, *lens = NULL;
    int n, r;

    if ((r = parse_rwopts(ct, argc, argv, optstr, is_write, &o)) < 0)
        return r;
    if (vec ? optind > argc - 2 : optind != argc - 2)
        return usage(ct);
    if (vec) {
        if ((n = parse_off_lens(argv, optind, argc, &off, &lens)) < 0)
            return n;
    } else {
        lens = calloc(1, sizeof(*lens));
        n = 1;
        if (!lens)
            return -ENOMEM;
        if (getnum(argv[optind], &off) < 0 || getnum(argv[optind + 1], &lens[0]) < 0) {
            free(lens);
            return -EINVAL;
        }
        if (lens[0] > MAX_REQ && !(o.z && o.n)) {
            printf(is_write ? "length cannot exceed %lld without -n, given %s\n"
                            : "length cannot exceed %lld, given %s\n", MAX_REQ, argv[optind + 1]);
            free(lens);
            return -EINVAL;
        }
    }
    if (!is_write) {
        if (!o.P && (o.sflag || o.lflag)) {
            free(lens);
            return usage(ct);
        }
        int64_t total = 0;
        for (int i = 0; i < n; i++)
            total += lens[i];
        if (!o.lflag)
            o.pat_len = total - o.pat_off;
        if (o.pat_len < 0 || o.pat_off + o.pat_len > total) {
            printf("pattern verification range exceeds end of read data\n");
            free(lens);
            return -EINVAL;
        }
    } else if ((r = check_writable(io)) < 0) {
        free(lens);
        return r;
    }
    if (o.z) {
        b.len = (size_t)lens[0];
    } else {
        r = vec && o.R ? iobuf_guarded(&b, lens, n)
                       : iobuf_plain(&b, lens, n, is_write ? o.d.pattern : READ_FILL);
        if (r < 0) {
            free(lens);
            printf("%s failed: %s\n", what, strerror(-r));
            return r;
        }
        if (is_write && (r = iobuf_fill(&b, &o.d, off)) < 0)
            goto out;
    }
    if (o.c && !vec && (off % 512 || lens[0] % 512)) {
        /* qemu-io checks compressed writes for whole sectors first */
        printf("%s is not a sector-aligned value for '%s'\n", argv[optind + (off % 512 ? 0 : 1)],
               off % 512 ? "offset" : "count");
        r = -EINVAL;
        goto out;
    }
    struct timespec t0 = now();
    if (!range_ok(io, off, (int64_t)b.len))
        r = -EIO;
    else if (o.c && !o.z)
        r = fq_pwritev_compressed(io->img, b.iov, b.cnt, b.iov_off, b.len, (uint64_t)off);
    else if (o.z)
        r = fq_write_zeroes(io->img, (uint64_t)off, b.len, o.u ? FQ_ZERO_MAY_UNMAP : 0);
    else if (b.cnt == 1 && !b.iov_off)
        r = is_write ? fq_pwrite(io->img, b.iov[0].iov_base, b.len, (uint64_t)off)
                     : fq_pread(io->img, b.iov[0].iov_base, b.len, (uint64_t)off);
    else
        r = is_write ? fq_pwritev(io->img, b.iov, b.cnt, b.iov_off, b.len, (uint64_t)off)
                     : fq_preadv(io->img, b.iov, b.cnt, b.iov_off, b.len, (uint64_t)off);
    if (r >= 0 && is_write && o.f)
        r = fq_flush(io->img);
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

static int read_f(struct io *io, const struct io_cmd *ct, int argc, char **argv)
{
    return rw_common(io, ct, argc, argv, false, false);
}

static int readv_f(struct io *io, const struct io_cmd *ct, int argc, char **argv)
{
    return rw_common(io, ct, argc, argv, false, true);
}

static int write_f(struct io *io, const struct io_cmd *ct, int argc, char **argv)
{
    return rw_common(io, ct, argc, argv, true, false);
}

static int writev_f(struct io *io, const struct io_cmd *ct, int argc, char **argv)
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
    if ((r = parse_rwopts(ct, argc, argv, is_write ? "CfiqP:uzR:" : "CiqvP:R:", is_write, &a->o)) < 0)
        goto fail;
    if (optind > argc - 2) {
        r = usage(ct);
        goto fail;
    }
    if (a->o.inval) {
        printf("injecting invalid %s request\n", is_write ? "write" : "read");
        free(a);
        return 0;
    }
    if ((n = parse_off_lens(argv, optind, argc, &a->off, &lens)) < 0) {
        r = n;
        goto fail;
    }
    if (a->o.z && n != 1) {
        printf("-z supports only a single length parameter\n");
        r = -EINVAL;
        goto fail;
    }
    if (is_write && (r = check_writable(io)) < 0)
        goto fail;
    a->o.pat_len = 0;
    for (int i = 0; i < n; i++)
        a->o.pat_len += lens[i];
    if (a->o.z)
        a->b.len = (size_t)lens[0];
    else if ((r = a->o.R ? iobuf_guarded(&a->b, lens, n)
                         : iobuf_plain(&a->b, lens, n, is_write ? a->o.d.pattern : READ_FILL)) < 0)
        goto fail;
    if (is_write && !a->o.z)
        iobuf_fill(&a->b, &a->o.d, a->off);
    free(lens);
    a->t0 = now();
    if (!range_ok(io, a->off, (int64_t)a->b.len))
        r = -EIO;
    else if (a->o.z)
        r = fq_aio_write_zeroes(io->img, (uint64_t)a->off, a->b.len,
                                a->o.u ? FQ_ZERO_MAY_UNMAP : 0, aio_done, a);
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

static int aio_read_f(struct io *io, const struct io_cmd *ct, int argc, char **argv)
{
    return aio_common(io, ct, argc, argv, false);
}

static int aio_write_f(struct io *io, const struct io_cmd *ct, int argc, char **argv)
{
    return aio_common(io, ct, argc, argv, true);
}

/* Wait for every aio request in flight (printing their completions). */
static int drain(struct io *io)
{
    while (fq_ctx_inflight(io->ctx) > 0) {
        int r = fq_ctx_run(io->ctx, 1, -1);
        if (r < 0)
            return r;
    }
    return 0;
}

static int aio_flush_f(struct io *io, const struct io_cmd *ct, int argc, char **argv)
{
    return drain(io);
}

/* ---- other commands ---------------------------------------------------------------- */

static int flush_f(struct io *io, const struct io_cmd *ct, int argc, char **argv)
{
    int r = fq_flush(io->img);

    if (r < 0)
        printf("flush failed: %s\n", strerror(-r));
    return r;
}

static int discard_f(struct io *io, const struct io_cmd *ct, int argc, char **argv)
{
    struct rwopts o;
    int64_t off, len;
    int r;

    if ((r = parse_rwopts(ct, argc, argv, "Cq", false, &o)) < 0)
        return r;
    if (optind != argc - 2)
        return usage(ct);
    if (getnum(argv[optind], &off) < 0 || getnum(argv[optind + 1], &len) < 0)
        return -EINVAL;
    if (len > MAX_REQ) {
        printf("length cannot exceed %lld, given %s\n", MAX_REQ, argv[optind + 1]);
        return -EINVAL;
    }
    if ((r = check_writable(io)) < 0)
        return r;
    struct timespec t0 = now();
    r = range_ok(io, off, len) ? fq_discard(io->img, (uint64_t)off, (uint64_t)len) : -EIO;
    if (r < 0) {
        printf("discard failed: %s\n", strerror(-r));
        return r;
    }
    if (!o.q)
        print_report("discard", secs_since(t0), off, len, o.C);
    return 0;
}

/* Length of the run at `off` (at most len) whose allocation in the top
 * layer is uniform; *alloc gets that status. */
static int top_alloc_run(struct io *io, uint64_t off, uint64_t len, bool *alloc, uint64_t *run)
{
    struct fq_map_entry e;
    uint64_t done = 0;

    while (done < len) {
        int r = fq_map(io->img, off + done, len - done, &e);
        if (r < 0)
            return r;
        bool a = e.depth == 0 && (e.flags & FQ_MAP_ALLOCATED);
        if (done == 0)
            *alloc = a;
        else if (a != *alloc)
            break;
        if (e.length == 0)
            break;
        done += e.length < len - done ? e.length : len - done;
    }
    *run = done;
    return 0;
}

static int map_f(struct io *io, const struct io_cmd *ct, int argc, char **argv)
{
    uint64_t size = fq_size(io->img), off = 0, n;
    char s1[64], s2[64];
    bool alloc;

    while (off < size) {
        int r = top_alloc_run(io, off, size - off, &alloc, &n);
        if (r < 0 || n == 0) {
            fprintf(stderr, "fastqcow: Failed to get allocation status: %s\n", strerror(r < 0 ? -r : EIO));
            return r < 0 ? r : -EIO;
        }
        cvtstr((double)n, s1, sizeof(s1));
        cvtstr((double)off, s2, sizeof(s2));
        printf("%s (0x%" PRIx64 ") bytes %s at offset %s (0x%" PRIx64 ")\n", s1, n,
               alloc ? "    allocated" : "not allocated", s2, off);
        off += n;
    }
    return 0;
}

static int alloc_f(struct io *io, const struct io_cmd *ct, int argc, char **argv)
{
    int64_t off, count = 512;
    uint64_t size = fq_size(io->img), sum = 0, pos, rem, n;
    char s1[64];
    bool alloc;

    if (getnum(argv[1], &off) < 0 || (argc == 3 && getnum(argv[2], &count) < 0))
        return -EINVAL;
    for (pos = (uint64_t)off, rem = (uint64_t)count; rem > 0; pos += n, rem -= n) {
        if (pos >= size) {
            count -= (int64_t)rem;
            break;
        }
        int r = top_alloc_run(io, pos, rem < size - pos ? rem : size - pos, &alloc, &n);
        if (r < 0) {
            printf("is_allocated failed: %s\n", strerror(-r));
            return r;
        }
        if (alloc)
            sum += n;
    }
    cvtstr((double)off, s1, sizeof(s1));
    printf("%" PRIu64 "/%" PRId64 " bytes allocated at offset %s\n", sum, count, s1);
    return 0;
}

static int length_f(struct io *io, const struct io_cmd *ct, int argc, char **argv)
{
    char s[64];

    cvtstr((double)fq_size(io->img), s, sizeof(s));
    printf("%s\n", s);
    return 0;
}

static int info_f(struct io *io, const struct io_cmd *ct, int argc, char **argv)
{
    struct fq_info fi;
    char s1[64], s2[64];
    uint64_t vmso = 0;

    if (fq_get_info(io->img, &fi) < 0) {
        memset(&fi, 0, sizeof(fi));
        snprintf(fi.format, sizeof(fi.format), "%s", fq_format(io->img));
    }
    bool qcow2 = !strcmp(fi.format, "qcow2");
    if (qcow2 && fi.cluster_size) {
        /* qemu's VM state lives just past the guest range an L1 entry covers */
        uint64_t per_l1 = (uint64_t)fi.cluster_size * (fi.cluster_size / (fi.extended_l2 ? 16 : 8));
        vmso = (fi.virtual_size + per_l1 - 1) / per_l1 * per_l1;
    }
    cvtstr(fi.cluster_size, s1, sizeof(s1));
    cvtstr((double)vmso, s2, sizeof(s2));
    printf("format name: %s\ncluster size: %s\nvm state offset: %s\n", fi.format, s1, s2);
    if (!qcow2)
        return 0;
    printf("Format specific information:\n    compat: %s\n    compression type: %s\n",
           fi.version >= 3 ? "1.1" : "0.10", fi.compression_type ? "zstd" : "zlib");
    if (fi.version >= 3)
        printf("    lazy refcounts: %s\n", fi.lazy_refcounts ? "true" : "false");
    printf("    refcount bits: %d\n", fi.refcount_bits);
    if (fi.version >= 3)
        printf("    corrupt: %s\n    extended l2: %s\n", fi.corrupt ? "true" : "false",
               fi.extended_l2 ? "true" : "false");
    return 0;
}

static int sleep_f(struct io *io, const struct io_cmd *ct, int argc, char **argv)
{
    char *end;
    long ms = strtol(argv[1], &end, 0);

    if (ms < 0 || *end || !*argv[1]) {
        printf("%s is not a valid number\n", argv[1]);
        return -EINVAL;
    }
    struct timespec t0 = now();
    for (double left; (left = (double)ms / 1000 - secs_since(t0)) > 0;) {
        if (fq_ctx_inflight(io->ctx) > 0) {
            fq_ctx_run(io->ctx, 0, (int)(left * 1000) + 1);
        } else {
            struct timespec ts = { (time_t)left, (long)((left - (double)(time_t)left) * 1e9) };
            nanosleep(&ts, NULL);
        }
    }
    return 0;
}

static int quit_f(struct io *io, const struct io_cmd *ct, int argc, char **argv)
{
    io->quit = true;
    return 0;
}

static int help_f(struct io *io, const struct io_cmd *ct, int argc, char **argv);

#define RW_HELP_VERIFY " -R, -- seeded content: check every byte against SEED and its guest offset\n"
#define RW_HELP_FILL " -R, -- seeded content: fill every byte from SEED and its guest offset\n"

static const struct io_cmd cmds[] = {
    { "aio_flush", NULL, aio_flush_f, 0, 0, NULL, "completes all outstanding aio requests", NULL },
    { "aio_read", NULL, aio_read_f, 2, -1, "[-Ciqv] [-P pattern] off len [len..]",
      "asynchronously reads a number of bytes",
      " Reads asynchronously; completions are printed when they happen and aio_flush\n"
      " waits for all of them. A submitted request counts as successful.\n"
      " -C, -- report statistics in a machine parsable format\n"
      " -P, -- use a pattern to verify read data\n" RW_HELP_VERIFY
      " -i, -- treat request as invalid, for exercising stats\n"
      " -v, -- dump buffer to standard output\n"
      " -q, -- quiet mode, do not show I/O statistics\n" },
    { "aio_write", NULL, aio_write_f, 2, -1, "[-Cfiquz] [-P pattern] off len [len..]",
      "asynchronously writes a number of bytes",
      " Writes asynchronously; completions are printed when they happen and aio_flush\n"
      " waits for all of them. A submitted request counts as successful.\n"
      " -P, -- use different pattern to fill file\n" RW_HELP_FILL
      " -C, -- report statistics in a machine parsable format\n"
      " -f, -- use Force Unit Access semantics\n"
      " -i, -- treat request as invalid, for exercising stats\n"
      " -q, -- quiet mode, do not show I/O statistics\n"
      " -u, -- with -z, allow unmapping\n"
      " -z, -- write zeroes\n" },
    { "alloc", NULL, alloc_f, 1, 2, "offset [count]", "checks if offset is allocated in the file", NULL },
    { "discard", "d", discard_f, 2, -1, "[-Cq] off len", "discards a number of bytes at a specified offset",
      " -C, -- report statistics in a machine parsable format\n"
      " -q, -- quiet mode, do not show I/O statistics\n" },
    { "flush", "f", flush_f, 0, 0, NULL, "flush all in-core file state to disk", NULL },
    { "help", "?", help_f, 0, 1, "[command]", "help for one or all commands", NULL },
    { "info", "i", info_f, 0, 0, NULL, "prints information about the current file", NULL },
    { "length", "l", length_f, 0, 0, NULL, "gets the length of the current file", NULL },
    { "map", NULL, map_f, 0, 0, "", "prints the allocated areas of a file", NULL },
    { "quit", "q", quit_f, 0, -1, NULL, "exit the program", NULL },
    { "read", "r", read_f, 2, -1, "[-abCqv] [-P pattern [-s off] [-l len]] off len",
      "reads a number of bytes at a specified offset",
      " -C, -- report statistics in a machine parsable format\n"
      " -l, -- length for pattern verification (only with -P)\n"
      " -p, -- ignored for backwards compatibility\n"
      " -P, -- use a pattern to verify read data\n" RW_HELP_VERIFY
      " -q, -- quiet mode, do not show I/O statistics\n"
      " -s, -- start offset for pattern verification (only with -P)\n"
      " -v, -- dump buffer to standard output\n" },
    { "readv", NULL, readv_f, 2, -1, "[-Cqv] [-P pattern] off len [len..]",
      "reads a number of bytes at a specified offset",
      " Uses one buffer per length; with -R, odd-sized iovecs and a non-zero iov_off.\n"
      " -C, -- report statistics in a machine parsable format\n"
      " -P, -- use a pattern to verify read data\n" RW_HELP_VERIFY
      " -v, -- dump buffer to standard output\n"
      " -q, -- quiet mode, do not show I/O statistics\n" },
    { "sleep", NULL, sleep_f, 1, 1, NULL, "waits for the given value in milliseconds", NULL },
    { "write", "w", write_f, 2, -1, "[-bcCfnquz] [-P pattern | -s source_file] off len",
      "writes a number of bytes at a specified offset",
      " -c, -- write compressed data (whole clusters; qcow2)\n"
      " -f, -- use Force Unit Access semantics (write, then flush)\n"
      " -n, -- with -z, don't allow slow fallback\n"
      " -p, -- ignored for backwards compatibility\n"
      " -P, -- use different pattern to fill file\n" RW_HELP_FILL
      " -s, -- use a pattern file to fill the write buffer\n"
      " -C, -- report statistics in a machine parsable format\n"
      " -q, -- quiet mode, do not show I/O statistics\n"
      " -u, -- with -z, allow unmapping\n"
      " -z, -- write zeroes\n" },
    { "writev", NULL, writev_f, 2, -1, "[-Cfq] [-P pattern] off len [len..]",
      "writes a number of bytes at a specified offset",
      " Uses one buffer per length; with -R, odd-sized iovecs and a non-zero iov_off.\n"
      " -P, -- use different pattern to fill file\n" RW_HELP_FILL
      " -C, -- report statistics in a machine parsable format\n"
      " -f, -- use Force Unit Access semantics\n"
      " -q, -- quiet mode, do not show I/O statistics\n" },
};

static const struct io_cmd *find_cmd(const char *name)
{
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
        if (!strcmp(name, cmds[i].name) || (cmds[i].alt && !strcmp(name, cmds[i].alt)))
            return &cmds[i];
    return NULL;
}

static void help_oneline(const char *name, const struct io_cmd *ct)
{
    printf("%s ", name);
    if (ct->args)
        printf("%s ", ct->args);
    printf("-- %s\n", ct->oneline);
}

static int help_f(struct io *io, const struct io_cmd *ct, int argc, char **argv)
{
    if (argc == 1) {
        for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
            help_oneline(cmds[i].name, &cmds[i]);
        printf("\nUse 'help commandname' for extended help.\n");
        return 0;
    }
    const struct io_cmd *c = find_cmd(argv[1]);
    if (!c) {
        printf("command %s not found\n", argv[1]);
        return -EINVAL;
    }
    help_oneline(argv[1], c);
    if (c->help)
        printf("\n%s\n", c->help);
    return 0;
}

/* Split one command line on blanks and run it. Returns 0 or -errno. */
static int run_line(struct io *io, char *line)
{
    char *argv[256];
    int argc = 0;

    for (char *t = strtok(line, " \n"); t && argc < 255; t = strtok(NULL, " \n"))
        argv[argc++] = t;
    argv[argc] = NULL;
    if (argc == 0)
        return 0;
    const struct io_cmd *ct = find_cmd(argv[0]);
    if (!ct) {
        fprintf(stderr, "command \"%s\" not found\n", argv[0]);
        return -EINVAL;
    }
    int n = argc - 1;
    if (n < ct->argmin || (ct->argmax != -1 && n > ct->argmax)) {
        if (ct->argmax == -1)
            fprintf(stderr, "bad argument count %d to %s, expected at least %d arguments\n", n, argv[0], ct->argmin);
        else if (ct->argmin == ct->argmax)
            fprintf(stderr, "bad argument count %d to %s, expected %d arguments\n", n, argv[0], ct->argmin);
        else
            fprintf(stderr, "bad argument count %d to %s, expected between %d and %d arguments\n", n, argv[0],
                    ct->argmin, ct->argmax);
        return -EINVAL;
    }
    int r = ct->fn(io, ct, argc, argv);
    fflush(stdout);
    return r;
}

/* ---- stdin loop ----------------------------------------------------------------- */

/* Read one line from fd 0 into *buf; while waiting, aio completions are
 * delivered (and printed). Returns the line length, or -1 at EOF. */
static ssize_t next_line(struct io *io, char **buf, size_t *cap, size_t *have)
{
    for (;;) {
        char *nl = *have ? memchr(*buf, '\n', *have) : NULL;
        if (nl) {
            size_t n = (size_t)(nl - *buf);
            return (ssize_t)n;
        }
        if (*have + 4096 > *cap) {
            char *nb = realloc(*buf, *cap * 2 + 4096);
            if (!nb)
                return -1;
            *buf = nb;
            *cap = *cap * 2 + 4096;
        }
        int cfd = fq_ctx_inflight(io->ctx) > 0 ? fq_ctx_fd(io->ctx) : -1;
        if (fq_ctx_inflight(io->ctx) > 0) {
            struct pollfd p[2] = { { 0, POLLIN, 0 }, { cfd, POLLIN, 0 } };
            int pr = poll(p, cfd >= 0 ? 2 : 1, cfd >= 0 ? -1 : 10);
            if (pr >= 0 && !(p[0].revents & (POLLIN | POLLHUP | POLLERR))) {
                fq_ctx_run(io->ctx, 0, 0);
                fflush(stdout);
                continue;
            }
        }
        ssize_t r = read(0, *buf + *have, *cap - *have);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            if (*have == 0)
                return -1;
            (*buf)[*have] = '\n'; /* last line without newline */
            (*have)++;
            continue;
        }
        *have += (size_t)r;
    }
}

static int stdin_loop(struct io *io)
{
    size_t cap = 0, have = 0;
    char *buf = NULL;
    int failed = 0;
    ssize_t n;

    for (;;) {
        fputs("qemu-io> ", stdout);
        fflush(stdout);
        if ((n = next_line(io, &buf, &cap, &have)) < 0)
            break;
        char *line = strndup(buf, (size_t)n);
        memmove(buf, buf + n + 1, have - (size_t)n - 1);
        have -= (size_t)n + 1;
        if (!line || run_line(io, line) < 0)
            failed = 1;
        free(line);
        if (io->quit)
            break;
    }
    free(buf);
    return failed;
}

/* ---- entry point -------------------------------------------------------------- */

static void io_usage(FILE *f)
{
    fprintf(f,
            "usage: fastqcow io [OPTIONS]... [-c STRING]... FILE\n"
            "qemu-io compatible disk exerciser. Without -c, commands are read from stdin.\n\n"
            "  -c, --cmd STRING     execute command with its arguments (repeatable)\n"
            "  -f, --format FMT     image format (qcow2, raw; probed by default)\n"
            "  -r, --read-only      open read-only\n"
            "  -n, --nocache        disable host cache, short for -t none (as qemu-io)\n"
            "  -k, --native-aio     use io_uring, short for -i io_uring\n"
            "  -i, --aio=MODE       I/O engine: io_uring (native), threads, sync\n"
            "  -t, --cache=MODE     none, writeback, writethrough (default), directsync, unsafe\n"
            "  -W, --workers=N      extents in flight per request (0 = library default)\n"
            "  -U, --force-share    accepted for compatibility\n"
            "  -h, --help           display this help and exit\n\n"
            "Run 'fastqcow io -c help FILE' for the commands. Beyond qemu-io, read, write,\n"
            "readv, writev, aio_read and aio_write take -R SEED: content depending on SEED\n"
            "and on each byte's guest offset, so data at a wrong place is caught.\n");
}

int cmd_io(int argc, char **argv)
{
    static const struct option lopts[] = {
        { "cmd", required_argument, NULL, 'c' },      { "format", required_argument, NULL, 'f' },
        { "read-only", no_argument, NULL, 'r' },      { "nocache", no_argument, NULL, 'n' },
        { "native-aio", no_argument, NULL, 'k' },     { "aio", required_argument, NULL, 'i' },
        { "cache", required_argument, NULL, 't' },    { "workers", required_argument, NULL, 'W' },
        { "force-share", no_argument, NULL, 'U' },    { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    struct fq_open_opts oo;
    struct io io = { 0 };
    char **cmdv = calloc((size_t)argc + 1, sizeof(char *));
    char err[FQ_ERR_MAX] = "";
    int ncmd = 0, c, failed = 0;
    uint64_t w;

    if (!cmdv)
        return 1;
    fq_open_opts_init(&oo);
    oo.cache = FQ_CACHE_WRITETHROUGH; /* qemu-io's default */
    optind = 0;
    while ((c = getopt_long(argc, argv, "+c:f:rnki:t:W:Uh", lopts, NULL)) != -1) {
        switch (c) {
        case 'c': cmdv[ncmd++] = optarg; break;
        case 'f': oo.format = optarg; break;
        case 'r': oo.readonly = 1; break;
        case 'n': oo.cache = FQ_CACHE_NONE; break;
        case 'k': oo.engine = FQ_ENGINE_IO_URING; break;
        case 'U': break;
        case 'i':
            if (fq_engine_parse(optarg, &oo.engine) < 0) {
                tool_error("Invalid aio option: %s", optarg);
                goto fail;
            }
            break;
        case 't':
            if (fq_cache_parse(optarg, &oo.cache) < 0) {
                tool_error("Invalid cache option: %s", optarg);
                goto fail;
            }
            break;
        case 'W':
            if (tool_parse_size(optarg, &w, "worker count") < 0 || w > 65536)
                goto fail;
            oo.max_workers = (unsigned)w;
            break;
        case 'h':
            io_usage(stdout);
            free(cmdv);
            return 0;
        default:
            io_usage(stderr);
            goto fail;
        }
    }
    if (optind != argc - 1) {
        tool_error(optind < argc ? "io: expecting one image file name" : "io: no image file given");
        goto fail;
    }
    int r = fq_open(argv[optind], &oo, &io.img, err);
    if (r < 0) {
        tool_error("can't open device %s: %s", argv[optind], *err ? err : strerror(-r));
        goto fail;
    }
    io.ctx = fq_image_ctx(io.img);
    io.readonly = oo.readonly;
    if (ncmd) {
        for (int i = 0; i < ncmd && !io.quit; i++) {
            char *line = strdup(cmdv[i]);
            if (!line || run_line(&io, line) < 0)
                failed = 1;
            free(line);
        }
    } else {
        failed = stdin_loop(&io);
    }
    drain(&io);
    fflush(stdout);
    r = fq_close(io.img);
    if (r < 0) {
        tool_error("closing %s: %s", argv[optind], strerror(-r));
        failed = 1;
    }
    free(cmdv);
    return failed;
fail:
    free(cmdv);
    return 1;
}
