/* gen.c: `fastqcow gen`, the seed's four test images made in-process.
 *
 * Creates a qcow2 image and writes every block (block = cluster size) once,
 * filled with a pattern, in the order of the layout:
 *   seq        block 0, 1, 2, ...
 *   reverse    last block first
 *   rand       all blocks shuffled (Fisher-Yates over a seeded PRNG)
 *   part-rand  blocks shuffled within each 1 MiB chunk, chunks in order
 * A qcow2 driver allocates host clusters in the order writes arrive, so
 * the host layout ends up fragmented the same way (a reverse image maps
 * guest block i to descending host offsets). Writes are kept in flight
 * through the aio API, as many as --depth says or, by default, as many as
 * the device gains from (fq_depth: measured as it runs); they are
 * submitted in layout order and all share one read-only buffer.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/cli.h"
#include "common/seeded.h"
#include "subcommands.h"

enum layout { L_SEQ, L_REVERSE, L_RAND, L_PART_RAND };
static const char *const layout_names[] = { "seq", "reverse", "rand", "part-rand" };

struct gen {
    struct fq_image *img;
    uint32_t *order;          /* block numbers in write order */
    uint64_t nblocks, next, done;
    uint64_t block, size;
    uint64_t stride;          /* bytes from one block written to the next */
    unsigned depth, inflight; /* depth: --depth, 0 = measured (dctl) */
    struct fq_depth *dctl;
    struct iovec iov;         /* the pattern block, shared by all writes */
    int err;
};

/* Fisher-Yates shuffle of v[0..n). */
static void shuffle(uint32_t *v, uint64_t n, uint64_t *rng)
{
    for (uint64_t i = n; i > 1; i--) {
        uint64_t j = fqio_rand_below(rng, i);
        uint32_t t = v[i - 1];
        v[i - 1] = v[j];
        v[j] = t;
    }
}

/* The write order of `layout`: a permutation of 0..nblocks-1. */
static uint32_t *make_order(enum layout layout, uint64_t nblocks, uint64_t chunk_blocks, uint64_t seed)
{
    uint32_t *v = malloc((nblocks ? nblocks : 1) * sizeof(*v));
    uint64_t rng = seed;

    if (!v)
        return NULL;
    for (uint64_t i = 0; i < nblocks; i++)
        v[i] = (uint32_t)(layout == L_REVERSE ? nblocks - 1 - i : i);
    if (layout == L_RAND)
        shuffle(v, nblocks, &rng);
    else if (layout == L_PART_RAND)
        for (uint64_t c = 0; c < nblocks; c += chunk_blocks)
            shuffle(v + c, nblocks - c < chunk_blocks ? nblocks - c : chunk_blocks, &rng);
    return v;
}

static void pump(struct gen *g);

static void write_done(void *opaque, int ret)
{
    struct gen *g = opaque;

    if (ret < 0 && !g->err)
        g->err = ret;
    g->inflight--;
    g->done++;
    fq_depth_end(g->dctl, g->block);
    pump(g);
}

/* Keep DEPTH writes in flight, submitted in layout order. */
static void pump(struct gen *g)
{
    while (!g->err && g->next < g->nblocks && g->inflight < fq_depth_limit(g->dctl)) {
        uint64_t off = (uint64_t)g->order[g->next] * g->stride;
        uint64_t len = g->size - off < g->block ? g->size - off : g->block;
        int r = fq_aio_pwritev(g->img, &g->iov, 1, 0, len, off, write_done, g);
        if (r < 0) {
            g->err = r;
            return;
        }
        g->next++;
        g->inflight++;
        fq_depth_start(g->dctl);
    }
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: fastqcow gen --layout seq|reverse|rand|part-rand [--size S] [--cluster-size C]\n"
            "                    [--seed N] [--pattern P] [--depth N] [--chunk-size S] [-t cache]\n"
            "                    [--stride S] [-i aio] [-n] [--workers N] [-q] FILE\n"
            "Create a qcow2 image and fill it with cluster-sized blocks of a pattern, written\n"
            "in the order of the layout, so that its host layout is fragmented that way.\n\n"
            "  --layout L         seq: in order; reverse: last block first; rand: all blocks\n"
            "                     shuffled; part-rand: shuffled within each chunk, chunks in order\n"
            "  --size S           virtual size (default 1G)\n"
            "  --cluster-size C   cluster size = block size (default 64k)\n"
            "  --chunk-size S     part-rand chunk (default 1M)\n"
            "  --stride S         one block every S bytes (default: every block); e.g.\n"
            "                     64k x 8192 = 512M writes one cluster per L2 table\n"
            "  --seed N           PRNG seed for rand and part-rand (default 1)\n"
            "  --pattern P        fill byte (default 0xff)\n"
            "  --depth N          writes in flight (default: measured as it runs, up to 128);\n"
            "                     1 writes strictly in order\n"
            "  -t CACHE           none, writeback (default), writethrough, directsync, unsafe\n"
            "  -i AIO, -n         I/O engine: native (-n; io_uring, small operations on tmpfs\n"
            "                     inline), io_uring (every operation), threads, sync\n"
            "  --workers N        extents in flight per request (0 = measured: the default)\n"
            "  -q                 print nothing on success\n"
            "  -h, --help         this help\n");
}

static bool parse_num(const char *s, uint64_t max, uint64_t *out, const char *what)
{
    char *end;

    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (!*s || *s == '-' || *end || errno || v > max) {
        tool_error("gen: invalid %s '%s'", what, s);
        return false;
    }
    *out = v;
    return true;
}

int cmd_gen(int argc, char **argv)
{
    enum { O_LAYOUT = 256, O_SIZE, O_CLUSTER, O_SEED, O_PATTERN, O_DEPTH, O_CHUNK, O_WORKERS,
           O_STRIDE };
    static const struct option lopts[] = {
        { "layout", required_argument, NULL, O_LAYOUT },
        { "size", required_argument, NULL, O_SIZE },
        { "cluster-size", required_argument, NULL, O_CLUSTER },
        { "seed", required_argument, NULL, O_SEED },
        { "pattern", required_argument, NULL, O_PATTERN },
        { "depth", required_argument, NULL, O_DEPTH },
        { "chunk-size", required_argument, NULL, O_CHUNK },
        { "workers", required_argument, NULL, O_WORKERS },
        { "stride", required_argument, NULL, O_STRIDE },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    struct gen g = { .depth = 0 };
    struct fq_create_opts co;
    struct fq_open_opts oo;
    char err[FQ_ERR_MAX] = "";
    uint64_t cluster = 65536, chunk = 1 << 20, seed = 1, pattern = 0xff, v, stride = 0;
    int layout = -1, c, r, ret = 1;
    bool quiet = false;

    tool_open_opts_init(&oo);
    oo.format = "qcow2";
    oo.cache = FQ_CACHE_WRITEBACK;
    g.size = 1ull << 30;
    optind = 0;
    while ((c = getopt_long(argc, argv, "hqt:i:n", lopts, NULL)) != -1) {
        switch (c) {
        case 'h':
            usage(stdout);
            return 0;
        case 'q':
            quiet = true;
            break;
        case 't':
            if (fq_cache_parse(optarg, &oo.cache) < 0) {
                tool_error("gen: invalid cache mode '%s'", optarg);
                return 1;
            }
            break;
        case 'i':
            if (fq_engine_parse(optarg, &oo.engine) < 0) {
                tool_error("gen: invalid aio option '%s'", optarg);
                return 1;
            }
            break;
        case 'n':
            oo.engine = FQ_ENGINE_DEFAULT;      /* native AIO: see -i native */
            break;
        case O_LAYOUT:
            for (int i = 0; i < 4; i++)
                if (!strcmp(optarg, layout_names[i]))
                    layout = i;
            if (layout < 0) {
                tool_error("gen: unknown layout '%s' (seq, reverse, rand, part-rand)", optarg);
                return 1;
            }
            break;
        case O_SIZE:
            if (tool_parse_size(optarg, &g.size, "size") < 0)
                return 1;
            break;
        case O_CLUSTER:
            if (tool_parse_size(optarg, &cluster, "cluster size") < 0)
                return 1;
            break;
        case O_CHUNK:
            if (tool_parse_size(optarg, &chunk, "chunk size") < 0)
                return 1;
            break;
        case O_SEED:
            if (!parse_num(optarg, UINT64_MAX, &seed, "seed"))
                return 1;
            break;
        case O_PATTERN:
            if (!parse_num(optarg, 255, &pattern, "pattern byte"))
                return 1;
            break;
        case O_DEPTH:
            if (!parse_num(optarg, 65536, &v, "depth"))
                return 1;
            if (v == 0) {
                tool_error("gen: depth must be at least 1");
                return 1;
            }
            g.depth = (unsigned)v;
            break;
        case O_STRIDE:
            if (tool_parse_size(optarg, &stride, "stride") < 0)
                return 1;
            break;
        case O_WORKERS:
            if (!parse_num(optarg, 65536, &v, "worker count"))
                return 1;
            oo.max_workers = (unsigned)v;
            break;
        default:
            usage(stderr);
            return 1;
        }
    }
    if (layout < 0) {
        tool_error("gen: --layout is required (seq, reverse, rand, part-rand)");
        return 1;
    }
    if (optind != argc - 1) {
        tool_error("gen: expecting one image file name");
        return 1;
    }
    if (cluster < 512 || cluster > (2u << 20) || (cluster & (cluster - 1))) {
        tool_error("gen: cluster size must be a power of two between 512 and 2M");
        return 1;
    }
    if (g.size == 0) {
        tool_error("gen: size must not be zero");
        return 1;
    }
    /* qemu-img rounds the virtual size up to whole sectors; so do we, as
     * qemu would otherwise see an odd size rounded down */
    g.size = (g.size + 511) & ~511ull;
    g.block = cluster;
    g.stride = stride ? stride : cluster;
    if (g.stride % cluster) {
        tool_error("gen: the stride must be a multiple of the cluster size");
        return 1;
    }
    g.nblocks = (g.size + g.stride - 1) / g.stride;
    if (g.nblocks > UINT32_MAX) {
        tool_error("gen: too many blocks (%" PRIu64 "); use a larger cluster size", g.nblocks);
        return 1;
    }
    uint64_t chunk_blocks = chunk / g.stride ? chunk / g.stride : 1;
    const char *file = argv[optind];

    g.order = make_order((enum layout)layout, g.nblocks, chunk_blocks, seed);
    if (!g.order || posix_memalign(&g.iov.iov_base, 4096, g.block)) {
        tool_error("gen: out of memory");
        free(g.order);
        return 1;
    }
    memset(g.iov.iov_base, (int)pattern, g.block);
    g.iov.iov_len = g.block;

    fq_create_opts_init(&co);
    co.format = "qcow2";
    co.size = g.size;
    co.cluster_size = (uint32_t)cluster;
    r = fq_create(file, &co, err);
    if (r < 0) {
        tool_error("gen: %s: %s", file, *err ? err : strerror(-r));
        goto out;
    }
    r = fq_open(file, &oo, &g.img, err);
    if (r < 0) {
        tool_error("gen: could not open '%s': %s", file, *err ? err : strerror(-r));
        goto out;
    }
    if ((r = fq_depth_new(g.depth, 128, &g.dctl)) < 0) {
        tool_error("gen: %s", strerror(-r));
        fq_close(g.img);
        goto out;
    }

    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    struct fq_ctx *ctx = fq_image_ctx(g.img);
    pump(&g);
    while (fq_ctx_inflight(ctx) > 0)
        if ((r = fq_ctx_run(ctx, 1, -1)) < 0) {
            if (!g.err)
                g.err = r;
            break;
        }
    r = fq_close(g.img);
    if (!g.err && r < 0)
        g.err = r;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (g.err) {
        tool_error("gen: writing %s failed after %" PRIu64 " of %" PRIu64 " blocks: %s", file, g.done,
                   g.nblocks, strerror(-g.err));
        goto out;
    }
    if (!quiet) {
        char bs[32], ss[32];
        tool_human_size(g.block, bs, sizeof(bs));
        tool_human_size(g.size, ss, sizeof(ss));
        printf("Wrote %s: %" PRIu64 " blocks of %s (%s), layout %s, seed %" PRIu64 ", pattern 0x%02" PRIx64
               ", in %.3f seconds\n",
               file, g.nblocks, bs, ss, layout_names[layout], seed, pattern,
               (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
    }
    ret = 0;
out:
    fq_depth_free(g.dctl);
    free(g.iov.iov_base);
    free(g.order);
    return ret;
}
