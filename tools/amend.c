/* amend.c: `fastqcow amend`, qemu-img amend: change options of an
 * existing qcow2 image (compat, lazy_refcounts, refcount_bits, size,
 * data_file, data_file_raw=off)
 * through fq_amend; the options only creation takes, and the backing
 * file (rebase's job), are refused with qemu-img's messages.
 *
 * Options, output and exit codes follow qemu-img 7.2 (learnt by running
 * it); errors go to stderr as "fastqcow: ..." and exit 1.
 * As with resize, `-o size=` smaller drops only unused space past the new
 * end.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/args.h"
#include "common/image.h"
#include "common/output.h"
#include "subcommands.h"

static const char *const amend_help[][2] = {
    { "backing_file=<str>", "File name of a base image" },
    { "backing_fmt=<str>", "Image format of the base image" },
    { "compat=<str>", "Compatibility level (v2 [0.10] or v3 [1.1])" },
    { "data_file=<str>", "File name of an external data file" },
    { "data_file_raw=<bool (on/off)>", "The external data file must stay valid as a raw image" },
    { "encrypt.iter-time=<num>", "Time to spend in PBKDF in milliseconds" },
    { "encrypt.keyslot=<num>", "Select a single keyslot to modify explicitly" },
    { "encrypt.new-secret=<str>", "New secret to set in the matching keyslots. Empty string to erase" },
    { "encrypt.old-secret=<str>", "Select all keyslots that match this password" },
    { "encrypt.state=<str>", "Select new state of affected keyslots (active/inactive)" },
    { "lazy_refcounts=<bool (on/off)>", "Postpone refcount updates" },
    { "refcount_bits=<num>", "Width of a reference count entry in bits" },
    { "size=<size>", "Virtual disk size" },
};

/* Does an -o list ask for help? */
static bool wants_help(const char *list)
{
    char *l = strdup(list), *save = NULL;
    bool help = false;

    for (char *t = l ? strtok_r(l, ",", &save) : NULL; t; t = strtok_r(NULL, ",", &save))
        help |= !strcmp(t, "help") || !strcmp(t, "?");
    free(l);
    return help;
}

/* '-o help': the amend options of the image's format (-f, or probed).
 * Returns the exit code. */
static int amend_help_for(const char *fmt, int argc, char **argv)
{
    char f[16] = "";

    if (!fmt) {
        if (optind != argc - 1) {
            tool_error("Expecting one image file name");
            return 1;
        }
        /* read-write, as amend opens it (the probed-raw warning with it) */
        struct fq_image *img = img_open_file(argv[optind], NULL, true, false, FQ_CACHE_WRITEBACK);
        if (!img)
            return 1;
        snprintf(f, sizeof(f), "%s", fq_format(img));
        fq_close(img);
        fmt = f;
    }
    if (strcmp(fmt, "qcow2")) {
        tool_error(strcmp(fmt, "raw") ? "Unknown file format '%s'"
                                      : "Format driver '%s' does not support option amendment", fmt);
        return 1;
    }
    printf("Amend options for 'qcow2':\n");
    for (size_t i = 0; i < sizeof(amend_help) / sizeof(amend_help[0]); i++)
        printf("  %-22s - %s\n", amend_help[i][0], amend_help[i][1]);
    return 0;
}

/* An on/off value of key `key` (also true/false, yes/no). Returns 0 or -1
 * after printing. */
static int parse_bool(const char *key, const char *v, int *out)
{
    if (!strcmp(v, "on") || !strcmp(v, "true") || !strcmp(v, "yes"))
        *out = 1;
    else if (!strcmp(v, "off") || !strcmp(v, "false") || !strcmp(v, "no"))
        *out = 0;
    else {
        tool_error("Parameter '%s' expects 'on' or 'off'", key);
        return -1;
    }
    return 0;
}

/* Parse one amend -o list into `o`. Returns 0 or -1 after printing. */
static int amend_parse(char *list, struct fq_amend_opts *o)
{
    static const char *const create_only[] = { "cluster_size", "extended_l2", "compression_type",
                                                "preallocation", "encryption", "encrypt.format" };
    char *save = NULL;

    for (char *tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *v = strchr(tok, '=');
        if (v)
            *v++ = '\0';
        for (size_t i = 0; i < sizeof(create_only) / sizeof(create_only[0]); i++)
            if (!strcmp(tok, create_only[i])) {
                tool_error("Invalid parameter '%s'", tok);
                fprintf(stderr, "This option is only supported for image creation\n");
                return -1;
            }
        if (!v || (strcmp(tok, "compat") && strcmp(tok, "lazy_refcounts") && strcmp(tok, "size") &&
                   strcmp(tok, "refcount_bits") && strcmp(tok, "backing_file") &&
                   strcmp(tok, "backing_fmt") && strcmp(tok, "data_file") &&
                   strcmp(tok, "data_file_raw"))) {
            tool_error("Invalid parameter '%s'", tok);
            return -1;
        }
        if (!strcmp(tok, "compat")) {
            if (!strcmp(v, "0.10") || !strcmp(v, "v2"))
                o->version = 2;
            else if (!strcmp(v, "1.1") || !strcmp(v, "v3"))
                o->version = 3;
            else {
                tool_error("Unknown compatibility level %s", v);
                return -1;
            }
        } else if (!strcmp(tok, "lazy_refcounts")) {
            if (parse_bool(tok, v, &o->lazy_refcounts) < 0)
                return -1;
        } else if (!strcmp(tok, "refcount_bits")) {
            char *end;
            errno = 0;
            unsigned long long n = strtoull(v, &end, 10);
            if (!*v || *end || errno || v[0] == '-') {
                tool_error("Parameter 'refcount_bits' expects a number");
                return -1;
            }
            if (n == 0 || n > 64 || (n & (n - 1))) {
                tool_error("Refcount width must be a power of two and may not exceed 64 bits");
                return -1;
            }
            o->refcount_bits = (int)n;
        } else if (!strcmp(tok, "data_file")) {
            o->data_file = v;
        } else if (!strcmp(tok, "data_file_raw")) {
            if (parse_bool(tok, v, &o->data_file_raw) < 0)
                return -1;
        } else if (!strcmp(tok, "size")) {
            if (img_qsize(v, &o->size) < 0 || o->size == 0) {
                tool_error("Parameter 'size' expects a non-negative number below 2^64");
                return -1;
            }
        } else {
            /* as qemu-img 7.2 (the library can: fq_amend_opts.backing_file) */
            tool_error("Cannot amend the backing file");
            fprintf(stderr, "You can use 'fastqcow rebase' instead.\n");
            return -1;
        }
    }
    return 0;
}

int cmd_amend(int argc, char **argv)
{
    static const char usage[] =
        "usage: fastqcow amend [--object objectdef] [-p] [-q] [-f fmt] [-t cache] [--force]\n"
        "                      -o options filename\n"
        "\n"
        "Change options of an existing image (qemu-img amend): compat, lazy_refcounts,\n"
        "refcount_bits, size (a smaller size drops what lies past the new end),\n"
        "data_file, data_file_raw=off.\n"
        "\n"
        "  -o options           the options to change; '-o help' lists them\n"
        "  -f fmt               the image's format (qcow2)\n"
        "  -t cache             cache mode\n"
        "  -p                   show progress\n"
        "  -q                   print nothing\n"
        "  -F, --force          accepted for compatibility\n"
        "  --image-opts         the image is named by qemu's option list\n"
        "  --object objectdef   define an object (secret)\n"
        "  -h, --help           this help\n";
    static const struct option lo[] = { { "help", no_argument, NULL, 'h' },
                                        { "object", required_argument, NULL, LO_OBJECT },
                                        { "force", no_argument, NULL, 'F' }, { 0 } };
    struct fq_amend_opts o;
    enum fq_cache_mode cache = FQ_CACHE_WRITEBACK;
    const char *fmt = NULL;
    char *lists[16], err[FQ_ERR_MAX] = "";
    int nl = 0, ch;
    struct progress pg = { 0 };
    bool quiet = false;

    fq_amend_opts_init(&o);
    opterr = 0;
    optind = 1;
    while ((ch = getopt_long(argc, argv, ":o:f:t:pqhF", lo, NULL)) != -1) {
        switch (ch) {
        case 'o':
            if (nl < 16)
                lists[nl++] = optarg;
            break;
        case 'f': fmt = optarg; break;
        case 't':
            if (tool_parse_cache(optarg, &cache, "cache") < 0)
                return 1;
            break;
        case 'p': pg.on = true; break;
        case 'q': quiet = true; break;
        case 'F': break;
        case LO_OBJECT:
            if ((ch = img_object_opt(optarg)) >= 0)
                return ch;
            break;
        case 'h': fputs(usage, stdout); return 0;
        default: return img_getopt_err(ch, argv);   /* '?' and ':' */
        }
    }
    for (int i = 0; i < nl; i++)
        if (wants_help(lists[i]))
            return amend_help_for(fmt, argc, argv);
    for (int i = 0; i < nl; i++)
        if (amend_parse(lists[i], &o) < 0)
            return 1;
    if (nl == 0)
        return img_usage_err("Must specify options (-o)");
    if (optind != argc - 1)
        return img_usage_err("Expecting one image file name");
    struct fq_image *img = img_open_file(argv[optind], fmt, true, true, cache);
    if (!img)
        return 1;
    pg.on = pg.on && !quiet;
    img_progress(&pg, 0, 1, true);
    int r = fq_amend(img, &o, err);
    if (r < 0)
        tool_error("%s", err);
    r = img_close(img, r);
    if (r == 0 && pg.on) {   /* as qemu-img: the last step, then the end */
        img_progress(&pg, 1, 1, true);
        img_progress(&pg, 1, 1, true);
        putchar('\n');
    }
    return r < 0;
}
