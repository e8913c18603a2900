/* measure.c: `fastqcow measure`, qemu-img measure: the size a new image
 * would need, for a given size (--size) or to hold an existing image, in
 * human or JSON form (fq_measure).
 *
 * Options, output and exit codes follow qemu-img 7.2 (learnt by running
 * it); errors go to stderr as "fastqcow: ..." and exit 1.
 * SPDX-License-Identifier: MIT
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "common/args.h"
#include "common/image.h"
#include "subcommands.h"

int cmd_measure(int argc, char **argv)
{
    static const char usage[] =
        "usage: fastqcow measure [--output=human|json] [-O output_fmt] [-o options]\n"
        "                        [--size N | [--object objectdef] [-f fmt] [-l snapshot] [-U] filename]\n"
        "\n"
        "Show the size a new image would need (qemu-img measure).\n"
        "\n"
        "  --size N             of an empty image of this virtual size\n"
        "  -O output_fmt        format of the new image: raw (default) or qcow2\n"
        "  -o options           its options\n"
        "  -f fmt               format of the source image (probed by default)\n"
        "  -l snapshot          the source's snapshot (refused: not supported)\n"
        "  --output=human|json  human-readable (default) or JSON output\n"
        "  -U, --force-share    read the image while other programs write it\n"
        "  --image-opts         the image is named by qemu's option list\n"
        "  --object objectdef   define an object (secret)\n"
        "  -h, --help           this help\n";
    static const struct option lo[] = { { "help", no_argument, NULL, 'h' },
                                        { "object", required_argument, NULL, LO_OBJECT },
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
        case 'U': tool_force_share = true; break;
        case LO_OBJECT:
            if ((ch = img_object_opt(optarg)) >= 0)
                return ch;
            break;
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
    if (!has_size && !(src = img_open_file(argv[optind], fmt, false, true, FQ_CACHE_WRITEBACK))) {
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
