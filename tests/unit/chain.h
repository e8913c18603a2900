/* chain.h: backing chains with known content for the randomized model
 * test (test-random). A chain is described bottom first, comma separated:
 *   raw                  a raw file, three quarters of the disk long (what
 *                        lies past its end reads as zeros)
 *   qcow2:CLUSTER        a qcow2 image over the layer below
 *   qcow2:CLUSTER:zlib   the same, most of its data in compressed clusters
 *   qcow2:CLUSTER:zstd   (zstd compression type)
 * Each layer is written through the library (plain, compressed and
 * zero-cluster writes over a random half of the disk) and the flat model
 * of the disk is updated as it goes, so that the image built on top starts
 * with a model that already holds what the chain shows through.
 * SPDX-License-Identifier: MIT
 */
#ifndef FQ_TEST_CHAIN_H
#define FQ_TEST_CHAIN_H

#include "testlib.h"

#define CHAIN_MAX 4

struct chain {
    int n;
    char path[CHAIN_MAX][4352];
    const char *fmt[CHAIN_MAX];
};

/* Compressible content that still names the layer and the offset: runs of
 * 64 equal bytes. */
static inline void chain_fill(uint8_t *b, size_t len, uint64_t gen, uint64_t off)
{
    for (size_t i = 0; i < len; i++)
        b[i] = tl_pattern(gen, (off + i) / 64 * 8) | 0x80;
}

/* Write one raw layer of `len` bytes. */
static inline int chain_raw(const char *path, uint64_t len, struct tl_rng *g,
                     uint64_t gen, uint8_t *model, char *err)
{
    FILE *f = fopen(path, "w+");
    uint8_t *buf = malloc(256 * 1024);
    int ret = 0;

    if (!f || !buf || ftruncate(fileno(f), (off_t)len) < 0) {
        snprintf(err, FQ_ERR_MAX, "%s: %s", path, strerror(errno));
        ret = -1;
    }
    for (int k = 0; ret == 0 && k < 48; k++) {
        uint64_t n = tl_range(g, 1, 256 * 1024), o = tl_below(g, len);
        if (n > len - o)
            n = len - o;
        chain_fill(buf, (size_t)n, gen + (uint64_t)k, o);
        if (pwrite(fileno(f), buf, (size_t)n, (off_t)o) != (ssize_t)n) {
            snprintf(err, FQ_ERR_MAX, "%s: write: %s", path, strerror(errno));
            ret = -1;
        }
        memcpy(model + o, buf, (size_t)n);
    }
    free(buf);
    if (f)
        fclose(f);
    return ret;
}

/* Create and write one qcow2 layer over `below` (NULL = none). */
static inline int chain_qcow2(const char *path, uint32_t cluster, int ctype, const char *below,
                       const char *below_fmt, uint64_t size, struct tl_rng *g, uint64_t gen,
                       uint8_t *model, char *err)
{
    struct fq_create_opts co;
    struct fq_open_opts oo;
    struct fq_image *img;
    uint8_t *buf = malloc(8 * (size_t)cluster);
    int ret;

    fq_create_opts_init(&co);
    co.size = size;
    co.cluster_size = cluster;
    co.compression_type = ctype == 2;
    co.backing_file = below;
    co.backing_format = below_fmt;
    if (!buf || (ret = fq_create(path, &co, err)) < 0) {
        free(buf);
        return -1;
    }
    fq_open_opts_init(&oo);
    if ((ret = fq_open(path, &oo, &img, err)) < 0) {
        free(buf);
        return -1;
    }
    uint64_t nclusters = (size + cluster - 1) / cluster;
    for (int k = 0; ret == 0 && k < 40; k++) {
        uint64_t c0 = tl_below(g, nclusters), nc = tl_range(g, 1, 8);
        if (nc > nclusters - c0)
            nc = nclusters - c0;
        uint64_t o = c0 * cluster, n = nc * cluster;
        if (n > size - o)
            n = size - o;
        int kind = (int)tl_below(g, 10);
        if (kind == 0) {
            ret = fq_write_zeroes(img, o, n, 0);
            memset(model + o, 0, (size_t)n);
            continue;
        }
        chain_fill(buf, (size_t)n, gen + (uint64_t)k, o);
        if (ctype && kind > 2) {
            struct iovec v = { buf, (size_t)n };
            ret = fq_pwritev_compressed(img, &v, 1, 0, (size_t)n, o);
        } else {
            /* plain writes, some not cluster aligned (copy-on-write from
             * the layer below) */
            uint64_t skip = kind == 1 && n > 1000 ? tl_below(g, 1000) : 0;
            ret = fq_pwrite(img, buf + skip, n - skip, o + skip);
            memcpy(model + o + skip, buf + skip, (size_t)(n - skip));
            continue;
        }
        memcpy(model + o, buf, (size_t)n);
    }
    if (ret < 0)
        snprintf(err, FQ_ERR_MAX, "%s: writing the layer: %s", path, strerror(-ret));
    /* a compressed layer must really hold compressed clusters */
    unsigned ncomp = 0;
    for (uint64_t p = 0; ret == 0 && ctype && p < size;) {
        struct fq_map_entry e;
        if ((ret = fq_map(img, p, size - p, &e)) < 0 || e.length == 0) {
            snprintf(err, FQ_ERR_MAX, "%s: fq_map at %llu: %d", path, (unsigned long long)p, ret);
            ret = -1;
            break;
        }
        ncomp += (e.flags & FQ_MAP_COMPRESSED) && e.depth == 0;
        p += e.length;
    }
    if (ret == 0 && ctype && ncomp < 8) {
        snprintf(err, FQ_ERR_MAX, "%s: only %u compressed clusters", path, ncomp);
        ret = -1;
    }
    int cret = fq_close(img);
    free(buf);
    return ret < 0 || cret < 0 ? -1 : 0;
}

/* Build `spec` as files PREFIX.layerN.*; the model (size bytes, zeroed by
 * the caller) gets what the top of the chain reads. */
static inline int chain_build(struct chain *ch, const char *spec, const char *prefix,
                              uint64_t size, uint64_t seed, uint8_t *model, char *err)
{
    struct tl_rng g;
    char buf[256];
    int ret = 0;

    memset(ch, 0, sizeof(*ch));
    tl_rng_seed(&g, seed ^ 0xc4a1);
    snprintf(buf, sizeof(buf), "%s", spec);
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok && ret == 0;
         tok = strtok_r(NULL, ",", &save)) {
        int i = ch->n;
        uint64_t gen = seed * 131 + (uint64_t)i * 100000;
        if (i == CHAIN_MAX) {
            snprintf(err, FQ_ERR_MAX, "chain '%s': too many layers", spec);
            return -1;
        }
        const char *below = i ? ch->path[i - 1] : NULL, *below_fmt = i ? ch->fmt[i - 1] : NULL;
        if (!strcmp(tok, "raw")) {
            snprintf(ch->path[i], sizeof(ch->path[i]), "%s.layer%d.raw", prefix, i);
            ch->fmt[i] = "raw";
            ret = chain_raw(ch->path[i], size / 4 * 3, &g, gen, model, err);
        } else if (!strncmp(tok, "qcow2:", 6)) {
            char *c = tok + 6, *z = strchr(c, ':');
            int ctype = z ? (!strcmp(z + 1, "zstd") ? 2 : 1) : 0;
            snprintf(ch->path[i], sizeof(ch->path[i]), "%s.layer%d.qcow2", prefix, i);
            ch->fmt[i] = "qcow2";
            ret = chain_qcow2(ch->path[i], (uint32_t)strtoul(c, NULL, 0), ctype, below, below_fmt,
                              size, &g, gen, model, err);
        } else {
            snprintf(err, FQ_ERR_MAX, "chain '%s': unknown layer '%s'", spec, tok);
            return -1;
        }
        ch->n++;
    }
    return ret;
}

static inline void chain_remove(struct chain *ch)
{
    for (int i = 0; i < ch->n; i++)
        unlink(ch->path[i]);
}

#endif
