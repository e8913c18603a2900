/* common/create_opts.c: image creation as create and convert -O do it
 * (create_opts.h): the -o keys of qcow2 and raw, their parsing and help,
 * qemu-img's checks of their values, the "Formatting ..." line and
 * img_create.
 *
 * Where this file repeats a check the library makes (create option
 * values), it does so only to print qemu-img 7.2's wording; the library
 * is then handed the values normalised (decimal numbers, on/off).
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "args.h"
#include "create_opts.h"
#include "image.h"

/* Each -o key: its name, its type and its line of '-o help'. */
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
    if (c->val[K_BFILE]) {
        /* the same name, or the same file under another name */
        struct stat sa, sb;
        img_path_combine(c->file, c->val[K_BFILE], path, sizeof(path));
        if (!strcmp(c->file, c->val[K_BFILE]) ||
            (stat(c->file, &sa) == 0 && stat(path, &sb) == 0 && sa.st_dev == sb.st_dev &&
             sa.st_ino == sb.st_ino)) {
            tool_error("%s: Error: Trying to create an image with the same filename as the "
                       "backing file", c->file);
            return -1;
        }
    }
    if (c->val[K_BFILE] && !c->unsafe) {   /* a size may come from the backing file */
        img_path_combine(c->file, c->val[K_BFILE], path, sizeof(path));
        tool_open_opts_init(&oo);
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
