/* bench.c: `fastqcow bench`, compatible with `qemu-img bench` 7.2
 * (options, defaults, the two printed lines), plus --workers (extents in
 * flight per request), --random[=SEED] (random step-aligned offsets) and
 * --warm-metadata (read every L2 table before the timed run, so that a
 * cache that holds them all is measured warm).
 *
 * DEPTH requests are kept in flight through the aio API: each completion
 * callback submits the next request from a preallocated slot, so the tool
 * adds no allocation or copy per request. Sequential offsets start at -o
 * and advance by the step, wrapping modulo the image size as qemu-img does
 * (a request that then crosses the end fails, as there).
 *
 * Flushes (--flush-interval=N, writes only): by default the queue is
 * drained after every N requests, then one flush runs alone; with
 * --no-drain a flush is sent after every N-th request while I/O goes on.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/args.h"
#include "common/blockopts.h"
#include "common/cli.h"
#include "common/seeded.h"
#include "subcommands.h"

struct bench;

struct slot {
    struct bench *b;
    struct iovec iov;
};

struct bench {
    struct fq_image *img;
    struct fq_ctx *ctx;
    bool write, drain, random;
    uint64_t count, issued, done;
    unsigned depth, inflight;
    uint64_t start, off, step, bufsize, size;
    uint64_t rng, nrand;          /* --random: state, number of offsets */
    uint64_t flush_interval, next_flush;
    bool flushing;                /* drain mode: the flush is in flight */
    struct slot *slots;
    struct slot **free;           /* stack of idle slots */
    uint8_t *arena;               /* every slot's buffer (fq_buf_alloc) */
    unsigned nslots, nfree;
    int err;
};

static void pump(struct bench *b);

static void warm_done(void *opaque, int ret)
{
    int *err = opaque;

    if (ret < 0 && !*err)
        *err = ret;
}

static void fail(struct bench *b, int err)
{
    if (!b->err)
        b->err = err;
}

static void req_done(void *opaque, int ret)
{
    struct slot *s = opaque;
    struct bench *b = s->b;

    if (ret < 0)
        fail(b, ret);
    b->inflight--;
    b->done++;
    b->free[b->nfree++] = s;
    pump(b);
}

static void flush_done(void *opaque, int ret)
{
    struct bench *b = opaque;

    if (ret < 0)
        fail(b, ret);
    if (b->drain && b->flushing) {
        b->flushing = false;
        b->next_flush += b->flush_interval;
        pump(b);
    }
}

/* The offset of the next request. */
static uint64_t next_offset(struct bench *b)
{
    if (b->random)
        return b->start + fqio_rand_below(&b->rng, b->nrand) * b->step;
    uint64_t off = b->off;
    b->off = b->size ? (b->off + b->step) % b->size : 0;
    return off;
}

/* Submit requests until DEPTH are in flight, the count is reached, or a
 * drained flush is due (which is sent once the queue is empty). */
static void pump(struct bench *b)
{
    while (!b->err && b->issued < b->count) {
        if (b->flush_interval && b->drain && b->issued == b->next_flush) {
            if (b->inflight == 0 && !b->flushing) {
                b->flushing = true;
                int r = fq_aio_flush(b->img, flush_done, b);
                if (r < 0)
                    fail(b, r);
            }
            return;
        }
        if (b->inflight >= b->depth)
            return;
        struct slot *s = b->free[--b->nfree];
        uint64_t off = next_offset(b);
        int r;
        if (off > b->size || b->bufsize > b->size - off)
            r = -EIO; /* beyond the end, as qemu reports it */
        else if (b->write)
            r = fq_aio_pwritev(b->img, &s->iov, 1, 0, b->bufsize, off, req_done, s);
        else
            r = fq_aio_preadv(b->img, &s->iov, 1, 0, b->bufsize, off, req_done, s);
        if (r < 0) {
            b->free[b->nfree++] = s;
            fail(b, r);
            return;
        }
        b->inflight++;
        b->issued++;
        if (b->flush_interval && !b->drain && b->issued % b->flush_interval == 0) {
            r = fq_aio_flush(b->img, flush_done, b);
            if (r < 0)
                fail(b, r);
        }
    }
}

/* --warm-metadata: read 512 bytes in every stretch of the disk one L2
 * table maps, 32 at a time, before timing: the cache then holds every
 * table it can. Returns 0 or -errno. */
static int warm_metadata(struct bench *b)
{
    struct fq_info in;
    struct iovec v[32];
    int err = 0, inflight = 0;
    uint8_t *buf = NULL;

    if (fq_get_info(b->img, &in) < 0 || !in.cluster_size)
        return 0;          /* nothing to warm (raw) */
    uint64_t span = (uint64_t)in.cluster_size * (in.cluster_size / (in.extended_l2 ? 16 : 8));
    if (posix_memalign((void **)&buf, 4096, 32 * 4096))
        return -ENOMEM;
    for (uint64_t off = 0; off < b->size && !err;) {
        while (inflight < 32 && off < b->size) {
            v[inflight] = (struct iovec){ buf + inflight * 4096, 512 };
            int r = fq_aio_preadv(b->img, &v[inflight], 1, 0, MIN(512, b->size - off), off,
                                  warm_done, &err);
            if (r < 0) {
                err = r;
                break;
            }
            inflight++;
            off += span;
        }
        while (fq_ctx_inflight(b->ctx) > 0)
            if (fq_ctx_run(b->ctx, 1, -1) < 0)
                break;
        inflight = 0;
    }
    free(buf);
    return err;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: fastqcow bench [-c count] [-d depth] [-f fmt] [--flush-interval=N] [-i aio] [-n]\n"
            "                      [--no-drain] [-o offset] [--pattern=N] [-q] [-s buffer_size]\n"
            "                      [-S step_size] [-t cache] [-w] [-U] [--workers N] [--random[=SEED]]\n"
            "                      FILE\n"
            "Run a simple read or write benchmark (qemu-img bench compatible).\n\n"
            "  -c COUNT            number of requests (default 75000)\n"
            "  -d DEPTH            requests in flight (default 64)\n"
            "  -f FMT              image format (qcow2, raw; probed by default)\n"
            "  -i AIO              I/O engine: native (io_uring; small operations on tmpfs\n"
            "                      inline), io_uring (every operation), threads, sync\n"
            "  -n                  native AIO, same as -i native\n"
            "  -o OFFSET           offset of the first request (default 0)\n"
            "  -s BUFFER_SIZE      bytes per request (default 4K)\n"
            "  -S STEP_SIZE        offset increment between requests (default = buffer size);\n"
            "                      offsets wrap around at the end of the image\n"
            "  -t CACHE            none, writeback (default), writethrough, directsync, unsafe\n"
            "  -w                  write instead of read\n"
            "  --pattern=N         byte written with -w (default 0)\n"
            "  --flush-interval=N  flush after every N requests (with -w; N >= depth)\n"
            "  --no-drain          do not drain the queue before each flush\n"
            "  --workers=N         extents in flight per request (0 = measured: the default)\n"
            "  --random[=SEED]     random offsets, multiples of the step from -o (seed 1)\n"
            "  --warm-metadata     read every L2 table before the timed run\n"
            "  -q                  accepted for compatibility (the lines are always printed)\n"
            "  -U, --force-share   read tests only: read the image while other programs\n"
            "                      write it\n"
            "  --image-opts        the image is named by qemu's option list\n"
            "  -h, --help          this help\n");
}

/* Strict unsigned decimal/hex integer; false if malformed or > max. */
static bool parse_uint(const char *s, uint64_t max, uint64_t *out)
{
    char *end;

    if (!*s || *s == '-' || *s == '+')
        return false;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno || *end || v > max)
        return false;
    *out = v;
    return true;
}

/* A size option limited to INT_MAX, with qemu-img's messages. */
static bool parse_bufsize(const char *s, const char *what, uint64_t *out)
{
    if (tool_parse_size(s, out, what) < 0)
        return false;
    if (*out > INT_MAX) {
        tool_error("Invalid %s specified. Must be between 0 and %d.", what, INT_MAX);
        return false;
    }
    return true;
}

int cmd_bench(int argc, char **argv)
{
    enum { O_FLUSH = 256, O_NODRAIN, O_PATTERN, O_WORKERS, O_RANDOM, O_WARM };
    static const struct option lopts[] = {
        { "help", no_argument, NULL, 'h' },
        { "flush-interval", required_argument, NULL, O_FLUSH },
        { "no-drain", no_argument, NULL, O_NODRAIN },
        { "pattern", required_argument, NULL, O_PATTERN },
        { "workers", required_argument, NULL, O_WORKERS },
        { "random", optional_argument, NULL, O_RANDOM },
        { "warm-metadata", no_argument, NULL, O_WARM },
        { "force-share", no_argument, NULL, 'U' },
        { NULL, 0, NULL, 0 },
    };
    struct bench b = { .count = 75000, .depth = 64, .bufsize = 4096, .drain = true, .rng = 1 };
    struct fq_open_opts oo;
    char err[FQ_ERR_MAX] = "";
    uint64_t v, pattern = 0;
    int c, ret = 1;
    bool force_share = false, warm = false;

    tool_open_opts_init(&oo);
    oo.cache = FQ_CACHE_WRITEBACK;
    optind = 0;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":hc:d:f:i:no:qs:S:t:wU", lopts, NULL)) != -1) {
        switch (c) {
        case 'h':
            usage(stdout);
            return 0;
        case 'c':
            if (!parse_uint(optarg, INT_MAX, &b.count)) {
                tool_error("Invalid request count specified");
                return 1;
            }
            break;
        case 'd':
            if (!parse_uint(optarg, INT_MAX, &v) || v == 0) {
                tool_error("Invalid queue depth specified");
                return 1;
            }
            b.depth = (unsigned)v;
            break;
        case 'f':
            oo.format = optarg;
            break;
        case 'i':
            if (fq_engine_parse(optarg, &oo.engine) < 0) {
                tool_error("Invalid aio option: %s", optarg);
                return 1;
            }
            break;
        case 'n':
            oo.engine = FQ_ENGINE_DEFAULT;      /* native AIO: see -i native */
            break;
        case 'o':
            if (tool_parse_size(optarg, &b.start, "offset") < 0)
                return 1;
            break;
        case 's':
            if (!parse_bufsize(optarg, "buffer size", &b.bufsize))
                return 1;
            break;
        case 'S':
            if (!parse_bufsize(optarg, "step_size", &b.step))
                return 1;
            break;
        case 't':
            if (fq_cache_parse(optarg, &oo.cache) < 0) {
                tool_error("Invalid cache mode");
                return 1;
            }
            break;
        case 'w':
            b.write = true;
            break;
        case 'q':
            break;
        case 'U':
            force_share = true;
            break;
        case O_FLUSH:
            if (!parse_uint(optarg, INT_MAX, &b.flush_interval)) {
                tool_error("Invalid flush interval specified");
                return 1;
            }
            break;
        case O_NODRAIN:
            b.drain = false;
            break;
        case O_PATTERN:
            if (!parse_uint(optarg, 255, &pattern)) {
                tool_error("Invalid pattern byte specified");
                return 1;
            }
            break;
        case O_WORKERS:
            if (!parse_uint(optarg, 65536, &v)) {
                tool_error("Invalid worker count specified");
                return 1;
            }
            oo.max_workers = (unsigned)v;
            break;
        case O_WARM:
            warm = true;
            break;
        case O_RANDOM:
            b.random = true;
            if (optarg && !parse_uint(optarg, UINT64_MAX, &b.rng)) {
                tool_error("Invalid random seed specified");
                return 1;
            }
            break;
        default:   /* '?' and ':' */
            return img_getopt_err(c, argv);
        }
    }
    if (optind != argc - 1)
        return img_usage_err("Expecting one image file name");
    if (b.flush_interval && !b.write) {
        tool_error("--flush-interval is only available in write tests");
        return 1;
    }
    if (b.flush_interval && b.flush_interval < b.depth) {
        tool_error("Flush interval can't be smaller than depth");
        return 1;
    }
    if (!b.step)
        b.step = b.bufsize;

    const char *file = argv[optind];
    if (force_share && b.write) {
        tool_error("Could not open '%s': force-share=on can only be used with read-only images", file);
        return 1;
    }
    oo.readonly = !b.write;
    oo.force_share = force_share;
    int r = tool_open_image(file, &oo, &b.img, err);
    if (r < 0) {
        if (*err)
            tool_error("%s", err);
        else
            tool_error("Could not open '%s': %s", file, strerror(-r));
        return 1;
    }
    b.ctx = fq_image_ctx(b.img);
    b.size = fq_size(b.img);
    b.off = b.start;
    b.next_flush = b.flush_interval;
    if (b.random) {
        if (b.start > b.size || b.bufsize > b.size - b.start) {
            tool_error("Image too small for --random: offset %" PRIu64 " + buffer size %" PRIu64
                       " exceeds its size %" PRIu64, b.start, b.bufsize, b.size);
            goto out;
        }
        b.nrand = b.step ? (b.size - b.start - b.bufsize) / b.step + 1 : 1;
    }

    /* one buffer per request that can be in flight; reads leave theirs
     * untouched so that a large -s costs no page faults up front */
    b.nslots = b.count < b.depth ? (unsigned)b.count : b.depth;
    b.slots = calloc(b.nslots + 1, sizeof(*b.slots));
    b.free = calloc(b.nslots + 1, sizeof(*b.free));
    if (!b.slots || !b.free) {
        tool_error("out of memory");
        goto out;
    }
    /* one allocation for all: physically contiguous pieces where the
     * system gives huge pages (fq_buf_alloc) */
    size_t stride = ((size_t)b.bufsize + 4095) & ~(size_t)4095;
    if (!(b.arena = fq_buf_alloc(stride * b.nslots))) {
        tool_error("out of memory for %u buffers of %" PRIu64 " bytes", b.nslots, b.bufsize);
        goto out;
    }
    for (unsigned i = 0; i < b.nslots; i++) {
        void *p = b.arena + stride * i;
        if (b.write)
            memset(p, (int)pattern, b.bufsize);
        b.slots[i] = (struct slot){ &b, { p, b.bufsize } };
        b.free[b.nfree++] = &b.slots[i];
    }

    printf("Sending %" PRIu64 " %s requests, %" PRIu64 " bytes each, %u in parallel ", b.count,
           b.write ? "write" : "read", b.bufsize, b.depth);
    if (b.random)
        printf("(random offsets from offset %" PRIu64 ", step size %" PRIu64 ", seed %" PRIu64 ")\n",
               b.start, b.step, b.rng);
    else
        printf("(starting at offset %" PRIu64 ", step size %" PRIu64 ")\n", b.start, b.step);
    if (b.flush_interval)
        printf("Sending flush every %" PRIu64 " requests\n", b.flush_interval);
    fflush(stdout);

    if (warm && (r = warm_metadata(&b)) < 0) {
        tool_error("Failed to read the metadata: %s", strerror(-r));
        goto out;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pump(&b);
    while (fq_ctx_inflight(b.ctx) > 0) {
        r = fq_ctx_run(b.ctx, 1, -1);
        if (r < 0) {
            fail(&b, r);
            break;
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (b.err) {
        tool_error("Failed request: %s", strerror(-b.err));
        goto out;
    }
    printf("Run completed in %3.3f seconds.\n",
           (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
    ret = 0;
out:
    r = fq_close(b.img);
    if (r < 0 && ret == 0) {
        tool_error("Failed to flush the image: %s", strerror(-r));
        ret = 1;
    }
    fq_buf_free(b.arena);
    free(b.slots);
    free(b.free);
    return ret;
}
