/* cmd_img.c: the qemu-img compatible subcommands create, info, check and
 * map, and the helpers they share with compare and convert (cmd_convert.c).
 *
 * Output text, options and exit codes follow qemu-img 7.2, learnt by
 * running it, so that scripts keep working and the tests can diff both
 * tools on the same image. Where this file repeats a check the library
 * makes (create option values), it does so only to print qemu-img's
 * wording. JSON members come in qemu's order (that of its hash table).
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

#include "img.h"

#define MAX_CHAIN 64
#define ALIGN_UP512(v) (((v) + 511) & ~(uint64_t)511)

/* ---- command line --------------------------------------------------------- */

int img_usage_err(const char *fmt, ...)
{
    va_list ap;

    fputs("fastqcow: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\nTry 'fastqcow --help' for more information\n", stderr);
    return 1;
}

/* qemu's sizes: a decimal (or 0x hex) integer, a fraction (only with a
 * suffix, unless it is zero) and one suffix of B K M G T P E in either
 * case, at most INT64_MAX. */
int img_qsize(const char *s, uint64_t *out)
{
    static const char sfx[] = "bkmgtpe";
    const char *p = s, *q;
    double frac = 0, scale = 0.1;
    uint64_t v, mult = 1;
    char *end;

    while (isspace((unsigned char)*p))
        p++;
    q = *p == '+' ? p + 1 : p;
    if (!isdigit((unsigned char)*q))
        return -EINVAL;
    bool hex = q[0] == '0' && (q[1] == 'x' || q[1] == 'X');
    errno = 0;
    v = strtoull(p, &end, hex ? 16 : 10);
    if (errno == ERANGE)
        return -ERANGE;
    if (*end == '.' && !hex)
        for (end++; isdigit((unsigned char)*end); end++, scale /= 10)
            frac += (*end - '0') * scale;
    if (*end && (q = strchr(sfx, tolower((unsigned char)*end)))) {
        mult = 1ull << (10 * (q - sfx));
        if (hex && mult > 1)
            tool_error("warning: Using a multiplier suffix on hex numbers is deprecated: %s", s);
        end++;
    } else if (frac != 0) {
        return -EINVAL;
    }
    if (*end)
        return -EINVAL;
    if (v > INT64_MAX / mult || v * mult + (uint64_t)(frac * (double)mult) > INT64_MAX)
        return -ERANGE;
    *out = v * mult + (uint64_t)(frac * (double)mult);
    return 0;
}

/* img_qsize with qemu-img's messages about `what`. Returns 0 or -1. */
static int cvtnum(const char *what, const char *s, uint64_t *out)
{
    int r = img_qsize(s, out);

    if (r == -ERANGE) {
        tool_error("Invalid %s specified. Must be between 0 and %" PRId64 ".", what, INT64_MAX);
    } else if (r < 0) {
        tool_error("Invalid %s specified. You may use k, M, G, T, P or E suffixes for", what);
        tool_error("kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.");
    }
    return r < 0 ? -1 : 0;
}

int img_parse_args(int argc, char **argv, const char *shorts, const char *longs,
                   const char *usage, struct args *a)
{
    static const struct option lo[] = {
        { "help", no_argument, NULL, 'h' }, { "force-share", no_argument, NULL, 'U' },
        { "output", required_argument, NULL, LO_OUTPUT },
        { "backing-chain", no_argument, NULL, LO_CHAIN },
        { "start-offset", required_argument, NULL, LO_START },
        { "max-length", required_argument, NULL, LO_MAXLEN },
        { "repair", required_argument, NULL, 'r' }, { 0 } };
    uint64_t v;
    int ch;

    *a = (struct args){ .jobs = 8, .maxlen = UINT64_MAX, .sparse = 4096 };
    opterr = 0;
    while ((ch = getopt_long(argc, argv, shorts, lo, NULL)) != -1) {
        if (ch != '?' && ch != ':' && !strchr(shorts, ch) && !strchr(longs, ch))
            ch = '?';   /* a long option this subcommand does not take */
        switch (ch) {
        case 'f': a->fmt = optarg; break;
        case 'F': a->fmt2 = optarg; break;
        case 'O': a->out_fmt = optarg; break;
        case 'b': a->backing = optarg; break;
        case 'q': a->quiet = true; break;
        case 'p': a->progress = true; break;
        case 's': a->strict = true; break;
        case 'u': a->unsafe = true; break;
        case 'W': a->ooo = true; break;
        case 'n': a->no_create = true; break;
        case 'c': a->compress = true; break;
        case 'U': break;
        case LO_CHAIN: a->chain = true; break;
        case 'h': fputs(usage, stdout); return -1;
        case 'o':
            if (a->nolist < 16)
                a->olist[a->nolist++] = optarg;
            break;
        case LO_OUTPUT:
            if (strcmp(optarg, "human") && strcmp(optarg, "json")) {
                tool_error("--output must be used with human or json as argument.");
                return 1;
            }
            a->json = !strcmp(optarg, "json");
            break;
        case LO_START:
            if (cvtnum("start offset", optarg, &a->start) < 0)
                return 1;
            break;
        case LO_MAXLEN:
            if (cvtnum("max length", optarg, &a->maxlen) < 0)
                return 1;
            break;
        case 'S':
            if (cvtnum("buffer size for sparse output", optarg, &a->sparse) < 0)
                return 1;
            break;
        case 'r':
            if (strcmp(optarg, "leaks") && strcmp(optarg, "all"))
                return img_usage_err("Unknown option value for -r (expecting 'leaks' or 'all'): %s", optarg);
            a->repair = optarg[0] == 'l' ? FQ_CHECK_REPAIR_LEAKS : FQ_CHECK_REPAIR_ALL;
            break;
        case 'm':
            if (img_qsize(optarg, &v) < 0 || v < 1 || v > 16) {
                tool_error("Invalid number of coroutines. Allowed number of coroutines is between 1 and 16");
                return 1;
            }
            a->jobs = (int)v;
            break;
        case 't':
        case 'T':
            if (fq_cache_parse(optarg, ch == 't' ? &a->cache : &a->src_cache) < 0) {
                tool_error("Invalid %s option: %s", ch == 't' ? "cache" : "source cache", optarg);
                return 1;
            }
            break;
        case ':':
            return img_usage_err("option '%s' requires an argument", argv[optind - 1]);
        default:
            return img_usage_err("unrecognized option '%s'", argv[optind - 1]);
        }
    }
    return 0;
}

/* ---- output helpers ------------------------------------------------------- */

/* A size as qemu prints it: three digits of the largest binary unit that
 * leaves at least 1000 of the unit below. */
static void size_str(uint64_t v, char *buf, size_t n)
{
    static const char *unit[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB" };
    double div = 1;
    int i = 0;

    for (; i < 6 && (double)v >= 1000.0 * div; i++)
        div *= 1024;
    snprintf(buf, n, "%0.3g %s", (double)v / div, unit[i]);
}

/* "dir/of/overlay" + "rel": how qemu names a backing file relative to its
 * overlay. Absolute names, and overlays without a directory, keep `rel`. */
static void path_combine(const char *base, const char *rel, char *out, size_t n)
{
    const char *slash = strrchr(base, '/');

    if (rel[0] == '/' || !slash)
        snprintf(out, n, "%s", rel);
    else
        snprintf(out, n, "%.*s%s", (int)(slash - base + 1), base, rel);
}

/* Pretty JSON in qemu's layout: four-space indent, a member per line. */
struct jw {
    int depth;
    bool first[8];
};

/* Begin a member (an array element when key is NULL). */
static void jw_key(struct jw *w, const char *key)
{
    if (w->depth)
        printf("%s%*s", w->first[w->depth] ? "\n" : ",\n", 4 * w->depth, "");
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
    printf("\n%*s%c%s", 4 * w->depth, "", c, w->depth ? "" : "\n");
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

static void jw_str(struct jw *w, const char *key, const char *s)
{
    jw_key(w, key);
    putchar('"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c < 0x20)
            printf("\\u%04x", c);
        else
            putchar(c);
    }
    putchar('"');
}

void img_progress(struct progress *p, uint64_t done, uint64_t total, bool force)
{
    double pct = total ? (double)done * 100.0 / (double)total : 100.0;

    if (!p->on || (!force && pct - p->last < 1.0))
        return;
    p->last = pct;
    printf("    (%3.2f/100%%)\r", pct);
    fflush(stdout);
}

/* ---- image helpers -------------------------------------------------------- */

struct fq_image *img_open(const char *file, const struct fq_open_opts *o)
{
    char err[FQ_ERR_MAX] = "";
    struct fq_image *img;
    int r = fq_open(file, o, &img, err);

    if (r == 0)
        return img;
    if (err[0])
        tool_error("%s", err);
    else
        tool_error("Could not open '%s': %s", file, strerror(-r));
    return NULL;
}

bool img_is_zero(const uint8_t *p, size_t n)
{
    size_t head = MIN(n, 16);

    for (size_t i = 0; i < head; i++)
        if (p[i])
            return false;
    return n <= 16 || memcmp(p, p + 16, n - 16) == 0;
}

void *img_alloc_buf(void)
{
    void *p = NULL;

    return posix_memalign(&p, 4096, CHUNK) ? NULL : p;
}

/* ---- create --------------------------------------------------------------- */

enum otype { OT_SIZE, OT_BOOL, OT_NUM, OT_STR };
static const struct {
    const char *key, *def, *help;  /* def: printed for qcow2 when not given */
    enum otype type;
} okeys[K_NUM] = {
    [K_CLUSTER] = { "cluster_size", "65536", "qcow2 cluster size", OT_SIZE },
    [K_EXTL2] = { "extended_l2", "off", "Extended L2 tables", OT_BOOL },
    [K_PREALLOC] = { "preallocation", NULL, "Preallocation mode (allowed values: off, metadata, falloc, full)", OT_STR },
    [K_COMPR] = { "compression_type", "zlib", "Compression method used for image cluster compression", OT_STR },
    [K_SIZE] = { "size", NULL, "Virtual disk size", OT_SIZE },
    [K_BFILE] = { "backing_file", NULL, "File name of a base image", OT_STR },
    [K_BFMT] = { "backing_fmt", NULL, "Image format of the base image", OT_STR },
    [K_COMPAT] = { "compat", NULL, "Compatibility level (v2 [0.10] or v3 [1.1])", OT_STR },
    [K_LAZY] = { "lazy_refcounts", "off", "Postpone refcount updates", OT_BOOL },
    [K_REFBITS] = { "refcount_bits", "16", "Width of a reference count entry in bits", OT_NUM },
};
static const int raw_keys[] = { K_SIZE, K_PREALLOC };

static bool is_raw(const struct cspec *c)
{
    return !strcmp(c->fmt, "raw");
}

static bool key_valid(const struct cspec *c, int k)
{
    return !is_raw(c) || k == K_SIZE || k == K_PREALLOC;
}

void img_cspec_num(struct cspec *c, int k, uint64_t v)
{
    c->num[k] = v;
    snprintf(c->norm[k], sizeof(c->norm[k]), "%" PRIu64, v);
    c->val[k] = c->norm[k];
}

/* Parse one -o list. Returns 0, 1 after printing help, -1 on error. */
static int cspec_parse(struct cspec *c, char *list)
{
    static const char *tname[] = { "size", "bool (on/off)", "num", "str" };
    char *save = NULL, *end;

    for (char *tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *v = strchr(tok, '=');
        int k = 0;

        if (!strcmp(tok, "help") || !strcmp(tok, "?")) {
            printf("Supported %s options:\n", c->fmt);
            for (; k < K_NUM; k++)
                if (key_valid(c, k) && !(is_raw(c) && k == K_PREALLOC)) {
                    char left[64];
                    snprintf(left, sizeof(left), "%s=<%s>", okeys[k].key, tname[okeys[k].type]);
                    printf("  %-22s - %s\n", left, okeys[k].help);
                }
            printf("\nThe protocol level may support further options.\n"
                   "Specify the target filename to include those options.\n");
            return 1;
        }
        if (v)
            *v++ = '\0';
        while (k < K_NUM && (strcmp(tok, okeys[k].key) || !key_valid(c, k)))
            k++;
        if (k == K_NUM || !v) {
            tool_error("%s: Invalid parameter '%s'", c->file, tok);
            return -1;
        }
        c->val[k] = v;
        if (okeys[k].type == OT_SIZE && img_qsize(v, &c->num[k]) < 0) {
            tool_error("%s: Parameter '%s' expects a non-negative number below 2^64", c->file, tok);
            fprintf(stderr, "Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\n"
                    "and exabytes, respectively.\n");
            return -1;
        }
        if (okeys[k].type == OT_NUM) {
            errno = 0;
            c->num[k] = strtoull(v, &end, 0);
            if (!*v || *end || errno || *v == '-') {
                tool_error("%s: Parameter '%s' expects a number", c->file, tok);
                return -1;
            }
        }
        if (okeys[k].type == OT_SIZE || okeys[k].type == OT_NUM)
            img_cspec_num(c, k, c->num[k]);
        if (okeys[k].type == OT_BOOL) {
            c->on[k] = !strcmp(v, "on") || !strcmp(v, "true") || !strcmp(v, "yes");
            if (!c->on[k] && strcmp(v, "off") && strcmp(v, "false") && strcmp(v, "no")) {
                tool_error("%s: Parameter '%s' expects 'on' or 'off'", c->file, tok);
                return -1;
            }
        }
    }
    return 0;
}

/* The qcow2 driver's checks, in qemu-img's words; NULL if all is well. */
static const char *qcow2_opts_error(const struct cspec *c, int *version)
{
    static const char v3[] = " (use version=v3 or greater)";
    static char msg[192];
    const char *compat = c->val[K_COMPAT], *ct = c->val[K_COMPR];
    uint64_t cs = c->val[K_CLUSTER] ? c->num[K_CLUSTER] : 65536;
    uint64_t rb = c->val[K_REFBITS] ? c->num[K_REFBITS] : 16;
    uint64_t per_l2 = cs / (c->on[K_EXTL2] ? 16 : 8) * cs;   /* guest bytes an L2 table maps */

    *version = compat && (!strcmp(compat, "0.10") || !strcmp(compat, "v2")) ? 2 : 3;
    msg[0] = '\0';
    if (compat && *version == 3 && strcmp(compat, "1.1") && strcmp(compat, "v3"))
        snprintf(msg, sizeof(msg), "Parameter 'version' does not accept value '%.60s'", compat);
    else if (cs < 512 || cs > (2u << 20) || (cs & (cs - 1)))
        snprintf(msg, sizeof(msg), "Cluster size must be a power of two between 512 and 2048k");
    else if (rb == 0 || rb > 64 || (rb & (rb - 1)))
        snprintf(msg, sizeof(msg), "Refcount width must be a power of two and may not exceed 64 bits");
    else if (*version == 2 && rb != 16)
        snprintf(msg, sizeof(msg), "Different refcount widths than 16 bits require compatibility "
                 "level 1.1 or above%s", v3);
    else if (*version == 2 && c->on[K_LAZY])
        snprintf(msg, sizeof(msg), "Lazy refcounts only supported with compatibility level 1.1 and above%s", v3);
    else if (*version == 2 && c->on[K_EXTL2])
        snprintf(msg, sizeof(msg), "Extended L2 entries are only supported with compatibility level "
                 "1.1 and above%s", v3);
    else if (c->on[K_EXTL2] && cs < 16384)
        snprintf(msg, sizeof(msg), "Extended L2 entries are only supported with cluster sizes of at "
                 "least 16384 bytes");
    else if (ct && strcmp(ct, "zlib") && strcmp(ct, "zstd"))
        snprintf(msg, sizeof(msg), "Parameter 'compression-type' does not accept value '%.60s'", ct);
    else if (ct && !strcmp(ct, "zstd") && *version == 2)
        snprintf(msg, sizeof(msg), "Non-zlib compression type is only supported with compatibility "
                 "level 1.1 and above%s", v3);
    else if (c->num[K_SIZE] / per_l2 + 1 > (32u << 20) / 8)   /* the L1 table: at most 32 MiB */
        snprintf(msg, sizeof(msg), "The image size is too large for file format 'qcow2' (try using "
                 "a larger cluster size)");
    return msg[0] ? msg : NULL;
}

/* Append to a fixed buffer. */
static void cat(char *buf, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void cat(char *buf, size_t n, const char *fmt, ...)
{
    size_t used = strlen(buf);
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(buf + used, n - used, fmt, ap);
    va_end(ap);
}

int img_create(struct cspec *c)
{
    const char *pa = c->val[K_PREALLOC];
    char err[FQ_ERR_MAX] = "", list[256] = "", path[4096], detected[16] = "";
    struct fq_create_opts o;
    struct fq_open_opts oo;
    struct fq_image *b;
    int version = 3;

    if (!is_raw(c) && strcmp(c->fmt, "qcow2")) {
        tool_error("%s: Unknown file format '%s'", c->file, c->fmt);
        return -1;
    }
    if (c->val[K_BFILE] && is_raw(c)) {
        tool_error("%s: Backing file not supported for file format '%s'", c->file, c->fmt);
        return -1;
    }
    if (c->val[K_BFILE] && !c->unsafe) {   /* a size may come from the backing file */
        path_combine(c->file, c->val[K_BFILE], path, sizeof(path));
        fq_open_opts_init(&oo);
        oo.format = c->val[K_BFMT];
        oo.readonly = oo.no_backing = 1;
        if (fq_open(path, &oo, &b, err) < 0) {
            tool_error("%s: %s", c->file, err);
            fprintf(stderr, "Could not open backing image.\n");
            return -1;
        }
        snprintf(detected, sizeof(detected), "%s", fq_format(b));
        if (!c->val[K_SIZE])
            img_cspec_num(c, K_SIZE, fq_size(b));
        fq_close(b);
    }
    if (c->val[K_BFILE] && !c->val[K_BFMT]) {
        tool_error("%s: Backing file specified without backing format", c->file);
        if (detected[0])
            fprintf(stderr, "Detected format of %s.\n", detected);
        return -1;
    }
    if (!c->val[K_SIZE]) {
        tool_error("%s: Image creation needs a size parameter", c->file);
        return -1;
    }
    if (c->print && !c->quiet) {
        printf("Formatting '%s', fmt=%s", c->file, c->fmt);
        for (int i = 0; i < (is_raw(c) ? 2 : K_NUM); i++) {
            int k = is_raw(c) ? raw_keys[i] : i;
            const char *v = c->val[k] ? c->val[k] : is_raw(c) ? NULL : okeys[k].def;
            if (v)
                printf(" %s=%s", okeys[k].key, v);
        }
        putchar('\n');
        fflush(stdout);
    }
    if (pa && strcmp(pa, "off") && strcmp(pa, "metadata") && strcmp(pa, "falloc") && strcmp(pa, "full")) {
        if (is_raw(c))
            tool_error("%s: invalid parameter value: %s", c->file, pa);
        else
            tool_error("%s: Parameter 'preallocation' does not accept value '%s'", c->file, pa);
        return -1;
    }
    const char *m = is_raw(c) ? NULL : qcow2_opts_error(c, &version);
    if (m) {
        tool_error("%s: %s", c->file, m);
        return -1;
    }
    /* Hand the library normalised values (it parses base 10 and on/off). */
    fq_create_opts_init(&o);
    o.format = c->fmt;
    o.size = ALIGN_UP512(c->num[K_SIZE]);   /* qemu sizes images in sectors */
    if (!is_raw(c)) {
        cat(list, sizeof(list), "compat=%s,lazy_refcounts=%s,extended_l2=%s,", version == 2 ? "0.10" : "1.1",
            c->on[K_LAZY] ? "on" : "off", c->on[K_EXTL2] ? "on" : "off");
        if (c->val[K_CLUSTER])
            cat(list, sizeof(list), "cluster_size=%" PRIu64 ",", c->num[K_CLUSTER]);
        if (c->val[K_REFBITS])
            cat(list, sizeof(list), "refcount_bits=%" PRIu64 ",", c->num[K_REFBITS]);
        if (c->val[K_COMPR])
            cat(list, sizeof(list), "compression_type=%s,", c->val[K_COMPR]);
        o.backing_file = c->val[K_BFILE];
        o.backing_format = c->val[K_BFMT];
    }
    if (pa)
        cat(list, sizeof(list), "preallocation=%s,", pa);
    if ((list[0] && fq_create_opts_parse(&o, list, err) < 0) || fq_create(c->file, &o, err) < 0) {
        tool_error("%s: %s", c->file, err[0] ? err : "Could not create the image");
        return -1;
    }
    return 0;
}

int img_cspec_parse(struct cspec *c, const struct args *a)
{
    int r = 0;

    for (int i = 0; i < a->nolist && r == 0; i++)
        r = cspec_parse(c, a->olist[i]);   /* values point into argv */
    return r;
}

int cmd_create(int argc, char **argv)
{
    static const char usage[] =
        "usage: fastqcow create [-q] [-f fmt] [-b backing_file [-F backing_fmt]] [-u]\n"
        "                       [-o options] filename [size]\n\n"
        "Create a qcow2 or raw image (qemu-img create). Sizes take the suffixes\n"
        "k, M, G, T, P, E; '-o help' lists the options of the format.\n";
    struct args a;
    struct cspec c = { .print = true };
    uint64_t sz;
    int r = img_parse_args(argc, argv, ":f:o:b:F:qhu", "", usage, &a);

    if (r)
        return r < 0 ? 0 : r;
    c.fmt = a.fmt ? a.fmt : "raw";
    c.quiet = a.quiet;
    c.unsafe = a.unsafe;
    c.file = optind < argc ? argv[optind++] : "";
    if ((r = img_cspec_parse(&c, &a)))
        return r > 0 ? 0 : 1;
    if (!c.file[0])
        return img_usage_err("Expecting image file name");
    if (a.backing)   /* -b and -F win over -o */
        c.val[K_BFILE] = a.backing;
    if (a.fmt2)
        c.val[K_BFMT] = a.fmt2;
    if (optind < argc) {
        if (cvtnum("image size", argv[optind++], &sz) < 0)
            return 1;
        if (c.val[K_SIZE]) {
            tool_error("%s: The image size must be specified only once", c.file);
            return 1;
        }
        img_cspec_num(&c, K_SIZE, sz);
    }
    if (optind < argc)
        return img_usage_err("Unexpected argument: %s", argv[optind]);
    return img_create(&c) < 0 ? 1 : 0;
}

/* ---- info ----------------------------------------------------------------- */

/* Print the info of one image. `next` receives the path of its backing
 * file as qemu opens it ("" = none), `next_fmt` that file's format.
 * Returns 0 or -1. */
static int info_one(const char *file, const char *fmt, bool json, struct jw *w,
                    char *next, size_t n, char *next_fmt)
{
    struct fq_open_opts o;
    struct fq_image *img;
    struct fq_info in;
    char vs[32], ds[32];
    int r;

    fq_open_opts_init(&o);
    o.format = fmt;
    o.readonly = o.check_mode = o.no_backing = 1;
    if (!(img = img_open(file, &o)))
        return -1;
    r = fq_get_info(img, &in);
    struct fq_snapshot *sn = NULL;
    int nsn = 0;
    if (r == 0 && in.nb_snapshots)
        fq_snapshot_list(img, &sn, &nsn);   /* as qemu-img: a bad table is not fatal */
    fq_close(img);
    if (r < 0) {
        tool_error("%s: Could not get the image information: %s", file, strerror(-r));
        return -1;
    }
    bool qcow2 = !strcmp(in.format, "qcow2"), v3 = in.version >= 3;
    const char *compat = v3 ? "1.1" : "0.10", *ct = in.compression_type ? "zstd" : "zlib";
    uint64_t vsize = ALIGN_UP512(in.virtual_size);   /* qemu counts in sectors */

    next[0] = '\0';
    if (in.backing_file[0])
        path_combine(file, in.backing_file, next, n);
    snprintf(next_fmt, 32, "%s", in.backing_format);
    if (json) {
        jw_open(w, NULL, '{');
        if (in.backing_format[0])
            jw_str(w, "backing-filename-format", in.backing_format);
        if (nsn) {
            jw_open(w, "snapshots", '[');
            for (int i = 0; i < nsn; i++) {
                jw_open(w, NULL, '{');
                if (sn[i].icount != UINT64_MAX)
                    jw_int(w, "icount", (int64_t)sn[i].icount);
                jw_int(w, "vm-clock-nsec", (int64_t)(sn[i].vm_clock_nsec % 1000000000));
                jw_str(w, "name", sn[i].name);
                jw_int(w, "date-sec", sn[i].date_sec);
                jw_int(w, "date-nsec", sn[i].date_nsec);
                jw_int(w, "vm-clock-sec", (int64_t)(sn[i].vm_clock_nsec / 1000000000));
                jw_str(w, "id", sn[i].id);
                jw_int(w, "vm-state-size", (int64_t)sn[i].vm_state_size);
                jw_close(w, '}');
            }
            jw_close(w, ']');
        }
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
            jw_str(w, "compat", compat);
            jw_str(w, "compression-type", ct);
            if (v3)
                jw_bool(w, "lazy-refcounts", in.lazy_refcounts);
            jw_int(w, "refcount-bits", in.refcount_bits);
            if (v3) {
                jw_bool(w, "corrupt", in.corrupt);
                jw_bool(w, "extended-l2", in.extended_l2);
            }
            jw_close(w, '}');
            jw_close(w, '}');
        }
        if (next[0])
            jw_str(w, "full-backing-filename", next);
        if (in.encrypted)
            jw_bool(w, "encrypted", true);
        if (next[0])
            jw_str(w, "backing-filename", in.backing_file);
        jw_bool(w, "dirty-flag", in.dirty);
        jw_close(w, '}');
        fq_snapshot_list_free(sn, nsn);
        return 0;
    }
    size_str(vsize, vs, sizeof(vs));
    size_str(in.actual_size, ds, sizeof(ds));
    printf("image: %s\nfile format: %s\nvirtual size: %s (%" PRIu64 " bytes)\ndisk size: %s\n",
           file, in.format, vs, vsize, ds);
    if (in.cluster_size)
        printf("cluster_size: %u\n", in.cluster_size);
    if (in.encrypted)
        printf("encrypted: yes\n");
    if (in.dirty)
        printf("cleanly shut down: no\n");
    if (next[0] && strcmp(next, in.backing_file))
        printf("backing file: %s (actual path: %s)\n", in.backing_file, next);
    else if (next[0])
        printf("backing file: %s\n", in.backing_file);
    if (next[0] && in.backing_format[0])
        printf("backing file format: %s\n", in.backing_format);
    if (nsn)
        img_snapshot_dump(sn, nsn);
    fq_snapshot_list_free(sn, nsn);
    if (qcow2)
        printf("Format specific information:\n    compat: %s\n    compression type: %s\n", compat, ct);
    if (qcow2 && v3)
        printf("    lazy refcounts: %s\n", in.lazy_refcounts ? "true" : "false");
    if (qcow2)
        printf("    refcount bits: %d\n", in.refcount_bits);
    if (qcow2 && v3)
        printf("    corrupt: %s\n    extended l2: %s\n", in.corrupt ? "true" : "false",
               in.extended_l2 ? "true" : "false");
    return 0;
}

int cmd_info(int argc, char **argv)
{
    static const char usage[] =
        "usage: fastqcow info [-f fmt] [--output=human|json] [--backing-chain] [-U] filename\n\n"
        "Show what an image is (qemu-img info).\n";
    static char name[MAX_CHAIN + 1][4096], fmt[MAX_CHAIN + 1][32];
    struct jw w = { 0 };
    struct args a;
    int r = img_parse_args(argc, argv, ":f:hU", "JK", usage, &a);

    if (r)
        return r < 0 ? 0 : r;
    if (optind != argc - 1)
        return img_usage_err("Expecting one image file name");
    snprintf(name[0], sizeof(name[0]), "%s", argv[optind]);
    snprintf(fmt[0], sizeof(fmt[0]), "%s", a.fmt ? a.fmt : "");
    if (a.chain && a.json)
        jw_open(&w, NULL, '[');
    for (int n = 0; n == 0 || (a.chain && name[n][0]); n++) {
        if (n == MAX_CHAIN) {
            tool_error("Backing file '%s' creates an infinite loop.", name[n]);
            return 1;
        }
        if (n > 0 && !a.json)
            putchar('\n');
        if (info_one(name[n], fmt[n][0] ? fmt[n] : NULL, a.json, &w, name[n + 1],
                     sizeof(name[n + 1]), fmt[n + 1]) < 0)
            return 1;
    }
    if (a.chain && a.json)
        jw_close(&w, ']');
    return 0;
}

/* ---- check ---------------------------------------------------------------- */

static void check_msg(void *opaque, const char *line)
{
    size_t n = strlen(line);

    fprintf(stderr, "%.*s\n", (int)(n && line[n - 1] == '\n' ? n - 1 : n), line);
}

static void check_json(const struct fq_check_result *res, const char *file, const char *format)
{
    struct jw w = { 0 };

    jw_open(&w, NULL, '{');
    if (res->image_end_offset)
        jw_int(&w, "image-end-offset", (int64_t)res->image_end_offset);
    if (res->compressed_clusters)
        jw_int(&w, "compressed-clusters", (int64_t)res->compressed_clusters);
    if (res->total_clusters)
        jw_int(&w, "total-clusters", (int64_t)res->total_clusters);
    if (res->corruptions)
        jw_int(&w, "corruptions", res->corruptions);
    if (res->corruptions_fixed)
        jw_int(&w, "corruptions-fixed", res->corruptions_fixed);
    jw_int(&w, "check-errors", res->check_errors);
    if (res->leaks)
        jw_int(&w, "leaks", res->leaks);
    if (res->leaks_fixed)
        jw_int(&w, "leaks-fixed", res->leaks_fixed);
    if (res->allocated_clusters)
        jw_int(&w, "allocated-clusters", (int64_t)res->allocated_clusters);
    jw_str(&w, "filename", file);
    jw_str(&w, "format", format);
    if (res->fragmented_clusters)
        jw_int(&w, "fragmented-clusters", (int64_t)res->fragmented_clusters);
    jw_close(&w, '}');
}

static void check_human(const struct fq_check_result *res)
{
    if (res->corruptions_fixed || res->leaks_fixed)
        printf("The following inconsistencies were found and repaired:\n\n    %" PRId64 " leaked clusters\n"
               "    %" PRId64 " corruptions\n\nDouble checking the fixed image now...\n",
               res->leaks_fixed, res->corruptions_fixed);
    if (!res->corruptions && !res->leaks && !res->check_errors)
        printf("No errors were found on the image.\n");
    if (res->corruptions)
        printf("\n%" PRId64 " errors were found on the image.\nData may be corrupted, or further "
               "writes to the image may corrupt it.\n", res->corruptions);
    if (res->leaks)
        printf("\n%" PRId64 " leaked clusters were found on the image.\nThis means waste of disk "
               "space, but no harm to data.\n", res->leaks);
    if (res->check_errors)
        printf("\n%" PRId64 " internal errors have occurred during the check.\n", res->check_errors);
    if (res->total_clusters && res->allocated_clusters) {
        double alloc = (double)res->allocated_clusters;
        printf("%" PRIu64 "/%" PRIu64 " = %0.2f%% allocated, %0.2f%% fragmented, %0.2f%% compressed "
               "clusters\n", res->allocated_clusters, res->total_clusters,
               alloc * 100 / (double)res->total_clusters, (double)res->fragmented_clusters * 100 / alloc,
               (double)res->compressed_clusters * 100 / alloc);
    }
    if (res->image_end_offset)
        printf("Image end offset: %" PRIu64 "\n", res->image_end_offset);
}

int cmd_check(int argc, char **argv)
{
    static const char usage[] =
        "usage: fastqcow check [-q] [-f fmt] [--output=human|json] [-r leaks|all] [-T cache] filename\n\n"
        "Check, and with -r repair, an image (qemu-img check). Exit codes: 0 consistent,\n"
        "1 check not completed, 2 corrupted, 3 leaked clusters only, 63 no checks.\n";
    struct fq_check_result res, again;
    struct fq_open_opts o;
    struct fq_image *img;
    struct args a;
    char format[16];
    int r = img_parse_args(argc, argv, ":f:r:T:qhU", "J", usage, &a);

    if (r)
        return r < 0 ? 0 : r;
    if (optind != argc - 1)
        return img_usage_err("Expecting one image file name");
    fq_open_opts_init(&o);
    o.format = a.fmt;
    o.cache = a.src_cache;
    o.readonly = !a.repair;   /* repair needs a read-write open */
    o.check_mode = o.no_backing = 1;
    if (!(img = img_open(argv[optind], &o)))
        return 1;
    snprintf(format, sizeof(format), "%s", fq_format(img));
    r = fq_check(img, a.repair, &res, check_msg, NULL);
    if (r == 0 && (res.corruptions_fixed || res.leaks_fixed)) {
        /* as qemu-img: report what a second, read-only pass still finds */
        r = fq_check(img, 0, &again, check_msg, NULL);
        again.corruptions_fixed = res.corruptions_fixed;
        again.leaks_fixed = res.leaks_fixed;
        res = again;
    }
    int cr = fq_close(img);
    if (r == 0 && a.repair)
        r = cr;
    if (r == -ENOTSUP) {
        tool_error("This image format does not support checks");
        return 63;
    }
    if (r < 0) {
        tool_error("Check failed: %s", strerror(-r));
        return 1;
    }
    if (!a.quiet && a.json)
        check_json(&res, argv[optind], format);
    else if (!a.quiet)
        check_human(&res);
    return res.check_errors ? 1 : res.corruptions ? 2 : res.leaks ? 3 : 0;
}

/* ---- map ------------------------------------------------------------------ */

#define MAP_FLAGS (FQ_MAP_DATA | FQ_MAP_ZERO | FQ_MAP_ALLOCATED | FQ_MAP_OFFSET)

/* qemu-img map merges entries equal in all but length whose host ranges
 * (if any) continue each other; 7.2 knows no "compressed". */
static bool map_mergeable(const struct fq_map_entry *a, const struct fq_map_entry *b)
{
    return a->length && (a->flags & MAP_FLAGS) == (b->flags & MAP_FLAGS) && a->depth == b->depth &&
           (!(a->flags & FQ_MAP_OFFSET) || a->host_offset + a->length == b->host_offset);
}

/* Print a merged entry. Returns 0, or -1 where human output cannot show
 * data without a host offset (compressed clusters). */
static int map_dump(const struct fq_map_entry *e, bool json, bool first, char (*names)[4096])
{
    bool off = e->flags & FQ_MAP_OFFSET, data = e->flags & FQ_MAP_DATA, zero = e->flags & FQ_MAP_ZERO;

    if (json) {
        printf("%s{ \"start\": %" PRIu64 ", \"length\": %" PRIu64 ", \"depth\": %d, \"present\": %s, "
               "\"zero\": %s, \"data\": %s", first ? "[" : ",\n", e->start, e->length, e->depth,
               e->flags & FQ_MAP_ALLOCATED ? "true" : "false", zero ? "true" : "false",
               data ? "true" : "false");
        if (off)
            printf(", \"offset\": %" PRIu64, e->host_offset);
        putchar('}');
    } else if (data && !off) {
        tool_error("File contains external, encrypted or compressed clusters.");
        return -1;
    } else if (data && !zero) {
        char col[3][24];   /* qemu's "%#-16"PRIx64: 0 has no 0x */
        const uint64_t v[3] = { e->start, e->length, e->host_offset };
        for (int i = 0; i < 3; i++)
            snprintf(col[i], sizeof(col[i]), v[i] ? "%#" PRIx64 : "0", v[i]);
        printf("%-16s%-16s%-16s%s\n", col[0], col[1], col[2], names[e->depth]);
    }
    return 0;
}

/* names[d]: the file of layer d of the chain, named as qemu names it. */
static void chain_names(const char *file, const char *fmt, char (*names)[4096])
{
    snprintf(names[0], 4096, "%s", file);
    for (int d = 0; d < MAX_CHAIN; d++) {
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
    static const char usage[] =
        "usage: fastqcow map [-f fmt] [--output=human|json] [--start-offset=N] [--max-length=N] filename\n\n"
        "Show where the guest data of an image lives (qemu-img map).\n";
    static char names[MAX_CHAIN + 1][4096];
    struct fq_map_entry cur, next;
    struct fq_open_opts o;
    struct fq_image *img;
    struct args a;
    bool first = true;
    int r = img_parse_args(argc, argv, ":f:hU", "JXY", usage, &a);

    if (r)
        return r < 0 ? 0 : r;
    if (optind != argc - 1)
        return img_usage_err("Expecting one image file name");
    fq_open_opts_init(&o);
    o.format = a.fmt;
    o.readonly = 1;
    if (!(img = img_open(argv[optind], &o)))
        return 1;
    uint64_t size = fq_size(img), end = a.maxlen > size - MIN(a.start, size) ? size : a.start + a.maxlen;
    if (!a.json) {
        chain_names(argv[optind], a.fmt, names);
        printf("%-16s%-16s%-16s%s\n", "Offset", "Length", "Mapped to", "File");
    }
    cur = (struct fq_map_entry){ .start = a.start };
    while (r == 0 && cur.start + cur.length < end) {
        uint64_t off = cur.start + cur.length;
        if ((r = fq_map(img, off, end - off, &next)) < 0 || next.length == 0) {
            tool_error("Could not read the image metadata: %s", strerror(r < 0 ? -r : EIO));
            r = -1;
        } else if (map_mergeable(&cur, &next)) {
            cur.length += MIN(next.length, end - off);
        } else {
            if (cur.length && (r = map_dump(&cur, a.json, first, names)) == 0)
                first = false;
            cur = next;
            cur.length = MIN(next.length, end - off);
        }
    }
    if (r == 0)   /* the last entry is printed even if empty */
        r = map_dump(&cur, a.json, first, names);
    if (r == 0 && a.json)
        printf("]\n");
    fq_close(img);
    return r < 0;
}
