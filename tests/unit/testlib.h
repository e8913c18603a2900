/* testlib.h: small helpers shared by the C tests: a seeded PRNG, a scratch
 * directory, running peers (qemu-img, qemu-io), and failure reporting.
 *
 * Every test prints what it needs to be reproduced (seed, configuration)
 * before exiting 1; exit 77 means "skipped" (a peer program is missing).
 * SPDX-License-Identifier: MIT
 */
#ifndef FQ_TESTLIB_H
#define FQ_TESTLIB_H

/* Sanitizer builds run several times slower: the tests then walk a
 * sample (a stride over the same space) to stay within tens of seconds. */
#if defined(__SANITIZE_ADDRESS__)
#define WL_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define WL_SANITIZED 1
#endif
#endif
#ifndef WL_SANITIZED
#define WL_SANITIZED 0
#endif

#ifndef _GNU_SOURCE
#define _GNU_SOURCE   /* O_DIRECT; the build defines it, standalone use may not */
#endif

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fastqcow.h"

#define TL_SKIP 77

/* Name of the running test, for messages. */
static const char *tl_name __attribute__((unused)) = "test";

#define TL_MSG(...)                                                            \
    do {                                                                       \
        fprintf(stderr, "%s: ", tl_name);                                      \
        fprintf(stderr, __VA_ARGS__);                                          \
        fputc('\n', stderr);                                                   \
    } while (0)

/* Assert in tests that keep a running failure count `tl_failures`. */
static int tl_failures __attribute__((unused));
#define TL_CHECK(cond, ...)                                                    \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "%s:%d: FAIL: %s: ", __FILE__, __LINE__, #cond);  \
            fprintf(stderr, __VA_ARGS__);                                      \
            fputc('\n', stderr);                                               \
            tl_failures++;                                                     \
        }                                                                      \
    } while (0)

/* ---- PRNG: splitmix64 seeding a xoshiro256** state ---- */

struct tl_rng {
    uint64_t s[4];
};

static inline uint64_t tl_splitmix(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline void tl_rng_seed(struct tl_rng *r, uint64_t seed)
{
    for (int i = 0; i < 4; i++)
        r->s[i] = tl_splitmix(&seed);
}

static inline uint64_t tl_rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static inline uint64_t tl_rand(struct tl_rng *r)
{
    uint64_t *s = r->s;
    uint64_t res = tl_rotl(s[1] * 5, 7) * 9, t = s[1] << 17;

    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = tl_rotl(s[3], 45);
    return res;
}

/* Uniform in [0, n); n > 0. */
static inline uint64_t tl_below(struct tl_rng *r, uint64_t n)
{
    return n ? tl_rand(r) % n : 0;
}

/* Uniform in [lo, hi]. */
static inline uint64_t tl_range(struct tl_rng *r, uint64_t lo, uint64_t hi)
{
    return lo + tl_below(r, hi - lo + 1);
}

/* True with probability pct percent. */
static inline int tl_pct(struct tl_rng *r, unsigned pct)
{
    return tl_below(r, 100) < pct;
}

/* A seed from argv[i] if given (decimal or 0x hex), else from the clock. */
static inline uint64_t tl_seed_arg(int argc, char **argv, int i)
{
    if (argc > i && argv[i][0])
        return strtoull(argv[i], NULL, 0);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000003ull ^ (uint64_t)ts.tv_nsec ^ (uint64_t)getpid() << 20;
}

/* ---- content that identifies where it was written ---- */

/* Byte at guest offset `off` written by write number `gen`: a mix of both,
 * so a misplaced buffer offset or a stale cluster shows up as a mismatch. */
static inline uint64_t tl_pattern_word(uint64_t gen, uint64_t off)
{
    uint64_t x = (off >> 3) * 0x9e3779b97f4a7c15ull ^ (gen + 1) * 0xd1b54a32d192ed03ull;
    return x ^ (x >> 29);
}

static inline uint8_t tl_pattern(uint64_t gen, uint64_t off)
{
    return (uint8_t)(tl_pattern_word(gen, off) >> (8 * (off & 7)));
}

static inline void tl_fill_pattern(uint8_t *buf, size_t len, uint64_t gen, uint64_t off)
{
    size_t i = 0;

    for (; i < len && ((off + i) & 7); i++)
        buf[i] = tl_pattern(gen, off + i);
    for (; i + 8 <= len; i += 8) {
        uint64_t x = tl_pattern_word(gen, off + i);
        for (int b = 0; b < 8; b++)
            buf[i + (size_t)b] = (uint8_t)(x >> (8 * b));
    }
    for (; i < len; i++)
        buf[i] = tl_pattern(gen, off + i);
}

/* Print a short hex dump of `want` and `got` around the first mismatch. */
static inline void tl_dump_diff(const uint8_t *want, const uint8_t *got, size_t len,
                                uint64_t base)
{
    size_t i = 0, n = 0;

    while (i < len && want[i] == got[i])
        i++;
    if (i == len)
        return;
    for (size_t j = i; j < len; j++)
        n += want[j] != got[j];
    fprintf(stderr, "  first mismatch at offset %" PRIu64 " (0x%" PRIx64 "), %zu of %zu bytes differ\n",
            base + i, base + i, n, len);
    size_t s = i & ~(size_t)15, e = s + 32 < len ? s + 32 : len;
    fprintf(stderr, "  want:");
    for (size_t j = s; j < e; j++)
        fprintf(stderr, " %02x", want[j]);
    fprintf(stderr, "\n  got: ");
    for (size_t j = s; j < e; j++)
        fprintf(stderr, " %02x", got[j]);
    fputc('\n', stderr);
}

/* ---- scratch directory ---- */

static char tl_dir[4096] __attribute__((unused));

/* Remove the scratch directory (called at exit unless TL_KEEP is set). */
static inline void tl_cleanup_dir(void)
{
    char cmd[4200];

    if (!tl_dir[0] || getenv("TL_KEEP"))
        return;
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tl_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "%s: could not remove %s\n", tl_name, tl_dir);
    tl_dir[0] = '\0';
}

/* Create a scratch directory under $TEST_TMPDIR, or the current directory
 * (the build dir under meson, a real file system where O_DIRECT works).
 * Returns its path; exits 1 on failure. */
static inline const char *tl_mkdir(void)
{
    const char *base = getenv("TEST_TMPDIR");

    if (!base || !*base)
        base = ".";
    snprintf(tl_dir, sizeof(tl_dir), "%.3900s/%.64s.XXXXXX", base, tl_name);
    if (!mkdtemp(tl_dir)) {
        fprintf(stderr, "%s: mkdtemp %s: %s\n", tl_name, tl_dir, strerror(errno));
        exit(1);
    }
    char *abs = realpath(tl_dir, NULL);
    if (abs) {
        snprintf(tl_dir, sizeof(tl_dir), "%s", abs);
        free(abs);
    }
    atexit(tl_cleanup_dir);
    return tl_dir;
}

/* Path of `name` inside the scratch directory (static buffer rotation). */
static inline const char *tl_path(const char *name)
{
    static char bufs[8][sizeof(tl_dir) + 256];
    static int k;
    char *p = bufs[k++ & 7];

    snprintf(p, sizeof(bufs[0]), "%.4095s/%.250s", tl_dir, name);
    return p;
}

/* ---- running peers ---- */

/* Run a shell command; returns its exit status (or -1 if it did not exit).
 * The command is echoed when TL_VERBOSE is set. */
static inline int tl_sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static inline int tl_sh(const char *fmt, ...)
{
    char cmd[8192];
    va_list ap;
    int st;

    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    if (getenv("TL_VERBOSE"))
        fprintf(stderr, "+ %s\n", cmd);
    fflush(NULL);
    st = system(cmd);
    if (st == -1 || !WIFEXITED(st))
        return -1;
    return WEXITSTATUS(st);
}

/* True if `prog` runs (e.g. "qemu-img --version"). */
static inline int tl_have(const char *prog)
{
    return tl_sh("%s --version >/dev/null 2>&1", prog) == 0;
}

/* True if O_DIRECT opens work in the scratch directory. */
static inline int tl_direct_ok(void)
{
    const char *p = tl_path(".direct-probe");
    int fd = open(p, O_RDWR | O_CREAT | O_DIRECT, 0644);

    if (fd < 0)
        return 0;
    close(fd);
    unlink(p);
    return 1;
}

/* Read a whole file (up to `len` bytes, the rest zero) into `buf`. */
static inline int tl_read_file(const char *path, void *buf, size_t len, uint64_t off)
{
    int fd = open(path, O_RDONLY);
    size_t done = 0;

    if (fd < 0)
        return -errno;
    while (done < len) {
        ssize_t n = pread(fd, (uint8_t *)buf + done, len - done, (off_t)(off + done));
        if (n < 0) {
            int r = -errno;
            close(fd);
            return r;
        }
        if (n == 0)
            break;
        done += (size_t)n;
    }
    memset((uint8_t *)buf + done, 0, len - done);
    close(fd);
    return 0;
}

/* Name of an engine kind, for configuration strings. */
static inline const char *tl_engine_name(enum fq_engine_kind k)
{
    switch (k) {
    case FQ_ENGINE_DEFAULT: return "default";
    case FQ_ENGINE_IO_URING: return "io_uring";
    case FQ_ENGINE_THREADS: return "threads";
    case FQ_ENGINE_SYNC: return "sync";
    }
    return "?";
}

static inline const char *tl_cache_name(enum fq_cache_mode m)
{
    switch (m) {
    case FQ_CACHE_WRITEBACK: return "writeback";
    case FQ_CACHE_NONE: return "none";
    case FQ_CACHE_WRITETHROUGH: return "writethrough";
    case FQ_CACHE_DIRECTSYNC: return "directsync";
    case FQ_CACHE_UNSAFE: return "unsafe";
    }
    return "?";
}

/* True if an io_uring context can be created here. */
static inline int tl_uring_ok(void)
{
    struct fq_ctx *ctx;

    if (fq_ctx_new(FQ_ENGINE_IO_URING, &ctx, NULL) < 0)
        return 0;
    fq_ctx_free(ctx);
    return 1;
}

/* Collects fq_check findings: counts them and keeps the first few. */
struct tl_msgs {
    int n;
    char first[4][256];
};

static inline void tl_msg_cb(void *opaque, const char *line)
{
    struct tl_msgs *m = opaque;

    if (m->n < 4)
        snprintf(m->first[m->n], sizeof(m->first[0]), "%s", line);
    m->n++;
}

/* ---- images ---- */

/* Create an image (cluster 0 = the format's default, version 0 = the
 * library's default), counting a failure with TL_CHECK. Returns fq_create's
 * result. */
static inline int tl_create_image(const char *path, const char *fmt, uint64_t size,
                                  uint32_t cluster, int version)
{
    struct fq_create_opts o;
    char err[FQ_ERR_MAX] = "";

    fq_create_opts_init(&o);
    o.format = fmt;
    o.size = size;
    o.cluster_size = cluster;
    if (version)
        o.version = version;
    int r = fq_create(path, &o, err);
    TL_CHECK(r == 0, "fq_create(%s, %s, size %" PRIu64 ", cluster %u) = %d: %s", path, fmt, size,
             cluster, r, err);
    return r;
}

/* Open an image (fmt NULL = probe; ctx NULL = a context of its own on
 * engine `e`), counting a failure with TL_CHECK. Returns NULL on failure. */
static inline struct fq_image *tl_open_image(const char *path, const char *fmt, int ro,
                                             enum fq_engine_kind e, struct fq_ctx *ctx)
{
    struct fq_open_opts o;
    struct fq_image *img = NULL;
    char err[FQ_ERR_MAX] = "";

    fq_open_opts_init(&o);
    o.format = fmt;
    o.readonly = ro;
    o.engine = e;
    o.ctx = ctx;
    int r = fq_open(path, &o, &img, err);
    TL_CHECK(r == 0, "fq_open(%s, %s, ro=%d) = %d: %s", path, fmt ? fmt : "probe", ro, r, err);
    return r == 0 ? img : NULL;
}

#endif
