/* amend.c: the qemu-img compatible subcommands that change a whole
 * image: snapshot, resize, amend, measure, rebase and commit, over the
 * library's image-feature API (fastqcow.h). Also the snapshot table that
 * `info` prints.
 *
 * Options, output and exit codes follow qemu-img 7.2 (learnt by running
 * it): success prints what qemu-img prints ("Image resized.", "Image
 * committed.", the measure lines, the "Snapshot list:" table), errors go
 * to stderr as "fastqcow: ..." and exit 1. One deliberate difference:
 * `resize --shrink` (and `amend -o size=` smaller) refuses to drop data
 * past the new end; `resize --shrink --discard-data` does what qemu-img's
 * --shrink does.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/args.h"
#include "common/image.h"
#include "common/output.h"
#include "subcommands.h"

/* ---- shared ------------------------------------------------------------------ */

void img_snapshot_dump(const struct fq_snapshot *v, int n)
{
    printf("Snapshot list:\n%-10s%-17s%8s%20s%13s%11s\n", "ID", "TAG", "VM SIZE", "DATE",
           "VM CLOCK", "ICOUNT");
    for (int i = 0; i < n; i++) {
        char size[32], date[32] = "", clock[48], icount[32] = "";
        time_t t = (time_t)v[i].date_sec;
        struct tm tm;
        uint64_t ms = v[i].vm_clock_nsec / 1000000;

        img_size_str(v[i].vm_state_size, size, sizeof(size));
        if (localtime_r(&t, &tm))
            strftime(date, sizeof(date), "%Y-%m-%d %H:%M:%S", &tm);
        snprintf(clock, sizeof(clock), "%02" PRIu64 ":%02u:%02u.%03u", ms / 3600000,
                 (unsigned)(ms / 60000 % 60), (unsigned)(ms / 1000 % 60), (unsigned)(ms % 1000));
        if (v[i].icount != UINT64_MAX)
            snprintf(icount, sizeof(icount), "%" PRIu64, v[i].icount);
        printf("%-9s %-16s %8s%20s%13s%11s\n", v[i].id, v[i].name, size, date, clock, icount);
    }
}

/* Open `file` (format `fmt`, NULL = probe). Returns NULL after printing. */
static struct fq_image *open_image(const char *file, const char *fmt, bool rw, bool backing,
                                   enum fq_cache_mode cache)
{
    struct fq_open_opts o;

    tool_open_opts_init(&o);
    o.format = fmt;
    o.readonly = !rw;
    o.no_backing = !backing;
    o.cache = cache;
    return img_open(file, &o);
}

static const struct option help_only[] = { { "help", no_argument, NULL, 'h' },
                                           { "force-share", no_argument, NULL, 'U' },
                                           { 0 } };

/* ---- snapshot ------------------------------------------------------------------ */

int cmd_snapshot(int argc, char **argv)
{
    static const char usage[] =
        "usage: fastqcow snapshot [-q] [-U] [-f fmt] [-l | -a snapshot | -c snapshot | -d snapshot] filename\n\n"
        "List, create, apply (revert to) or delete internal snapshots (qemu-img snapshot).\n";
    const char *fmt = NULL, *name = NULL;
    char act = 0, err[FQ_ERR_MAX] = "";
    int ch, r = 0;
    bool quiet = false;

    opterr = 0;
    optind = 1;
    while ((ch = getopt_long(argc, argv, ":la:c:d:f:qhU", help_only, NULL)) != -1) {
        switch (ch) {
        case 'l': case 'a': case 'c': case 'd':
            if (act)
                return img_usage_err("Cannot mix '-l', '-a', '-c', '-d'");
            act = (char)ch;
            name = optarg;
            break;
        case 'f': fmt = optarg; break;
        case 'q': quiet = true; break;
        case 'U': break;
        case 'h': fputs(usage, stdout); return 0;
        default: return img_getopt_err(ch, argv);   /* '?' and ':' */
        }
    }
    if (optind != argc - 1)
        return img_usage_err("Expecting one image file name");
    (void)quiet;   /* qemu-img prints the list even with -q */
    if (!act)
        return 0;
    struct fq_image *img = open_image(argv[optind], fmt, act != 'l', false, FQ_CACHE_WRITEBACK);
    if (!img)
        return 1;
    struct fq_snapshot *v = NULL;
    int n = 0;
    switch (act) {
    case 'l':
        if (fq_snapshot_list(img, &v, &n) == 0 && n)
            img_snapshot_dump(v, n);
        break;
    case 'c':
        if ((r = fq_snapshot_create(img, name, err)) < 0)
            tool_error("Could not create snapshot '%s': %d (%s)", name, r, strerror(-r));
        break;
    case 'a':
        if ((r = fq_snapshot_apply(img, name, err)) < 0)
            tool_error("Could not apply snapshot '%s': %s", name,
                       r == -ENOENT ? "Failed to load snapshot: No such file or directory" : err);
        break;
    case 'd':
        /* as qemu-img: by name only */
        r = fq_snapshot_list(img, &v, &n);
        int i = 0;
        while (r == 0 && i < n && strcmp(v[i].name, name))
            i++;
        if (r == 0 && i == n) {
            tool_error("Could not delete snapshot '%s': snapshot not found", name);
            r = -ENOENT;
        } else if (r == 0 && (r = fq_snapshot_delete(img, v[i].id, err)) < 0) {
            tool_error("Could not delete snapshot '%s': %s", name, err);
        } else if (r < 0) {
            tool_error("Could not delete snapshot '%s': %s", name, strerror(-r));
        }
        break;
    }
    fq_snapshot_list_free(v, n);
    r = img_close(img, r);
    return r < 0;
}

/* ---- resize ------------------------------------------------------------------- */

int cmd_resize(int argc, char **argv)
{
    static const char usage[] =
        "usage: fastqcow resize [-q] [-f fmt] [--shrink [--discard-data]] [--preallocation=off] filename [+ | -]size\n\n"
        "Change the virtual size of an image (qemu-img resize).\n\n"
        "  --shrink        allow a smaller size; refused if the image holds data past\n"
        "                  the new end (zero or unallocated ranges may go)\n"
        "  --discard-data  with --shrink: drop the data past the new end, as\n"
        "                  qemu-img resize --shrink does\n";
    static const struct option lo[] = { { "help", no_argument, NULL, 'h' },
                                        { "shrink", no_argument, NULL, 'S' },
                                        { "discard-data", no_argument, NULL, 'D' },
                                        { "preallocation", required_argument, NULL, 'P' },
                                        { 0 } };
    const char *fmt = NULL, *arg;
    char err[FQ_ERR_MAX] = "";
    bool quiet = false, shrink = false, discard = false;
    uint64_t v;
    int ch;

    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(usage, stdout);
            return 0;
        }
    if (argc < 3)
        return img_usage_err("Not enough arguments");
    arg = argv[--argc];   /* the size may look like an option ("-1G") */
    opterr = 0;
    optind = 1;
    while ((ch = getopt_long(argc, argv, ":f:qhU", lo, NULL)) != -1) {
        switch (ch) {
        case 'f': fmt = optarg; break;
        case 'q': quiet = true; break;
        case 'S': shrink = true; break;
        case 'D': discard = true; break;
        case 'U': break;
        case 'P':
            if (strcmp(optarg, "off")) {
                tool_error("Preallocation mode '%s' is not supported by resize", optarg);
                return 1;
            }
            break;
        case 'h': fputs(usage, stdout); return 0;
        default: return img_getopt_err(ch, argv);   /* '?' and ':' */
        }
    }
    if (optind != argc - 1)
        return img_usage_err("Expecting image file name and size");
    int rel = arg[0] == '+' ? 1 : arg[0] == '-' ? -1 : 0;
    if (img_qsize(arg + (rel != 0), &v) < 0) {
        tool_error("Invalid image size specified. You may use k, M, G, T, P or E suffixes for");
        tool_error("kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.");
        return 1;
    }
    struct fq_image *img = open_image(argv[optind], fmt, true, true, FQ_CACHE_WRITEBACK);
    if (!img)
        return 1;
    uint64_t cur = fq_size(img), size = v;
    int r = 0;
    if (rel < 0 && v >= cur) {
        tool_error("New image size must be positive");
        r = -EINVAL;
    } else if (rel) {
        size = rel > 0 ? cur + v : cur - v;
    } else if (v == 0) {
        tool_error("New image size must be positive");
        r = -EINVAL;
    }
    if (r == 0 && !strcmp(fq_format(img), "qcow2") && size % 512) {
        tool_error("The new size must be a multiple of 512");
        r = -EINVAL;
    }
    if (r == 0 && size < cur && !shrink) {
        tool_error("Use the --shrink option to perform a shrink operation.");
        tool_error("warning: --shrink drops only unused space past the new end; with "
                   "--discard-data it deletes all data beyond the shrunken image's end.");
        r = -EINVAL;
    }
    unsigned flags = (shrink ? FQ_RESIZE_SHRINK : 0) | (discard ? FQ_RESIZE_DISCARD_DATA : 0);
    if (r == 0 && (r = fq_resize(img, size, flags, err)) < 0)
        tool_error("%s", err);
    r = img_close(img, r);
    if (r == 0 && !quiet)
        printf("Image resized.\n");
    return r < 0;
}

/* ---- amend -------------------------------------------------------------------- */

static const char *const amend_help[][2] = {
    { "backing_file=<str>", "File name of a base image" },
    { "backing_fmt=<str>", "Image format of the base image" },
    { "compat=<str>", "Compatibility level (v2 [0.10] or v3 [1.1])" },
    { "lazy_refcounts=<bool (on/off)>", "Postpone refcount updates" },
    { "refcount_bits=<num>", "Width of a reference count entry in bits" },
    { "size=<size>", "Virtual disk size" },
};

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

/* Parse one amend -o list into `o`. Returns 0, 1 after printing help, -1. */
static int amend_parse(char *list, struct fq_amend_opts *o)
{
    static const char *const create_only[] = { "cluster_size", "extended_l2", "compression_type",
                                                "preallocation", "encryption", "encrypt.format",
                                                "data_file", "data_file_raw" };
    char *save = NULL;

    for (char *tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *v = strchr(tok, '=');
        if (!strcmp(tok, "help") || !strcmp(tok, "?")) {
            printf("Amend options for 'qcow2':\n");
            for (size_t i = 0; i < sizeof(amend_help) / sizeof(amend_help[0]); i++)
                printf("  %-22s - %s\n", amend_help[i][0], amend_help[i][1]);
            return 1;
        }
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
                   strcmp(tok, "backing_fmt"))) {
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
        "usage: fastqcow amend [-p] [-q] [-f fmt] [-t cache] [--force] -o options filename\n\n"
        "Change options of an existing image (qemu-img amend): compat, lazy_refcounts,\n"
        "refcount_bits, size (a smaller size drops only unused space, as resize --shrink).\n";
    static const struct option lo[] = { { "help", no_argument, NULL, 'h' },
                                        { "force", no_argument, NULL, 'F' }, { 0 } };
    struct fq_amend_opts o;
    enum fq_cache_mode cache = FQ_CACHE_WRITEBACK;
    const char *fmt = NULL;
    char *lists[16], err[FQ_ERR_MAX] = "";
    int nl = 0, ch;
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
        case 'p': case 'q': case 'F': break;
        case 'h': fputs(usage, stdout); return 0;
        default: return img_getopt_err(ch, argv);   /* '?' and ':' */
        }
    }
    for (int i = 0; i < nl; i++) {
        int r = amend_parse(lists[i], &o);
        if (r)
            return r < 0;
    }
    if (nl == 0)
        return img_usage_err("Must specify options (-o)");
    if (optind != argc - 1)
        return img_usage_err("Expecting one image file name");
    struct fq_image *img = open_image(argv[optind], fmt, true, true, cache);
    if (!img)
        return 1;
    int r = fq_amend(img, &o, err);
    if (r < 0)
        tool_error("%s", err);
    r = img_close(img, r);
    return r < 0;
}

/* ---- measure ------------------------------------------------------------------- */

int cmd_measure(int argc, char **argv)
{
    static const char usage[] =
        "usage: fastqcow measure [--output=human|json] [-O output_fmt] [-o options] [--size N | [-f fmt] filename]\n\n"
        "Show the size a new image would need (qemu-img measure).\n";
    static const struct option lo[] = { { "help", no_argument, NULL, 'h' },
                                        { "output", required_argument, NULL, 'J' },
                                        { "size", required_argument, NULL, 'Z' },
                                        { "force-share", no_argument, NULL, 'U' }, { 0 } };
    struct fq_create_opts t;
    struct fq_measure_result m;
    const char *fmt = NULL, *ofmt = "raw";
    char *lists[16], err[FQ_ERR_MAX] = "";
    uint64_t size = 0;
    bool json = false, has_size = false;
    int nl = 0, ch, r;

    opterr = 0;
    optind = 1;
    while ((ch = getopt_long(argc, argv, ":f:O:o:l:hU", lo, NULL)) != -1) {
        switch (ch) {
        case 'f': fmt = optarg; break;
        case 'O': ofmt = optarg; break;
        case 'o':
            if (nl < 16)
                lists[nl++] = optarg;
            break;
        case 'U': break;
        case 'J':
            if (strcmp(optarg, "human") && strcmp(optarg, "json")) {
                tool_error("--output must be used with human or json as argument.");
                return 1;
            }
            json = !strcmp(optarg, "json");
            break;
        case 'Z':
            if (img_qsize(optarg, &size) < 0) {
                tool_error("Invalid size specified. Must be between 0 and %" PRId64 ".", INT64_MAX);
                return 1;
            }
            has_size = true;
            break;
        case 'l':
            tool_error("Snapshot parameters (-l) are not supported by fastqcow measure");
            return 1;
        case 'h': fputs(usage, stdout); return 0;
        default: return img_getopt_err(ch, argv);   /* '?' and ':' */
        }
    }
    if (has_size && optind < argc) {
        tool_error("--size N cannot be used together with a filename.");
        return 1;
    }
    if (!has_size && optind != argc - 1) {
        tool_error("Either --size N or one filename must be specified.");
        return 1;
    }
    fq_create_opts_init(&t);
    t.format = ofmt;
    for (int i = 0; i < nl; i++)
        if (fq_create_opts_parse(&t, lists[i], err) < 0) {
            tool_error("%s", err);
            fq_create_opts_release(&t);
            return 1;
        }
    t.format = ofmt;
    t.size = size;
    struct fq_image *src = NULL;
    if (!has_size && !(src = open_image(argv[optind], fmt, false, true, FQ_CACHE_WRITEBACK))) {
        fq_create_opts_release(&t);
        return 1;
    }
    r = fq_measure(&t, src, &m, err);
    if (src)
        fq_close(src);
    fq_create_opts_release(&t);
    if (r < 0) {
        tool_error("%s", err);
        return 1;
    }
    if (json) {
        printf("{\n");
        if (m.has_bitmaps)
            printf("    \"bitmaps\": %" PRIu64 ",\n", m.bitmaps);
        printf("    \"required\": %" PRIu64 ",\n    \"fully-allocated\": %" PRIu64 "\n}\n",
               m.required, m.fully_allocated);
    } else {
        printf("required size: %" PRIu64 "\nfully allocated size: %" PRIu64 "\n", m.required,
               m.fully_allocated);
        if (m.has_bitmaps)
            printf("bitmaps size: %" PRIu64 "\n", m.bitmaps);
    }
    return 0;
}

/* ---- rebase and commit ---------------------------------------------------------- */

static void progress_cb(void *opaque, uint64_t done, uint64_t total)
{
    img_progress(opaque, done, total, false);
}

int cmd_rebase(int argc, char **argv)
{
    static const char usage[] =
        "usage: fastqcow rebase [-q] [-f fmt] [-t cache] [-T src_cache] [-p] [-u] -b backing_file [-F backing_fmt] filename\n\n"
        "Change the backing file of an image (qemu-img rebase). Without -u, data that\n"
        "reads differently through the new backing file is copied into the image first.\n";
    struct fq_rebase_opts o = { 0 };
    struct progress pg = { 0 };
    enum fq_cache_mode cache = FQ_CACHE_WRITEBACK;
    const char *fmt = NULL;
    char err[FQ_ERR_MAX] = "";
    bool quiet = false, has_b = false;
    int ch;

    opterr = 0;
    optind = 1;
    while ((ch = getopt_long(argc, argv, ":f:t:T:b:F:puqhU", help_only, NULL)) != -1) {
        switch (ch) {
        case 'f': fmt = optarg; break;
        case 'b': o.backing_file = optarg; has_b = true; break;
        case 'F': o.backing_format = optarg; break;
        case 'u': o.unsafe = 1; break;
        case 'p': pg.on = true; break;
        case 'q': quiet = true; break;
        case 'U': break;
        case 't':
            if (tool_parse_cache(optarg, &cache, "cache") < 0)
                return 1;
            break;
        case 'T':
            if (tool_parse_cache(optarg, &o.cache, "source cache") < 0)
                return 1;
            break;
        case 'h': fputs(usage, stdout); return 0;
        default: return img_getopt_err(ch, argv);   /* '?' and ':' */
        }
    }
    if (!has_b && !o.unsafe)
        return img_usage_err("Must specify backing file (-b) or use unsafe mode (-u)");
    if (optind != argc - 1)
        return img_usage_err("Expecting one image file name");
    pg.on = pg.on && !quiet;
    o.progress = progress_cb;
    o.opaque = &pg;
    struct fq_image *img = open_image(argv[optind], fmt, true, !o.unsafe, cache);
    if (!img)
        return 1;
    img_progress(&pg, 0, 1, true);
    int r = fq_rebase(img, &o, err);
    if (r < 0)
        tool_error("%s", err);
    r = img_close(img, r);
    if (r == 0 && pg.on) {
        img_progress(&pg, 1, 1, true);
        putchar('\n');
    }
    return r < 0;
}

int cmd_commit(int argc, char **argv)
{
    static const char usage[] =
        "usage: fastqcow commit [-q] [-f fmt] [-t cache] [-b base] [-r rate_limit] [-d] [-p] filename\n\n"
        "Write the data of an image into its backing file (qemu-img commit); then empty\n"
        "the image unless -d (or -b names a deeper backing file).\n";
    struct fq_commit_opts o = { 0 };
    struct progress pg = { 0 };
    char err[FQ_ERR_MAX] = "";
    bool quiet = false;
    int ch;

    opterr = 0;
    optind = 1;
    while ((ch = getopt_long(argc, argv, ":f:t:b:r:dpqhU", help_only, NULL)) != -1) {
        switch (ch) {
        case 'f': o.format = optarg; break;
        case 'b': o.base = optarg; break;
        case 'd': o.keep = 1; break;
        case 'p': pg.on = true; break;
        case 'q': quiet = true; break;
        case 'r': case 'U': break;
        case 't':
            if (tool_parse_cache(optarg, &o.cache, "cache") < 0)
                return 1;
            break;
        case 'h': fputs(usage, stdout); return 0;
        default: return img_getopt_err(ch, argv);   /* '?' and ':' */
        }
    }
    if (optind != argc - 1)
        return img_usage_err("Expecting one image file name");
    pg.on = pg.on && !quiet;
    o.progress = progress_cb;
    o.opaque = &pg;
    img_progress(&pg, 0, 1, true);
    int r = fq_commit(argv[optind], &o, err);
    if (r < 0) {
        tool_error("%s", err[0] ? err : strerror(-r));
        return 1;
    }
    if (pg.on) {
        img_progress(&pg, 1, 1, true);
        putchar('\n');
    }
    if (!quiet)
        printf("Image committed.\n");
    return 0;
}
