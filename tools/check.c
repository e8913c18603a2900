/* check.c: `fastqcow check`, qemu-img check: the consistency of an image
 * and, with -r, its repair (then a second, read-only pass reports what is
 * left). Report text, JSON members (in qemu's order) and exit codes follow
 * qemu-img 7.2.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "common/args.h"
#include "common/blockopts.h"
#include "common/image.h"
#include "common/output.h"
#include "subcommands.h"

/* Print a line of the library's check report to stderr. */
static void check_msg(void *opaque, const char *line)
{
    size_t n = strlen(line);

    fprintf(stderr, "%.*s\n", (int)(n && line[n - 1] == '\n' ? n - 1 : n), line);
}

/* The result as qemu-img's --output=json prints it. */
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

/* The result as qemu-img prints it for humans. */
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
        char frag[160];
        img_frag_str(res, frag, sizeof(frag));
        printf("%s\n", frag);
    }
    if (res->image_end_offset)
        printf("Image end offset: %" PRIu64 "\n", res->image_end_offset);
}

int cmd_check(int argc, char **argv)
{
    static const char usage[] =
        "usage: fastqcow check [--object objectdef] [-q] [-f fmt] [--output=human|json]\n"
        "                      [-r leaks|all] [-T cache] [-U] filename\n"
        "\n"
        "Check, and with -r repair, an image (qemu-img check). Exit codes: 0 consistent,\n"
        "1 check not completed, 2 corrupted, 3 leaked clusters only, 63 no checks.\n"
        "\n"
        "  -f fmt               the image's format (qcow2, raw; probed by default)\n"
        "  -r, --repair=leaks|all\n"
        "                       repair leaked clusters, or everything\n"
        "  --output=human|json  human-readable (default) or JSON output\n"
        "  -T cache             cache mode for the image\n"
        "  -q                   print nothing\n"
        "  -U, --force-share    read the image while other programs write it (not with -r)\n"
        "  --image-opts         the image is named by qemu's option list\n"
        "  --object objectdef   define an object (secret)\n"
        "  -h, --help           this help\n";
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
    tool_open_opts_init(&o);
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
    if (!a.quiet && a.json) {
        /* the image opened: its name is good */
        struct fq_blockopts spec;
        const char *file;
        char err[FQ_ERR_MAX];
        tool_image_name(argv[optind], &spec, &file, NULL, err);
        check_json(&res, file, format);
        fq_blockopts_free(&spec);
    } else if (!a.quiet)
        check_human(&res);
    if (res.check_errors) {
        tool_error("Check failed");
        return 1;
    }
    return res.corruptions ? 2 : res.leaks ? 3 : 0;
}
