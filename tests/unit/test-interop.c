/* test-interop.c: images made by QEMU read correctly through the library,
 * and images made and written by the library are valid for QEMU.
 *
 * A. For each qemu-img option set (cluster_size 512/4k/64k/2M, compat
 *    0.10/1.1, refcount_bits 1/8/16/64, lazy_refcounts=on, preallocation=
 *    metadata/full): `qemu-img create`, one `qemu-io` run of random
 *    `write -P`, `write -z`, `write -z -u` and `discard` commands (some
 *    unaligned, some across L2 tables), then the library's reads of the
 *    whole image must equal `qemu-img convert -O raw`, fq_check must find
 *    nothing, and after the library writes on top of QEMU's allocations
 *    `qemu-img check` must pass and `qemu-img compare` must match the model.
 *    One lazy-refcount image is left dirty by `qemu-io -c abort`: its data
 *    must still read correctly, and a read-write open must either refuse or
 *    repair (qemu-img check passes after the library wrote to it).
 * B. For each option set parsed by fq_create_opts_parse: fq_create, then
 *    `qemu-img info` must show the options and `qemu-img check` must pass
 *    on the fresh image; the library writes a random workload, and QEMU must
 *    agree: check passes, `qemu-img compare` with the model and
 *    `qemu-img convert -O raw` against the library's own reads; then QEMU
 *    writes on top and the library must read what QEMU wrote.
 * N. A qcow2 image nested in another, built by QEMU, read and written by
 *    the library through fq_open_opts.file_format, checked by QEMU.
 * S. An internal snapshot taken by QEMU (all data clusters shared): the
 *    library's writes must copy, the snapshot must read as before.
 * C. Compressed images (zlib, zstd) written by `qemu-img convert -c`: the
 *    library reads them and writes over compressed clusters.
 *
 * Usage: test-interop [SEED [CASE-SUBSTRING]]. Skips (77) without qemu-img
 * or qemu-io.
 * SPDX-License-Identifier: MIT
 */
#include "testlib.h"

#define KiB (1ull << 10)
#define MiB (1ull << 20)

struct icase {
    const char *name;
    const char *opts;          /* qemu-img -o list, also parsed by the library */
    uint64_t size;
    int dirty;                 /* part A: leave the image dirty (lazy refcounts) */
};

static const struct icase cases[] = {
    { "c512-rb1", "cluster_size=512,refcount_bits=1", 4 * MiB, 0 },
    { "c512-rb64", "cluster_size=512,refcount_bits=64", 4 * MiB, 0 },
    { "c512-v2-meta", "cluster_size=512,compat=0.10,preallocation=metadata", 2 * MiB, 0 },
    { "c4k-v2", "cluster_size=4k,compat=0.10", 16 * MiB, 0 },
    { "c4k-rb8-meta", "cluster_size=4096,refcount_bits=8,preallocation=metadata", 16 * MiB, 0 },
    { "c64k-rb8-lazy", "cluster_size=64k,refcount_bits=8,lazy_refcounts=on", 64 * MiB, 0 },
    { "c64k-full", "cluster_size=65536,preallocation=full", 16 * MiB, 0 },
    { "c64k-v2-full", "compat=0.10,preallocation=full", 8 * MiB, 0 },
    { "c2M-rb64-meta", "cluster_size=2M,refcount_bits=64,preallocation=metadata", 24 * MiB, 0 },
    { "c2M-rb1", "cluster_size=2M,refcount_bits=1,compat=1.1", 20 * MiB + 512, 0 },
    { "c64k-rb64-lazy-dirty", "cluster_size=64k,refcount_bits=64,lazy_refcounts=on", 32 * MiB, 1 },
};

static uint64_t g_seed;
static const struct icase *g_case;
static char g_part = 'A';

#define IFAIL(...)                                                             \
    do {                                                                       \
        fprintf(stderr, "test-interop: FAIL part %c case %s seed %" PRIu64     \
                " (reproduce: test-interop %" PRIu64 " %s), line %d: ",        \
                g_part, g_case ? g_case->name : "-", g_seed, g_seed,           \
                g_case ? g_case->name : "", __LINE__);                         \
        fprintf(stderr, __VA_ARGS__);                                          \
        fputc('\n', stderr);                                                   \
        tl_failures++;                                                         \
    } while (0)

static const enum fq_engine_kind engines[] = { FQ_ENGINE_SYNC, FQ_ENGINE_THREADS, FQ_ENGINE_IO_URING };
static int have_uring;

/* The format below the image under test: NULL (a plain file) or "qcow2"
 * (the nested case, part N). */
static const char *g_file_format;

static int open_lib(const char *path, int ro, int check_mode, enum fq_engine_kind e,
                    enum fq_cache_mode cache, struct fq_image **img, char *err)
{
    struct fq_open_opts o;

    fq_open_opts_init(&o);
    o.file_format = g_file_format;
    o.format = "qcow2";
    o.readonly = ro;
    o.check_mode = check_mode;
    o.engine = (e == FQ_ENGINE_IO_URING && !have_uring) ? FQ_ENGINE_THREADS : e;
    o.cache = cache;
    err[0] = '\0';
    return fq_open(path, &o, img, err);
}

/* Read the whole image through the library in random, unaligned pieces and
 * compare with `want`. Returns 0 if equal. */
static int lib_compare(const char *path, const uint8_t *want, uint64_t size,
                       enum fq_engine_kind e, enum fq_cache_mode cache, struct tl_rng *g,
                       const char *what)
{
    struct fq_image *img;
    char err[FQ_ERR_MAX];
    uint8_t *buf = malloc(3 * MiB);
    int bad = 0, r;

    r = open_lib(path, 1, 0, e, cache, &img, err);
    if (r < 0) {
        IFAIL("%s: fq_open(%s, %s, cache %s) = %d: %s", what, path, tl_engine_name(e),
              tl_cache_name(cache), r, err);
        free(buf);
        return 1;
    }
    if (fq_size(img) != size) {
        IFAIL("%s: size %" PRIu64 ", qemu says %" PRIu64, what, fq_size(img), size);
        bad = 1;
    }
    for (uint64_t off = 0; off < size && !bad;) {
        uint64_t n = tl_pct(g, 50) ? tl_range(g, 1, 70000) : tl_range(g, 1, 3 * MiB);
        if (n > size - off)
            n = size - off;
        r = fq_pread(img, buf, n, off);
        if (r != 0) {
            IFAIL("%s: fq_pread(%" PRIu64 ", %" PRIu64 ") = %d", what, off, n, r);
            bad = 1;
        } else if (memcmp(buf, want + off, n)) {
            IFAIL("%s: library read at %" PRIu64 " len %" PRIu64 " (engine %s, cache %s) differs",
                  what, off, n, tl_engine_name(e), tl_cache_name(cache));
            tl_dump_diff(want + off, buf, n, off);
            bad = 1;
        }
        off += n;
    }
    fq_close(img);
    free(buf);
    return bad;
}

/* fq_check must find no corruption and no leak. */
static void lib_check(const char *path, const char *what)
{
    struct fq_image *img;
    struct fq_check_result res;
    struct tl_msgs m = { 0 };
    char err[FQ_ERR_MAX];
    int r = open_lib(path, 1, 1, FQ_ENGINE_SYNC, FQ_CACHE_WRITEBACK, &img, err);

    if (r < 0) {
        IFAIL("%s: fq_open for check = %d: %s", what, r, err);
        return;
    }
    r = fq_check(img, 0, &res, tl_msg_cb, &m);
    if (r != 0 || res.corruptions || res.leaks || res.check_errors) {
        IFAIL("%s: fq_check = %d: %" PRId64 " corruptions, %" PRId64 " leaks, %" PRId64
              " check errors", what, r, res.corruptions, res.leaks, res.check_errors);
        for (int i = 0; i < m.n && i < 4; i++)
            fprintf(stderr, "    %s\n", m.first[i]);
    }
    fq_close(img);
}

/* A random range: unaligned, cluster-straddling, L2-straddling or big. */
static void rand_range(struct tl_rng *g, uint64_t size, uint64_t cs, uint64_t *off, uint64_t *len)
{
    uint64_t l2span = cs / 8 * cs, l, o, k = tl_below(g, 100);

    if (k < 40)
        l = tl_range(g, 1, 3 * cs < 20000 ? 20000 : 3 * cs);
    else if (k < 60)
        l = cs * tl_range(g, 1, 3);
    else if (k < 90)
        l = tl_range(g, 1, 9000);
    else
        l = tl_range(g, 1, MiB);
    if (l > size / 2)
        l = tl_range(g, 1, size / 2);
    k = tl_below(g, 100);
    if (k < 50) {
        o = tl_below(g, size - l + 1);
    } else if (k < 70 && l2span < size && l > 1) {
        uint64_t b = l2span * tl_range(g, 1, (size - 1) / l2span);
        uint64_t d = tl_range(g, 1, l - 1);
        o = b > d ? b - d : 0;
    } else {
        uint64_t b = cs * tl_below(g, size / cs + 1);
        uint64_t d = l > 1 ? tl_range(g, 1, l - 1) : 0;
        o = b > d ? b - d : 0;
    }
    if (o + l > size)
        o = size - l;
    *off = o;
    *len = l;
}

/* The library's random workload on an open image, mirrored in `model`.
 * Returns 0 if every call succeeded. */
static int lib_workload(struct fq_image *img, uint8_t *model, uint64_t size, uint64_t cs,
                        struct tl_rng *g, int nops, const char *what)
{
    /* rand_range gives at most max(3 clusters, 1 MiB, 20000) bytes */
    uint8_t *buf = malloc(3 * cs + MiB);

    for (int i = 0; i < nops; i++) {
        uint64_t off, len;
        int r, k = (int)tl_below(g, 100);
        rand_range(g, size, cs, &off, &len);
        if (k < 60) {
            tl_fill_pattern(buf, len, (uint64_t)i + 1000, off);
            r = fq_pwrite(img, buf, len, off);
            memcpy(model + off, buf, len);
        } else if (k < 80) {
            r = fq_write_zeroes(img, off, len, tl_pct(g, 50) ? FQ_ZERO_MAY_UNMAP : 0);
            memset(model + off, 0, len);
        } else if (k < 95) {
            r = fq_discard(img, off, len);
            uint64_t s = (off + cs - 1) / cs * cs, e = (off + len) / cs * cs;
            if (off + len == size)
                e = size;
            if (s < e)
                memset(model + s, 0, e - s);
        } else {
            r = fq_flush(img);
        }
        if (r != 0) {
            IFAIL("%s: library op %d (kind %d) at %" PRIu64 " len %" PRIu64 " = %d", what, i, k,
                  off, len, r);
            free(buf);
            return 1;
        }
        if (tl_pct(g, 10)) {
            /* read back a random piece */
            rand_range(g, size, cs, &off, &len);
            r = fq_pread(img, buf, len, off);
            if (r != 0 || memcmp(buf, model + off, len)) {
                IFAIL("%s: library read-back at %" PRIu64 " len %" PRIu64 " = %d, differs", what,
                      off, len, r);
                if (r == 0)
                    tl_dump_diff(model + off, buf, len, off);
                free(buf);
                return 1;
            }
        }
    }
    free(buf);
    return 0;
}

static int write_file(const char *path, const uint8_t *data, uint64_t size)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    uint64_t done = 0;

    if (fd < 0)
        return -errno;
    while (done < size) {
        ssize_t n = pwrite(fd, data + done, size - done > 8 * MiB ? 8 * MiB : size - done,
                           (off_t)done);
        if (n <= 0) {
            close(fd);
            return -EIO;
        }
        done += (uint64_t)n;
    }
    close(fd);
    return 0;
}

/* A qemu-io command line of `n` random write/zero/discard commands. */
static void qemu_io_cmds(struct tl_rng *g, uint64_t size, uint64_t cs, int n, char *out, size_t cap)
{
    size_t pos = 0;

    out[0] = '\0';
    for (int i = 0; i < n && pos + 100 < cap; i++) {
        uint64_t off, len;
        int k = (int)tl_below(g, 100);
        rand_range(g, size, cs, &off, &len);
        if (k < 55)
            pos += (size_t)snprintf(out + pos, cap - pos, " -c 'write -P 0x%02x %" PRIu64 " %" PRIu64 "'",
                                    (unsigned)tl_range(g, 1, 255), off, len);
        else if (k < 70)
            pos += (size_t)snprintf(out + pos, cap - pos, " -c 'write -z %" PRIu64 " %" PRIu64 "'", off, len);
        else if (k < 85)
            pos += (size_t)snprintf(out + pos, cap - pos, " -c 'write -z -u %" PRIu64 " %" PRIu64 "'",
                                    off, len);
        else
            pos += (size_t)snprintf(out + pos, cap - pos, " -c 'discard %" PRIu64 " %" PRIu64 "'", off, len);
    }
}

/* qemu-img convert -O raw into `raw`, loaded into `buf`. */
static int qemu_to_raw(const char *img, const char *raw, uint8_t *buf, uint64_t size)
{
    int st = tl_sh("qemu-img convert -U -t unsafe -f qcow2 -O raw '%s' '%s'", img, raw);

    if (st != 0) {
        IFAIL("qemu-img convert %s exited %d", img, st);
        return -1;
    }
    return tl_read_file(raw, buf, size, 0);
}

static uint64_t parse_cluster(const char *opts)
{
    struct fq_create_opts o;

    uint64_t cs;

    fq_create_opts_init(&o);
    cs = fq_create_opts_parse(&o, opts, NULL) < 0 || !o.cluster_size ? 65536 : o.cluster_size;
    fq_create_opts_release(&o);
    return cs;
}

/* ---- A: QEMU makes, the library reads and writes ---- */

static void part_a(const struct icase *c, size_t idx, uint64_t seed)
{
    struct tl_rng g;
    char cmds[16384], what[128];
    const char *img = tl_path("a.qcow2"), *raw = tl_path("a.raw"), *mraw = tl_path("a-model.raw");
    uint64_t cs = parse_cluster(c->opts);
    uint8_t *ref = malloc(c->size);
    int st;

    g_part = 'A';
    tl_rng_seed(&g, seed);
    snprintf(what, sizeof(what), "A/%s", c->name);
    unlink(img);
    st = tl_sh("qemu-img create -q -f qcow2 -o %s '%s' %" PRIu64, c->opts, img, c->size);
    if (st != 0) {
        IFAIL("qemu-img create -o %s exited %d", c->opts, st);
        goto out;
    }
    qemu_io_cmds(&g, c->size, cs, 40, cmds, sizeof(cmds));
    if (c->dirty) {
        /* leave the image dirty: lazy refcounts never written */
        st = tl_sh("qemu-io -t unsafe -f qcow2%s -c abort '%s' >/dev/null 2>&1", cmds, img);
        if (st == 0) {
            IFAIL("qemu-io -c abort exited 0");
            goto out;
        }
    } else {
        st = tl_sh("qemu-io -t unsafe -f qcow2%s '%s' >/dev/null", cmds, img);
        if (st != 0) {
            IFAIL("qemu-io exited %d:%s", st, cmds);
            goto out;
        }
    }
    if (qemu_to_raw(img, raw, ref, c->size) < 0)
        goto out;

    /* the library reads what QEMU wrote, with two engine/cache pairs */
    if (lib_compare(img, ref, c->size, engines[idx % 3], FQ_CACHE_WRITEBACK, &g, what) ||
        lib_compare(img, ref, c->size, engines[(idx + 1) % 3], FQ_CACHE_NONE, &g, what)) {
        fprintf(stderr, "  qemu-io commands:%s\n", cmds);
        goto out;
    }
    if (!c->dirty)
        lib_check(img, what);

    /* the library writes on top of QEMU's allocations */
    struct fq_image *im;
    char err[FQ_ERR_MAX];
    int r = open_lib(img, 0, 0, engines[(idx + 2) % 3], idx % 2 ? FQ_CACHE_NONE : FQ_CACHE_WRITEBACK,
                     &im, err);
    if (r < 0) {
        if (c->dirty && err[0]) {
            /* refusing to write a dirty image is allowed */
            printf("test-interop: %s: read-write open of the dirty image refused: %s\n", what, err);
            goto out;
        }
        IFAIL("%s: read-write fq_open = %d: %s", what, r, err);
        goto out;
    }
    if (lib_workload(im, ref, c->size, cs, &g, 60, what)) {
        fq_close(im);
        goto out;
    }
    r = fq_close(im);
    if (r != 0)
        IFAIL("%s: fq_close = %d", what, r);
    if (c->dirty) {
        /* opened read-write, so the refcounts were rebuilt: no longer dirty */
        st = tl_sh("qemu-img info -U --output=json -f qcow2 '%s' | tr -d ' \\n' | "
                   "grep -q '\"dirty-flag\":false'", img);
        if (st != 0)
            IFAIL("%s: the image is still dirty after the library opened it read-write", what);
    }
    st = tl_sh("qemu-img check -q -f qcow2 '%s'", img);
    if (st != 0) {
        IFAIL("%s: qemu-img check after the library wrote exited %d", what, st);
        tl_sh("qemu-img check -f qcow2 '%s' 2>&1 | head -20 >&2", img);
    }
    if (write_file(mraw, ref, c->size) == 0) {
        st = tl_sh("qemu-img compare -q -f qcow2 -F raw '%s' '%s'", img, mraw);
        if (st != 0) {
            IFAIL("%s: qemu-img compare with the model exited %d", what, st);
            tl_sh("qemu-img compare -f qcow2 -F raw '%s' '%s' >&2", img, mraw);
        }
    }
    lib_check(img, what);
out:
    free(ref);
    if (!tl_failures) {
        unlink(img);
        unlink(raw);
        unlink(mraw);
    }
}

/* ---- B: the library makes and writes, QEMU checks and reads ---- */

static void part_b(const struct icase *c, size_t idx, uint64_t seed)
{
    struct tl_rng g;
    struct fq_create_opts o;
    char err[FQ_ERR_MAX] = "", what[128], cmds[16384];
    const char *img = tl_path("b.qcow2"), *raw = tl_path("b.raw"), *mraw = tl_path("b-model.raw");
    uint8_t *model = calloc(1, c->size), *conv = malloc(c->size);
    struct fq_image *im;
    int r, st;

    g_part = 'B';
    tl_rng_seed(&g, seed ^ 0xb);
    snprintf(what, sizeof(what), "B/%s", c->name);
    fq_create_opts_init(&o);
    r = fq_create_opts_parse(&o, c->opts, err);
    if (r < 0) {
        IFAIL("fq_create_opts_parse(\"%s\") = %d: %s", c->opts, r, err);
        goto out;
    }
    o.size = c->size;
    r = fq_create(img, &o, err);
    fq_create_opts_release(&o);
    if (r < 0) {
        IFAIL("fq_create(-o %s) = %d: %s", c->opts, r, err);
        goto out;
    }
    uint64_t cs = o.cluster_size ? o.cluster_size : 65536;

    /* QEMU sees the options and a clean image */
    st = tl_sh("qemu-img info -U --output=json -f qcow2 '%s' | tr -d ' \\n' | "
               "grep -q '\"cluster-size\":%" PRIu64 ",' && "
               "qemu-img info -U --output=json -f qcow2 '%s' | tr -d ' \\n' | "
               "grep -q '\"virtual-size\":%" PRIu64 ",' && "
               "qemu-img info -U --output=json -f qcow2 '%s' | tr -d ' \\n' | "
               "grep -q '\"compat\":\"%s\"'", img, cs, img, c->size, img,
               o.version == 2 ? "0.10" : "1.1");
    if (st != 0) {
        IFAIL("%s: qemu-img info does not show cluster-size %" PRIu64 ", size %" PRIu64 ", compat %s",
              what, cs, c->size, o.version == 2 ? "0.10" : "1.1");
        tl_sh("qemu-img info -f qcow2 '%s' >&2", img);
    }
    if (o.version == 3) {
        st = tl_sh("qemu-img info -U --output=json -f qcow2 '%s' | tr -d ' \\n' | "
                   "grep -q '\"refcount-bits\":%d,' && "
                   "qemu-img info -U --output=json -f qcow2 '%s' | tr -d ' \\n' | "
                   "grep -q '\"lazy-refcounts\":%s'", img, o.refcount_bits ? o.refcount_bits : 16,
                   img, o.lazy_refcounts ? "true" : "false");
        if (st != 0) {
            IFAIL("%s: qemu-img info does not show refcount-bits %d / lazy-refcounts %d", what,
                  o.refcount_bits ? o.refcount_bits : 16, o.lazy_refcounts);
            tl_sh("qemu-img info -f qcow2 '%s' >&2", img);
        }
    }
    st = tl_sh("qemu-img check -q -f qcow2 '%s'", img);
    if (st != 0) {
        IFAIL("%s: qemu-img check of the fresh image exited %d", what, st);
        tl_sh("qemu-img check -f qcow2 '%s' 2>&1 | head -20 >&2", img);
        goto out;
    }

    /* the library's workload */
    r = open_lib(img, 0, 0, engines[idx % 3], idx % 2 ? FQ_CACHE_WRITEBACK : FQ_CACHE_NONE, &im, err);
    if (r < 0) {
        IFAIL("%s: fq_open = %d: %s", what, r, err);
        goto out;
    }
    r = lib_workload(im, model, c->size, cs, &g, 80, what);
    st = fq_close(im);
    if (r)
        goto out;
    if (st != 0)
        IFAIL("%s: fq_close = %d", what, st);
    st = tl_sh("qemu-img check -q -f qcow2 '%s'", img);
    if (st != 0) {
        IFAIL("%s: qemu-img check after the library's writes exited %d", what, st);
        tl_sh("qemu-img check -f qcow2 '%s' 2>&1 | head -20 >&2", img);
    }
    if (write_file(mraw, model, c->size) == 0) {
        st = tl_sh("qemu-img compare -q -f qcow2 -F raw '%s' '%s'", img, mraw);
        if (st != 0) {
            IFAIL("%s: qemu-img compare with the model exited %d", what, st);
            tl_sh("qemu-img compare -f qcow2 -F raw '%s' '%s' >&2", img, mraw);
        }
    }
    /* qemu-img convert output equals the library's own reads */
    if (qemu_to_raw(img, raw, conv, c->size) == 0)
        lib_compare(img, conv, c->size, engines[(idx + 1) % 3], FQ_CACHE_WRITEBACK, &g, what);
    lib_check(img, what);

    /* QEMU writes on top; the library reads what QEMU wrote */
    qemu_io_cmds(&g, c->size, cs, 25, cmds, sizeof(cmds));
    st = tl_sh("qemu-io -t unsafe -f qcow2%s '%s' >/dev/null", cmds, img);
    if (st != 0) {
        IFAIL("%s: qemu-io on the library's image exited %d", what, st);
        goto out;
    }
    if (qemu_to_raw(img, raw, conv, c->size) == 0 &&
        lib_compare(img, conv, c->size, engines[(idx + 2) % 3], FQ_CACHE_NONE, &g, what))
        fprintf(stderr, "  qemu-io commands:%s\n", cmds);
out:
    free(model);
    free(conv);
    if (!tl_failures) {
        unlink(img);
        unlink(raw);
        unlink(mraw);
    }
}

/* ---- N: nesting, a qcow2 image stored in the guest view of another ---- */

#define NEST_JSON "'json:{\"driver\":\"qcow2\",\"file\":{\"driver\":\"qcow2\"," \
                  "\"file\":{\"driver\":\"file\",\"filename\":\"%s\"}}}'"

/* QEMU builds the nested image (the inner file's bytes copied into the
 * outer image's guest view); the library opens it with file_format
 * "qcow2", reads it, writes to it; QEMU checks and compares the result. */
static void part_n(uint64_t seed)
{
    static const struct icase nc = { "nested", "cluster_size=4k", 16 * MiB, 0 };
    const char *inner = tl_path("n-inner.qcow2"), *outer = tl_path("n-outer.qcow2");
    const char *raw = tl_path("n.raw"), *mraw = tl_path("n-model.raw");
    uint8_t *ref = malloc(nc.size);
    char cmds[16384], err[FQ_ERR_MAX];
    struct tl_rng g;
    struct fq_image *im;
    int st, r;

    g_part = 'N';
    g_case = &nc;
    tl_rng_seed(&g, seed ^ 0x4e);
    unlink(inner);
    unlink(outer);
    qemu_io_cmds(&g, nc.size, 4096, 40, cmds, sizeof(cmds));
    st = tl_sh("qemu-img create -q -f qcow2 -o cluster_size=4k '%s' %" PRIu64 " && "
               "qemu-io -t unsafe -f qcow2%s '%s' >/dev/null && truncate -s 32M '%s' && "
               "qemu-img create -q -f qcow2 -o cluster_size=64k '%s' 32M && "
               "qemu-img convert -t unsafe -n -f raw -O qcow2 '%s' '%s' && "
               "qemu-img convert -t unsafe -O raw " NEST_JSON " '%s'",
               inner, nc.size, cmds, inner, inner, outer, inner, outer, outer, raw);
    if (st != 0) {
        IFAIL("building the nested image with qemu exited %d", st);
        goto out;
    }
    tl_read_file(raw, ref, nc.size, 0);
    g_file_format = "qcow2";
    if (lib_compare(outer, ref, nc.size, FQ_ENGINE_THREADS, FQ_CACHE_WRITEBACK, &g, "N/read")) {
        fprintf(stderr, "  qemu-io commands:%s\n", cmds);
        goto out;
    }
    lib_check(outer, "N/check");
    r = open_lib(outer, 0, 0, FQ_ENGINE_IO_URING, FQ_CACHE_NONE, &im, err);
    if (r < 0) {
        IFAIL("N: read-write fq_open of the nested image = %d: %s", r, err);
        goto out;
    }
    r = lib_workload(im, ref, nc.size, 4096, &g, 60, "N/write");
    st = fq_close(im);
    if (r)
        goto out;
    if (st != 0)
        IFAIL("N: fq_close = %d", st);
    st = tl_sh("qemu-img check -q " NEST_JSON, outer);
    if (st != 0)
        IFAIL("N: qemu-img check of the nested image after the library wrote exited %d", st);
    st = tl_sh("qemu-img check -q -f qcow2 '%s'", outer);
    if (st != 0)
        IFAIL("N: qemu-img check of the outer image exited %d", st);
    if (write_file(mraw, ref, nc.size) == 0) {
        st = tl_sh("qemu-img compare -q -F raw " NEST_JSON " '%s'", outer, mraw);
        if (st != 0)
            IFAIL("N: qemu-img compare of the nested image with the model exited %d", st);
    }
    lib_check(outer, "N/check after writes");
out:
    g_file_format = NULL;
    free(ref);
    if (!tl_failures) {
        unlink(inner);
        unlink(outer);
        unlink(raw);
        unlink(mraw);
    }
}

/* ---- S: internal snapshots (shared clusters) and C: compressed clusters ---- */

/* QEMU writes data and takes an internal snapshot, so every data cluster
 * has refcount 2 and no COPIED flag; the library's writes must copy, not
 * overwrite: the snapshot still reads as before, check passes. */
static void part_s(uint64_t seed)
{
    static const struct icase sc = { "snapshot", "cluster_size=4k,refcount_bits=2", 8 * MiB, 0 };
    const char *img = tl_path("s.qcow2"), *raw = tl_path("s.raw"), *snap = tl_path("s-snap.raw");
    const char *mraw = tl_path("s-model.raw");
    uint8_t *before = malloc(sc.size), *model = malloc(sc.size), *after = malloc(sc.size);
    char cmds[16384], err[FQ_ERR_MAX];
    struct tl_rng g;
    struct fq_image *im;
    int st, r;

    g_part = 'S';
    g_case = &sc;
    tl_rng_seed(&g, seed ^ 0x53);
    unlink(img);
    qemu_io_cmds(&g, sc.size, 4096, 30, cmds, sizeof(cmds));
    st = tl_sh("qemu-img create -q -f qcow2 -o %s '%s' %" PRIu64 " && "
               "qemu-io -t unsafe -f qcow2 -c 'write -P 0x3c 0 %" PRIu64 "'%s '%s' >/dev/null && "
               "qemu-img snapshot -c s1 '%s'", sc.opts, img, sc.size, sc.size, cmds, img, img);
    if (st != 0) {
        IFAIL("building the snapshot image with qemu exited %d", st);
        goto out;
    }
    if (qemu_to_raw(img, raw, before, sc.size) < 0)
        goto out;
    memcpy(model, before, sc.size);
    if (lib_compare(img, before, sc.size, FQ_ENGINE_SYNC, FQ_CACHE_WRITEBACK, &g, "S/read"))
        goto out;
    lib_check(img, "S/check");
    r = open_lib(img, 0, 0, FQ_ENGINE_THREADS, FQ_CACHE_WRITEBACK, &im, err);
    if (r < 0) {
        IFAIL("S: read-write fq_open of an image with a snapshot = %d: %s", r, err);
        goto out;
    }
    r = lib_workload(im, model, sc.size, 4096, &g, 60, "S/write");
    st = fq_close(im);
    if (r)
        goto out;
    if (st != 0)
        IFAIL("S: fq_close = %d", st);
    st = tl_sh("qemu-img check -q -f qcow2 '%s'", img);
    if (st != 0) {
        IFAIL("S: qemu-img check after the library wrote over shared clusters exited %d", st);
        tl_sh("qemu-img check -f qcow2 '%s' 2>&1 | head -20 >&2", img);
    }
    st = tl_sh("qemu-img convert -U -t unsafe -f qcow2 -l snapshot.name=s1 -O raw '%s' '%s'", img, snap);
    if (st != 0) {
        IFAIL("S: qemu-img convert of the snapshot exited %d", st);
    } else {
        tl_read_file(snap, after, sc.size, 0);
        if (memcmp(after, before, sc.size)) {
            IFAIL("S: the library's writes changed the internal snapshot's data");
            tl_dump_diff(before, after, sc.size, 0);
        }
    }
    if (write_file(mraw, model, sc.size) == 0 &&
        tl_sh("qemu-img compare -q -f qcow2 -F raw '%s' '%s'", img, mraw) != 0)
        IFAIL("S: qemu-img compare of the active image with the model failed");
    lib_check(img, "S/check after writes");
out:
    free(before);
    free(model);
    free(after);
    if (!tl_failures) {
        unlink(img);
        unlink(raw);
        unlink(snap);
        unlink(mraw);
    }
}

/* QEMU writes a compressed image (zlib and zstd); the library must read
 * it and write over compressed clusters (partly, too). */
static void part_c(uint64_t seed, const char *ctype)
{
    static const struct icase cc = { "compressed", "cluster_size=64k", 8 * MiB, 0 };
    const char *src = tl_path("c-src.raw"), *img = tl_path("c.qcow2"), *mraw = tl_path("c-model.raw");
    uint8_t *model = calloc(1, cc.size);
    char err[FQ_ERR_MAX], what[64];
    struct tl_rng g;
    struct fq_image *im;
    int st, r;

    g_part = 'C';
    g_case = &cc;
    snprintf(what, sizeof(what), "C/%s", ctype);
    tl_rng_seed(&g, seed ^ 0x43);
    /* compressible content: runs of a few byte values, some zero clusters */
    for (uint64_t off = 0; off < cc.size;) {
        uint64_t n = tl_range(&g, 1, 20000);
        if (n > cc.size - off)
            n = cc.size - off;
        if (!tl_pct(&g, 20))
            memset(model + off, (int)tl_range(&g, 0, 3) * 0x41, n);
        if (tl_pct(&g, 10))
            tl_fill_pattern(model + off, n / 4, off, off);   /* incompressible bits */
        off += n;
    }
    if (write_file(src, model, cc.size) < 0)
        goto out;
    unlink(img);
    st = tl_sh("qemu-img convert -t unsafe -c -f raw -O qcow2 -o %s,compression_type=%s '%s' '%s'",
               cc.opts, ctype, src, img);
    if (st != 0) {
        IFAIL("%s: qemu-img convert -c exited %d", what, st);
        goto out;
    }
    if (lib_compare(img, model, cc.size, FQ_ENGINE_THREADS, FQ_CACHE_WRITEBACK, &g, what))
        goto out;
    lib_check(img, what);
    r = open_lib(img, 0, 0, FQ_ENGINE_IO_URING, FQ_CACHE_NONE, &im, err);
    if (r < 0) {
        IFAIL("%s: read-write fq_open of a compressed image = %d: %s", what, r, err);
        goto out;
    }
    r = lib_workload(im, model, cc.size, 65536, &g, 60, what);
    st = fq_close(im);
    if (r)
        goto out;
    if (st != 0)
        IFAIL("%s: fq_close = %d", what, st);
    st = tl_sh("qemu-img check -q -f qcow2 '%s'", img);
    if (st != 0) {
        IFAIL("%s: qemu-img check after the library wrote over compressed clusters exited %d", what, st);
        tl_sh("qemu-img check -f qcow2 '%s' 2>&1 | head -20 >&2", img);
    }
    if (write_file(mraw, model, cc.size) == 0 &&
        tl_sh("qemu-img compare -q -f qcow2 -F raw '%s' '%s'", img, mraw) != 0)
        IFAIL("%s: qemu-img compare with the model failed", what);
    lib_check(img, what);
out:
    free(model);
    if (!tl_failures) {
        unlink(src);
        unlink(img);
        unlink(mraw);
    }
}

int main(int argc, char **argv)
{
    uint64_t seed = tl_seed_arg(argc, argv, 1);
    const char *only = argc > 2 && argv[2][0] ? argv[2] : NULL;

    tl_name = "test-interop";
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (!tl_have("qemu-img") || !tl_have("qemu-io")) {
        fprintf(stderr, "test-interop: qemu-img or qemu-io not found, skipped\n");
        return TL_SKIP;
    }
    tl_mkdir();
    have_uring = tl_uring_ok();
    g_seed = seed;
    printf("test-interop: seed %" PRIu64 "\n", seed);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        if (only && !strstr(cases[i].name, only))
            continue;
        int before = tl_failures;
        time_t t0 = time(NULL);
        g_case = &cases[i];
        part_a(&cases[i], i, seed ^ (uint64_t)(i + 1) * 0x9e3779b97f4a7c15ull);
        part_b(&cases[i], i, seed ^ (uint64_t)(i + 1) * 0x9e3779b97f4a7c15ull);
        printf("test-interop: %-24s %s (%lds)\n", cases[i].name,
               tl_failures > before ? "FAIL" : "ok", (long)(time(NULL) - t0));
    }
    if (!only || strstr("snapshot", only)) {
        int before = tl_failures;
        time_t t0 = time(NULL);
        part_s(seed);
        printf("test-interop: %-24s %s (%lds)\n", "snapshot", tl_failures > before ? "FAIL" : "ok",
               (long)(time(NULL) - t0));
    }
    if (!only || strstr("compressed", only)) {
        int before = tl_failures;
        time_t t0 = time(NULL);
        part_c(seed, "zlib");
        part_c(seed, "zstd");
        printf("test-interop: %-24s %s (%lds)\n", "compressed", tl_failures > before ? "FAIL" : "ok",
               (long)(time(NULL) - t0));
    }
    if (!only || strstr("nested", only)) {
        int before = tl_failures;
        time_t t0 = time(NULL);
        part_n(seed);
        printf("test-interop: %-24s %s (%lds)\n", "nested", tl_failures > before ? "FAIL" : "ok",
               (long)(time(NULL) - t0));
    }
    if (tl_failures) {
        fprintf(stderr, "test-interop: %d failure(s), seed %" PRIu64 "\n", tl_failures, seed);
        return 1;
    }
    return 0;
}
