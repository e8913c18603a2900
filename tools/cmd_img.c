/* cmd_img.c: the qemu-img compatible subcommands: create, info, check,
 * map, compare and convert.
 *
 * Output text, option letters and exit codes follow qemu-img 7.2 (they were
 * taken from running it, not from its source), so that scripts written for
 * qemu-img keep working and tests can diff the two tools byte for byte.
 * Where this file checks something the library checks too (create option
 * values), it does so only to print qemu-img's wording.
 *
 * compare and convert share one context between both images and keep up to
 * N jobs (chunks of at most CHUNK bytes) in flight; a job whose range fq_map
 * reports as reading zeros is never read. convert writes in source order
 * unless -W is given: a job's writes are submitted only after those of
 * every earlier job were submitted.
 * SPDX-License-Identifier: MIT
 */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tool.h"

#define CHUNK (1u << 20)
#define MAX_CHAIN 64
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define ALIGN_UP512(v) (((v) + 511) & ~(uint64_t)511)

enum { OUT_HUMAN, OUT_JSON };

/* ---- small helpers ------------------------------------------------------ */

/* Report a usage error the way qemu-img does. Returns the exit code 1. */
static int usage_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_err(const char *fmt, ...)
{
    va_list ap;

    fputs("fastqcow: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\nTry 'fastqcow --help' for more information\n", stderr);
    return 1;
}

/* getopt returned '?' or ':'. */
static int bad_opt(int c, char **argv)
{
    if (c == ':')
        return usage_err("option '%s' requires an argument", argv[optind - 1]);
    return usage_err("unrecognized option '%s'", argv[optind - 1]);
}

static int parse_output(const char *s, int *out)
{
    if (!strcmp(s, "human"))
        *out = OUT_HUMAN;
    else if (!strcmp(s, "json"))
        *out = OUT_JSON;
    else {
        tool_error("--output must be used with human or json as argument.");
        return -1;
    }
    return 0;
}

/* Parse a size as qemu does: a decimal (or 0x hex) integer, an optional
 * fraction (only with a suffix, unless it is zero) and one optional suffix
 * B, K, M, G, T, P or E in either case. Returns 0, -EINVAL, or -ERANGE
 * when the value exceeds INT64_MAX. */
static int qsize(const char *s, uint64_t *out)
{
    static const char sfx[] = "bkmgtpe";
    const char *p = s, *q;
    char *end;
    double frac = 0, scale = 0.1;
    uint64_t v, mult = 1;
    bool hex;

    while (isspace((unsigned char)*p))
        p++;
    q = *p == '+' ? p + 1 : p;
    if (!isdigit((unsigned char)*q))
        return -EINVAL;
    hex = q[0] == '0' && (q[1] == 'x' || q[1] == 'X');
    errno = 0;
    v = strtoull(p, &end, hex ? 16 : 10);
    if (errno == ERANGE)
        return -ERANGE;
    if (*end == '.' && !hex) {
        for (end++; isdigit((unsigned char)*end); end++, scale /= 10)
            frac += (*end - '0') * scale;
    }
    if (*end && (q = strchr(sfx, tolower((unsigned char)*end)))) {
        mult = 1ull << (10 * (q - sfx));
        if (hex && mult > 1)
            fprintf(stderr, "fastqcow: warning: Using a multiplier suffix on hex numbers is deprecated: %s\n", s);
        end++;
    } else if (frac != 0)
        return -EINVAL;
    if (*end)
        return -EINVAL;
    if (v > INT64_MAX / mult)
        return -ERANGE;
    v = v * mult + (uint64_t)(frac * (double)mult);
    if (v > INT64_MAX)
        return -ERANGE;
    *out = v;
    return 0;
}

/* qsize with qemu-img's messages for option `what`. */
static int cvtnum(const char *what, const char *s, uint64_t *out)
{
    int r = qsize(s, out);

    if (r == -ERANGE)
        tool_error("Invalid %s specified. Must be between 0 and %" PRId64 ".", what, INT64_MAX);
    else if (r < 0) {
        tool_error("Invalid %s specified. You may use k, M, G, T, P or E suffixes for", what);
        tool_error("kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.");
    }
    return r < 0 ? -1 : 0;
}

/* Size as qemu prints it: three significant digits of the largest binary
 * unit that keeps the number at or above 1000 of the unit below. */
static void size_str(uint64_t v, char *buf, size_t n)
{
    static const char *unit[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB" };
    double div = 1;
    int i = 0;

    while (i < 6 && (double)v >= 1000.0 * div) {
        i++;
        div *= 1024;
    }
    snprintf(buf, n, "%0.3g %s", (double)v / div, unit[i]);
}

/* "dir/of/base" + "rel": how qemu names a backing file relative to its
 * overlay. Absolute names and overlays without a directory are unchanged. */
static void path_combine(const char *base, const char *rel, char *out, size_t n)
{
    const char *slash = strrchr(base, '/');

    if (rel[0] == '/' || !slash)
        snprintf(out, n, "%s", rel);
    else
        snprintf(out, n, "%.*s%s", (int)(slash - base + 1), base, rel);
}

static void json_str(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c == '\n')
            fputs("\\n", stdout);
        else if (c == '\t')
            fputs("\\t", stdout);
        else if (c < 0x20)
            printf("\\u%04x", c);
        else
            putchar(c);
    }
    putchar('"');
}

/* A pretty JSON writer with qemu's layout: four-space indent, one member
 * per line. The caller emits members in qemu's (hash table) order. */
struct jw {
    int depth;
    bool first[8];
};

static void jw_key(struct jw *w, const char *key)
{
    if (w->depth > 0) {
        fputs(w->first[w->depth] ? "\n" : ",\n", stdout);
        printf("%*s", 4 * w->depth, "");
    }
    w->first[w->depth] = false;
    if (key)
        printf("\"%s\": ", key);
}

static void jw_open(struct jw *w, const char *key, char c)
{
    jw_key(w, key);
    putchar(c);
    w->first[++w->depth] = true;
}

static void jw_close(struct jw *w, char c)
{
    w->depth--;
    printf("\n%*s%c", 4 * w->depth, "", c);
    if (w->depth == 0)
        putchar('\n');
}

static void jw_int(struct jw *w, const char *key, int64_t v)
{
    jw_key(w, key);
    printf("%" PRId64, v);
}

static void jw_bool(struct jw *w, const char *key, bool v)
{
    jw_key(w, key);
    fputs(v ? "true" : "false", stdout);
}

static void jw_str(struct jw *w, const char *key, const char *v)
{
    jw_key(w, key);
    json_str(v);
}

/* Open an image, printing the library's message on failure. */
static struct fq_image *open_img(const char *file, const struct fq_open_opts *o)
{
    char err[FQ_ERR_MAX] = "";
    struct fq_image *img;
    int r = fq_open(file, o, &img, err);

    if (r < 0) {
        if (err[0])
            tool_error("%s", err);
        else
            tool_error("Could not open '%s': %s", file, strerror(-r));
        return NULL;
    }
    return img;
}

static bool buf_is_zero(const uint8_t *p, size_t n)
{
    if (n < 16) {
        for (size_t i = 0; i < n; i++)
            if (p[i])
                return false;
        return true;
    }
    for (int i = 0; i < 16; i++)
        if (p[i])
            return false;
    return memcmp(p, p + 16, n - 16) == 0;
}

static uint8_t *alloc_buf(size_t n)
{
    void *p = NULL;

    return posix_memalign(&p, 4096, n) ? NULL : p;
}

/* ---- progress ("    (12.00/100%)\r") ------------------------------------ */

struct progress {
    bool on;
    double last;
};

static void progress_print(struct progress *p, uint64_t done, uint64_t total, bool final)
{
    double pct = total ? (double)done * 100.0 / (double)total : 100.0;

    if (!p->on || (!final && pct - p->last < 1.0 && !(pct == 0 && p->last < 0)))
        return;
    p->last = pct;
    printf("    (%3.2f/100%%)\r%s", pct, final ? "\n" : "");
    fflush(stdout);
}

/* ---- create --------------------------------------------------------------- */

enum otype { OT_SIZE, OT_BOOL, OT_NUM, OT_STR };

/* The -o keys, in the order qemu-img prints them in "Formatting ...". */
enum { K_CLUSTER, K_EXTL2, K_PREALLOC, K_COMPR, K_SIZE, K_BFILE, K_BFMT, K_COMPAT,
       K_LAZY, K_REFBITS, K_NUM };
static const struct {
    const char *key;
    enum otype type;
    bool raw;               /* also valid for raw */
    const char *def;        /* printed for qcow2 when not given */
    const char *help;
} okeys[K_NUM] = {
    [K_CLUSTER] = { "cluster_size", OT_SIZE, false, "65536", "qcow2 cluster size" },
    [K_EXTL2] = { "extended_l2", OT_BOOL, false, "off", "Extended L2 tables" },
    [K_PREALLOC] = { "preallocation", OT_STR, true, NULL,
                     "Preallocation mode (allowed values: off, metadata, falloc, full)" },
    [K_COMPR] = { "compression_type", OT_STR, false, "zlib",
                  "Compression method used for image cluster compression" },
    [K_SIZE] = { "size", OT_SIZE, true, NULL, "Virtual disk size" },
    [K_BFILE] = { "backing_file", OT_STR, false, NULL, "File name of a base image" },
    [K_BFMT] = { "backing_fmt", OT_STR, false, NULL, "Image format of the base image" },
    [K_COMPAT] = { "compat", OT_STR, false, NULL, "Compatibility level (v2 [0.10] or v3 [1.1])" },
    [K_LAZY] = { "lazy_refcounts", OT_BOOL, false, "off", "Postpone refcount updates" },
    [K_REFBITS] = { "refcount_bits", OT_NUM, false, "16", "Width of a reference count entry in bits" },
};

struct cspec {
    const char *file, *fmt;
    const char *val[K_NUM];  /* as given (NULL = not given) */
    char norm[K_NUM][32];    /* numbers normalised to decimal */
    uint64_t num[K_NUM];
    int on[K_NUM];           /* booleans */
    bool quiet, unsafe, print;
};

static void create_opts_help(const char *fmt)
{
    printf("Supported %s options:\n", fmt);
    for (int k = 0; k < K_NUM; k++) {
        static const char *tn[] = { "size", "bool (on/off)", "num", "str" };
        char left[64];
        if (!strcmp(fmt, "raw") && k != K_SIZE)
            continue;
        snprintf(left, sizeof(left), "%s=<%s>", okeys[k].key, tn[okeys[k].type]);
        printf("  %-22s - %s\n", left, okeys[k].help);
    }
    printf("\nThe protocol level may support further options.\n"
           "Specify the target filename to include those options.\n");
}

/* Parse one -o list into `c`. Returns 0, 1 after printing help, -1 on error. */
static int cspec_parse(struct cspec *c, char *list)
{
    char *save = NULL;

    for (char *tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(tok, '=');
        int k;

        if (!strcmp(tok, "help") || !strcmp(tok, "?")) {
            create_opts_help(c->fmt);
            return 1;
        }
        if (eq)
            *eq = '\0';
        for (k = 0; k < K_NUM; k++)
            if (!strcmp(tok, okeys[k].key) && (okeys[k].raw || strcmp(c->fmt, "raw")))
                break;
        if (k == K_NUM || !eq) {
            tool_error("%s: Invalid parameter '%s'", c->file, tok);
            return -1;
        }
        const char *v = eq + 1;
        char *end;
        switch (okeys[k].type) {
        case OT_SIZE:
            if (qsize(v, &c->num[k]) < 0) {
                tool_error("%s: Parameter '%s' expects a non-negative number below 2^64", c->file, tok);
                fprintf(stderr, "Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\n"
                        "and exabytes, respectively.\n");
                return -1;
            }
            break;
        case OT_NUM:
            errno = 0;
            c->num[k] = strtoull(v, &end, 0);
            if (!*v || *end || errno || *v == '-') {
                tool_error("%s: Parameter '%s' expects a number", c->file, tok);
                return -1;
            }
            break;
        case OT_BOOL:
            if (!strcmp(v, "on") || !strcmp(v, "true") || !strcmp(v, "yes"))
                c->on[k] = 1;
            else if (!strcmp(v, "off") || !strcmp(v, "false") || !strcmp(v, "no"))
                c->on[k] = 0;
            else {
                tool_error("%s: Parameter '%s' expects 'on' or 'off'", c->file, tok);
                return -1;
            }
            break;
        case OT_STR:
            break;
        }
        c->val[k] = v;
        snprintf(c->norm[k], sizeof(c->norm[k]), "%" PRIu64, c->num[k]);
    }
    return 0;
}

/* The qcow2 driver's checks, with qemu-img's wording. */
static const char *qcow2_opts_error(struct cspec *c, int *version)
{
    const char *compat = c->val[K_COMPAT], *ct = c->val[K_COMPR];
    uint64_t cs = c->val[K_CLUSTER] ? c->num[K_CLUSTER] : 65536;
    uint64_t rb = c->val[K_REFBITS] ? c->num[K_REFBITS] : 16;
    static char msg[128];

    *version = 3;
    if (compat && (!strcmp(compat, "0.10") || !strcmp(compat, "v2")))
        *version = 2;
    else if (compat && strcmp(compat, "1.1") && strcmp(compat, "v3")) {
        snprintf(msg, sizeof(msg), "Parameter 'version' does not accept value '%.60s'", compat);
        return msg;
    }
    if (cs < 512 || cs > (2u << 20) || (cs & (cs - 1)))
        return "Cluster size must be a power of two between 512 and 2048k";
    if (rb == 0 || rb > 64 || (rb & (rb - 1)))
        return "Refcount width must be a power of two and may not exceed 64 bits";
    if (*version == 2 && rb != 16)
        return "Different refcount widths than 16 bits require compatibility level 1.1 or above (use version=v3 or greater)";
    if (*version == 2 && c->on[K_LAZY])
        return "Lazy refcounts only supported with compatibility level 1.1 and above (use version=v3 or greater)";
    if (*version == 2 && c->on[K_EXTL2])
        return "Extended L2 entries are only supported with compatibility level 1.1 and above (use version=v3 or greater)";
    if (c->on[K_EXTL2] && cs < 16384)
        return "Extended L2 entries are only supported with cluster sizes of at least 16384 bytes";
    if (ct && strcmp(ct, "zlib") && strcmp(ct, "zstd")) {
        snprintf(msg, sizeof(msg), "Parameter 'compression-type' does not accept value '%.60s'", ct);
        return msg;
    }
    if (ct && !strcmp(ct, "zstd") && *version == 2)
        return "Non-zlib compression type is only supported with compatibility level 1.1 and above (use version=v3 or greater)";
    /* the L1 table may hold at most 32 MiB of entries */
    uint64_t per_l2 = cs / (c->on[K_EXTL2] ? 16 : 8) * cs;
    if ((c->num[K_SIZE] + per_l2 - 1) / per_l2 > (32u << 20) / 8)
        return "The image size is too large for file format 'qcow2' (try using a larger cluster size)";
    return NULL;
}

/* Create c->file from a parsed spec: the checks and messages of qemu-img
 * create, the "Formatting" line (if c->print), then fq_create. Returns 0
 * or -1 after printing the error. */
static int create_from_spec(struct cspec *c)
{
    bool qcow2 = !strcmp(c->fmt, "qcow2");
    const char *pa = c->val[K_PREALLOC];
    char err[FQ_ERR_MAX] = "", list[512] = "";
    struct fq_create_opts o;
    int version = 3;

    if (strcmp(c->fmt, "raw") && !qcow2) {
        tool_error("%s: Unknown file format '%s'", c->file, c->fmt);
        return -1;
    }
    if (c->val[K_BFILE]) {
        char path[4096];
        struct fq_open_opts oo;
        struct fq_image *b;

        if (!qcow2) {
            tool_error("%s: Backing file not supported for file format '%s'", c->file, c->fmt);
            return -1;
        }
        char detected[16] = "";
        if (!c->unsafe) {
            path_combine(c->file, c->val[K_BFILE], path, sizeof(path));
            fq_open_opts_init(&oo);
            oo.format = c->val[K_BFMT];
            oo.readonly = 1;
            oo.no_backing = 1;
            if (fq_open(path, &oo, &b, err) < 0) {
                tool_error("%s: %s", c->file, err);
                fprintf(stderr, "Could not open backing image.\n");
                return -1;
            }
            snprintf(detected, sizeof(detected), "%s", fq_format(b));
            if (!c->val[K_SIZE]) {
                c->num[K_SIZE] = fq_size(b);
                snprintf(c->norm[K_SIZE], sizeof(c->norm[K_SIZE]), "%" PRIu64, c->num[K_SIZE]);
                c->val[K_SIZE] = c->norm[K_SIZE];
            }
            fq_close(b);
        }
        if (!c->val[K_BFMT]) {
            tool_error("%s: Backing file specified without backing format", c->file);
            if (detected[0])
                fprintf(stderr, "Detected format of %s.\n", detected);
            return -1;
        }
    }
    if (!c->val[K_SIZE]) {
        tool_error("%s: Image creation needs a size parameter", c->file);
        return -1;
    }
    if (c->print && !c->quiet) {
        printf("Formatting '%s', fmt=%s", c->file, c->fmt);
        for (int k = 0; k < K_NUM; k++) {
            const char *v = c->val[k] ? c->val[k] : qcow2 ? okeys[k].def : NULL;
            if (c->val[k] && okeys[k].type != OT_STR && okeys[k].type != OT_BOOL)
                v = c->norm[k];
            if (v && (qcow2 || okeys[k].raw) && (qcow2 || k != K_PREALLOC))
                printf(" %s=%s", okeys[k].key, v);
        }
        if (!qcow2 && pa)
            printf(" preallocation=%s", pa);
        putchar('\n');
        fflush(stdout);
    }
    if (pa && strcmp(pa, "off") && strcmp(pa, "metadata") && strcmp(pa, "falloc") && strcmp(pa, "full")) {
        if (qcow2)
            tool_error("%s: Parameter 'preallocation' does not accept value '%s'", c->file, pa);
        else
            tool_error("%s: invalid parameter value: %s", c->file, pa);
        return -1;
    }
    if (qcow2) {
        const char *m = qcow2_opts_error(c, &version);
        if (m) {
            tool_error("%s: %s", c->file, m);
            return -1;
        }
    }
    /* Hand the library normalised values (it parses base 10, on/off). */
    fq_create_opts_init(&o);
    o.format = c->fmt;
    o.size = ALIGN_UP512(c->num[K_SIZE]);
    if (qcow2) {
        snprintf(list, sizeof(list), "compat=%s,lazy_refcounts=%s,extended_l2=%s",
                 version == 2 ? "0.10" : "1.1", c->on[K_LAZY] ? "on" : "off",
                 c->on[K_EXTL2] ? "on" : "off");
        if (c->val[K_CLUSTER])
            snprintf(list + strlen(list), sizeof(list) - strlen(list), ",cluster_size=%" PRIu64,
                     c->num[K_CLUSTER]);
        if (c->val[K_REFBITS])
            snprintf(list + strlen(list), sizeof(list) - strlen(list), ",refcount_bits=%" PRIu64,
                     c->num[K_REFBITS]);
        if (c->val[K_COMPR])
            snprintf(list + strlen(list), sizeof(list) - strlen(list), ",compression_type=%s",
                     c->val[K_COMPR]);
        o.backing_file = c->val[K_BFILE];
        o.backing_format = c->val[K_BFMT];
    }
    if (pa)
        snprintf(list + strlen(list), sizeof(list) - strlen(list), "%spreallocation=%s",
                 list[0] ? "," : "", pa);
    if ((list[0] && fq_create_opts_parse(&o, list, err) < 0) || fq_create(c->file, &o, err) < 0) {
        tool_error("%s: %s", c->file, err[0] ? err : "Could not create the image");
        return -1;
    }
    return 0;
}

int cmd_create(int argc, char **argv)
{
    static const struct option lo[] = { { "help", no_argument, NULL, 'h' }, { 0 } };
    struct cspec c = { .fmt = "raw", .print = true };
    char *olist[32];
    int nolist = 0, ch;

    opterr = 0;
    while ((ch = getopt_long(argc, argv, ":f:o:b:F:qhu", lo, NULL)) != -1) {
        switch (ch) {
        case 'f': c.fmt = optarg; break;
        case 'b': c.val[K_BFILE] = optarg; break;
        case 'F': c.val[K_BFMT] = optarg; break;
        case 'q': c.quiet = true; break;
        case 'u': c.unsafe = true; break;
        case 'o':
            if (nolist < 32)
                olist[nolist++] = optarg;
            break;
        case 'h':
            printf("usage: fastqcow create [-q] [-f fmt] [-b backing_file [-F backing_fmt]] [-u]\n"
                   "                       [-o options] filename [size]\n\n"
                   "Create a qcow2 or raw image (as qemu-img create). 'size' takes the\n"
                   "suffixes k, M, G, T, P, E. '-o help' lists the format's options.\n");
            return 0;
        default:
            return bad_opt(ch, argv);
        }
    }
    c.file = optind < argc ? argv[optind++] : "";
    const char *bfile = c.val[K_BFILE], *bfmt = c.val[K_BFMT];
    for (int i = 0; i < nolist; i++) {
        int r = cspec_parse(&c, olist[i]);
        if (r)
            return r > 0 ? 0 : 1;
    }
    if (!c.file[0])
        return usage_err("Expecting image file name");
    if (bfile)   /* -b/-F win over -o */
        c.val[K_BFILE] = bfile;
    if (bfmt)
        c.val[K_BFMT] = bfmt;
    if (optind < argc) {
        uint64_t sz;
        int r = qsize(argv[optind], &sz);
        if (r == -ERANGE) {
            tool_error("Invalid image size specified. Must be between 0 and %" PRId64 ".", INT64_MAX);
            return 1;
        } else if (r < 0) {
            tool_error("Invalid image size specified. You may use k, M, G, T, P or E suffixes for");
            tool_error("kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.");
            return 1;
        }
        if (c.val[K_SIZE]) {
            tool_error("%s: The image size must be specified only once", c.file);
            return 1;
        }
        c.num[K_SIZE] = sz;
        snprintf(c.norm[K_SIZE], sizeof(c.norm[K_SIZE]), "%" PRIu64, sz);
        c.val[K_SIZE] = c.norm[K_SIZE];
        optind++;
    }
    if (optind < argc)
        return usage_err("Unexpected argument: %s", argv[optind]);
    return create_from_spec(&c) < 0 ? 1 : 0;
}

/* ---- info ----------------------------------------------------------------- */

/* Print one image's info. `next` receives the backing file's full path
 * and `next_fmt` its format ("" = probe). Returns 0 or -1. */
static int info_one(const char *file, const char *fmt, int out, struct jw *w,
                    char *next, size_t nlen, char *next_fmt)
{
    struct fq_open_opts o;
    struct fq_image *img;
    struct fq_info in;
    char full[4096] = "", s1[32], s2[32];
    int r;

    fq_open_opts_init(&o);
    o.format = fmt;
    o.readonly = 1;
    o.check_mode = 1;
    o.no_backing = 1;
    if (!(img = open_img(file, &o)))
        return -1;
    r = fq_get_info(img, &in);
    fq_close(img);
    if (r < 0) {
        tool_error("%s: could not get image information: %s", file, strerror(-r));
        return -1;
    }
    bool qcow2 = !strcmp(in.format, "qcow2");
    uint64_t vsize = ALIGN_UP512(in.virtual_size);
    if (in.backing_file[0])
        path_combine(file, in.backing_file, full, sizeof(full));
    snprintf(next, nlen, "%s", full);
    snprintf(next_fmt, 32, "%s", in.backing_format);

    if (out == OUT_JSON) {
        jw_open(w, NULL, '{');
        if (in.backing_format[0])
            jw_str(w, "backing-filename-format", in.backing_format);
        jw_int(w, "virtual-size", (int64_t)vsize);
        jw_str(w, "filename", file);
        if (in.cluster_size)
            jw_int(w, "cluster-size", in.cluster_size);
        jw_str(w, "format", in.format);
        jw_int(w, "actual-size", (int64_t)in.actual_size);
        if (qcow2) {
            jw_open(w, "format-specific", '{');
            jw_str(w, "type", "qcow2");
            jw_open(w, "data", '{');
            jw_str(w, "compat", in.version == 2 ? "0.10" : "1.1");
            jw_str(w, "compression-type", in.compression_type ? "zstd" : "zlib");
            if (in.version >= 3)
                jw_bool(w, "lazy-refcounts", in.lazy_refcounts);
            jw_int(w, "refcount-bits", in.refcount_bits);
            if (in.version >= 3) {
                jw_bool(w, "corrupt", in.corrupt);
                jw_bool(w, "extended-l2", in.extended_l2);
            }
            jw_close(w, '}');
            jw_close(w, '}');
        }
        if (full[0])
            jw_str(w, "full-backing-filename", full);
        if (in.encrypted)
            jw_bool(w, "encrypted", true);
        if (in.backing_file[0])
            jw_str(w, "backing-filename", in.backing_file);
        jw_bool(w, "dirty-flag", in.dirty);
        jw_close(w, '}');
        return 0;
    }
    size_str(vsize, s1, sizeof(s1));
    size_str(in.actual_size, s2, sizeof(s2));
    printf("image: %s\nfile format: %s\nvirtual size: %s (%" PRIu64 " bytes)\ndisk size: %s\n",
           file, in.format, s1, vsize, s2);
    if (in.cluster_size)
        printf("cluster_size: %u\n", in.cluster_size);
    if (in.encrypted)
        printf("encrypted: yes\n");
    if (in.dirty)
        printf("cleanly shut down: no\n");
    if (in.backing_file[0]) {
        printf("backing file: %s", in.backing_file);
        if (strcmp(full, in.backing_file))
            printf(" (actual path: %s)", full);
        putchar('\n');
        if (in.backing_format[0])
            printf("backing file format: %s\n", in.backing_format);
    }
    if (qcow2) {
        printf("Format specific information:\n    compat: %s\n    compression type: %s\n",
               in.version == 2 ? "0.10" : "1.1", in.compression_type ? "zstd" : "zlib");
        if (in.version >= 3)
            printf("    lazy refcounts: %s\n", in.lazy_refcounts ? "true" : "false");
        printf("    refcount bits: %d\n", in.refcount_bits);
        if (in.version >= 3)
            printf("    corrupt: %s\n    extended l2: %s\n", in.corrupt ? "true" : "false",
                   in.extended_l2 ? "true" : "false");
    }
    return 0;
}

int cmd_info(int argc, char **argv)
{
    static const struct option lo[] = {
        { "help", no_argument, NULL, 'h' }, { "output", required_argument, NULL, 'O' },
        { "backing-chain", no_argument, NULL, 'B' }, { "force-share", no_argument, NULL, 'U' },
        { 0 } };
    const char *fmt = NULL;
    int out = OUT_HUMAN, ch, ret = 0;
    bool chain = false;

    opterr = 0;
    while ((ch = getopt_long(argc, argv, ":f:hU", lo, NULL)) != -1) {
        switch (ch) {
        case 'f': fmt = optarg; break;
        case 'O': if (parse_output(optarg, &out) < 0) return 1; break;
        case 'B': chain = true; break;
        case 'U': break;
        case 'h':
            printf("usage: fastqcow info [-f fmt] [--output=human|json] [--backing-chain] [-U] filename\n\n"
                   "Show information about an image (as qemu-img info).\n");
            return 0;
        default:
            return bad_opt(ch, argv);
        }
    }
    if (optind != argc - 1)
        return usage_err("Expecting one image file name");

    char names[MAX_CHAIN][4096], fmts[MAX_CHAIN][32];
    struct jw w = { 0 };
    int n = 0;
    snprintf(names[0], sizeof(names[0]), "%s", argv[optind]);
    snprintf(fmts[0], sizeof(fmts[0]), "%s", fmt ? fmt : "");
    if (chain && out == OUT_JSON)
        jw_open(&w, NULL, '[');
    for (;;) {
        if (n > 0 && out == OUT_HUMAN)
            putchar('\n');
        if (info_one(names[n], fmts[n][0] ? fmts[n] : NULL, out, &w, names[n + 1],
                     sizeof(names[n + 1]), fmts[n + 1]) < 0) {
            ret = 1;
            break;
        }
        if (!chain || !names[n + 1][0])
            break;
        if (++n == MAX_CHAIN - 1) {
            tool_error("Backing file '%s' creates an infinite loop.", names[n]);
            ret = 1;
            break;
        }
    }
    if (chain && out == OUT_JSON && ret == 0)
        jw_close(&w, ']');
    return ret;
}

/* ---- check ---------------------------------------------------------------- */

static void check_msg(void *opaque, const char *line)
{
    size_t n = strlen(line);

    fprintf(stderr, "%.*s\n", (int)(n && line[n - 1] == '\n' ? n - 1 : n), line);
}

int cmd_check(int argc, char **argv)
{
    static const struct option lo[] = {
        { "help", no_argument, NULL, 'h' }, { "output", required_argument, NULL, 'O' },
        { "force-share", no_argument, NULL, 'U' }, { "repair", required_argument, NULL, 'r' },
        { 0 } };
    struct fq_check_result res, res2;
    struct fq_open_opts o;
    struct fq_image *img;
    unsigned repair = 0;
    int out = OUT_HUMAN, ch, r;
    bool quiet = false;

    fq_open_opts_init(&o);
    opterr = 0;
    while ((ch = getopt_long(argc, argv, ":f:r:T:qhU", lo, NULL)) != -1) {
        switch (ch) {
        case 'f': o.format = optarg; break;
        case 'O': if (parse_output(optarg, &out) < 0) return 1; break;
        case 'q': quiet = true; break;
        case 'U': break;
        case 'T':
            if (fq_cache_parse(optarg, &o.cache) < 0) {
                tool_error("Invalid source cache option: %s", optarg);
                return 1;
            }
            break;
        case 'r':
            if (!strcmp(optarg, "leaks"))
                repair = FQ_CHECK_REPAIR_LEAKS;
            else if (!strcmp(optarg, "all"))
                repair = FQ_CHECK_REPAIR_ALL;
            else
                return usage_err("Unknown option value for -r (expecting 'leaks' or 'all'): %s", optarg);
            break;
        case 'h':
            printf("usage: fastqcow check [-q] [-f fmt] [--output=human|json] [-r leaks|all] [-T cache] filename\n\n"
                   "Check (and with -r repair) an image (as qemu-img check). Exit codes:\n"
                   "0 consistent, 1 check not completed, 2 corrupted, 3 leaks only, 63 no checks.\n");
            return 0;
        default:
            return bad_opt(ch, argv);
        }
    }
    if (optind != argc - 1)
        return usage_err("Expecting one image file name");
    const char *file = argv[optind];
    o.readonly = !repair;
    o.check_mode = 1;
    o.no_backing = 1;
    if (!(img = open_img(file, &o)))
        return 1;
    r = fq_check(img, repair, &res, check_msg, NULL);
    if (r == 0 && repair && (res.corruptions_fixed || res.leaks_fixed)) {
        /* as qemu-img: report what a second, read-only pass still finds */
        r = fq_check(img, 0, &res2, check_msg, NULL);
        res2.corruptions_fixed = res.corruptions_fixed;
        res2.leaks_fixed = res.leaks_fixed;
        res = res2;
    }
    const char *format = fq_format(img);
    char fmtname[16];
    snprintf(fmtname, sizeof(fmtname), "%s", format);
    r = r < 0 ? r : fq_close(img) < 0 && repair ? -EIO : 0;
    if (r == -ENOTSUP) {
        tool_error("This image format does not support checks");
        return 63;
    }
    if (r < 0) {
        tool_error("Check failed: %s", strerror(-r));
        return 1;
    }
    if (quiet)
        ;
    else if (out == OUT_JSON) {
        struct jw w = { 0 };
        jw_open(&w, NULL, '{');
        if (res.image_end_offset)
            jw_int(&w, "image-end-offset", (int64_t)res.image_end_offset);
        if (res.compressed_clusters)
            jw_int(&w, "compressed-clusters", (int64_t)res.compressed_clusters);
        if (res.total_clusters)
            jw_int(&w, "total-clusters", (int64_t)res.total_clusters);
        if (res.corruptions)
            jw_int(&w, "corruptions", res.corruptions);
        if (res.corruptions_fixed)
            jw_int(&w, "corruptions-fixed", res.corruptions_fixed);
        jw_int(&w, "check-errors", res.check_errors);
        if (res.leaks)
            jw_int(&w, "leaks", res.leaks);
        if (res.leaks_fixed)
            jw_int(&w, "leaks-fixed", res.leaks_fixed);
        if (res.allocated_clusters)
            jw_int(&w, "allocated-clusters", (int64_t)res.allocated_clusters);
        jw_str(&w, "filename", file);
        jw_str(&w, "format", fmtname);
        if (res.fragmented_clusters)
            jw_int(&w, "fragmented-clusters", (int64_t)res.fragmented_clusters);
        jw_close(&w, '}');
    } else {
        if (res.corruptions_fixed || res.leaks_fixed)
            printf("The following inconsistencies were found and repaired:\n\n"
                   "    %" PRId64 " leaked clusters\n    %" PRId64 " corruptions\n\n"
                   "Double checking the fixed image now...\n", res.leaks_fixed, res.corruptions_fixed);
        if (!res.corruptions && !res.leaks && !res.check_errors)
            printf("No errors were found on the image.\n");
        if (res.corruptions)
            printf("\n%" PRId64 " errors were found on the image.\n"
                   "Data may be corrupted, or further writes to the image may corrupt it.\n",
                   res.corruptions);
        if (res.leaks)
            printf("\n%" PRId64 " leaked clusters were found on the image.\n"
                   "This means waste of disk space, but no harm to data.\n", res.leaks);
        if (res.check_errors)
            printf("\n%" PRId64 " internal errors have occurred during the check.\n", res.check_errors);
        if (res.total_clusters && res.allocated_clusters)
            printf("%" PRIu64 "/%" PRIu64 " = %0.2f%% allocated, %0.2f%% fragmented, %0.2f%% compressed clusters\n",
                   res.allocated_clusters, res.total_clusters,
                   (double)res.allocated_clusters * 100.0 / (double)res.total_clusters,
                   (double)res.fragmented_clusters * 100.0 / (double)res.allocated_clusters,
                   (double)res.compressed_clusters * 100.0 / (double)res.allocated_clusters);
        if (res.image_end_offset)
            printf("Image end offset: %" PRIu64 "\n", res.image_end_offset);
    }
    if (res.check_errors)
        return 1;
    return res.corruptions ? 2 : res.leaks ? 3 : 0;
}

/* ---- map ------------------------------------------------------------------ */

struct ment {
    uint64_t start, length, offset;
    bool present, zero, data, has_offset;
    int depth;
};

/* qemu-img map merges entries that agree in everything but their length
 * (and whose host ranges continue each other). */
static bool ment_mergeable(const struct ment *a, const struct ment *b)
{
    return a->length && a->present == b->present && a->zero == b->zero && a->data == b->data &&
           a->depth == b->depth && a->has_offset == b->has_offset &&
           (!a->has_offset || a->offset + a->length == b->offset);
}

/* Print one merged entry. Returns 0 or -1 (human output cannot show data
 * without a host offset, e.g. compressed clusters). */
static int ment_dump(const struct ment *e, int out, bool first, char (*names)[4096])
{
    if (out == OUT_JSON) {
        printf("%s{ \"start\": %" PRIu64 ", \"length\": %" PRIu64 ", \"depth\": %d, \"present\": %s,"
               " \"zero\": %s, \"data\": %s", first ? "[" : ",\n", e->start, e->length, e->depth,
               e->present ? "true" : "false", e->zero ? "true" : "false", e->data ? "true" : "false");
        if (e->has_offset)
            printf(", \"offset\": %" PRIu64, e->offset);
        putchar('}');
        return 0;
    }
    if (e->data && !e->has_offset) {
        tool_error("File contains external, encrypted or compressed clusters.");
        return -1;
    }
    if (e->data && !e->zero) {
        char a[24], b[24], c[24];
        /* qemu prints "%#-16"PRIx64: a bare 0 for zero */
        snprintf(a, sizeof(a), e->start ? "0x%" PRIx64 : "0", e->start);
        snprintf(b, sizeof(b), e->length ? "0x%" PRIx64 : "0", e->length);
        snprintf(c, sizeof(c), e->offset ? "0x%" PRIx64 : "0", e->offset);
        printf("%-16s%-16s%-16s%s\n", a, b, c, names[e->depth]);
    }
    return 0;
}

/* Fill names[0..] with the file of each layer of the chain, as opened. */
static void chain_names(const char *file, const char *fmt, char (*names)[4096])
{
    snprintf(names[0], 4096, "%s", file);
    for (int d = 0; d + 1 < MAX_CHAIN; d++) {
        struct fq_open_opts o;
        struct fq_image *img;
        struct fq_info in;

        names[d + 1][0] = '\0';
        fq_open_opts_init(&o);
        o.format = d == 0 ? fmt : NULL;
        o.readonly = o.no_backing = o.check_mode = 1;
        if (fq_open(names[d], &o, &img, NULL) < 0)
            return;
        int r = fq_get_info(img, &in);
        fq_close(img);
        if (r < 0 || !in.backing_file[0])
            return;
        path_combine(names[d], in.backing_file, names[d + 1], 4096);
    }
}

int cmd_map(int argc, char **argv)
{
    static const struct option lo[] = {
        { "help", no_argument, NULL, 'h' }, { "output", required_argument, NULL, 'O' },
        { "start-offset", required_argument, NULL, 's' }, { "max-length", required_argument, NULL, 'l' },
        { "force-share", no_argument, NULL, 'U' }, { 0 } };
    static char names[MAX_CHAIN][4096];
    struct fq_open_opts o;
    struct fq_image *img;
    uint64_t start = 0, maxlen = UINT64_MAX;
    int out = OUT_HUMAN, ch, ret = 0;

    fq_open_opts_init(&o);
    opterr = 0;
    while ((ch = getopt_long(argc, argv, ":f:hU", lo, NULL)) != -1) {
        switch (ch) {
        case 'f': o.format = optarg; break;
        case 'O': if (parse_output(optarg, &out) < 0) return 1; break;
        case 's': if (cvtnum("start offset", optarg, &start) < 0) return 1; break;
        case 'l': if (cvtnum("max length", optarg, &maxlen) < 0) return 1; break;
        case 'U': break;
        case 'h':
            printf("usage: fastqcow map [-f fmt] [--output=human|json] [--start-offset=N] [--max-length=N] filename\n\n"
                   "Show the guest-to-host mapping of an image (as qemu-img map).\n");
            return 0;
        default:
            return bad_opt(ch, argv);
        }
    }
    if (optind != argc - 1)
        return usage_err("Expecting one image file name");
    const char *file = argv[optind];
    o.readonly = 1;
    if (!(img = open_img(file, &o)))
        return 1;
    uint64_t size = fq_size(img);
    uint64_t end = maxlen > size || start + maxlen > size ? size : start + maxlen;
    struct ment cur = { .start = start }, next;
    bool first = true;

    if (out == OUT_HUMAN) {
        chain_names(file, o.format, names);
        printf("%-16s%-16s%-16s%s\n", "Offset", "Length", "Mapped to", "File");
    }
    while (cur.start + cur.length < end) {
        uint64_t off = cur.start + cur.length;
        struct fq_map_entry m;
        int r = fq_map(img, off, end - off, &m);
        if (r < 0 || m.length == 0) {
            tool_error("Could not read file metadata: %s", strerror(r < 0 ? -r : EIO));
            ret = 1;
            break;
        }
        next = (struct ment){ .start = off, .length = MIN(m.length, end - off),
                              .offset = m.host_offset, .present = m.flags & FQ_MAP_ALLOCATED,
                              .zero = m.flags & FQ_MAP_ZERO, .data = m.flags & FQ_MAP_DATA,
                              .has_offset = m.flags & FQ_MAP_OFFSET, .depth = m.depth };
        if (ment_mergeable(&cur, &next)) {
            cur.length += next.length;
            continue;
        }
        if (cur.length && ment_dump(&cur, out, first, names) < 0) {
            ret = 1;
            break;
        }
        if (cur.length)
            first = false;
        cur = next;
    }
    if (ret == 0 && ment_dump(&cur, out, first, names) < 0)
        ret = 1;
    if (out == OUT_JSON && ret == 0)
        printf("]\n");
    fq_close(img);
    return ret;
}

/* ---- compare -------------------------------------------------------------- */

struct cmp;
struct cjob;
struct cside {
    struct cjob *j;
    int side;
};

struct cjob {
    struct cmp *c;
    uint64_t off, len;
    bool busy, zero[2];       /* a side that reads as zeros is not read */
    int pending;
    uint8_t *buf[2];
    struct iovec iov[2];
    struct cside cb[2];
};

struct cmp {
    struct fq_image *img[2];
    const char *name[2];
    uint64_t size[2];
    struct cjob job[16];
    int njobs, busy;
    uint64_t mismatch;        /* first differing byte; UINT64_MAX = none */
    uint64_t status_mismatch; /* -s: first offset whose status differs */
    struct fq_map_entry run[2];
    bool strict;
    int err, err_side;
    uint64_t err_off, done, total;
    struct progress pg;
};

/* Index of the first byte where a and b (NULL = zeros) differ, or n. */
static size_t first_diff(const uint8_t *a, const uint8_t *b, size_t n)
{
    for (size_t i = 0; i < n; i += 4096) {
        size_t l = MIN(n - i, 4096);
        if (b ? memcmp(a + i, b + i, l) == 0 : buf_is_zero(a + i, l))
            continue;
        for (size_t k = i; k < i + l; k++)
            if (a[k] != (b ? b[k] : 0))
                return k;
    }
    return n;
}

/* Drop one reference of a job; the last one compares its buffers. */
static void cjob_put(struct cjob *j)
{
    struct cmp *c = j->c;

    if (--j->pending > 0)
        return;
    if (!c->err) {
        size_t d = j->zero[0] ? first_diff(j->buf[1], NULL, j->len)
                 : j->zero[1] ? first_diff(j->buf[0], NULL, j->len)
                 : first_diff(j->buf[0], j->buf[1], j->len);
        if (d < j->len && j->off + d < c->mismatch)
            c->mismatch = j->off + d;
    }
    j->busy = false;
    c->busy--;
    c->done += j->len;
    progress_print(&c->pg, c->done, c->total, false);
}

static void cmp_fail(struct cmp *c, int ret, uint64_t off, int side)
{
    if (!c->err) {
        c->err = ret;
        c->err_off = off;
        c->err_side = side;
    }
}

static void cjob_cb(void *opaque, int ret)
{
    struct cside *cs = opaque;

    if (ret < 0)
        cmp_fail(cs->j->c, ret, cs->j->off, cs->side);
    cjob_put(cs->j);
}

/* The status at `off` of side s as qemu's block status sees it: a run of
 * equal flags, layer and contiguous host offsets (one compressed cluster
 * at most), plus whether it reaches the end of the image. Cached. */
static int cmp_status(struct cmp *c, int s, uint64_t off, uint64_t *len, unsigned *st)
{
    struct fq_map_entry *m = &c->run[s], n;
    int r = 0;

    if (off < m->start || off >= m->start + m->length) {
        r = fq_map(c->img[s], off, c->size[s] - off, m);
        while (r == 0 && m->length && m->start + m->length < c->size[s] &&
               !(m->flags & FQ_MAP_COMPRESSED)) {
            uint64_t next = m->start + m->length;
            r = fq_map(c->img[s], next, c->size[s] - next, &n);
            if (r < 0 || n.flags != m->flags || n.depth != m->depth ||
                ((m->flags & FQ_MAP_OFFSET) && n.host_offset != m->host_offset + m->length))
                break;
            m->length += n.length;
        }
        if (r == 0 && m->length == 0)
            r = -EIO;
        if (r < 0) {
            m->length = 0;
            return r;
        }
    }
    *len = m->start + m->length - off;
    *st = (m->flags & ~FQ_MAP_COMPRESSED) | (m->start + m->length >= c->size[s] ? 0x100 : 0);
    return 0;
}

/* Compare [off, end) of both images; a side beyond its image reads as
 * zeros. Returns 0 (see c->mismatch) or the exit code after an error. */
static int cmp_range(struct cmp *c, struct fq_ctx *ctx, uint64_t off, uint64_t end)
{
    while (c->mismatch == UINT64_MAX && !c->err) {
        struct cjob *j = NULL;
        for (int i = 0; i < c->njobs && off < end; i++)
            if (!c->job[i].busy) {
                j = &c->job[i];
                break;
            }
        if (!j) {
            if (c->busy == 0)
                break;
            int r = fq_ctx_run(ctx, 1, -1);
            if (r < 0)
                cmp_fail(c, r, off, 0);
            continue;
        }
        uint64_t len = end - off, l;
        unsigned st[2];
        bool zero[2];
        for (int s = 0; s < 2; s++) {
            int r = off < c->size[s] ? cmp_status(c, s, off, &l, &st[s]) : 0;
            if (r < 0) {
                tool_error("Sector allocation test failed for %s", c->name[s]);
                while (c->busy)
                    fq_ctx_run(ctx, 1, -1);
                return 3;
            }
            zero[s] = off >= c->size[s] || (st[s] & FQ_MAP_ZERO);
            if (off < c->size[s])
                len = MIN(len, l);
        }
        if (c->strict && st[0] != st[1]) {
            c->status_mismatch = off;
            break;
        }
        if (zero[0] && zero[1]) {
            off += len;
            c->done += len;
            progress_print(&c->pg, c->done, c->total, false);
            continue;
        }
        len = MIN(len, CHUNK - off % CHUNK);
        *j = (struct cjob){ .c = c, .off = off, .len = len, .busy = true, .pending = 1,
                            .zero = { zero[0], zero[1] }, .buf = { j->buf[0], j->buf[1] } };
        c->busy++;
        for (int s = 0; s < 2; s++) {
            if (zero[s])
                continue;
            j->cb[s].j = j;
            j->cb[s].side = s;
            j->iov[s] = (struct iovec){ j->buf[s], len };
            j->pending++;
            int r = fq_aio_preadv(c->img[s], &j->iov[s], 1, 0, len, off, cjob_cb, &j->cb[s]);
            if (r < 0) {
                j->pending--;
                cmp_fail(c, r, off, s);
            }
        }
        cjob_put(j);   /* drop the submission guard */
        off += len;
    }
    while (c->busy)
        if (fq_ctx_run(ctx, 1, -1) < 0)
            break;
    if (c->err) {
        tool_error("Error while reading offset %" PRIu64 " of %s: %s", c->err_off,
                   c->name[c->err_side], strerror(-c->err));
        return 4;
    }
    return 0;
}

int cmd_compare(int argc, char **argv)
{
    static const struct option lo[] = { { "help", no_argument, NULL, 'h' },
        { "force-share", no_argument, NULL, 'U' }, { 0 } };
    struct fq_open_opts o[2];
    struct cmp c = { .mismatch = UINT64_MAX, .status_mismatch = UINT64_MAX, .njobs = 8,
                     .pg.last = -1 };
    struct fq_ctx *ctx;
    char err[FQ_ERR_MAX] = "";
    bool quiet = false;
    int ch, ret = 2;

    fq_open_opts_init(&o[0]);
    fq_open_opts_init(&o[1]);
    opterr = 0;
    while ((ch = getopt_long(argc, argv, ":f:F:T:spqhU", lo, NULL)) != -1) {
        switch (ch) {
        case 'f': o[0].format = optarg; break;
        case 'F': o[1].format = optarg; break;
        case 's': c.strict = true; break;
        case 'p': c.pg.on = true; break;
        case 'q': quiet = true; break;
        case 'U': break;
        case 'T':
            if (fq_cache_parse(optarg, &o[0].cache) < 0)
                return usage_err("Invalid source cache option: %s", optarg);
            o[1].cache = o[0].cache;
            break;
        case 'h':
            printf("usage: fastqcow compare [-f fmt] [-F fmt] [-T cache] [-p] [-q] [-s] filename1 filename2\n\n"
                   "Compare the guest contents of two images (as qemu-img compare). Exit codes:\n"
                   "0 identical, 1 different, 2 open error, 3 allocation query error, 4 read error.\n");
            return 0;
        default:
            return bad_opt(ch, argv);
        }
    }
    if (optind != argc - 2)
        return usage_err("Expecting two image file names");
    c.pg.on = c.pg.on && !quiet;
    if (fq_ctx_new(FQ_ENGINE_DEFAULT, &ctx, err) < 0) {
        tool_error("%s", err);
        return 2;
    }
    for (int s = 0; s < 2; s++) {
        c.name[s] = argv[optind + s];
        o[s].readonly = 1;
        o[s].ctx = ctx;
        if (!(c.img[s] = open_img(c.name[s], &o[s])))
            goto out;
        c.size[s] = fq_size(c.img[s]);
    }
    for (int i = 0; i < c.njobs; i++)
        for (int s = 0; s < 2; s++)
            if (!(c.job[i].buf[s] = alloc_buf(CHUNK))) {
                tool_error("out of memory");
                goto out;
            }
    uint64_t small = MIN(c.size[0], c.size[1]), big = c.size[0] + c.size[1] - small;
    if (c.strict && small != big) {
        if (!quiet)
            printf("Strict mode: Image size mismatch!\n");
        ret = 1;
        goto out;
    }
    c.total = big;
    progress_print(&c.pg, 0, c.total, false);
    ret = cmp_range(&c, ctx, 0, small);
    if (ret == 0 && c.mismatch == UINT64_MAX && c.status_mismatch == UINT64_MAX && small != big) {
        if (!quiet)
            printf("Warning: Image size mismatch!\n");
        ret = cmp_range(&c, ctx, small, big);
    }
    if (ret == 0) {
        progress_print(&c.pg, c.total, c.total, true);
        ret = c.mismatch != UINT64_MAX || c.status_mismatch != UINT64_MAX;
        if (quiet)
            ;
        else if (c.mismatch < c.status_mismatch)   /* at qemu's 512-byte granularity */
            printf("Content mismatch at offset %" PRIu64 "!\n", c.mismatch & ~(uint64_t)511);
        else if (ret)
            printf("Strict mode: Offset %" PRIu64 " block status mismatch!\n", c.status_mismatch);
        else
            printf("Images are identical.\n");
        if (c.pg.on)
            putchar('\n');
    }
out:
    for (int s = 0; s < 2; s++) {
        fq_close(c.img[s]);
        for (int i = 0; i < c.njobs; i++)
            free(c.job[i].buf[s]);
    }
    fq_ctx_free(ctx);
    return ret;
}

/* ---- convert -------------------------------------------------------------- */

enum { VJ_FREE, VJ_READING, VJ_READY, VJ_WRITING };

struct conv;
struct vjob {
    struct conv *c;
    uint64_t off, len, seq;
    int state, pending;
    bool zero;                /* reads as zeros: not read */
    uint8_t *buf;
    struct iovec *iov;
};

struct conv {
    struct fq_image *src, *dst;
    struct vjob job[16];
    int njobs, busy, err;
    uint64_t next_seq, write_seq, err_off, done, total;
    bool ooo, zero_init, full, err_write;
    size_t gran;              /* zero detection block; 0 = none */
    struct progress pg;
};

static void conv_fail(struct conv *c, int ret, uint64_t off, bool write)
{
    if (!c->err) {
        c->err = ret;
        c->err_off = off;
        c->err_write = write;
    }
}

/* Drop one reference of a job; the last one frees its slot. */
static void vjob_put(struct vjob *j)
{
    struct conv *c = j->c;

    if (--j->pending > 0)
        return;
    j->state = VJ_FREE;
    c->busy--;
    c->done += j->len;
    progress_print(&c->pg, c->done, c->total, false);
}

static void vjob_write_cb(void *opaque, int ret)
{
    struct vjob *j = opaque;

    if (ret < 0)
        conv_fail(j->c, ret, j->off, true);
    vjob_put(j);
}

/* Write [pos, pos+n) of a job: data, or zeros when `zero`. */
static void vjob_emit(struct vjob *j, size_t pos, size_t n, bool zero, int *niov)
{
    struct conv *c = j->c;
    int r;

    if (zero && c->zero_init)
        return;
    j->pending++;
    if (zero) {
        r = fq_aio_write_zeroes(c->dst, j->off + pos, n, 0, vjob_write_cb, j);
    } else {
        struct iovec *v = &j->iov[(*niov)++];
        *v = (struct iovec){ j->buf + pos, n };
        r = fq_aio_pwritev(c->dst, v, 1, 0, n, j->off + pos, vjob_write_cb, j);
    }
    if (r < 0) {
        j->pending--;
        conv_fail(c, r, j->off + pos, true);
    }
}

/* Submit a job's writes: runs of all-zero blocks of c->gran bytes are
 * skipped on a target that reads as zeros, else written as zeros. */
static void vjob_write(struct vjob *j)
{
    struct conv *c = j->c;
    size_t pos = 0, run = 0;
    int niov = 0;
    bool zrun = false;

    j->state = VJ_WRITING;
    j->pending = 1;
    if (j->zero && c->full)
        memset(j->buf, 0, j->len);
    else if (j->zero)
        pos = run = j->len, zrun = true;
    while (pos < j->len) {
        size_t n = c->gran ? MIN(j->len - pos, c->gran - (j->off + pos) % c->gran) : j->len;
        bool z = c->gran && buf_is_zero(j->buf + pos, n);
        if (run && z != zrun) {
            vjob_emit(j, pos - run, run, zrun, &niov);
            run = 0;
        }
        zrun = z;
        run += n;
        pos += n;
    }
    if (run)
        vjob_emit(j, pos - run, run, zrun, &niov);
    vjob_put(j);
}

/* Start the writes of jobs whose data is ready, in source order unless
 * out-of-order writes were allowed. After an error, drop them. */
static void conv_write_ready(struct conv *c)
{
    for (bool again = true; again;) {
        again = false;
        for (int i = 0; i < c->njobs; i++) {
            struct vjob *j = &c->job[i];
            if (j->state != VJ_READY || (!c->ooo && j->seq != c->write_seq && !c->err))
                continue;
            c->write_seq++;
            if (c->err) {
                j->pending = 1;
                vjob_put(j);
            } else
                vjob_write(j);
            again = true;
        }
    }
}

static void vjob_read_cb(void *opaque, int ret)
{
    struct vjob *j = opaque;

    if (ret < 0)
        conv_fail(j->c, ret, j->off, false);
    j->state = VJ_READY;
    conv_write_ready(j->c);
}

/* The copy loop. Returns 0 or -1 after printing the error. */
static int conv_run(struct conv *c, struct fq_ctx *ctx)
{
    uint64_t off = 0, end = c->total;

    while (!c->err) {
        struct vjob *j = NULL;
        for (int i = 0; i < c->njobs && off < end; i++)
            if (c->job[i].state == VJ_FREE) {
                j = &c->job[i];
                break;
            }
        if (!j) {
            if (c->busy == 0)
                break;
            int r = fq_ctx_run(ctx, 1, -1);
            if (r < 0)
                conv_fail(c, r, off, false);
            continue;
        }
        struct fq_map_entry m;
        int r = fq_map(c->src, off, end - off, &m);
        if (r < 0) {
            tool_error("error while reading block status at offset %" PRIu64 ": %s", off, strerror(-r));
            conv_fail(c, r, off, false);
            break;
        }
        uint64_t len = MIN(m.length, end - off);
        bool zero = m.flags & FQ_MAP_ZERO;
        if (zero && c->zero_init) {
            off += len;
            c->done += len;
            progress_print(&c->pg, c->done, c->total, false);
            continue;
        }
        len = MIN(len, CHUNK - off % CHUNK);
        j->off = off;
        j->len = len;
        j->zero = zero;
        j->seq = c->next_seq++;
        j->pending = 0;
        c->busy++;
        off += len;
        if (zero) {
            j->state = VJ_READY;
            conv_write_ready(c);
            continue;
        }
        j->state = VJ_READING;
        j->iov[0] = (struct iovec){ j->buf, len };
        r = fq_aio_preadv(c->src, &j->iov[0], 1, 0, len, j->off, vjob_read_cb, j);
        if (r < 0) {
            conv_fail(c, r, j->off, false);
            j->state = VJ_READY;
            conv_write_ready(c);
        }
    }
    while (c->busy) {
        conv_write_ready(c);
        if (c->busy && fq_ctx_run(ctx, 1, -1) < 0)
            break;
    }
    if (c->err && c->err != -ECANCELED)
        tool_error("error while %s at byte %" PRIu64 ": %s", c->err_write ? "writing" : "reading",
                   c->err_off, strerror(-c->err));
    return c->err ? -1 : 0;
}

int cmd_convert(int argc, char **argv)
{
    static const struct option lo[] = { { "help", no_argument, NULL, 'h' },
        { "force-share", no_argument, NULL, 'U' }, { 0 } };
    struct conv c = { .njobs = 8, .pg.last = -1 };
    struct cspec spec = { .fmt = "raw" };
    struct fq_open_opts so, dopt;
    struct fq_ctx *ctx = NULL;
    char err[FQ_ERR_MAX] = "", *olist[32];
    uint64_t sparse = 4096, v;
    int nolist = 0, ch, ret = 1;
    bool no_create = false, compress = false, quiet = false;

    fq_open_opts_init(&so);
    fq_open_opts_init(&dopt);
    opterr = 0;
    while ((ch = getopt_long(argc, argv, ":f:O:o:m:S:t:T:pqWnchU", lo, NULL)) != -1) {
        switch (ch) {
        case 'f': so.format = optarg; break;
        case 'O': spec.fmt = optarg; break;
        case 'p': c.pg.on = true; break;
        case 'q': quiet = true; break;
        case 'W': c.ooo = true; break;
        case 'n': no_create = true; break;
        case 'c': compress = true; break;
        case 'U': break;
        case 'o':
            if (nolist < 32)
                olist[nolist++] = optarg;
            break;
        case 'm':
            if (qsize(optarg, &v) < 0 || v < 1 || v > 16) {
                tool_error("Invalid number of coroutines. Allowed number of coroutines is between 1 and 16");
                return 1;
            }
            c.njobs = (int)v;
            break;
        case 'S':
            if (cvtnum("buffer size for sparse output", optarg, &sparse) < 0)
                return 1;
            break;
        case 't':
        case 'T':
            if (fq_cache_parse(optarg, ch == 't' ? &dopt.cache : &so.cache) < 0) {
                tool_error("Invalid %s cache option: %s", ch == 't' ? "cache" : "source cache", optarg);
                return 1;
            }
            break;
        case 'h':
            printf("usage: fastqcow convert [-p] [-q] [-n] [-c] [-W] [-m num] [-S size] [-f fmt] [-O fmt]\n"
                   "                        [-o options] [-t cache] [-T src_cache] src dst\n\n"
                   "Copy the guest contents of src into dst (as qemu-img convert), with up to\n"
                   "'num' (1..16, default 8) requests in flight. -n uses an existing dst.\n");
            return 0;
        default:
            return bad_opt(ch, argv);
        }
    }
    if (argc - optind < 2)
        return usage_err("Must specify image file name");
    if (argc - optind > 2) {
        tool_error("Only one source image is supported");
        return 1;
    }
    c.pg.on = c.pg.on && !quiet;
    spec.file = argv[optind + 1];
    if (compress) {
        if (strcmp(spec.fmt, "qcow2"))
            tool_error("Compression not supported for this file format");
        else
            tool_error("Compressed output (-c) is not supported yet: libfastqcow cannot write compressed clusters");
        return 1;
    }
    if (fq_ctx_new(FQ_ENGINE_DEFAULT, &ctx, err) < 0) {
        tool_error("%s", err);
        return 1;
    }
    so.readonly = 1;
    so.ctx = dopt.ctx = ctx;
    if (!(c.src = open_img(argv[optind], &so)))
        goto out;
    c.total = fq_size(c.src);
    if (!no_create) {
        for (int i = 0; i < nolist; i++) {
            int r = cspec_parse(&spec, olist[i]);
            if (r) {
                ret = r > 0 ? 0 : 1;
                goto out;
            }
        }
        c.zero_init = !spec.val[K_BFILE];
        spec.num[K_SIZE] = c.total;
        spec.val[K_SIZE] = "";
        if (create_from_spec(&spec) < 0)
            goto out;
    }
    dopt.format = spec.fmt;
    if (!(c.dst = open_img(spec.file, &dopt)))
        goto out;
    if (fq_size(c.dst) < c.total) {
        tool_error("%s: the target is smaller than the source (%" PRIu64 " < %" PRIu64 " bytes)",
                   spec.file, fq_size(c.dst), c.total);
        goto out;
    }
    struct fq_info in;
    c.full = sparse == 0;
    c.zero_init = c.zero_init && !c.full;
    c.gran = sparse;
    if (sparse && fq_get_info(c.dst, &in) == 0 && in.cluster_size > sparse)
        c.gran = in.cluster_size;   /* a partial cluster is allocated anyway */
    for (int i = 0; i < c.njobs; i++) {
        c.job[i].c = &c;
        c.job[i].buf = alloc_buf(CHUNK);
        c.job[i].iov = calloc(c.gran ? CHUNK / c.gran + 2 : 2, sizeof(struct iovec));
        if (!c.job[i].buf || !c.job[i].iov) {
            tool_error("out of memory");
            goto out;
        }
    }
    progress_print(&c.pg, 0, c.total, false);
    if (conv_run(&c, ctx) == 0)
        ret = 0;
out:
    fq_close(c.src);
    if (c.dst && fq_close(c.dst) < 0 && ret == 0) {
        tool_error("error while flushing %s", spec.file);
        ret = 1;
    }
    if (ret == 0 && c.pg.on) {
        progress_print(&c.pg, c.total, c.total, true);
        putchar('\n');
    }
    for (int i = 0; i < c.njobs; i++) {
        free(c.job[i].buf);
        free(c.job[i].iov);
    }
    fq_ctx_free(ctx);
    return ret;
}
